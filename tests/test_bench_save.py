"""`bench --what=save`: what a checkpoint save costs the steps, counted by hand on a fake clock
(test_bench_step's), and the transfer to host memory timed on real arrays."""
import contextlib
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glmjax.bench import save as save_bench
from glmjax.bench import traffic
from test_bench_step import _Clock, _Step, _bench_config


class _Checkpointer:
  """Asynchronous saves that take time on the clock. The first save of a checkpointer compiles
  (4 s more). A direct save waits for the steps queued (its state is the last one's) and then
  0.3 s for the state's transfer. A deferred one copies on the devices (0.05 s); its copy
  reaches the host during the `arrives_after`-th step, after which write_deferred hands it over
  (0.02 s); one not there yet when the caller waits costs 0.2 s."""

  def __init__(self, clock, arrives_after):
    self.clock, self.arrives_after = clock, arrives_after
    self.saves, self.pending, self.looks, self.closed = [], False, 0, False

  def save(self, step, state, extra, *, force, defer):
    assert force and extra == {}
    if not defer:
      self.clock.finish()
    self.clock.advance((0.0 if self.saves else 4.0) + (0.05 if defer else 0.3))
    self.saves.append((step, defer))
    self.pending, self.looks = defer, 0

  def write_deferred(self, wait=False):
    if not self.pending:
      return False
    self.looks += 0 if wait else 1  # one look after each step
    arrived = self.looks >= self.arrives_after
    if not (arrived or wait):
      return False
    self.clock.advance(0.02 if arrived else 0.2)
    self.pending = False
    return True

  def wait(self):
    pass

  def close(self):
    self.closed = True


@pytest.mark.parametrize("defer, steps, arrives_after, added", [
    (False, 2, 1, 0.3),
    (True, 4, 3, 0.05 + 0.02),  # handed over after the third step, without waiting
    (True, 2, 3, 0.05 + 0.2),   # still on its way after the last step: the wait counts
])
def test_a_save_s_overhead_is_what_a_later_save_adds_to_the_steps_from_its_start(
    monkeypatch, defer, steps, arrives_after, added):
  """On the fake clock only the checkpointer's calls take time beside the steps: what the
  save adds is also the time the host spent in those calls."""
  clock = _Clock()
  step = _Step(clock, 0.5)
  made = []

  def checkpointer(folder, **kwargs):
    assert kwargs["async_save"]
    made.append(_Checkpointer(clock, arrives_after))
    return made[-1]

  monkeypatch.setattr(save_bench, "time", clock)
  monkeypatch.setattr(save_bench, "checkpoint_lib",
                      types.SimpleNamespace(Checkpointer=checkpointer))
  seconds, held, noise, state = save_bench.save_overhead(step, 0, {}, steps, defer=defer)
  # Not the first save's 4 s of compiling; the save as train makes it (deferred or not).
  assert seconds == pytest.approx(added) and held == pytest.approx(added)
  assert noise == 0  # the fake clock's save-free steps take the same time each round
  assert [d for _, d in made[0].saves] == [defer, defer] and made[0].closed
  assert state == len(step.batches) == 2 * 2 * (1 + steps)  # the state of the last step


class _PartsCheckpointer(_Checkpointer):
  """A deferred save whose copy goes in parts: each look after a step sends one (0.1 s on the
  clock), then hands the copy over (0.02 s) at the look after the last."""

  def __init__(self, clock, parts):
    super().__init__(clock, arrives_after=parts + 1)
    self.parts = parts

  def write_deferred(self, wait=False):
    if self.pending and not wait and self.looks < self.parts:
      self.clock.advance(0.1)
    return super().write_deferred(wait)


def test_the_largest_step_overhead_is_the_most_a_save_adds_to_one_step(monkeypatch):
  clock = _Clock()
  step = _Step(clock, 0.5)
  made = []

  def checkpointer(folder, **kwargs):
    made.append(_PartsCheckpointer(clock, kwargs["snapshot_parts"]))
    return made[-1]

  monkeypatch.setattr(save_bench, "time", clock)
  monkeypatch.setattr(save_bench, "checkpoint_lib",
                      types.SimpleNamespace(Checkpointer=checkpointer))
  most, state = save_bench.largest_step_overhead(step, 0, {}, 5, 3)
  # The save's step: the device copy (0.05 s) and the first look's part (0.1 s); the next two
  # steps a part each; the fourth the hand-over (0.02 s); the fifth nothing.
  assert most == pytest.approx(0.15)
  assert [d for _, d in made[0].saves] == [True, True] and made[0].closed
  assert state == len(step.batches) == 2 * 2 * (1 + 5)


class _RealCheckpointer(_Checkpointer):
  """As checkpoint.Checkpointer.save: a step saved before is not saved again (False, no time)."""

  def save(self, step, state, extra, *, force, defer):
    if step in [saved for saved, _ in self.saves]:
      return False
    return super().save(step, state, extra, force=force, defer=defer)


def _saves_on_a_fake_clock(monkeypatch, checkpointer=_Checkpointer):
  """The benchmark's clock made fake, and its checkpointer a `checkpointer` on that clock
  (whose deferred copies arrive after one step); returns the clock."""
  clock = _Clock()
  monkeypatch.setattr(save_bench, "time", clock)
  monkeypatch.setattr(save_bench, "checkpoint_lib", types.SimpleNamespace(
      Checkpointer=lambda folder, **kwargs: checkpointer(clock, 1)))
  return clock


def test_the_timed_save_is_of_a_new_step(monkeypatch):
  clock = _saves_on_a_fake_clock(monkeypatch, _RealCheckpointer)
  seconds, _, _, _ = save_bench.save_overhead(_Step(clock, 0.5), 0, {}, 2, defer=False)
  assert seconds == pytest.approx(0.3)  # a save that wrote nothing would add nothing


def test_the_save_overhead_s_noise_is_how_far_two_save_free_timings_of_its_steps_differ(
    monkeypatch):
  """Each overhead is one sample, so a noisy machine can read a negative one: the two rounds'
  save-free timings (2 steps each, 0.6 s per step in the first round, then 0.5 s) say how
  much the steps alone varied."""
  class SlowerFirstRound(_Step):
    first_round = 2 * (1 + 2)  # the untimed step and 2 timed ones, without and with a save

    def __call__(self, state, batch):
      self.seconds = 0.6 if len(self.batches) < self.first_round else 0.5
      return super().__call__(state, batch)

  clock = _saves_on_a_fake_clock(monkeypatch)
  seconds, _, noise, _ = save_bench.save_overhead(SlowerFirstRound(clock, 0.6), 0, {}, 2,
                                                  defer=False)
  assert noise == pytest.approx(2 * 0.6 - 2 * 0.5)
  assert seconds == pytest.approx(0.3)  # the kept figure is the second round's


@pytest.mark.parametrize("together, hidden", [(0.5, 1.0), (0.7, 0.0), (0.6, 0.5), (0.45, 1.0),
                                              (0.9, 0.0)])
def test_the_hidden_share_of_a_transfer_is_what_running_it_beside_a_step_saved(together, hidden):
  """A 0.5 s step and a 0.2 s transfer: 0.5 s together hides all of it, 0.7 s none."""
  assert save_bench.hidden_fraction(0.5, 0.2, together) == pytest.approx(hidden)


def test_a_transfer_or_step_of_no_time_leaves_nothing_to_hide_and_reads_as_all_hidden():
  """An empty state's transfer (or a step that takes no time) costs the other nothing."""
  assert save_bench.hidden_fraction(0.5, 0.0, 0.5) == 1.0
  assert save_bench.hidden_fraction(0.0, 0.2, 0.2) == 1.0


def test_the_save_benchmark_divides_its_timings_as_its_figures_say(monkeypatch):
  clock = _Clock()
  step = _Step(clock, 0.5)

  @contextlib.contextmanager
  def compiled_step(config):
    yield save_bench.step_bench.Setup(step, 0, {}, None, None, 3.0, None, None)

  monkeypatch.setattr(save_bench, "time", clock)
  monkeypatch.setattr(save_bench.step_bench, "compiled_step", compiled_step)
  # 6 GB to the host: 1.2 s alone, and a step beside it lasts 1.25 s.
  monkeypatch.setattr(save_bench, "transfer_times",
                      lambda compiled, state, batch: (1.2, 1.25, 6_000_000_000, state))
  # jax's own fetch: 0.4 s alone, and the step beside it lasts 0.9 s (hides nothing).
  monkeypatch.setattr(save_bench, "fetch_times", lambda compiled, state, batch: (0.4, 0.9, state))
  # The step that sends the copy itself: 1.4 s.
  monkeypatch.setattr(save_bench, "in_step_transfer", lambda setup, state, steps: (
      {"in_step_transfer_step_s": 1.4}, state))
  overheads = []

  def save_overhead(compiled, state, batch, steps, *, defer, parts=1):
    overheads.append((steps, defer, parts))
    return (0.04, 0.01, 0.1, state) if defer else (0.6, 0.55, 0.05, state)

  largest = []

  def largest_step_overhead(compiled, state, batch, steps, parts):
    largest.append((steps, parts))
    return 0.03, state

  monkeypatch.setattr(save_bench, "save_overhead", save_overhead)
  monkeypatch.setattr(save_bench, "largest_step_overhead", largest_step_overhead)
  figures = save_bench.measure(_bench_config(), 4)
  assert figures["step_time_s"] == pytest.approx(0.5)
  assert figures["host_transfer_gb_per_s"] == pytest.approx(5.0)
  # The step hides 0.45 of the 0.5 s it could: 0.5 + 1.2 - 1.25.
  assert figures["host_transfer_hidden"] == pytest.approx(0.9)
  assert (figures["host_fetch_s"], figures["host_fetch_beside_step_s"]) == (0.4, 0.9)
  assert figures["host_fetch_hidden"] == pytest.approx(0.0)
  # Two steps for a direct save; a snapshot's 1.2 s transfer spans 3 steps, plus two.
  assert overheads == [(2, False, 1), (2 + math.ceil(1.2 / 0.5), True, 1)]
  assert figures["snapshot_steps"] == 5 and figures["snapshot_parts"] == 1
  assert figures["checkpoint_overhead"] == pytest.approx(1.2)
  assert figures["checkpoint_overhead_device_snapshot"] == pytest.approx(0.08)
  assert largest == [(5, 1)]  # over the same steps as the total
  assert figures["checkpoint_step_overhead_device_snapshot"] == pytest.approx(0.06)
  assert figures["checkpoint_overhead_noise"] == pytest.approx(0.2)  # the larger, per step
  assert (figures["save_call_s"], figures["snapshot_calls_s"]) == (0.55, 0.01)
  # It hides 0.3 of the 0.5 s it could: 0.5 + 1.2 - 1.4.
  assert figures["in_step_transfer_step_s"] == 1.4
  assert figures["in_step_transfer_hidden"] == pytest.approx(0.6)
  monkeypatch.setattr(save_bench, "in_step_transfer", lambda setup, state, steps: (
      {"in_step_transfer_error": "XlaRuntimeError: no pinned memory"}, state))
  config = _bench_config()
  config.checkpoint.snapshot_parts = 8  # more parts than the transfer's 3 steps
  overheads.clear()
  figures = save_bench.measure(config, 4)
  assert overheads[-1] == (2 + 8, True, 8) and largest[-1] == (10, 8)
  assert figures["snapshot_steps"] == 10 and figures["snapshot_parts"] == 8
  assert figures["in_step_transfer_error"] == "XlaRuntimeError: no pinned memory"
  assert "in_step_transfer_hidden" not in figures and figures["host_transfer_hidden"] > 0


def test_the_transfer_to_the_host_is_timed_on_the_state_s_own_bytes_and_leaves_it_stepped():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("fsdp",))
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
  state = {"w": jax.device_put(jnp.ones((64, 32)), split),
           "b": jax.device_put(jnp.ones(32), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))}
  compiled = jax.jit(lambda s, batch: (jax.tree.map(lambda x: x + 1, s), s["w"].sum()),
                     donate_argnums=0)
  alone, beside, state_bytes, state = save_bench.transfer_times(compiled, state, None)
  assert alone > 0 and beside > 0
  assert state_bytes == (64 * 32 + 32) * 4  # the replicated bias counted once
  np.testing.assert_array_equal(np.asarray(state["w"]), 3.0)  # two steps ran


def test_the_fetch_to_the_host_reads_one_replica_of_each_shard_and_leaves_the_state_stepped():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("data", "fsdp"))
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
  state = {"w": jax.device_put(jnp.arange(64 * 32.0).reshape(64, 32), split)}
  fetched = save_bench.fetched(state)
  # Two shards of 32 rows, each held by both data replicas, fetched once each, in order.
  assert [a.shape for a in fetched] == [(32, 32), (32, 32)]
  np.testing.assert_array_equal(np.concatenate(fetched), np.asarray(state["w"]))
  # An array on one device (one GPU's state) has only replica 0: it is fetched too.
  (alone,) = save_bench.fetched({"b": jax.device_put(jnp.arange(4.0), jax.devices()[0])})
  np.testing.assert_array_equal(alone, [0.0, 1.0, 2.0, 3.0])
  compiled = jax.jit(lambda s, batch: (jax.tree.map(lambda x: x + 1, s), s["w"].sum()),
                     donate_argnums=0)
  alone, beside, state = save_bench.fetch_times(compiled, state, None)
  assert alone > 0 and beside > 0
  np.testing.assert_array_equal(np.asarray(state["w"])[0, :3], [2.0, 3.0, 4.0])  # two steps ran


def test_each_timed_fetch_reads_a_new_copy_of_the_state(monkeypatch):
  """An array keeps the host value it fetched once: fetching one copy twice would time nothing."""
  seen = []
  real = save_bench.fetched
  monkeypatch.setattr(save_bench, "fetched", lambda tree: seen.append(tree) or real(tree))
  state = {"w": jnp.ones((16, 8)), "key": jax.random.key(0)}  # a typed PRNG key fetches too
  compiled = jax.jit(lambda s, batch: ({**s, "w": s["w"] + 1}, s["w"].sum()), donate_argnums=0)
  _, _, state = save_bench.fetch_times(compiled, state, None)
  assert len(seen) == 3  # twice alone (the second kept), once beside a step
  assert len({id(tree["w"]) for tree in seen}) == 3  # held in `seen`: no id is reused
  assert all(tree["w"] is not state["w"] for tree in seen)


def _tiny_setup_config():
  config = _bench_config()
  config.model.update(hidden_size=32, num_heads=2, num_layers=1)
  config.data.update(batch_size=8, seq_len=32)
  return config


def test_the_step_with_a_host_copy_sends_the_state_it_found_and_steps_as_the_train_step():
  with save_bench.step_bench.compiled_step(_tiny_setup_config()) as setup:
    before = jax.tree.map(np.asarray, setup.state)
    expected_state, expected_out = setup.compiled(
        jax.tree.map(jnp.copy, setup.state), setup.batch)
    new_state, out, on_host = save_bench.with_host_copy(setup, setup.state)(setup.state,
                                                                           setup.batch)
    leaves = jax.tree.leaves(on_host)
    assert leaves and {leaf.sharding.memory_kind for leaf in leaves} == {"pinned_host"}
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, on_host), before)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, new_state),
                 jax.tree.map(np.asarray, expected_state))
    assert float(out["loss"]) == float(expected_out["loss"])


def test_the_in_step_transfer_is_timed_over_the_steps_asked_and_leaves_the_state_stepped():
  with save_bench.step_bench.compiled_step(_tiny_setup_config()) as setup:
    figures, state = save_bench.in_step_transfer(setup, setup.state, 2)
    assert figures["in_step_transfer_step_s"] > 0
    assert int(state.step) == 3  # one untimed step, then two
    assert figures["in_step_transfer_async_copies"] == 0  # XLA's CPU copies in place, in order
    assert figures["in_step_transfer_beside_loops"] == 0.0


def test_asynchronous_copies_to_host_memory_are_counted_by_the_op_and_placed_against_the_loops():
  text = """HloModule m, is_scheduled=true

%body (p: (s32[])) -> (s32[]) {
  %p = (s32[]) parameter(0)
  ROOT %t = (s32[]) tuple(%p)
}

ENTRY %main (p: f32[4], q: f32[8,2], s: f32[4], r: f32[4]) -> f32[4] {
  %copy-start = (f32[4]{0:S(5)}, f32[4]{0}, u32[]) copy-start(f32[4]{0} %p)
  %copy-start.1 = (f32[8,2]{1,0:S(5)}, f32[8,2]{1,0}, u32[]) copy-start(%q)
  %copy-start.2 = (f32[4]{0}, f32[4]{0}, u32[]) copy-start(%s)
  %copy-done = f32[4]{0:S(5)} copy-done(%copy-start)
  %while.copy-start = (s32[]) while(%init), condition=%cond, body=%body
  %copy-done.1 = f32[8,2]{1,0:S(5)} copy-done((f32[8,2]{1,0:S(5)}, f32[8,2]{1,0}, u32[]) %copy-start.1)
  %copy-done.2 = f32[4]{0} copy-done(%copy-start.2)
  %copy.3 = f32[4]{0} copy(f32[4]{0} %r)
  ROOT %fusion = f32[4]{0} fusion(%copy-start.1), kind=kLoop, calls=%body
}
"""
  # copy-start.2 stays in device memory; the 64-byte copy encloses the loop, the 16-byte one not
  assert traffic.host_copies(text) == {"copies": 2, "bytes": 80, "beside_loops_bytes": 64}
  assert traffic.host_copies("ENTRY %main () -> f32[4] {\n  %copy = f32[4]{0} copy(%p)\n}") == {
      "copies": 0, "bytes": 0, "beside_loops_bytes": 0}


def test_the_in_step_transfer_reports_the_share_of_its_copies_that_xla_puts_beside_the_loops(
    monkeypatch):
  monkeypatch.setattr(save_bench.traffic, "host_copies", lambda hlo: {
      "copies": 3, "bytes": 400, "beside_loops_bytes": 100})
  with save_bench.step_bench.compiled_step(_tiny_setup_config()) as setup:
    figures, state = save_bench.in_step_transfer(setup, setup.state, 1)
    assert figures["in_step_transfer_async_copies"] == 3
    assert figures["in_step_transfer_beside_loops"] == 0.25
    # A program text the reader cannot parse costs those two figures, not the step's timing.
    def unreadable(hlo):
      raise ValueError(f"cannot parse {len(hlo)} characters of HLO")
    monkeypatch.setattr(save_bench.traffic, "host_copies", unreadable)
    figures, _ = save_bench.in_step_transfer(setup, state, 1)
  assert figures["in_step_transfer_step_s"] > 0
  assert (figures["in_step_transfer_async_copies"], figures["in_step_transfer_beside_loops"]) == (
      None, None)


def test_a_failing_in_step_transfer_is_reported_in_one_line_not_raised(monkeypatch):
  def fails(setup, state):
    raise ValueError("no pinned host memory here\nsecond line")

  monkeypatch.setattr(save_bench, "with_host_copy", fails)
  figures, state = save_bench.in_step_transfer(None, "the state", 2)
  assert figures == {"in_step_transfer_error": "ValueError: no pinned host memory here"}
  assert state == "the state"
