"""parallel: where batch rows go on the mesh, and when a process joins a multi-host job."""
import json

import jax
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from glmjax import config as config_lib, distributed, parallel


def test_batch_rows_are_split_over_data_and_fsdp_but_not_over_tensor_parallel_replicas():
  """A tensor group holds the same rows on every chip of it: the batch parallelism that
  data.batch_size must divide is mesh.data x mesh.fsdp."""
  devices = np.array(jax.devices())
  assert parallel.batch_axis_size(Mesh(devices.reshape(1, 4, 2), parallel.MESH_AXES)) == 4
  assert parallel.batch_axis_size(Mesh(devices.reshape(2, 2, 2), parallel.MESH_AXES)) == 4
  assert parallel.batch_axis_size(Mesh(devices.reshape(1, 1, 8), parallel.MESH_AXES)) == 1


def test_rules_read_back_from_a_run_s_config_json_are_the_rules_it_saved():
  # JSON has no tuples: a saved ('data', 'fsdp') comes back as a list, which is no PartitionSpec
  # entry flax matches (a config.json read by evaluate, generate and export).
  saved = config_lib.default_config().mesh
  read = config_lib.default_config().mesh
  read.rules = json.loads(json.dumps(saved.rules))
  assert isinstance(dict(read.rules)["activation_batch"], list)
  assert parallel.logical_rules(read) == parallel.logical_rules(saved)


def test_the_batch_rule_checked_is_the_first_one_the_rules_give_as_flax_applies_the_first():
  rules = (("activation_batch", "data"),) + config_lib.DEFAULT_LOGICAL_AXIS_RULES
  assert nn.logical_to_mesh_axes(("activation_batch",), rules) == PartitionSpec("data")
  problem = parallel.batch_rule_problem(rules)
  assert problem is not None and "maps 'activation_batch' to ('data',)" in problem


@pytest.mark.parametrize("env, joins", [
    ({}, False),                                                # one process, nothing to join
    ({"TPU_WORKER_HOSTNAMES": "10.0.0.2"}, False),              # a single-host TPU VM
    ({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}, True),      # a pod slice lists every worker
    ({"SLURM_NTASKS": "1"}, False),
    ({"SLURM_NTASKS": "2"}, True),                              # two tasks are several
    ({"SLURM_NTASKS": "4"}, True),
    ({"OMPI_COMM_WORLD_SIZE": "1"}, False),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
    ({"GLMJAX_DISTRIBUTED": "1"}, True),                        # set by launch/tpu.py
    ({"GLMJAX_DISTRIBUTED": "0"}, False),
])
def test_a_process_joins_jax_distributed_exactly_when_its_environment_describes_several(
    env, joins, monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
  assert distributed.initialize(60, env=env) == joins
  assert calls == ([{"initialization_timeout": 60}] if joins else [])


def test_training_refuses_several_processes_that_did_not_join_as_they_would_hear_no_preemption(
    monkeypatch):
  """A pod slice started by hand: libtpu runs every host as one job, jax.distributed is not
  initialized, and a SIGTERM would stop them all unsaved. Evaluation needs no notice."""
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax, "process_count", lambda *args, **kwargs: 4)
  assert not distributed.initialize(60, env={})
  with pytest.raises(distributed.JoinError, match=r"^This is one of 4 processes, .* set "
                                                  r"GLMJAX_DISTRIBUTED=1 on every host\.$"):
    distributed.initialize(60, env={}, preemption_notice=True)
  monkeypatch.setattr(jax, "process_count", lambda *args, **kwargs: 1)
  assert not distributed.initialize(60, env={}, preemption_notice=True)


def test_a_job_jax_cannot_join_from_its_environment_is_one_line_naming_srun(monkeypatch):
  """sbatch --ntasks=8 running the trainer without srun: SLURM_NTASKS says several processes,
  and jax, finding no coordinator in that environment, raised a bare ValueError."""
  def unjoinable(**kwargs):
    raise ValueError("coordinator_address should be defined.")
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", unjoinable)
  with pytest.raises(distributed.JoinError, match=r"^The environment describes a job of several "
                                                  r"processes, but jax cannot join it "
                                                  r"\(coordinator_address should be defined\): "
                                                  r"start every process with its launcher "
                                                  r"\(srun,"):
    distributed.initialize(60, env={"SLURM_NTASKS": "8"})


def _mesh_config(**axes):
  mesh_config = config_lib.mesh_defaults()
  mesh_config.update(axes)
  return mesh_config


def test_only_one_mesh_axis_may_be_left_to_fill_the_devices():
  with pytest.raises(ValueError, match=r"only one axis may be -1, got mesh\.data, mesh\.fsdp"):
    parallel.mesh_shape(_mesh_config(data=-1, fsdp=-1, tensor=1), 8)


@pytest.mark.parametrize("axes", [dict(data=0, fsdp=-1, tensor=1), dict(data=0, fsdp=8, tensor=1),
                                  dict(data=1, fsdp=-1, tensor=-2)])
def test_a_mesh_axis_of_zero_or_below_minus_one_is_refused_naming_it(axes):
  field, size = next((f, s) for f, s in axes.items() if s == 0 or s < -1)
  with pytest.raises(ValueError, match=rf"mesh\.{field}={size}: use a positive size"):
    parallel.mesh_shape(_mesh_config(**axes), 8)



@pytest.mark.parametrize("count", [1, 2, 3, 8, 256])
def test_the_default_mesh_is_data_parallel_over_any_number_of_devices(count):
  # One GPU, an odd count, a pod slice: a run that sets no mesh field starts on all of them.
  assert parallel.mesh_shape(config_lib.default_config().mesh, count) == (count, 1, 1)

def test_fixed_mesh_axes_that_do_not_divide_the_devices_are_refused_naming_them():
  with pytest.raises(ValueError, match=r"8 devices cannot be split with the fixed axes "
                                       r"\(fsdp=3 x tensor=1\)"):
    parallel.mesh_shape(_mesh_config(data=-1, fsdp=3, tensor=1), 8)
  assert parallel.mesh_shape(_mesh_config(data=-1, fsdp=2, tensor=2), 8) == (2, 2, 2)


def test_a_parameter_axis_mapped_to_two_mesh_axes_must_divide_by_their_product():
  """('embed', ('fsdp', 'tensor')) splits the hidden size into fsdp x tensor = 8 parts: 36
  divides by 4 but not by 8."""
  sizes = {"data": 1, "fsdp": 4, "tensor": 2}
  rules = (("embed", ("fsdp", "tensor")),)
  problem = parallel.unsplittable_axis({"embed": (36, "model.hidden_size")}, sizes, rules)
  assert problem is not None and problem.startswith(
      "model.hidden_size = 36 cannot be split over mesh.fsdp=4 x mesh.tensor=2")
  assert parallel.unsplittable_axis({"embed": (40, "model.hidden_size")}, sizes, rules) is None


def test_a_batch_rule_over_the_same_axes_in_the_other_order_is_refused():
  """('fsdp', 'data') puts the rows on other devices than the input pipeline's ('data',
  'fsdp'): every step would move the whole batch between chips."""
  mesh = Mesh(np.array(jax.devices()).reshape(2, 2, 2), parallel.MESH_AXES)
  placed = {device: index[0] for device, index in parallel.batch_sharding(mesh, 1)
            .devices_indices_map((8,)).items()}
  swapped = NamedSharding(mesh, PartitionSpec(("fsdp", "data")))
  assert {d: i[0] for d, i in swapped.devices_indices_map((8,)).items()} != placed
  rules = (("activation_batch", ("fsdp", "data")),) + config_lib.DEFAULT_LOGICAL_AXIS_RULES
  problem = parallel.batch_rule_problem(rules)
  assert problem is not None and "maps 'activation_batch' to ('fsdp', 'data')" in problem


def test_a_process_given_the_coordinator_by_its_environment_joins_with_that_address_and_rank(
    monkeypatch):
  """Outside Cloud TPU and SLURM, JAX_COORDINATOR_ADDRESS with JAX_NUM_PROCESSES and
  JAX_PROCESS_ID set on every process is how they find each other."""
  calls = []
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234", "JAX_NUM_PROCESSES": "4",
         "JAX_PROCESS_ID": "3"}
  assert distributed.initialize(60, env=env)
  assert calls == [{"initialization_timeout": 60, "coordinator_address": "10.0.0.2:1234",
                    "num_processes": 4, "process_id": 3}]
  calls.clear()  # the coordinator's own process: rank 0 given, and taken
  assert distributed.initialize(60, env={**env, "JAX_PROCESS_ID": "0"})
  assert calls == [{"initialization_timeout": 60, "coordinator_address": "10.0.0.2:1234",
                    "num_processes": 4, "process_id": 0}]
  # A rank left out is the one srun or mpirun numbered the process with, never 0 on every
  # process (each would join as rank 0 and wait for the others until the timeout); a count left
  # out is jax's to find.
  calls.clear()
  env = {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "JAX_COORDINATOR_ADDRESS": "n1:1234",
         "JAX_NUM_PROCESSES": "4"}
  assert distributed.initialize(60, env=env)
  del env["JAX_NUM_PROCESSES"]
  assert distributed.initialize(60, env=env)
  ompi = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1",
          "JAX_COORDINATOR_ADDRESS": "n1:1234", "JAX_NUM_PROCESSES": "2"}
  assert distributed.initialize(60, env=ompi)
  # mpirun inside a SLURM allocation: each rank inherits the step's SLURM_PROCID (0 on all).
  assert distributed.initialize(60, env={**ompi, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"})
  alone = {"JAX_COORDINATOR_ADDRESS": "n1:1234", "JAX_NUM_PROCESSES": "1"}
  assert distributed.initialize(60, env=alone)
  joined = dict(initialization_timeout=60, coordinator_address="n1:1234")
  assert calls == [{**joined, "num_processes": 4, "process_id": 3}, {**joined, "process_id": 3},
                   {**joined, "num_processes": 2, "process_id": 1},
                   {**joined, "num_processes": 2, "process_id": 1},
                   {**joined, "num_processes": 1, "process_id": 0}]
  # Several processes and nothing that numbers them: one line naming the variable, no join.
  calls.clear()
  with pytest.raises(distributed.JoinError, match="JAX_PROCESS_ID is not: set it"):
    distributed.initialize(60, env={"JAX_COORDINATOR_ADDRESS": "n1:1234",
                                             "JAX_NUM_PROCESSES": "4"})
  assert calls == []


def test_a_process_that_has_joined_does_not_join_again(monkeypatch):
  # train.run joins before it reads the data; train_and_evaluate asks again: jax refuses a
  # second initialize, so the second ask must find the first.
  joined = []
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: bool(joined))
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: joined.append(kwargs))
  env = {"GLMJAX_DISTRIBUTED": "1"}
  assert distributed.initialize(60, env=env) and distributed.initialize(
      60, env=env)
  assert joined == [{"initialization_timeout": 60}]


def test_a_process_that_holds_no_device_of_the_mesh_is_named_in_the_error():
  mesh = Mesh(np.array(jax.devices()).reshape(8, 1, 1), parallel.MESH_AXES)  # all process 0's
  assert parallel.host_rows(mesh, 8, process_index=0).rows.tolist() == list(range(8))
  with pytest.raises(ValueError, match="Process 1 holds no device of the mesh; every process"):
    parallel.host_rows(mesh, 8, process_index=1)
