"""GLM in Flax linen, every parameter and block-boundary activation named with logical axes.

Parameter tree (scan_layers=True stacks the layers on a leading 'layers' axis under `layers`;
scan_layers=False names them `layers_0`, `layers_1`, ...). Original GLM checkpoint keys:
  word_embeddings [V, H]                         word_embeddings.weight
  position_embeddings, block_position_embeddings transformer.{,block_}position_embeddings.weight
    [P+1, H] (learned_2d only)
  layers/input_layernorm/{scale, bias}           transformer.layers.i.input_layernorm
  layers/attention/qkv_kernel [H, 3, N, D]       attention.query_key_value.weight [3H, H]
    (flattening the last three dims gives GLM's [Q | K | V] thirds; ChatGLM interleaves per head)
  layers/attention/qkv_bias [3, N, D], out_kernel [N, D, H], out_bias [H]   attention.dense
  layers/post_attention_layernorm/{scale, bias}
  layers/mlp/wi_kernel [H, F] (geglu [H, 2, F]), wi_bias, wo_kernel [F, H], wo_bias
  final_layernorm/{scale, bias}
Logits are tied to word_embeddings (no output matrix).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.ad_checkpoint import checkpoint_name

from glmjax.model import attention as attention_lib
from glmjax.model import model_config, positions
from glmjax.model.model_config import ModelConfig

EMBED_AXES = ("activation_batch", "activation_length", "activation_embed")
HEAD_AXES = attention_lib.HEAD_AXES
MLP_AXES = ("activation_batch", "activation_length", "activation_mlp")
LOGIT_AXES = ("activation_batch", "activation_length", "activation_vocab")
# Tags for remat policies (jax.ad_checkpoint.checkpoint_name).
# A fused kernel's output and softmax statistics carry ATTENTION_RESIDUALS; its "context" is
# then not tagged (it is the saved output, transposed), so it is kept once, not twice.
# NORM_STATS: each LayerNorm's row mean and reciprocal deviation, 8 bytes a token, kept by
# minimal and full: recomputed, XLA's backward read the LayerNorm's input twice more and wrote
# a float32 [B, T, H] product for the scale's gradient (docs/performance.md).
NORM_STATS = "norm_stats"
SAVED_BY_MINIMAL = ("qkv_proj", "context", "out_proj", "mlp_in", "mlp_out", NORM_STATS,
                    model_config.ATTENTION_RESIDUALS)
DROPOUT_MASK = "dropout_mask"  # kept by minimal and full where model.save_dropout_masks is set


def _param(module: nn.Module, name: str, init, axes: tuple, shape: tuple, dtype) -> jax.Array:
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def _projection(module: nn.Module, x: jax.Array, spec: str, name: str, shape: tuple, axes: tuple,
                init, tag: str, contract: int = 1) -> jax.Array:
  """x · `{name}_kernel` + `{name}_bias`, in the compute dtype, tagged `tag` for remat.

  The kernel has `shape` (the first `contract` dimensions are x's features), the bias the rest;
  both named with their logical `axes`; `spec` is the einsum.
  """
  cfg = module.config
  kernel = _param(module, f"{name}_kernel", init, axes, shape, cfg.weights_dtype)
  bias = _param(module, f"{name}_bias", nn.initializers.zeros, axes[contract:], shape[contract:],
                cfg.weights_dtype)
  y = add_bias(jnp.einsum(spec, x, kernel.astype(cfg.compute_dtype)), bias)
  return checkpoint_name(y, tag)


@jax.custom_vjp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """y + bias in y's dtype, the bias gradient summed over the tokens in float32. Differentiated
  by jax, that sum is a reduction in the compute dtype: XLA:GPU keeps it in bfloat16 on H100
  (compiled for one, its reducer adds bfloat16), so each partial sum is rounded as it grows.
  Reverse mode only, as any custom_vjp."""
  return y + bias.astype(y.dtype)


def _token_sum(cotangent: jax.Array, feature_dims: int) -> jax.Array:
  """Sum over the leading (token) dimensions, accumulated in float32, as a dot with a vector of
  ones: as a float32 convert and reduce, XLA:GPU ran the GeLU backward a second time for its
  bias, one more pass over [B, T, F] (GLM-2B's compiled step: 397 -> 436 GB moved); as a dot
  it moves what the bfloat16 reduction moved (397 GB)."""
  tokens = tuple(range(cotangent.ndim - feature_dims))
  if jnp.dtype(cotangent.dtype).itemsize >= 4:  # float32 compute: a dot at default precision
    return jnp.sum(cotangent, axis=tokens)      # may take one bfloat16 pass (TPU) or TF32
  ones = jnp.ones(cotangent.shape[:len(tokens)], cotangent.dtype)
  return jax.lax.dot_general(cotangent, ones, ((tokens, tuple(range(len(tokens)))), ((), ())),
                             preferred_element_type=jnp.float32)


def _add_bias_forward(y, bias):
  return add_bias(y, bias), bias


def _add_bias_backward(bias, cotangent):
  return cotangent, _token_sum(cotangent, bias.ndim).astype(bias.dtype)


add_bias.defvjp(_add_bias_forward, _add_bias_backward)


def _normal(std: float):
  def init(key, shape, dtype):
    return (jax.random.normal(key, shape, jnp.float32) * std).astype(dtype)
  return init


def _qkv_normal(qk_std: float, v_std: float):
  """Per-slot std for the [H, 3, N, D] fused kernel (DeepNorm scales V only)."""
  def init(key, shape, dtype):
    stds = jnp.array([qk_std, qk_std, v_std], jnp.float32).reshape(1, 3, 1, 1)
    return (jax.random.normal(key, shape, jnp.float32) * stds).astype(dtype)
  return init


@jax.custom_vjp
def gelu_tanh(x: jax.Array) -> jax.Array:
  """GeLU's tanh approximation (jax.nn.gelu(approximate=True)), whose backward pass computes the
  derivative in one float32 expression of the pre-activation. Differentiated by jax, the
  backward recomputed tanh(...) in one pass over [B, T, F], wrote it out in bfloat16 and formed
  the gradient in a second (XLA would not fuse the two into the bias gradient's reduction);
  this way the compiled GPU step makes one pass (GLM-2B: a layer's backward 5.59 -> 4.84 GiB of
  memory traffic, docs/performance.md). Reverse mode only (jax.grad, vjp): a custom_vjp has no
  forward-mode derivative."""
  return jax.nn.gelu(x, approximate=True)


def _gelu_tanh_forward(x):
  return gelu_tanh(x), x


def _gelu_tanh_backward(x, cotangent):
  c = math.sqrt(2 / math.pi)
  x32 = x.astype(jnp.float32)
  t = jnp.tanh(c * (x32 + 0.044715 * x32 ** 3))
  slope = 0.5 * (1 + t) + 0.5 * x32 * (1 - t * t) * c * (1 + 3 * 0.044715 * x32 * x32)
  return ((cotangent.astype(jnp.float32) * slope).astype(x.dtype),)


gelu_tanh.defvjp(_gelu_tanh_forward, _gelu_tanh_backward)


def _activation(name: str):
  return {"gelu_tanh": gelu_tanh,
          "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False)}[name]


class LayerNorm(nn.Module):
  """LayerNorm with statistics in float32; output in the compute dtype."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, width = self.config, x.shape[-1]
    scale = _param(self, "scale", nn.initializers.ones, ("norm",), (width,), cfg.weights_dtype)
    bias = _param(self, "bias", nn.initializers.zeros, ("norm",), (width,), cfg.weights_dtype)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(variance + cfg.layernorm_eps)
    y = (x32 - checkpoint_name(mean, NORM_STATS)) * checkpoint_name(rstd, NORM_STATS)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(cfg.compute_dtype)


def _output_std(cfg: ModelConfig) -> float:
  """0.02 / sqrt(2L): GLM's scaled init for output projections (also DeepNorm's beta)."""
  return cfg.init_std / math.sqrt(2.0 * cfg.num_layers)


class SelfAttention(nn.Module):
  """decode=True: `mask` is a CacheMask; keys and values go to the 'cache' collection at
  `mask.slot` and the queries attend over every visible cache slot."""
  config: ModelConfig
  implementation: str
  deterministic: bool
  decode: bool = False

  @nn.compact
  def __call__(self, x, mask: attention_lib.AttentionMask | attention_lib.CacheMask, position_ids,
               block_position_ids):
    cfg = self.config
    hidden, heads, head_dim = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    v_std = _output_std(cfg) if cfg.norm == "deepnorm" else cfg.init_std
    qkv = _projection(self, x, "bth,hcnd->btcnd", "qkv", (hidden, 3, heads, head_dim),
                      ("embed", None, "heads", "kv"), _qkv_normal(cfg.init_std, v_std),
                      "qkv_proj")
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q, k = positions.rotate_queries_and_keys(q, k, cfg.position_encoding, position_ids,
                                             block_position_ids, cfg.rope_theta)
    q, k, v = (nn.with_logical_constraint(t, HEAD_AXES) for t in (q, k, v))
    use_dropout = not self.deterministic and cfg.attention_dropout > 0.0
    if self.decode:
      k, v = self._cached(k, v, mask)
      context = attention_lib.cached_attention(q, k, v, mask.key_visible, head_dim ** -0.5)
    else:
      context = attention_lib.masked_attention(
          q, k, v, mask, implementation=self.implementation, scale=head_dim ** -0.5,
          platform=cfg.target_platform or None,
          dropout_rate=cfg.attention_dropout if use_dropout else 0.0,
          dropout_rng=self.make_rng("dropout") if use_dropout else None)
    context = nn.with_logical_constraint(context, HEAD_AXES)
    if self.decode or self.implementation not in model_config.WITH_NAMED_RESIDUALS:
      context = checkpoint_name(context, "context")
    return _projection(self, context, "btnd,ndh->bth", "out", (heads, head_dim, hidden),
                       ("heads", "kv", "embed"), _normal(_output_std(cfg)), "out_proj",
                       contract=2)

  def _cached(self, k, v, mask):
    """Writes this call's keys and values at mask.slot; returns the whole cache [B, S, N, D]."""
    shape = (k.shape[0], mask.key_visible.shape[1], *k.shape[2:])
    keys = self.variable("cache", "keys", jnp.zeros, shape, k.dtype)
    values = self.variable("cache", "values", jnp.zeros, shape, v.dtype)
    start = (0, mask.slot, 0, 0)
    keys.value = nn.with_logical_constraint(
        jax.lax.dynamic_update_slice(keys.value, k, start), HEAD_AXES)
    values.value = nn.with_logical_constraint(
        jax.lax.dynamic_update_slice(values.value, v, start), HEAD_AXES)
    return keys.value, values.value


class Mlp(nn.Module):
  """GeLU MLP (H -> F -> H), or GeGLU: x1 * gelu(x2) with [x1 | x2] = halves of H -> 2F."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    hidden, ffn = cfg.hidden_size, cfg.ffn
    in_std = _output_std(cfg) if cfg.norm == "deepnorm" else cfg.init_std
    geglu = cfg.mlp == "geglu"
    shape, axes = ((hidden, 2, ffn), ("embed", None, "mlp")) if geglu else (
        (hidden, ffn), ("embed", "mlp"))
    pre = _projection(self, x, "bth,h...->bt...", "wi", shape, axes, _normal(in_std), "mlp_in")
    act = _activation(cfg.activation)
    inner = pre[:, :, 0] * act(pre[:, :, 1]) if geglu else act(pre)
    inner = nn.with_logical_constraint(inner, MLP_AXES)
    return _projection(self, inner, "btf,fh->bth", "wo", (ffn, hidden), ("mlp", "embed"),
                       _normal(_output_std(cfg)), "mlp_out")


class Dropout(nn.Module):
  """flax's Dropout with its mask tagged DROPOUT_MASK, so that a remat policy can keep the mask
  (a byte an element) where the backward pass would otherwise draw it again. Each draw is
  threefry's arithmetic on every element; hidden dropout took 4.6% of GLM-2B's step on an H200
  (docs/performance.md). The same draws as flax's: instances are named as flax names its own
  (Dropout_0, Dropout_1: keep the class's name and leave the instances unnamed, as the names
  decide each mask's key), and the mask is drawn the same way from that scope's key."""
  rate: float
  deterministic: bool

  @nn.compact
  def __call__(self, inputs):
    if self.rate == 0.0 or self.deterministic:
      return inputs
    if self.rate == 1.0:  # as flax: no division by a zero keep probability
      return jnp.zeros_like(inputs)
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), p=keep, shape=inputs.shape)
    mask = checkpoint_name(mask, DROPOUT_MASK)
    return jax.lax.select(mask, inputs / keep, jnp.zeros_like(inputs))


class Block(nn.Module):
  """pre: x + Drop(Attn(LN(x))), then x + Drop(MLP(LN(x))).
  deepnorm (GLM-130B): a = LN(x); x = alpha*a + Drop(Attn(a)); b = LN(x); alpha*b + Drop(MLP(b)).
  Returns (x, None) so the same class is a scan body.
  """
  config: ModelConfig
  implementation: str
  deterministic: bool
  decode: bool = False

  @nn.compact
  def __call__(self, x, mask, position_ids, block_position_ids):
    cfg = self.config
    x = nn.with_logical_constraint(x, EMBED_AXES)
    drop_attention = Dropout(cfg.hidden_dropout, deterministic=self.deterministic)
    drop_mlp = Dropout(cfg.hidden_dropout, deterministic=self.deterministic)
    normed = LayerNorm(cfg, name="input_layernorm")(x)
    attention = SelfAttention(cfg, self.implementation, self.deterministic, self.decode,
                              name="attention")
    attended = drop_attention(attention(normed, mask, position_ids, block_position_ids))
    residual = normed * cfg.deepnorm_alpha if cfg.norm == "deepnorm" else x
    x = residual + attended
    normed = LayerNorm(cfg, name="post_attention_layernorm")(x)
    residual = normed * cfg.deepnorm_alpha if cfg.norm == "deepnorm" else x
    x = residual + drop_mlp(Mlp(cfg, name="mlp")(normed))
    return nn.with_logical_constraint(x, EMBED_AXES), None


def _remat_policy(cfg: ModelConfig):
  masks = (DROPOUT_MASK,) if cfg.save_dropout_masks else ()
  # minimal: keep projection and attention outputs and the norms' statistics; recompute the
  # norms' outputs and the activations
  if cfg.remat == "minimal":
    return jax.checkpoint_policies.save_only_these_names(*SAVED_BY_MINIMAL, *masks)
  # full: keep only the block input and the LayerNorms' statistics (and the masks, where asked)
  return jax.checkpoint_policies.save_only_these_names(NORM_STATS, *masks)


def block_class(cfg: ModelConfig):
  """The per-layer module: Block, wrapped in nn.remat by `cfg.remat`."""
  if cfg.remat == "none":
    return Block
  return nn.remat(Block, policy=_remat_policy(cfg), prevent_cse=not cfg.scan_layers)


def tied_logits(embeddings: jax.Array, hidden: jax.Array) -> jax.Array:
  """[B, T, H] final hidden states -> [B, T, V] float32 logits = hidden · E_wordᵀ.

  `embeddings` is the word-embedding matrix [V, H] (params["word_embeddings"]); matmul inputs
  in the hidden states' dtype, float32 accumulation and output.
  """
  logits = jnp.einsum("bth,vh->btv", hidden, embeddings.astype(hidden.dtype),
                      preferred_element_type=jnp.float32)
  return nn.with_logical_constraint(logits, LOGIT_AXES)


def _gathered_over_embed(table: jax.Array, row_axis: str) -> jax.Array:
  """The FSDP all-gather of a lookup table made explicit: without it the gather's backward
  reshards the batch-sharded cotangent onto the table's embed sharding by full replication."""
  return nn.with_logical_constraint(table, (row_axis, None))


class GLM(nn.Module):
  """GLM(model_config)(tokens, position_ids, block_position_ids, sep) -> [B, T, V] float32 logits.

  `config` is a ModelConfig (`ModelConfig.from_config(config.model)` makes one from the run's
  config). `return_hidden=True` returns the final-LayerNorm hidden states [B, T, H]
  in the compute dtype instead (pair with `tied_logits` or a fused loss). Dropout needs
  rngs={'dropout': key} when deterministic=False.

  decode=True (generation): pass `cache_mask=attention.CacheMask(...)` and no `sep`; each call
  writes its tokens' keys and values into the 'cache' collection at `cache_mask.slot` (apply
  with mutable=['cache']; the first call creates the cache, sized by the mask).
  """
  config: ModelConfig
  decode: bool = False

  def __post_init__(self):
    if not isinstance(self.config, ModelConfig):
      raise TypeError(f"GLM takes a ModelConfig, got {type(self.config).__name__}: use "
                      "GLM(ModelConfig.from_config(config.model)).")
    super().__post_init__()

  @nn.compact
  def __call__(self, tokens, position_ids, block_position_ids, sep=None, *,
               cache_mask: attention_lib.CacheMask | None = None, deterministic: bool = True,
               return_hidden: bool = False):
    cfg = self.config
    dtype, weights_dtype = cfg.compute_dtype, cfg.weights_dtype
    implementation = cfg.attention
    if implementation == "auto":  # one place decides: the pick is checked, and agreed by hosts
      raise ValueError("model.attention='auto' is resolved once, at start-up: build the model "
                       "from glmjax.attention_choice.resolved_model_config(config), or name "
                       "an attention implementation.")
    if (cache_mask is None) == self.decode or (sep is None) != self.decode:
      raise TypeError("GLM takes `sep` for training and scoring, and `cache_mask` (no `sep`) "
                      f"with decode=True; this one has decode={self.decode}.")
    word_embeddings = _param(self, "word_embeddings", _normal(cfg.init_std), ("vocab", "embed"),
                             (cfg.vocab_size, cfg.hidden_size), weights_dtype)
    x = jnp.take(_gathered_over_embed(word_embeddings, "vocab"), tokens, axis=0).astype(dtype)
    # Looked up whole across the hidden size, then split: in the backward pass each device then
    # gathers its rows' cotangent and adds it into its own vocabulary rows, instead of adding
    # into every row of the table and moving those (all of them, under jax 0.11's XLA).
    x = nn.with_logical_constraint(x, EMBED_AXES[:2] + (None,))
    if cfg.position_tables:
      table_shape = (cfg.max_position + 1, cfg.hidden_size)
      position_table = _param(self, "position_embeddings", _normal(cfg.init_std),
                              ("position", "embed"), table_shape, weights_dtype)
      block_table = _param(self, "block_position_embeddings", _normal(cfg.init_std),
                           ("position", "embed"), table_shape, weights_dtype)
      x = x + positions.learned_2d_embeddings(
          _gathered_over_embed(position_table, "position"),
          _gathered_over_embed(block_table, "position"), position_ids,
          block_position_ids).astype(dtype)
    x = nn.with_logical_constraint(x, EMBED_AXES)
    x = nn.Dropout(cfg.hidden_dropout, deterministic=deterministic)(x)

    if self.decode:
      mask = cache_mask
    else:
      mask = attention_lib.prepare_mask(sep, tokens.shape[1], implementation)  # once, not per layer
    layer = block_class(cfg)
    layer_inputs = (mask, position_ids, block_position_ids)
    if cfg.scan_layers:
      stack = nn.scan(layer, variable_axes={"params": 0, "cache": 0},
                      split_rngs={"params": True, "dropout": True},
                      in_axes=(nn.broadcast,) * len(layer_inputs), length=cfg.num_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(cfg, implementation, deterministic, self.decode, name="layers")(
          x, *layer_inputs)
    else:
      for index in range(cfg.num_layers):
        x, _ = layer(cfg, implementation, deterministic, self.decode, name=f"layers_{index}")(
            x, *layer_inputs)
    x = LayerNorm(cfg, name="final_layernorm")(x)
    if return_hidden:
      return x
    return tied_logits(word_embeddings, x)
