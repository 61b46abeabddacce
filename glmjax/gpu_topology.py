"""NVIDIA GPU machines by name, and their devices without the GPUs.

`parse_gpus('h100-8')` (or `'h100'`, `'h200-16'`, and the explicit `'h100:2x8'`, hosts x GPUs
per host) describes a set of GPU hosts; `gpu_devices(spec)` asks jax's CUDA plugin for their
devices, compile-only, each with its `process_index`, so that `python -m glmjax.aot` compiles
the real program for them on any machine (XLA's deviceless GPU compile: the plugin reads a
description of the GPU instead of querying one). That needs the plugin, not the GPU, nor CUDA's
libraries: `pip install 'jax[cuda12-local]==<this jax version>'`.

Facts are NVIDIA's public figures for the SXM parts; `device_memory_bytes` is the H100's total as
CUDA reports it (80,995 MiB) and the H200's as nvidia-smi lists it (143,771 MiB; CUDA's own figure,
not recorded yet, is likely about 0.5 GiB less, as the H100's is against nvidia-smi's). jax's GPU
client lets a process use a fraction of it, XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.75), which
`usable_bytes` applies.
"""
from __future__ import annotations

import dataclasses
import os
import re

from glmjax import error_text

GPUS_PER_HOST = 8  # an HGX board
MAX_HOSTS = 1024  # far past any cluster a compile here describes; stops a typo's billion hosts


class GpuTopologyError(ValueError):
  """An unknown or impossible GPU machine name; the message lists what is accepted."""


@dataclasses.dataclass(frozen=True)
class GpuModel:
  name: str                     # as in a machine name: h100, h200
  device_kind: str              # what jax.Device.device_kind says on the real GPU
  device_memory_bytes: int      # total device memory as CUDA reports it
  memory_bandwidth: int         # bytes/s (XLA's cost model reads it)
  streaming_multiprocessors: int
  l2_cache_bytes: int
  clock_ghz: float


MODELS = (
    GpuModel("h100", "NVIDIA H100 80GB HBM3", 84_929_347_584, 3_352_320_000_000, 132,
             50 * 2**20, 1.98),
    GpuModel("h200", "NVIDIA H200", 150_754_820_096, 4_800_000_000_000, 132, 50 * 2**20, 1.98),
)


@dataclasses.dataclass(frozen=True)
class GpuHosts:
  name: str                     # as the user wrote it
  model: GpuModel
  hosts: int
  gpus_per_host: int
  platform = "gpu"

  @property
  def chips(self) -> int:
    return self.hosts * self.gpus_per_host

  @property
  def topology_name(self) -> str:
    """XLA's GPU topology: slices x hosts x devices per host."""
    return f"1x{self.hosts}x{self.gpus_per_host}"

  @property
  def accelerator_type(self) -> str:
    return f"{self.hosts}x{self.gpus_per_host} {self.model.name}"

  @property
  def hbm_bytes(self) -> int:
    return usable_bytes(self.model)


def memory_fraction() -> float:
  """The share of a GPU's memory jax lets a process use (XLA_PYTHON_CLIENT_MEM_FRACTION)."""
  text = os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75")
  try:
    fraction = float(text)
  except ValueError:
    raise GpuTopologyError(f"XLA_PYTHON_CLIENT_MEM_FRACTION={text!r} is not a number; set a "
                           "fraction such as 0.9, or unset it (jax then uses 0.75).") from None
  if not 0 < fraction <= 1:
    raise GpuTopologyError(f"XLA_PYTHON_CLIENT_MEM_FRACTION={text!r} must be in (0, 1].")
  return fraction


def usable_bytes(model: GpuModel) -> int:
  return int(model.device_memory_bytes * memory_fraction())


def _accepted() -> str:
  names = ", ".join(model.name for model in MODELS)
  return (f"use a GPU ({names}) with a count, such as h100 (one GPU), h100-8 (one host of 8), "
          f"h200-16 (two hosts of 8), or hosts x GPUs per host, such as h100:4x8")


def is_gpu_name(name: str) -> bool:
  """`name` starts with a GPU model this module knows (then parse_gpus decides the rest)."""
  head = re.match(r"[a-z0-9]+", name.strip().lower())
  return bool(head) and any(head.group(0) == model.name for model in MODELS)


def parse_gpus(name: str) -> GpuHosts:
  """'h100' | 'h100-8' | 'h200-16' | 'h100:2x8' -> GpuHosts."""
  text = name.strip().lower()
  match = re.fullmatch(r"([a-z0-9]+)(?:-(\d+)|:(\d+)x(\d+))?", text)
  model = next((m for m in MODELS if match and m.name == match.group(1)), None)
  if model is None:
    raise GpuTopologyError(f"--topology={name!r} is not a GPU machine name; {_accepted()}.")
  if match.group(3):
    hosts, per_host = int(match.group(3)), int(match.group(4))
  else:
    count = int(match.group(2) or 1)
    if count <= GPUS_PER_HOST:
      hosts, per_host = 1, count
    else:
      hosts, remainder = divmod(count, GPUS_PER_HOST)
      per_host = 0 if remainder else GPUS_PER_HOST
  if not 1 <= hosts <= MAX_HOSTS or not 1 <= per_host <= GPUS_PER_HOST:
    rule = ("hosts x GPUs per host needs 1 to {} hosts of 1 to {} GPUs" if match.group(3) else
            "a GPU count is 1 to {1} (one host) or a multiple of {1} (at most {0} hosts)")
    raise GpuTopologyError(f"--topology={name!r}: "
                           f"{rule.format(MAX_HOSTS, GPUS_PER_HOST)}; {_accepted()}.")
  return GpuHosts(name, model, hosts, per_host)


def target_config(model: GpuModel) -> str:
  """XLA's description of the GPU (a GpuTargetConfigProto in text form) for a deviceless
  compile. Limits are the ones every sm90 part shares; the compiler reads the compute
  capability, the memory and the cache sizes and the SM count from it."""
  return f"""
gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: {model.streaming_multiprocessors}
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {model.memory_bandwidth}
  l2_cache_size: {model.l2_cache_bytes}
  clock_rate_ghz: {model.clock_ghz}
  device_memory_size: {model.device_memory_bytes}
  shared_memory_per_block_optin: 232448
  cuda_compute_capability {{ major: 9 minor: 0 }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 8 }}
runtime_version {{ major: 12 minor: 8 }}
device_description_str: "{model.device_kind}"
"""


def gpu_devices(spec: GpuHosts) -> list:
  """The hosts' jax devices (compile-only: they carry ids, process_index and the GPU's compute
  capability)."""
  import jax  # pylint: disable=import-outside-toplevel
  try:
    from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
    description = topologies.get_topology_desc(
        platform="cuda", topology=spec.topology_name, target_config=target_config(spec.model))
  except Exception as error:  # noqa: BLE001 - the CUDA plugin missing or refusing the topology
    first_line = error_text.first_line(error, None)
    missing = isinstance(error, (ImportError, NotImplementedError))
    hint = (f" Compiling for GPUs on this machine needs jax's CUDA plugin (no GPU needed): pip "
            f"install 'jax[cuda12-local]=={jax.__version__}' nvidia-cuda-runtime-cu12." if missing
            else "")
    raise GpuTopologyError(f"jax cannot describe {spec.name} ({spec.topology_name}): "
                           f"{first_line}.{hint}") from None
  devices = list(description.devices)
  if len(devices) != spec.chips:
    raise GpuTopologyError(f"jax describes {len(devices)} devices for {spec.name}, expected "
                           f"{spec.chips} GPUs.")
  return devices
