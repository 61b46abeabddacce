"""Each host builds exactly the batch rows its devices hold, on the device orders of real slices.

TPU slices come from libtpu's topology descriptions (the devices of the real slice, with their
process_index), meshes from `parallel.make_mesh` as `train` makes them. The two-process CPU test
runs the real `parallel.global_batch` on a mesh whose hosts hold interleaved rows.
"""
import importlib
import logging
import re
import textwrap
import types

import jax
import numpy as np
import pytest

from jax.sharding import Mesh, NamedSharding, PartitionSpec

from glmjax import aot, config as config_lib, held_out, parallel, step as step_lib, topology
from glmjax import distributed, train
import two_hosts

BATCH = 1024
MESHES = {"data": dict(data=-1, fsdp=1, tensor=1), "fsdp": dict(data=1, fsdp=-1, tensor=1),
          "fsdp_tensor": dict(data=1, fsdp=-1, tensor=2),
          "data_fsdp": dict(data=2, fsdp=-1, tensor=1),
          "tensor_across_hosts": dict(data=1, fsdp=2, tensor=-1),  # replicas on several hosts
          "replicated_batch": dict(data=1, fsdp=1, tensor=-1)}


@pytest.fixture
def mesh8():
  return Mesh(np.array(jax.devices()).reshape(8, 1, 1), parallel.MESH_AXES)


def _mesh(slice_name, axes):
  mesh_config = config_lib.mesh_defaults()
  mesh_config.update(axes)
  return parallel.make_mesh(mesh_config, topology.slice_devices(topology.parse_slice(slice_name)))


@pytest.mark.parametrize("mesh_name", sorted(MESHES))
@pytest.mark.parametrize("slice_name", ["v5e-16", "v5p-32", "v6e-16", "v4-32", "v5p-128"])
def test_every_row_is_built_by_the_hosts_that_hold_it_and_reaches_their_devices(slice_name,
                                                                                 mesh_name):
  mesh = _mesh(slice_name, MESHES[mesh_name])
  processes = sorted({device.process_index for device in mesh.devices.flat})
  layouts = {p: parallel.host_rows(mesh, BATCH, p) for p in processes}
  index_map = parallel.batch_sharding(mesh, 1).devices_indices_map((BATCH,))
  holders = {row: set() for row in range(BATCH)}
  for device, index in index_map.items():
    for row in np.arange(BATCH)[index[0]]:
      holders[row].add(device.process_index)
  for row, hosts in holders.items():  # built by exactly the hosts with a device holding it
    assert {p for p in processes if row in set(layouts[p].rows)} == hosts
  if mesh.shape["tensor"] == 1:  # no replicas: every row is built by exactly one host
    built = np.concatenate([layout.rows for layout in layouts.values()])
    np.testing.assert_array_equal(np.sort(built), np.arange(BATCH))
  for device, index in index_map.items():
    layout = layouts[device.process_index]
    host_batch = layout.rows * 10 + 7  # the host batch as the pipeline builds it: row r -> 10r+7
    shard = host_batch[layout.shards[index[0].indices(BATCH)[:2]]]
    np.testing.assert_array_equal(shard, np.arange(BATCH)[index[0]] * 10 + 7)
  assert len(aot.plan_host_input(mesh, BATCH)) == len(processes)


@pytest.mark.parametrize("axes, spread", [
    ({"data": 1, "fsdp": 8, "tensor": 2}, 1),   # no torus mapping: plain order, pairs on a host
    ({"data": 2, "fsdp": 2, "tensor": 4}, 1),   # the same: a group of 4 is a whole host
    ({"data": 1, "fsdp": 2, "tensor": 8}, 2),   # wider than a host's 4 chips
])
def test_a_mesh_in_plain_device_order_warns_only_when_a_tensor_group_spans_hosts(axes, spread,
                                                                                 caplog):
  with caplog.at_level(logging.DEBUG, logger="glmjax.parallel"):
    mesh = _mesh("v5e-16", axes)
  groups = mesh.devices.reshape(-1, axes["tensor"])
  assert max(len({d.process_index for d in group}) for group in groups) == spread
  warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
  assert [r.getMessage().endswith(f"each mesh.tensor group spans {spread} hosts")
          for r in warnings] == ([True] if spread > 1 else [])


def test_a_topology_mapped_mesh_warns_too_when_a_tensor_group_spans_hosts(caplog):
  """jax maps data=1 fsdp=4 tensor=4 onto v5e-16's 4x4 torus, each group of 4 a line of chips
  over two hosts (of 2x2 chips): start-up says so, as the README promises, not only when
  jax's mapping fails."""
  with caplog.at_level(logging.DEBUG, logger="glmjax.parallel"):
    mesh = _mesh("v5e-16", {"data": 1, "fsdp": 4, "tensor": 4})
  assert max(len({d.process_index for d in group}) for group in mesh.devices.reshape(-1, 4)) == 2
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert warnings == ["jax's topology-aware layout: each mesh.tensor group spans 2 hosts"]


def test_a_plain_order_mesh_keeps_tensor_groups_on_one_host_when_hosts_are_listed_interleaved():
  """The fallback does not rely on the runtime listing a slice host by host: v5e-16's devices
  given round-robin over its 4 hosts still give each tensor group of 4 one host."""
  devices = topology.slice_devices(topology.parse_slice("v5e-16"))
  by_host = [[d for d in devices if d.process_index == p] for p in range(4)]
  interleaved = [host[i] for i in range(4) for host in by_host]
  mesh_config = config_lib.mesh_defaults()
  mesh_config.update(data=2, fsdp=2, tensor=4)
  mesh = parallel.make_mesh(mesh_config, interleaved)
  for group in mesh.devices.reshape(-1, 4):
    assert len({d.process_index for d in group}) == 1


def test_real_slices_do_give_hosts_rows_with_gaps():
  """The case train used to refuse: on a v5p-32 every host's rows are strided."""
  mesh = _mesh("v5p-32", MESHES["data"])
  for process in range(4):
    rows = parallel.host_rows(mesh, BATCH, process).rows
    assert len(rows) == BATCH // 4 and rows[-1] - rows[0] + 1 > len(rows)


def test_the_training_and_held_out_batches_of_a_host_are_the_rows_its_devices_hold(monkeypatch):
  """parallel.pipeline_batch (train's batches and the held-out ones) builds only this host's
  rows, by their global indices, on a slice where a host's rows are strided; the stand-in
  pipeline's row r of batch k is 1000 k + r."""
  mesh = _mesh("v5p-32", MESHES["data"])

  class Pipeline:
    def build_rows(self, index, rows):
      return {"row": 1000 * index + np.asarray(rows)}

  monkeypatch.setattr(parallel, "global_batch", lambda host_batch, layout: host_batch)
  for process in range(4):
    layout = parallel.host_rows(mesh, BATCH, process)
    assert layout.rows.tolist() != list(range(len(layout.rows)))  # not the first rows
    np.testing.assert_array_equal(parallel.pipeline_batch(Pipeline(), 3, layout)["row"],
                                  3000 + layout.rows)


def test_held_out_progress_counts_the_batches_done_and_the_total_sums_each_batch_once(
    monkeypatch, mesh8):
  """held_out.summed reports after each batch when every_s is negative: 1, 2, 3 done of 3 (not
  the index of the batch just summed), and its total adds each batch's sums once."""
  class Pipeline:
    batch_size = 8

    def build_rows(self, index, rows):
      return {"row": 10 ** index + 0 * np.asarray(rows)}

  monkeypatch.setattr(parallel, "global_batch", lambda host_batch, layout: host_batch)
  done = []
  total = held_out.summed(lambda params, batch: {"sum": batch["row"].sum()}, None, Pipeline(),
                          mesh8, 3, progress=done.append, every_s=-1.0)
  assert done == [1, 2, 3]
  assert int(total["sum"]) == 8 * (1 + 10 + 100)


def test_held_out_progress_is_reported_once_every_interval_not_at_every_batch_after_the_first(
    monkeypatch, mesh8):
  """Batches of 4 s on a clock of this test's, a report every 10 s: after 12, 24 and 36 s, that
  is after batches 3, 6 and 9 of 10 (a log line per batch would bury the rest of the log)."""
  class Pipeline:
    batch_size = 8

    def build_rows(self, index, rows):
      return {"row": 0 * np.asarray(rows)}

  now = [0.0]

  def eval_fn(params, batch):
    now[0] += 4.0
    return {"sum": batch["row"].sum()}

  monkeypatch.setattr(parallel, "global_batch", lambda host_batch, layout: host_batch)
  monkeypatch.setattr(held_out, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
  done = []
  held_out.summed(eval_fn, None, Pipeline(), mesh8, 10, progress=done.append, every_s=10.0)
  assert done == [3, 6, 9]


def test_held_out_sums_wait_on_the_devices_only_to_report_progress(monkeypatch, mesh8):
  """Without progress reports the batches are dispatched back to back and read once, at the
  end; a report (here after every batch) first waits for what it counts."""
  class Pipeline:
    batch_size = 8

    def build_rows(self, index, rows):
      return {"row": index + 0 * np.asarray(rows)}

  def eval_fn(params, batch):
    return {"sum": batch["row"].sum()}

  waits = []
  monkeypatch.setattr(parallel, "global_batch", lambda host_batch, layout: host_batch)
  monkeypatch.setattr(jax, "block_until_ready", lambda tree: waits.append("wait") or tree)
  total = held_out.summed(eval_fn, None, Pipeline(), mesh8, 5)
  assert int(total["sum"]) == 8 * (0 + 1 + 2 + 3 + 4) and waits == []
  held_out.summed(eval_fn, None, Pipeline(), mesh8, 5, progress=lambda done: None, every_s=-1.0)
  assert waits == ["wait"] * 5


def test_a_compiled_step_expecting_another_row_layout_is_caught_before_the_slice_is_paid():
  mesh = _mesh("v5p-32", dict(data=2, fsdp=-1, tensor=1))
  layouts = aot.plan_host_input(mesh, BATCH)
  fed = {key: sharding for key, sharding in step_lib.batch_shardings(mesh).items()}
  compiled = types.SimpleNamespace(input_shardings=((None, fed), {}))
  aot.check_host_feeding(compiled, layouts)  # the layout train feeds passes
  swapped = {key: NamedSharding(mesh, PartitionSpec(("fsdp", "data"), *s.spec[1:]))
             for key, s in fed.items()}
  compiled = types.SimpleNamespace(input_shardings=((None, swapped), {}))
  with pytest.raises(aot.UnfeedableLayout, match="which its host .* does not build"):
    aot.check_host_feeding(compiled, layouts)


def test_a_host_batch_of_another_size_is_refused(mesh8):
  layout = parallel.host_rows(mesh8, 16)
  with pytest.raises(ValueError, match="has 8 rows but this process.s devices hold 16 of the 16"):
    parallel.global_batch({"sep": np.zeros(8, np.int32)}, layout)


CHILD = textwrap.dedent("""
    import sys
    import jax
    jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
    import numpy as np
    from jax.sharding import Mesh
    from glmjax import attention_choice, parallel

    # Interleave the hosts along the batch axis: host 0 holds rows 0-1, 4-5, 8-9, 12-13.
    by_host = [[d for d in jax.devices() if d.process_index == p] for p in range(2)]
    order = [device for pair in zip(*by_host) for device in pair]
    mesh = Mesh(np.array(order).reshape(8, 1, 1), parallel.MESH_AXES)
    layout = parallel.host_rows(mesh, 16)
    rows = layout.rows
    host = {"tokens": np.stack([rows * 100 + t for t in range(3)], 1).astype(np.int32),
            "sep": rows.astype(np.int32)}
    batch = parallel.global_batch(host, layout)
    for shard in batch["tokens"].addressable_shards:
      want = np.arange(16)[shard.index[0]]
      assert np.array_equal(np.asarray(shard.data)[:, 0], want * 100), (shard.index, shard.data)
    total = int(jax.jit(lambda b: b["tokens"].sum() + b["sep"].sum())(batch))
    assert total == sum(r * 300 + 3 + r for r in range(16)), total

    # A check that fails on one host only must not make the hosts compile different programs.
    if jax.process_index() == 1:
      attention_choice.check_attention = lambda *args, **kwargs: "flaky on this host"
    else:
      attention_choice.check_attention = lambda *args, **kwargs: None
    picked = attention_choice.agreed_attention("auto", candidates=("cudnn", "xla"))

    # A check that raises on process 0 must not leave the others waiting for its answer.
    def broken(*args, **kwargs):
      if jax.process_index() == 0:
        raise RuntimeError("check crashed")
      return None
    attention_choice.check_attention = broken
    try:
      attention_choice.agreed_attention("auto", candidates=("cudnn", "xla"))
      outcome = "no error"
    except RuntimeError as error:
      outcome = "raised"

    # An explicit kernel that fails its check on process 0 stops every process.
    attention_choice.check_attention = (
        lambda *args, **kwargs: "mismatch" if jax.process_index() == 0 else None)
    try:
      attention_choice.agreed_attention("cudnn", check_explicit=True)
      outcome += " explicit-accepted"
    except (ValueError, RuntimeError):
      outcome += " explicit-stopped"
    with open(sys.argv[3], "w") as out:  # not stdout: gloo writes there too
      out.write(f"rows {rows.tolist()} attention {picked} {outcome}")
""")


def test_two_hosts_with_interleaved_rows_assemble_the_global_batch_and_agree_on_attention(
    tmp_path, coordinator_port):
  outcomes = two_hosts.run(CHILD, tmp_path, coordinator_port, devices_per_process=4)
  for status, stderr, _ in outcomes:
    assert status == 0, stderr
  lines = [text for _, _, text in outcomes]
  assert lines[0] == "rows [0, 1, 4, 5, 8, 9, 12, 13] attention cudnn raised explicit-stopped"
  assert lines[1] == "rows [2, 3, 6, 7, 10, 11, 14, 15] attention cudnn raised explicit-stopped"


def test_train_says_it_joins_jax_distributed_in_its_own_console_format(monkeypatch, capfd,
                                                                        tmp_path):
  """The join is the first thing train does; its line is not left to absl's default format."""
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: None)
  monkeypatch.setenv("GLMJAX_DISTRIBUTED", "1")
  ours = logging.getLogger("glmjax")  # as in a fresh process: no console set up yet
  monkeypatch.setattr(ours, "handlers", [])
  monkeypatch.setattr(ours, "propagate", True)
  config = importlib.import_module("configs.base").get_config("local")
  config.optim.learning_rate = -1.0  # refused right after the join: nothing else runs
  with pytest.raises(SystemExit):
    train.run(config, str(tmp_path / "run"))
  console = capfd.readouterr().err
  assert re.search(r"^\d\d:\d\d:\d\d Initialising jax.distributed \(timeout \d+ s\)$",
                   console, re.MULTILINE), console


def test_train_refuses_a_job_it_cannot_join_in_one_line(monkeypatch, capfd, tmp_path):
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  for name, value in (("JAX_COORDINATOR_ADDRESS", "n1:1234"), ("JAX_NUM_PROCESSES", "4")):
    monkeypatch.setenv(name, value)
  for name in ("JAX_PROCESS_ID", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"):
    monkeypatch.delenv(name, raising=False)
  ours = logging.getLogger("glmjax")  # as the command leaves it: its console, not propagating
  for name in ("handlers", "propagate", "level"):
    monkeypatch.setattr(ours, name, getattr(ours, name))  # put back after the test
  ours.handlers = []
  with pytest.raises(SystemExit) as raised:
    train.run(importlib.import_module("configs.base").get_config("local"), str(tmp_path / "r"))
  lines = capfd.readouterr().err.strip().splitlines()
  assert raised.value.code == 1 and "JAX_PROCESS_ID" in lines[-1] and "Traceback" not in "".join(
      lines), lines
  assert not (tmp_path / "r").exists()  # refused before anything is written


def test_train_refuses_a_pod_slice_started_without_joining_in_one_line(monkeypatch, capfd,
                                                                      tmp_path):
  """libtpu runs the hosts of a slice started by hand as one job that never joined
  jax.distributed: no preemption notice would reach it."""
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax, "process_count", lambda *args, **kwargs: 4)
  for name in ("GLMJAX_DISTRIBUTED", "JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES",
               "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  ours = logging.getLogger("glmjax")
  for name in ("handlers", "propagate", "level"):
    monkeypatch.setattr(ours, name, getattr(ours, name))
  ours.handlers = []
  with pytest.raises(SystemExit) as raised:
    train.run(importlib.import_module("configs.base").get_config("local"), str(tmp_path / "r"))
  lines = capfd.readouterr().err.strip().splitlines()
  assert raised.value.code == 1 and "GLMJAX_DISTRIBUTED=1" in lines[-1], lines
  assert not (tmp_path / "r").exists()


def test_the_tpu_launchers_flag_makes_every_worker_join_jax_distributed(monkeypatch):
  """A Cloud TPU VM's environment does not say 'pod slice'; launch/tpu.py sets the flag."""
  calls = []
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
  assert not distributed.initialize(60, env={})
  assert distributed.initialize(60, env={"GLMJAX_DISTRIBUTED": "1"})
  assert calls == [{"initialization_timeout": 60}]  # peers found by jax (TPU metadata)


@pytest.mark.parametrize("env, message", [
    # Without the coordinator each process would train alone, all in the same workdir: process
    # 0 of several too, and a count or a rank past 0 given alone.
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}, "JAX_COORDINATOR_ADDRESS is not"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "JAX_COORDINATOR_ADDRESS is not"),
    ({"JAX_NUM_PROCESSES": "2"}, "JAX_COORDINATOR_ADDRESS is not"),
    ({"JAX_PROCESS_ID": "1"}, "JAX_COORDINATOR_ADDRESS is not"),
    ({"JAX_COORDINATOR_ADDRESS": "n1:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
     "JAX_PROCESS_ID=2 with JAX_NUM_PROCESSES=2: number the processes 0 .. 1"),
    ({"JAX_COORDINATOR_ADDRESS": "n1:1234", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
     "JAX_NUM_PROCESSES='two': must be a whole number"),
], ids=["rank_1_of_2", "rank_0_of_2", "count_2_alone", "rank_1_alone", "rank_past_the_count",
        "count_not_a_number"])
def test_jax_variables_that_describe_no_joinable_job_are_refused_in_one_line(monkeypatch, env,
                                                                             message):
  calls = []
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
  with pytest.raises(distributed.JoinError, match=re.escape(message)):
    distributed.initialize(60, env=env)
  assert not calls
  assert not distributed.initialize(60, env={"JAX_NUM_PROCESSES": "1"})  # one process: alone
