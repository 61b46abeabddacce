"""Every attention implementation that runs on CPU matches a plain reference, outputs and grads
(the start-up check that picks one: test_attention_choice.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glmjax.model import attention, gpu_kernels
from glmjax.model import mask as mask_lib
from glmjax.model import model_config

# One batch with different seps: empty Part A, one token, half, ragged, the whole row.
SMALL_T = 32
SMALL_SEPS = (0, 1, SMALL_T // 2, 13, SMALL_T)
SPLASH_T = 256  # splash needs 128-lane blocks; runs in Pallas interpret mode on CPU
SPLASH_SEPS = (0, 1, SPLASH_T // 2, 77, SPLASH_T)


def _reference(q, k, v, sep):
  """Plain softmax attention with the mask written out from its definition."""
  seq_len = q.shape[1]
  rows, cols = np.arange(seq_len)[:, None], np.arange(seq_len)[None, :]
  allowed = (cols[None] < sep[:, None, None]) | (cols <= rows)[None]  # [B, T, T]
  logits = jnp.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(q.shape[-1])
  logits = jnp.where(allowed[:, None], logits, -jnp.inf)
  return jnp.einsum("bnqk,bknd->bqnd", jax.nn.softmax(logits, axis=-1), v)


def _inputs(seq_len, seps, heads=2, head_dim=16):
  keys = jax.random.split(jax.random.key(seq_len), 4)
  shape = (len(seps), seq_len, heads, head_dim)
  q, k, v, cotangent = (jax.random.normal(key, shape, jnp.float32) for key in keys)
  return q, k, v, cotangent, jnp.array(seps, jnp.int32)


def _outputs_and_grads(fn, q, k, v, cotangent):
  @jax.jit
  def run(q, k, v):
    out, vjp = jax.vjp(fn, q, k, v)
    return (out,) + vjp(cotangent)
  return run(q, k, v)


def _assert_matches_reference(fn, seq_len, seps, atol=2e-5):
  q, k, v, cotangent, sep = _inputs(seq_len, seps)
  expected = _outputs_and_grads(lambda q, k, v: _reference(q, k, v, np.asarray(sep)),
                                q, k, v, cotangent)
  got = _outputs_and_grads(lambda q, k, v: fn(q, k, v, sep), q, k, v, cotangent)
  for name, a, b in zip(("out", "dq", "dk", "dv"), got, expected):
    np.testing.assert_allclose(a, b, atol=atol, rtol=1e-5, err_msg=name)


def _as_on_this_cpu(implementation):
  """The kernel as glm_attention runs it; cudnn as its row split over XLA's attention (the same
  composition; this CPU has no cuDNN). Splash runs in Pallas interpret mode, tokamax as its
  XLA op (tokamax comes with requirements-dev.txt: this runs in CI)."""
  if implementation == "cudnn":
    return lambda q, k, v, sep: gpu_kernels.row_split_attention(q, k, v, sep, q.shape[-1] ** -0.5,
                                                              implementation="xla")
  return lambda q, k, v, sep: attention.glm_attention(q, k, v, sep, implementation=implementation)


# Every kernel of model_config.KERNELS, read from it so that a kernel added there is tested here
# too, at one block and at several.
@pytest.mark.parametrize("implementation", model_config.ATTENTION_IMPLEMENTATIONS)
def test_every_kernel_matches_the_reference_at_one_block(implementation):
  seq_len, seps = ((SPLASH_T, SPLASH_SEPS) if model_config.seq_len_multiple(implementation) > 1
                   else (SMALL_T, SMALL_SEPS))
  _assert_matches_reference(_as_on_this_cpu(implementation), seq_len, seps)


# Several blocks, as every real config has: 3 x 3 blocks of 128 at T=384, seps on a block
# boundary, one off either side of one, and inside; 2 x 2 blocks of 512 at T=1024.
MULTI_BLOCK = ((384, (0, 127, 128, 129, 256, 300)), (1024, (0, 511, 512, 513, 1000)))


@pytest.mark.parametrize("seq_len, seps", MULTI_BLOCK, ids=["T384", "T1024"])
@pytest.mark.parametrize("implementation", model_config.ATTENTION_IMPLEMENTATIONS)
def test_every_cpu_kernel_at_multi_block_sizes(implementation, seq_len, seps):
  from glmjax.model import splash  # pylint: disable=import-outside-toplevel
  assert seq_len // splash.block_size(seq_len) >= 2
  _assert_matches_reference(_as_on_this_cpu(implementation), seq_len, seps, atol=5e-5)


def test_tokamax_xla_path_matches_the_reference():  # tokamax comes with requirements-dev.txt: this runs in CI
  _assert_matches_reference(
      lambda q, k, v, sep: attention.glm_attention(q, k, v, sep, implementation="tokamax"),
      SMALL_T, SMALL_SEPS)


def test_prepared_mask_equals_sep_argument():
  q, k, v, _, sep = _inputs(SMALL_T, SMALL_SEPS)
  mask = attention.prepare_mask(sep, SMALL_T, "xla")
  np.testing.assert_array_equal(attention.masked_attention(q, k, v, mask),
                                attention.glm_attention(q, k, v, sep))


def test_attention_dropout_is_random_and_unbiased_off():
  q, k, v, _, sep = _inputs(SMALL_T, SMALL_SEPS)
  run = jax.jit(lambda rng: attention.glm_attention(q, k, v, sep, dropout_rate=0.5,
                                                    dropout_rng=rng))
  a, b = run(jax.random.key(1)), run(jax.random.key(2))
  assert float(jnp.max(jnp.abs(a - b))) > 1e-2
  clean = attention.glm_attention(q, k, v, sep, dropout_rate=0.5, dropout_rng=None)
  np.testing.assert_allclose(clean, attention.glm_attention(q, k, v, sep), atol=1e-7)


def test_a_kernel_asked_for_attention_dropout_refuses_instead_of_skipping_it():
  q, k, v, _, sep = _inputs(SMALL_T, SMALL_SEPS)
  with pytest.raises(ValueError, match="no attention dropout"):
    attention.masked_attention(q, k, v, attention.prepare_mask(sep, SMALL_T, "xla"),
                               implementation="splash", dropout_rate=0.1,
                               dropout_rng=jax.random.key(0))


def test_attention_dropout_drops_its_rate_of_probabilities_and_is_unbiased_on_average():
  # With one-hot values (v[b, s, n] = e_s) the attention output is the row of probabilities
  # itself, so what dropout does to them is seen directly, over many dropout rngs at once.
  rate, draws = 0.3, 512
  seps = (0, 5, SMALL_T // 2)
  q, k, _, _, sep = _inputs(SMALL_T, seps)
  v = jnp.broadcast_to(jnp.eye(SMALL_T)[None, :, None, :], (len(seps), SMALL_T, 2, SMALL_T))
  clean = np.asarray(attention.glm_attention(q, k, v, sep))  # [B, T, N, S]: the probabilities
  dropped = np.asarray(jax.jit(jax.vmap(lambda rng: attention.glm_attention(
      q, k, v, sep, dropout_rate=rate, dropout_rng=rng)))(
          jax.random.split(jax.random.key(0), draws)))
  visible = np.broadcast_to(np.asarray(mask_lib.glm_mask(sep, SMALL_T))[:, :, None, :],
                            clean.shape)
  assert np.all(clean[visible] > 0) and np.all(dropped[:, ~visible] == 0)
  zeroed = dropped[:, visible] == 0
  assert abs(zeroed.mean() - rate) < 0.01, zeroed.mean()  # ~2e5 draws: std 0.001
  # A kept probability is divided by the keep rate ...
  ratio = dropped[:, visible] / clean[visible]
  np.testing.assert_allclose(ratio[~zeroed], 1.0 / (1.0 - rate), rtol=1e-5)
  # ... so dropout is unbiased: the average over rngs is the output without dropout, within
  # 6 standard errors of each entry (the mean of `draws` draws of clean * Bernoulli / keep).
  standard_error = clean * np.sqrt(rate / (1.0 - rate) / draws)
  assert np.all(np.abs(dropped.mean(0) - clean) <= 6 * standard_error + 1e-7)
  # Rows still sum to 1 on average (a biased dropout scales every row the same way).
  assert abs(dropped.sum(-1).mean() - 1.0) < 0.01, dropped.sum(-1).mean()


def test_attention_dropout_draws_its_own_mask_for_each_head_and_each_row():
  # Two heads (two rows) drop the same visible entries about rate^2 + (1 - rate)^2 = 0.58 of
  # the time, where one mask shared would always (tens of thousands of pairs: 0.02 is many
  # standard deviations).
  rate, draws, seps = 0.3, 64, (0, 5, SMALL_T // 2)
  q, k, _, _, sep = _inputs(SMALL_T, seps)
  v = jnp.broadcast_to(jnp.eye(SMALL_T)[None, :, None, :], (len(seps), SMALL_T, 2, SMALL_T))
  dropped = np.asarray(jax.jit(jax.vmap(lambda rng: attention.glm_attention(
      q, k, v, sep, dropout_rate=rate, dropout_rng=rng)))(
          jax.random.split(jax.random.key(0), draws))) == 0  # [draws, B, T, N, S]
  visible = np.asarray(mask_lib.glm_mask(sep, SMALL_T))  # [B, T, S]
  same_in_heads = dropped[:, :, :, 0][:, visible] == dropped[:, :, :, 1][:, visible]
  rows = visible[1] & visible[2]
  same_in_rows = dropped[:, 1, :, 0][:, rows] == dropped[:, 2, :, 0][:, rows]
  assert abs(same_in_heads.mean() - 0.58) < 0.02 and abs(same_in_rows.mean() - 0.58) < 0.02


def test_splash_compiled_for_a_platform_other_than_tpu_runs_in_the_pallas_interpreter():
  # Only a TPU target gets the Mosaic kernel; compiled for a GPU (here run on this CPU) splash
  # is interpreted, and exact.
  q, k, v, _, sep = _inputs(128, (0, 45, 128))
  got = attention.masked_attention(q, k, v, attention.prepare_mask(sep, 128, "splash"),
                                   implementation="splash", platform="gpu")
  np.testing.assert_allclose(got, _reference(q, k, v, np.asarray(sep)), atol=2e-5, rtol=1e-5)


def test_a_fused_kernel_given_a_dropout_rate_and_no_rng_attends_without_dropout():
  # Only a rate with an rng asks for dropout (the refusal above); a rate alone, as an
  # evaluation of a config with attention_dropout may pass, gives the plain attention, as xla.
  q, k, v, _, sep = _inputs(SMALL_T, SMALL_SEPS)
  got = attention.masked_attention(q, k, v, attention.prepare_mask(sep, SMALL_T, "tokamax"),
                                   implementation="tokamax", dropout_rate=0.1)
  np.testing.assert_allclose(got, _reference(q, k, v, np.asarray(sep)), atol=2e-5, rtol=1e-5)


def test_splash_tiles_a_sequence_with_the_largest_of_its_blocks_that_divides_it():
  # Fewer, larger blocks are fewer grid steps; each is a multiple of the 128 lanes the in-kernel
  # mask needs.
  from glmjax.model import splash  # pylint: disable=import-outside-toplevel
  lengths = (128, 256, 384, 512, 640, 768, 1024, 1536, 2048)
  assert [splash.block_size(t) for t in lengths] == [128, 256, 128, 512, 128, 256, 512, 512, 512]
  with pytest.raises(NotImplementedError, match="divisible by 128"):
    splash.block_size(200)


@pytest.mark.parametrize("implementation", ["xla", "tokamax", "splash", "splash_dynamic"])
def test_bfloat16_inputs_give_bfloat16_outputs_and_gradients_within_bfloat16_rounding(
    implementation):
  # The start-up check's default dtype, and training's: the kernels compute in float32 where
  # they must and return the inputs' dtype (a float32 output would double the traffic).
  seq_len, seps = (SPLASH_T, SPLASH_SEPS) if "splash" in implementation else (SMALL_T, SMALL_SEPS)
  q, k, v, cotangent, sep = _inputs(seq_len, seps)
  expected = _outputs_and_grads(lambda q, k, v: _reference(q, k, v, np.asarray(sep)),
                                q, k, v, cotangent)
  bf16 = lambda x: x.astype(jnp.bfloat16)
  got = _outputs_and_grads(
      lambda q, k, v: attention.glm_attention(q, k, v, sep, implementation=implementation),
      bf16(q), bf16(k), bf16(v), bf16(cotangent))
  for name, a, b in zip(("out", "dq", "dk", "dv"), got, expected):
    assert a.dtype == jnp.bfloat16, name
    # bfloat16 keeps 8 significant bits: inputs and result rounded, |values| up to ~4.
    np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.06, rtol=0.02,
                               err_msg=name)


def test_a_fused_kernel_given_an_rng_and_a_zero_dropout_rate_attends_without_dropout():
  # A zero rate asks for no dropout, whatever rng comes with it (a caller that always passes
  # one): the fused kernel attends as xla does, and is not refused.
  q, k, v, _, sep = _inputs(SMALL_T, SMALL_SEPS)
  got = attention.masked_attention(q, k, v, attention.prepare_mask(sep, SMALL_T, "tokamax"),
                                   implementation="tokamax", dropout_rate=0.0,
                                   dropout_rng=jax.random.key(0))
  np.testing.assert_allclose(got, _reference(q, k, v, np.asarray(sep)), atol=2e-5, rtol=1e-5)


def test_a_splash_kernel_computes_every_pass_in_whole_blocks_of_its_sequence(monkeypatch):
  # Interpreted, smaller compute blocks give the same numbers, so the tests above cannot see
  # them; on a TPU they are more, shorter inner steps (4x at T=512 with 128-token blocks). The
  # kernel is recorded where splash builds it, and stands in as the identity (shapes only).
  from glmjax.model import splash  # pylint: disable=import-outside-toplevel
  built = []

  def recorded(*mask_infos, block_sizes, **kwargs):
    built.append(block_sizes)
    return lambda q, k, v: q
  monkeypatch.setattr(splash.kernel_lib, "SplashAttentionKernel", recorded)
  fields = ("block_q", "block_kv", "block_kv_compute", "block_q_dkv", "block_kv_dkv",
            "block_kv_dkv_compute", "block_q_dq", "block_kv_dq")
  for seq_len, block in ((384, 128), (512, 512), (1024, 512)):
    built.clear()
    shape = jax.ShapeDtypeStruct((2, seq_len, 2, 16), jnp.float32)
    jax.eval_shape(lambda q, k, v, sep: splash.splash_attention(
        q, k, v, splash.mask_infos(sep, seq_len, compact=True), scale=0.25, compact=True,
        interpret=True), shape, shape, shape, jax.ShapeDtypeStruct((2,), jnp.int32))
    assert built, seq_len
    for sizes in built:
      assert {name: getattr(sizes, name) for name in fields} == dict.fromkeys(fields, block)
