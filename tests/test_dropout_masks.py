"""model.save_dropout_masks: remat keeps hidden dropout's masks instead of drawing them again in
the backward pass, with the same masks, values and gradients."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from glmjax import model as model_lib
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


def test_the_model_s_masks_are_the_masks_flax_s_dropout_draws(monkeypatch):
  # In Block: the same loss and gradients with flax's own Dropout in its place.
  params = _init_params(_glm(_config()), _batch())
  ours = _loss_and_grads(params, remat="none", saved=False, scan=False)
  monkeypatch.setattr(glm_lib, "Dropout", nn.Dropout)
  flax_s = _loss_and_grads(params, remat="none", saved=False, scan=False)
  np.testing.assert_array_equal(ours[0], flax_s[0])
  for a, b in zip(jax.tree.leaves(ours[1]), jax.tree.leaves(flax_s[1])):
    np.testing.assert_array_equal(a, b)


def test_each_layer_s_dropouts_keep_the_names_that_key_their_masks():
  # flax keys a mask by its module's path: a renamed instance would draw other masks than
  # earlier runs (and than the flax Dropout it replaced) with the same seed.
  paths = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, glm_lib.Dropout) and context.method_name == "__call__":
      paths.append("/".join(context.module.path))
    return next_fun(*args, **kwargs)

  model = _glm(_config(hidden_dropout=0.2))
  with nn.intercept_methods(record):
    model.apply({"params": _init_params(_glm(_config()), _batch())}, *_batch(),
                deterministic=False, rngs={"dropout": jax.random.key(5)})
  expected = [f"layers_{i}/Dropout_{j}" for i in range(2) for j in range(2)]
  assert sorted(set(paths)) == expected, paths


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
    params = model_lib.stack_layers(params, 2)
  drawn_again = _loss_and_grads(params, remat=remat, saved=False, scan=scan)
  kept = _loss_and_grads(params, remat=remat, saved=True, scan=scan)
  without_remat = _loss_and_grads(params, remat="none", saved=False, scan=scan)
  # Kept or drawn again, the same masks: the same loss, and the same gradients within rounding;
  # without remat, within rounding too. The programs differ, and XLA:CPU's older emitters
  # (tests/cpu_devices.py) round their float32 sums of gradients up to 30 by up to 1.4e-6,
  # either comparison; a mask that differs changes whole terms of those sums.
  np.testing.assert_array_equal(kept[0], drawn_again[0])
  for a, b in zip(jax.tree.leaves(kept[1]), jax.tree.leaves(drawn_again[1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(without_remat[0], drawn_again[0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(without_remat[1]), jax.tree.leaves(drawn_again[1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
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


def _params(scan):
  params = _init_params(_glm(_config()), _batch())
  return model_lib.stack_layers(params, 2) if scan else params


def _backward_draws(remat, saved, scan):
  """How many masks the backward pass of one loss draws, read from its jaxpr (a scanned stack:
  its body's, once)."""
  model = _glm(_config(remat=remat, save_dropout_masks=saved, hidden_dropout=0.2,
                       scan_layers=scan))
  params = _params(scan)
  loss = lambda p: jnp.sum(model.apply({"params": p}, *_batch(), deterministic=False,
                                       rngs={"dropout": jax.random.key(5)}))
  _, backward = jax.vjp(loss, params)
  return _draws(jax.make_jaxpr(backward)(jnp.float32(1.0)).jaxpr)


@pytest.mark.parametrize("remat", ["minimal", "full"])
@pytest.mark.parametrize("scan", [False, True])
def test_the_backward_pass_draws_no_dropout_mask_again_where_the_masks_are_kept(remat, scan):
  # two masks in each of the two layers; a scan's body draws its layer's two
  assert _backward_draws(remat, saved=False, scan=scan) == (2 if scan else 4)
  assert _backward_draws(remat, saved=True, scan=scan) == 0


@pytest.mark.parametrize("remat", ["minimal", "full"])
@pytest.mark.parametrize("scan", [False, True])
def test_remat_keeps_the_dropout_masks_and_nothing_else_more_where_asked(remat, scan, capsys):
  def saved(keep_masks):
    model = _glm(_config(remat=remat, save_dropout_masks=keep_masks, hidden_dropout=0.2,
                         scan_layers=scan))
    jax.ad_checkpoint.print_saved_residuals(
        lambda p: model.apply({"params": p}, *_batch(), deterministic=False,
                              rngs={"dropout": jax.random.key(5)}).sum(), _params(scan))
    return capsys.readouterr().out.splitlines()
  # What keeping the masks adds (the dropout key, no longer needed, may go).
  added = list((collections.Counter(saved(True)) - collections.Counter(saved(False))).elements())
  shape = f"bool[2,{BATCH},{SEQ},32]" if scan else f"bool[{BATCH},{SEQ},32]"
  assert len(added) == (2 if scan else 4), added  # scanned: each of the two stacked masks
  assert all(line.startswith(shape) for line in added), added
  # Unscanned, each names its tag; a scan's stacked outputs are named by the scan.
  origin = "output of scan" if scan else f"named '{glm_lib.DROPOUT_MASK}'"
  assert all(origin in line for line in added), added


@pytest.mark.parametrize("attention_dropout, draws", [(0.1, 2), (0.0, 0)])
def test_a_zero_dropout_rate_draws_no_mask_in_training(attention_dropout, draws):
  # hidden_dropout=0: no hidden mask (threefry's arithmetic on every element, for a mask that
  # keeps everything); attention dropout, where on, draws one in each of the two layers.
  model = _glm(_config(hidden_dropout=0.0, attention_dropout=attention_dropout))
  forward = lambda p: model.apply({"params": p}, *_batch(), deterministic=False,
                                  rngs={"dropout": jax.random.key(5)})
  assert _draws(jax.make_jaxpr(forward)(_params(scan=False)).jaxpr) == draws
