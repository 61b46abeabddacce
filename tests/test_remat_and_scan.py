"""What remat keeps for the backward pass and what it reruns, and that neither remat nor a
scanned layer stack changes a value or a gradient."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from glmjax import model as model_lib
from glmjax.model import glm as glm_lib
from glmjax.model import gpu_kernels
# The small model and batch of the model's own tests.
from test_model import BATCH, SEQ, _batch, _config, _glm, _init_params


def test_remat_and_scan_give_identical_outputs_and_grads():
  batch = _batch()
  cotangent = jax.random.normal(jax.random.key(3), (BATCH, SEQ, 128))

  def outputs_and_grads(remat, scan, params):
    model = _glm(_config(remat=remat, scan_layers=scan, hidden_dropout=0.0))
    loss = lambda p: jnp.sum(model.apply({"params": p}, *batch) * cotangent)
    return jax.jit(jax.value_and_grad(loss))(params)

  unscanned = _init_params(_glm(_config()), batch)
  scanned = model_lib.stack_layers(unscanned, 2)
  value, grads = outputs_and_grads("none", False, unscanned)
  for remat, scan in (("full", False), ("none", True), ("minimal", True), ("full", True)):
    other_value, other_grads = outputs_and_grads(remat, scan, scanned if scan else unscanned)
    if scan:
      other_grads = model_lib.unstack_layers(other_grads, 2)
    np.testing.assert_allclose(other_value, value, rtol=1e-6, err_msg=f"{remat} {scan}")
    for a, b in zip(jax.tree.leaves(other_grads), jax.tree.leaves(grads)):
      # atol: sums of terms up to about 20 that the two programs round differently (2.1e-6
      # seen on a gradient of 0.09 among ones of 20; tests/cpu_devices.py, glm._token_sum)
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"{remat} {scan}")


def test_scanned_params_carry_the_layers_axis():
  model = _glm(_config(scan_layers=True))
  boxed = jax.eval_shape(model.init, jax.random.key(0), *_batch())["params"]
  qkv = boxed["layers"]["attention"]["qkv_kernel"]
  assert qkv.names == ("layers", "embed", None, "heads", "kv")
  assert qkv.value.shape == (2, 32, 3, 4, 8)


# minimal keeps every projection's output, the attention's and the LayerNorms' statistics; full
# the statistics only (8 bytes a token a LayerNorm), besides each block's input.
@pytest.mark.parametrize("remat, saved", [
    ("none", None),
    ("minimal", {"qkv_proj", "context", "out_proj", "mlp_in", "mlp_out", "norm_stats",
                 "attention_residuals"}),
    ("full", {"norm_stats"})])
def test_remat_policy_decides_what_is_saved(remat, saved, capsys):
  from jax.ad_checkpoint import print_saved_residuals  # pylint: disable=import-outside-toplevel
  model, batch = _glm(_config(remat=remat)), _batch()
  params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), *batch)["params"])
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params)
  print_saved_residuals(lambda p: model.apply({"params": p}, *batch).sum(), params)
  found = [line for line in capsys.readouterr().out.splitlines()
           if "from the argument" not in line]
  names = {tag for tag in glm_lib.SAVED_BY_MINIMAL if any(f"named '{tag}'" in n for n in found)}
  if saved is None:
    assert len(found) > 30  # everything the backward needs is kept
  else:
    # mlp_out feeds only the residual add, so nothing needs to keep it; attention_residuals
    # exist only with a fused kernel (the tests below), and this config uses xla.
    assert names == saved - {"mlp_out", "attention_residuals"}, names
    assert len(found) < 30
    # Each layer's two LayerNorms keep mean and deviation; the final LayerNorm, outside the
    # remat blocks, is differentiated plainly and keeps its deviation (jax's choice) either way.
    layers = model.config.num_layers
    assert sum(f"named '{glm_lib.NORM_STATS}'" in line for line in found) == 4 * layers + 1, found


@pytest.mark.parametrize("remat, others", [
    ("minimal", ["3,4,8", "4,8", "32", "128"]),  # QKV, context, out_proj, mlp_in
    ("full", [])], ids=["minimal", "full"])
def test_a_scanned_layer_stack_keeps_each_layernorm_s_mean_and_deviation(remat, others, capsys):
  # A scan shows what it keeps only as stacked outputs: four [layers, B, T, 1] float32 ones,
  # the two statistics of each layer's two LayerNorms (none when the policy drops them).
  from jax.ad_checkpoint import print_saved_residuals  # pylint: disable=import-outside-toplevel
  model, batch = _glm(_config(remat=remat, scan_layers=True)), _batch()
  params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), *batch)["params"])
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params)
  print_saved_residuals(lambda p: model.apply({"params": p}, *batch).sum(), params)
  stacked = f"f32[{model.config.num_layers},{BATCH},{SEQ},"
  kept = sorted(line.split()[0].removeprefix(stacked) for line in
                capsys.readouterr().out.splitlines() if "output of scan" in line)
  # Besides them, each layer's input and what the policy names: nothing more, so a stack left
  # without remat (24 stacked outputs here, the attention probabilities among them) fails.
  assert kept == sorted(["1]"] * 4 + ["32]"] + [f"{shape}]" for shape in others]), kept


def _fused_kernel_model(attention, remat, num_layers=2):
  # One unscanned layer shows its saved values by name; a scan shows the stacked outputs.
  cfg = model_lib.ModelConfig(vocab_size=128, hidden_size=64, num_layers=num_layers,
                              num_heads=2, max_position=256, dtype="float32",
                              attention=attention, remat=remat, scan_layers=num_layers > 1,
                              hidden_dropout=0.0,
                              attention_dropout=0.0)
  model = model_lib.GLM(cfg)
  tokens, sep = jnp.zeros((2, 256), jnp.int32), jnp.array([100, 30])
  params = nn.meta.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), tokens, tokens, tokens, sep))["params"])
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params)
  return lambda p: model.apply({"params": p}, tokens, tokens, tokens, sep).sum(), params


# Named residuals: the backward pass of remat='minimal' does not rerun the attention forward.
# splash runs in Pallas interpret mode on CPU, tokamax as its XLA op (the same residuals).
@pytest.mark.parametrize("attention, output, statistics", [
    ("splash", "f32[2,2,256,32]", "f32[2,2,256]"),   # [B, N, T, D]; log-sum-exp [B, N, T]
    ("splash_dynamic", "f32[2,2,256,32]", "f32[2,2,256]"),  # splash with its dynamic mask
    ("tokamax", "f32[2,256,2,32]", "f32[2,2,256]"),  # [B, T, N, D]; (max, sum) [B, N, T]
])
def test_remat_minimal_keeps_a_fused_kernels_output_once_and_its_softmax_statistics(
    attention, output, statistics, capsys):
  loss, params = _fused_kernel_model(attention, "minimal", num_layers=1)
  jax.ad_checkpoint.print_saved_residuals(loss, params)
  lines = capsys.readouterr().out.splitlines()
  # splash tags inside its own jit, which is what the printout names
  shapes = [line.split()[0] for line in lines
            if f"named '{model_lib.model_config.ATTENTION_RESIDUALS}'" in line
            or "jitted function '_splash_attention'" in line]
  assert shapes.count(output) == 1 and statistics in shapes, shapes
  # The output is kept once: "context" (the same values) is not tagged for saving again.
  assert not any("named 'context'" in line for line in lines), lines


# Every kernel whose KERNELS row says it tags its residuals (model_config.WITH_NAMED_RESIDUALS):
# one that says so and does not would rerun its forward here. cudnn runs as its row split over
# XLA's attention, which this CPU has.
@pytest.mark.parametrize("attention", model_lib.model_config.WITH_NAMED_RESIDUALS)
def test_remat_minimal_with_a_fused_kernel_adds_only_elementwise_work_to_the_backward(
    attention, monkeypatch):
  monkeypatch.setattr(gpu_kernels, "row_split_attention", functools.partial(
      gpu_kernels.row_split_attention, implementation="xla"))
  def backward_flops(remat):
    loss, params = _fused_kernel_model(attention, remat)
    _, backward = jax.vjp(loss, params)
    return float(jax.jit(backward).lower(jnp.float32(1.0)).compile().cost_analysis()["flops"])
  none, minimal = backward_flops("none"), backward_flops("minimal")
  # With tokamax's output left untagged (tests/mutations.py) the forward reruns: +8% here.
  # Norms and activations recomputed cost well under 1%.
  assert minimal <= 1.04 * none, (none, minimal)


def test_remat_minimal_keeps_the_cudnn_row_split_s_outputs_without_tagging_the_context(
    monkeypatch, capsys):
  # The cuDNN row split tags its two calls' outputs and log-sum-exps itself; here it runs as the
  # same composition over XLA's attention, which this CPU has.
  monkeypatch.setattr(gpu_kernels, "row_split_attention", functools.partial(
      gpu_kernels.row_split_attention, implementation="xla"))
  loss, params = _fused_kernel_model("cudnn", "minimal", num_layers=1)
  jax.ad_checkpoint.print_saved_residuals(loss, params)
  lines = capsys.readouterr().out.splitlines()
  tagged = [line.split()[0] for line in lines
            if f"named '{model_lib.model_config.ATTENTION_RESIDUALS}'" in line]
  assert tagged.count("f32[2,256,2,32]") == 2, lines  # each call's output, [B, T, N, D]
  # Their merge is recomputed from them: "context" is not saved a third time.
  assert not any("named 'context'" in line for line in lines), lines


def test_unscanned_layers_under_remat_full_recompute_their_forward_in_the_compiled_gradient():
  """Without a scan, XLA would merge remat's recomputation with the forward it repeats (common
  subexpressions) and keep every activation: remat would then save no memory. prevent_cse
  keeps the recomputation, and the compiled gradient does more work than without remat."""
  def gradient_flops(remat):
    model, batch = _glm(_config(remat=remat, num_layers=4)), _batch()
    params = _init_params(model, batch)
    loss = lambda p: model.apply({"params": p}, *batch).sum()  # noqa: E731
    compiled = jax.jit(jax.grad(loss)).lower(params).compile()
    return float(compiled.cost_analysis()["flops"])
  none, full = gradient_flops("none"), gradient_flops("full")
  assert full > 1.1 * none, (none, full)  # the forward (a third of it) runs again


@pytest.mark.parametrize("scan, barriers", [(True, False), (False, True)])
def test_only_unscanned_remat_layers_put_an_optimization_barrier_in_the_gradient(scan, barriers):
  """A scan's loop already keeps its body's recomputation apart from the forward, so there
  prevent_cse's barrier is not needed and can keep XLA from optimising the loop body (jax's
  checkpoint docs). Unscanned layers need it: the test above."""
  model, batch = _glm(_config(remat="full", scan_layers=scan)), _batch()
  params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), *batch)["params"])
  loss = lambda p: model.apply({"params": p}, *batch).sum()  # noqa: E731
  text = jax.jit(jax.grad(loss)).lower(params).as_text()
  has_barrier = "optimization_barrier" in text
  assert has_barrier == barriers, scan


@pytest.mark.parametrize("scan", [False, True])
def test_the_attention_mask_is_built_once_per_batch_not_once_per_layer(scan, monkeypatch):
  # The same values either way; built inside each layer, the mask (for splash, block metadata
  # from [T, T] bool masks) is made again in every layer, and in a scan's body.
  from glmjax.model import attention  # pylint: disable=import-outside-toplevel
  built, prepare_mask = [], attention.prepare_mask
  monkeypatch.setattr(attention, "prepare_mask",
                      lambda *args: built.append(args) or prepare_mask(*args))
  model, batch = _glm(_config(scan_layers=scan, remat="full")), _batch()
  params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), *batch)["params"])
  built.clear()  # init's own forward
  jax.eval_shape(lambda p: model.apply({"params": p}, *batch), params)
  assert len(built) == 1, built
