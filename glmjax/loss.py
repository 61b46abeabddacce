"""Part B cross-entropy that computes logits only where the loss is.

GLM scores only Part B (about a fifth of a blank-infilling row; most of a [gMASK] row), so the
tied vocabulary projection and the float32 log-softmax run only on positions with a nonzero
loss weight. On each device the weighted positions of its rows are packed in order and taken
`chunk` at a time in a loop whose trip count is set by the data (so a batch of long [gMASK]
rows and a batch of short blanks each pay for what they score, never for the whole [B, T, V]).
The gradient is computed in the same pass (the float32 logits of a chunk are needed once, then
dropped), which is why this is a `custom_vjp`: its backward only scales the saved gradients.

Under a mesh the computation is a `shard_map`: rows stay on their data-parallel devices (no
gather crosses devices) and the vocabulary stays split over its tensor axis, with the softmax
statistics, the target logit, the argmax and the hidden-state gradient reduced over that axis.
"""
from __future__ import annotations

import functools
import logging
import math

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import PartitionSpec

from glmjax import parallel

# Positions per loop iteration (train.loss_chunk). Each iteration reads the embeddings twice and
# updates the float32 embedding gradient, about 12·V·H bytes for 6·chunk·V·H FLOPs, so a chunk
# far below ~1024 leaves an accelerator waiting on memory; a device also computes up to
# chunk - 1 positions past its last scored one. `bench --what=sweep` can try others.
DEFAULT_CHUNK = 1024

log = logging.getLogger(__name__)


def part_b_cross_entropy(hidden: jax.Array, embeddings: jax.Array, targets: jax.Array,
                         weights: jax.Array, *, chunk: int = DEFAULT_CHUNK) -> dict:
  """Weighted cross-entropy of the tied logits hidden · embeddingsᵀ, where weights > 0 only.

  hidden [B, T, H] (compute dtype), embeddings [V, H] (cast to hidden's dtype), targets [B, T]
  int, weights [B, T] float. Returns float32 values:
    loss_sum   Σ weights · CE (differentiable in hidden and embeddings)
    row_loss   [B] the same per row;  row_correct [B] Σ weights · (argmax == target)
    logit_positions  positions whose logits were computed (chunk-rounded, all devices)
  Only `loss_sum` carries a gradient, and only to hidden and embeddings (weights get none); the
  other values are metrics (stop_gradient).
  """
  chunk = int(chunk)
  if chunk < 1:
    raise ValueError(f"chunk={chunk}: the loss reads at least one position per iteration.")
  hidden = jnp.asarray(hidden)
  loss_sum, row_loss, row_correct, positions = _loss(
      hidden, jnp.asarray(embeddings, hidden.dtype), jnp.asarray(targets, jnp.int32),
      jnp.asarray(weights, jnp.float32), chunk)
  metrics = jax.lax.stop_gradient((row_loss, row_correct, positions))
  return {"loss_sum": loss_sum, "row_loss": metrics[0], "row_correct": metrics[1],
          "logit_positions": metrics[2]}


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _loss(hidden, embeddings, targets, weights, chunk):
  return _sharded(hidden, embeddings, targets, weights, chunk, with_grads=False)[:4]


def _loss_fwd(hidden, embeddings, targets, weights, chunk):
  *values, d_hidden, d_embeddings = _sharded(hidden, embeddings, targets, weights, chunk,
                                             with_grads=True)
  return tuple(values), (d_hidden, d_embeddings, weights)


def _loss_bwd(chunk, saved, cotangents):
  del chunk
  d_hidden, d_embeddings, weights = saved
  g = cotangents[0]  # only loss_sum is differentiable; the metrics are stop_gradient'ed
  return ((g * d_hidden.astype(jnp.float32)).astype(d_hidden.dtype),
          (g * d_embeddings.astype(jnp.float32)).astype(d_embeddings.dtype),
          None, jnp.zeros_like(weights))


_loss.defvjp(_loss_fwd, _loss_bwd)


def _sharded(hidden, embeddings, targets, weights, chunk, *, with_grads):
  """`_local` per device under the active mesh (rows over the batch axes, vocabulary over its
  tensor axis), or on the whole arrays when no mesh is active."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return _local(hidden, embeddings, targets, weights, chunk, with_grads, (), (), ())
  batch_axes, vocab_axes = (parallel.mesh_axes(spec) for spec in
                            nn.logical_to_mesh_axes(("activation_batch", "activation_vocab")))
  size = lambda axes: math.prod(mesh.shape[a] for a in axes)  # noqa: E731
  if embeddings.shape[0] % size(vocab_axes):
    log.warning("Part B loss: vocab_size=%d does not split over mesh axes %s; every device "
                "computes logits for the whole vocabulary.", embeddings.shape[0], vocab_axes)
    vocab_axes = ()
  # The embedding gradient leaves sharded as the parameter is ('embed' over its FSDP axes):
  # summed over the other batch axes, reduce-scattered over those.
  embed_axes = parallel.mesh_axes(nn.logical_to_mesh_axes(("embed",))[0])
  scatter_axes = tuple(a for a in embed_axes if a in batch_axes)
  if embeddings.shape[1] % size(scatter_axes):
    scatter_axes = ()
  rows = PartitionSpec(batch_axes or None)
  row_major = PartitionSpec(batch_axes or None, None)
  vocab = PartitionSpec(vocab_axes or None, None)
  out_specs = (PartitionSpec(), rows, rows, PartitionSpec())
  if with_grads:
    out_specs += (PartitionSpec(batch_axes or None, None, None),
                  PartitionSpec(vocab_axes or None, scatter_axes or None))
  local = functools.partial(_local, chunk=chunk, with_grads=with_grads, batch_axes=batch_axes,
                            vocab_axes=vocab_axes, scatter_axes=scatter_axes)
  return jax.shard_map(
      lambda h, e, t, w: local(h, e, t, w), mesh=mesh,
      in_specs=(PartitionSpec(batch_axes or None, None, None), vocab, row_major, row_major),
      out_specs=out_specs, check_vma=False)(hidden, embeddings, targets, weights)


def _local(hidden, embeddings, targets, weights, chunk, with_grads, batch_axes, vocab_axes,
           scatter_axes):
  """One device's rows against its slice of the vocabulary (the whole of it without a mesh)."""
  rows, length, width = hidden.shape
  local_vocab = embeddings.shape[0]
  offset = (jax.lax.axis_index(vocab_axes) * local_vocab) if vocab_axes else 0
  over_vocab = (lambda op, x: op(x, vocab_axes)) if vocab_axes else (lambda op, x: x)
  over_rows = (lambda x: jax.lax.psum(x, batch_axes)) if batch_axes else (lambda x: x)

  total = rows * length
  chunk = min(chunk, total)
  flat_hidden = hidden.reshape(total, width)
  flat_targets = targets.reshape(total)
  flat_weights = weights.reshape(total)
  scored = flat_weights != 0
  count = jnp.sum(scored, dtype=jnp.int32)
  num_chunks = (count + chunk - 1) // chunk
  padded = -(-total // chunk) * chunk
  # Scored positions first, in order; the tail repeats position 0 with weight 0.
  order = jnp.nonzero(scored, size=padded, fill_value=0)[0]

  def body(index, carry):
    positions = jax.lax.dynamic_slice(order, (index * chunk,), (chunk,))
    valid = index * chunk + jnp.arange(chunk) < count
    h = flat_hidden[positions]                                     # [c, H]
    t = flat_targets[positions]
    w = jnp.where(valid, flat_weights[positions], 0.0)
    logits = jnp.einsum("ch,vh->cv", h, embeddings, preferred_element_type=jnp.float32)
    local_max = jnp.max(logits, axis=-1)
    top = over_vocab(jax.lax.pmax, local_max)
    local_t = t - offset
    owned = (local_t >= 0) & (local_t < local_vocab)
    picked = jnp.take_along_axis(logits, jnp.clip(local_t, 0, local_vocab - 1)[:, None], 1)[:, 0]
    # One reduction over the vocabulary shards for both: Σ exp(logit - max) and the target logit.
    sum_exp, target_logit = over_vocab(jax.lax.psum, jnp.stack(
        [jnp.sum(jnp.exp(logits - top[:, None]), axis=-1), jnp.where(owned, picked, 0.0)]))
    log_z = top + jnp.log(sum_exp)
    # argmax as jnp.argmax gives it: the first index holding the maximum, across the shards.
    first = jnp.where(local_max == top, jnp.argmax(logits, axis=-1) + offset,
                      jnp.iinfo(jnp.int32).max)
    predicted = over_vocab(jax.lax.pmin, first)
    token_loss = (log_z - target_logit) * w
    token_correct = (predicted == t).astype(jnp.float32) * w
    row_of = positions // length
    row_loss = carry["row_loss"].at[row_of].add(token_loss)
    row_correct = carry["row_correct"].at[row_of].add(token_correct)
    new = dict(carry, row_loss=row_loss, row_correct=row_correct)
    if with_grads:
      # d CE / d logits = softmax - onehot(target), weighted; then through the tied matmul.
      d_logits = jnp.exp(logits - log_z[:, None]) * w[:, None]
      d_logits = d_logits - jax.nn.one_hot(local_t, local_vocab, dtype=jnp.float32) * (
          w * owned)[:, None]
      d_logits = d_logits.astype(hidden.dtype)
      d_h = over_vocab(jax.lax.psum, jnp.einsum("cv,vh->ch", d_logits, embeddings,
                                                preferred_element_type=jnp.float32))
      new["d_hidden"] = carry["d_hidden"].at[positions].add(d_h)
      new["d_embeddings"] = carry["d_embeddings"] + jnp.einsum(
          "cv,ch->vh", d_logits, h, preferred_element_type=jnp.float32)
    return new

  carry = {"row_loss": jnp.zeros(rows, jnp.float32), "row_correct": jnp.zeros(rows, jnp.float32)}
  if with_grads:
    carry["d_hidden"] = jnp.zeros((total, width), jnp.float32)
    carry["d_embeddings"] = jnp.zeros(embeddings.shape, jnp.float32)
  carry = jax.lax.fori_loop(0, num_chunks, body, carry)
  loss_sum = over_rows(jnp.sum(carry["row_loss"]))
  logit_positions = over_rows((num_chunks * chunk).astype(jnp.float32))
  values = (loss_sum, carry["row_loss"], carry["row_correct"], logit_positions)
  if not with_grads:
    return values
  d_hidden = carry["d_hidden"].reshape(rows, length, width).astype(hidden.dtype)
  d_embeddings = carry["d_embeddings"]
  summed_axes = tuple(a for a in batch_axes if a not in scatter_axes)
  if summed_axes:
    d_embeddings = jax.lax.psum(d_embeddings, summed_axes)
  if scatter_axes:
    d_embeddings = jax.lax.psum_scatter(d_embeddings, scatter_axes, scatter_dimension=1,
                                        tiled=True)
  d_embeddings = d_embeddings.astype(embeddings.dtype)
  return (*values, d_hidden, d_embeddings)
