"""MFU accounting, peak lookup by device kind, console and JSONL output."""
import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest

from glmjax import metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("kind, peak", [("TPU v4", 275e12), ("TPU v5 lite", 197e12),
                                        ("TPU v5p", 459e12), ("TPU v6 lite", 918e12),
                                        ("NVIDIA H100 80GB HBM3", 989e12), ("cpu", None)])
def test_peak_flops_by_device_kind(kind, peak):
  assert metrics.peak_flops(kind) == peak


@pytest.mark.parametrize("kind, peak", [("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA H200", 989e12),
                                        ("NVIDIA L4", 121e12), ("NVIDIA H100 PCIe", 756e12),
                                        ("NVIDIA H100 NVL", 835e12)])
def test_a_gpu_s_peak_is_its_dense_bf16_figure_not_the_sparse_one(kind, peak):
  # The datasheets' dense BF16 tensor-core figures; each sparse one is twice as much, and would
  # halve the MFU reported.
  assert metrics.peak_flops(kind) == peak


def test_mfu_is_model_flops_per_device_over_peak():
  out = metrics.throughput(step_time_s=0.5, tokens_per_step=1000, flops_per_step=1e15,
                           num_devices=4, device_kind="TPU v4")
  assert out["tokens_per_s"] == 2000
  assert out["tflops_per_device"] == pytest.approx(500)  # 1e15 / 0.5 s / 4 / 1e12
  assert out["mfu"] == pytest.approx(500e12 / 275e12)


def test_console_line_shows_objectives_only_for_a_mixture():
  mixed = metrics.console_line(40, 100, {"loss": 3.1, "loss_blank": 2.9, "loss_sentence": 3.3,
                                         "loss_document": None, "loss_tokens": 500.0}, 61)
  assert "loss 3.1000 (blank 2.900, sentence 3.300)" in mixed and "ETA 0:01:01" in mixed
  single = metrics.console_line(40, 100, {"loss": 3.1, "loss_blank": 2.9}, float("nan"))
  assert "(" not in single and "ETA ?" in single


def test_the_console_line_gives_throughput_in_its_units_and_mfu_as_a_percentage():
  line = metrics.console_line(10, 100, {"loss": 2.0, "step_time_s": 0.25, "tokens_per_s": 16384.0,
                                        "tflops_per_device": 12.5, "mfu": 0.4321}, 22.5)
  assert "| 0.250 s/step | 16,384 tok/s | 12.50 TFLOP/s/dev | MFU 43.2% | ETA 0:00:22" in line


def test_the_console_line_gives_the_rate_in_exponent_form_and_the_gradient_norm_as_gnorm():
  """Rates are about 1e-4: in fixed point every one would read 0.00. gnorm is the gradient's
  norm, which the step metrics hold beside the (much larger) parameter norm."""
  line = metrics.console_line(10, 100, {"loss": 2.0, "learning_rate": 3e-4, "grad_norm": 0.5,
                                        "param_norm": 123.0}, 22.5)
  assert "| lr 3.00e-04 | gnorm 0.500 |" in line, line


def test_a_clock_restarted_at_the_step_it_just_timed_times_the_next_steps_from_there(monkeypatch):
  """train restarts the clock after an evaluation or a save at the step that the log line
  before it timed: that lap has no step to divide by, and the next line leaves their time out."""
  now = [100.0]
  monkeypatch.setattr(metrics, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
  clock = metrics.StepClock()
  assert clock.lap(10) is None  # the run's start: nothing timed yet
  now[0] = 102.0
  assert clock.lap(12) == pytest.approx(1.0)  # 2 s over 2 steps
  now[0] = 107.0  # 5 s of evaluation after step 12
  assert clock.lap(12) is None
  now[0] = 107.75
  assert clock.lap(15) == pytest.approx(0.25)


def test_jsonl_writes_non_finite_values_as_null(tmp_path):
  writer = metrics.MetricsWriter(str(tmp_path))
  writer.write(3, {"loss": float("nan"), "grad_norm": 1.5, "param_norm": float("inf"),
                   "learning_rate": float("-inf")})
  writer.close()
  record = json.loads((tmp_path / "metrics.jsonl").read_text(), parse_constant=_reject)
  assert record == {"step": 3, "loss": None, "grad_norm": 1.5, "param_norm": None,
                    "learning_rate": None}


def _reject(name):
  raise ValueError(f"non-standard JSON constant {name}")


def test_a_resumed_run_appends_to_the_metrics_history_of_the_runs_before_it(tmp_path):
  first = metrics.MetricsWriter(str(tmp_path))
  first.write(1, {"loss": 2.5})
  first.close()
  resumed = metrics.MetricsWriter(str(tmp_path))
  assert resumed.had_history
  resumed.write(2, {"loss": 2.25})
  resumed.close()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line) for line in lines] == [{"step": 1, "loss": 2.5},
                                                  {"step": 2, "loss": 2.25}]


def test_each_metrics_record_is_on_disk_as_soon_as_it_is_written(tmp_path):
  """A run killed between log lines (SIGKILL, out of memory) loses none of the records it wrote:
  a resume reads them back, and a watcher tailing the file sees each step as it is logged."""
  writer = metrics.MetricsWriter(str(tmp_path))
  for step in (1, 2):
    writer.write(step, {"loss": 3.0 - step})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()  # the writer is still open
    assert [json.loads(line)["step"] for line in lines] == list(range(1, step + 1))
  writer.close()


def test_a_record_cut_off_by_a_full_disk_does_not_swallow_the_resumed_run_s_first_record(
    tmp_path, caplog):
  """ENOSPC mid-flush leaves a last line without its newline ('{"step"'); appended to as it
  was, the resumed run's first record was glued to it and both were lost to a JSON reader."""
  (tmp_path / "metrics.jsonl").write_text('{"step": 20, "loss": 3.0}\n{"step"')
  resumed = metrics.MetricsWriter(str(tmp_path))
  resumed.write(25, {"loss": 2.5})
  resumed.close()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert lines[1] == '{"step"'  # kept as it was, on a line of its own
  assert json.loads(lines[2]) == {"step": 25, "loss": 2.5}
  assert "cut-off line" in caplog.text


def _tensorboard_scalars(folder) -> list[tuple[int, str, float]]:
  """(step, tag, value) of every scalar in a folder's event files (TFRecord frames: a length,
  its CRC, the Event proto, its CRC), read without TensorBoard."""
  import struct  # pylint: disable=import-outside-toplevel
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  found = []
  for path in sorted(folder.glob("events.out.tfevents.*")):
    data, at = path.read_bytes(), 0
    while at < len(data):
      (length,) = struct.unpack("<Q", data[at:at + 8])
      event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
      at += 12 + length + 4
      found += [(event.step, value.tag, value.simple_value) for value in event.summary.value]
  return found


def test_tensorboard_gets_each_scalar_at_its_step(tmp_path):
  writer = metrics.MetricsWriter(str(tmp_path))
  for step in (10, 20, 30):
    writer.write(step, {"loss": step / 10, "grad_norm": float("nan")}, prefix="train/")
  writer.close()
  assert _tensorboard_scalars(tmp_path / "tensorboard") == [  # non-finite values left out
      (10, "train/loss", 1.0), (20, "train/loss", 2.0), (30, "train/loss", 3.0)]


def test_tensorboard_events_reach_disk_within_a_minute_of_being_written(tmp_path, monkeypatch):
  """TensorBoard reads what the writer has flushed: a run watched live shows its curves only
  as often as that (an hour's flush_secs would show nothing for an hour)."""
  metrics.MetricsWriter(str(tmp_path / "first")).close()  # tensorboardX loaded, as a run loads it
  made = []

  class RecordingWriter:
    def __init__(self, folder, **kwargs):
      made.append((folder, kwargs))
  monkeypatch.setattr(sys.modules["tensorboardX"], "SummaryWriter", RecordingWriter)
  writer = metrics.MetricsWriter(str(tmp_path / "run"))
  assert [folder for folder, _ in made] == [writer.tensorboard_dir]  # the writer the run uses
  assert 0 < made[0][1]["flush_secs"] <= 60, made


def test_a_run_s_tensorboard_writer_loads_no_pytorch_even_where_it_is_installed(tmp_path):
  """tensorboardX imports torch when it can (2-3 s at every run's start); a fresh process
  writes its scalars without it, and torch, where installed, still imports afterwards."""
  script = (
      "import importlib.util, sys\nfrom glmjax import metrics\n"
      f"writer = metrics.MetricsWriter({str(tmp_path)!r})\n"
      "writer.write(5, {'loss': 2.0}, prefix='train/')\nwriter.close()\n"
      "print('torch' in sys.modules)\n"
      "print(importlib.util.find_spec('torch') and __import__('torch').ones(2).sum().item())\n")
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": REPO})
  assert result.returncode == 0, result.stderr[-2000:]
  torch_installed = importlib.util.find_spec("torch") is not None
  assert result.stdout.split() == ["False", "2.0" if torch_installed else "None"]
  assert _tensorboard_scalars(tmp_path / "tensorboard") == [(5, "train/loss", 2.0)]
  if torch_installed:  # a process that loaded torch first keeps that module, not a second one
    script = (f"import sys, torch\nfrom glmjax import metrics\n"
              f"metrics.MetricsWriter({str(tmp_path / 'again')!r}).close()\n"
              "print(sys.modules['torch'] is torch)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": REPO})
    assert result.stdout.split() == ["True"], result.stderr[-2000:]
