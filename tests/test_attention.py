"""Every attention implementation that runs on CPU matches a plain reference, outputs and grads."""
import contextlib
import logging
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glmjax import attention_choice
from glmjax.model import attention, gpu_kernels
from glmjax.model import mask as mask_lib

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


def test_xla_attention_matches_the_reference():
  _assert_matches_reference(
      lambda q, k, v, sep: attention.glm_attention(q, k, v, sep, implementation="xla"),
      SMALL_T, SMALL_SEPS)


def test_cudnn_row_split_math_with_xla_backend():
  # The cuDNN path's composition, with jax.nn.dot_product_attention switched to 'xla'.
  _assert_matches_reference(
      lambda q, k, v, sep: gpu_kernels.row_split_attention(q, k, v, sep, q.shape[-1] ** -0.5,
                                                         implementation="xla"),
      SMALL_T, SMALL_SEPS)


@pytest.mark.parametrize("implementation", ["splash", "splash_dynamic"])
def test_splash_in_interpret_mode_matches_the_reference(implementation):
  _assert_matches_reference(
      lambda q, k, v, sep: attention.glm_attention(q, k, v, sep, implementation=implementation),
      SPLASH_T, SPLASH_SEPS)


# Several blocks, as every real config has: 3 x 3 blocks of 128 at T=384, seps on a block
# boundary, one off either side of one, and inside; 2 x 2 blocks of 512 at T=1024.
MULTI_BLOCK = ((384, (0, 127, 128, 129, 256, 300)), (1024, (0, 511, 512, 513, 1000)))


@pytest.mark.parametrize("seq_len, seps", MULTI_BLOCK, ids=["T384", "T1024"])
@pytest.mark.parametrize("implementation", ["xla", "row_split", "splash", "splash_dynamic",
                                            "tokamax"])
def test_every_cpu_kernel_at_multi_block_sizes(implementation, seq_len, seps):
  from glmjax.model import splash  # pylint: disable=import-outside-toplevel
  assert seq_len // splash.block_size(seq_len) >= 2
  if implementation == "row_split":
    fn = lambda q, k, v, sep: gpu_kernels.row_split_attention(q, k, v, sep, q.shape[-1] ** -0.5,
                                                           implementation="xla")
  else:
    fn = lambda q, k, v, sep: attention.glm_attention(q, k, v, sep,
                                                      implementation=implementation)
  _assert_matches_reference(fn, seq_len, seps, atol=5e-5)


def test_the_start_up_check_passes_splash_at_a_real_sequence_length():
  assert attention_choice.check_attention("splash", dtype=jnp.float32, seq_len=1024,
                                   head_dim=16) is None


def test_auto_rejects_a_kernel_that_returns_wrong_numbers(monkeypatch, caplog):
  real_kernel = attention._kernel

  def off_by_a_little(implementation, platform):
    kernel = real_kernel(implementation, platform)
    if implementation != "splash":
      return kernel
    # Runs and has the right shape, but every 64th query row is 1% off.
    return lambda q, k, v, mask, scale: kernel(q, k, v, mask, scale).at[:, ::64].multiply(1.01)
  monkeypatch.setattr(attention, "_kernel", off_by_a_little)
  reason = attention_choice.check_attention("splash", dtype=jnp.float32, head_dim=16)
  assert reason is not None and reason.startswith("mismatch against xla")
  with caplog.at_level(logging.WARNING):
    assert attention_choice.resolve_attention("auto", "cpu", candidates=("splash", "xla"),
                                       dtype=jnp.float32) == "xla"
  assert "splash rejected: mismatch against xla" in caplog.text
  # The same check passes the real kernel, so it is not rejecting everything.
  monkeypatch.setattr(attention, "_kernel", real_kernel)
  assert attention_choice.resolve_attention("auto", "cpu", candidates=("splash", "xla"),
                                     dtype=jnp.float32) == "splash"


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


def test_auto_is_refused_past_start_up_by_the_kernels_and_the_model():
  q, k, v, _, sep = _inputs(SMALL_T, SMALL_SEPS)
  with pytest.raises(ValueError, match="resolve_attention"):
    attention.masked_attention(q, k, v, attention.prepare_mask(sep, SMALL_T, "xla"),
                               implementation="auto")
  from glmjax import config as config_lib  # pylint: disable=import-outside-toplevel
  from glmjax import model as model_lib  # pylint: disable=import-outside-toplevel
  model_config = config_lib.model_defaults()
  model_config.update(vocab_size=64, hidden_size=16, num_heads=2, num_layers=1, attention="auto")
  glm = model_lib.GLM(model_lib.ModelConfig.from_config(model_config))
  tokens = jnp.zeros((1, 8), jnp.int32)
  with pytest.raises(ValueError, match="resolved once, at start-up"):
    glm.init(jax.random.key(0), tokens, tokens, tokens, jnp.array([4]))


def test_auto_on_cpu_is_xla_without_checks():
  assert attention_choice.resolve_attention("auto", "cpu") == "xla"
  assert attention_choice.resolve_attention("splash", "cpu") == "splash"  # explicit names are kept
  with pytest.raises(ValueError, match="flash"):
    attention_choice.resolve_attention("flash")


def test_an_explicit_kernel_that_fails_its_check_stops_the_run_with_the_reason(monkeypatch):
  real_kernel = attention._kernel
  monkeypatch.setattr(attention, "_kernel", lambda implementation, platform: (
      lambda q, k, v, mask, scale: real_kernel(implementation, platform)(
          q, k, v, mask, scale).at[:, ::64].multiply(1.01)))  # every 64th query row 1% off
  # On a GPU or TPU the named kernel is checked as auto's pick is (here asked for on CPU).
  with pytest.raises(ValueError, match=r"model.attention='splash' fails its start-up check on "
                                       r"cpu \(mismatch against xla.*set model.attention=auto"):
    attention_choice.resolve_attention("splash", "cpu", dtype=jnp.float32, check_explicit=True)
  checked = []
  monkeypatch.setattr(attention_choice, "check_attention", lambda name, **_: checked.append(name))
  assert attention_choice.resolve_attention("splash", "cpu") == "splash"  # CPU: tests cover it
  assert attention_choice.resolve_attention("xla", "cpu", check_explicit=True) == "xla"  # the reference
  assert not checked
  monkeypatch.setattr(jax, "local_devices", lambda backend=None: jax.devices("cpu"))
  assert attention_choice.resolve_attention("tokamax", "gpu") == "tokamax"  # a GPU: checked by default
  assert checked == ["tokamax"]
  monkeypatch.setattr(attention, "_kernel", real_kernel)
  monkeypatch.undo()
  assert attention_choice.resolve_attention("splash", "cpu", dtype=jnp.float32,
                                     check_explicit=True) == "splash"  # the real one passes


def test_a_failing_reference_is_reported_as_such_not_as_the_kernel_s_fault(monkeypatch):
  def reference_out_of_memory(*args, **kwargs):
    raise MemoryError("RESOURCE_EXHAUSTED: 18 GiB")
  monkeypatch.setattr(attention, "xla_attention", reference_out_of_memory)
  reason = attention_choice.check_attention("splash", dtype=jnp.float32, seq_len=256, head_dim=16)
  assert reason.startswith("the xla reference itself failed at T=256 (MemoryError"), reason


def test_auto_falls_back_with_a_logged_reason(caplog):
  # cuDNN cannot run on CPU: its check fails, the reason is logged, the next candidate wins.
  with caplog.at_level(logging.WARNING):
    picked = attention_choice.resolve_attention("auto", "cpu", candidates=("cudnn", "xla"))
  assert picked == "xla"
  assert any("cudnn rejected" in record.getMessage() for record in caplog.records)


def test_check_accepts_a_correct_kernel():
  # Splash in interpret mode is exact, so the start-up check passes it.
  assert attention_choice.check_attention("splash", dtype=jnp.float32, seq_len=SPLASH_T,
                                   head_dim=16) is None


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


def test_the_start_up_check_rejects_a_kernel_with_an_exact_forward_and_wrong_gradients(
    monkeypatch):
  def kernel_with_gradients_scaled_by(factor):
    def kernel(q, k, v, mask, scale):
      exact = lambda q, k, v: attention.xla_attention(q, k, v, mask, scale)

      @jax.custom_vjp
      def attend(q, k, v):
        return exact(q, k, v)

      def forward(q, k, v):
        return exact(q, k, v), (q, k, v)

      def backward(saved, cotangent):
        _, vjp = jax.vjp(exact, *saved)
        return tuple(factor * grad for grad in vjp(cotangent))
      attend.defvjp(forward, backward)
      return attend(q, k, v)
    return lambda implementation, platform: kernel

  monkeypatch.setattr(attention, "_kernel", kernel_with_gradients_scaled_by(1.01))
  reason = attention_choice.check_attention("tokamax", dtype=jnp.float32, seq_len=64, head_dim=16)
  assert reason is not None and reason.startswith("mismatch against xla"), reason
  errors = [float(e) for e in reason.split("out/dq/dk/dv ")[1].split(" > ")[0].split(", ")]
  assert errors[0] <= 1e-4 and all(e > 5e-3 for e in errors[1:]), reason  # out exact, grads not
  with pytest.raises(ValueError, match="fails its start-up check"):
    attention_choice.resolve_attention("tokamax", "cpu", dtype=jnp.float32, seq_len=64, head_dim=16,
                                check_explicit=True)
  # The same wrapper with the exact backward passes: the check rejects the gradients only.
  monkeypatch.setattr(attention, "_kernel", kernel_with_gradients_scaled_by(1.0))
  assert attention_choice.check_attention("tokamax", dtype=jnp.float32, seq_len=64,
                                   head_dim=16) is None


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


def test_tokamax_s_xla_path_gives_bfloat16_outputs_and_gradients_within_bfloat16_rounding():
  # The start-up check's default dtype, and training's: the backward recomputes in float32 and
  # returns gradients in the inputs' dtype.
  q, k, v, cotangent, sep = _inputs(SMALL_T, SMALL_SEPS)
  expected = _outputs_and_grads(lambda q, k, v: _reference(q, k, v, np.asarray(sep)),
                                q, k, v, cotangent)
  bf16 = lambda x: x.astype(jnp.bfloat16)
  got = _outputs_and_grads(
      lambda q, k, v: attention.glm_attention(q, k, v, sep, implementation="tokamax"),
      bf16(q), bf16(k), bf16(v), bf16(cotangent))
  for name, a, b in zip(("out", "dq", "dk", "dv"), got, expected):
    assert a.dtype == jnp.bfloat16, name
    # bfloat16 keeps 8 significant bits: inputs and result rounded, |values| up to ~4.
    np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.06, rtol=0.02,
                               err_msg=name)


def _kernels_one_percent_off(monkeypatch):
  """Every kernel's output scaled by 1.01, so its gradients are too: each 0.01 off relatively."""
  real_kernel = attention._kernel
  monkeypatch.setattr(attention, "_kernel", lambda implementation, platform: (
      lambda q, k, v, mask, scale: 1.01 * real_kernel(implementation, platform)(
          q, k, v, mask, scale)))


def _reported_errors(reason):
  return [float(e) for e in reason.split("out/dq/dk/dv ")[1].split(" > ")[0].split(", ")]


def test_the_start_up_check_reports_each_error_relative_to_the_largest_reference_value(
    monkeypatch):
  _kernels_one_percent_off(monkeypatch)
  reason = attention_choice.check_attention("tokamax", dtype=jnp.float32, seq_len=64,
                                            head_dim=16)
  assert reason is not None and reason.startswith("mismatch against xla"), reason
  # |1.01 x - x| / max|x| = 0.01 in each of out, dq, dk, dv, whatever their magnitudes.
  np.testing.assert_allclose(_reported_errors(reason), [0.01] * 4, rtol=0.05, err_msg=reason)


def test_a_float32_kernel_on_an_accelerator_is_held_to_bfloat16_s_tolerance_not_float32_s(
    monkeypatch):
  # An accelerator's float32 matmuls may be TF32 or bf16 passes: a kernel 1% off passes there
  # (tolerance 3e-2), while on a CPU, where float32 is exact, it fails (1e-4).
  _kernels_one_percent_off(monkeypatch)
  check = lambda device: attention_choice.check_attention(
      "tokamax", dtype=jnp.float32, seq_len=64, head_dim=16, device=device)
  assert check(jax.devices("cpu")[0]).startswith("mismatch against xla")
  # The same computation, run on this CPU, judged as a TPU's.
  monkeypatch.setattr(jax, "default_device", lambda device: contextlib.nullcontext())
  assert check(types.SimpleNamespace(platform="tpu")) is None


@pytest.mark.parametrize("seq_len", [128, 256])
def test_the_start_up_check_rejects_a_kernel_that_is_exact_only_where_part_a_ends_on_a_block(
    monkeypatch, seq_len):
  # A kernel that takes Part A in blocks of 2 tokens (sep rounded down to even) is exact for
  # an empty or a full Part A: the check's ragged Part A must end inside a block to expose it.
  real_kernel = attention._kernel

  def in_blocks_of(block):
    return lambda implementation, platform: lambda q, k, v, mask, scale: real_kernel(
        implementation, platform)(q, k, v, attention.prepare_mask(
            mask.sep // block * block, q.shape[1], implementation), scale)

  monkeypatch.setattr(attention, "_kernel", in_blocks_of(2))
  reason = attention_choice.check_attention("tokamax", dtype=jnp.float32, seq_len=seq_len,
                                            head_dim=16)
  assert reason is not None and reason.startswith("mismatch against xla"), reason
  monkeypatch.setattr(attention, "_kernel", in_blocks_of(1))  # the same wrapper, exact: passes
  assert attention_choice.check_attention("tokamax", dtype=jnp.float32, seq_len=seq_len,
                                          head_dim=16) is None


@pytest.mark.parametrize("part_a", ["empty", "whole"])
def test_the_start_up_check_rejects_a_kernel_that_fails_only_when_part_a_is_empty_or_whole(
    monkeypatch, part_a):
  # The row split's edges: an empty Part A is a zero-length cuDNN segment (NaN there), and a
  # whole-row Part A leaves no row to the causal call. The check must try both.
  real_kernel = attention._kernel

  def failing_there(implementation, platform):
    kernel = real_kernel(implementation, platform)

    def attend(q, k, v, mask, scale):
      edge = mask.sep == (0 if part_a == "empty" else q.shape[1])
      return jnp.where(edge[:, None, None, None], jnp.nan, kernel(q, k, v, mask, scale))
    return attend

  monkeypatch.setattr(attention, "_kernel", failing_there)
  reason = attention_choice.check_attention("tokamax", dtype=jnp.float32, seq_len=64,
                                            head_dim=16)
  assert reason is not None and reason.startswith("mismatch against xla"), reason
