"""What a checkpoint save costs the steps: `python -m glmjax.bench --what=save --config=...`.

Prints one JSON line, for the config's train step on the devices present (one synthetic batch,
as `--what=step` times it):
- `state_bytes`: the state this process sends to its host (one replica of each shard);
- `host_transfer_s` (and `host_transfer_gb_per_s`): a copy of the state sent to pinned host
  memory while the devices are idle, as checkpoint.device_snapshot sends it;
- `host_transfer_hidden`: how much of that transfer a step running beside it hides (1: all of
  it, the step took no longer; 0: none, the two ran one after the other);
- `host_fetch_s`, `host_fetch_hidden`: the same for jax's own way to the host, each shard's
  `copy_to_host_async` then its numpy value (Orbax's path for arrays in device memory when its
  pinned-memory transfer, on by default on a GPU, is off), so that the two paths' overlap with
  a step can be compared;
- `checkpoint_overhead`: what an asynchronous save adds to the steps from its start, as a
  fraction of one step, saving directly (Orbax waits for the state's transfer to the host);
- `checkpoint_overhead_device_snapshot`: the same with checkpoint.device_snapshot, over
  `snapshot_steps` steps: as many as the transfer (or its `snapshot_parts`,
  checkpoint.snapshot_parts) needs, plus two, so that a copy handed to Orbax late shows up;
- `checkpoint_step_overhead_device_snapshot`: the most that save adds to any one of those
  steps, each waited for in turn, as a fraction of a step (with parts, each step after the
  save's carries one);
- `checkpoint_overhead_noise`: how far two timings of the same steps without a save differed,
  as a fraction of a step (the larger of the two measurements'): each overhead is one sample,
  so one within this is noise, and may even read negative;
- `save_call_s`, `snapshot_calls_s`: the seconds the host spent inside those saves' calls
  (the direct save's call; the snapshot's save and each step's look and hand-over);
- `in_step_transfer_step_s`, `in_step_transfer_hidden`: the step compiled with a copy of its
  input state sent to pinned host memory as one more output, so that XLA schedules the copy
  inside the program (`in_step_transfer_error` if that program fails), how many
  asynchronous copies XLA made of it (`in_step_transfer_async_copies`) and the share of their
  bytes whose copies XLA's schedule opens before a layer loop and closes after it
  (`in_step_transfer_beside_loops`: only those can run beside the step's compute). Neither
  path above overlapped an H200's step; this one decides whether a save's copy can ride along
  a step.
Each save is timed after a first one that compiles the checksums (and the copy); the same
steps without a save, from the same idle start, are subtracted.
"""
import json
import math
import tempfile
import time

import jax
import numpy as np
from absl import flags

from glmjax import checkpoint as checkpoint_lib
from glmjax import checksums, error_text, host_copy, xla_options
from glmjax import step as step_lib
from glmjax.bench import step as step_bench
from glmjax.bench import traffic

MAX_STEPS = 50  # a snapshot is written after this many steps at the latest (timed waiting)


def main(config, argv):
  del argv
  print(json.dumps(measure(config, flags.FLAGS.steps or step_bench.DEFAULT_STEPS)))


def measure(config, steps: int) -> dict:
  with step_bench.compiled_step(config) as setup:
    compiled, state, batch = setup.compiled, setup.state, setup.batch
    step_s, state = timed_steps(compiled, state, batch, steps)
    alone_s, beside_s, state_bytes, state = transfer_times(compiled, state, batch)
    direct_s, direct_held_s, direct_noise_s, state = save_overhead(compiled, state, batch, 2,
                                                                   defer=False)
    parts = int(config.checkpoint.snapshot_parts)
    snapshot_steps = min(MAX_STEPS, 2 + max(parts, math.ceil(alone_s / step_s)))
    snapshot_s, snapshot_held_s, snapshot_noise_s, state = save_overhead(
        compiled, state, batch, snapshot_steps, defer=True, parts=parts)
    most_s, state = largest_step_overhead(compiled, state, batch, snapshot_steps, parts)
    peak_bytes = step_bench.peak_device_memory()  # with a snapshot's copy, before the rest
    # Last: experiments for the next move, which must not cost the figures above.
    fetch_s, fetch_beside_s, state = fetch_times(compiled, state, batch)
    in_step, state = in_step_transfer(setup, state, steps)
  if "in_step_transfer_step_s" in in_step:
    in_step["in_step_transfer_hidden"] = hidden_fraction(
        step_s, alone_s, in_step["in_step_transfer_step_s"])
  return {
      "what": "save", "device_kind": jax.devices()[0].device_kind,
      "num_devices": jax.device_count(), "batch_size": config.data.batch_size,
      "seq_len": config.data.seq_len, "remat": config.model.remat, "step_time_s": step_s,
      "state_bytes": state_bytes, "host_transfer_s": alone_s,
      "host_transfer_gb_per_s": state_bytes / alone_s / 1e9,
      "host_transfer_beside_step_s": beside_s,
      "host_transfer_hidden": hidden_fraction(step_s, alone_s, beside_s),
      "host_fetch_s": fetch_s, "host_fetch_beside_step_s": fetch_beside_s,
      "host_fetch_hidden": hidden_fraction(step_s, fetch_s, fetch_beside_s),
      "checkpoint_overhead": direct_s / step_s,
      "checkpoint_overhead_device_snapshot": snapshot_s / step_s,
      "snapshot_steps": snapshot_steps, "snapshot_parts": parts,
      "checkpoint_step_overhead_device_snapshot": most_s / step_s,
      # How far the save-free timings of the same steps differed: overheads within it are noise.
      "checkpoint_overhead_noise": max(direct_noise_s, snapshot_noise_s) / step_s,
      # Seconds the training thread spent inside the checkpointer's calls (Orbax's own work).
      "save_call_s": direct_held_s, "snapshot_calls_s": snapshot_held_s,
      "peak_memory_bytes": peak_bytes,
      **in_step,
  }


def hidden_fraction(step_s: float, transfer_s: float, together_s: float) -> float:
  """The share of a transfer that a step beside it hides: 1 when the two together took as long
  as the longer alone, 0 when they took as long as both in a row (clipped to [0, 1])."""
  hideable = min(step_s, transfer_s)
  if hideable <= 0:
    return 1.0
  return min(1.0, max(0.0, (step_s + transfer_s - together_s) / hideable))


def timed_steps(compiled, state, batch, steps: int):
  """Seconds per step over `steps` steps, from an idle start after one untimed step."""
  state, out = compiled(state, batch)
  jax.block_until_ready(out)
  start = time.perf_counter()
  for _ in range(steps):
    state, out = compiled(state, batch)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps, state


def transfer_times(compiled, state, batch):
  """(seconds to send a device copy of the state to pinned host memory with the devices idle,
  seconds of one step with the same transfer beside it, bytes sent, state). The idle transfer
  is timed twice and the second kept: the first allocates the host buffers."""
  copy, _ = checksums.copy_with_summary(state)
  jax.block_until_ready(copy)
  for _ in range(2):
    on_host = None  # freed before the next copy: one state in pinned host memory at a time
    start = time.perf_counter()
    on_host = jax.block_until_ready(host_copy.start(copy))
    alone = time.perf_counter() - start
  state_bytes = host_copy.nbytes(on_host)
  on_host = None
  state, out = compiled(state, batch)  # from an idle start
  jax.block_until_ready(out)
  start = time.perf_counter()
  state, out = compiled(state, batch)
  on_host = host_copy.start(copy)
  jax.block_until_ready((out, on_host))
  return alone, time.perf_counter() - start, state_bytes, state


def fetch_times(compiled, state, batch):
  """(seconds to fetch a device copy of the state into numpy arrays with the devices idle,
  seconds of one step with the same fetch beside it, state). Each fetch reads a new copy, as an
  array keeps the host value it fetched once."""
  def fresh_copy():
    copy, _ = checksums.copy_with_summary(state)
    return jax.block_until_ready(copy)

  for _ in range(2):  # the second kept, as for the transfer
    copy = None  # freed first (with the host values it cached): one copy of the state at a time
    copy = fresh_copy()
    start = time.perf_counter()
    fetched(copy)
    alone = time.perf_counter() - start
  copy = None
  copy = fresh_copy()
  state, out = compiled(state, batch)  # from an idle start
  jax.block_until_ready(out)
  start = time.perf_counter()
  state, out = compiled(state, batch)
  fetched(copy)
  jax.block_until_ready(out)
  return alone, time.perf_counter() - start, state


def with_host_copy(setup, state):
  """The train step compiled with one more output: a copy of its input state (the state as the
  step found it, what a save of the previous step writes) in pinned host memory, sent by the
  program itself, so that XLA schedules the copy among the step's own work. (state, batch) ->
  (new state, metrics, that copy); the state is donated as the train step's is. The copy is
  placed by memory space (`jax.memory.Space.Host`, pinned host memory on GPUs and TPUs) rather
  than by sharding, so that the program compiled for compile-only devices (`glmjax.aot`'s
  GPUs, which list no memories) carries the copy too."""
  program = setup.program

  def step_and_copy(state, batch):
    new_state, out = program.train_step(state, batch)
    return new_state, out, jax.device_put(state, jax.memory.Space.Host)

  lowered = jax.jit(
      step_and_copy, in_shardings=(program.shardings, step_lib.batch_shardings(setup.mesh)),
      out_shardings=(program.shardings, None, None), donate_argnums=0,
  ).lower(state, setup.batch)
  return xla_options.compiled(lowered, program.compiler_options)


def in_step_transfer(setup, state, steps: int) -> tuple[dict, object]:
  """({'in_step_transfer_step_s': seconds per step of `with_host_copy`'s program, and where XLA
  scheduled its copies}, state), timed over `steps` steps from an idle start after one untimed
  call (which allocates the host buffers); or ({'in_step_transfer_error': the first line of
  why that program failed}, state). Each step's copy is freed before the next is asked for:
  one state's worth at a time."""
  try:
    program = with_host_copy(setup, state)
    state, out, on_host = program(state, setup.batch)
    jax.block_until_ready((out, on_host))
    start = time.perf_counter()
    for _ in range(steps):
      on_host = None
      state, out, on_host = program(state, setup.batch)
    jax.block_until_ready((out, on_host))
  except Exception as error:  # noqa: BLE001 - an experiment: the figures before it still count
    return {"in_step_transfer_error": error_text.typed_line(error)}, state
  return {"in_step_transfer_step_s": (time.perf_counter() - start) / steps,
          **copies_beside_loops(program.as_text())}, state


def copies_beside_loops(hlo_text: str) -> dict:
  """The in-step program's asynchronous copies into host memory and the share of their bytes
  beside the layer loops (traffic.host_copies); None for both where its text cannot be read,
  so that the step's timing is kept."""
  try:
    copies = traffic.host_copies(hlo_text)
  except Exception:  # noqa: BLE001 - a reading of the program's text, not the measurement
    return {"in_step_transfer_async_copies": None, "in_step_transfer_beside_loops": None}
  return {"in_step_transfer_async_copies": copies["copies"],
          "in_step_transfer_beside_loops": (copies["beside_loops_bytes"] / copies["bytes"]
                                            if copies["bytes"] else 0.0)}


def fetched(tree) -> list:
  """This process's shards of `tree` (one replica of each) as numpy arrays: every transfer is
  started before the first is waited for."""
  shards = [shard.data for leaf in jax.tree.leaves(tree)
            for shard in host_copy.key_free(leaf).addressable_shards if shard.replica_id == 0]
  for shard in shards:
    shard.copy_to_host_async()
  return [np.asarray(shard) for shard in shards]


def save_overhead(compiled, state, batch, steps: int, *, defer: bool, parts: int = 1):
  """(seconds that an asynchronous save adds to the `steps` steps from its start, seconds the
  host spent inside the checkpointer's calls, noise seconds, state), saving as train does: each
  step's write_deferred hands a device snapshot to Orbax once it is on the host; one still on
  its way after the last step is waited for, inside the timing. Each figure is one sample; the
  noise is how far the two save-free timings of the same steps differ (an overhead within it,
  even a negative one, says only that the save cost no more than the steps vary)."""
  def timed(state, save):
    state, out = compiled(state, batch)
    jax.block_until_ready(out)
    start = time.perf_counter()
    held = _held(save, state)
    for _ in range(steps):
      state, out = compiled(state, batch)
      held += _held(checkpointer.write_deferred)
    held += _held(checkpointer.write_deferred, wait=True)
    jax.block_until_ready(out)
    return time.perf_counter() - start, held, state

  with tempfile.TemporaryDirectory() as folder:
    checkpointer = checkpoint_lib.Checkpointer(folder, every=1, keep=1, async_save=True,
                                               snapshot_parts=parts)
    try:
      plains = []
      for step in (1, 2):  # the first save compiles the checksums (and the copy): time the second
        plain, _, state = timed(state, lambda s: None)
        plains.append(plain)
        saving, held, state = timed(
            state, lambda s, step=step: checkpointer.save(step, s, {}, force=True, defer=defer))
        checkpointer.wait()
    finally:
      checkpointer.close()
  return saving - plain, held, abs(plains[1] - plains[0]), state


def largest_step_overhead(compiled, state, batch, steps: int, parts: int):
  """(the most seconds that a device-snapshot save, sent in `parts` parts, adds to any one of
  the `steps` steps from its start, state). Each step is waited for before the next is asked
  for, so a part sent after a step counts in the step queued behind it; the same steps without
  a save, from the same idle start, are subtracted step by step (one sample each: the figure
  carries a step's timing noise)."""
  def each_step(state, save):
    state, out = compiled(state, batch)
    jax.block_until_ready(out)
    seconds, start = [], time.perf_counter()
    save(state)
    for _ in range(steps):
      state, out = compiled(state, batch)
      checkpointer.write_deferred()
      jax.block_until_ready(out)
      seconds.append(time.perf_counter() - start)
      start = time.perf_counter()
    checkpointer.write_deferred(wait=True)
    return seconds, state

  with tempfile.TemporaryDirectory() as folder:
    checkpointer = checkpoint_lib.Checkpointer(folder, every=1, keep=1, async_save=True,
                                               snapshot_parts=parts)
    try:
      for step in (1, 2):  # as save_overhead: the second save is the one kept
        plain, state = each_step(state, lambda s: None)
        saving, state = each_step(state, lambda s, step=step: checkpointer.save(
            step, s, {}, force=True, defer=True))
        checkpointer.wait()
    finally:
      checkpointer.close()
  return max(with_save - without for with_save, without in zip(saving, plain)), state


def _held(call, *args, **kwargs) -> float:
  """Seconds `call(*args, **kwargs)` kept the host."""
  start = time.perf_counter()
  call(*args, **kwargs)
  return time.perf_counter() - start
