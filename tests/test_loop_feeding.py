"""How train's loop feeds the devices: the steps compiled at start-up run every step and every
evaluation, batches come built and transferred from the prefetch thread, each step's metrics
are read only once the next step is dispatched, and a failed run leaves no prefetch thread."""
import threading

import pytest

from glmjax import loop, parallel, prefetch, step as step_lib, train
from test_loop import _small_run_config


class _Counted:
  """A compiled step that records each call in `events` as (name, call number); the rest of
  the compiled object (memory_analysis, ...) is the real one's."""

  def __init__(self, compiled, name, events):
    self._compiled, self._name, self._events = compiled, name, events

  def __call__(self, *args):
    self._events.append((self._name, sum(e[0] == self._name for e in self._events) + 1))
    return self._compiled(*args)

  def __getattr__(self, attribute):
    return getattr(self._compiled, attribute)


def test_each_step_runs_the_compiled_steps_on_prefetched_batches_reading_metrics_a_step_late(
    tmp_path, monkeypatch):
  """4 steps, an evaluation every 2. The objects compile_train_step and compile_eval_step
  return are the ones called (jit's own path would compile again, without the platform's XLA
  options); in the loop every batch comes from the Prefetcher, put on the devices on its thread;
  step k's metrics are read after step k + 1 is dispatched, unless an evaluation comes first."""
  events, threads = [], []
  compile_train, compile_eval = (step_lib.Program.compile_train_step,
                                 step_lib.Program.compile_eval_step)
  monkeypatch.setattr(step_lib.Program, "compile_train_step", lambda self, *args: _Counted(
      compile_train(self, *args), "dispatch", events))
  monkeypatch.setattr(step_lib.Program, "compile_eval_step", lambda self, *args: _Counted(
      compile_eval(self, *args), "eval", events))
  report = loop.StepReporter._report  # pylint: disable=protected-access
  monkeypatch.setattr(loop.StepReporter, "_report", lambda self, done, host: (
      events.append(("read", done)), report(self, done, host))[1])
  get = prefetch.Prefetcher.get
  monkeypatch.setattr(prefetch.Prefetcher, "get", lambda self, step: (
      events.append(("prefetched", step)), get(self, step))[1])
  enter_loop, global_batch = loop.TerminationFlag.enter_loop, parallel.global_batch
  in_loop = []
  monkeypatch.setattr(loop.TerminationFlag, "enter_loop", lambda self: (
      in_loop.append(True), enter_loop(self))[1])

  def recorded_global_batch(*args):
    if in_loop:  # the held-out batches are built before the loop, on this thread
      threads.append(threading.current_thread().name)
    return global_batch(*args)
  monkeypatch.setattr(parallel, "global_batch", recorded_global_batch)
  train.train_and_evaluate(_small_run_config(steps=4, eval_every=2, eval_batches=1),
                           str(tmp_path))
  assert [e for e in events if e[0] == "dispatch"] == [("dispatch", k) for k in (1, 2, 3, 4)]
  assert [e for e in events if e[0] == "eval"] == [("eval", 1), ("eval", 2)]  # steps 2 and 4
  assert [e for e in events if e[0] == "prefetched"] == [("prefetched", k) for k in range(4)]
  # Batches built on the training thread would stall the dispatch of every step.
  assert threads and set(threads) == {"batch-prefetch"}, threads
  # Reading step 1 (or 3) at once would leave the devices idle while the host reads it.
  for read, next_dispatch in ((1, 2), (3, 4)):
    assert events.index(("read", read)) > events.index(("dispatch", next_dispatch)), events


def test_a_run_that_fails_mid_loop_stops_its_prefetch_thread(tmp_path, monkeypatch):
  """A failure at step 2 of 10, with batches still to prefetch: the thread would otherwise live
  on, blocked, holding batches on the devices (and a run in a notebook or a sweep goes on)."""
  push, seen = loop.StepReporter.push, []

  def prefetching():
    return {t for t in threading.enumerate() if t.name == "batch-prefetch"}
  before = prefetching()  # another test's, still running, are not this run's

  def failing_at_step_2(self, done, metrics):
    seen.append(prefetching())
    if done == 2:
      raise RuntimeError("a fault at step 2")
    return push(self, done, metrics)
  monkeypatch.setattr(loop.StepReporter, "push", failing_at_step_2)
  with pytest.raises(RuntimeError, match="a fault at step 2"):
    train.train_and_evaluate(_small_run_config(steps=10), str(tmp_path))
  assert seen and not seen[0] <= before  # a prefetch thread ran during the loop
  assert prefetching() <= before
