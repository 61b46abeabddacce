"""The train step takes its gradients through the compute-dtype view of the projections
(model.in_compute_dtype): the same gradients as the float32 parameters', bit for bit."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glmjax import model as model_lib
from glmjax import optim, parallel, step as step_lib
from glmjax.model.glm import add_bias
from test_train_step import _batches, _config


def _float32_gradients(params, batch, rng, *, model, grad_accum_steps):
  """The gradients with respect to the float32 parameters themselves, summed over
  micro-batches as the step sums them: what the step computed before the view."""
  forward = functools.partial(step_lib.loss_sums, model=model, deterministic=False,
                              rows_alike=True)  # the training loss
  grad_fn = jax.grad(forward, has_aux=True)
  if grad_accum_steps == 1:
    return grad_fn(params, batch, rng)

  def body(carry, micro):
    index, micro_batch = micro
    grads = grad_fn(params, micro_batch, jax.random.fold_in(rng, index))
    return jax.tree.map(jnp.add, carry, grads), None

  micro = (jnp.arange(grad_accum_steps), step_lib._micro_batches(batch, grad_accum_steps))
  first = jax.tree.map(lambda x: x[0], micro[1])
  zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                      jax.eval_shape(grad_fn, params, first, rng))
  return jax.lax.scan(body, zero, micro)[0]


@pytest.mark.parametrize("grad_accum_steps, mesh_shape, model", [
    (1, (1, 1, 1), {}), (2, (1, 1, 1), {}), (1, (2, 2, 2), {}), (2, (2, 2, 2), {}),
    (1, (1, 1, 1), {"scan_layers": False}), (1, (1, 1, 1), {"remat": "full"}),
    (1, (1, 1, 1), {"mlp": "geglu"})])
def test_gradients_through_the_compute_dtype_view_equal_the_float32_parameters_gradients(
    mesh_shape, grad_accum_steps, model):
  data, fsdp, tensor = mesh_shape
  config = _config(data=data, fsdp=fsdp, tensor=tensor)
  config.model.update(dtype="bfloat16", hidden_dropout=0.1, **model)
  devices = jax.devices()[:data * fsdp * tensor]
  mesh, rules = parallel.make_mesh(config.mesh, devices), parallel.logical_rules(config.mesh)
  glm = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  init_fn = step_lib.make_init_fn(glm, optim.make_optimizer(config.optim), config.data.seq_len)
  with parallel.activate(mesh, rules):
    state = step_lib.init_sharded_state(init_fn, step_lib.state_shardings(init_fn, mesh, rules),
                                        config.seed)
    batch = parallel.global_batch(_batches(config, 1)[0], parallel.host_rows(mesh, 8))
    rng = jax.random.key(3)
    ours, reference = (jax.jit(functools.partial(
        fn, rng=rng, model=glm, grad_accum_steps=grad_accum_steps))(state.params, batch)
        for fn in (step_lib.summed_gradients, _float32_gradients))
  np.testing.assert_array_equal(ours[1]["loss_sum"], reference[1]["loss_sum"])
  for a, b in zip(jax.tree.leaves(ours[0]), jax.tree.leaves(reference[0])):
    assert a.dtype == b.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)


def _params_and_model(**model):
  config = _config()
  config.model.update(**model)
  glm = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  tokens = jnp.zeros((1, config.data.seq_len), jnp.int32)
  boxed = jax.eval_shape(glm.init, jax.random.key(0), tokens, tokens, tokens,
                         jnp.array([4]))["params"]
  params = jax.tree.map(lambda box: jnp.zeros(box.value.shape, box.value.dtype), boxed,
                        is_leaf=lambda x: hasattr(x, "value"))
  return params, boxed, glm


def test_a_projection_s_bias_gradient_is_the_float32_sum_over_its_tokens():
  """Not a sum in the compute dtype (XLA:GPU keeps bfloat16 reductions in bfloat16), nor one
  rounded to it: the bias is float32 and so is its gradient, summed over every token."""
  keys = jax.random.split(jax.random.key(0), 3)
  y, cotangent = (jax.random.normal(key, (16, 256, 32), jnp.bfloat16) for key in keys[:2])
  bias = jax.random.normal(keys[2], (32,), jnp.float32)
  out, vjp = jax.vjp(add_bias, y, bias)
  np.testing.assert_array_equal(out, y + bias.astype(jnp.bfloat16))
  dy, dbias = vjp(cotangent)
  assert dy.dtype == jnp.bfloat16 and dbias.dtype == jnp.float32
  np.testing.assert_array_equal(dy, cotangent)
  exact = np.asarray(cotangent, np.float64).sum(axis=(0, 1))
  np.testing.assert_allclose(dbias, exact, rtol=1e-5, atol=1e-5)


def test_the_view_casts_the_projections_kernels_and_nothing_else():
  params, _, glm = _params_and_model(dtype="bfloat16")
  dtypes = {jax.tree_util.keystr(path): leaf.dtype for path, leaf in
            jax.tree_util.tree_leaves_with_path(model_lib.in_compute_dtype(params, glm.config))}
  cast = {path for path, dtype in dtypes.items() if dtype == jnp.bfloat16}
  assert cast == {path for path in dtypes if path.endswith("_kernel']")}, cast
  # The projections' biases, LayerNorm and the embedding tables stay float32: their gradients
  # sum many terms in float32.
  assert any(path.endswith("_bias']") for path in dtypes)
  assert any(path.endswith("['scale']") for path in dtypes)
  assert any(path.endswith("['word_embeddings']") for path in dtypes)
  assert len(cast) == 4 and len(dtypes) > len(cast)


def test_the_view_never_widens_and_refuses_boxed_parameters():
  # float32 compute over bfloat16 parameters: the view would only widen, so it leaves them.
  params, boxed, glm = _params_and_model(dtype="float32", param_dtype="bfloat16")
  view = model_lib.in_compute_dtype(params, glm.config)
  assert {leaf.dtype for leaf in jax.tree.leaves(view)} == {jnp.dtype(jnp.bfloat16)}
  with pytest.raises(TypeError, match="unboxed"):
    model_lib.in_compute_dtype(boxed, glm.config)
