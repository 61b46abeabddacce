"""A failed checkpoint save or read is sorted by its cause into one verdict (fix the disk, skip a
damaged step, stop), and every host of a job reaches the same one without hanging."""
import errno
import logging
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from glmjax import restore_agreement as agreement
from glmjax import storage_errors

import cpu_devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_free_space_after_a_failed_save_is_that_of_the_nearest_existing_folder_in_gib(
    tmp_path, monkeypatch):
  """A save can fail before its folders exist (a full disk, a read-only mount): the free space
  is then that of the nearest folder above that does, in GiB (2**30 bytes)."""
  asked = []

  def disk_usage(path):
    asked.append(path)
    return types.SimpleNamespace(total=8 * 2**30, used=5 * 2**30, free=3 * 2**29)
  monkeypatch.setattr(storage_errors.shutil, "disk_usage", disk_usage)
  assert storage_errors.free_space(str(tmp_path / "run" / "checkpoints")) == (
      " (1.50 GiB free there)")
  assert asked == [str(tmp_path)]
  assert storage_errors.free_space("gs://bucket/run/checkpoints") == ""  # no local disk to ask


@pytest.mark.parametrize("error, cause", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded"),
    (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
    (PermissionError(errno.EPERM, "Operation not permitted"), "permission denied"),  # chattr +i
    (ValueError("PERMISSION_DENIED: writing gs://bucket/run/checkpoints/4"), "permission denied"),
    (ValueError("RESOURCE_EXHAUSTED: out of memory"), None)])  # not the disk's: re-raised
def test_a_save_that_fails_for_the_user_to_fix_names_the_cause(error, cause):
  try:  # as the writer's callers wrap it
    raise RuntimeError("Error writing to OCDBT database") from error
  except RuntimeError as wrapped:
    assert storage_errors.write_cause(wrapped) == cause


@pytest.mark.parametrize("error, verdict", [
    # The storage did not answer: stop, touch nothing (an older checkpoint reads no better).
    (ValueError("UNAVAILABLE: GCS returned 503 reading gs://b/run/checkpoints/2"), "unreadable"),
    (OSError(errno.EIO, "Input/output error"), "unreadable"),
    # The bytes are bad or missing: skip to the older checkpoint.
    (ValueError("DATA_LOSS: Error reading chunk 0.1: checksum mismatch"), "damaged"),
    (ValueError("Error reading chunk: failed to decompress (zstd)"), "damaged"),
    (ValueError("OUT_OF_RANGE: Read past the end of the file"), "damaged"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), "damaged"),
    # Neither: stop (memory, a bug).
    (MemoryError("cannot allocate 8 GiB"), "unknown")])
def test_a_failed_restore_is_sorted_by_what_its_chain_of_errors_says(error, verdict):
  try:  # storage errors arrive wrapped by Orbax
    raise RuntimeError("restore failed") from error
  except RuntimeError as wrapped:
    assert storage_errors.restore_failure(wrapped)[0] == verdict


def test_a_chain_that_says_both_unreadable_and_missing_is_unreadable():
  # A denied read of a step's index reads as "not found" to the reader above it: the storage's
  # answer decides, so the run stops and touches nothing, not skip a good step as damaged.
  try:
    try:
      raise PermissionError(errno.EACCES, "Permission denied")
    except PermissionError as denied:
      raise FileNotFoundError("checkpoint 2 not found") from denied
  except FileNotFoundError as error:
    assert storage_errors.restore_failure(error)[0] == "unreadable"


def test_a_failed_restore_is_named_by_its_error_s_type_and_first_line():
  # XLA's errors run on for pages of frames after the line that says what happened.
  error = RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 8.00GiB\n"
                       + "\n".join(f"  frame {i}: xla::Allocate" for i in range(40)))
  assert storage_errors.restore_failure(error) == (
      "unknown", "RuntimeError: RESOURCE_EXHAUSTED: Out of memory allocating 8.00GiB")


def test_a_barrier_mismatch_that_the_reader_wraps_still_reads_as_another_host_s_failure():
  """Orbax's own barrier can meet the other hosts' differing barrier name and raise its own
  error from jax's: this host read fine, so it is a 'peer' failure, not an unknown one that
  would stop every host."""
  def read():
    try:
      raise AssertionError("sync_global_devices name mismatch: ['a', 'b']")
    except AssertionError as error:
      raise RuntimeError("Orbax restore failed") from error
  assert agreement.attempt(read, logging.getLogger(__name__)) == (
      None, ("peer", "the read failed on another host (see that host's log)"))


def test_hosts_that_read_different_steps_meet_different_barriers_and_do_not_go_on(monkeypatch):
  """A host whose storage listing lags reads an older step than the others: its barrier must
  differ from theirs (jax's barrier then fails on every host), not pass as if they agreed."""
  monkeypatch.setattr(agreement.jax, "process_count", lambda: 2)
  names = []
  monkeypatch.setattr(agreement.multihost_utils, "sync_global_devices", names.append)
  agreement.settle(None, "metadata 2")  # the other host read step 2 fine
  other = names[0]

  def barrier(name):  # jax's: every process must name the same barrier
    if name != other:
      raise AssertionError(f"sync_global_devices name mismatch: {[name, other]}")
  monkeypatch.setattr(agreement.multihost_utils, "sync_global_devices", barrier)
  assert agreement.settle(None, "metadata 2") is None
  assert agreement.settle(None, "metadata 4") == (
      "peer", "the read failed on another host (see that host's log)")
  assert agreement.settle(None, "state 2") is not None  # the state's barrier is another one


@pytest.mark.parametrize("mine, other, verdict", [
    ("damaged", "unknown", "unknown"),     # one host cannot tell damage from a bug: all stop
    ("unknown", "damaged", "unknown"),
    ("damaged", "unreadable", "unreadable"),
    ("peer", "damaged", "damaged"),        # the host that saw the damage decides, not 'peer'
    (None, "damaged", "damaged"),
    ("damaged", None, "damaged"),
    (None, None, None)])
def test_the_worst_verdict_of_any_host_holds_for_every_host(monkeypatch, mine, other, verdict):
  """Worse to better: unreadable (stop, touch nothing), unknown (stop), damaged (skip to an older
  checkpoint), peer (failed because another host did), none (restored)."""
  monkeypatch.setattr(agreement.jax, "process_count", lambda: 2)
  # The other host's verdict, gathered as process_allgather gives it: one entry per process.
  monkeypatch.setattr(agreement.multihost_utils, "process_allgather", lambda mine_index: np.array(
      [int(mine_index), agreement.VERDICTS.index(other)]))
  agreed = agreement.agree((mine, "my line") if mine else None)
  assert (agreed[0] if agreed else None) == verdict
  if verdict == mine:
    assert agreed == ((mine, "my line") if mine else None)  # this host's own line


# One host of two: saves steps 1 and 2 of a small sharded state, then restores with process
# 1's read of `part` of step 2 failing as `error` says; prints the outcome as one line.
_PARTIAL_READ = '''
import logging, sys
import numpy as np
import jax
from glmjax import distributed
distributed.initialize(60)
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from glmjax import checkpoint as ck
from glmjax import params_restore
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
directory, part, error = sys.argv[1:4]
mesh = Mesh(np.array(jax.devices()), ("d",))
x = jax.make_array_from_callback((8,), NamedSharding(mesh, P("d")),
                                 lambda index: np.arange(8, dtype=np.float32)[index])
state = {"params": {"w": x}}
layout = ck.parameter_layout(state)
checkpointer = ck.Checkpointer(directory, every=1, keep=3, async_save=False)
for step in (1, 2):
  checkpointer.save(step, {"params": {"w": x + step}},
                    {"param_layout": layout, "state_layout": layout}, force=True)
checkpointer.wait()
original = checkpointer.manager.restore
errors = {"missing": FileNotFoundError("a chunk of this host's shard is missing"),
          "denied": PermissionError("permission denied: this host's credentials")}
def restore(step, args=None):
  if jax.process_index() == 1 and step == 2 and part in args.keys():
    raise errors[error]
  return original(step, args=args)
checkpointer.manager.restore = restore
abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                        state)
if part == "init_from":  # parameters only, from the newest checkpoint: no older one to take
  read = ck.ocp.CheckpointManager.restore
  def restore_params(self, step, args=None):
    if jax.process_index() == 1 and "state" in args.keys():
      raise errors[error]
    return read(self, step, args=args)
  ck.ocp.CheckpointManager.restore = restore_params
  try:
    params_restore.restore_params(directory, abstract["params"], layout)
    print("READ", flush=True)
  except ck.UnusableCheckpointError as failure:
    print("STOPPED", str(failure).splitlines()[0], flush=True)
  sys.exit(0)
def check(metadata, step):  # host 1's own copy of a data file differs, say
  if part == "check" and jax.process_index() == 1:
    raise ValueError("this host's corpus differs")
try:
  restored = checkpointer.restore_latest(abstract, layout, check=check)
  total = multihost_utils.process_allgather(restored.state["params"]["w"], tiled=True).sum()
  print("RESTORED", restored.step, float(total), flush=True)
except ck.UnusableCheckpointError as failure:
  print("STOPPED", str(failure).splitlines()[0], flush=True)
except (ValueError, ck.agreement.RefusedOnAnotherHost) as refusal:
  print("REFUSED", str(refusal).splitlines()[0], flush=True)
checkpointer.close()
'''


@pytest.mark.parametrize("part, error, outcome", [
    ("state", "missing", "RESTORED 1 36.0"),    # both hosts skip the damaged step 2
    ("metadata", "missing", "RESTORED 1 36.0"),
    ("state", "denied", "STOPPED The checkpoint at step 2"),  # both stop: no hang either way
    ("init_from", "missing", "STOPPED checkpoint.init_from: the parameters at step 2"),
    ("check", "", "REFUSED "),  # a check that refuses on host 1 only: both stop, neither hangs
])
def test_a_read_that_fails_on_one_host_only_gives_every_host_one_verdict(tmp_path, part, error,
                                                                       outcome, coordinator_port):
  script = tmp_path / "partial_read.py"
  script.write_text(_PARTIAL_READ)
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": cpu_devices.xla_flags(2),
         "JAX_COORDINATOR_ADDRESS": f"localhost:{coordinator_port}", "JAX_NUM_PROCESSES": "2",
         "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}
  processes = [subprocess.Popen(
      [sys.executable, str(script), str(tmp_path / "checkpoints"), part, error],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env={**env, "JAX_PROCESS_ID": str(index)}) for index in range(2)]
  try:
    results = [process.communicate(timeout=300) for process in processes]
  finally:
    for process in processes:
      process.kill()
  for index, (stdout, stderr) in enumerate(results):
    assert outcome in stdout, (index, stdout, stderr[-3000:])
  if outcome.startswith("RESTORED"):
    assert "Skipping damaged checkpoint 2" in results[1][1]
  elif outcome.startswith("REFUSED"):  # each host says why it stopped
    assert "REFUSED this host's corpus differs" in results[1][0], results[1]
    assert ("REFUSED The checkpoint at step 2 in " in results[0][0]
            and "was refused on another host" in results[0][0]), results[0]
  else:  # host 0 read fine: it stops because host 1 could not
    assert "on another host" in results[0][0], results[0]
