"""Cloud TPU slices by name: chips, hosts, HBM, and their devices without the hardware.

`parse_slice('v5p-128')` (or `'v5litepod-16'`, `'v5e-16'`, `'v6e-64'`, `'v4-32'`, and the
explicit `'v5p:4x4x4'` form; `'2xv5e-16'` for two such slices joined over the data-center network,
multi-slice) describes a slice; `slice_devices(spec)` asks libtpu for its devices
(each with its `process_index`, as on the real slice) so that a program can be compiled for it on
a CPU machine and its host input layout planned. Facts follow the Cloud TPU documentation:
v4 and v5p names count TensorCores (two per chip, one jax device per chip in megacore mode),
v5e and v6e names count chips; multi-host slices have 4 chips per host, single-host v5e/v6e
machines up to 8.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import re
import threading

from glmjax import error_text

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Generation:
  name: str                     # v4, v5p, v5e, v6e
  aliases: tuple[str, ...]      # name prefixes accepted (the first is gcloud's accelerator type)
  dims: int                     # 3-D torus (v4, v5p) or 2-D (v5e, v6e)
  cores_per_chip_in_name: int   # v4-32 and v5p-32 count cores: 16 chips
  megacore: bool                # one jax device per chip spanning both cores
  hbm_bytes: int                # per chip, usable by a program (as libtpu's compiler counts it;
                                # the smaller figure where releases differ)
  single_host_chips: int        # the largest slice served by one host


GENERATIONS = (
    Generation("v4", ("v4",), 3, 2, True, int(30.75 * GIB), 4),           # 32 GiB chip
    Generation("v5p", ("v5p",), 3, 2, True, int(95.73 * GIB), 4),         # 95 GiB chip
    Generation("v5e", ("v5litepod", "v5e"), 2, 1, False, int(15.75 * GIB), 8),  # 16 GiB chip
    Generation("v6e", ("v6e",), 2, 1, False, int(31.24 * GIB), 8),       # 32 GiB chip
)

# Standard slice shapes by chip count (the shapes Cloud TPU provisions for `-N` names).
SHAPES_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4),
             128: (4, 4, 8), 192: (4, 4, 12), 256: (4, 8, 8), 384: (4, 8, 12), 512: (8, 8, 8),
             768: (8, 8, 12), 1024: (8, 8, 16), 2048: (8, 16, 16), 4096: (16, 16, 16)}
SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8),
             128: (8, 16), 256: (16, 16)}


class TopologyError(ValueError):
  """An unknown or impossible slice name; the message lists what is accepted."""


@dataclasses.dataclass(frozen=True)
class TpuSlice:
  name: str                     # as the user wrote it
  generation: Generation
  shape: tuple[int, ...]        # chips along each torus axis of one slice
  slices: int = 1               # slices joined over the data-center network (multi-slice)
  platform = "tpu"

  @property
  def hbm_bytes(self) -> int:
    return self.generation.hbm_bytes

  @property
  def slice_chips(self) -> int:
    return math.prod(self.shape)

  @property
  def chips(self) -> int:
    return self.slice_chips * self.slices

  @property
  def chips_per_host_bounds(self) -> tuple[int, int, int]:
    if self.slice_chips <= self.generation.single_host_chips:
      return (*self.shape, 1, 1)[:3]
    return (2, 2, 1)

  @property
  def hosts(self) -> int:
    return self.chips // math.prod(self.chips_per_host_bounds)

  @property
  def wrap(self) -> tuple[bool, bool, bool]:
    """Wraparound links: full 4x4x4 cubes and larger (3-D); axes of 16 chips (2-D)."""
    if self.generation.dims == 3:
      return (all(size % 4 == 0 for size in self.shape) and self.slice_chips >= 64,) * 3
    return tuple(size == 16 for size in self.shape) + (False,)

  @property
  def topology_name(self) -> str:
    return f"{self.generation.name}:{'x'.join(map(str, self.shape))}"

  @property
  def accelerator_type(self) -> str:
    """The Cloud TPU accelerator type (`gcloud ... --accelerator-type`) of one slice."""
    prefix = self.generation.aliases[0]
    return f"{prefix}-{self.slice_chips * self.generation.cores_per_chip_in_name}"


def _generation(prefix: str) -> Generation | None:
  for generation in GENERATIONS:
    if prefix in generation.aliases:
      return generation
  return None


def _accepted() -> str:
  return ("use a Cloud TPU accelerator type such as v4-32, v5p-128, v5litepod-16 (or v5e-16) "
          "or v6e-64, or a generation and torus shape such as v5p:4x4x4 or v6e:8x8; 2xv5e-16 "
          "is two slices (multi-slice)")


def parse_slice(name: str) -> TpuSlice:
  """'v5p-128' | 'v5litepod-16' | 'v5e-16' | 'v6e-64' | 'v4-32' | 'v5p:4x4x4' -> TpuSlice;
  'Nx' before any of them: N such slices (multi-slice)."""
  text = name.strip().lower()
  several = re.fullmatch(r"(\d+)x(.+)", text)
  if several:
    slices = int(several.group(1))
    if slices < 1:
      raise TopologyError(f"--topology={name!r}: give at least 1 slice, as in 2xv5e-16.")
    try:
      one = parse_slice(several.group(2))
    except TopologyError as error:  # named as the user wrote it, count included
      raise TopologyError(str(error).replace(f"--topology={several.group(2)!r}",
                                             f"--topology={name!r}", 1)) from None
    if one.slices > 1:
      raise TopologyError(f"--topology={name!r}: give the slice count once, as in 2xv5e-16.")
    return dataclasses.replace(one, name=name, slices=slices)
  named = re.fullmatch(r"([a-z0-9]+)-(\d+)", text)
  shaped = re.fullmatch(r"([a-z0-9]+):(\d+(?:x\d+)*)", text)
  match = named or shaped
  generation = _generation(match.group(1)) if match else None
  if generation is None:
    raise TopologyError(f"--topology={name!r} is not a TPU slice name; {_accepted()}.")
  if shaped:
    shape = tuple(int(size) for size in shaped.group(2).split("x"))
    if len(shape) != generation.dims or min(shape) < 1:
      raise TopologyError(f"--topology={name!r}: {generation.name} slices have "
                          f"{generation.dims} torus axes, for example "
                          f"{generation.name}:{'x'.join(['2'] * generation.dims)}.")
    spec = TpuSlice(name, generation, shape)
    bounds = spec.chips_per_host_bounds
    if any(size % bound for size, bound in zip((*shape, 1, 1)[:3], bounds)):
      raise TopologyError(f"--topology={name!r}: a {generation.name} slice of {spec.chips} chips "
                          f"is served by hosts of {'x'.join(map(str, bounds[:generation.dims]))} "
                          "chips, so every torus axis must be a multiple of that.")
    return spec
  count = int(named.group(2))
  chips, remainder = divmod(count, generation.cores_per_chip_in_name)
  shapes = SHAPES_3D if generation.dims == 3 else SHAPES_2D
  if remainder or chips not in shapes:
    sizes = ", ".join(f"{generation.name}-{c * generation.cores_per_chip_in_name}"
                      for c in sorted(shapes))
    raise TopologyError(f"--topology={name!r}: no standard {generation.name} slice of that size "
                        f"(standard: {sizes}); give the torus shape instead, for example "
                        f"{generation.name}:{'x'.join(['4'] * generation.dims)}.")
  return TpuSlice(name, generation, shapes[chips])


def slice_devices(spec: TpuSlice) -> list:
  """The slice's jax devices (compile-only: they carry ids, coordinates and process_index)."""
  # A description touches no chip, so it need not hold libtpu's one-process lock (which would
  # stop a second compile-only process, or a test's subprocess, from loading libtpu).
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  try:
    from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
    with _quiet_libtpu_start(spec):
      description = topologies.get_topology_desc(
          topology_name=spec.topology_name, platform="tpu",
          chip_config_name="megacore" if spec.generation.megacore else "default",
          chips_per_host_bounds=spec.chips_per_host_bounds, num_slices=spec.slices,
          wrap=spec.wrap)
  except Exception as error:  # noqa: BLE001 - libtpu missing or refusing the slice
    import jax  # pylint: disable=import-outside-toplevel
    first_line = error_text.first_line(error, None)
    missing = isinstance(error, ImportError) or "TPU support not installed" in first_line
    hint = (f" Compiling for TPU on this machine needs libtpu: pip install "
            f"'jax[tpu]=={jax.__version__}'." if missing else "")
    raise TopologyError(f"libtpu cannot describe {spec.name} ({spec.topology_name}): "
                        f"{first_line}.{hint}") from None
  devices = list(description.devices)
  if len(devices) != spec.chips:
    raise TopologyError(f"libtpu describes {len(devices)} devices for {spec.name}, expected "
                        f"{spec.chips} chips.")
  return devices


@contextlib.contextmanager
def _quiet_libtpu_start(spec: TpuSlice):
  """Off a TPU VM, libtpu starts by looking for the VM's accelerator type and worker hostnames
  and prints six lines (an `E0000 ... INVALID_ARGUMENT` among them) when it finds none, though
  a description needs neither (the call gives the slice). Where no TPU backend can start in
  this process (jax_platforms is cpu, as aot sets it), the slice's own values are given for
  that start, and taken back after it, so no later process or jax cluster probe inherits them.
  libtpu reads them at its first start in a process only, so later descriptions change no
  variable: setenv while libtpu's threads read the environment is a race that can crash (the
  first description's removal, once a process, is the window left)."""
  import jax  # pylint: disable=import-outside-toplevel
  started = _libtpu_started()
  values = {"TPU_ACCELERATOR_TYPE": spec.accelerator_type, "TPU_WORKER_HOSTNAMES": "localhost"}
  added = ([] if jax.config.jax_platforms != "cpu" or started.is_set()
           else [name for name in values if name not in os.environ])
  os.environ.update({name: values[name] for name in added})
  try:
    yield
    started.set()
  finally:
    for name in added:
      os.environ.pop(name, None)


@functools.cache
def _libtpu_started() -> threading.Event:
  """Set once a description has started libtpu in this process."""
  return threading.Event()
