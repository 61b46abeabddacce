"""The Flax GLM: equals an independent numpy forward, respects the infilling mask, its sizes,
dropout and initial weights (remat and scan: tests/test_remat_and_scan.py)."""
import dataclasses
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from glmjax import config as config_lib
from glmjax import model as model_lib
from glmjax.model import attention as attention_lib

BATCH, SEQ = 2, 16


def _glm(config):
  return model_lib.GLM(model_lib.ModelConfig.from_config(config))


def _config(**overrides):
  config = config_lib.model_defaults()
  config.update(vocab_size=128, hidden_size=32, num_layers=2, num_heads=4, max_position=SEQ,
                dtype="float32", attention="xla", hidden_dropout=0.0, attention_dropout=0.0,
                scan_layers=False)
  config.update(**overrides)
  return config


def _batch(seed=0, sep=(5, SEQ // 2)):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 128, (BATCH, SEQ)).astype(np.int32)
  sep = np.array(sep, np.int32)
  position_ids = np.minimum(np.arange(SEQ)[None], sep[:, None] - 1).clip(0).astype(np.int32)
  position_ids = np.where(np.arange(SEQ)[None] < sep[:, None], np.arange(SEQ)[None], position_ids)
  block_ids = np.maximum(np.arange(SEQ)[None] - sep[:, None] + 1, 0).astype(np.int32)
  return tokens, position_ids, block_ids, sep


def _init_params(model, batch, noise_seed=1):
  """Initial params plus noise, so that LayerNorm and bias bugs show."""
  params = nn.meta.unbox(model.init(jax.random.key(0), *batch)["params"])
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(noise_seed), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(key, x.shape)
                                   for x, key in zip(leaves, keys)])


def _forward(model):
  return jax.jit(lambda params, *batch: model.apply({"params": params}, *batch))


# --- An independent numpy forward (float64), written from GLM's definition (the paper and the
# original code's transformer), not from the Flax code. ---


def _np_layernorm(x, p, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_gelu(x, kind):
  if kind == "gelu_tanh":
    return 0.5 * x * (1 + np.tanh(0.79788456 * (x + 0.044715 * x ** 3)))
  return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _np_rope(x, pos, theta):
  """x [B, T, N, D]: pairs (i, i + D/2) rotate by angle pos * theta^(-2i/D)."""
  half = x.shape[-1] // 2
  angle = pos[..., None, None] * theta ** (-2.0 * np.arange(half) / x.shape[-1])
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * np.cos(angle) - x2 * np.sin(angle),
                         x2 * np.cos(angle) + x1 * np.sin(angle)], axis=-1)


def _np_forward(cfg, params, tokens, pos, block, sep):
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  H, N, L = cfg.hidden_size, cfg.num_heads, cfg.num_layers
  D, T = H // N, tokens.shape[1]
  x = p["word_embeddings"][tokens]
  if cfg.position_encoding == "learned_2d":
    x = x + p["position_embeddings"][pos] + p["block_position_embeddings"][block]
  allowed = np.array([[[j < s or j <= i for j in range(T)] for i in range(T)] for s in sep])
  alpha = math.sqrt(2 * L)
  for i in range(L):
    lp = p[f"layers_{i}"]
    a = _np_layernorm(x, lp["input_layernorm"], cfg.layernorm_eps)
    w = lp["attention"]["qkv_kernel"].reshape(H, 3 * H)  # [Q | K | V] thirds
    qkv = a @ w + lp["attention"]["qkv_bias"].reshape(3 * H)
    q, k, v = (qkv[..., j * H:(j + 1) * H].reshape(*tokens.shape, N, D) for j in range(3))
    if cfg.position_encoding == "rope":
      q, k = _np_rope(q, pos, cfg.rope_theta), _np_rope(k, pos, cfg.rope_theta)
    elif cfg.position_encoding == "rope_2d":
      h = D // 2
      rot = lambda t: np.concatenate([_np_rope(t[..., :h], pos, cfg.rope_theta),
                                      _np_rope(t[..., h:], block, cfg.rope_theta)], -1)
      q, k = rot(q), rot(k)
    scores = np.einsum("bqnd,bknd->bnqk", q, k / np.sqrt(D))
    scores = np.where(allowed[:, None], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = np.einsum("bnqk,bknd->bqnd", probs, v).reshape(*tokens.shape, H)
    attn = context @ lp["attention"]["out_kernel"].reshape(H, H) + lp["attention"]["out_bias"]
    x = (alpha * a if cfg.norm == "deepnorm" else x) + attn
    b = _np_layernorm(x, lp["post_attention_layernorm"], cfg.layernorm_eps)
    mlp = lp["mlp"]
    if cfg.mlp == "geglu":
      ffn = mlp["wi_kernel"].shape[-1]
      h2 = b @ mlp["wi_kernel"].reshape(H, 2 * ffn) + mlp["wi_bias"].reshape(2 * ffn)
      inner = h2[..., :ffn] * _np_gelu(h2[..., ffn:], cfg.activation)
    else:
      inner = _np_gelu(b @ mlp["wi_kernel"] + mlp["wi_bias"], cfg.activation)
    x = (alpha * b if cfg.norm == "deepnorm" else x) + inner @ mlp["wo_kernel"] + mlp["wo_bias"]
  x = _np_layernorm(x, p["final_layernorm"], cfg.layernorm_eps)
  return x @ p["word_embeddings"].T


VARIANTS = [
    dict(position_encoding="learned_2d", norm="pre", mlp="gelu", activation="gelu_tanh"),
    dict(position_encoding="rope_2d", norm="deepnorm", mlp="geglu", activation="gelu_exact"),
    dict(position_encoding="rope", norm="pre", mlp="geglu", activation="gelu_tanh"),
    dict(position_encoding="learned_2d", norm="deepnorm", mlp="gelu", activation="gelu_exact",
         ffn_size=48),
    # A rotary base other than the default (ChatGLM2-style long-context bases differ from 1e4).
    dict(position_encoding="rope_2d", norm="pre", mlp="gelu", activation="gelu_tanh",
         rope_theta=500.0),
    # A LayerNorm epsilon other than the default (the numpy forward reads it too).
    dict(position_encoding="learned_2d", norm="pre", mlp="gelu", activation="gelu_tanh",
         layernorm_eps=1e-2),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_flax_forward_equals_numpy_forward(variant):
  cfg = _config(**variant)
  model, batch = _glm(cfg), _batch()
  params = _init_params(model, batch)
  got = np.asarray(_forward(model)(params, *batch))
  expected = _np_forward(cfg, params, *batch)
  assert got.dtype == np.float32 and got.shape == (BATCH, SEQ, 128)
  relative = np.max(np.abs(got - expected)) / np.max(np.abs(expected))
  assert relative < 1e-5, relative


@pytest.fixture(scope="module")
def base_model():
  model = _glm(_config())
  params = _init_params(model, _batch())
  return model, params, _forward(model)


def test_part_b_never_leaks_into_part_a(base_model):
  _, params, forward = base_model
  tokens, pos, block, sep = _batch(sep=(6, 6))
  before = np.asarray(forward(params, tokens, pos, block, sep))
  changed_at = 10  # a Part B position
  edited = tokens.copy()
  edited[:, changed_at] = (edited[:, changed_at] + 1) % 128
  after = np.asarray(forward(params, edited, pos, block, sep))
  np.testing.assert_array_equal(after[:, :changed_at], before[:, :changed_at])  # A and earlier B
  assert np.all(np.abs(after[:, changed_at:] - before[:, changed_at:]).max(-1) > 0)
  all_of_b = tokens.copy()
  all_of_b[:, 6:] = (all_of_b[:, 6:] + 7) % 128
  np.testing.assert_array_equal(np.asarray(forward(params, all_of_b, pos, block, sep))[:, :6],
                                before[:, :6])


def test_part_a_is_seen_everywhere(base_model):
  _, params, forward = base_model
  tokens, pos, block, sep = _batch(sep=(6, 6))
  before = np.asarray(forward(params, tokens, pos, block, sep))
  edited = tokens.copy()
  edited[:, 4] = (edited[:, 4] + 1) % 128  # last-but-one Part A token
  after = np.asarray(forward(params, edited, pos, block, sep))
  assert np.all(np.abs(after - before).max(-1) > 0)  # every position, before and after it


def test_return_hidden_and_tied_logits(base_model):
  model, params, forward = base_model
  batch = _batch()
  hidden = model.apply({"params": params}, *batch, return_hidden=True)
  assert hidden.shape == (BATCH, SEQ, 32)
  np.testing.assert_allclose(model_lib.tied_logits(params["word_embeddings"], hidden),
                             forward(params, *batch),
                             rtol=1e-6, atol=1e-6)


def test_dropout_only_when_not_deterministic():
  model = _glm(_config(hidden_dropout=0.3, attention_dropout=0.3))
  batch = _batch()
  params = _init_params(model, batch)
  run = jax.jit(lambda rng, det: model.apply({"params": params}, *batch, deterministic=det,
                                             rngs={"dropout": rng}), static_argnums=1)
  clean = run(jax.random.key(0), True)
  np.testing.assert_array_equal(clean, run(jax.random.key(1), True))
  assert float(jnp.max(jnp.abs(run(jax.random.key(0), False) - clean))) > 1e-3
  assert float(jnp.max(jnp.abs(run(jax.random.key(0), False) - run(jax.random.key(1), False)))) > 0


@pytest.mark.parametrize("hidden, attention", [(0.0, 0.3), (0.3, 0.0)])
def test_each_dropout_rate_alone_drops_in_training(hidden, attention):
  # model.attention_dropout works without hidden dropout, and hidden dropout without it: each
  # rate switches on its own dropout (GLM-130B-style recipes set one and not the other).
  model = _glm(_config(hidden_dropout=hidden, attention_dropout=attention))
  batch = _batch()
  params = _init_params(model, batch)
  run = jax.jit(lambda rng, det: model.apply({"params": params}, *batch, deterministic=det,
                                             rngs={"dropout": rng}), static_argnums=1)
  clean = run(jax.random.key(0), True)
  assert float(jnp.max(jnp.abs(run(jax.random.key(0), False) - clean))) > 1e-3


@pytest.mark.parametrize("name, quoted", [("base", 109.3e6), ("large", 334.7e6),
                                          ("glm_2b", 1.920e9), ("glm_10b", 9.881e9)])
def test_param_count_of_shipped_configs(name, quoted):
  cfg = importlib.import_module(f"configs.{name}").get_config().model
  cfg.attention = "xla"  # 'auto' is resolved at start-up, not by the module
  V, H, P, L = cfg.vocab_size, cfg.hidden_size, cfg.max_position, cfg.num_layers
  formula = V * H + 2 * (P + 1) * H + L * (12 * H * H + 13 * H) + 2 * H
  tokens = jnp.zeros((1, 8), jnp.int32)
  shapes = jax.eval_shape(_glm(cfg).init, jax.random.key(0), tokens, tokens, tokens,
                          jnp.array([4]))
  counted = sum(math.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(shapes)))
  assert counted == formula == model_lib.param_count(model_lib.ModelConfig.from_config(cfg))
  assert float(f"{counted:.4g}") == quoted


def test_param_count_of_variants_matches_init():
  for variant in VARIANTS:
    cfg = _config(**variant)
    shapes = jax.eval_shape(_glm(cfg).init, jax.random.key(0), *_batch())
    assert sum(x.size for x in jax.tree.leaves(nn.meta.unbox(shapes))) == \
        model_lib.param_count(model_lib.ModelConfig.from_config(cfg)), variant


def test_the_model_takes_a_model_config_made_from_the_run_s_config_model():
  cfg = _config()
  frozen = model_lib.ModelConfig.from_config(cfg)
  fields = {f.name: cfg[f.name] for f in dataclasses.fields(model_lib.ModelConfig)
            if f.name in cfg}
  assert frozen == model_lib.ModelConfig(**fields) == _glm(cfg).config
  assert hash(model_lib.GLM(frozen).config) == hash(frozen)
  with pytest.raises(TypeError, match=r"GLM takes a ModelConfig.*from_config"):
    model_lib.GLM(cfg)
  with pytest.raises(TypeError, match=r"takes a run's config.model.*got dict"):
    model_lib.ModelConfig.from_config(cfg.to_dict())
  with pytest.raises(ValueError, match="position_encoding"):
    model_lib.ModelConfig.from_config(_config(position_encoding="alibi"))


def test_training_takes_sep_and_decoding_takes_a_cache_mask_and_neither_takes_the_other():
  cfg = model_lib.ModelConfig.from_config(_config())
  tokens, position_ids, block_ids, sep = _batch()
  cache_mask = attention_lib.CacheMask(jnp.ones((BATCH, SEQ), bool), jnp.int32(0))
  with pytest.raises(TypeError, match="this one has decode=False"):
    model_lib.GLM(cfg).init(jax.random.key(0), tokens, position_ids, block_ids, sep,
                            cache_mask=cache_mask)
  with pytest.raises(TypeError, match="this one has decode=True"):
    model_lib.GLM(cfg, decode=True).init(jax.random.key(0), tokens, position_ids, block_ids, sep)
  with pytest.raises(TypeError, match="this one has decode=False"):
    model_lib.GLM(cfg).init(jax.random.key(0), tokens, position_ids, block_ids)
  variables = model_lib.GLM(cfg, decode=True).init(
      jax.random.key(0), tokens, position_ids, block_ids, cache_mask=cache_mask)
  assert variables["cache"]["layers_0"]["attention"]["keys"].shape == (BATCH, SEQ, 4, 8)


@pytest.mark.parametrize("encoding", ["learned_2d", "rope_2d"])
def test_decoding_part_a_once_then_one_token_a_call_gives_the_forward_s_logits(encoding):
  """Generation's cache path, token by token, against the training forward (float32): a cache
  that stores its keys or values rounded, or at the wrong slot, moves the logits."""
  config = _config(position_encoding=encoding, scan_layers=True)
  tokens, position_ids, block_ids, _ = _batch()
  part_a = 6
  sep = np.full((BATCH,), part_a, np.int32)
  params = _init_params(_glm(config), _batch())
  expected = _forward(_glm(config))(params, tokens, position_ids, block_ids, sep)
  decoder = model_lib.GLM(model_lib.ModelConfig.from_config(config), decode=True)
  visible = np.arange(SEQ)[None, :] < part_a + np.zeros((BATCH, 1), np.int32)
  _, variables = decoder.apply(
      {"params": params}, tokens[:, :part_a], position_ids[:, :part_a], block_ids[:, :part_a],
      cache_mask=attention_lib.CacheMask(jnp.asarray(visible), jnp.int32(0)), mutable=["cache"])
  one_token = jax.jit(lambda variables, visible, slot, *inputs: decoder.apply(
      {"params": params, **variables}, *inputs,
      cache_mask=attention_lib.CacheMask(visible, slot), mutable=["cache"]))
  for slot in range(part_a, SEQ):
    visible[:, slot] = True
    logits, variables = one_token(variables, jnp.asarray(visible), jnp.int32(slot),
                                  *(x[:, slot:slot + 1] for x in (tokens, position_ids, block_ids)))
    np.testing.assert_allclose(logits[:, 0], expected[:, slot], rtol=1e-5, atol=1e-5,
                               err_msg=f"slot {slot}")


def test_bfloat16_compute_keeps_float32_params_and_logits():
  batch = _batch()
  params = _init_params(_glm(_config()), batch)
  reference = _forward(_glm(_config()))(params, *batch)
  model = _glm(_config(dtype="bfloat16"))
  logits = _forward(model)(params, *batch)
  hidden = model.apply({"params": params}, *batch, return_hidden=True)
  assert logits.dtype == jnp.float32 and hidden.dtype == jnp.bfloat16
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  relative = float(jnp.max(jnp.abs(logits - reference)) / jnp.max(jnp.abs(reference)))
  assert relative < 5e-2, relative


def _hidden_grads(model, params, batch, rng):
  """Gradients of sum(final hidden states * a fixed random cotangent) in a training forward
  with dropout rng `rng`. The hidden states, not tied logits, so that a word embedding's
  gradient comes only from where its token is looked up."""
  cotangent = jax.random.normal(jax.random.key(7), (*batch[0].shape, model.config.hidden_size))
  loss = lambda p: jnp.sum(model.apply({"params": p}, *batch, deterministic=False,
                                       return_hidden=True, rngs={"dropout": rng}) * cotangent)
  return jax.jit(jax.grad(loss))(params)


def test_a_training_forward_drops_embedding_entries_as_glm_s_embedding_dropout_does():
  # GLM (mpu/transformer.py, GPT2ParallelTransformer) applies embedding_dropout to word +
  # position embeddings before the first layer; here its rate is hidden_dropout. Every token
  # is looked up once, so the gradient reaching an entry of its word embedding is zero exactly
  # where that entry was dropped (the layers' own dropout sits on residual branches and zeroes
  # no input gradient).
  rate = 0.5
  model = _glm(_config(num_layers=1, hidden_dropout=rate))
  _, pos, block, sep = _batch()
  tokens = np.random.default_rng(0).permutation(128)[:BATCH * SEQ].reshape(BATCH, SEQ)
  batch = (tokens.astype(np.int32), pos, block, sep)
  params = _init_params(model, batch)
  rows = np.asarray(_hidden_grads(model, params, batch, jax.random.key(0))["word_embeddings"])
  dropped = rows[tokens] == 0  # [B, T, H]
  assert abs(dropped.mean() - rate) < 0.1, dropped.mean()  # 1024 entries: std 0.016
  # Without dropout no entry's gradient is zero.
  clean = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p}, *batch,
                                                         return_hidden=True))))(params)
  clean = clean["word_embeddings"]
  assert np.all(np.asarray(clean)[tokens] != 0)


def test_each_layer_of_a_scanned_stack_draws_its_own_dropout_masks():
  # One token: the gradient reaching a layer's attention-output bias (mlp-output bias) is zero
  # exactly where that layer's dropout dropped its attention (MLP) branch.
  rate, layers, width = 0.5, 3, 64
  model = _glm(_config(scan_layers=True, num_layers=layers, hidden_size=width,
                       hidden_dropout=rate))
  batch = tuple(np.asarray(x)[:1, :1] for x in _batch()[:3]) + (np.array([1], np.int32),)
  params = _init_params(model, batch)
  grads = _hidden_grads(model, params, batch, jax.random.key(0))["layers"]
  for name, bias in (("attention", grads["attention"]["out_bias"]),
                     ("mlp", grads["mlp"]["wo_bias"])):
    dropped = np.asarray(bias) == 0  # [layers, H]
    assert dropped.shape == (layers, width)
    assert np.all(np.abs(dropped.mean(1) - rate) < 0.25), (name, dropped.mean(1))
    for i in range(layers):
      for j in range(i):
        # Independent masks agree on about half the entries; a shared mask on all of them.
        agree = float(np.mean(dropped[i] == dropped[j]))
        assert agree < 0.8, (name, i, j, agree)


@pytest.mark.parametrize("norm", ["pre", "deepnorm"])
def test_initial_weights_have_glm_s_scaled_stds(norm):
  # GLM (mpu/transformer.py): normal(0, init_std) everywhere, but the output projections
  # (attention dense, mlp dense_4h_to_h) get scaled_init_method: init_std / sqrt(2 L).
  # GLM-130B's DeepNorm initialises the value, MLP-in and output projections with
  # beta = (2 L)^-1/2 times the std, queries and keys unscaled.
  layers, init_std = 3, 0.05
  model = _glm(_config(scan_layers=True, num_layers=layers, hidden_size=64, num_heads=4,
                       norm=norm, init_std=init_std))
  everything = nn.meta.unbox(model.init(jax.random.key(0), *_batch())["params"])
  params = everything["layers"]
  scaled = init_std / math.sqrt(2 * layers)
  deep = norm == "deepnorm"
  qkv = np.asarray(params["attention"]["qkv_kernel"])  # [L, H, 3, N, D]
  expected = {"query": (qkv[:, :, 0], init_std), "key": (qkv[:, :, 1], init_std),
              "value": (qkv[:, :, 2], scaled if deep else init_std),
              "attention output": (params["attention"]["out_kernel"], scaled),
              "mlp input": (params["mlp"]["wi_kernel"], scaled if deep else init_std),
              "mlp output": (params["mlp"]["wo_kernel"], scaled),
              # 8k draws: within 1.6% (1 sigma); 0.05 is not the 0.02 a constant would give.
              "word embeddings": (everything["word_embeddings"], init_std),
              # GLM's two position tables too.
              "position table": (everything["position_embeddings"], init_std),
              "block position table": (everything["block_position_embeddings"], init_std)}
  for name, (kernel, std) in expected.items():
    kernel = np.asarray(kernel, np.float64)
    # The smallest, the position tables' 1088 draws: the mean within 0.03 std and the sample
    # std within 2.1% (1 sigma), so the bounds are 3.3 and 3.8 sigma; the kernels, >= 12k
    # draws, are within 1.3%.
    assert abs(kernel.mean()) < 0.1 * std, name
    np.testing.assert_allclose(kernel.std(), std, rtol=0.08, err_msg=name)


def test_a_bfloat16_layernorm_computes_in_float32_and_rounds_once():
  """Inputs near 50 (a residual stream far from zero) and a scale and bias far from 1 and 0:
  statistics, scale and bias in float32, then one rounding to bfloat16, give the correctly
  rounded float64 result almost everywhere; any of them in bfloat16 misses most of it."""
  from glmjax.model import glm  # pylint: disable=import-outside-toplevel
  cfg = model_lib.ModelConfig(vocab_size=128, hidden_size=256, num_layers=1, num_heads=4,
                              dtype="bfloat16", attention="xla")
  rng = np.random.default_rng(0)
  x = jnp.asarray(50 + rng.standard_normal((64, 256)), jnp.bfloat16)
  scale, bias = 1 + 0.5 * rng.standard_normal(256), 3 + rng.standard_normal(256)
  params = {"params": {"scale": jnp.asarray(scale, jnp.float32),
                       "bias": jnp.asarray(bias, jnp.float32)}}
  out = np.asarray(glm.LayerNorm(cfg).apply(params, x), np.float64)
  x64 = np.asarray(x, np.float64)
  exact = ((x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
           * scale + bias)
  rounded = np.asarray(jnp.asarray(exact, jnp.bfloat16), np.float64)
  assert np.mean(out == rounded) > 0.99  # 0.9999 here; 0.19 with bfloat16 statistics


# Another value for each model field than _config()'s, valid beside its others.
_OTHER_VALUES = {
    "vocab_size": 256, "hidden_size": 64, "num_layers": 3, "num_heads": 8, "ffn_size": 96,
    "max_position": 40, "position_encoding": "rope", "mlp": "geglu", "param_dtype": "bfloat16",
    "scan_layers": True, "rope_theta": 500.0, "norm": "deepnorm", "activation": "gelu_exact",
    "layernorm_eps": 1e-6, "hidden_dropout": 0.2, "attention_dropout": 0.1, "init_std": 0.01,
    "dtype": "bfloat16", "attention": "tokamax", "remat": "full", "save_dropout_masks": True,
    "target_platform": "cpu"}


def test_the_fields_said_to_shape_the_parameters_are_exactly_those_that_do():
  """init_from names, of the fields that differ, those in PARAMETER_FIELDS as the reason another
  run's parameters do not fit: a field missing there goes unnamed, one too many misleads."""
  from glmjax import checkpoint as checkpoint_lib  # pylint: disable=import-outside-toplevel
  from glmjax.model.model_config import PARAMETER_FIELDS  # pylint: disable=import-outside-toplevel

  def layout(**changes):
    model = _glm(_config(**changes))
    return checkpoint_lib.parameter_layout(jax.eval_shape(
        lambda rng: nn.meta.unbox(model.init(rng, *_batch())["params"]), jax.random.key(0)))

  assert set(_OTHER_VALUES) == {f.name for f in dataclasses.fields(model_lib.ModelConfig)}
  base = layout()
  shaping = {field for field, value in _OTHER_VALUES.items() if layout(**{field: value}) != base}
  assert shaping == set(PARAMETER_FIELDS)
