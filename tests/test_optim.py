"""GLM's learning-rate schedule and AdamW weight-decay exclusions."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from glmjax import config as config_lib
from glmjax import optim


def _optim_config(**overrides):
  config = config_lib.optim_defaults()
  config.update(learning_rate=1.0, warmup_ratio=0.1, decay_steps=100, final_ratio=0.05)
  config.update(**overrides)
  return config


def test_warmup_then_cosine_matches_the_reference_formula():
  schedule = optim.learning_rate_schedule(_optim_config())
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(0.5)
  for t in (10, 40, 55, 99, 100):
    progress = (t - 10) / 90
    expected = 0.05 + 0.95 * (1 + math.cos(math.pi * progress)) / 2
    assert float(schedule(t)) == pytest.approx(expected, rel=1e-5)
  assert float(schedule(1000)) == pytest.approx(0.05)  # flat after the decay horizon


@pytest.mark.parametrize("warmup_ratio, decay_steps", [(0.29, 100), (0.57, 100), (0.58, 100),
                                                       (0.07, 100), (0.015, 1000)])
def test_warmup_lasts_warmup_ratio_times_decay_steps_steps_even_where_the_product_rounds_down(
    warmup_ratio, decay_steps):
  """GLM's AnnealingLR warms up for warmup · lr-decay-iters steps: lr·t/W below W, the peak at
  t = W. In floating point 0.29 · 100 is 28.999999999999996; the warmup is still 29 steps."""
  warmup = round(warmup_ratio * decay_steps)
  assert abs(warmup - warmup_ratio * decay_steps) < 1e-9  # the intended product is whole
  schedule = optim.learning_rate_schedule(
      _optim_config(warmup_ratio=warmup_ratio, decay_steps=decay_steps))
  assert float(schedule(warmup - 1)) == pytest.approx((warmup - 1) / warmup, rel=1e-6)
  assert float(schedule(warmup - 1)) < 1.0 == float(schedule(warmup))


def test_linear_decay_reaches_the_final_ratio():
  schedule = optim.learning_rate_schedule(_optim_config(schedule="linear", final_ratio=0.025))
  assert float(schedule(55)) == pytest.approx(1 - 0.975 * 0.5, rel=1e-5)
  assert float(schedule(100)) == pytest.approx(0.025, rel=1e-5)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_past_decay_steps_the_rate_stays_at_the_final_ratio(kind):
  """A run may train past optim.decay_steps (GLM-Base: decay to 120k, 150k steps): the rate is
  flat at final_ratio x peak there, neither rising again (cosine) nor going below it (linear)."""
  schedule = optim.learning_rate_schedule(_optim_config(schedule=kind))
  for t in (100, 101, 125, 150, 190, 237, 400):
    assert float(schedule(t)) == pytest.approx(0.05, rel=1e-5), t


def test_the_constant_schedule_warms_up_then_holds_the_peak_rate():
  """GLM's AnnealingLR warms up every style, 'constant' too: lr·t/W below W, the peak after."""
  peak = 3e-4  # not 1: a rate written in units of the peak would pass at 1
  schedule = optim.learning_rate_schedule(_optim_config(schedule="constant", learning_rate=peak))
  assert float(schedule(0)) == 0.0  # warmup 0.1 x 100 = 10 steps
  assert float(schedule(5)) == pytest.approx(peak * 5 / 10, rel=1e-6)
  for t in (10, 11, 55, 100, 1000):
    assert float(schedule(t)) == pytest.approx(peak, rel=1e-6), t


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_the_decay_ends_at_final_ratio_times_the_peak_rate_whatever_the_peak(kind):
  """final_ratio is a fraction of the peak (GLM's min-lr ratio), not a rate: at a peak of 2e-3
  and a ratio of 0.1 the rate ends at 2e-4. Halfway through the decay both shapes are at
  final + (1 - final) / 2 of the peak."""
  peak = 2e-3
  schedule = optim.learning_rate_schedule(
      _optim_config(schedule=kind, learning_rate=peak, final_ratio=0.1))
  assert float(schedule(55)) == pytest.approx(peak * (0.1 + 0.9 / 2), rel=1e-5)  # (55-10)/90
  for t in (100, 400):
    assert float(schedule(t)) == pytest.approx(0.1 * peak, rel=1e-5), t


def test_adamw_divides_by_the_root_second_moment_plus_optim_eps():
  """AdamW's first step is g / (|g| + eps) (both moments bias-corrected): for a gradient as
  small as eps, the configured eps halves it."""
  eps = 1e-6  # the config default; optax's own default is 1e-8
  tx = optim.make_optimizer(_optim_config(eps=eps, weight_decay=0.0, grad_clip=0.0))
  params = {"dense": {"kernel": jnp.ones((2, 2))}}
  grads = {"dense": {"kernel": jnp.array([[1e-6, -1e-6], [1e-3, 1.0]])}}
  updates, _ = tx.update(grads, tx.init(params), params)
  g = np.asarray(grads["dense"]["kernel"], np.float64)
  np.testing.assert_allclose(updates["dense"]["kernel"], -g / (np.abs(g) + eps), rtol=1e-4)


def test_adamw_s_moments_follow_optim_b1_and_b2():
  """Two steps of AdamW by hand, in numpy, with betas far from the shipped 0.9 / 0.95: the
  second update depends on both, so a beta left at its default shows."""
  b1, b2, eps = 0.5, 0.7, 1e-6
  tx = optim.make_optimizer(_optim_config(b1=b1, b2=b2, eps=eps, weight_decay=0.0,
                                          grad_clip=0.0))
  params = {"dense": {"kernel": jnp.zeros(3)}}
  steps = [np.array([1.0, -1.0, 0.5]), np.array([-0.5, 2.0, -1.0])]
  state, m, v = tx.init(params), np.zeros(3), np.zeros(3)
  for t, g in enumerate(steps, 1):
    updates, state = tx.update({"dense": {"kernel": jnp.asarray(g, jnp.float32)}}, state, params)
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    expected = -(m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    np.testing.assert_allclose(updates["dense"]["kernel"], expected, rtol=1e-5)


def test_weight_decay_skips_layernorm_and_biases():
  # The leaf names of glmjax.model.GLM.
  params = {"word_embeddings": jnp.ones((4, 2)),
            "dense": {"qkv_kernel": jnp.ones((2, 2)), "qkv_bias": jnp.ones(2)},
            "norm": {"scale": jnp.ones(2), "bias": jnp.ones(2)}}
  mask = optim.weight_decay_mask(params)
  assert mask == {"word_embeddings": True, "dense": {"qkv_kernel": True, "qkv_bias": False},
                  "norm": {"scale": False, "bias": False}}
  # One update with zero gradients: only decayed leaves move.
  tx = optim.make_optimizer(_optim_config(weight_decay=0.5))  # unit rate: the step scales it
  updates, _ = tx.update(jax_zeros(params), tx.init(params), params)
  new = optax.apply_updates(params, updates)
  assert float(new["dense"]["qkv_kernel"][0, 0]) < 1.0
  assert float(new["word_embeddings"][0, 0]) < 1.0
  np.testing.assert_array_equal(new["norm"]["scale"], params["norm"]["scale"])
  np.testing.assert_array_equal(new["dense"]["qkv_bias"], params["dense"]["qkv_bias"])


def jax_zeros(tree):
  import jax  # pylint: disable=import-outside-toplevel
  return jax.tree.map(jnp.zeros_like, tree)


def test_decay_mask_on_the_real_model_excludes_exactly_layernorm_and_biases():
  import importlib  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from glmjax import model as model_lib, step  # pylint: disable=import-outside-toplevel
  config = importlib.import_module("configs.base").get_config("local")
  init = step.make_init_fn(model_lib.GLM(model_lib.ModelConfig.from_config(config.model)), optim.make_optimizer(config.optim), 16)
  params = jax.eval_shape(init, jax.random.key(0)).params  # boxed, scanned layers
  flags = jax.tree_util.tree_leaves_with_path(optim.weight_decay_mask(params))
  names = lambda decayed: {[e.key for e in path if isinstance(e, jax.tree_util.DictKey)][-1]
                           for path, flag in flags if flag == decayed}
  assert names(False) == {"scale", "bias", "qkv_bias", "out_bias", "wi_bias", "wo_bias"}
  assert {"word_embeddings", "position_embeddings", "qkv_kernel", "wo_kernel"} <= names(True)


@pytest.mark.parametrize("moments_dtype, expected", [("float32", jnp.float32),
                                                      ("param", jnp.bfloat16)])
def test_adamw_moments_are_float32_for_bfloat16_parameters_unless_asked(moments_dtype, expected):
  config = config_lib.optim_defaults()
  config.moments_dtype = moments_dtype
  optimizer = optim.make_optimizer(config)
  params = {"dense": {"kernel": jnp.full((4, 4), 0.5, jnp.bfloat16)}}
  state = optimizer.init(params)
  moments = [leaf for leaf in jax.tree.leaves(state)
             if getattr(leaf, "shape", ()) == (4, 4)]
  assert len(moments) == 2 and all(m.dtype == expected for m in moments)
  grads = {"dense": {"kernel": jnp.full((4, 4), 1e-3, jnp.bfloat16)}}
  updates, new_state = optimizer.update(grads, state, params)
  assert updates["dense"]["kernel"].dtype == jnp.bfloat16
  assert jax.tree.map(lambda a: a.dtype, new_state) == jax.tree.map(lambda a: a.dtype, state)
  # float32 second moments hold a squared 1e-3 gradient that bfloat16 rounds coarsely.
  nu = [leaf for leaf in jax.tree.leaves(new_state) if getattr(leaf, "shape", ()) == (4, 4)][1]
  assert float(nu[0, 0]) == pytest.approx((1 - config.b2) * 1e-6, rel=0.02 if
                                          moments_dtype == "float32" else 0.1)


def test_the_start_up_line_gives_the_schedule_and_the_rate_a_shortened_run_stops_at():
  """A run whose train.steps was lowered for a try keeps the recipe's horizon: the line says
  where its rate will be at its last step (here halfway down the cosine: step 56's update
  applies schedule(55), as its log line shows)."""
  line = optim.schedule_line(_optim_config(), 56)
  assert line == ("Learning rate: warmup to 1.00e+00 over 10 steps, then cosine to 5.00e-02 at "
                  "step 100 (optim.decay_steps); at this run's last step, 56, it is 5.25e-01")
  assert optim.schedule_line(_optim_config(schedule="constant"), 56).endswith(
      "then constant 1.00e+00; at this run's last step, 56, it is 1.00e+00")
