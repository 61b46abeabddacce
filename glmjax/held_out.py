"""The held-out report shared by `train` (every `train.eval_every` steps) and `evaluate`.

Both score the same batches: batch k of the evaluation pipeline (held-out documents, seed
`config.seed + 1`), summed with `step.eval_step` and turned into loss, Part B accuracy and
perplexity, overall and per objective, by `eval_scalars`. Sums are added over batches and divided
once, so every figure is a mean over the Part B tokens of all the batches together.
"""
from __future__ import annotations

import time
from typing import Callable

import jax
import numpy as np

from glmjax import parallel
from glmjax.data import pipeline as pipeline_lib
from glmjax.data.pipeline import OBJECTIVE_NAMES
from glmjax.metrics import objective_losses

_MAX_LOG_PERPLEXITY = 50.0  # exp(50) is already meaningless; past it would overflow to inf


def _perplexity(loss: float | None) -> float | None:
  return None if loss is None else float(np.exp(min(loss, _MAX_LOG_PERPLEXITY)))


def eval_scalars(sums) -> dict[str, float | None]:
  """Means over the Part B tokens summed in `sums` (step.loss_sums' keys), overall and per
  objective; an objective with no tokens reads None."""
  weight = max(float(sums["weight"]), 1.0)
  loss = float(sums["loss_sum"]) / weight
  scalars = {"loss": loss, "accuracy": float(sums["correct"]) / weight,
             "perplexity": _perplexity(loss), **objective_losses(sums)}
  for index, name in enumerate(OBJECTIVE_NAMES):
    count = float(sums["objective_weight"][index])
    scalars[f"accuracy_{name}"] = (float(sums["objective_correct"][index]) / count if count
                                   else None)
    scalars[f"perplexity_{name}"] = _perplexity(scalars[f"loss_{name}"])
  return scalars


def eval_pipeline(data_config, tokenizer, eval_docs, seed: int) -> pipeline_lib.BatchPipeline:
  """The held-out batches of a run whose config has `seed`: its own seed, so they are never the
  training batches of the same documents."""
  return pipeline_lib.BatchPipeline(data_config, tokenizer, eval_docs, seed=seed + 1)


def summed(eval_fn, params, eval_pipeline, mesh, num_batches: int, *,
           progress: Callable[[int], None] | None = None, every_s: float = 10.0):
  """step.eval_step's sums over batches 0..num_batches-1, built one at a time (nothing is kept
  on the device between batches). `progress(done)` is called about every `every_s` seconds."""
  host = parallel.host_rows(mesh, eval_pipeline.batch_size)
  total, last = None, time.monotonic()
  for index in range(num_batches):
    sums = eval_fn(params, parallel.pipeline_batch(eval_pipeline, index, host))
    total = sums if total is None else jax.tree.map(jax.numpy.add, total, sums)
    if progress is not None and time.monotonic() - last > every_s:
      jax.block_until_ready(total)  # report what the device has done, not what was queued
      progress(index + 1)
      last = time.monotonic()
  return jax.device_get(total)


class Evaluator:
  """Held-out loss over `train.eval_batches` fixed batches, built once and kept on device."""

  def __init__(self, eval_fn, eval_pipeline, config, mesh):
    self.eval_fn = eval_fn  # compiled at start-up, like the train step
    host = parallel.host_rows(mesh, eval_pipeline.batch_size)
    self.batches = [parallel.pipeline_batch(eval_pipeline, index, host)
                    for index in range(int(config.train.eval_batches))]

  def __call__(self, params) -> dict[str, float | None]:
    total = self.eval_fn(params, self.batches[0])
    for one in self.batches[1:]:
      total = jax.tree.map(jax.numpy.add, total, self.eval_fn(params, one))
    return eval_scalars(jax.device_get(total))
