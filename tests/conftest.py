"""Test setup: 8 simulated CPU devices, set before jax is imported anywhere."""
import os
import socket
import tempfile

import pytest

# Any other count the environment gives is dropped (pytest-xdist's workers inherit the
# controller's XLA_FLAGS, which already hold this one).
os.environ["XLA_FLAGS"] = " ".join(
    [flag for flag in os.environ.get("XLA_FLAGS", "").split()
     if not flag.startswith("--xla_force_host_platform_device_count")]
    + ["--xla_force_host_platform_device_count=8"])
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One compilation cache for the session and the trainer subprocesses it starts (they inherit
# the environment): the end-to-end tests compile the same few programs many times over. Kept
# between sessions in one folder (entries are keyed by the program, so a stale one is unused).
# Both pytest-xdist workers share it: jax writes an entry in place, so a worker may read one the
# other is still writing; jax then warns and compiles the program afresh (no test fails).
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
