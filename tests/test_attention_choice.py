"""The start-up check of an attention kernel (glmjax.attention_choice): `auto` picks the first
candidate whose outputs and gradients match xla on rows that probe the mask's edges, logs why the
others were rejected, and a kernel named explicitly that fails stops the run with the reason."""
import contextlib
import importlib
import logging
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glmjax import attention_choice
from glmjax.model import attention
from test_attention import SMALL_SEPS, SMALL_T, SPLASH_T, _inputs


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
  assert attention_choice.resolve_attention("splash", "tpu") == "splash"  # a TPU too
  assert checked == ["tokamax", "splash"]
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


def _kernels_one_percent_off(monkeypatch, factor=1.01):
  """Every kernel's output scaled by `factor` (1.01), so its gradients are too: each 0.01 off
  relatively."""
  real_kernel = attention._kernel
  monkeypatch.setattr(attention, "_kernel", lambda implementation, platform: (
      lambda q, k, v, mask, scale: factor * real_kernel(implementation, platform)(
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


def test_a_kernel_five_percent_off_on_an_accelerator_fails_the_bfloat16_tolerance(monkeypatch):
  # The accelerator's tolerance (3e-2) is loose enough for TF32 or bfloat16 matmuls, not for a
  # kernel that is wrong by 5%.
  _kernels_one_percent_off(monkeypatch, factor=1.05)
  monkeypatch.setattr(jax, "default_device", lambda device: contextlib.nullcontext())
  reason = attention_choice.check_attention(
      "tokamax", dtype=jnp.float32, seq_len=64, head_dim=16,
      device=types.SimpleNamespace(platform="tpu"))
  assert reason is not None and reason.startswith("mismatch against xla"), reason


def test_the_start_up_check_passes_splash_in_bfloat16():
  # The kernel's outputs are bfloat16: the check's cotangent is cast to them, as a step's is.
  assert attention_choice.check_attention("splash", dtype=jnp.bfloat16, seq_len=128,
                                          head_dim=16) is None


def test_auto_tries_the_next_kernel_after_one_is_rejected(caplog):
  # cuDNN cannot run on CPU and is rejected; auto goes on to splash, which passes, not to xla.
  with caplog.at_level(logging.WARNING):
    assert attention_choice.resolve_attention(
        "auto", "cpu", candidates=("cudnn", "splash", "xla"), dtype=jnp.bfloat16, seq_len=128,
        head_dim=16) == "splash"
  assert "cudnn rejected" in caplog.text


def test_the_start_up_check_rejects_a_kernel_that_mixes_heads_with_positions(monkeypatch):
  # A kernel that reads [B, T, N, D] as if it were [B, N, T, D] (a reshape where a transpose
  # belongs) is exact with one head only: the check must run with several.
  real_kernel = attention._kernel

  def kernel_reading_layout(mixed):
    def swapped(x):  # [B, X, Y, D] -> [B, Y, X, D]: a transpose, or by mistake a reshape
      batch, first, second, width = x.shape
      return x.reshape(batch, second, first, width) if mixed else x.transpose(0, 2, 1, 3)

    def kernel(implementation, platform):
      def attend(q, k, v, mask, scale):  # attends heads-first: [B, N, T, D] inside
        heads_first = [swapped(x) for x in (q, k, v)]
        out = real_kernel(implementation, platform)(
            *(x.transpose(0, 2, 1, 3) for x in heads_first), mask, scale)
        return swapped(out.transpose(0, 2, 1, 3))
      return attend
    return kernel

  monkeypatch.setattr(attention, "_kernel", kernel_reading_layout(mixed=True))
  reason = attention_choice.check_attention("tokamax", dtype=jnp.float32, seq_len=64,
                                            head_dim=16)
  assert reason is not None and reason.startswith("mismatch against xla"), reason
  monkeypatch.setattr(attention, "_kernel", kernel_reading_layout(mixed=False))  # transposes
  assert attention_choice.check_attention("tokamax", dtype=jnp.float32, seq_len=64,
                                          head_dim=16) is None


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


def test_auto_passes_over_a_16_bit_only_kernel_for_a_float32_run_without_trying_it(
    caplog, monkeypatch):
  """cuDNN and tokamax take no float32: a float32 run's start-up neither runs their check nor
  warns that they were rejected, as a compile for another platform never picks them."""
  tried = []
  monkeypatch.setattr(attention_choice, "check_attention",
                      lambda name, **shape: tried.append((name, shape["dtype"])) or "no")
  with caplog.at_level(logging.INFO, logger="glmjax"):
    assert attention_choice.resolve_attention(
        "auto", "cpu", candidates=("cudnn", "tokamax", "xla"), dtype=jnp.float32) == "xla"
  assert tried == []
  assert "cudnn skipped: it runs 16-bit inputs only, not float32" in caplog.text
  assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
  assert attention_choice.resolve_attention("auto", "cpu", candidates=("cudnn", "xla"),
                                            dtype=jnp.bfloat16) == "xla"
  assert tried == [("cudnn", jnp.bfloat16)]  # a 16-bit run tries it


@pytest.mark.parametrize("platform, kernel", [("tpu", "splash"), ("gpu", "xla")])
def test_a_program_for_another_platform_carries_that_platform_and_its_kernel(platform, kernel):
  """aot on a CPU host: the model must build the target's kernels (splash on a TPU; float32
  on a GPU takes xla), and say which platform it is compiled for, not this host's."""
  config = importlib.import_module("configs.base").get_config("local")
  config.model.attention = "auto"
  model_config = attention_choice.resolved_model_config(config, platform=platform)
  assert (model_config.target_platform, model_config.attention) == (platform, kernel)


def test_auto_on_a_tpu_falls_back_to_splash_dynamic_when_splash_fails_its_check(monkeypatch):
  # splash's compact mask uses splash's private layout; when a jax release breaks it, the public
  # dynamic-mask form is the next kernel, before the dense xla one. A stand-in TPU device and
  # check: the order, not the kernels, is tested.
  checked = []

  def check(name, **_):
    checked.append(name)
    return "mismatch against xla" if name == "splash" else None
  monkeypatch.setattr(attention_choice, "check_attention", check)
  monkeypatch.setattr(jax, "local_devices", lambda backend=None: jax.devices("cpu"))
  assert attention_choice.resolve_attention("auto", "tpu", seq_len=256) == "splash_dynamic"
  assert checked == ["splash", "splash_dynamic"]
