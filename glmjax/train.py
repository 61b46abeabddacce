"""python -m glmjax.train --config=configs/base.py --workdir=DIR

The command line and the training loop, in the order a run happens: start-up checks (`_inputs`),
the outputs (`_outputs`), then `_train`: the program, the state (restored, initialised or taken
from another run), compilation, and the loop over steps. What the loop calls lives elsewhere:
step.py (the pure train/eval steps), loop.py (metrics one step late, profiler, SIGTERM),
parallel.py (mesh, shardings), data/ (batches by step index), checkpoint.py (Orbax).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from glmjax import attention_choice, cli, distributed
from glmjax import checkpoint as checkpoint_lib
from glmjax import config as config_lib
from glmjax import held_out, logs, loop, optim, parallel, params_restore, prefetch
from glmjax import restore_agreement as agreement
from glmjax import run_log as run_log_lib
from glmjax import step as step_lib
from glmjax import memory as memory_lib
from glmjax import metrics as metrics_lib
from glmjax import workdir as workdir_lib
from glmjax.data import pipeline as pipeline_lib
from glmjax.data import sources, tokenizers
from glmjax.model import ModelConfig
from glmjax.model.model_config import PARAMETER_FIELDS


log = logging.getLogger("glmjax.train")


class StartupError(ValueError):
  """A config, data or checkpoint problem found before training; the message says the fix."""


@dataclasses.dataclass(frozen=True)
class RunInputs:
  """What start-up decided, before anything is written: where, on what, with which data."""
  mesh: Any
  rules: Any
  model_config: ModelConfig   # config.model, attention resolved (attention_choice)
  train_pipeline: pipeline_lib.BatchPipeline
  eval_pipeline: pipeline_lib.BatchPipeline | None
  tokenizer: dict             # tokenizers.tokenizer_info: saved with every checkpoint
  corpus: dict                # workdir.corpus_record: saved with every checkpoint


@dataclasses.dataclass(frozen=True)
class RunOutputs:
  """Where the run writes: the workdir, its metrics and its checkpoints."""
  workdir: str
  writer: metrics_lib.MetricsWriter
  checkpointer: checkpoint_lib.Checkpointer


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       termination: loop.TerminationFlag | None = None) -> dict[str, Any]:
  """Trains to `config.train.steps`, resuming from `workdir` if it holds checkpoints.
  `termination`: the command's flag, already listening (a SIGTERM during its own start-up
  counts); without one, this call listens for SIGTERM and Ctrl-C itself."""
  # run() has joined already; this call (then a no-op) is for code that calls this function.
  distributed.initialize(int(config.train.distributed_timeout_s), preemption_notice=True)
  if termination is None:
    # Multi-host: jax's preemption service owns SIGTERM and the loop asks it at every step.
    with loop.TerminationFlag(enabled=jax.process_count() == 1) as own:
      return train_and_evaluate(config, workdir, own)
  try:
    inputs = _inputs(config)
    termination.stop_if_requested()
    outputs = _outputs(config, workdir)
    try:
      with parallel.activate(inputs.mesh, inputs.rules):
        return _train(config, inputs, outputs, termination)
    finally:
      termination.leave_loop()  # the last save and the closing below are not the loop's
      try:
        outputs.checkpointer.close()  # may raise the last save's error (a full disk)
      finally:
        outputs.writer.close()  # the metrics written so far reach their files either way
  except loop.Terminated:
    log.warning("Stopped on %s during start-up, before the first step: nothing new to "
                "save, and no checkpoint was written.", termination.signal_name)
    return {"stopped": termination.signal_name.lower()}


def _inputs(config) -> RunInputs:
  """Every start-up check that needs no workdir: config, tokenizer, data, attention."""
  try:
    mesh = parallel.make_mesh(config.mesh)
    config_lib.validate(config, num_devices=jax.device_count(),
                        batch_parallelism=parallel.batch_axis_size(mesh))
    # An import's config.py without a tokenizer named: load_tokenizer refuses it.
    tokenizer = tokenizers.load_tokenizer(config.data)
    if tokenizer.ids_used > config.model.vocab_size:
      raise config_lib.ConfigError(
          f"model.vocab_size={config.model.vocab_size} is smaller than the tokenizer's "
          f"vocabulary ({tokenizer.ids_used} ids); set model.vocab_size={tokenizer.vocab_size}.")
    if vocab_warning := config_lib.vocab_size_warning(config.model):
      log.warning(vocab_warning)
    train_docs, eval_docs = sources.load_documents(config.data, tokenizer)
    if config.train.eval_every:
      sources.check_held_out(config.data, eval_docs)
    train_pipeline = pipeline_lib.BatchPipeline(config.data, tokenizer, train_docs,
                                                seed=config.seed)
    eval_pipeline = (held_out.eval_pipeline(config.data, tokenizer, eval_docs, config.seed)
                     if config.train.eval_every else None)
    if config.checkpoint.init_from:
      params_restore.checkpoints_directory(config.checkpoint.init_from)
    model_config = attention_choice.resolved_model_config(config)
  except config_lib.ConfigError:
    raise
  except (ValueError, FileNotFoundError) as error:
    raise StartupError(str(error)) from error
  return RunInputs(mesh, parallel.logical_rules(config.mesh), model_config, train_pipeline,
                   eval_pipeline, tokenizers.tokenizer_info(tokenizer),
                   workdir_lib.corpus_record(train_docs))


def _outputs(config, workdir: str) -> RunOutputs:
  try:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # a local folder or gs://bucket/run
    writer = metrics_lib.MetricsWriter(workdir, enabled=jax.process_index() == 0)
    checkpointer = checkpoint_lib.Checkpointer(
        checkpoint_lib.in_workdir(workdir), every=config.checkpoint.every,
        keep=config.checkpoint.keep, async_save=config.checkpoint.async_save,
        snapshot_parts=config.checkpoint.snapshot_parts)
  except OSError as error:
    raise StartupError(workdir_lib.unwritable(workdir, error)) from error
  return RunOutputs(workdir, writer, checkpointer)


def _initial_state(config, program: step_lib.Program, metadata: dict,
                   outputs: RunOutputs) -> step_lib.TrainState:
  """The newest good checkpoint of the workdir (its config checked against this one first),
  else a new state, with `checkpoint.init_from`'s parameters when it is set (and its optimizer
  state with `checkpoint.init_optimizer`)."""
  workdir, checkpointer = outputs.workdir, outputs.checkpointer
  abstract, layout = program.abstract_state, metadata["param_layout"]

  def check(saved: dict, step: int) -> None:  # before the state is read
    workdir_lib.check_resume(saved.get("config", {}), metadata["config"], step=step,
                             workdir=workdir, allow=bool(config.train.allow_config_change))
    workdir_lib.check_tokenizer(
        saved.get("tokenizer"), metadata["tokenizer"],
        what=f"The checkpoint at step {step} in {workdir}",
        fix="Point the data.tokenizer fields at the tokenizer that run used (config.json in "
            "the workdir), or train in a new --workdir.")
    workdir_lib.check_corpus(saved.get("corpus"), metadata["corpus"], step=step,
                             workdir=workdir, label=sources.source_label(config.data),
                             allow=bool(config.train.allow_config_change))

  restored = checkpointer.restore_latest(
      abstract, layout, check=check, start_over=bool(config.checkpoint.start_over),
      config_changes=lambda saved: config_lib.trajectory_changes(
          saved.get("config", {}), metadata["config"], free_too=True))
  if restored is not None:
    if outputs.writer.enabled and not outputs.writer.had_history:
      log.warning("metrics.jsonl is missing from %s: the metrics before step %d are lost; new "
                  "ones are written from there on.", workdir, restored.step)
    log.info("Resumed from the checkpoint at step %d in %s", restored.step,
             checkpointer.directory)
    return restored.state
  state = step_lib.init_sharded_state(program.init_fn, program.shardings, config.seed)
  if not config.checkpoint.init_from:
    log.info("Initialised a new model in %s", workdir)
    return state
  source, moments = config.checkpoint.init_from, bool(config.checkpoint.init_optimizer)
  wanted = {"params": abstract.params, **({"opt_state": abstract.opt_state} if moments else {})}
  parts, at = params_restore.restore_parts(
      source, wanted, layout, check=lambda saved, step: workdir_lib.check_tokenizer(
          saved.get("tokenizer"), metadata["tokenizer"],
          what=f"checkpoint.init_from={source!r} (its step {step})",
          fix="Set the data.tokenizer fields to that run's (its config.json), or leave "
              "checkpoint.init_from empty to start afresh."),
      # Only the fields that shape parameters: init_from takes new dropout, dtype or kernel.
      changes=lambda saved: [change for change in config_lib.trajectory_changes(
          saved.get("config", {}), metadata["config"], free_too=True)
          if change.split(":")[0] in {f"model.{name}" for name in PARAMETER_FIELDS}],
      fix="Set those model fields to that run's (its config.json), or leave "
          "checkpoint.init_from empty to start afresh.")
  log.info("Initialised from the parameters of step %d in %s (%s, step 0)", at, source,
           "its optimizer state too" if moments else "new optimizer state")
  return state.replace(**parts)


def _train(config, inputs: RunInputs, outputs: RunOutputs, termination: loop.TerminationFlag):
  mesh, model_config = inputs.mesh, inputs.model_config
  workdir, writer, checkpointer = outputs.workdir, outputs.writer, outputs.checkpointer
  # --- The program: model, optimizer, the state's layout, and what a checkpoint records.
  program = step_lib.build_program(config, mesh, inputs.rules, model_config)
  abstract = program.abstract_state
  layout = checkpoint_lib.parameter_layout(abstract.params)
  resolved = ml_collections.ConfigDict(config.to_dict())
  resolved.model.attention = model_config.attention
  metadata = {"config": json.loads(resolved.to_json_best_effort()), "param_layout": layout,
              "state_layout": checkpoint_lib.parameter_layout(abstract),
              "tokenizer": inputs.tokenizer, "corpus": inputs.corpus}

  # --- The state: resumed from this workdir, else new (or another run's parameters).
  state = _initial_state(config, program, metadata, outputs)
  termination.stop_if_requested()
  start = int(jax.device_get(state.step))
  if start >= int(config.train.steps):  # a finished run run again: nothing to compile or save
    log.info("Nothing to train: the checkpoint at step %d in %s already reaches train.steps=%d; "
             "raise --config.train.steps to train on.", start, checkpointer.directory,
             int(config.train.steps))
    return {"step": start, "already_done": True}
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
  log.info("Parameters: %s on a %s mesh over %d process(es) (%.1f%% of them replicated); "
           "attention %s", f"{num_params:,}", dict(mesh.shape), jax.process_count(),
           100 * parallel.replicated_fraction(state.params) if mesh.size > 1 else 0.0,
           model_config.attention)
  if jax.process_index() == 0:
    workdir_lib.write_config(workdir, resolved.to_json_best_effort(indent=2, sort_keys=True),
                             start)
    writer.write_text("config", resolved.to_json_best_effort(indent=2))

  # --- Compile before the first batch: out-of-memory shows here, with sizes, not at step 0.
  started = time.perf_counter()
  train_fn = program.compile_train_step(config, mesh)
  log.info("Compiled the train step in %.1f s; %s", time.perf_counter() - started,
           memory_lib.memory_summary(train_fn))
  if config.checkpoint.device_snapshot:
    log.log(*memory_lib.device_snapshot_report(memory_lib.memory_analysis(train_fn),
                                               memory_lib.state_bytes_per_device(state),
                                               memory_lib.device_memory_limit()))
  if parts_warning := config_lib.snapshot_parts_warning(config.checkpoint):
    log.warning(parts_warning)
  termination.stop_if_requested()
  evaluator = (held_out.Evaluator(program.compile_eval_step(config, mesh), inputs.eval_pipeline,
                                  config, mesh) if inputs.eval_pipeline is not None else None)
  termination.stop_if_requested()

  # --- The loop: batch, step, metrics (one step late), checkpoint, SIGTERM, evaluation.
  total_steps = int(config.train.steps)
  log.info(optim.schedule_line(config.optim, total_steps))
  reporter = loop.StepReporter(config, writer, start=start, checkpoint_dir=checkpointer.directory)
  profiler = loop.Profiler(config, writer.tensorboard_dir, enabled=jax.process_index() == 0)
  termination.enter_loop()  # from here a SIGTERM saves after the step it comes in
  host = parallel.host_rows(mesh, config.data.batch_size)  # the rows this host builds each step
  # Batch k+1 is built and transferred on a background thread while the devices run step k.
  batches = prefetch.Prefetcher(
      lambda k: parallel.pipeline_batch(inputs.train_pipeline, k, host), start, total_steps)
  run_start = time.perf_counter()
  try:
    for step in range(start, total_steps):
      profiler.before_step(step)
      batch = batches.get(step)
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, metrics = train_fn(state, batch)
      checkpointer.write_deferred()  # a device snapshot, once on the host, goes to Orbax
      done = step + 1
      reporter.push(done, metrics)
      profiler.after_step(done, state)
      preempted = termination.requested or loop.reached_preemption_sync_point(done)
      if checkpointer.should_save(done) or preempted:
        reporter.flush()  # never checkpoint a state whose step has not been checked
        checkpointer.save(done, state, metadata, preempted=preempted,
                          defer=config.checkpoint.device_snapshot)
        reporter.restart_clock(done)
      if preempted:
        profiler.stop(state)
        log.warning("Stopped at step %d on %s; checkpoint saved.", done,
                    termination.signal_name)
        return {"step": done, "stopped": termination.signal_name.lower(),
                **reporter.last_scalars}
      # After the save: an evaluation that fails (its memory is not checked at start-up) loses
      # no checkpoint, a SIGTERM's save does not wait for it, and an async write overlaps it.
      # (A device snapshot's copy may still be on the chips: aot's peak counts it beside it.)
      if evaluator is not None and done % config.train.eval_every == 0:
        reporter.flush()
        scalars = evaluator(state.params)
        writer.write(done, scalars, prefix="eval/")
        log.info("eval at step %d | loss %.4f | accuracy %.3f | perplexity %.2f", done,
                 scalars["loss"], scalars["accuracy"], scalars["perplexity"])
        reporter.restart_clock(done)
    reporter.flush()
    profiler.stop(state)
    end = int(jax.device_get(state.step))
    checkpointer.save(end, state, metadata, force=True)
    log.info("Finished %d steps in %.1f s; outputs in %s", end - start,
             time.perf_counter() - run_start, workdir)
    return {"step": end, **reporter.last_scalars}
  finally:  # an error mid-window still writes the trace
    batches.close()
    profiler.stop()


def define_flags() -> None:
  """The command's flags, defined only when it runs (aot and bench define --config too)."""
  config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py[:local]).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")


# Errors written for the user: their message is the whole story, no traceback on the console.
_USER_ERRORS = (config_lib.ConfigError, StartupError, loop.NonFiniteError,
                workdir_lib.ConfigChangedError, checkpoint_lib.IncompatibleCheckpointError,
                checkpoint_lib.UnusableCheckpointError, checkpoint_lib.NonFiniteStateError,
                checkpoint_lib.CheckpointWriteError, agreement.RefusedOnAnotherHost)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  if config is None or not workdir:
    raise app.UsageError("Both --config and --workdir are required.")
  run(config, workdir)


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """The command: train_and_evaluate, with failures as one line (exit status 1) and their
  tracebacks in the workdir's log."""
  # Every process says it is joining (a host that hangs there is then visible in its console);
  # once joined, only process 0 keeps printing INFO lines.
  logs.setup_console(0)
  try:
    distributed.initialize(int(config.train.distributed_timeout_s), preemption_notice=True)
  except distributed.JoinError as error:
    logs.fail(error)
  logs.setup_console(jax.process_index())
  try:
    config_lib.validate(config)  # a mistyped value leaves no workdir behind
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # a local folder or gs://bucket/run
    held = workdir_lib.lock(workdir, jax.process_index())  # refuses a second train here
    run_log = run_log_lib.RunLog.attach(workdir, jax.process_index())
    cache = workdir_lib.compilation_cache_dir(config.train.compilation_cache_dir, workdir,
                                              dict(os.environ))
    if cache:
      jax.config.update("jax_compilation_cache_dir", cache)
  except (config_lib.ConfigError, workdir_lib.WorkdirInUseError) as error:
    logs.fail(error)
  except OSError as error:
    logs.fail(StartupError(workdir_lib.unwritable(workdir, error)))
  # A bucket workdir: the log is copied there while the run goes and once more at any exit
  # (after the failure's traceback is in the file), so deleting the VM does not lose it. A
  # SIGTERM outside training (the last copy) is noted, not fatal: nothing is left to save.
  with held or contextlib.nullcontext(), loop.TerminationFlag(
      enabled=jax.process_count() == 1) as termination, run_log:
    try:
      train_and_evaluate(config, workdir, termination)
    except _USER_ERRORS as error:
      logs.fail(error, run_log.where)
    except KeyboardInterrupt as error:  # a second Ctrl-C (or a first one on several hosts)
      line = ("Interrupted by Ctrl-C: training stopped; resume from the workdir's newest "
              "checkpoint (a save under way may have completed)")
      logs.fail(KeyboardInterrupt(line).with_traceback(error.__traceback__), run_log.where,
                status=130)
    except Exception as error:  # noqa: BLE001 - a bug or unforeseen fault: traceback in the log
      if (reason := memory_lib.out_of_memory(error)) is not None:  # the config's size, no bug
        shape = dict(zip(parallel.MESH_AXES,
                         parallel.mesh_shape(config.mesh, jax.device_count())))
        advice = memory_lib.fit_advice(
            config, snapshot=bool(config.checkpoint.device_snapshot),
            platform=jax.default_backend(), slices=parallel.slice_count(jax.devices()),
            data=shape["data"],
            batch_parallelism=math.prod(shape[axis] for axis in parallel.BATCH_AXES))
        too_big = RuntimeError(f"The run does not fit in device memory ({reason}); {advice}")
        too_big.__cause__ = error  # XLA's whole report goes to the log file
        logs.fail(too_big, run_log.where)
      logs.fail(error, run_log.where, expected=False)


if __name__ == "__main__":
  define_flags()
  cli.run(main)  # run() validates the config itself, once its console and log file are set up
