"""GPU attention kernels for the GLM mask, with their backward residuals named for remat.

- cudnn: the row split. Part A rows come from a padding-mask call (length sep), Part B rows
  from a causal call, merged with `where`: exact, and no log-sum-exp merge, so the gradients
  are exact too. jax.nn.dot_product_attention(implementation='cudnn'); bf16/fp16 only.
- tokamax: the Mosaic GPU flash kernel (sm90+) with a key-range mask, Mask(k_end). Off GPU it
  is tokamax's XLA op, which has the same Mask path and returns the same residuals, with a
  backward that recomputes the probabilities as the GPU kernel's does.

Neither kernel tags what its backward pass reads, so under remat='minimal' its forward would
run again in the backward pass. Both are wrapped here so that the output and the softmax
statistics carry `ATTENTION_RESIDUALS`, which that policy keeps (splash tags its own).
q, k and v stay untagged: they are recomputed from the saved QKV projection, which is cheap.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from glmjax.model import dense, model_config

NAME = model_config.ATTENTION_RESIDUALS


def row_split_attention(q, k, v, sep: jax.Array, scale: float, *,
                        implementation: str = "cudnn") -> jax.Array:
  """Part A rows: bidirectional over keys < sep; Part B rows: causal. Exact per row.

  Each call keeps its output and log-sum-exp under the remat name; the merge is recomputed.
  `implementation='xla'` runs the same composition on CPU (tests).
  """
  lengths = jnp.maximum(sep, 1).astype(jnp.int32)  # empty segments are invalid; rows discarded
  padded = keeping_residuals(lambda q, k, v, lengths: jax.nn.dot_product_attention(
      q, k, v, scale=scale, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
      implementation=implementation))
  causal = keeping_residuals(lambda q, k, v, _: jax.nn.dot_product_attention(
      q, k, v, scale=scale, is_causal=True, implementation=implementation))
  in_part_a = jnp.arange(q.shape[1])[None, :, None, None] < sep[:, None, None, None]
  return jnp.where(in_part_a, padded(q, k, v, lengths), causal(q, k, v, lengths))


def keeping_residuals(kernel):
  """`kernel(q, k, v, lengths)` (lengths: integers, no gradient) -> the same function, whose
  output and backward state are tagged. Values and gradients are the kernel's, bit for bit.

  The forward takes the kernel's own vjp and tags its output and the floating leaves of its
  saved state that are not q, k or v themselves (for cuDNN: the log-sum-exp); the backward
  replays that vjp. A value that is both (cuDNN saves its output) is tagged once.
  """
  @jax.custom_vjp
  def attend(q, k, v, lengths):
    return kernel(q, k, v, lengths)

  def forward(q, k, v, lengths):
    out, backward = jax.vjp(lambda q, k, v: kernel(q, k, v, lengths), q, k, v)
    tagged = {}

    def tag(x):
      # Integers (lengths, masks) and empty placeholders are free to recompute; q, k and v
      # come from the saved QKV projection. If a kernel kept anything else of that kind, remat
      # would rerun its forward: tests/test_gpu_kernels.py counts the lowered kernel calls.
      floating = hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)
      if not floating or x.size == 0 or any(x is y for y in (q, k, v)):
        return x
      if id(x) not in tagged:
        tagged[id(x)] = (x, checkpoint_name(x, NAME))  # holding x keeps its id unique
      return tagged[id(x)][1]

    return tag(out), jax.tree.map(tag, backward)

  def backward(saved, cotangent):
    return (*saved(cotangent), None)  # None: lengths (integers) have no cotangent

  attend.defvjp(forward, backward)
  return attend


def _tokamax(platform: str):
  """tokamax's attention module and the forward op for `platform` (the target's, not this
  host's)."""
  # pylint: disable=import-outside-toplevel
  from absl import flags
  from tokamax._src.ops.attention import base  # Mask is not public (tokamax 0.0.12)
  if not flags.FLAGS.is_parsed():  # tokamax reads its flags, parsing sys.argv if no one did:
    flags.FLAGS.mark_as_parsed()   # under pytest or a user's script that argv is not absl's
  if platform == "gpu":
    from tokamax._src.ops.attention import pallas_mosaic_gpu
    return base, pallas_mosaic_gpu.PallasMosaicGpuFlashAttention()  # has its own vjp op
  return base, base.DotProductAttention()


def _recomputed_gradients(q, k, v, key_end, scale, cotangent):
  """Off GPU, tokamax's backward: recompute the probabilities in float32 and differentiate.

  tokamax 0.0.12's own XLA backward op (DotProductAttentionVjp) needs jax.core.DropVar, which
  jax 0.11 removed; this reads only q, k, v and the mask, as the GPU kernel's backward rebuilds
  the probabilities from them (with its saved statistics).
  """
  attend = lambda q, k, v: dense.dense_attention(q, k, v, key_end, scale)
  return jax.vjp(attend, q, k, v)[1](cotangent.astype(q.dtype))


def tokamax_attention(q, k, v, key_end: jax.Array, scale: float, *,
                      platform: str) -> jax.Array:
  """key_end [B, T]: query i sees keys [0, key_end[i]). -> [B, T, N, D] in q's dtype.
  On `platform` 'gpu' the Mosaic GPU kernel, elsewhere tokamax's XLA op.

  The op's forward returns its softmax statistics (`return_residuals=True`); they and the
  output are tagged. On a GPU the backward calls the op's own vjp (its backward kernels) with
  the arguments bound as the op binds them for itself.
  """
  base, op = _tokamax(platform)
  key_range = lambda key_end: base.Mask(k_end=key_end[:, None, :])  # [B, 1 head, T]
  call = lambda q, k, v, key_end, **extra: op(q, k, v, mask=key_range(key_end),
                                               logits_scale=scale, **extra)

  @jax.custom_vjp
  def attend(q, k, v, key_end):
    return call(q, k, v, key_end)

  def forward(q, k, v, key_end):
    out, statistics = call(q, k, v, key_end, return_residuals=True)
    out, statistics = checkpoint_name((out, statistics), NAME)
    return out, (q, k, v, key_end, out, statistics)

  def backward(saved, cotangent):
    q, k, v, key_end, out, statistics = saved
    if platform != "gpu":
      return (*_recomputed_gradients(q, k, v, key_end, scale, cotangent), None)
    bound = op.bind(q, k, v, mask=key_range(key_end), logits_scale=scale)
    kwargs = {name: value for name, value in bound.kwargs.items() if name != "return_residuals"}
    grads = op.vjp(statistics, out, cotangent, *bound.args, **kwargs)
    return grads["q"], grads["k"], grads["v"], None  # None: key_end (integers)

  attend.defvjp(forward, backward)
  return attend(q, k, v, key_end).astype(q.dtype)
