"""Metric writers (console, metrics.jsonl, TensorBoard) and FLOPs / MFU accounting.

MFU = model FLOPs per second per device / the device's peak dense bf16 FLOP/s. A step's model
FLOPs come from glmjax.model.step_flops on its own batch (3 x forward: the layers' weights, the
attention pairs that the GLM mask leaves visible, the vocabulary projection on the positions the
loss scores); rematerialisation is not counted.
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import os
import sys
import time
from typing import Mapping

import numpy as np
from etils import epath

from glmjax.data.pipeline import OBJECTIVE_NAMES

log = logging.getLogger(__name__)

# Peak dense bf16 FLOP/s per device, matched against jax.Device.device_kind (lower case), the
# first name found: the H100's PCIe and NVL cards run at lower clocks than its SXM one; a GH200
# ("gh200") is an H100-class GPU at the SXM figure, which "h200" gives it.
PEAK_FLOPS = (
    ("v6 lite", 918e12), ("v6e", 918e12), ("v5 lite", 197e12), ("v5e", 197e12),
    ("v5p", 459e12), ("v5", 459e12), ("v4", 275e12), ("h200", 989e12),
    ("h100 pcie", 756e12), ("h100 nvl", 835e12), ("h100", 989e12),
    ("a100", 312e12), ("l4", 121e12),
)


def peak_flops(device_kind: str) -> float | None:
  kind = device_kind.lower()
  for name, flops in PEAK_FLOPS:
    if name in kind:
      return flops
  return None


def throughput(*, step_time_s: float, tokens_per_step: int, flops_per_step: float,
               num_devices: int, device_kind: str) -> dict[str, float | None]:
  tokens_per_s = tokens_per_step / step_time_s
  tflops_per_device = flops_per_step / step_time_s / num_devices / 1e12
  peak = peak_flops(device_kind)
  return {
      "step_time_s": step_time_s,
      "tokens_per_s": tokens_per_s,
      "tflops_per_device": tflops_per_device,
      "mfu": tflops_per_device * 1e12 / peak if peak else None,
  }


def objective_losses(sums) -> dict[str, float | None]:
  """loss_blank, loss_sentence, loss_document from a step's or an evaluation's sums (None for
  an objective with no tokens)."""
  losses = {}
  for index, name in enumerate(OBJECTIVE_NAMES):
    count = float(sums["objective_weight"][index])
    losses[f"loss_{name}"] = float(sums["objective_loss_sum"][index]) / count if count else None
  return losses


def format_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def _summary_writer(folder: str):
  """tensorboardX's SummaryWriter, loaded without PyTorch. Its writer module imports torch
  wherever torch is installed, only to accept torch tensors: 2-3 s and ~180 MiB at every
  run's start. glmjax writes floats and text, so while tensorboardX loads `import torch` fails
  (a None in sys.modules), unless this process has loaded torch already."""
  if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
    sys.modules["torch"] = None
    try:
      import tensorboardX  # noqa: F401 pylint: disable=import-outside-toplevel,unused-import
    finally:
      del sys.modules["torch"]
  from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  return SummaryWriter(folder, flush_secs=30)


class MetricsWriter:
  """Writes on process 0 only; other processes get a writer that does nothing."""

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self.tensorboard_dir = os.path.join(workdir, "tensorboard")
    self._jsonl = None
    self._tensorboard = None
    self._jsonl_path = epath.Path(workdir) / "metrics.jsonl"
    self.had_history = enabled and self._jsonl_path.exists()  # a resume that finds none says so
    if enabled:  # epath: a local folder or a bucket (gs://...) alike
      epath.Path(self.tensorboard_dir).mkdir(parents=True, exist_ok=True)
      self._tensorboard = _summary_writer(self.tensorboard_dir)

  def write(self, step: int, scalars: Mapping[str, float | None], prefix: str = "") -> None:
    if not self.enabled:
      return
    clean = {f"{prefix}{k}": _to_float(v) for k, v in scalars.items()}
    # Strict JSON has no NaN or Infinity: non-finite values are written as null.
    finite = {k: v if v is not None and math.isfinite(v) else None for k, v in clean.items()}
    if self._jsonl is None:  # opened at the first record: a start that fails leaves no file
      cut = _ends_mid_line(self._jsonl_path)
      self._jsonl = self._jsonl_path.open("a", encoding="utf-8")  # appended, never truncated
      if cut:  # a full disk or a crash cut the last record: it stays apart, this one intact
        log.warning("%s ended in a cut-off line (a full disk or a crash mid-write); it is kept "
                    "as it is and this run's records start on the next line.", self._jsonl_path)
        self._jsonl.write("\n")
    self._jsonl.write(json.dumps({"step": step, **finite}) + "\n")
    self._jsonl.flush()
    for key, value in finite.items():
      if value is not None:
        self._tensorboard.add_scalar(key, value, step)

  def write_text(self, tag: str, text: str) -> None:
    if self.enabled:
      self._tensorboard.add_text(tag, text, 0)

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tensorboard is not None:
      self._tensorboard.close()


def _ends_mid_line(path: epath.Path) -> bool:
  """Whether the file at `path` holds a last line without its newline: appended to as it is,
  the next record would be glued to it, and both lines lost to a JSON reader."""
  try:
    with path.open("rb") as f:
      size = f.seek(0, os.SEEK_END)
      if size == 0:
        return False
      f.seek(size - 1)
      return f.read(1) != b"\n"
  except (OSError, ValueError):  # missing (a first run), or a store that cannot seek
    return False


def _to_float(value) -> float | None:
  if value is None:
    return None
  return float(np.asarray(value))


def console_line(step: int, total_steps: int, scalars: Mapping[str, float | None],
                 eta_s: float) -> str:
  def fmt(key, spec):
    value = scalars.get(key)
    return "n/a" if value is None else format(value, spec)
  per_objective = [f"{name} {scalars[f'loss_{name}']:.3f}" for name in OBJECTIVE_NAMES
                   if scalars.get(f"loss_{name}") is not None]
  mixture = f" ({', '.join(per_objective)})" if len(per_objective) > 1 else ""
  return (f"step {step}/{total_steps} | loss {fmt('loss', '.4f')}{mixture}"
          f" | acc {fmt('accuracy', '.3f')}"
          f" | lr {fmt('learning_rate', '.2e')} | gnorm {fmt('grad_norm', '.3f')}"
          f" | {fmt('step_time_s', '.3f')} s/step | {fmt('tokens_per_s', ',.0f')} tok/s"
          f" | {fmt('tflops_per_device', '.2f')} TFLOP/s/dev | MFU {fmt('mfu', '.1%')}"
          f" | ETA {format_eta(eta_s)}")


class StepClock:
  """Average wall time per step between two laps (log points, or restarts after eval/save)."""

  def __init__(self):
    self._last_time = None
    self._last_step = None

  def lap(self, step: int) -> float | None:
    now = time.perf_counter()
    seconds = None
    if self._last_time is not None and step > self._last_step:
      seconds = (now - self._last_time) / (step - self._last_step)
    self._last_time, self._last_step = now, step
    return seconds
