"""The training loop's reporting and control: what each log line says (from the step metrics
read one step late), the profiler's window, and what a run does around evaluations, saves and a
SIGTERM."""
import json
import logging
import os
import signal
import time
import types

import jax
import numpy as np
import pytest

from glmjax import checkpoint as checkpoint_lib
from glmjax import held_out, loop, train
from glmjax import metrics as metrics_lib
from test_train import _local_config


class _ScalarWriter:
  def __init__(self):
    self.records = []

  def write(self, step, scalars, prefix=""):
    del prefix
    self.records.append((step, dict(scalars)))


def _step_metrics(model_flops=1.0, nonfinite=False):
  metrics = {key: np.float32(1.0) for key in ("loss", "accuracy", "grad_norm", "param_norm",
                                               "learning_rate", "loss_tokens")}
  metrics.update(model_flops=np.float32(model_flops), nonfinite=np.bool_(nonfinite),
                 objective_loss_sum=np.ones(3, np.float32),
                 objective_weight=np.ones(3, np.float32))
  return metrics


def test_the_last_step_is_logged_when_the_run_ends_off_the_log_every_grid():
  config = _local_config(steps=3, log_every=2)
  writer = _ScalarWriter()
  reporter = loop.StepReporter(config, writer, start=0, checkpoint_dir="unused")
  for done in (1, 2, 3):
    reporter.push(done, _step_metrics())
  reporter.flush()
  # Step 3 is not a multiple of log_every, but it is the run's last.
  assert [step for step, _ in writer.records] == [2, 3]
  assert reporter.last_scalars["loss"] == 1.0


def test_throughput_per_device_divides_the_step_s_flops_by_every_device_of_the_run(monkeypatch):
  """On a slice of several hosts each host holds only some devices; the FLOPs of a step are
  those of the global batch, so TFLOP/s per device (and MFU) divide by all of them."""
  devices = jax.device_count()
  monkeypatch.setattr(jax, "local_device_count", lambda *args, **kwargs: devices // 2)
  writer = _ScalarWriter()
  reporter = loop.StepReporter(_local_config(steps=4, log_every=2), writer, start=0,
                               checkpoint_dir="unused")
  for done in (1, 2, 3, 4):
    time.sleep(0.01)
    reporter.push(done, _step_metrics(model_flops=3e9))
  reporter.flush()
  timed = [scalars for _, scalars in writer.records if "tflops_per_device" in scalars]
  assert len(timed) == 2
  for scalars in timed:
    total = scalars["tflops_per_device"] * 1e12 * devices * scalars["step_time_s"]
    assert total == pytest.approx(3e9, rel=1e-6)


def test_a_log_line_s_throughput_is_that_of_the_steps_since_the_previous_log_line(monkeypatch):
  """log_every=2 on a clock that moves 0.5 s per step: each line reports 0.5 s per step, the
  tokens of a step over that, and the mean model FLOPs of its own two steps (each batch has
  its own), a non-finite step's included. (push(done) reports step done - 1.)"""
  now = [0.0]
  monkeypatch.setattr(metrics_lib, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
  config = _local_config(steps=4, log_every=2)
  writer = _ScalarWriter()
  reporter = loop.StepReporter(config, writer, start=0, checkpoint_dir="unused")
  flops = {1: 1e9, 2: 3e9, 3: 5e9, 4: 7e9}
  for done in (1, 2, 3, 4):  # step 3 is non-finite: its update is skipped, its FLOPs were spent
    reporter.push(done, _step_metrics(model_flops=flops[done], nonfinite=done == 3))
    now[0] = 0.5 * done  # step `done` ran until now; it is read at the next push
  reporter.flush()
  logged = {step: scalars for step, scalars in writer.records if "nonfinite" not in scalars}
  assert sorted(logged) == [2, 4]
  tokens = config.data.batch_size * config.data.seq_len
  for step, window in ((2, (1, 2)), (4, (3, 4))):
    mean_flops = np.mean([flops[s] for s in window])
    assert logged[step]["step_time_s"] == pytest.approx(0.5)
    assert logged[step]["tokens_per_s"] == pytest.approx(tokens / 0.5)
    assert logged[step]["tflops_per_device"] == pytest.approx(
        mean_flops / 0.5 / jax.device_count() / 1e12, rel=1e-6)


def test_only_consecutive_non_finite_steps_stop_the_run():
  config = _local_config(steps=20, log_every=1, max_nonfinite_steps=2)
  writer = _ScalarWriter()
  reporter = loop.StepReporter(config, writer, start=0, checkpoint_dir="unused")
  # Non-finite steps with a good one between them: never two in a row.
  for done, bad in enumerate((True, False, True, False, True, False, True), start=1):
    reporter.push(done, _step_metrics(nonfinite=bad))
  reporter.flush()
  # Each skipped step is recorded at its own step, not at the one before it.
  assert [step for step, scalars in writer.records if scalars.get("nonfinite")] == [1, 3, 5, 7]
  reporter.push(8, _step_metrics(nonfinite=True))  # steps 7 and 8: two in a row
  with pytest.raises(loop.NonFiniteError, match="2 consecutive steps"):
    reporter.flush()


def _fake_clock(monkeypatch):
  """StepClock's time, moved by hand: [seconds]."""
  now = [0.0]
  monkeypatch.setattr(metrics_lib, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
  return now


@pytest.mark.parametrize("start, steps, next_line", [(0, 1000, 100), (100, 1000, 200),
                                                     (0, 50, 50)])
def test_a_run_s_first_step_is_said_at_once_when_its_first_log_line_is_steps_away(
    start, steps, next_line, caplog):
  """With slow steps, log_every=100 would leave an hour of silence after the compile. A run
  shorter than log_every logs next at its last step, not at a step it never reaches."""
  caplog.set_level(logging.INFO, logger="glmjax")
  writer = _ScalarWriter()
  reporter = loop.StepReporter(_local_config(steps=steps, log_every=100), writer, start=start,
                               checkpoint_dir="unused")
  for done in range(start + 1, start + 4):
    reporter.push(done, _step_metrics())
  reporter.flush()
  said = [r.getMessage() for r in caplog.records if "the first of this run" in r.getMessage()]
  assert len(said) == 1 and said[0].startswith(f"step {start + 1}/{steps} done, the first of "
                                               "this run, ")
  assert said[0].endswith(f"the next line is at step {next_line} (train.log_every=100)")
  assert writer.records == []  # metrics.jsonl and the step timings stay on the log_every grid


def test_a_run_logging_every_step_says_its_first_step_once_in_its_loss_line(caplog):
  caplog.set_level(logging.INFO, logger="glmjax")
  writer = _ScalarWriter()
  reporter = loop.StepReporter(_local_config(steps=1000, log_every=1), writer, start=0,
                               checkpoint_dir="unused")
  for done in (1, 2, 3):
    reporter.push(done, _step_metrics())
  reporter.flush()
  assert not [r for r in caplog.records if "the first of this run" in r.getMessage()]
  assert [step for step, _ in writer.records] == [1, 2, 3]


def test_a_log_line_s_eta_is_the_steps_left_times_the_step_time(monkeypatch, caplog):
  now = _fake_clock(monkeypatch)
  caplog.set_level(logging.INFO, logger="glmjax")
  reporter = loop.StepReporter(_local_config(steps=100, log_every=2), _ScalarWriter(), start=0,
                               checkpoint_dir="unused")
  for done in (1, 2, 3, 4):
    reporter.push(done, _step_metrics())
    now[0] = 0.5 * done  # 0.5 s a step
  reporter.flush()
  # At step 2, 98 steps of 0.5 s are left; at step 4, 96.
  assert "step 2/100" in caplog.text and "ETA 0:00:49" in caplog.text
  assert "step 4/100" in caplog.text and "ETA 0:00:48" in caplog.text


def test_the_first_log_line_of_a_resumed_run_times_only_the_steps_it_ran(monkeypatch):
  """A run resumed at step 100 has run 2 steps at its step 102, not 102."""
  now = _fake_clock(monkeypatch)
  now[0] = 1000.0  # the time start-up took before the loop, whatever it was
  writer = _ScalarWriter()
  reporter = loop.StepReporter(_local_config(steps=104, log_every=2), writer, start=100,
                               checkpoint_dir="unused")
  for done in (101, 102, 103, 104):
    reporter.push(done, _step_metrics())
    now[0] = 1000.0 + 0.5 * (done - 100)
  reporter.flush()
  logged = {step: scalars["step_time_s"] for step, scalars in writer.records}
  assert logged == {102: pytest.approx(0.5), 104: pytest.approx(0.5)}


@pytest.mark.parametrize("first, length", [(0, 3), (4, 2)])
def test_the_profiler_traces_profile_steps_steps_from_profile_start(monkeypatch, first, length):
  """Driven as train's loop drives it: before_step(step), the step, after_step(step + 1)."""
  events = []
  monkeypatch.setattr(jax.profiler, "start_trace", lambda *args, **kwargs: events.append("start"))
  monkeypatch.setattr(jax.profiler, "stop_trace", lambda: events.append("stop"))
  config = _local_config(steps=10, profile_start=first, profile_steps=length)
  profiler = loop.Profiler(config, "unused", enabled=True)
  for step in range(10):
    profiler.before_step(step)
    events.append(step)
    profiler.after_step(step + 1, np.zeros(2))
  profiler.stop()
  start, stop = events.index("start"), events.index("stop")
  assert events[start + 1:stop] == list(range(first, first + length))
  assert events.count("start") == events.count("stop") == 1


def test_the_profiler_waits_for_the_traced_steps_before_it_stops_the_trace(monkeypatch):
  """Steps are dispatched, not done: stopping at once would cut the last traced steps' device
  work out of the trace."""
  events, state = [], np.zeros(2)
  monkeypatch.setattr(jax.profiler, "start_trace", lambda *args, **kwargs: events.append("start"))
  monkeypatch.setattr(jax.profiler, "stop_trace", lambda: events.append("stop"))
  monkeypatch.setattr(jax, "block_until_ready", lambda x: events.append(("wait", x is state)))
  profiler = loop.Profiler(_local_config(steps=4, profile_start=0, profile_steps=2), "unused",
                           enabled=True)
  for step in range(4):
    profiler.before_step(step)
    profiler.after_step(step + 1, state)
  assert events == ["start", ("wait", True), "stop"]


def _small_run_config(**train_overrides):
  config = _local_config(**{"log_every": 2, **train_overrides})
  # A tenth of :local's documents, a tenth of them held out: enough batches, a fraction of the
  # start-up.
  config.data.update(builtin_docs=400, eval_fraction=0.1)
  config.checkpoint.update(async_save=False, keep=5)
  return config


def test_a_log_line_s_step_time_leaves_out_the_evaluation_and_the_save_before_it(tmp_path,
                                                                               monkeypatch):
  """Each step takes 1 s and each evaluation and save 100 s of a clock moved by hand: with
  evaluations at steps 2, 4 and 6 and a save at 4, every line still reads 1 s a step."""
  now = _fake_clock(monkeypatch)
  push, evaluate = loop.StepReporter.push, held_out.Evaluator.__call__
  save = checkpoint_lib.Checkpointer.save

  def one_second_step(self, done, metrics):
    now[0] += 1.0
    return push(self, done, metrics)

  def slow_evaluation(self, params):
    now[0] += 100.0
    return evaluate(self, params)

  def slow_save(self, step, *args, **kwargs):
    saved = save(self, step, *args, **kwargs)
    now[0] += 100.0 if saved else 0.0
    return saved
  monkeypatch.setattr(loop.StepReporter, "push", one_second_step)
  monkeypatch.setattr(held_out.Evaluator, "__call__", slow_evaluation)
  monkeypatch.setattr(checkpoint_lib.Checkpointer, "save", slow_save)
  config = _small_run_config(steps=6, eval_every=2, eval_batches=1)
  config.checkpoint.every = 4
  train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl", encoding="utf-8") as f:
    times = {r["step"]: r["step_time_s"] for r in map(json.loads, f) if "step_time_s" in r}
  assert times == {2: pytest.approx(1.0), 4: pytest.approx(1.0), 6: pytest.approx(1.0)}


def test_an_evaluation_that_fails_at_a_save_step_comes_after_that_step_s_checkpoint(
    tmp_path, monkeypatch):
  """Evaluations and saves share steps (both every 2000 by default); the evaluation's memory is
  not checked at start-up, so one can fail at run time: the step's checkpoint is written first."""
  def out_of_memory(self, params):
    raise RuntimeError("RESOURCE_EXHAUSTED: out of memory in the evaluation")
  monkeypatch.setattr(held_out.Evaluator, "__call__", out_of_memory)
  config = _small_run_config(steps=6, eval_every=4, eval_batches=1)
  config.checkpoint.every = 4
  with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
    train.train_and_evaluate(config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4"]


@pytest.mark.parametrize("device_snapshot", [False, True])
def test_a_sigterm_mid_run_saves_the_step_it_came_in_off_the_checkpoint_grid_and_stops(
    tmp_path, monkeypatch, device_snapshot):
  """The preemption notice comes during step 3 of a run that saves every 4: step 3 is saved
  (the work since the last save is kept) and the run returns normally, at step 3. With a
  device snapshot too, that save is written before the run closes, never left queued (with
  several processes a copy still queued at close is dropped)."""
  push = loop.StepReporter.push
  close, queued_at_close = checkpoint_lib.Checkpointer.close, []

  def closing(self):
    queued_at_close.append(self.snapshot_pending)
    close(self)
  monkeypatch.setattr(checkpoint_lib.Checkpointer, "close", closing)

  def sigterm_at_step_3(self, done, metrics):
    if done == 3:
      os.kill(os.getpid(), signal.SIGTERM)
    return push(self, done, metrics)
  monkeypatch.setattr(loop.StepReporter, "push", sigterm_at_step_3)
  heard = []
  recorder = lambda *_: heard.append("SIGTERM")  # noqa: E731 - pytest lives on without train's
  previous = signal.signal(signal.SIGTERM, recorder)
  try:
    config = _small_run_config(steps=10, log_every=1)
    config.checkpoint.update(every=4, device_snapshot=device_snapshot)
    result = train.train_and_evaluate(config, str(tmp_path))
    after = signal.getsignal(signal.SIGTERM)
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert result["step"] == 3 and result["stopped"] == "sigterm" and heard == []
  # close runs once, with no copy queued.
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3"] and queued_at_close == [False]
  assert after is recorder


def test_config_json_holds_the_attention_the_run_resolved_auto_to(tmp_path):
  """config.json is the resolved config: 'auto' is written as the kernel that ran (on CPU
  there is only xla to pick)."""
  config = _small_run_config(steps=1)
  config.model.attention = "auto"
  train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "config.json", encoding="utf-8") as f:
    assert json.load(f)["model"]["attention"] == "xla"


def test_a_first_ctrl_c_saves_the_step_it_came_in_and_a_second_stops_at_once(
    tmp_path, monkeypatch, caplog):
  """Ctrl-C in a single-process run is a request to stop, as SIGTERM is: the step it came in is
  saved. A second Ctrl-C, for a user who will not wait for that save, stops at once."""
  caplog.set_level(logging.INFO, logger="glmjax")
  push = loop.StepReporter.push
  presses = {3: 1}

  def ctrl_c_at(self, done, metrics):
    for _ in range(presses.get(done, 0)):
      os.kill(os.getpid(), signal.SIGINT)
    return push(self, done, metrics)
  monkeypatch.setattr(loop.StepReporter, "push", ctrl_c_at)
  heard = []
  recorder = lambda *_: heard.append("SIGINT")  # noqa: E731 - pytest lives on without train's
  previous = signal.signal(signal.SIGINT, recorder)
  try:
    config = _small_run_config(steps=10, log_every=1)
    config.checkpoint.every = 4
    result = train.train_and_evaluate(config, str(tmp_path / "once"))
    assert signal.getsignal(signal.SIGINT) is recorder
    presses.update({3: 2})
    with pytest.raises(KeyboardInterrupt):
      train.train_and_evaluate(config, str(tmp_path / "twice"))
    after = signal.getsignal(signal.SIGINT)
  finally:
    signal.signal(signal.SIGINT, previous)
  assert result["step"] == 3 and result["stopped"] == "sigint" and heard == []
  assert after is recorder
  assert sorted(os.listdir(tmp_path / "once" / "checkpoints")) == ["3"]
  assert "Stopped at step 3 on SIGINT; checkpoint saved." in caplog.text
  assert "Ctrl-C again to stop at once" in caplog.text
  assert not os.listdir(tmp_path / "twice" / "checkpoints")  # nothing saved: stopped at once


def test_a_sigterm_says_what_it_stops_in_each_phase_of_a_run(caplog):
  """Start-up ends at its next phase, the loop saves first, and after training (the command's
  last log copy) nothing is left to save."""
  said = []
  with loop.TerminationFlag() as flag:
    for phase in (None, flag.enter_loop, flag.leave_loop):
      if phase is not None:
        phase()
      caplog.clear()
      try:  # the 2nd and 3rd come with a stop already asked: SIGTERM never stops at once
        os.kill(os.getpid(), signal.SIGTERM)
      except KeyboardInterrupt:
        pytest.fail("a second SIGTERM stopped at once; only a second Ctrl-C may")
      said.append(caplog.records[-1].getMessage())
  assert said == [
      "SIGTERM received: stopping when this start-up phase ends (nothing new to save).",
      "SIGTERM received: saving a checkpoint and stopping.",
      "SIGTERM received: training has ended (nothing new to save)."]


def test_a_sigterm_that_lands_inside_a_write_to_stderr_is_still_heard(monkeypatch):
  """Piped stderr (| tee): the signal comes while the main thread writes to it, so the notice's
  own write fails ("reentrant call"); the stop must not be lost with it."""
  def reentrant(*args, **kwargs):
    raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")
  monkeypatch.setattr(loop.log, "warning", reentrant)
  with loop.TerminationFlag() as flag:
    flag.enter_loop()
    os.kill(os.getpid(), signal.SIGTERM)
    assert flag.requested and flag.signal_name == "SIGTERM"


def test_an_ignored_ctrl_c_stays_ignored_and_a_sigterm_is_still_heard():
  """A background job (nohup ... &) ignores SIGINT: training must not start hearing it."""
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    with loop.TerminationFlag() as flag:
      os.kill(os.getpid(), signal.SIGINT)  # ignored: nothing asks to stop
      assert not flag.requested
      os.kill(os.getpid(), signal.SIGTERM)
      assert flag.requested and flag.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
  finally:
    signal.signal(signal.SIGINT, previous)


def test_a_run_traces_profile_steps_steps_from_profile_start(tmp_path, monkeypatch):
  """train's loop, not only the Profiler: the trace holds steps 1 and 2 of 4, no more."""
  events = []
  monkeypatch.setattr(jax.profiler, "start_trace", lambda *args, **kwargs: events.append("start"))
  monkeypatch.setattr(jax.profiler, "stop_trace", lambda: events.append("stop"))

  class Annotation:  # jax.profiler.StepTraceAnnotation, recording the step it wraps
    def __init__(self, name, step_num):
      del name
      events.append(step_num)

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      return False
  monkeypatch.setattr(jax.profiler, "StepTraceAnnotation", Annotation)
  config = _small_run_config(steps=4, profile_start=1, profile_steps=2)
  config.train.eval_every = 0
  train.train_and_evaluate(config, str(tmp_path))
  assert events == [0, "start", 1, 2, "stop", 3]


def test_a_run_s_profiler_trace_lands_in_its_tensorboard_folder_under_plugins_profile(tmp_path):
  """A real trace (jax.profiler on CPU): `tensorboard --logdir WORKDIR/tensorboard` shows it
  beside the scalars, and nothing is written outside that folder."""
  config = _small_run_config(steps=2, profile_start=1, profile_steps=1)
  config.train.eval_every = 0
  train.train_and_evaluate(config, str(tmp_path))
  traces = list((tmp_path / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))
  assert len(traces) == 1, os.listdir(tmp_path)
  assert not (tmp_path / "plugins").exists()


@pytest.mark.parametrize("writes_metrics", [True, False])
def test_only_the_process_that_writes_metrics_warns_that_a_resume_found_none(
    tmp_path, caplog, writes_metrics):
  """A resume with no metrics.jsonl says so once, on process 0: the other hosts' writers are
  off and have no history to miss."""
  restored = types.SimpleNamespace(step=4, state="the restored state")
  checkpointer = types.SimpleNamespace(
      directory=str(tmp_path / "checkpoints"),
      restore_latest=lambda abstract, layout, **options: restored)
  outputs = train.RunOutputs(str(tmp_path),
                             metrics_lib.MetricsWriter(str(tmp_path), enabled=writes_metrics),
                             checkpointer)
  program = types.SimpleNamespace(abstract_state=None)
  caplog.set_level(logging.INFO, logger="glmjax")
  state = train._initial_state(_local_config(), program, {"param_layout": None}, outputs)
  outputs.writer.close()
  assert state == "the restored state"
  assert ("metrics.jsonl is missing" in caplog.text) == writes_metrics
  assert "Resumed from the checkpoint at step 4" in caplog.text
