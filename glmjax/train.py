"""python -m glmjax.train --config=configs/base.py --workdir=DIR

The command line and the training loop. Everything the loop calls is pure and lives elsewhere:
step.py (train/eval steps), parallel.py (mesh, shardings), data/ (batches by step index),
checkpoint.py (Orbax), metrics.py (writers, MFU).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags
from etils import epath
from jax.experimental import multihost_utils
from ml_collections import config_flags

from glmjax import checkpoint as checkpoint_lib
from glmjax import config as config_lib
from glmjax import logs
from glmjax import metrics as metrics_lib
from glmjax import parallel, prefetch, step as step_lib
from glmjax import workdir as workdir_lib
from glmjax import held_out
from glmjax.held_out import Evaluator, objective_losses as _objective_losses
from glmjax.data import pipeline as pipeline_lib
from glmjax.data import sources, tokenizers


log = logging.getLogger("glmjax.train")


class NonFiniteError(RuntimeError):
  """Too many consecutive steps with a NaN or Inf loss, gradient or updated state."""


class _TerminationFlag:
  """Set by SIGTERM (preemption); the loop saves a checkpoint and exits cleanly."""

  def __init__(self):
    self.requested = False

  def install(self):
    try:
      signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (tests calling in-process from a thread)
      pass

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    log.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.requested = True


def _step_scalars(metrics) -> dict[str, float | None]:
  scalars = {key: float(metrics[key]) for key in
             ("loss", "accuracy", "grad_norm", "param_norm", "learning_rate", "loss_tokens")}
  return {**scalars, **_objective_losses(metrics)}


def _memory_summary(compiled) -> str:
  try:
    memory = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - not every backend reports it
    memory = None
  if memory is None:
    return "memory analysis unavailable on this backend"
  gib = lambda n: f"{n / 2**30:.2f} GiB"
  return (f"per device: arguments {gib(memory.argument_size_in_bytes)}, outputs "
          f"{gib(memory.output_size_in_bytes)}, temporaries {gib(memory.temp_size_in_bytes)}")


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
            f"step and the newest checkpoint in {self.checkpoint_dir} is intact. Lower "
            "optim.learning_rate, check the data, or raise train.max_nonfinite_steps.")
      return
    self.consecutive_nonfinite = 0
    if step_done % self.config.train.log_every and step_done != self.total_steps:
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


def _reached_preemption_sync_point(step: int) -> bool:
  """Every host calls this every step; all get True at the same step after any host's SIGTERM."""
  try:
    return multihost_utils.reached_preemption_sync_point(step)
  except RuntimeError:  # jax_enable_preemption_service is off: no agreed stop, only checkpoints
    return False


class StartupError(ValueError):
  """A config, data or checkpoint problem found before training; the message says the fix."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains to `config.train.steps`, resuming from `workdir` if it holds checkpoints."""
  parallel.initialize_distributed(int(config.train.distributed_timeout_s))
  try:
    mesh = parallel.make_mesh(config.mesh)
    config_lib.validate(config, num_devices=jax.device_count(),
                        batch_parallelism=parallel.batch_axis_size(mesh))
    tokenizer = tokenizers.load_tokenizer(config.data)
    if tokenizer.ids_used > config.model.vocab_size:
      raise config_lib.ConfigError(
          f"model.vocab_size={config.model.vocab_size} is smaller than the tokenizer's "
          f"vocabulary ({tokenizer.ids_used} ids); set model.vocab_size={tokenizer.vocab_size}.")
    train_docs, eval_docs = sources.load_documents(config.data, tokenizer)
    if config.train.eval_every:
      sources.check_held_out(config.data, eval_docs)
    train_pipeline = pipeline_lib.BatchPipeline(config.data, tokenizer, train_docs,
                                                seed=config.seed)
    eval_pipeline = (held_out.eval_pipeline(config.data, tokenizer, eval_docs, config.seed)
                     if config.train.eval_every else None)
    if config.checkpoint.init_from:
      checkpoint_lib.checkpoints_directory(config.checkpoint.init_from)
    model_config = step_lib.resolved_model_config(config)
  except config_lib.ConfigError:
    raise
  except (ValueError, FileNotFoundError) as error:
    raise StartupError(str(error)) from error
  rules = parallel.logical_rules(config.mesh)
  try:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # a local folder or gs://bucket/run
    writer = metrics_lib.MetricsWriter(workdir, enabled=jax.process_index() == 0)
    checkpointer = checkpoint_lib.Checkpointer(
        os.path.join(workdir, "checkpoints"), every=config.checkpoint.every,
        keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
  except OSError as error:
    raise StartupError(workdir_lib.unwritable(workdir, error)) from error
  try:
    with parallel.activate(mesh, rules):
      return _train(config, workdir, mesh, rules, model_config, train_pipeline, eval_pipeline,
                    writer, checkpointer)
  finally:
    checkpointer.close()
    writer.close()


def _train(config, workdir, mesh, rules, model_config, train_pipeline, eval_pipeline, writer,
           checkpointer):
  program = step_lib.build_program(config, mesh, rules, model_config)
  abstract, shardings = program.abstract_state, program.shardings
  layout = checkpoint_lib.parameter_layout(abstract.params)
  resolved = ml_collections.ConfigDict(config.to_dict())
  resolved.model.attention = model_config.attention
  metadata = {"config": json.loads(resolved.to_json_best_effort()), "param_layout": layout,
              "state_layout": checkpoint_lib.parameter_layout(abstract)}

  check = lambda saved, step: workdir_lib.check_resume(  # noqa: E731 - before the state is read
      saved.get("config", {}), metadata["config"], step=step, workdir=workdir,
      allow=bool(config.train.allow_config_change))
  restored = checkpointer.restore_latest(abstract, layout, check=check,
                                         start_over=bool(config.checkpoint.start_over))
  if restored is not None and writer.enabled and not writer.had_history:
    log.warning("metrics.jsonl is missing from %s: the metrics before step %d are lost; new "
                "ones are written from there on.", workdir, restored.step)
  if restored is None:
    state = step_lib.init_sharded_state(program.init_fn, shardings, config.seed)
    if config.checkpoint.init_from:
      params, at = checkpoint_lib.restore_params(config.checkpoint.init_from, abstract.params,
                                                 layout)
      state = state.replace(params=params)
      log.info("Initialised from the parameters of step %d in %s (new optimizer state, step 0)",
               at, config.checkpoint.init_from)
    else:
      log.info("Initialised a new model in %s", workdir)
  else:
    state = restored.state
    log.info("Resumed from the checkpoint at step %d in %s", restored.step,
             checkpointer.directory)
  start = int(jax.device_get(state.step))
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
  log.info("Parameters: %s on a %s mesh over %d process(es) (%.1f%% of them replicated); "
           "attention %s", f"{num_params:,}", dict(mesh.shape), jax.process_count(),
           100 * parallel.replicated_fraction(state.params) if mesh.size > 1 else 0.0,
           model_config.attention)
  if jax.process_index() == 0:
    workdir_lib.write_config(workdir, resolved.to_json_best_effort(indent=2, sort_keys=True),
                             start)
    writer.write_text("config", resolved.to_json_best_effort(indent=2))

  # Compile before the first batch: out-of-memory shows here, with the sizes, not at step 0.
  started = time.perf_counter()
  train_fn = program.compile_train_step(config, mesh)
  log.info("Compiled the train step in %.1f s; %s", time.perf_counter() - started,
           _memory_summary(train_fn))
  evaluator = (Evaluator(program.compile_eval_step(config, mesh), eval_pipeline, config, mesh)
               if eval_pipeline is not None else None)

  total_steps = int(config.train.steps)
  reporter = StepReporter(config, writer, start=start, checkpoint_dir=checkpointer.directory)
  profiler = Profiler(config, writer.tensorboard_dir, enabled=jax.process_index() == 0)
  termination = _TerminationFlag()
  if jax.process_count() == 1:  # multi-host: jax's preemption service owns SIGTERM
    termination.install()
  host = parallel.host_rows(mesh, config.data.batch_size)  # the rows this host builds each step
  # Batch k+1 is built and transferred on a background thread while the devices run step k.
  batches = prefetch.Prefetcher(
      lambda k: parallel.global_batch(train_pipeline.build_rows(k, host.rows), host), start,
      total_steps)
  run_start = time.perf_counter()
  try:
    for step in range(start, total_steps):
      profiler.before_step(step)
      batch = batches.get(step)
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, metrics = train_fn(state, batch)
      done = step + 1
      reporter.push(done, metrics)
      profiler.after_step(done, state)
      if evaluator is not None and done % config.train.eval_every == 0:
        reporter.flush()
        scalars = evaluator(state.params)
        writer.write(done, scalars, prefix="eval/")
        log.info("eval at step %d | loss %.4f | accuracy %.3f | perplexity %.2f", done,
                 scalars["loss"], scalars["accuracy"], scalars["perplexity"])
        reporter.restart_clock(done)
      preempted = termination.requested or _reached_preemption_sync_point(done)
      if checkpointer.should_save(done) or preempted:
        reporter.flush()  # never checkpoint a state whose step has not been checked
        checkpointer.save(done, state, metadata, preempted=preempted)
        reporter.restart_clock(done)
      if preempted:
        profiler.stop(state)
        log.warning("Stopped at step %d on SIGTERM; checkpoint saved.", done)
        return {"step": done, "stopped": "sigterm", **reporter.last_scalars}
    reporter.flush()
    profiler.stop(state)
    end = int(jax.device_get(state.step))
    if end > start or not checkpointer.steps():
      checkpointer.save(end, state, metadata, force=True)
    log.info("Finished %d steps in %.1f s; outputs in %s", end - start,
             time.perf_counter() - run_start, workdir)
    return {"step": end, **reporter.last_scalars}
  finally:  # an error mid-window still writes the trace
    batches.close()
    profiler.stop()


_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py[:local]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")


# Errors written for the user: their message is the whole story, no traceback on the console.
_USER_ERRORS = (config_lib.ConfigError, StartupError, NonFiniteError,
                workdir_lib.ConfigChangedError, checkpoint_lib.IncompatibleCheckpointError,
                checkpoint_lib.UnusableCheckpointError, checkpoint_lib.NonFiniteStateError,
                checkpoint_lib.CheckpointWriteError)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError("Both --config and --workdir are required.")
  run(_CONFIG.value, _WORKDIR.value)


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """The command: train_and_evaluate, with failures as one line (exit status 1) and their
  tracebacks in the workdir's log."""
  parallel.initialize_distributed(int(config.train.distributed_timeout_s))
  logs.setup_console(jax.process_index())
  try:
    config_lib.validate(config)  # a mistyped value leaves no workdir behind
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # a local folder or gs://bucket/run
    log_path = logs.log_file(workdir, jax.process_index())
    logs.attach_file(log_path)
    cache = workdir_lib.compilation_cache_dir(config.train.compilation_cache_dir, workdir,
                                              dict(os.environ))
    if cache:
      jax.config.update("jax_compilation_cache_dir", cache)
    if "://" in workdir:
      log.info("This run's log file: %s (a bucket cannot be appended to)", log_path)
  except config_lib.ConfigError as error:
    logs.report_failure(error, None, expected=True)
    raise SystemExit(1) from None
  except OSError as error:
    logs.report_failure(StartupError(workdir_lib.unwritable(workdir, error)), None,
                        expected=True)
    raise SystemExit(1) from None
  try:
    train_and_evaluate(config, workdir)
  except _USER_ERRORS as error:
    logs.report_failure(error, log_path, expected=True)
    raise SystemExit(1) from None
  except Exception as error:  # noqa: BLE001 - a bug or unforeseen fault: traceback in the log
    logs.report_failure(error, log_path, expected=False)
    raise SystemExit(1) from None


if __name__ == "__main__":
  app.run(main)
