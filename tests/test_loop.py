"""loop.StepReporter: what each log line says, from the step metrics read one step late."""
import time
import types

import jax
import numpy as np
import pytest

from glmjax import loop
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
  its own)."""
  now = [0.0]
  monkeypatch.setattr(metrics_lib, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
  config = _local_config(steps=4, log_every=2)
  writer = _ScalarWriter()
  reporter = loop.StepReporter(config, writer, start=0, checkpoint_dir="unused")
  flops = {1: 1e9, 2: 3e9, 3: 5e9, 4: 7e9}
  for done in (1, 2, 3, 4):
    reporter.push(done, _step_metrics(model_flops=flops[done]))  # reports step done - 1
    now[0] = 0.5 * done  # step `done` ran until now; it is read at the next push
  reporter.flush()
  logged = {step: scalars for step, scalars in writer.records}
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
  reporter = loop.StepReporter(config, _ScalarWriter(), start=0, checkpoint_dir="unused")
  # Non-finite steps with a good one between them: never two in a row.
  for done, bad in enumerate((True, False, True, False, True, False, True), start=1):
    reporter.push(done, _step_metrics(nonfinite=bad))
  reporter.flush()
  reporter.push(8, _step_metrics(nonfinite=True))  # steps 7 and 8: two in a row
  with pytest.raises(loop.NonFiniteError, match="2 consecutive steps"):
    reporter.flush()
