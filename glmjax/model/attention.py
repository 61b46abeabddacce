"""GLM attention: the blank-infilling mask from `sep`, and one function over several backends.

Mask (the original GLM: mpu/transformer.py): query i sees key j iff j < sep or j <= i. Every
backend takes it from O(T) per-example data built on the device:
  key_end[i] = max(i + 1, sep)   (keys [0, key_end) are visible);  qpos[i] = key_end[i] - 1.

Implementations (`glm_attention(..., implementation=...)`):
  xla             dense reference: einsum, masked softmax in float32, einsum. Any platform.
                  The only one with attention-probability dropout.
  cudnn           cuDNN row split (Part A rows from a padding-mask call, Part B rows from a
                  causal call); see gpu_kernels.py. bf16/fp16 only.
  tokamax         Mosaic GPU flash kernel (sm90+) with Mask(k_end); off GPU, tokamax's XLA op;
                  see gpu_kernels.py.
  splash          TPU splash, compact form (in-kernel mask from qpos); see splash.py.
  splash_dynamic  TPU splash with the public per-example dynamic bool mask.
glmjax/attention_choice.py picks one per platform once at start-up ('auto') and checks it
against xla.
Optional dependencies (tokamax, the Pallas TPU ops) are imported only when chosen. Every fused
kernel tags its output and softmax statistics for remat (model_config.ATTENTION_RESIDUALS).
"""
from __future__ import annotations

import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import PartitionSpec

from glmjax.model import dense, gpu_kernels, model_config
from glmjax.model.mask import key_ends

IMPLEMENTATIONS = model_config.ATTENTION_IMPLEMENTATIONS
# The logical axes of q, k, v and the context, [B, T, N, D]: the model constrains them so, and
# the kernels' shard_map splits them so.
HEAD_AXES = ("activation_batch", "activation_length", "activation_heads", "activation_kv")


@flax.struct.dataclass
class AttentionMask:
  """Per-batch mask data, built once outside the layer stack and shared by every layer."""
  sep: jax.Array                # [B] int32
  key_end: jax.Array            # [B, T] int32
  splash_infos: Any = None      # per-example splash MaskInfo (fwd, dq, dkv), splash only


@flax.struct.dataclass
class CacheMask:
  """Decoding with a key/value cache (GLM(..., decode=True)): this call's tokens are written
  at cache slot `slot`, and every query sees exactly the slots marked in `key_visible`. Part A
  is written at once with its own slots visible (bidirectional); each generated token then marks
  its slot before its call (causal in Part B); padding slots stay hidden."""
  key_visible: jax.Array        # [B, S] bool over the cache's S slots
  slot: jax.Array               # int32 scalar


def cached_attention(q, k, v, key_visible: jax.Array, scale: float) -> jax.Array:
  """q [B, T, N, D] over cached k, v [B, S, N, D] where key_visible [B, S]; float32 softmax."""
  return dense.attend(q, k, v, key_visible[:, None, None, :], scale)


def prepare_mask(sep: jax.Array, seq_len: int, implementation: str) -> AttentionMask:
  sep = sep.astype(jnp.int32)
  infos = None
  if implementation in model_config.SPLASH:
    from glmjax.model import splash  # pylint: disable=import-outside-toplevel
    infos = splash.mask_infos(sep, seq_len, compact=implementation == "splash")
  return AttentionMask(sep=sep, key_end=key_ends(sep, seq_len), splash_infos=infos)


# --- Backends: (q, k, v [B, T, N, D], AttentionMask, scale) -> [B, T, N, D]. ---

def xla_attention(q, k, v, mask: AttentionMask, scale: float, dropout_rate: float = 0.0,
                  dropout_rng: jax.Array | None = None) -> jax.Array:
  return dense.dense_attention(q, k, v, mask.key_end, scale, dropout_rate, dropout_rng)


def _splash(q, k, v, mask: AttentionMask, scale: float, *, compact: bool,
            platform: str) -> jax.Array:
  from glmjax.model import splash  # pylint: disable=import-outside-toplevel
  return splash.splash_attention(q, k, v, mask.splash_infos, scale=scale, compact=compact,
                                 interpret=platform != "tpu")


def _kernel(implementation: str, platform: str):
  """The kernel as compiled for `platform` (the target's, which need not be this host's)."""
  if implementation == "cudnn":
    return lambda q, k, v, mask, scale: gpu_kernels.row_split_attention(q, k, v, mask.sep, scale)
  if implementation == "tokamax":
    return lambda q, k, v, mask, scale: gpu_kernels.tokamax_attention(
        q, k, v, mask.key_end, scale, platform=platform)
  if implementation in model_config.SPLASH:
    compact = implementation == "splash"
    return lambda q, k, v, mask, scale: _splash(q, k, v, mask, scale, compact=compact,
                                                platform=platform)
  raise ValueError(f"Unknown attention implementation {implementation!r}; "
                   f"choose one of {IMPLEMENTATIONS}.")


def _mesh_axes_that_divide(axes, size: int, mesh) -> Any:
  names = (axes,) if isinstance(axes, str) else tuple(axes or ())
  names = tuple(name for name in names if name in mesh.shape)
  if not names or size % math.prod(mesh.shape[name] for name in names):
    return None
  return names


def _per_shard(fn, q, k, v, mask: AttentionMask, scale: float) -> jax.Array:
  """Kernels are opaque to GSPMD: run them per (batch, head) shard under shard_map.

  Uses the active mesh (jax.set_mesh) and logical rules; without them, calls fn directly.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return fn(q, k, v, mask, scale)
  batch_axes, _, head_axes, _ = nn.logical_to_mesh_axes(HEAD_AXES)
  batch_axes = _mesh_axes_that_divide(batch_axes, q.shape[0], mesh)
  head_axes = _mesh_axes_that_divide(head_axes, q.shape[2], mesh)
  qkv_spec = PartitionSpec(batch_axes, None, head_axes, None)  # sequence gathered if sharded
  mask_spec = jax.tree.map(lambda _: PartitionSpec(batch_axes), mask)
  sharded = jax.shard_map(lambda q, k, v, mask: fn(q, k, v, mask, scale), mesh=mesh,
                          in_specs=(qkv_spec, qkv_spec, qkv_spec, mask_spec),
                          out_specs=qkv_spec, check_vma=False)
  return sharded(q, k, v, mask)


def glm_attention(q: jax.Array, k: jax.Array, v: jax.Array, sep: jax.Array, *,
                  implementation: str = "xla", **kwargs) -> jax.Array:
  """Attention under the GLM mask of `sep` [B]: q, k, v [B, T, N, D] -> [B, T, N, D].

  Builds the mask, then `masked_attention` (the model builds it once per batch and calls that).
  """
  return masked_attention(q, k, v, prepare_mask(sep, q.shape[1], implementation),
                          implementation=implementation, **kwargs)


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *,
                     implementation: str = "xla", scale: float | None = None,
                     dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None,
                     platform: str | None = None) -> jax.Array:
  """Attention under a prepared GLM mask (`prepare_mask`): q, k, v [B, T, N, D] -> [B, T, N, D]
  in q's dtype.

  `scale` defaults to 1/sqrt(D). Attention dropout (`dropout_rng` given, rate > 0) exists in
  the xla implementation only; asking a fused kernel for it is an error. `platform` is the one
  the program is compiled for (default: this host's backend); off TPU, splash runs in Pallas
  interpret mode.
  """
  platform = platform or jax.default_backend()
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"implementation={implementation!r}: one of {IMPLEMENTATIONS} (resolve "
                     "'auto' once at start-up with attention_choice.resolve_attention).")
  if (implementation not in model_config.WITH_ATTENTION_DROPOUT and dropout_rate > 0.0
      and dropout_rng is not None):
    raise ValueError(f"attention={implementation!r} has no attention dropout (rate "
                     f"{dropout_rate}): use implementation='xla' or dropout_rate=0.")
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  if implementation == "xla":
    return xla_attention(q, k, v, mask, scale, dropout_rate, dropout_rng)
  return _per_shard(_kernel(implementation, platform), q, k, v, mask, scale)
