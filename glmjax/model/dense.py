"""Dense attention under a key range, in plain jnp: the `xla` implementation, and what the
off-GPU tokamax backward differentiates. One definition, so both read the mask the same way."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def dense_attention(q, k, v, key_end: jax.Array, scale: float, dropout_rate: float = 0.0,
                    dropout_rng: jax.Array | None = None) -> jax.Array:
  """q, k, v [B, T, N, D], key_end [B, T] (query i sees keys [0, key_end[i])) -> [B, T, N, D]
  in q's dtype; the softmax in float32, attention-probability dropout when `dropout_rng`."""
  logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32) * scale
  allowed = jnp.arange(k.shape[1])[None, None, None, :] < key_end[:, None, :, None]
  logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  if dropout_rate > 0.0 and dropout_rng is not None:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  return jnp.einsum("bnqk,bknd->bqnd", probs.astype(v.dtype), v).astype(q.dtype)
