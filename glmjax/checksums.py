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
import numpy as np

log = logging.getLogger(__name__)
# Elements hashed at a time for a host (numpy) array, and for a large array on CPU devices: the
# temporaries stay near 64 MB each (XLA:CPU and numpy hold every element's hash, twice a
# parameter's bytes: 79 GB more for GLM-10B's, were it hashed whole).
HOST_CHUNK = 1 << 24


def _leaf_summary(leaf: jax.Array, chunk: int = 0) -> tuple[jax.Array, jax.Array]:
  """(checksum, non-finite count) of one array, computed where its shards live.

  The checksum hashes every element's bits with its flat index and adds the hashes modulo
  2**32: addition commutes, so the value does not depend on how the array is sharded (a run
  saved on one mesh verifies on another), and any changed element changes it (but for 2**-32).
  chunk > 0 sums `chunk` elements at a time, in a loop: XLA:CPU materialises every element's
  hash and finiteness (8 bytes an element beside the array: a CPU restore of GLM-10B's
  parameters would hold 80 GB more), which a chunk bounds; other backends fuse them away.
  """
  if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  if not 0 < chunk < leaf.size:
    return _part_summary(leaf, 0)
  flat = leaf.reshape(-1)
  whole = flat.size // chunk

  def add(i, sums):
    part = jax.lax.dynamic_slice(flat, (i * chunk,), (chunk,))
    return tuple(a + b for a, b in zip(sums, _part_summary(part, i * chunk)))
  sums = jax.lax.fori_loop(0, whole, add, (jnp.uint32(0), jnp.int32(0)))
  if flat.size % chunk:
    sums = tuple(a + b for a, b in zip(sums, _part_summary(flat[whole * chunk:], whole * chunk)))
  return sums


def _part_summary(part: jax.Array, start) -> tuple[jax.Array, jax.Array]:
  """_leaf_summary's two sums over `part`, whose first element is the array's `start`-th."""
  nonfinite = (jnp.sum(~jnp.isfinite(part), dtype=jnp.int32)
               if jnp.issubdtype(part.dtype, jnp.inexact) else jnp.zeros((), jnp.int32))
  if part.dtype == jnp.bool_:
    bits = part.astype(jnp.uint32)
  elif part.dtype.itemsize == 8:  # with x64 on: two 32-bit words per element
    bits = jax.lax.bitcast_convert_type(part, jnp.uint32)
  else:
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[part.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(part, unsigned).astype(jnp.uint32)
  words = bits.size // part.size if part.size else 1
  first = jnp.asarray(start, jnp.uint32) * jnp.uint32(words)
  index = (first + jnp.arange(bits.size, dtype=jnp.uint32)).reshape(bits.shape)
  mixed = bits * jnp.uint32(0x9E3779B1) + index * jnp.uint32(0x85EBCA77) + jnp.uint32(1)
  mixed = (mixed ^ (mixed >> 15)) * jnp.uint32(0x2C1B3C6D)
  mixed = mixed ^ (mixed >> 12)
  return jnp.sum(mixed, dtype=jnp.uint32), nonfinite


def _host_leaf_summary(leaf: np.ndarray) -> tuple[int, int]:
  """_leaf_summary of a host array (an import's parameters), in numpy, a chunk at a time: the
  same two numbers (the sum commutes), without a device copy or a full-size temporary."""
  flat = leaf.reshape(-1)
  inexact = jnp.issubdtype(flat.dtype, jnp.inexact)
  total, nonfinite = 0, 0
  for start in range(0, flat.size, HOST_CHUNK):
    part = flat[start:start + HOST_CHUNK]
    if inexact:
      nonfinite += int(np.count_nonzero(~np.isfinite(part)))
    unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32}[part.dtype.itemsize]
    bits = part.astype(np.uint32) if part.dtype == np.bool_ else part.view(unsigned).astype(
        np.uint32)
    index = np.arange(start, start + part.size, dtype=np.uint64).astype(np.uint32)
    mixed = bits * np.uint32(0x9E3779B1) + index * np.uint32(0x85EBCA77) + np.uint32(1)
    mixed = (mixed ^ (mixed >> np.uint32(15))) * np.uint32(0x2C1B3C6D)
    mixed ^= mixed >> np.uint32(12)
    total = (total + int(np.sum(mixed, dtype=np.uint32))) % (1 << 32)
  return total, nonfinite


def _on_host(leaf: Any) -> bool:
  return isinstance(leaf, np.ndarray) and leaf.dtype.itemsize in (1, 2, 4)


def _each_summary(leaves: list[jax.Array], chunks: tuple[int, ...]) -> list:
  return [_leaf_summary(leaf, chunk) for leaf, chunk in zip(leaves, chunks)]


def _each_copy_and_summary(leaves: list[jax.Array], chunks: tuple[int, ...]) -> tuple:
  """A copy of every array (new buffers, sharded as the originals) and the copy's summaries."""
  return [jnp.copy(leaf) for leaf in leaves], _each_summary(leaves, chunks)


# One program for the whole state; `chunks` (each leaf's _leaf_summary chunk) is static.
_summaries = jax.jit(_each_summary, static_argnums=1)
_copies_and_summaries = jax.jit(_each_copy_and_summary, static_argnums=1)


def _chunks(leaves: list[Any]) -> tuple[int, ...]:
  """HOST_CHUNK for a large array held by CPU devices (whose XLA would materialise its hashes),
  0 (one fused sum) for the rest."""
  return tuple(HOST_CHUNK if getattr(leaf, "size", 0) > HOST_CHUNK and all(
      device.platform == "cpu" for device in leaf.sharding.device_set) else 0
               for leaf in leaves)


def _named_leaves(state: Any) -> tuple[list[str], list[jax.Array]]:
  pairs = jax.tree_util.tree_leaves_with_path(state)
  return ([jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in pairs],
          [leaf for _, leaf in pairs])


def _read(names: list[str], summaries) -> dict[str, tuple[int, int]]:
  summaries = jax.device_get(summaries)
  return {name: (int(pair[0]), int(pair[1])) for name, pair in zip(names, summaries)}


def state_summary(state: Any) -> dict[str, tuple[int, int]]:
  """{'path/to/leaf': (checksum, non-finite count)} for every array of `state`: on its devices,
  or, for a host (numpy) array, on the host."""
  names, leaves = _named_leaves(state)
  on_device = [i for i, leaf in enumerate(leaves) if not _on_host(leaf)]
  device_leaves = [leaves[i] for i in on_device]
  summary = _read([names[i] for i in on_device],
                  _summaries(device_leaves, _chunks(device_leaves))) if on_device else {}
  summary.update({names[i]: _host_leaf_summary(leaf) for i, leaf in enumerate(leaves)
                  if _on_host(leaf)})
  return {name: summary[name] for name in names}


def copy_with_summary(state: Any) -> tuple[Any, Callable[[], dict[str, tuple[int, int]]]]:
  """(a copy of `state` on its devices, a function returning the copy's `state_summary`).

  Both are computed in one dispatch that queues behind the running computations and returns
  at once; the host waits only when it calls the function. The copy has buffers of its own,
  so it survives `state` being donated to the next step.
  """
  names, leaves = _named_leaves(state)
  if not leaves:
    return state, dict
  copies, summaries = _copies_and_summaries(leaves, _chunks(leaves))
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
