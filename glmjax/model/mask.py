"""The GLM attention mask as pure jnp functions of `sep` (the length of Part A): Part A is
bidirectional, Part B causal and sees all of Part A. Shared by every attention implementation."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def key_ends(sep: jax.Array, seq_len: int) -> jax.Array:
  """[B] -> [B, T]: query i sees keys [0, key_end[i])."""
  return jnp.maximum(jnp.arange(seq_len, dtype=jnp.int32)[None, :] + 1,
                     sep.astype(jnp.int32)[:, None])


def query_positions(sep: jax.Array, seq_len: int) -> jax.Array:
  """[B] -> [B, T]: the GLM mask is causal on these positions (key j visible iff j <= qpos[i])."""
  return key_ends(sep, seq_len) - 1


def glm_mask(sep: jax.Array, seq_len: int) -> jax.Array:
  """[B] -> [B, T, T] bool, allowed[b, i, j] = j < sep[b] or j <= i. Built on the device."""
  return jnp.arange(seq_len)[None, None, :] < key_ends(sep, seq_len)[:, :, None]
