"""Dense softmax attention in plain jnp: the `xla` implementation, what the off-GPU tokamax
backward differentiates, and decoding over a key/value cache. One definition, so all of them
mask, scale and normalise the same way."""
from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def _scores(q, k):
  """q·kᵀ per head [B, N, T, S], accumulated and returned in float32. Its backward rounds the
  float32 score gradient to q's dtype before the two matmuls, as the fused kernels do: autodiff
  would instead cast q and k up to float32 and run both backward matmuls in float32. Reverse
  mode only, as any custom_vjp: jax.jvp or jacfwd through the attention raise."""
  return jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)


def _scores_forward(q, k):
  return _scores(q, k), (q, k)


def _scores_backward(saved, d_scores):
  q, k = saved
  # A no-op for a float32 model: autodiff's matmuls then, up to the order of the sums.
  d_scores = d_scores.astype(q.dtype)
  d_q = jnp.einsum("bnqk,bknd->bqnd", d_scores, k, preferred_element_type=jnp.float32)
  d_k = jnp.einsum("bnqk,bqnd->bknd", d_scores, q, preferred_element_type=jnp.float32)
  return d_q.astype(q.dtype), d_k.astype(k.dtype)


_scores.defvjp(_scores_forward, _scores_backward)


def attend(q, k, v, allowed: jax.Array, scale: float, dropout_rate: float = 0.0,
           dropout_rng: jax.Array | None = None) -> jax.Array:
  """q [B, T, N, D] over k, v [B, S, N, D] where `allowed` (bool, broadcast to [B, N, T, S])
  -> [B, T, N, D] in q's dtype; the softmax in float32, attention-probability dropout when
  `dropout_rng`."""
  logits = _scores(q, k) * scale
  logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  if dropout_rate > 0.0 and dropout_rng is not None:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  return jnp.einsum("bnqk,bknd->bqnd", probs.astype(v.dtype), v).astype(q.dtype)


def dense_attention(q, k, v, key_end: jax.Array, scale: float, dropout_rate: float = 0.0,
                    dropout_rng: jax.Array | None = None) -> jax.Array:
  """`attend` under a key range: key_end [B, T], query i sees keys [0, key_end[i])."""
  allowed = jnp.arange(k.shape[1])[None, None, None, :] < key_end[:, None, :, None]
  return attend(q, k, v, allowed, scale, dropout_rate, dropout_rng)
