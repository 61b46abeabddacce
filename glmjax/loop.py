"""What the training loop uses around the step: metrics read one step late, the profiler
window, and stopping on SIGTERM (this process's, or any host's through jax's preemption sync).

train.py's loop calls these in the order a step happens; none of them touches the state except
to wait for it.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from glmjax import metrics as metrics_lib

log = logging.getLogger("glmjax.train")


class NonFiniteError(RuntimeError):
  """Too many consecutive steps with a NaN or Inf loss, gradient or updated state."""


class Terminated(BaseException):
  """SIGTERM before the first step: start-up stops at its next phase, with nothing new to save.

  A BaseException, like KeyboardInterrupt: a request to stop, not a fault for an `except
  Exception` (a checkpoint read that counts a failure as damage) to handle."""


class TerminationFlag:
  """SIGTERM (preemption, scancel, launch/tpu.py stop) and a first Ctrl-C (SIGINT) in a
  single-process run; a multi-host run leaves SIGTERM to jax's preemption service
  (`reached_preemption_sync_point`) and Ctrl-C as it is. A second Ctrl-C stops at once
  (KeyboardInterrupt), for a user who will not wait for the save.

  The handler only sets `requested`: raising from it could interrupt Python's wait for a native
  XLA compile that goes on running, and the process may then crash at exit. So start-up calls
  `stop_if_requested` between its phases (data, restore, each compile), which raises
  Terminated, and the command exits 0: a launcher that requeues on success (gpu_slurm.sh) still
  does. Once the loop runs, it saves a checkpoint after the step in progress and stops. The
  previous handler is back after `with`."""

  def __init__(self, enabled: bool = True):
    self.requested = False
    self.signal_name = "SIGTERM"  # the signal that asked to stop, for the closing line
    self._enabled = enabled
    self._phase = "start-up"  # then "loop", then "ended" (the command's last log copy)
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> "TerminationFlag":
    if self._enabled:
      try:
        for signum in (signal.SIGTERM, signal.SIGINT):
          # An ignored Ctrl-C (a job started in the background by a shell: nohup ... &) stays
          # ignored: a stray SIGINT to its process group must not stop training.
          if signum != signal.SIGINT or signal.getsignal(signum) is not signal.SIG_IGN:
            self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # not the main thread (tests calling in-process from a thread)
        self._enabled = False
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, previous in self._previous.items():
      # None: the previous handler was not set from Python; the default action is the closest.
      signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

  def stop_if_requested(self) -> None:
    """Between start-up phases: ends start-up (Terminated) when a SIGTERM came."""
    if self.requested:
      raise Terminated()

  def enter_loop(self) -> None:
    self._phase = "loop"

  def leave_loop(self) -> None:
    """Training is over (finished, stopped or failed): a signal now has nothing to save."""
    self._phase = "ended"

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if signum == signal.SIGINT and self.requested:
      raise KeyboardInterrupt  # the second Ctrl-C: stop now, without the save
    # The flag first: a signal that lands inside a write to stderr makes the notice's own
    # write fail ("reentrant call"), and the stop must be heard all the same.
    self.signal_name = signal.Signals(signum).name
    self.requested = True
    what_now = {"start-up": "stopping when this start-up phase ends (nothing new to save)",
                "loop": "saving a checkpoint and stopping",
                "ended": "training has ended (nothing new to save)"}[self._phase]
    with contextlib.suppress(RuntimeError):
      log.warning("%s received: %s.", self.signal_name,
                  what_now + ("; Ctrl-C again to stop at once" if signum == signal.SIGINT else ""))


def _step_scalars(metrics) -> dict[str, float | None]:
  scalars = {key: float(metrics[key]) for key in
             ("loss", "accuracy", "grad_norm", "param_norm", "learning_rate", "loss_tokens")}
  # The mean over the step's Part B tokens, as eval/loss is taken (`loss` averages the rows).
  tokens = scalars["loss_tokens"]
  scalars["loss_per_token"] = (float(np.sum(metrics["objective_loss_sum"])) / tokens if tokens
                               else None)
  return {**scalars, **metrics_lib.objective_losses(metrics)}


class StepReporter:
  """Reads each step's metrics one step late (never blocking the device), logs every
  `train.log_every` steps, and stops the run after too many consecutive non-finite steps."""

  def __init__(self, config, writer, *, start: int, checkpoint_dir: str):
    self.config, self.writer = config, writer
    self.total_steps = int(config.train.steps)
    self.clock = metrics_lib.StepClock()
    self.clock.lap(start)
    self.throughput_args = dict(
        tokens_per_step=config.data.batch_size * config.data.seq_len,
        num_devices=jax.device_count(),
        device_kind=jax.devices()[0].device_kind)
    self.checkpoint_dir = checkpoint_dir
    self.start, self.began = start, time.perf_counter()
    self.consecutive_nonfinite = 0
    self.flops = []  # model FLOPs of each step since the last log line (each batch its own)
    self.pending = None
    self.last_scalars: dict[str, Any] = {}

  def push(self, step_done: int, metrics) -> None:
    self.flush()
    self.pending = (step_done, metrics)

  def flush(self) -> None:
    if self.pending is not None:
      step_done, metrics = self.pending
      self.pending = None
      self._report(step_done, jax.device_get(metrics))

  def restart_clock(self, step: int) -> None:
    """After evaluation or a checkpoint, so their time is not counted as step time."""
    self.clock.lap(step)

  def _report(self, step_done: int, host) -> None:
    self.flops.append(float(host["model_flops"]))
    if bool(host["nonfinite"]):
      self.consecutive_nonfinite += 1
      log.warning("Step %d: non-finite loss, gradient or update (loss=%s, grad_norm=%s); update "
                  "skipped (%d in a row).", step_done, host["loss"], host["grad_norm"],
                  self.consecutive_nonfinite)
      self.writer.write(step_done, {"nonfinite": 1.0, "loss": host["loss"],
                                    "grad_norm": host["grad_norm"]})
      if self.consecutive_nonfinite >= self.config.train.max_nonfinite_steps:
        raise NonFiniteError(
            f"{self.consecutive_nonfinite} consecutive steps had a non-finite loss, gradient or "
            "update "
            f"(last at step {step_done}); stopping. The parameters are those of the last good "
            f"step, and the checkpoints in {self.checkpoint_dir}, if any, are intact. Lower "
            "optim.learning_rate, check the data, or raise train.max_nonfinite_steps.")
      return
    self.consecutive_nonfinite = 0
    log_every = int(self.config.train.log_every)
    if step_done % log_every and step_done != self.total_steps:
      if step_done == self.start + 1:
        # The first line with a loss comes after log_every steps (100 by default): with slow
        # steps that is an hour of silence after compiling, unless this says they run.
        log.info("step %d/%d done, the first of this run, %.1f s after the loop began; the next "
                 "line is at step %d (train.log_every=%d)", step_done, self.total_steps,
                 time.perf_counter() - self.began,
                 min((step_done // log_every + 1) * log_every, self.total_steps), log_every)
      return
    scalars = _step_scalars(host)
    seconds = self.clock.lap(step_done)
    if seconds is not None:
      scalars.update(metrics_lib.throughput(step_time_s=seconds, flops_per_step=np.mean(self.flops),
                                            **self.throughput_args))
    self.flops = []
    self.writer.write(step_done, scalars)
    eta = (seconds or float("nan")) * (self.total_steps - step_done)
    log.info("%s", metrics_lib.console_line(step_done, self.total_steps, scalars, eta))
    self.last_scalars = scalars


class Profiler:
  """A jax.profiler trace of steps [train.profile_start, + train.profile_steps) on process 0."""

  def __init__(self, config, trace_dir: str, enabled: bool):
    self.first = int(config.train.profile_start)
    self.end = self.first + int(config.train.profile_steps)
    self.trace_dir, self.enabled, self.tracing = trace_dir, enabled and self.first >= 0, False

  def before_step(self, step: int) -> None:
    if self.enabled and step == self.first:
      jax.profiler.start_trace(self.trace_dir)
      self.tracing = True

  def after_step(self, step_done: int, state) -> None:
    if self.tracing and step_done >= self.end:
      self.stop(state)

  def stop(self, state=None) -> None:
    if self.tracing:
      if state is not None:
        jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.tracing = False
      log.info("Wrote a profiler trace from step %d to %s", self.first, self.trace_dir)


def reached_preemption_sync_point(step: int) -> bool:
  """Every host calls this every step; all get True at the same step after any host's SIGTERM."""
  try:
    return multihost_utils.reached_preemption_sync_point(step)
  except RuntimeError:  # jax_enable_preemption_service is off: no agreed stop, only checkpoints
    return False
