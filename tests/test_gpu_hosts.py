"""GPU clusters: jax's runtime numbers each host's GPUs (or a multi-node NVLink domain) as one
slice_index, so the mesh treats hosts as it treats TPU slices (mesh.data crosses them), and a
tensor group is said to span hosts by its GPUs' hosts, not by its processes. The runtime's
devices are stand-ins here (no GPU); the compile-only devices of `glmjax.aot`, which say slice 0
for every host, come from jax's CUDA plugin."""
import dataclasses
import importlib
import logging

import jax
import pytest

from glmjax import config as config_lib, gpu_topology, memory, parallel, pretrained, topology


@dataclasses.dataclass(frozen=True)
class RuntimeGpu:
  """What jax.devices() gives on a GPU cluster: platform, id, process and host (slice_index)."""
  id: int
  process_index: int
  slice_index: int
  platform: str = "gpu"
  device_kind: str = "NVIDIA H100 80GB HBM3"


def _cluster(hosts: int, per_host: int = 8, process_per_gpu: bool = False):
  return [RuntimeGpu(id=h * per_host + g, process_index=h * per_host + g if process_per_gpu
                     else h, slice_index=h) for h in range(hosts) for g in range(per_host)]


def _mesh_config(**axes):
  mesh_config = config_lib.mesh_defaults()
  mesh_config.update(axes)
  return mesh_config


@pytest.mark.parametrize("process_per_gpu", [False, True])
def test_a_gpu_cluster_counts_its_hosts_whatever_the_processes_per_host(process_per_gpu):
  assert parallel.slice_count(_cluster(4, process_per_gpu=process_per_gpu)) == 4
  assert parallel.slice_count(_cluster(1, process_per_gpu=process_per_gpu)) == 1


@pytest.mark.parametrize("process_per_gpu", [False, True])
def test_mesh_data_crosses_gpu_hosts_and_fsdp_stays_inside_each(process_per_gpu, caplog):
  devices = _cluster(4, process_per_gpu=process_per_gpu)
  with caplog.at_level(logging.INFO, logger="glmjax.parallel"):
    grid = parallel.device_grid(_mesh_config(data=4, fsdp=-1), devices)
  assert grid.shape == (4, 8, 1)
  for row in grid:  # each fsdp group is one host's 8 GPUs, joined by NVLink
    assert len({device.slice_index for device in row.flat}) == 1
  assert "4 GPU hosts: mesh.data=4 crosses them, 1 each" in caplog.text


def test_fsdp_across_gpu_hosts_is_refused_in_one_line_naming_hosts_not_slices():
  with pytest.raises(parallel.SliceMeshError,
                     match=r"^mesh\.data=1 on 4 GPU hosts: mesh\.data is the axis that crosses "
                           r"GPU hosts .* mesh\.data=4 mesh\.fsdp=-1\.$"):
    parallel.device_grid(_mesh_config(data=1, fsdp=-1), _cluster(4))


def test_a_tensor_group_of_one_host_s_processes_is_not_said_to_span_hosts(caplog):
  # One process per GPU on one node of 8: a tensor group of 8 spans 8 processes but one host.
  with caplog.at_level(logging.DEBUG, logger="glmjax.parallel"):
    grid = parallel.device_grid(_mesh_config(data=1, tensor=8), _cluster(1, process_per_gpu=True))
  assert len({device.process_index for device in grid.flat}) == 8
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
  assert "spans" not in caplog.text


def test_a_tensor_group_wider_than_a_host_is_said_to_span_hosts_by_their_count(caplog):
  # Two hosts of 4 GPUs, a process each GPU: data=2 keeps each half on one host, tensor=4 fills
  # it; tensor groups of 4 inside hosts of 2 GPUs each span 2 hosts (and 4 processes).
  devices = [RuntimeGpu(id=i, process_index=i, slice_index=i // 2) for i in range(8)]
  with caplog.at_level(logging.DEBUG, logger="glmjax.parallel"):
    parallel.device_grid(_mesh_config(data=4, tensor=2), devices)
    assert "spans" not in caplog.text
    with pytest.raises(parallel.SliceMeshError):
      parallel.device_grid(_mesh_config(data=2, tensor=4), devices)  # 2 is not a multiple of 4


def test_aot_s_compile_only_gpus_count_hosts_as_the_runtime_does(caplog):
  # The CUDA plugin's compile-only devices say slice 0 for every host; they describe one
  # process per host, so aot refuses (and lays out) a two-host mesh as the cluster's runtime will.
  devices = gpu_topology.gpu_devices(gpu_topology.parse_gpus("h100:2x8"))
  assert {device.slice_index for device in devices} == {0}
  assert parallel.slice_count(devices) == 2
  with pytest.raises(parallel.SliceMeshError, match="on 2 GPU hosts"):
    parallel.make_mesh(_mesh_config(data=1, fsdp=-1), devices)
  with caplog.at_level(logging.INFO, logger="glmjax.parallel"):
    mesh = parallel.make_mesh(_mesh_config(data=2, fsdp=-1), devices)
  assert "2 GPU hosts: mesh.data=2 crosses them" in caplog.text
  assert "failed" not in caplog.text  # jax's hybrid mesh itself, not the plain-order fallback
  for row in mesh.devices:
    assert len({device.process_index for device in row.flat}) == 1


@pytest.mark.parametrize("slice_name", ["2xv5e-16", "v5e-16"])
def test_reading_a_workdir_on_several_slices_keeps_mesh_data_across_them(slice_name, monkeypatch):
  # generate, evaluate and export read a run's parameters onto this machine's devices: a run
  # mesh of data=1 fsdp=-1 splits the model over 32 devices but not over two slices (or GPU
  # hosts), so the fallback takes fsdp inside each and data across them, as train would.
  devices = topology.slice_devices(topology.parse_slice(slice_name))
  monkeypatch.setattr(jax, "devices", lambda *args: devices)
  monkeypatch.setattr(jax, "device_count", lambda *args: len(devices))
  config = importlib.import_module("configs.base").get_config("local")
  config.model.update(hidden_size=64, num_heads=4, num_layers=2)
  config.mesh.update(data=1, fsdp=-1, tensor=1)
  mesh = pretrained.local_mesh(config)
  slices = parallel.slice_count(devices)
  assert dict(mesh.shape) == {"data": slices, "fsdp": len(devices) // slices, "tensor": 1}
  for row in mesh.devices:
    assert len({parallel.network_group(device) for device in row.flat}) == 1


def test_out_of_memory_advice_on_several_hosts_shards_inside_each_not_over_all():
  # mesh.data=1 would be refused there; the widest sharding is mesh.data = the host count.
  config = importlib.import_module("configs.base").get_config("local")
  advice = memory.fit_advice(config, platform="gpu", slices=4)
  assert "mesh.data=4 mesh.fsdp=-1 (shards parameters and optimizer state over each of the 4 " \
         "GPU hosts)" in advice and "mesh.data=1" not in advice
  assert "over each of the 2 slices" in memory.fit_advice(config, platform="tpu", slices=2)
  config.mesh.data = 4
  assert "mesh.fsdp=-1" not in memory.fit_advice(config, platform="gpu", slices=4)
  full = memory.fit_advice(config, platform="gpu", slices=4, state_bytes=9, hbm=8)
  assert "mesh.data=" not in full and full.startswith("the parameters and optimizer state alone")
  config.mesh.data = 8
  assert "mesh.data=4 mesh.fsdp=-1 (shards them over each of the 4 GPU hosts)" in \
      memory.fit_advice(config, platform="gpu", slices=4, state_bytes=9, hbm=8)
  # mesh.data=-1 already resolved to the host count: nothing to shard wider.
  config.mesh.data = -1
  assert "mesh.fsdp=-1" not in memory.fit_advice(config, platform="gpu", slices=4, data=4)
