"""The attention entry points against a plain reference: a given scale is the one applied, and a
fused kernel under a mesh that cannot split the batch or the heads runs them whole per device."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glmjax import config as config_lib
from glmjax import parallel
from glmjax.model import attention, gpu_kernels

T, HEAD_DIM = 32, 16


def _reference(q, k, v, sep, scale):
  """Softmax attention under the GLM mask, written out from its definition: query i sees key j
  iff j < sep or j <= i."""
  rows, cols = np.arange(T)[:, None], np.arange(T)[None, :]
  allowed = (cols[None] < np.asarray(sep)[:, None, None]) | (cols <= rows)[None]  # [B, T, T]
  logits = np.einsum("bqnd,bknd->bnqk", q, k) * scale
  logits = np.where(allowed[:, None], logits, -np.inf)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum("bnqk,bknd->bqnd", probs, v)


def _inputs(seps, heads):
  keys = jax.random.split(jax.random.key(len(seps) * 10 + heads), 3)
  shape = (len(seps), T, heads, HEAD_DIM)
  q, k, v = (np.asarray(jax.random.normal(key, shape, jnp.float32)) for key in keys)
  return q, k, v, np.array(seps, np.int32)


@pytest.mark.parametrize("implementation", ["xla", "tokamax"])
def test_a_scale_given_to_masked_attention_is_the_one_applied(implementation):
  q, k, v, sep = _inputs((0, 5, 17, T), heads=2)
  mask = attention.prepare_mask(jnp.asarray(sep), T, implementation)
  for scale in (0.6, None):  # None: the default, 1/sqrt(head dim)
    got = attention.masked_attention(*map(jnp.asarray, (q, k, v)), mask,
                                     implementation=implementation, scale=scale)
    expected = _reference(q, k, v, sep, HEAD_DIM ** -0.5 if scale is None else scale)
    np.testing.assert_allclose(np.asarray(got), expected, atol=2e-5, rtol=1e-5,
                               err_msg=f"scale={scale}")


def test_a_scale_given_to_the_row_split_is_applied_to_part_a_and_part_b_rows():
  # The cuDNN composition, run with jax.nn's xla implementation: both of its calls (Part A's
  # padding-mask call, Part B's causal one) must use the scale, not their 1/sqrt(D) default.
  q, k, v, sep = _inputs((0, 5, 17, T), heads=2)
  got = gpu_kernels.row_split_attention(*map(jnp.asarray, (q, k, v)), jnp.asarray(sep), 0.6,
                                        implementation="xla")
  np.testing.assert_allclose(np.asarray(got), _reference(q, k, v, sep, 0.6), atol=2e-5,
                             rtol=1e-5)


def _jnp_reference(q, k, v, sep, scale):
  """`_reference` in jnp, so that jax.vjp gives the gradients of the definition."""
  rows, cols = jnp.arange(T)[:, None], jnp.arange(T)[None, :]
  allowed = (cols[None] < sep[:, None, None]) | (cols <= rows)[None]
  logits = jnp.einsum("bqnd,bknd->bnqk", q, k, precision="highest") * scale
  probs = jax.nn.softmax(jnp.where(allowed[:, None], logits, -jnp.inf), axis=-1)
  return jnp.einsum("bnqk,bknd->bqnd", probs, v, precision="highest")


@pytest.mark.parametrize("implementation", ["xla", "tokamax"])
def test_the_gradients_of_masked_attention_use_the_scale_it_is_given(implementation):
  # tokamax's backward off GPU recomputes the probabilities: with the given scale too.
  q, k, v, sep = map(jnp.asarray, _inputs((0, 5, 17, T), heads=2))
  cotangent = jax.random.normal(jax.random.key(9), q.shape, jnp.float32)
  mask = attention.prepare_mask(sep, T, implementation)
  grads = lambda fn: jax.vjp(fn, q, k, v)[1](cotangent)
  got = grads(lambda q, k, v: attention.masked_attention(
      q, k, v, mask, implementation=implementation, scale=0.6))
  expected = grads(lambda q, k, v: _jnp_reference(q, k, v, sep, 0.6))
  for name, a, b in zip(("dq", "dk", "dv"), got, expected):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=5e-5, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("seps, heads, per_device", [
    ((0, 3, 9, 20, T), 2, (5, T, 2, HEAD_DIM)), ((1, 7, 16, T), 4, (2, T, 1, HEAD_DIM))],
    ids=["5 rows and 2 heads: neither splits", "4 rows and 4 heads: both"])
def test_a_fused_kernel_under_a_mesh_gives_the_reference_whether_rows_and_heads_split_or_not(
    monkeypatch, seps, heads, per_device):
  # data=2 x tensor=4: 5 rows do not split over the 2 batch devices, 2 heads not over 4.
  mesh_config = config_lib.mesh_defaults()
  mesh_config.update(data=2, fsdp=1, tensor=4)
  mesh = parallel.make_mesh(mesh_config)
  q, k, v, sep = _inputs(seps, heads)
  seen, kernel = [], gpu_kernels.tokamax_attention

  def recording(q, *args, **kwargs):  # each device's part: split heads are not computed twice
    seen.append(q.shape)
    return kernel(q, *args, **kwargs)
  monkeypatch.setattr(gpu_kernels, "tokamax_attention", recording)
  with parallel.activate(mesh, parallel.logical_rules(mesh_config)):
    got = jax.jit(lambda q, k, v, sep: attention.glm_attention(
        q, k, v, sep, implementation="tokamax"))(q, k, v, sep)
  np.testing.assert_allclose(np.asarray(got), _reference(q, k, v, sep, HEAD_DIM ** -0.5),
                             atol=2e-5, rtol=1e-5)
  assert seen == [per_device]


def test_bfloat16_dense_attention_scores_in_float32():
  """The xla kernel is the reference every other kernel is checked against: with bfloat16
  inputs whose scores are large (|q.k| / 8 up to ~10), its scores and softmax stay float32, so
  it lands within a bfloat16 rounding of the float32 computation (0.014 here; scores rounded
  to bfloat16 first: 0.10)."""
  from glmjax.model import dense  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  q, k = (jnp.asarray(3 * rng.standard_normal((2, 64, 2, 64)), jnp.bfloat16) for _ in range(2))
  v = jnp.asarray(rng.standard_normal((2, 64, 2, 64)), jnp.bfloat16)
  key_end = jnp.full((2, 64), 64)
  out = dense.dense_attention(q, k, v, key_end, 1 / 8)
  exact = dense.dense_attention(*(t.astype(jnp.float32) for t in (q, k, v)), key_end, 1 / 8)
  assert out.dtype == jnp.bfloat16
  assert np.abs(np.asarray(out, np.float64) - np.asarray(exact, np.float64)).max() < 0.04


def test_the_xla_attention_s_matmuls_read_bfloat16_operands_forward_and_backward():
  """In a bfloat16 model every matmul of the xla attention multiplies bfloat16 by bfloat16,
  accumulating in float32: the scores (preferred_element_type), the probabilities cast back
  before they meet v, and in the backward the score gradient rounded before it meets q and k
  (autodiff alone would cast q and k up and run two float32 matmuls, as fused kernels do not)."""
  from glmjax.model import dense  # pylint: disable=import-outside-toplevel
  q, k, v = (jax.random.normal(jax.random.key(i), (1, 8, 2, 16), jnp.bfloat16) for i in range(3))
  attend = lambda q, k, v: dense.dense_attention(q, k, v, jnp.full((1, 8), 8), 0.25)
  loss = lambda q, k, v: jnp.sum(attend(q, k, v).astype(jnp.float32) ** 2)
  pattern = r"stablehlo\.dot_general .*: \((tensor<[^>]*>), (tensor<[^>]*>)\)"
  forward = re.findall(pattern, jax.jit(attend).lower(q, k, v).as_text())
  both = re.findall(pattern, jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v).as_text())
  assert len(forward) == 2  # q·kᵀ, then probabilities·v
  assert len(both) == 6  # and dq, dk, d_probabilities, dv
  for pair in both:
    assert all(operand.endswith("xbf16>") for operand in pair), pair


def test_the_xla_attention_s_bfloat16_gradients_are_the_float32_ones_within_bfloat16_rounding():
  """The rounded score gradient costs bfloat16 precision only: each gradient is within a few
  bfloat16 steps of the float32 model's."""
  from glmjax.model import dense  # pylint: disable=import-outside-toplevel
  q, k, v = (jax.random.normal(jax.random.key(i), (2, 16, 2, 32), jnp.float32) for i in range(3))
  key_end = jnp.asarray([[5] * 5 + list(range(6, 17)), list(range(1, 17))])
  weights = jax.random.normal(jax.random.key(7), q.shape, jnp.float32)
  loss = lambda q, k, v: jnp.sum(dense.dense_attention(q, k, v, key_end, 0.2).astype(
      jnp.float32) * weights)
  exact = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
  half = jax.grad(loss, argnums=(0, 1, 2))(*(t.astype(jnp.bfloat16) for t in (q, k, v)))
  for name, a, b in zip(("dq", "dk", "dv"), half, exact):
    assert a.dtype == jnp.bfloat16, name
    error = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max()
    assert error < 0.02 * np.abs(np.asarray(b)).max(), (name, error)
