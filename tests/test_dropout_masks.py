"""model.save_dropout_masks: remat keeps hidden dropout's masks instead of drawing them again in
the backward pass, with the same masks, values and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from glmjax.model import glm as glm_lib
# The small model and batch of the model's own tests.
from test_model import BATCH, SEQ, _batch, _config, _glm, _init_params


class _TwoDropouts(nn.Module):
  dropout: type

  @nn.compact
  def __call__(self, x):
    return self.dropout(0.3, deterministic=False)(x) + 2 * self.dropout(0.3, deterministic=False)(x)


def test_glm_s_dropout_draws_the_masks_flax_s_dropout_draws():
  x = jnp.arange(1.0, 4097.0).reshape(64, 64)
  rngs = {"dropout": jax.random.key(7)}
  ours = _TwoDropouts(glm_lib.Dropout).apply({}, x, rngs=rngs)
  flax_s = _TwoDropouts(nn.Dropout).apply({}, x, rngs=rngs)
  np.testing.assert_array_equal(ours, flax_s)
  kept = np.mean(np.asarray(ours) != 0)
  assert 0.5 < kept < 0.97  # dropped somewhere, kept mostly (two masks of 70% each)


def _loss_and_grads(params, *, remat, saved, scan):
  model = _glm(_config(remat=remat, save_dropout_masks=saved, scan_layers=scan,
                       hidden_dropout=0.2))
  cotangent = jax.random.normal(jax.random.key(3), (BATCH, SEQ, 128))
  loss = lambda p: jnp.sum(model.apply({"params": p}, *_batch(), deterministic=False,
                                       rngs={"dropout": jax.random.key(5)}) * cotangent)
  return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("remat", ["minimal", "full"])
@pytest.mark.parametrize("scan", [False, True])
def test_kept_dropout_masks_change_no_loss_and_no_gradient(remat, scan):
  params = _init_params(_glm(_config()), _batch())
  if scan:
    params = glm_lib.stack_layers(params, 2)
  drawn_again = _loss_and_grads(params, remat=remat, saved=False, scan=scan)
  kept = _loss_and_grads(params, remat=remat, saved=True, scan=scan)
  without_remat = _loss_and_grads(params, remat="none", saved=False, scan=scan)
  for other in (kept, without_remat):
    np.testing.assert_allclose(other[0], drawn_again[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(other[1]), jax.tree.leaves(drawn_again[1])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # Dropout is on: the loss differs from the deterministic model's.
  model = _glm(_config(remat=remat, scan_layers=scan, hidden_dropout=0.2))
  cotangent = jax.random.normal(jax.random.key(3), (BATCH, SEQ, 128))
  plain = jnp.sum(model.apply({"params": params}, *_batch()) * cotangent)
  assert abs(float(plain) - float(drawn_again[0])) > 1e-3


def _draws(jaxpr) -> int:
  """random_bits equations in `jaxpr` and every jaxpr inside it (remat, jit, scan bodies)."""
  found = 0
  for eqn in jaxpr.eqns:
    found += eqn.primitive.name == "random_bits"
    for param in jax.tree.leaves(list(eqn.params.values()),
                                 is_leaf=lambda x: hasattr(x, "eqns") or hasattr(x, "jaxpr")):
      inner = getattr(param, "jaxpr", param)
      found += _draws(inner) if hasattr(inner, "eqns") else 0
  return found


def _backward_draws(remat, saved):
  """How many masks the backward pass of one loss draws, read from its jaxpr."""
  model = _glm(_config(remat=remat, save_dropout_masks=saved, hidden_dropout=0.2))
  params = _init_params(_glm(_config()), _batch())
  loss = lambda p: jnp.sum(model.apply({"params": p}, *_batch(), deterministic=False,
                                       rngs={"dropout": jax.random.key(5)}))
  _, backward = jax.vjp(loss, params)
  return _draws(jax.make_jaxpr(backward)(jnp.float32(1.0)).jaxpr)


@pytest.mark.parametrize("remat", ["minimal", "full"])
def test_the_backward_pass_draws_no_dropout_mask_again_where_the_masks_are_kept(remat):
  assert _backward_draws(remat, saved=False) == 4  # two masks in each of the two layers
  assert _backward_draws(remat, saved=True) == 0


@pytest.mark.parametrize("remat", ["minimal", "full"])
def test_remat_keeps_the_dropout_masks_only_where_asked(remat, capsys):
  def saved_masks(saved):
    model = _glm(_config(remat=remat, save_dropout_masks=saved, hidden_dropout=0.2))
    params = _init_params(_glm(_config()), _batch())
    jax.ad_checkpoint.print_saved_residuals(
        lambda p: model.apply({"params": p}, *_batch(), deterministic=False,
                              rngs={"dropout": jax.random.key(5)}).sum(), params)
    lines = capsys.readouterr().out.splitlines()
    return [line for line in lines if f"named '{glm_lib.DROPOUT_MASK}'" in line]
  kept = saved_masks(True)
  assert len(kept) == 4 and all(line.startswith(f"bool[{BATCH},{SEQ},32]") for line in kept), kept
  assert saved_masks(False) == []
