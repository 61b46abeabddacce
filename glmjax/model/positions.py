"""Position encodings as pure jnp functions (usable without Flax).

- learned_2d (original GLM): E_pos[position_ids] + E_block[block_position_ids].
- rope (GLM-130B): rotary embedding over the whole head dim, driven by position_ids only.
- rope_2d (ChatGLM-6B): the first half of each head's dims rotates by position_ids, the second
  half by block_position_ids, each half a rotary embedding of dim head_dim/2.

Rotary convention: "rotate half" pairing (dim i with dim i + rotary_dim/2), frequencies
theta^(-2i/rotary_dim), computed in float32 and cast back to the input dtype.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def learned_2d_embeddings(position_table: jax.Array, block_table: jax.Array,
                          position_ids: jax.Array, block_position_ids: jax.Array) -> jax.Array:
  """[P+1, H] tables and [B, T] ids -> [B, T, H] summed position embeddings."""
  return (jnp.take(position_table, position_ids, axis=0)
          + jnp.take(block_table, block_position_ids, axis=0))


def rope_inverse_frequencies(rotary_dim: int, theta: float) -> jax.Array:
  """[rotary_dim/2] frequencies theta^(-2i/rotary_dim)."""
  exponents = jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim
  return 1.0 / (theta ** exponents)


def rotate_half(x: jax.Array) -> jax.Array:
  first, second = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-second, first], axis=-1)


def apply_rope(x: jax.Array, positions: jax.Array, theta: float = 10000.0) -> jax.Array:
  """Rotates x [B, T, N, D] by positions [B, T] over the whole last dim D."""
  rotary_dim = x.shape[-1]
  angles = positions.astype(jnp.float32)[..., None] * rope_inverse_frequencies(rotary_dim, theta)
  angles = jnp.concatenate([angles, angles], axis=-1)[..., None, :]  # [B, T, 1, D]
  x32 = x.astype(jnp.float32)
  rotated = x32 * jnp.cos(angles) + rotate_half(x32) * jnp.sin(angles)
  return rotated.astype(x.dtype)


def apply_rope_2d(x: jax.Array, position_ids: jax.Array, block_position_ids: jax.Array,
                  theta: float = 10000.0) -> jax.Array:
  """ChatGLM 2-D RoPE: dims [:D/2] rotate by position_ids, dims [D/2:] by block_position_ids."""
  first, second = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([apply_rope(first, position_ids, theta),
                          apply_rope(second, block_position_ids, theta)], axis=-1)


def rotate_queries_and_keys(q: jax.Array, k: jax.Array, encoding: str, position_ids: jax.Array,
                            block_position_ids: jax.Array, theta: float
                            ) -> tuple[jax.Array, jax.Array]:
  """Applies the rotary part of `encoding` to q and k ([B, T, N, D]); learned_2d is a no-op."""
  if encoding == "rope":
    return apply_rope(q, position_ids, theta), apply_rope(k, position_ids, theta)
  if encoding == "rope_2d":
    return (apply_rope_2d(q, position_ids, block_position_ids, theta),
            apply_rope_2d(k, position_ids, block_position_ids, theta))
  if encoding == "learned_2d":
    return q, k
  raise ValueError(f"Unknown position encoding {encoding!r}.")
