"""A checksum and a non-finite count for every array of a train state, computed on its devices.

Saved with each checkpoint and checked after each restore (checkpoint.py): a restored state
whose arrays differ from what was saved (flipped bytes on disk, a storage fault) or that holds
NaN or Inf is corrupted, and a state holding NaN or Inf is never saved.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp

log = logging.getLogger(__name__)


def _leaf_summary(leaf: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(checksum, non-finite count) of one array, computed where its shards live.

  The checksum hashes every element's bits with its flat index and adds the hashes modulo
  2**32: addition commutes, so the value does not depend on how the array is sharded (a run
  saved on one mesh verifies on another), and any changed element changes it (but for 2**-32).
  """
  if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  nonfinite = (jnp.sum(~jnp.isfinite(leaf)) if jnp.issubdtype(leaf.dtype, jnp.inexact)
               else jnp.zeros((), jnp.int32))
  if leaf.dtype == jnp.bool_:
    bits = leaf.astype(jnp.uint32)
  elif leaf.dtype.itemsize == 8:  # with x64 on: two 32-bit words per element
    bits = jax.lax.bitcast_convert_type(leaf, jnp.uint32)
  else:
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[leaf.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(leaf, unsigned).astype(jnp.uint32)
  index = jnp.arange(bits.size, dtype=jnp.uint32).reshape(bits.shape)
  mixed = bits * jnp.uint32(0x9E3779B1) + index * jnp.uint32(0x85EBCA77) + jnp.uint32(1)
  mixed = (mixed ^ (mixed >> 15)) * jnp.uint32(0x2C1B3C6D)
  mixed = mixed ^ (mixed >> 12)
  return jnp.sum(mixed, dtype=jnp.uint32), nonfinite.astype(jnp.int32)


_summaries = jax.jit(lambda leaves: [_leaf_summary(leaf) for leaf in leaves])
# A copy of every array (new buffers, sharded as the originals) and the copy's summaries.
_copies_and_summaries = jax.jit(lambda leaves: ([jnp.copy(leaf) for leaf in leaves],
                                                [_leaf_summary(leaf) for leaf in leaves]))


def _named_leaves(state: Any) -> tuple[list[str], list[jax.Array]]:
  pairs = jax.tree_util.tree_leaves_with_path(state)
  return ([jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in pairs],
          [leaf for _, leaf in pairs])


def _read(names: list[str], summaries) -> dict[str, tuple[int, int]]:
  summaries = jax.device_get(summaries)
  return {name: (int(pair[0]), int(pair[1])) for name, pair in zip(names, summaries)}


def state_summary(state: Any) -> dict[str, tuple[int, int]]:
  """{'path/to/leaf': (checksum, non-finite count)} for every array of `state`, on device."""
  names, leaves = _named_leaves(state)
  return _read(names, _summaries(leaves)) if leaves else {}


def copy_with_summary(state: Any) -> tuple[Any, Callable[[], dict[str, tuple[int, int]]]]:
  """(a copy of `state` on its devices, a function returning the copy's `state_summary`).

  Both are computed in one dispatch that queues behind the running computations and returns
  at once; the host waits only when it calls the function. The copy has buffers of its own,
  so it survives `state` being donated to the next step.
  """
  names, leaves = _named_leaves(state)
  if not leaves:
    return state, dict
  copies, summaries = _copies_and_summaries(leaves)
  treedef = jax.tree_util.tree_structure(state)
  return jax.tree_util.tree_unflatten(treedef, copies), lambda: _read(names, summaries)


def corruption(restored: Any, checksums: dict | None) -> str | None:
  """Why a restored state is corrupted (non-finite values, a checksum that differs from the one
  saved with it), in one line; None if it is sound. `checksums` None: saved before checksums."""
  problems = []
  summary = state_summary(restored)
  unchecked = sorted(set(summary) - set(checksums)) if checksums is not None else []
  if unchecked:  # names that stopped matching the saved ones would turn the check off unseen
    log.warning("No checksum was saved for %d restored array(s) (%s%s): they are not verified.",
                len(unchecked), ", ".join(unchecked[:3]), ", ..." if len(unchecked) > 3 else "")
  for name, (checksum, nonfinite) in summary.items():
    if nonfinite:
      problems.append(f"{nonfinite} non-finite values in {name}")
    elif checksums is not None and name in checksums and int(checksums[name]) != checksum:
      problems.append(f"the checksum of {name} differs from the one saved")
  if not problems:
    return None
  more = f" (and {len(problems) - 3} more arrays)" if len(problems) > 3 else ""
  return "corrupted: " + "; ".join(problems[:3]) + more
