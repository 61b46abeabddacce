"""Device mesh, logical-axis sharding and global batches.

The mesh has three axes: `data` (pure data parallel), `fsdp` (parameters and batch sharded) and
`tensor` (heads, MLP and vocabulary sharded). The model names its axes logically; the rules in
`config.mesh.rules` map those names to mesh axes, so parallelism is a config change.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from glmjax import error_text

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
# Batch rows are split over every axis that is not model-parallel: the input pipeline builds
# and places rows this way, so mesh.rules' 'activation_batch' must say the same (validated).
BATCH_AXES = ("data", "fsdp")
BATCH_NAME = "activation_batch"


def mesh_axes(entry) -> tuple[str, ...]:
  """The mesh axes a rules-table entry or a PartitionSpec entry names: None, one axis name, or
  several (a tuple, or a list as a JSON config gives it)."""
  if entry is None:
    return ()
  return (entry,) if isinstance(entry, str) else tuple(entry)


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, ...]:
  """Axis sizes with one -1 filled from the device count; errors name the field."""
  sizes = [int(mesh_config[axis]) for axis in MESH_AXES]
  fill = [axis for axis, size in zip(MESH_AXES, sizes) if size == -1]
  if len(fill) > 1:
    raise ValueError(f"mesh: only one axis may be -1, got {', '.join('mesh.' + a for a in fill)}.")
  for axis, size in zip(MESH_AXES, sizes):
    if size == 0 or size < -1:
      raise ValueError(f"mesh.{axis}={size}: use a positive size, or -1 to fill the devices.")
  known = math.prod(size for size in sizes if size != -1)
  if fill:
    if num_devices % known:
      raise ValueError(
          f"mesh: {num_devices} devices cannot be split with the fixed axes "
          f"({' x '.join(f'{a}={s}' for a, s in zip(MESH_AXES, sizes) if s != -1)}); "
          f"make their product divide {num_devices}.")
    sizes[MESH_AXES.index(fill[0])] = num_devices // known
  elif known != num_devices:
    raise ValueError(
        f"mesh: data*fsdp*tensor = {known} but there are {num_devices} devices; "
        "set the sizes to match, or set one axis (for example mesh.data) to -1.")
  return tuple(sizes)


def unsplittable_axis(axes: Mapping[str, tuple[int, str]], mesh_sizes: Mapping[str, int],
                      rules) -> str | None:
  """The line for the first parameter axis (name -> (size, field), ModelConfig.parameter_axes)
  that its mesh axes under `rules` cannot split evenly; None when every one divides."""
  seen = set()
  for name, mapped in rules:
    mapped_axes = mesh_axes(mapped)
    unknown = [axis for axis in mapped_axes if axis not in mesh_sizes]
    if unknown:
      return (f"mesh.rules maps {name!r} to {', '.join(map(repr, unknown))}, which is not a mesh "
              f"axis; use {', '.join(map(repr, MESH_AXES))} or None.")
    if name in seen or name not in axes:  # flax takes a name's first rule; later ones are
      continue                            # fallbacks when its axes are already in use
    seen.add(name)
    parts = math.prod(mesh_sizes[axis] for axis in mapped_axes)
    size, field = axes[name]
    if size % parts:
      split = " x ".join(f"mesh.{axis}={mesh_sizes[axis]}" for axis in mapped_axes)
      return (f"{field} = {size} cannot be split over {split} (the parameters' {name!r} axis, "
              f"mesh.rules): choose mesh sizes that divide it, or a model size they divide.")
  return None


def batch_rule_problem(rules) -> str | None:
  """The line when mesh.rules maps the batch dimension of activations elsewhere than the rows
  of the input batches (BATCH_AXES); every step would then reshard its activations."""
  found = [axes for name, axes in rules if name == BATCH_NAME]
  if not found:
    return (f"mesh.rules has no {BATCH_NAME!r} rule: add ({BATCH_NAME!r}, {BATCH_AXES}), the "
            "axes the batch rows are built and placed over.")
  mapped = mesh_axes(found[0])
  if mapped != BATCH_AXES:
    return (f"mesh.rules maps {BATCH_NAME!r} to {mapped}, but batch rows are built and placed "
            f"over {BATCH_AXES}: keep that rule as {BATCH_AXES} (size the split with mesh.data "
            "and mesh.fsdp).")
  return None


def network_group(device: jax.Device) -> int:
  """The group of devices a fast interconnect joins, whose links to other groups are far
  slower: a TPU slice (ICI inside, data-center network between); on GPUs a host's NVLink (or a
  multi-node NVLink domain), which jax's runtime numbers as `slice_index` too (by the hosts'
  boot ids). The compile-only GPU devices of `glmjax.aot` say slice 0 for every host; they
  describe one process per host."""
  if device.platform == "gpu" and _compile_only(device):
    return device.process_index
  return getattr(device, "slice_index", 0)


def _compile_only(device: jax.Device) -> bool:
  return type(getattr(device, "client", None)).__name__ == "CompileOnlyPyClient"


def slice_count(devices: Sequence[jax.Device]) -> int:
  """Network groups the devices span: TPU slices (multi-slice), or GPU hosts; 1 for one TPU
  slice, one GPU host (or NVLink domain) and CPUs."""
  return len({network_group(device) for device in devices})


def _group_names(devices: Sequence[jax.Device]) -> str:
  return "GPU hosts" if devices[0].platform == "gpu" else "slices"


def _host(device: jax.Device) -> int:
  """The machine a device is on, as far as its links go: a GPU's NVLink group (several
  processes of one host share it), a TPU host's process (one per host)."""
  return network_group(device) if device.platform == "gpu" else device.process_index


class SliceMeshError(ValueError):
  """A mesh that cannot be laid out over several slices (one line naming mesh.data)."""


def _across_slices(shape: tuple[int, ...], devices: list, slices: int) -> np.ndarray:
  """Multi-slice, or several GPU hosts: mesh.data crosses the network groups, whose network
  (DCN, InfiniBand) is far slower than their own links (ICI, NVLink), so only data parallelism's
  gradient all-reduce goes over it; fsdp's gathers and tensor's all-reduces stay inside a group
  (laid out on a TPU slice's torus)."""
  data, groups = shape[0], _group_names(devices)
  if data % slices:
    raise SliceMeshError(
        f"mesh.data={data} on {slices} {groups}: mesh.data is the axis that crosses {groups} "
        f"(the network between them is far slower than their own links); make it a multiple "
        f"of {slices}, for example mesh.data={slices} mesh.fsdp=-1.")
  try:
    return mesh_utils.create_hybrid_device_mesh(
        (data // slices, *shape[1:]), (slices, *[1] * (len(shape) - 1)), devices,
        process_is_granule=devices[0].platform == "gpu" and _compile_only(devices[0]))
  except Exception as error:  # noqa: BLE001 - a per-slice shape with no torus mapping
    # Slice by slice, each in plain host order: the data axis's leading blocks are whole
    # slices, so only it still crosses them (as make_mesh's own fallback inside one slice).
    log.warning("create_hybrid_device_mesh failed (%s); each of the %s in plain device order",
                error_text.first_line(error, None), _group_names(devices))
    ordered = sorted(devices, key=lambda device: (network_group(device), device.process_index))
    return np.asarray(ordered).reshape(shape)


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  return Mesh(device_grid(mesh_config, list(jax.devices() if devices is None else devices)),
              MESH_AXES)


def device_grid(mesh_config, devices: list) -> np.ndarray:
  """The devices laid out as the mesh [data, fsdp, tensor]; says how, and warns when a tensor
  group spans hosts."""
  shape = mesh_shape(mesh_config, len(devices))
  slices = slice_count(devices)
  if slices > 1:
    grid = _across_slices(shape, devices, slices)
    layout = (f"{slices} {_group_names(devices)}: mesh.data={shape[0]} crosses them, "
              f"{shape[0] // slices} each")
  else:
    layout = "jax's topology-aware layout"
    try:
      # Topology-aware ordering keeps tensor-parallel groups on neighbouring chips.
      grid = mesh_utils.create_device_mesh(shape, devices)
    except Exception as error:  # noqa: BLE001 - odd counts and some TPU shapes have no mapping
      # Plain order, host by host (a stable sort: each host's devices keep the order they came
      # in): a tensor group of consecutive devices then stays on one host when mesh.tensor
      # divides a host's devices, whatever order the runtime lists them in. (Splitting physical
      # axes, allow_split_physical_axes, would map more meshes onto the torus, but can spread a
      # tensor group over two hosts, each then building its rows: not taken unmeasured.)
      grid = np.asarray(sorted(devices, key=lambda device: device.process_index)).reshape(shape)
      layout = f"create_device_mesh failed ({error}); using plain device order"
  # Said whichever way the grid was made: the topology-aware one too puts a group of 4 v5e
  # chips on two hosts (its all-reduces then leave the host's links), and each host of a group
  # builds the group's rows.
  spread = max(len({_host(device) for device in group}) for group in grid.reshape(-1, shape[-1]))
  report = (log.warning if spread > 1 and devices[0].platform != "cpu" else
            log.info if slices > 1 else log.debug)
  report("%s%s", layout, f": each mesh.tensor group spans {spread} hosts" if spread > 1 else "")
  return grid


@contextlib.contextmanager
def activate(mesh: Mesh, rules):
  """Mesh and logical-axis rules in scope, for tracing the model's sharding constraints."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def _is_rule(rule) -> bool:
  """A (logical name, mesh axis | axes | None) pair."""
  if not isinstance(rule, (tuple, list)) or len(rule) != 2 or not isinstance(rule[0], str):
    return False
  axes = rule[1]
  return (axes is None or isinstance(axes, str)
          or (isinstance(axes, (tuple, list)) and all(isinstance(a, str) for a in axes)))


def logical_rules(mesh_config) -> tuple[tuple[str, Any], ...]:
  """mesh.rules as a tuple of pairs; ValueError naming the field when it is not one."""
  rules = mesh_config.rules
  bad = ([rules] if not isinstance(rules, (tuple, list))
         else [rule for rule in rules if not _is_rule(rule)])
  if bad:
    raise ValueError(
        f"mesh.rules: {bad[0]!r} is not a tuple of (logical name, mesh axis, axes or None) pairs, "
        "e.g. (('activation_batch', ('data', 'fsdp')), ('embed', 'fsdp'), ('vocab', None))")
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules)


def batch_axis_size(mesh: Mesh) -> int:
  return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Rows split over the data-parallel axes; the other dimensions replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


@dataclasses.dataclass(frozen=True)
class HostRows:
  """The batch rows one process builds, and where each of its devices finds its shard in them.

  On real TPU slices a host's devices need not be adjacent along the batch axes (on a v5p-32
  with the default mesh every host's rows are strided), so `rows` may have gaps. The data
  pipeline builds exactly `rows` (a row is a pure function of its index); `global_batch` hands
  each local device its shard. Made once per run (`host_rows`); it works on devices that are not
  attached (TPU topology devices), so `glmjax.aot` plans every host of a slice with it.
  """
  mesh: Mesh
  global_batch_size: int
  rows: np.ndarray                                # sorted global row indices
  shards: dict[tuple[int, int], np.ndarray]       # a device's (start, stop) -> positions in rows


def _row_range(index: slice, global_batch_size: int) -> tuple[int, int]:
  start, stop, _ = index.indices(global_batch_size)
  return start, stop


def host_rows(mesh: Mesh, global_batch_size: int, process_index: int | None = None) -> HostRows:
  """The rows held by the devices of one process (default: this one)."""
  process = jax.process_index() if process_index is None else process_index
  ranges = {_row_range(index[0], global_batch_size) for device, index in
            batch_sharding(mesh, 1).devices_indices_map((global_batch_size,)).items()
            if device.process_index == process}
  if not ranges:
    raise ValueError(f"Process {process} holds no device of the mesh; every process must.")
  rows = np.unique(np.concatenate([np.arange(start, stop) for start, stop in ranges]))
  shards = {(start, stop): np.searchsorted(rows, np.arange(start, stop))
            for start, stop in ranges}
  return HostRows(mesh, int(global_batch_size), rows, shards)


def global_batch(host_batch: Mapping[str, np.ndarray], layout: HostRows) -> dict[str, jax.Array]:
  """A host batch built for `layout.rows` (in that order) to one global array per key."""
  def to_global(value):
    if len(value) != len(layout.rows):
      raise ValueError(f"The host batch has {len(value)} rows but this process's devices hold "
                       f"{len(layout.rows)} of the {layout.global_batch_size}; build it for "
                       "parallel.host_rows(...).rows.")
    def shard(index):
      return value[layout.shards[_row_range(index[0], layout.global_batch_size)]]
    return jax.make_array_from_callback((layout.global_batch_size, *value.shape[1:]),
                                        batch_sharding(layout.mesh, value.ndim), shard)
  return {key: to_global(value) for key, value in host_batch.items()}


def pipeline_batch(pipeline, index: int, layout: HostRows) -> dict[str, jax.Array]:
  """Batch `index` of `pipeline` (a data.pipeline.BatchPipeline) as global arrays: this host
  builds only the rows its devices hold (`layout.rows`, by their global indices), the training
  batches and the held-out ones alike."""
  return global_batch(pipeline.build_rows(index, layout.rows), layout)


def logical_to_shardings(logical_specs: Any, mesh: Mesh, rules) -> Any:
  """Tree of logical PartitionSpecs to a tree of NamedShardings."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def replicated_fraction(tree: Any) -> float:
  """Fraction of the elements of `tree` (sharded jax.Arrays) stored fully replicated."""
  total = replicated = 0
  for leaf in jax.tree.leaves(tree):
    size = math.prod(leaf.shape)
    total += size
    if leaf.sharding.is_fully_replicated:
      replicated += size
  return replicated / max(total, 1)
