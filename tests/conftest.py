"""Test setup: 8 simulated CPU devices, set before jax is imported anywhere."""
import logging
import os
import socket
import sys
import tempfile

import pytest

import cpu_devices  # tests/ is on sys.path: pytest puts a conftest's folder there

# 8 devices and the compile-speed flag of cpu_devices, each given once, after the environment's
# other flags.
os.environ["XLA_FLAGS"] = cpu_devices.xla_flags(8, os.environ.get("XLA_FLAGS", ""))
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
from absl import flags as absl_flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

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


@pytest.fixture(autouse=True)
def temporary_folder_in_the_test_s_own(tmp_path, monkeypatch):
  """The temporary folder of this test and of the commands it starts is its own tmp_path: what
  a command keeps there (a crash's traceback file, a bucket run's local log) is removed with the
  test's folders by pytest's retention, not left in /tmp by every run of the suite."""
  monkeypatch.setenv("TMPDIR", str(tmp_path))
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture(autouse=True)
def logging_restored():
  """Every test leaves this process's logging as it found it. A command run in-process
  (train.run, evaluate.run, aot, ...) sets up its console (logs.setup_console: a handler on
  this test's stderr capture, no propagation, absl's formatter, filter and verbosity, a wrapped
  sys.unraisablehook) and a log file in the test's folder on glmjax's and the root logger; left
  in place, a later test in the same worker logs to a closed capture and a stale file, and its
  caplog sees nothing. absl's FLAGS, once parsed (cli.run), send absl's records to the stderr of
  when absl was imported, not this test's. setup_console changes the handlers' list in place:
  copies are kept."""
  loggers = [logging.getLogger("glmjax"), logging.getLogger(), absl_logging.get_absl_logger()]
  absl_handler, verbosity = absl_logging.get_absl_handler(), absl_flags.FLAGS["verbosity"]
  saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
  absl_saved = (absl_handler.python_handler.formatter, absl_handler.filters[:],
                verbosity.value, verbosity.using_default_value)
  unraisable_hook = sys.unraisablehook  # setup_console wraps it
  parsed = absl_flags.FLAGS.is_parsed()
  yield
  sys.unraisablehook = unraisable_hook
  if not parsed and absl_flags.FLAGS.is_parsed():  # cli.run's parse; tokamax's mark_as_parsed
    absl_flags.FLAGS.unparse_flags()  # else absl's handler writes to the stderr it was made with
  kept = {handler for handlers, _, _ in saved for handler in handlers}
  for handler in {h for logger in loggers for h in logger.handlers} - kept:
    handler.close()  # a run's log file in this test's folder
  verbosity.value = absl_saved[2]  # sets the absl or root logger's level: both put back below
  verbosity.using_default_value = absl_saved[3]
  for logger, (handlers, level, propagate) in zip(loggers, saved):
    logger.handlers[:], logger.propagate = handlers, propagate
    logger.setLevel(level)
  absl_handler.python_handler.setFormatter(absl_saved[0])
  absl_handler.filters[:] = absl_saved[1]
