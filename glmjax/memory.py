"""Device memory of compiled programs and of the train state, for start-up lines, aot and bench.

A compiled program's peak is its arguments and outputs (a donated buffer counted once) plus its
temporaries; a checkpoint.device_snapshot save keeps one more copy of the state beside the next
step. train warns at start-up when that copy would not fit; aot counts it in the peak.
"""
from __future__ import annotations

import logging

import jax

from glmjax import error_text, gpu_topology


def memory_analysis(compiled):
  """The compiled program's memory_analysis(), or None where the backend gives none."""
  try:
    return compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - not every backend reports it
    return None


def device_memory_limit() -> int | None:
  """Bytes the first local device may allocate (GPU, TPU), or None where it is not reported."""
  try:
    stats = jax.local_devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - not every backend reports it
    return None
  return stats.get("bytes_limit")


def out_of_memory(error: BaseException) -> str | None:
  """The first line of XLA saying that a device ran out of memory (RESOURCE_EXHAUSTED, when
  compiling, libtpu's early abort included, or running), else None. A kernel's on-chip
  scratch (vmem) running out is a block-size problem, not one of fit."""
  text = str(error)
  if "RESOURCE_EXHAUSTED" not in text or "vmem" in text.lower():
    return None
  if not any(words in text.lower() for words in ("out of memory", "hbm", "device memory")):
    return None  # a quota, an RPC's limit
  return error_text.first_line(error)


def program_bytes(memory) -> int:
  """What a compiled program (its memory_analysis()) holds at its peak: arguments and outputs,
  donated buffers counted once, and temporaries."""
  return int(memory.argument_size_in_bytes + memory.output_size_in_bytes
             - memory.alias_size_in_bytes + memory.temp_size_in_bytes)


def compiled_bytes(compiled) -> int | None:
  """`program_bytes` of a compiled program, None where the backend gives no analysis."""
  memory = memory_analysis(compiled)
  return None if memory is None else program_bytes(memory)


def memory_summary(compiled) -> str:
  memory = memory_analysis(compiled)
  if memory is None:
    return "memory analysis unavailable on this backend"
  gib = lambda n: f"{n / 2**30:.2f} GiB"
  return (f"per device: arguments {gib(memory.argument_size_in_bytes)}, outputs "
          f"{gib(memory.output_size_in_bytes)}, temporaries {gib(memory.temp_size_in_bytes)}")


def state_bytes_per_device(state) -> int:
  """Bytes of `state` on its first device (a save's copy adds as much with device_snapshot)."""
  return sum(leaf.addressable_shards[0].data.nbytes for leaf in jax.tree.leaves(state))


def device_snapshot_report(memory, copy_bytes: int, limit: int | None) -> tuple[int, str]:
  """(log level, line) for checkpoint.device_snapshot at start-up. The copy lives while the
  next step runs, so it needs room beside that step's peak (`program_bytes` of `memory`, the
  compiled step's memory_analysis, or None; aot counts it the same way); past the device's
  `limit` it is a warning now, not an out-of-memory error at the first save, thousands of
  steps in."""
  gib = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
  line = (f"checkpoint.device_snapshot: each save holds a copy of the state on the devices "
          f"until it is handed to Orbax, {gib(copy_bytes)} per device")
  if memory is None or not limit:
    return logging.INFO, line
  needed = program_bytes(memory) + copy_bytes
  if needed <= limit:
    return logging.INFO, f"{line} ({gib(needed)} of {gib(limit)} with the step)"
  return logging.WARNING, (f"{line}: with the step that is {gib(needed)}, more than the device's "
                           f"{gib(limit)}, so a save may run out of memory; set "
                           "checkpoint.device_snapshot=false (or lower data.batch_size)")


def fit_advice(config, *, snapshot: bool = False, state_bytes: int = 0, hbm: int = 0,
               platform: str = "tpu", batch_parallelism: int = 0, slices: int = 1,
               data: int = 0) -> str:
  """The knobs to try; `snapshot`: the peak counted a device-snapshot save's copy. Where the
  state alone (`state_bytes` per chip) fills the chip's `hbm`, only sharding it wider helps:
  remat and micro-batches shrink activations, not parameters and optimizer moments. More
  micro-batches are offered only where each still splits over `batch_parallelism` (mesh.data x
  mesh.fsdp; 0: not known) rows, as config validation wants. On several `slices` (TPU slices
  or GPU hosts) mesh.data crosses them, so it shards no further than mesh.data=slices.
  `data`: mesh.data's resolved size (0: the config's, which may be -1)."""
  bigger = {"tpu": ["a bigger slice"], "gpu": _more_gpus()}.get(
      platform, ["a smaller config (on a CPU: --config=configs/base.py:local)"])
  widest = (f"mesh.data={slices} mesh.fsdp=-1 (shards them over each of the {slices} "
            f"{'GPU hosts' if platform == 'gpu' else 'slices'})" if slices > 1 else
            "mesh.data=1 mesh.fsdp=-1 (shards them over all chips)")
  shardable = (data or int(config.mesh.data)) != slices
  if state_bytes and hbm and state_bytes >= hbm:
    tips = ([widest] if shardable else []) + bigger
    return (f"the parameters and optimizer state alone take {state_bytes / 2**30:.2f} GiB per "
            "chip, which remat and grad_accum_steps do not shrink; try " + ", ".join(tips) + ".")
  tips = []
  if snapshot:
    tips.append("checkpoint.device_snapshot=false (a save then keeps no copy on the chips)")
  if (config.model.save_dropout_masks and config.model.remat != "none"
      and config.model.hidden_dropout > 0):
    tips.append("model.save_dropout_masks=false (the backward pass draws the masks again)")
  if config.model.remat != "full":
    tips.append(f"model.remat=full (now {config.model.remat})")
  if shardable:  # the state is copied over mesh.data, whatever mesh.fsdp is
    tips.append(widest.replace("shards them", "shards parameters and optimizer state"))
  accum, batch = 2 * int(config.optim.grad_accum_steps), int(config.data.batch_size)
  if batch % accum == 0 and (batch // accum) % max(batch_parallelism, 1) == 0:
    tips.append(f"optim.grad_accum_steps={accum} (fewer rows per chip at a time, same global "
                "batch)")
  tips.extend(bigger)
  return "try " + ", ".join(tips) + "."


def _more_gpus() -> list[str]:
  """jax gives a process 75% of a GPU's memory unless told otherwise."""
  fraction = gpu_topology.memory_fraction()
  share = ([f"XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 (jax's share of each GPU's memory, now "
            f"{fraction:g})"] if fraction < 0.9 else [])
  return share + ["more GPUs"]
