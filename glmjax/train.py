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
from absl import logging as absl_logging
from ml_collections import config_flags

from glmjax import checkpoint as checkpoint_lib
from glmjax import config as config_lib
from glmjax import metrics as metrics_lib
from glmjax import optim, parallel, step as step_lib
from glmjax.data import pipeline as pipeline_lib
from glmjax.data import sources, tokenizers
from glmjax import model as model_lib


log = logging.getLogger("glmjax.train")


class NonFiniteError(RuntimeError):
  """Too many consecutive steps with a NaN or Inf loss or gradient."""


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


def _write_resolved_config(config, workdir: str) -> None:
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def _summarize(sums: dict[str, np.ndarray]) -> dict[str, float | None]:
  weight = max(float(sums["weight"]), 1.0)
  scalars = {"loss": float(sums["loss_sum"]) / weight, "accuracy": float(sums["correct"]) / weight}
  scalars["perplexity"] = float(np.exp(min(scalars["loss"], 50.0)))
  for index, name in enumerate(pipeline_lib.OBJECTIVE_NAMES):
    count = float(sums["objective_weight"][index])
    scalars[f"loss_{name}"] = float(sums["objective_loss_sum"][index]) / count if count else None
  return scalars


def _step_scalars(metrics: dict[str, np.ndarray]) -> dict[str, float | None]:
  scalars = {key: float(metrics[key]) for key in
             ("loss", "accuracy", "grad_norm", "param_norm", "learning_rate", "loss_tokens")}
  for index, name in enumerate(pipeline_lib.OBJECTIVE_NAMES):
    count = float(metrics["objective_weight"][index])
    scalars[f"loss_{name}"] = (float(metrics["objective_loss_sum"][index]) / count
                               if count else None)
  return scalars


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


def evaluate(eval_fn, params, eval_pipeline, config, mesh) -> dict[str, float | None]:
  """Held-out loss over `train.eval_batches` fixed batches (the same ones every time)."""
  total = None
  for index in range(int(config.train.eval_batches)):
    rows = parallel.process_rows(mesh, eval_pipeline.batch_size)
    batch = parallel.global_batch(eval_pipeline.build_rows(index, rows), mesh,
                                  eval_pipeline.batch_size)
    sums = jax.device_get(eval_fn(params, batch))
    total = sums if total is None else jax.tree.map(np.add, total, sums)
  return _summarize(total)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains to `config.train.steps`, resuming from `workdir` if it holds checkpoints."""
  parallel.initialize_distributed(int(config.train.distributed_timeout_s))
  is_main = jax.process_index() == 0
  mesh = parallel.make_mesh(config.mesh)
  config_lib.validate(config, num_devices=jax.device_count(),
                      batch_parallelism=parallel.batch_axis_size(mesh))
  rules = parallel.logical_rules(config.mesh)
  os.makedirs(workdir, exist_ok=True)

  tokenizer = tokenizers.load_tokenizer(config.data)
  if tokenizer.vocab_size > config.model.vocab_size:
    raise config_lib.ConfigError(
        f"model.vocab_size={config.model.vocab_size} is smaller than the tokenizer's padded "
        f"vocabulary ({tokenizer.vocab_size}); set model.vocab_size={tokenizer.vocab_size}.")
  train_docs, eval_docs = sources.load_documents(config.data, tokenizer)
  train_pipeline = pipeline_lib.BatchPipeline(config.data, tokenizer, train_docs, seed=config.seed)
  eval_pipeline = pipeline_lib.BatchPipeline(config.data, tokenizer, eval_docs,
                                             seed=config.seed + 1)

  model_config = step_lib.resolved_model_config(config)
  model = model_lib.GLM(model_config)
  optimizer = optim.make_optimizer(config.optim)
  schedule = optim.learning_rate_schedule(config.optim)
  init_fn = step_lib.make_init_fn(model, optimizer, config.data.seq_len)
  writer = metrics_lib.MetricsWriter(workdir, enabled=is_main)
  checkpointer = checkpoint_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"), every=config.checkpoint.every,
      keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
  termination = _TerminationFlag()
  termination.install()
  try:
    with parallel.activate(mesh, rules):
      return _run(config, workdir, mesh, model, model_config, optimizer, schedule, init_fn,
                  train_pipeline, eval_pipeline, writer, checkpointer, termination, is_main)
  finally:
    checkpointer.close()
    writer.close()


def _run(config, workdir, mesh, model, model_config, optimizer, schedule, init_fn,
         train_pipeline, eval_pipeline, writer, checkpointer, termination, is_main):
  rules = parallel.logical_rules(config.mesh)
  shardings = step_lib.state_shardings(init_fn, mesh, rules)
  abstract = step_lib.abstract_state(init_fn, shardings)
  layout = checkpoint_lib.parameter_layout(abstract.params)
  metadata = {"config": json.loads(config.to_json_best_effort()), "param_layout": layout,
              "attention": model_config.attention}

  restored = checkpointer.restore_latest(abstract, layout)
  if restored is None:
    state = step_lib.init_sharded_state(init_fn, shardings, config.seed)
    log.info("Initialised a new model in %s", workdir)
  else:
    state, at = restored
    log.info("Resumed from the checkpoint at step %d in %s", at, checkpointer.directory)
  start = int(jax.device_get(state.step))
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
  log.info("Parameters: %s on a %s mesh over %d process(es) (%.1f%% of them replicated); "
           "attention %s", f"{num_params:,}", dict(mesh.shape), jax.process_count(),
           100 * parallel.replicated_fraction(state.params) if mesh.size > 1 else 0.0,
           model_config.attention)
  if is_main:
    _write_resolved_config(config, workdir)
    writer.write_text("config", config.to_json_best_effort(indent=2))

  train_fn = step_lib.jit_train_step(model, optimizer, schedule, config, mesh, shardings)
  # Compile before the first batch: out-of-memory shows here, with the sizes, not at step 0.
  started = time.perf_counter()
  train_fn = train_fn.lower(abstract, step_lib.abstract_batch(
      config.data.batch_size, config.data.seq_len, mesh)).compile()
  log.info("Compiled the train step in %.1f s; %s", time.perf_counter() - started,
           _memory_summary(train_fn))
  eval_fn = step_lib.jit_eval_step(model, mesh, shardings)
  flops_per_token = model_lib.flops_per_token(model_config, config.data.seq_len)
  tokens_per_step = config.data.batch_size * config.data.seq_len
  device_kind = jax.devices()[0].device_kind
  total_steps = int(config.train.steps)
  clock = metrics_lib.StepClock()
  run_start = time.perf_counter()
  consecutive_nonfinite = 0
  pending = None  # (step, metrics) of the previous step: read one step late, never blocking
  last_scalars: dict[str, Any] = {}

  def finish(step_done, metrics):
    nonlocal consecutive_nonfinite, last_scalars
    host = jax.device_get(metrics)
    if bool(host["nonfinite"]):
      consecutive_nonfinite += 1
      log.warning("Step %d: non-finite loss or gradient (loss=%s, grad_norm=%s); update "
                      "skipped (%d in a row).", step_done, host["loss"], host["grad_norm"],
                      consecutive_nonfinite)
      writer.write(step_done, {"nonfinite": 1.0, "loss": host["loss"]})
      if consecutive_nonfinite >= config.train.max_nonfinite_steps:
        raise NonFiniteError(
            f"{consecutive_nonfinite} consecutive steps had a non-finite loss or gradient (last "
            f"at step {step_done}); stopping. The parameters are those of the last good step "
            f"and the newest checkpoint in {checkpointer.directory} is intact. Lower "
            "optim.learning_rate, check the data, or raise train.max_nonfinite_steps.")
      return
    consecutive_nonfinite = 0
    log_now = step_done % config.train.log_every == 0 or step_done == total_steps
    if step_done == start + 1 and not log_now:
      clock.lap(step_done)  # timing starts after the step that compiled
    if log_now:
      scalars = _step_scalars(host)
      seconds = clock.lap(step_done)
      if seconds is not None:
        scalars.update(metrics_lib.throughput(
            step_time_s=seconds, tokens_per_step=tokens_per_step,
            flops_per_token=flops_per_token, num_devices=jax.device_count(),
            device_kind=device_kind))
      eta = (seconds or float("nan")) * (total_steps - step_done)
      writer.write(step_done, scalars)
      if is_main:
        log.info("%s", metrics_lib.console_line(step_done, total_steps, scalars, eta))
      last_scalars = scalars

  host_rows = parallel.process_rows(mesh, config.data.batch_size)
  profile_start = int(config.train.profile_start)
  for step in range(start, total_steps):
    if step == profile_start and is_main:
      jax.profiler.start_trace(writer.tensorboard_dir)
    batch = parallel.global_batch(train_pipeline.build_rows(step, host_rows), mesh,
                                  config.data.batch_size)
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      state, metrics = train_fn(state, batch)
    if pending is not None:
      finish(*pending)
    pending = (step + 1, metrics)
    if profile_start >= 0 and step + 1 == profile_start + config.train.profile_steps and is_main:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      log.info("Wrote a profiler trace of steps %d-%d to %s", profile_start, step,
                   writer.tensorboard_dir)
    done = step + 1
    if config.train.eval_every and done % config.train.eval_every == 0:
      finish(*pending)
      pending = None
      scalars = evaluate(eval_fn, state.params, eval_pipeline, config, mesh)
      writer.write(done, scalars, prefix="eval/")
      log.info("eval at step %d | loss %.4f | accuracy %.3f | perplexity %.2f", done,
                   scalars["loss"], scalars["accuracy"], scalars["perplexity"])
    if checkpointer.should_save(done):
      if pending is not None:  # never checkpoint a state whose step we have not checked
        finish(*pending)
        pending = None
      checkpointer.save(done, state, metadata)
    if termination.requested:
      if pending is not None:
        finish(*pending)
        pending = None
      checkpointer.save(done, state, metadata, force=True)
      log.warning("Stopped at step %d on SIGTERM; checkpoint saved.", done)
      return {"step": done, "stopped": "sigterm", **last_scalars}
  if pending is not None:
    finish(*pending)
  end = int(jax.device_get(state.step))
  if end > start or not checkpointer.steps():
    checkpointer.save(end, state, metadata, force=True)
  log.info("Finished %d steps in %.1f s; outputs in %s", end - start,
               time.perf_counter() - run_start, workdir)
  return {"step": end, **last_scalars}


_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py[:local]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")


def _setup_console_logging() -> None:
  """Our progress lines on stderr; library chatter (Orbax, absl) only from warnings up."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  ours = logging.getLogger("glmjax")
  ours.handlers[:] = [handler]
  ours.setLevel(logging.INFO)
  ours.propagate = False


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None or not _WORKDIR.value:
    raise app.UsageError("Both --config and --workdir are required.")
  _setup_console_logging()
  try:
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (ValueError, FileNotFoundError, NonFiniteError) as e:  # errors written for the user
    log.error("%s", e)
    raise SystemExit(1) from None


if __name__ == "__main__":
  app.run(main)
