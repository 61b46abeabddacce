"""Cloud TPU slice names: their chips, hosts, torus shapes and wraparound links as Cloud TPU
provisions them, and libtpu's description of a slice on this CPU machine (glmjax/topology.py)."""
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import SingleDeviceSharding

from glmjax import aot, topology

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name, generation, chips, hosts", [
    ("v4-32", "v4", 16, 4), ("v4-16", "v4", 8, 2), ("v5p-128", "v5p", 64, 16),
    ("v5litepod-16", "v5e", 16, 4),
    ("v5e-8", "v5e", 8, 1), ("v6e-64", "v6e", 64, 16), ("v5p:4x4x8", "v5p", 128, 32),
    (" V5P-128 ", "v5p", 64, 16), ("V6E:8X8", "v6e", 64, 16),  # case and spaces do not matter
    ("2xv5e-16", "v5e", 32, 8), ("4xv5p:2x2x4", "v5p", 64, 16)])  # multi-slice
def test_slice_names_give_chips_and_hosts_as_cloud_tpu_provisions_them(name, generation, chips,
                                                                        hosts):
  spec = topology.parse_slice(name)
  assert (spec.generation.name, spec.chips, spec.hosts) == (generation, chips, hosts)
  devices = topology.slice_devices(spec)
  assert len(devices) == chips and len({d.process_index for d in devices}) == hosts


@pytest.mark.parametrize("name, reason", [
    ("tpu-8", "is not a TPU slice name; use a Cloud TPU accelerator type"),
    ("v5p-100", "no standard v5p slice of that size"), ("v6e-12", "no standard v6e slice"),
    ("v5p-9", "no standard v5p slice"),  # v5p names count 2 cores a chip: never odd
    ("v5e:2x2x2", "v5e slices have 2 torus axes"), ("v5p:4x4", "v5p slices have 3 torus axes"),
    ("v4:2x2", "v4 slices have 3 torus axes"),
    ("v5p:0x4x4", "v5p slices have 3 torus axes"),  # no axis of 0 chips
    # Hosts serve 2x2(x1) chips: an axis of 3 would split one, however long the others are.
    ("v5e:1x16", "every torus axis must be a multiple of that"),
    ("v6e:3x4", "every torus axis must be a multiple of that"),
    ("v5p:2x3x4", "every torus axis must be a multiple of that"),
    ("0xv5e-16", "give at least 1 slice"), ("2x2xv5e-16", "give the slice count once"),
    ("2xv5e-12", "no standard v5e slice")])
def test_impossible_slice_names_say_what_is_wrong_and_what_is_accepted(name, reason):
  with pytest.raises(topology.TopologyError, match=f"--topology='{name}'") as refused:
    topology.parse_slice(name)
  assert reason in str(refused.value), str(refused.value)


def test_describing_a_slice_keeps_the_tpu_variables_the_user_had_set(monkeypatch):
  """Off a TPU VM the description's libtpu start is given the slice's own values, and they are
  taken back after it; values the user had set are neither replaced nor taken away."""
  monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5p-8")
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.2")
  assert len(topology.slice_devices(topology.parse_slice("v6e-4"))) == 4
  assert (os.environ["TPU_ACCELERATOR_TYPE"], os.environ["TPU_WORKER_HOSTNAMES"]) == (
      "v5p-8", "10.0.0.2")


class _RecordedEnvironment(dict):
  """os.environ's stand-in that lists every change made to it."""

  def __init__(self, values):
    super().__init__(values)
    self.changes = []

  def update(self, *args, **kwargs):
    self.changes.append(("update", dict(*args, **kwargs)))
    super().update(*args, **kwargs)

  def __setitem__(self, key, value):
    self.changes.append(("set", key))
    super().__setitem__(key, value)

  def pop(self, key, *default):
    self.changes.append(("pop", key))
    return super().pop(key, *default)


def test_a_description_after_libtpu_s_first_start_changes_no_environment_variable(monkeypatch):
  """libtpu reads its TPU_* variables at its first start in a process only; changing the
  environment while its threads read it is a race, so later descriptions leave it alone."""
  topology.slice_devices(topology.parse_slice("v5e-8"))  # libtpu has started in this process
  recorded = _RecordedEnvironment({k: v for k, v in os.environ.items()
                                   if not k.startswith("TPU_A") and not k.startswith("TPU_W")})
  monkeypatch.setattr(os, "environ", recorded)
  assert len(topology.slice_devices(topology.parse_slice("v4-32"))) == 16
  assert [change for change in recorded.changes if change != ("update", {})] == []


def test_without_libtpu_the_error_says_what_to_install(monkeypatch):
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel

  def missing(**_):  # what jax raises where no TPU plugin is installed
    raise RuntimeError("JAX TPU support not installed; cannot generate TPU topology.")

  monkeypatch.setattr(topologies, "get_topology_desc", missing)
  with pytest.raises(topology.TopologyError, match=r"pip install 'jax\[tpu\]=="):
    topology.slice_devices(topology.parse_slice("v5p-8"))


@pytest.mark.parametrize("name, wrap", [
    ("v5p-64", False), ("v4-64", False), ("v5p:4x4x2", False),  # 32 chips: less than a cube
    ("v5p-128", True), ("v4-128", True), ("v5p:4x4x4", True),   # one full 4x4x4 cube
    ("v5p-256", True), ("v4-1024", True),                        # several cubes
    ("v5p:2x4x8", False)])                     # 64 chips, but not whole cubes: no torus
def test_a_full_4x4x4_cube_and_larger_3d_slices_have_wraparound_links(name, wrap):
  """Cloud TPU's v4/v5p slices are built of 4x4x4 cubes (v5p's table: 4x4x4 is 1 cube, 64
  chips, v5p-128); a slice of whole cubes closes each axis into a torus through the optical
  switches, a smaller one is a mesh without wraparound."""
  spec = topology.parse_slice(name)
  assert spec.wrap == (wrap,) * 3, (spec.shape, spec.wrap)


@pytest.mark.parametrize("name, shape", [
    ("v5litepod-8", (2, 4)), ("v6e-8", (2, 4)), ("v5litepod-32", (4, 8)),
    ("v6e-128", (8, 16)), ("v5p-64", (2, 4, 4)), ("v5p-256", (4, 4, 8)),
    ("v5p-384", (4, 4, 12)), ("v5p-512", (4, 8, 8)), ("v4-1536", (8, 8, 12)),
    # The rest of the tables, each size once.
    ("v5litepod-1", (1, 1)), ("v5litepod-4", (2, 2)), ("v6e-4", (2, 2)), ("v6e-16", (4, 4)),
    ("v5litepod-64", (8, 8)), ("v6e-256", (16, 16)), ("v5p-8", (2, 2, 1)),
    ("v5p-16", (2, 2, 2)), ("v5p-32", (2, 2, 4)), ("v4-32", (2, 2, 4)), ("v5p-128", (4, 4, 4)),
    ("v5p-768", (4, 8, 12)), ("v5p-1024", (8, 8, 8)), ("v5p-2048", (8, 8, 16)),
    ("v5p-4096", (8, 16, 16)), ("v5p-8192", (16, 16, 16))])
def test_standard_slice_names_have_the_torus_shapes_cloud_tpu_provisions(name, shape):
  """The topology tables of the Cloud TPU docs (v5e, v6e, v5p, v4): a compile for another
  shape of the same chip count would place the mesh on a torus the slice does not have."""
  spec = topology.parse_slice(name)
  assert spec.shape == shape and spec.topology_name == f"{spec.generation.name}:" + "x".join(
      map(str, shape))


@pytest.mark.parametrize("name, wrap", [
    ("v6e-256", (True, True, False)), ("v5litepod-256", (True, True, False)),  # 16x16: a torus
    ("v6e-64", (False, False, False)), ("v5litepod-16", (False, False, False))])  # 8x8, 4x4
def test_only_the_16_chip_axes_of_a_2d_slice_wrap_around(name, wrap):
  assert topology.parse_slice(name).wrap == wrap


@pytest.mark.parametrize("name", ["v4-8", "v5p-8", "v5e-1", "v6e-1"])
def test_a_chip_s_usable_hbm_is_what_libtpu_s_compiler_lets_one_program_take(name):
  """The table's HBM per chip, which `aot` compares a step's memory with, is libtpu's own
  figure (a chip's HBM less what the runtime keeps): a program 32 MiB under it compiles, and
  one 32 MiB over it is refused naming that figure (rounded to 0.01 GiB). Where releases
  differ the table holds the smaller: libtpu 0.0.48 (jax 0.11) keeps 10 MiB more of a v5p's
  and a v6e's HBM than 0.0.42 (jax 0.10) does, so a step the table fits fits under both."""
  spec = topology.parse_slice(name)
  device = topology.slice_devices(spec)[0]

  def compile_output_of(size: int):
    zeros = jax.jit(lambda: jnp.zeros((size,), jnp.int8),
                    out_shardings=SingleDeviceSharding(device))
    return zeros.lower().compile()

  # Not through the suite's persistent cache: a compile-only TPU executable cannot be read back.
  with aot._no_persistent_cache():  # pylint: disable=protected-access
    compile_output_of(spec.hbm_bytes - (32 << 20))
    with pytest.raises(Exception, match="RESOURCE_EXHAUSTED") as refused:
      compile_output_of(spec.hbm_bytes + (32 << 20))
  # "exceeds available HBM (31.25G)", or "Used 31.28G of 31.25G hbm" in other libtpu releases
  available = re.search(r"(?:available HBM \(| of )([0-9.]+)G", str(refused.value))
  assert available, str(refused.value)
  # Never more than this libtpu gives (beyond the message's rounding), at most 0.01 GiB less.
  libtpu_bytes = float(available.group(1)) * topology.GIB
  assert -0.005 * topology.GIB <= libtpu_bytes - spec.hbm_bytes <= 0.015 * topology.GIB


def test_libtpu_s_lines_about_a_missing_tpu_vm_stay_out_of_the_command_s_output():
  """Off a TPU VM libtpu printed six lines at its start (`E0000 ... INVALID_ARGUMENT: ...
  TPU_WORKER_HOSTNAMES`), with JAX_PLATFORMS=cpu too, which the README says leaves them out;
  and the values given for that start are taken back after it."""
  script = ("import os\n"
            "from glmjax import topology\n"
            "topology.slice_devices(topology.parse_slice('v5p-16'))\n"
            "print([k for k in ('TPU_ACCELERATOR_TYPE', 'TPU_WORKER_HOSTNAMES')"
            " if k in os.environ])\n")
  env = {key: value for key, value in os.environ.items() if not key.startswith("TPU_")}
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**env, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr[-2000:]
  assert "TPU_WORKER_HOSTNAMES" not in result.stderr and "E0000" not in result.stderr, (
      result.stderr)
  assert result.stdout.strip() == "[]"
