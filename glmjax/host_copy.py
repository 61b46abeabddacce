"""A save's copy of the train state on its way to host memory, without the host waiting for it.

checkpoint.device_snapshot copies the state on its devices; a `Transfer` sends that copy to
pinned host memory (a transfer the runtime queues on its own), all at once or in parts, one
after each step (checkpoint.snapshot_parts), and `arrived` says, without blocking, whether every
array is there. The checkpointer hands the copy to Orbax only then, so Orbax's own transfer to
the host finds the data already there. Where a device has no pinned host memory (or, with
several processes, where `sending_devices` says so) the copy stays on the device and Orbax
transfers it.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding

from glmjax import error_text, parallel

log = logging.getLogger(__name__)

PINNED = "pinned_host"


@functools.lru_cache(maxsize=None)
def _device_has_pinned_memory(device: jax.Device) -> bool:
  try:
    return any(memory.kind == PINNED for memory in device.addressable_memories())
  except Exception:  # noqa: BLE001 - a backend that cannot list its memories has none to use
    return False


def _sendable(leaf: Any) -> bool:
  return (isinstance(leaf, jax.Array)
          and isinstance(leaf.sharding, (NamedSharding, SingleDeviceSharding))
          and not jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
          and all(map(_device_has_pinned_memory, leaf.sharding.device_set)))


def sending_devices(sharding: NamedSharding, process_count: int):
  """The devices that send an array of `sharding` to the host, as an array shaped like its
  mesh: index 0 along every mesh axis the array is replicated over, so that each element goes
  once (Orbax also writes one replica of each), and a data-parallel state costs one state's
  transfer and host memory, not one per replica. None where, with several processes, those
  devices would leave a process holding none of the array: Orbax's save fails on a process
  with no shard, and refuses an array that one process holds alone; such an array stays on the
  devices for Orbax to transfer."""
  used = {name for entry in sharding.spec for name in parallel.mesh_axes(entry)}
  mesh = sharding.mesh
  senders = mesh.devices[tuple(slice(None) if name in used else slice(0, 1)
                               for name in mesh.axis_names)]
  if process_count > 1 and len({device.process_index for device in senders.flat}) < process_count:
    return None
  return senders


def _in_host_memory(leaf: jax.Array) -> jax.Array:
  """`leaf` on its way to pinned host memory (one replica of each shard), or `leaf` itself
  where `sending_devices` finds no devices that may send it."""
  sharding = leaf.sharding
  if isinstance(sharding, SingleDeviceSharding):
    return jax.device_put(leaf, sharding.with_memory_kind(PINNED))
  senders = sending_devices(sharding, jax.process_count())
  if senders is None:
    return leaf
  target = NamedSharding(Mesh(senders, sharding.mesh.axis_names), sharding.spec,
                         memory_kind=PINNED)
  on_device = {shard.device: shard.data for shard in leaf.addressable_shards}
  devices = list(target.addressable_devices_indices_map(leaf.shape))
  pieces = jax.device_put([on_device[device] for device in devices],
                          [SingleDeviceSharding(device, memory_kind=PINNED)
                           for device in devices])
  return jax.make_array_from_single_device_arrays(leaf.shape, target, pieces, dtype=leaf.dtype)


def start(tree: Any) -> Any | None:
  """`tree` with its arrays on their way to pinned host memory; returns at once (the transfers
  complete later). Arrays that cannot go (PRNG keys, no pinned host memory, a sharding other than
  a mesh's or one device's) stay where they are, for Orbax to transfer. None, with the reason
  logged, where the sending fails at once (pinned host memory can run out)."""
  try:
    return jax.tree.map(lambda leaf: _in_host_memory(leaf) if _sendable(leaf) else leaf, tree)
  except Exception as error:  # noqa: BLE001 - `landed` then hands over the device copy
    log.warning("Could not send the checkpoint's copy to host memory (%s); it goes to Orbax "
                "from the devices.", error_text.typed_line(error, 200))
    return None


def split_by_bytes(sizes: list[int], parts: int) -> list[list[int]]:
  """The indices of `sizes` in order, cut into at most `parts` runs whose largest holds as few
  bytes as it can: what the step that carries the largest part adds is then the least the
  arrays allow (one is never cut, so no run is smaller than the largest array in it)."""
  def runs_under(cap: int) -> list[list[int]]:
    runs, current, held = [], [], 0
    for index, size in enumerate(sizes):
      if current and held + size > cap:
        runs.append(current)
        current, held = [], 0
      current.append(index)
      held += size
    return runs + [current] if current else runs

  low, high = max(sizes, default=0), sum(sizes)
  while low < high:  # the smallest cap that needs no more than `parts` runs
    middle = (low + high) // 2
    low, high = (low, middle) if len(runs_under(middle)) <= parts else (middle + 1, high)
  return runs_under(low)


class Transfer:
  """A device copy on its way to pinned host memory in parts, one part per `send()`. Where the
  runtime runs transfers between steps rather than beside them (an H200's did:
  docs/performance.md), a part sent after each step spreads a save's transfer over the steps
  instead of adding all of it to one. The parts are cut by the arrays' global bytes, so that
  every process makes the same parts and hands its copy to Orbax at the same call."""

  def __init__(self, copy: Any, parts: int = 1):
    self.copy = copy
    self._leaves, self._treedef = jax.tree.flatten(copy)
    self._parts = split_by_bytes([key_free(leaf).nbytes for leaf in self._leaves], parts)
    self._sent = 0
    self.failed = False  # a part could not be sent: the device copy goes to Orbax

  @property
  def all_sent(self) -> bool:
    """Every part's turn has come: a failed part still counts its calls, so that a process
    whose sending failed reaches Orbax at the same call as the others."""
    return self._sent == len(self._parts)

  def send(self) -> None:
    """Sends the next part, if one is left (after a failure, only counts it); returns at once."""
    if self.all_sent:
      return
    indices = self._parts[self._sent]
    self._sent += 1
    sent = None if self.failed else start([self._leaves[index] for index in indices])
    if sent is None:
      self.failed = True
      return
    for index, leaf in zip(indices, sent):
      self._leaves[index] = leaf

  def arrived(self) -> bool:
    """Every part sent and complete in host memory (or sending failed); never blocks."""
    return self.all_sent and (self.failed or arrived(self._leaves))

  def on_host(self) -> Any | None:
    """The copy with its sent arrays in host memory, for `landed`; None where sending failed."""
    return None if self.failed else jax.tree.unflatten(self._treedef, self._leaves)


def landed(copy: Any, on_host: Any | None) -> Any:
  """What a save hands to Orbax: `on_host` (from `start(copy)`) once its transfers completed,
  or the device `copy` where sending failed, now or while under way (pinned host memory can run
  out): that save then goes as Orbax sends it. With several processes all make the same
  choice, as all must hand Orbax arrays of one layout: one small collective, which waits for
  the step already queued on the devices."""
  ok = on_host is not None
  if ok:
    try:
      jax.block_until_ready(on_host)
    except Exception as error:  # noqa: BLE001 - the device copy is still there to save
      log.warning("The checkpoint's copy did not reach host memory (%s); it goes to Orbax "
                  "from the devices.", error_text.typed_line(error, 200))
      ok = False
  if jax.process_count() > 1:
    ok = bool(np.min(multihost_utils.process_allgather(np.int32(ok))))
  return on_host if ok else copy


def key_free(leaf: jax.Array) -> jax.Array:
  """The array whose readiness and bytes are a leaf's: a PRNG key array's raw data (it has no
  is_ready or numpy value of its own); other arrays as they are."""
  return jax.random.key_data(leaf) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf


def arrived(tree: Any) -> bool:
  """True when every array of `tree` is complete where it lives, or when asking fails (a
  transfer that failed: `landed` then finds out and decides); never blocks."""
  try:
    return all(key_free(leaf).is_ready() for leaf in jax.tree.leaves(tree))
  except Exception:  # noqa: BLE001 - settled by `landed`, which falls back to the device copy
    return True


def nbytes(tree: Any) -> int:
  """Bytes of `tree`'s shards held by this process (what its host receives)."""
  return sum(shard.data.nbytes for leaf in jax.tree.leaves(tree)
             for shard in key_free(leaf).addressable_shards)
