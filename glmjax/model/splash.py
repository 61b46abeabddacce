"""TPU splash attention (jax.experimental.pallas.ops.tpu.splash_attention) for the GLM mask.

Two forms, both exact:
- dynamic ('splash_dynamic'): the per-example bool mask [1, T, T] goes through splash's public
  dynamic-mask processing; the kernel skips empty blocks but stores every mask block.
- compact ('splash'): the same block metadata, with the stored mask blocks dropped; partial blocks
  instead compute the mask in-kernel as causal on modified query positions
  qpos[i] = max(i, sep-1) (key j visible iff j <= qpos[i] iff j < sep or j <= i). This uses
  splash's private MaskInfo layout (unchanged jax 0.10 -> 0.12).

The metadata is built once per batch (`mask_infos`, outside the layer scan) and the kernel is
vmapped over the batch. The caller says whether to emit Mosaic or run the Pallas interpreter
(slow; for tests on CPU) from the platform the program is compiled for.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel_lib
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask_info as info_lib

from glmjax.model import mask as mask_lib
from glmjax.model import model_config

# The in-kernel mask needs key blocks of a multiple of 128 lanes (model_config.KERNELS).
BLOCK_CHOICES = (512, 256, 128)


def _causal_on_query_positions(query_positions, key_positions):
  """Static (hashable, module-level) mask function of the compact form."""
  return query_positions >= key_positions


def block_size(seq_len: int) -> int:
  for block in BLOCK_CHOICES:
    if seq_len % block == 0:
      return block
  raise NotImplementedError(f"splash attention needs seq_len divisible by 128, got {seq_len}.")


def mask_infos(sep: jax.Array, seq_len: int, *, compact: bool):
  """Per-example (fwd, dq, dkv) MaskInfo with a leading batch dim; build once per batch."""
  block = block_size(seq_len)

  def one(example_sep):
    dense = mask_lib.glm_mask(example_sep[None], seq_len)  # [1, T, T]: shared by every head
    fwd, _ = info_lib.process_dynamic_mask(dense, (block, block))
    dkv, _ = info_lib.process_dynamic_mask_dkv(dense, (block, block))
    if compact:
      positions = mask_lib.query_positions(example_sep[None], seq_len)[0]
      strip = lambda info: info._replace(mask_next=None, partial_mask_blocks=None,
                                         q_sequence=positions, is_dynamic_mask=None)
    else:
      strip = lambda info: info._replace(is_dynamic_mask=None)  # a Python flag, not a leaf
    # dq uses the same blocks as fwd, so its metadata is identical.
    return strip(fwd), strip(fwd), strip(dkv)

  return jax.vmap(one)(sep.astype(jnp.int32))


def _block_sizes(block: int) -> kernel_lib.BlockSizes:
  return kernel_lib.BlockSizes(
      block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
      block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, infos, *, scale: float,
                     compact: bool, interpret: bool) -> jax.Array:
  """q, k, v [B, T, N, D] and per-example `mask_infos` -> [B, T, N, D].

  `interpret=False` emits the Mosaic TPU kernel (a TPU target, even when compiled on a CPU
  host); `interpret=True` runs the same kernel in the Pallas interpreter (tests on CPU).
  """
  seq_len = q.shape[1]
  block_sizes = _block_sizes(block_size(seq_len))

  def one_example(example_infos, q, k, v):
    fwd, dq, dkv = (info._replace(is_dynamic_mask=not compact) for info in example_infos)
    kernel = kernel_lib.SplashAttentionKernel(
        fwd, dq, dkv, block_sizes=block_sizes, is_mqa=False, save_residuals=False,
        mask_value=kernel_lib.DEFAULT_MASK_VALUE, attn_logits_soft_cap=None,
        residual_checkpoint_name=model_config.ATTENTION_RESIDUALS,
        mask_function=_causal_on_query_positions if compact else None, interpret=interpret)
    return kernel(q, k, v)

  heads_first = lambda x: x.transpose(0, 2, 1, 3)  # splash takes [N, T, D] per example
  scaled_q = q * jnp.asarray(scale, q.dtype)  # splash has no scale argument
  out = jax.vmap(one_example)(infos, heads_first(scaled_q), heads_first(k), heads_first(v))
  return heads_first(out)
