"""Test setup: 8 simulated CPU devices, set before jax is imported anywhere."""
import os
import socket
import tempfile

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One compilation cache for the session and the trainer subprocesses it starts (they inherit
# the environment): the end-to-end tests compile the same few programs many times over. Kept
# between sessions in one folder (entries are keyed by the program, so a stale one is unused).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "glmjax-test-xla-cache"))
# Also the programs that compile in under a second (jax's default threshold): each trainer
# process otherwise recompiles them, e.g. Orbax's per-device slices of every array at its first
# save (80 programs, 5-7 s of every run on 2 cores).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402

# Tests check semantics on tiny shapes; XLA's optimisation passes cost more than they save here.
jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture
def coordinator_port():
  """A free port for a test's two-process jax.distributed coordinator. Asked of the system, not
  derived from the pid: the suite runs in parallel workers (pytest-xdist) whose pids are close,
  and two tests binding one port would fail or join each other's processes."""
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    return probe.getsockname()[1]
