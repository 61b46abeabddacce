"""Joining a multi-host job: when the environment describes one (a TPU pod slice started by
launch/tpu.py, SLURM, mpirun, or explicit JAX_* variables), `initialize` calls
jax.distributed.initialize with what the launcher gave, before anything touches a device.
"""
from __future__ import annotations

import logging
import os
from typing import Mapping

import jax

log = logging.getLogger(__name__)


def _is_multi_host_environment(env: Mapping[str, str]) -> bool:
  # On a Cloud TPU VM nothing in the environment says "pod slice" (jax asks the metadata
  # server), so launch/tpu.py sets GLMJAX_DISTRIBUTED=1: without jax.distributed there is no
  # preemption notice, and a SIGTERM would kill the run without a checkpoint.
  if env.get("GLMJAX_DISTRIBUTED") == "1" or env.get("JAX_COORDINATOR_ADDRESS"):
    return True
  if "," in env.get("TPU_WORKER_HOSTNAMES", ""):  # a TPU VM pod slice lists every worker
    return True
  return int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1


class JoinError(ValueError):
  """The environment names a multi-host job that cannot be joined as it stands (one line)."""


def _launcher_rank(env: Mapping[str, str], num_processes: int | None) -> int:
  """This process's rank when JAX_COORDINATOR_ADDRESS is given without JAX_PROCESS_ID: the one
  srun or mpirun numbered it with. Never 0 by default on several processes: each would join as
  rank 0 and they would wait for each other until the timeout. mpirun's rank first, as jax's
  own detection does: mpirun inside a SLURM allocation leaves every rank the SLURM_PROCID of
  the step that started it."""
  for name in ("OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):
    if env.get(name):
      return int(env[name])
  if num_processes == 1:
    return 0
  raise JoinError("JAX_COORDINATOR_ADDRESS is set but JAX_PROCESS_ID is not: set it (0 .. "
                  "JAX_NUM_PROCESSES - 1, a different one on every process), or start the "
                  "processes with srun or mpirun, which number them.")


_DISTRIBUTED_ENV = (("JAX_COORDINATOR_ADDRESS", "coordinator_address", str),
                    ("JAX_NUM_PROCESSES", "num_processes", int),
                    ("JAX_PROCESS_ID", "process_id", int))


def _explicit(env: Mapping[str, str]) -> dict:
  """jax.distributed.initialize's arguments that the JAX_* variables give."""
  explicit = {}
  for name, key, kind in _DISTRIBUTED_ENV:
    if env.get(name):
      try:
        explicit[key] = kind(env[name])
      except ValueError:
        raise JoinError(f"{name}={env[name]!r}: must be a whole number.") from None
      if kind is int and explicit[key] < (1 if key == "num_processes" else 0):
        raise JoinError(f"{name}={env[name]}: must be "
                        f"{'at least 1' if key == 'num_processes' else 'at least 0'}.")
  return explicit


def initialize(timeout_s: int, env: Mapping[str, str] | None = None, *,
               preemption_notice: bool = False) -> bool:
  """Join the multi-host job when the environment describes one; returns whether it did.

  GLMJAX_DISTRIBUTED=1 (set by launch/tpu.py) joins and lets jax find its peers itself (Cloud
  TPU metadata, SLURM). Elsewhere set JAX_COORDINATOR_ADDRESS (host:port of process 0),
  JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process. `preemption_notice` (training): several
  processes that did not join are refused, as only jax.distributed hears a preemption.
  """
  env = os.environ if env is None else env
  if jax.distributed.is_initialized():
    return True
  explicit = _explicit(env)
  if not _is_multi_host_environment(env):
    if explicit.get("num_processes", 1) > 1 or explicit.get("process_id", 0) > 0:
      # Each process would train alone, as a one-process job, in the same workdir.
      raise JoinError("JAX_NUM_PROCESSES or JAX_PROCESS_ID is set but JAX_COORDINATOR_ADDRESS "
                      "is not: set it to host:port of process 0 on every process.")
    # A TPU pod slice started by hand (gcloud ... ssh --worker=all) runs as several processes
    # all the same, found by libtpu: its SIGTERM would stop every host without a checkpoint.
    if preemption_notice and jax.process_count() > 1:
      raise JoinError(f"This is one of {jax.process_count()} processes, but they have not "
                      "joined jax.distributed, which alone hears a preemption: a SIGTERM would "
                      "stop them without a checkpoint. Start them with launch/tpu.py, or set "
                      "GLMJAX_DISTRIBUTED=1 on every host.")
    return False
  if "coordinator_address" in explicit and "process_id" not in explicit:
    explicit["process_id"] = _launcher_rank(env, explicit.get("num_processes"))
  count, rank = explicit.get("num_processes"), explicit.get("process_id")
  if count is not None and rank is not None and not 0 <= rank < count:
    raise JoinError(f"JAX_PROCESS_ID={rank} with JAX_NUM_PROCESSES={count}: number the "
                    f"processes 0 .. {count - 1}, a different one on every process.")
  log.info("Initialising jax.distributed (timeout %d s)", timeout_s)
  try:
    jax.distributed.initialize(initialization_timeout=timeout_s, **explicit)
  except ValueError as error:  # jax found no coordinator: sbatch/salloc tasks not run by srun
    raise JoinError(f"The environment describes a job of several processes, but jax cannot "
                    f"join it ({str(error).rstrip('.')}): start every process with its "
                    "launcher (srun, mpirun, launch/tpu.py on a TPU slice), or set "
                    "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.") from None
  return True
