"""Each objective weighs in the loss by its share of the batch's rows, as in the original (one
objective per micro-batch, each micro-batch's Part B tokens averaged), not by its share of the
Part B tokens, where [gMASK] rows (Part B ~75% of a row) would outweigh [MASK] rows (~18%)."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from glmjax import model as model_lib, optim, step as step_lib
from glmjax.bench.step import synthetic_batch
from glmjax.data.pipeline import BLANK, DOCUMENT, SENTENCE

ROWS, SEQ = 8, 32


def _mixed_batch(objectives):
  """Rows of the given objectives; [gMASK] rows score 24 positions, the others 4 or 6."""
  batch = synthetic_batch(ROWS, SEQ, 256, seed=3)
  part_b = {BLANK: 4, SENTENCE: 6, DOCUMENT: 24}
  sep = np.array([SEQ - part_b[o] for o in objectives], np.int32)
  positions = np.arange(SEQ)[None, :]
  batch.update(sep=sep, objective=np.array(objectives, np.int32),
               loss_mask=(positions >= sep[:, None]).astype(np.float32),
               position_ids=np.where(positions >= sep[:, None], sep[:, None] - 1,
                                     positions).astype(np.int32),
               block_position_ids=np.maximum(positions - sep[:, None] + 1, 0).astype(np.int32))
  return jax.tree.map(jnp.asarray, batch)


def _model_and_state():
  config = importlib.import_module("configs.base").get_config("local")
  config.model.update(hidden_size=64, num_heads=4, num_layers=2, max_position=SEQ,
                      hidden_dropout=0.0, attention_dropout=0.0)
  config.data.update(seq_len=SEQ, batch_size=ROWS)
  model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  optimizer = optim.make_optimizer(config.optim)
  init = step_lib.make_init_fn(model, optimizer, SEQ)
  state = jax.jit(lambda rng: nn.meta.unbox(init(rng)))(jax.random.key(0))
  return config, model, optimizer, state


MIXED = [BLANK] * 4 + [SENTENCE] * 2 + [DOCUMENT] * 2


def test_the_scale_gives_each_objective_its_share_of_rows_and_keeps_the_token_total():
  batch = _mixed_batch(MIXED)
  scale = np.asarray(step_lib.objective_loss_scale(batch))
  weight = np.asarray(batch["loss_mask"]).sum(-1)
  total = weight.sum()  # 4 x 4 + 2 x 6 + 2 x 24 = 76
  for objective, rows in ((BLANK, 4), (SENTENCE, 2), (DOCUMENT, 2)):
    chosen = np.asarray(batch["objective"]) == objective
    assert len(set(scale[chosen])) == 1  # tokens of one objective count alike
    np.testing.assert_allclose((scale * weight)[chosen].sum() / total, rows / ROWS, rtol=1e-6)
  np.testing.assert_allclose((scale * weight).sum(), total, rtol=1e-6)


@pytest.mark.parametrize("objective", [BLANK, SENTENCE, DOCUMENT])
def test_a_batch_of_one_objective_keeps_the_plain_token_mean_exactly(objective):
  batch = _mixed_batch([objective] * ROWS)
  batch = {**batch, "loss_mask": batch["loss_mask"] * jnp.arange(1, ROWS + 1)[:, None] / 3}
  np.testing.assert_array_equal(np.asarray(step_lib.objective_loss_scale(batch)), np.ones(ROWS))


def test_the_step_s_loss_and_gradient_weigh_objectives_by_rows_and_its_metrics_stay_plain():
  config, model, optimizer, state = _model_and_state()
  batch = _mixed_batch(MIXED)
  schedule = optim.learning_rate_schedule(config.optim)
  metrics = jax.jit(lambda s, b: step_lib.train_step(
      s, b, model=model, optimizer=optimizer, schedule=schedule, seed=0,
      grad_accum_steps=2)[1])(state, batch)
  per_objective = np.asarray(metrics["objective_loss_sum"]) / np.asarray(
      metrics["objective_weight"])
  shares = np.array([4, 2, 2]) / ROWS
  np.testing.assert_allclose(float(metrics["loss"]), shares @ per_objective, rtol=1e-5)
  token_mean = float(np.sum(metrics["objective_loss_sum"]) / metrics["loss_tokens"])
  assert abs(float(metrics["loss"]) - token_mean) > 1e-3  # the two weightings differ here
  np.testing.assert_array_equal(np.asarray(metrics["objective_weight"]), [16, 12, 48])
  # The gradient: the rows' share of each objective's mean gradient, summed.
  scaled = {**batch, step_lib.LOSS_SCALE: step_lib.objective_loss_scale(batch)}
  grads, sums = step_lib.summed_gradients(state.params, scaled, jax.random.key(1), model=model,
                                          grad_accum_steps=1)
  got = jax.tree.map(lambda g: g / sums["weight"], grads)
  want = None
  for objective, share in zip((BLANK, SENTENCE, DOCUMENT), shares):
    only = {**batch, "loss_mask": batch["loss_mask"]
            * (batch["objective"] == objective)[:, None].astype(jnp.float32)}
    g, s = step_lib.summed_gradients(state.params, only, jax.random.key(1), model=model,
                                     grad_accum_steps=1)
    term = jax.tree.map(lambda x, s=s, share=share: share * x / s["weight"], g)
    want = term if want is None else jax.tree.map(jnp.add, want, term)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7, err_msg=str(path))
