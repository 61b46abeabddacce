"""The GPU kernels (cuDNN row split, tokamax) keep what their backward pass reads under the remat
name ATTENTION_RESIDUALS, save no copy of q, k or v, and change no value or gradient.

On CPU the row split runs with jax.nn's 'xla' implementation and tokamax with its XLA op, which
has the Mosaic GPU op's residual contract (out, (max, sum)). The real GPU kernels are lowered
for CUDA on this CPU host (not run), and their calls in the lowered program counted.
"""
import collections
import contextlib
import importlib
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import linen as nn

from glmjax.model import glm as glm_lib, gpu_kernels, mask as mask_lib, model_config

B, T, N, D = 2, 64, 2, 16
SCALE = D ** -0.5
SEP = jnp.array([20, 40], jnp.int32)
POLICIES = {
    "kernel residuals": jax.checkpoint_policies.save_only_these_names(
        model_config.ATTENTION_RESIDUALS),
    "nothing": jax.checkpoint_policies.nothing_saveable,
    "everything": jax.checkpoint_policies.everything_saveable,
}


def _qkv(dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(3), 4)
  return tuple(jax.random.normal(key, (B, T, N, D), jnp.float32).astype(dtype)
               for key in keys)


KERNELS = {
    "row_split": lambda q, k, v: gpu_kernels.row_split_attention(q, k, v, SEP, SCALE,
                                                                 implementation="xla"),
    "tokamax": lambda q, k, v: gpu_kernels.tokamax_attention(
        q, k, v, mask_lib.key_ends(SEP, T), SCALE, platform="cpu"),
}


def _backward_flops(kernel, policy) -> float:
  """FLOPs of the compiled backward pass of sum(sin(kernel(...))) under `policy`."""
  q, k, v, _ = _qkv()
  loss = jax.checkpoint(lambda q, k, v: jnp.sum(jnp.sin(kernel(q * 1.5, k, v))), policy=policy)
  _, backward = jax.vjp(loss, q, k, v)
  compiled = jax.jit(backward).lower(jnp.float32(1.0)).compile()
  return float(compiled.cost_analysis()["flops"])


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_under_the_residual_policy_the_backward_pass_runs_no_attention_forward(name):
  flops = {policy: _backward_flops(KERNELS[name], POLICIES[policy]) for policy in POLICIES}
  # Keeping only the named residuals costs what keeping everything costs (a few elementwise
  # ops aside); keeping nothing costs a forward more, so the comparison can fail.
  assert flops["kernel residuals"] <= 1.03 * flops["everything"], flops
  assert flops["nothing"] >= 1.05 * flops["everything"], flops


def _unwrapped_row_split(q, k, v):
  lengths = jnp.maximum(SEP, 1)
  padded = jax.nn.dot_product_attention(q, k, v, scale=SCALE, query_seq_lengths=lengths,
                                        key_value_seq_lengths=lengths, implementation="xla")
  causal = jax.nn.dot_product_attention(q, k, v, scale=SCALE, is_causal=True,
                                        implementation="xla")
  return jnp.where(jnp.arange(T)[None, :, None, None] < SEP[:, None, None, None], padded, causal)


def _unwrapped_tokamax(q, k, v):
  from tokamax._src.ops.attention import base  # pylint: disable=import-outside-toplevel
  op = base.DotProductAttention()  # tokamax's own autodiff, no custom backward op
  mask = base.Mask(k_end=mask_lib.key_ends(SEP, T)[:, None, :])
  return op(q, k, v, mask=mask, logits_scale=SCALE)


@pytest.mark.parametrize("name, unwrapped, atol", [("row_split", _unwrapped_row_split, 0.0),
                                                   ("tokamax", _unwrapped_tokamax, 1e-5)],
                         ids=["row_split", "tokamax"])
def test_the_wrapped_kernel_gives_the_values_and_gradients_of_the_plain_one(name, unwrapped,
                                                                            atol):
  q, k, v, cotangent = _qkv()

  def run(fn):
    out, backward = jax.vjp(fn, q, k, v)
    return (out, *backward(cotangent))
  run = jax.jit(run, static_argnums=0)

  for label, got, expected in zip(("out", "dq", "dk", "dv"), run(KERNELS[name]), run(unwrapped)):
    np.testing.assert_allclose(got, expected, atol=atol, rtol=0, err_msg=label)


def _pretend_a_cudnn_gpu(monkeypatch):
  # jax's cuDNN rule refuses to trace without a GPU; tracing and lowering is all we need.
  from jax._src.cudnn import fused_attention_stablehlo  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(fused_attention_stablehlo, "check_cudnn_version", lambda: 91000)
  monkeypatch.setattr(fused_attention_stablehlo, "check_compute_capability", lambda _: True)
  return contextlib.nullcontext()


def _pretend_an_h100(monkeypatch):
  # tokamax lowers its Mosaic GPU kernel off a GPU when cross-compiling for sm90.
  from tokamax._src import config, gpu_utils  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(gpu_utils, "is_sm90", lambda device=None: True)
  monkeypatch.setattr(gpu_utils, "is_sm100", lambda device=None: False)
  # tokamax 0.0.13 (the one for jax 0.11) sizes its persistent kernel's grid from the default
  # device's SM count while tracing; a CPU device has none, so give it an H100's 132.
  mosaic_gpu = importlib.import_module("tokamax._src.mosaic_gpu")
  if hasattr(mosaic_gpu, "backend"):
    platform = jax.devices()[0].platform
    h100 = types.SimpleNamespace(core_count=132, platform=platform)
    monkeypatch.setattr(mosaic_gpu, "backend",
                        types.SimpleNamespace(get_default_device=lambda: h100))
  return config.cross_compile(True)


# The kernel calls of one layer's forward and backward in the program lowered for CUDA.
GPU_KERNELS = {"cudnn": (_pretend_a_cudnn_gpu, r"__cudnn\$fmhaSoftmax(Backward)?"),
               "tokamax": (_pretend_an_h100, r"mosaic_gpu\w*")}


def _gpu_kernel_calls(attention: str, remat: str) -> collections.Counter:
  cfg = model_config.ModelConfig(vocab_size=128, hidden_size=64, num_layers=1, num_heads=2,
                                 max_position=256, dtype="bfloat16", attention=attention,
                                 remat=remat, scan_layers=False, hidden_dropout=0.0,
                                 attention_dropout=0.0, target_platform="gpu")
  model = glm_lib.GLM(cfg)
  tokens, sep = jnp.zeros((2, 256), jnp.int32), jnp.array([100, 30])
  params = jax.eval_shape(lambda: nn.meta.unbox(
      model.init(jax.random.key(0), tokens, tokens, tokens, sep)["params"]))
  loss = lambda p: model.apply({"params": p}, tokens, tokens, tokens, sep).sum()
  text = jax.jit(jax.grad(loss)).trace(params).lower(lowering_platforms=("cuda",)).as_text()
  pattern = GPU_KERNELS[attention][1]
  return collections.Counter(m.group(0) for m in re.finditer(rf"custom_call @({pattern})", text))


@pytest.mark.parametrize("attention", sorted(GPU_KERNELS))
def test_lowered_for_a_gpu_remat_minimal_runs_no_attention_forward_twice(attention, monkeypatch):
  with GPU_KERNELS[attention][0](monkeypatch):
    calls = {remat: _gpu_kernel_calls(attention, remat) for remat in ("none", "minimal", "full")}
  assert sum(calls["none"].values()) > 0, calls
  assert calls["minimal"] == calls["none"], calls  # each kernel once per layer, as without remat
  assert sum(calls["full"].values()) > sum(calls["none"].values()), calls  # full reruns them


def test_the_cudnn_row_split_keeps_both_outputs_and_log_sum_exps_and_no_copy_of_q_k_v(
    monkeypatch, capsys):
  _pretend_a_cudnn_gpu(monkeypatch)
  q, k, v, _ = _qkv(jnp.bfloat16)
  loss = jax.checkpoint(lambda q, k, v: jnp.sum(gpu_kernels.row_split_attention(
      q, k, v, SEP, SCALE)), policy=POLICIES["kernel residuals"])
  jax.ad_checkpoint.print_saved_residuals(loss, q, k, v)
  saved = capsys.readouterr().out.splitlines()
  named = sorted(line.split()[0] for line in saved
                 if f"named '{model_config.ATTENTION_RESIDUALS}'" in line)
  # Per call: its output (cuDNN saves it as a residual too: tagged once) and its log-sum-exp.
  assert named == sorted([f"bf16[{B},{T},{N},{D}]"] * 2 + [f"f32[{B},{N},{T}]"] * 2), saved
  assert sum("from the argument" in line for line in saved) == 3, saved  # q, k, v themselves


def test_on_a_gpu_tokamax_s_backward_gives_each_input_its_own_gradient(monkeypatch):
  """The GPU branch hands the op's own vjp a dict of gradients: a stand-in op (out = q + 2k +
  3v, whose vjp labels each gradient by its factor) checks each lands on its input, on CPU."""
  class LabelledOp:
    def __call__(self, q, k, v, *, mask, logits_scale, return_residuals=False):
      del mask, logits_scale
      out = q + 2 * k + 3 * v
      return (out, jnp.sum(out, axis=-1)) if return_residuals else out

    def bind(self, *args, **kwargs):
      return types.SimpleNamespace(args=args, kwargs=dict(kwargs, return_residuals=True))

    def vjp(self, statistics, out, cotangent, q, k, v, **kwargs):
      del statistics, out, q, k, v, kwargs
      return {"q": 1 * cotangent, "k": 2 * cotangent, "v": 3 * cotangent}

  platforms = []
  base = types.SimpleNamespace(Mask=lambda k_end: k_end)
  monkeypatch.setattr(gpu_kernels, "_tokamax",
                      lambda platform: platforms.append(platform) or (base, LabelledOp()))
  q, k, v, cotangent = _qkv()
  out, backward = jax.vjp(lambda q, k, v: gpu_kernels.tokamax_attention(
      q, k, v, mask_lib.key_ends(SEP, T), SCALE, platform="gpu"), q, k, v)
  np.testing.assert_allclose(out, q + 2 * k + 3 * v, rtol=1e-6)
  for label, grad, factor in zip(("dq", "dk", "dv"), backward(cotangent), (1, 2, 3)):
    np.testing.assert_allclose(grad, factor * cotangent, rtol=1e-6, err_msg=label)
  assert platforms == ["gpu"]


def test_the_cudnn_part_a_call_computes_only_the_part_a_rows(monkeypatch):
  # Its query lengths are its key lengths (sep): cuDNN's padding mask then leaves out the rows
  # past sep, which the causal call gives. Without them every row is computed by both calls,
  # the values the same (`where` picks the Part A rows), so only the lowered call shows it.
  _pretend_a_cudnn_gpu(monkeypatch)
  q, k, v, _ = _qkv(jnp.bfloat16)
  split = lambda q, k, v, sep: gpu_kernels.row_split_attention(q, k, v, sep, SCALE)
  text = jax.jit(split).trace(q, k, v, SEP).lower(lowering_platforms=("cuda",)).as_text()
  calls = re.findall(r"custom_call @__cudnn\$fmhaSoftmax\(([^)]*)\)", text)
  padded = [operands.split(", ") for operands in calls if operands.count(",") == 4]
  assert len(calls) == 2 and len(padded) == 1, calls  # the causal call takes no lengths
  q_lengths, kv_lengths = padded[0][3:]
  assert q_lengths == kv_lengths, calls


def test_tokamax_lowers_for_an_h100_at_every_sequence_length_its_declared_multiple_allows(
    monkeypatch):
  # Its sm90 kernel masks key ranges in chunks of two 64-row query blocks: at 64, 192 or 200
  # rows its forward fails to trace ("Dimension to ungroup is not divisible"), so config,
  # 'auto' and cloze's row buckets read the multiple model_config declares.
  multiple = model_config.seq_len_multiple("tokamax")
  for length in (multiple, 3 * multiple):
    q = jax.ShapeDtypeStruct((1, length, 2, 64), jnp.bfloat16)
    key_end = mask_lib.key_ends(jnp.array([length // 3]), length)
    loss = lambda q, k, v: gpu_kernels.tokamax_attention(  # noqa: E731
        q, k, v, key_end, 0.125, platform="gpu").astype(jnp.float32).sum()
    with _pretend_an_h100(monkeypatch):
      text = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, q, q).lower(
          lowering_platforms=("cuda",)).as_text()
    assert re.search(r"custom_call @mosaic_gpu", text), length

