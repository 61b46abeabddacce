"""The training loss weighs rows alike: each row's mean over its Part B tokens, averaged over the
rows, as the original weighs them (each micro-batch, of one objective and for [gMASK] one
generated length, averaged over its tokens, then micro-batches alike). A mean over all the
tokens of a mixed batch would let [gMASK] rows (Part B ~75% of a row) outweigh [MASK] rows
(~18%) several times over."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from glmjax import loop, model as model_lib, optim, step as step_lib
from glmjax.bench.step import synthetic_batch
from glmjax.data.pipeline import BLANK, DOCUMENT, SENTENCE

ROWS, SEQ = 8, 32
MIXED = [BLANK] * 4 + [SENTENCE] * 2 + [DOCUMENT] * 2


def _mixed_batch(objectives, part_b=None):
  """Rows of the given objectives; [gMASK] rows score 24 positions, the others 4 or 6."""
  batch = synthetic_batch(ROWS, SEQ, 256, seed=3)
  part_b = part_b or [{BLANK: 4, SENTENCE: 6, DOCUMENT: 24}[o] for o in objectives]
  sep = np.array([SEQ - n for n in part_b], np.int32)
  positions = np.arange(SEQ)[None, :]
  batch.update(sep=sep, objective=np.array(objectives, np.int32),
               loss_mask=(positions >= sep[:, None]).astype(np.float32),
               position_ids=np.where(positions >= sep[:, None], sep[:, None] - 1,
                                     positions).astype(np.int32),
               block_position_ids=np.maximum(positions - sep[:, None] + 1, 0).astype(np.int32))
  return jax.tree.map(jnp.asarray, batch)


def _setup():
  config = importlib.import_module("configs.base").get_config("local")
  config.model.update(hidden_size=64, num_heads=4, num_layers=2, max_position=SEQ,
                      hidden_dropout=0.0, attention_dropout=0.0)
  config.data.update(seq_len=SEQ, batch_size=ROWS)
  model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  optimizer = optim.make_optimizer(config.optim)
  init = step_lib.make_init_fn(model, optimizer, SEQ)
  state = jax.jit(lambda rng: nn.meta.unbox(init(rng)))(jax.random.key(0))
  return config, model, optimizer, state


def _row_means(model, params, batch):
  """Each row's mean Part B loss, from the plain (token) sums of loss_sums, row by row."""
  means = []
  for r in range(ROWS):
    row = jax.tree.map(lambda x, r=r: x[r:r + 1], batch)
    _, sums = step_lib.loss_sums(params, row, None, model=model, deterministic=True)
    means.append(float(sums["loss_sum"]) / float(sums["weight"]))
  return np.array(means)


def test_the_step_s_loss_is_the_mean_of_the_rows_means_and_its_metrics_stay_per_token():
  config, model, optimizer, state = _setup()
  batch = _mixed_batch(MIXED)
  schedule = optim.learning_rate_schedule(config.optim)
  metrics = jax.jit(lambda s, b: step_lib.train_step(
      s, b, model=model, optimizer=optimizer, schedule=schedule, seed=0,
      grad_accum_steps=2)[1])(state, batch)
  means = _row_means(model, state.params, batch)
  np.testing.assert_allclose(float(metrics["loss"]), means.mean(), rtol=1e-5)
  # Each objective's share of the loss is its share of the rows (4, 2, 2 of 8), not of the
  # Part B tokens (16, 12, 48 of 76).
  token_mean = float(np.sum(metrics["objective_loss_sum"]) / metrics["loss_tokens"])
  assert abs(float(metrics["loss"]) - token_mean) > 1e-3
  # The log shows both: `loss` (rows alike) and `loss_per_token` (as eval/loss is taken).
  scalars = loop._step_scalars(jax.device_get(metrics))
  assert scalars["loss"] == float(metrics["loss"])
  np.testing.assert_allclose(scalars["loss_per_token"], token_mean, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(metrics["objective_weight"]), [16, 12, 48])
  per_objective = np.asarray(metrics["objective_loss_sum"]) / np.asarray(
      metrics["objective_weight"])  # plain token means per objective
  for objective in (BLANK, SENTENCE, DOCUMENT):
    rows = np.array(MIXED) == objective
    np.testing.assert_allclose(per_objective[objective],
                               np.average(means[rows], weights=[{BLANK: 4, SENTENCE: 6,
                                                                 DOCUMENT: 24}[objective]] *
                                          int(rows.sum())), rtol=1e-5)


def test_the_gradient_is_the_mean_of_the_rows_mean_gradients():
  _, model, _, state = _setup()
  batch = _mixed_batch(MIXED)
  grads, sums = step_lib.summed_gradients(state.params, batch, jax.random.key(1), model=model,
                                          grad_accum_steps=1)
  got = jax.tree.map(lambda g: g / sums["rows"], grads)
  want = None
  for r in range(ROWS):  # each row's own token mean, differentiated, averaged over the rows
    only = {**batch, "loss_mask": batch["loss_mask"] * (jnp.arange(ROWS) == r)[:, None]}
    g, s = step_lib.summed_gradients(state.params, only, jax.random.key(1), model=model,
                                     grad_accum_steps=1)
    assert float(s["rows"]) == 1.0
    term = jax.tree.map(lambda x: x / ROWS, g)
    want = term if want is None else jax.tree.map(jnp.add, want, term)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7, err_msg=str(path))


def test_rows_without_part_b_are_left_out_of_the_mean():
  config, model, optimizer, state = _setup()
  batch = _mixed_batch(MIXED)
  empty = {**batch, "loss_mask": batch["loss_mask"] * (jnp.arange(ROWS) < 6)[:, None]}
  _, sums = step_lib.loss_sums(state.params, empty, None, model=model, deterministic=True,
                               rows_alike=True)
  assert float(sums["rows"]) == 6.0
  want = _row_means(model, state.params, batch)[:6].mean()
  np.testing.assert_allclose(float(sums["loss_sum"]) / 6, want, rtol=1e-5)
  metrics = jax.jit(lambda s, b: step_lib.train_step(
      s, b, model=model, optimizer=optimizer, schedule=optim.learning_rate_schedule(config.optim),
      seed=0, grad_accum_steps=1)[1])(state, empty)
  np.testing.assert_allclose(float(metrics["loss"]), want, rtol=1e-5)
