"""`bench --what=save` waits for the work before each timed window: on test_bench_step's fake
clock a step's device work is spent only when waited for, so a window opened while an untimed
step (or the transfer that allocates) still runs counts it."""
import types

import pytest

from glmjax.bench import save as save_bench
from test_bench_save import _PartsCheckpointer, _saves_on_a_fake_clock
from test_bench_step import _Clock, _Step


def test_the_save_benchmark_times_its_steps_after_the_untimed_step_has_finished(monkeypatch):
  clock = _Clock()
  step = _Step(clock, 0.5, first=4.0)  # the untimed step compiles and allocates: 4 s
  monkeypatch.setattr(save_bench, "time", clock)
  seconds, state = save_bench.timed_steps(step, 0, {}, 4)
  assert seconds == pytest.approx(0.5) and state == 1 + 4
  assert clock.busy and not any(clock.busy)  # no reading while device work was still queued


def _fake_copies(monkeypatch, clock):
  """The state's device copy (0.1 s on the devices) and its transfers to pinned host memory,
  device work too: the first allocates the pinned buffers (1 s), each later one takes 0.4 s."""
  sent = []

  def start(copy):
    sent.append(copy)
    return clock.queue(1.0 if len(sent) == 1 else 0.4)

  monkeypatch.setattr(save_bench, "time", clock)
  monkeypatch.setattr(save_bench, "checksums", types.SimpleNamespace(
      copy_with_summary=lambda state: (clock.queue(0.1), None)))
  monkeypatch.setattr(save_bench, "host_copy", types.SimpleNamespace(
      start=start, nbytes=lambda on_host: 6_000))
  return sent


def test_the_host_transfer_is_timed_on_its_second_send_and_beside_a_step_from_an_idle_start(
    monkeypatch):
  clock = _Clock()
  sent = _fake_copies(monkeypatch, clock)
  step = _Step(clock, 0.5)
  alone, beside, state_bytes, state = save_bench.transfer_times(step, 0, {})
  # The first send pays the pinned allocation: the second's 0.4 s is the transfer's.
  assert alone == pytest.approx(0.4) and len(sent) == 3
  # A step (0.5 s) then a send (0.4 s), from an idle start: the step before is not counted.
  assert beside == pytest.approx(0.9)
  assert state_bytes == 6_000 and state == 2


def test_jax_s_fetch_is_timed_on_a_new_copy_and_beside_a_step_from_an_idle_start(monkeypatch):
  clock = _Clock()
  _fake_copies(monkeypatch, clock)
  fetches = []

  def fetched(copy):  # waits for the copy, then 0.3 s of the host (0.8 s the first time)
    copy.block_until_ready()
    clock.advance(0.3 if fetches else 0.8)
    fetches.append(copy)

  monkeypatch.setattr(save_bench, "fetched", fetched)
  alone, beside, state = save_bench.fetch_times(_Step(clock, 0.5), 0, {})
  assert alone == pytest.approx(0.3) and len(fetches) == 3
  # The fetch (0.3 s) and a step (0.5 s), from an idle start: the step before is not counted.
  assert beside == pytest.approx(0.8) and state == 2


def test_a_direct_save_s_call_time_is_its_own_not_that_of_the_step_before_it(monkeypatch):
  """The save reads the state, so it waits for the step that makes it: a step still running
  from before the timed window would show in `save_call_s`."""
  clock = _saves_on_a_fake_clock(monkeypatch)
  seconds, held, _, _ = save_bench.save_overhead(_Step(clock, 0.5), 0, {}, 2, defer=False)
  assert seconds == pytest.approx(0.3) and held == pytest.approx(0.3)


def test_each_step_of_the_largest_step_overhead_is_timed_from_an_idle_device(monkeypatch):
  """The steps with and without a save start from the same idle device: a step left running
  before them would be timed in their first step (the same in both, so the figure hides it)."""
  clock = _Clock()
  monkeypatch.setattr(save_bench, "time", clock)
  monkeypatch.setattr(save_bench, "checkpoint_lib", types.SimpleNamespace(
      Checkpointer=lambda folder, **kwargs: _PartsCheckpointer(clock, kwargs["snapshot_parts"])))
  most, _ = save_bench.largest_step_overhead(_Step(clock, 0.5), 0, {}, 5, 3)
  assert most == pytest.approx(0.15)
  assert clock.busy and not any(clock.busy)  # no reading while device work was still queued


def test_the_in_step_transfer_is_timed_after_its_untimed_call_has_finished(monkeypatch):
  clock = _Clock()

  class CopyingStep:
    """The step with a host copy as one more output: its first call allocates the pinned
    buffers (2 s on the devices), each later one takes 0.6 s."""
    calls = 0

    def __call__(self, state, batch):
      self.calls += 1
      done = clock.queue(2.0 if self.calls == 1 else 0.6)
      return state + 1, {"done": done}, done

    def as_text(self):
      return ""  # read as no copies (copies_beside_loops): the timing is what is checked here

  monkeypatch.setattr(save_bench, "time", clock)
  monkeypatch.setattr(save_bench, "with_host_copy", lambda setup, state: CopyingStep())
  figures, state = save_bench.in_step_transfer(types.SimpleNamespace(batch={}), 0, 2)
  assert figures["in_step_transfer_step_s"] == pytest.approx(0.6) and state == 3
  assert clock.busy and not any(clock.busy)  # no reading while device work was still queued
