"""Faults a long run meets: a changed config on resume, lost metrics, a full disk, an unwritable
workdir, a bug; each ends in one readable line and leaves the good checkpoints alone."""
import errno
import importlib
import json
import logging
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from absl import logging as absl_logging

from checkpoint_states import rewrite_metadata
from glmjax import checkpoint, config as config_lib, loop, memory, storage_errors, train
from glmjax import restore_agreement as agreement
from glmjax import workdir as workdir_lib
from test_train import _poison

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def logging_as_it_was():
  """train.run sets up the console and the log file as the command does; undo it afterwards,
  so that later tests' caplog still sees glmjax's records."""
  ours, root = logging.getLogger("glmjax"), logging.getLogger()
  library = absl_logging.get_absl_handler()
  saved = (list(ours.handlers), ours.level, ours.propagate, list(root.handlers),
           library.python_handler.formatter, list(library.filters))
  yield
  for handler in ours.handlers + root.handlers:
    if getattr(handler, "glmjax_run_log", False):
      handler.close()
  ours.handlers[:], ours.level, ours.propagate, root.handlers[:] = saved[:4]
  library.python_handler.setFormatter(saved[4])
  library.filters[:] = saved[5]


def _config(**train_overrides):
  config = importlib.import_module("configs.base").get_config("local")
  # A narrower model on shorter sequences than :local (as in test_train.py): the faults here
  # do not depend on its size, and its steps and first save cost a fraction.
  config.model.update(hidden_size=64, max_position=64)
  config.data.seq_len = 64
  config.train.update(**{"eval_every": 0, "log_every": 1, "steps": 2, **train_overrides})
  config.checkpoint.update(every=2, keep=3, async_save=False)
  return config


def _listing(workdir):
  return sorted(os.listdir(workdir / "checkpoints")), (workdir / "config.json").read_text()


def test_resuming_with_another_seed_is_refused_and_allowed_with_the_flag(tmp_path, caplog):
  train.train_and_evaluate(_config(), str(tmp_path))
  os.remove(tmp_path / "metrics.jsonl")  # and the history goes missing
  before = _listing(tmp_path)
  changed = _config(steps=4, log_every=2)  # more steps, other logging: not a change
  changed.mesh.update(data=2, fsdp=4)  # another mesh: not a change either
  changed.seed = 1
  changed.data.batch_size = 32
  with pytest.raises(workdir_lib.ConfigChangedError,
                     match=r"step 2 .* another config: data.batch_size: 16 -> 32; seed: 0 -> 1\. "
                           r".*allow_config_change=true"):
    train.train_and_evaluate(changed, str(tmp_path))
  assert _listing(tmp_path) == before  # nothing written, nothing deleted
  assert not (tmp_path / "metrics.jsonl").exists()  # a refused start writes no empty history
  changed.train.allow_config_change = True
  assert train.train_and_evaluate(changed, str(tmp_path))["step"] == 4
  assert "Resuming step 2 with a changed config (allowed): data.batch_size" in caplog.text
  assert "metrics.jsonl is missing" in caplog.text and "before step 2 are lost" in caplog.text
  assert [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")] == [4]
  assert json.loads((tmp_path / "config.json").read_text())["seed"] == 1
  assert json.loads((tmp_path / "config.until-step-2.json").read_text())["seed"] == 0


def test_a_device_snapshot_is_written_while_the_next_step_runs(tmp_path, monkeypatch):
  """checkpoint.device_snapshot: the copy of step k goes to Orbax in iteration k+1, right
  after step k+1 is dispatched (not at the next save, a checkpoint period late)."""
  events = []
  push, write = loop.StepReporter.push, checkpoint.Checkpointer._write
  monkeypatch.setattr(loop.StepReporter, "push", lambda self, done, metrics: (
      events.append(("step", done)), push(self, done, metrics))[1])
  monkeypatch.setattr(checkpoint.Checkpointer, "_write", lambda self, step, *a, **k: (
      events.append(("write", step)), write(self, step, *a, **k))[1])
  config = _config(steps=5)
  config.checkpoint.device_snapshot = True
  train.train_and_evaluate(config, str(tmp_path))
  # Saves at 2 and 4 are copies written in the next iteration; the last step is saved directly.
  assert events == [("step", 1), ("step", 2), ("write", 2), ("step", 3), ("step", 4),
                    ("write", 4), ("step", 5), ("write", 5)], events
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4", "5"]


def test_a_device_snapshot_that_would_not_fit_beside_the_step_is_a_start_up_warning():
  gib = 2**30
  analysis = types.SimpleNamespace(argument_size_in_bytes=6 * gib, temp_size_in_bytes=3 * gib)
  level, line = memory.device_snapshot_report(analysis, 2 * gib, 16 * gib)
  assert level == logging.INFO and "2.00 GiB per device (11.00 GiB of 16.00 GiB" in line
  level, line = memory.device_snapshot_report(analysis, 8 * gib, 16 * gib)
  assert level == logging.WARNING, line
  assert "17.00 GiB, more than the device's 16.00 GiB" in line
  assert "set checkpoint.device_snapshot=false" in line
  assert memory.device_snapshot_report(None, gib, None)[0] == logging.INFO  # CPU: nothing to compare


def test_a_device_snapshot_that_exactly_fills_the_device_is_no_warning():
  # 6 + 3 GiB for the step and a 7 GiB copy: 16 GiB, all the device may allocate, and no more.
  gib = 2**30
  analysis = types.SimpleNamespace(argument_size_in_bytes=6 * gib, temp_size_in_bytes=3 * gib)
  level, line = memory.device_snapshot_report(analysis, 7 * gib, 16 * gib)
  assert level == logging.INFO and "(16.00 GiB of 16.00 GiB with the step)" in line, line
  assert memory.device_snapshot_report(analysis, 7 * gib + 1, 16 * gib)[0] == logging.WARNING


def test_only_fields_that_change_what_is_computed_count_as_a_change():
  saved = _config().to_dict()
  later = _config(steps=99, log_every=7).to_dict()
  later["mesh"]["fsdp"], later["model"]["remat"], later["checkpoint"]["every"] = 8, "full", 5
  assert config_lib.trajectory_changes(saved, later) == []
  del saved["optim"]["grad_clip"]  # a field added since: reads as its default
  assert config_lib.trajectory_changes(saved, later) == []
  later["optim"]["learning_rate"], later["data"]["files"] = 1.0, ["a.txt"]
  assert config_lib.trajectory_changes(saved, later) == [
      "data.files: [] -> ['a.txt']", "optim.learning_rate: 0.002 -> 1.0"]


def test_a_resume_that_switches_the_dropout_generator_is_refused_naming_it():
  # rbg draws other masks from the same key: every step after the resume would differ.
  saved, later = _config().to_dict(), _config().to_dict()
  later["train"]["dropout_rng"] = "rbg"
  with pytest.raises(workdir_lib.ConfigChangedError,
                     match=r"step 2 .* another config: train.dropout_rng: 'threefry2x32' -> "
                           r"'rbg'\. .*allow_config_change=true"):
    workdir_lib.check_resume(saved, later, step=2, workdir="/run", allow=False)


def test_the_fields_a_resume_treats_apart_are_fields_of_the_config():
  fields = set(config_lib._flat(config_lib.default_config().to_dict()))
  named = set(config_lib.TRAJECTORY_FIELDS) | set(config_lib.FREE_FIELDS)
  assert named <= fields, sorted(named - fields)


def test_a_full_disk_ends_the_run_in_one_line_and_keeps_the_newest_good_checkpoint(
    tmp_path, monkeypatch):
  real_save = checkpoint._LoopDecidesPreemption.save

  def save(self, step, *args, **kwargs):
    if step == 4:  # as a full disk fails deep inside the writer, wrapped by its callers
      try:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))
      except OSError as error:
        raise ValueError("RESOURCE_EXHAUSTED: Error writing to OCDBT database") from error
    return real_save(self, step, *args, **kwargs)
  monkeypatch.setattr(checkpoint._LoopDecidesPreemption, "save", save)
  with pytest.raises(checkpoint.CheckpointWriteError,
                     match=r"Saving the checkpoint at step 4 to .*checkpoints failed: no space "
                           r"left on device \(\d+\.\d\d GiB free there\)\. Newest good "
                           r"checkpoint: step 2, intact\.") as error:
    train.train_and_evaluate(_config(steps=6), str(tmp_path))
  assert "\n" not in str(error.value)
  monkeypatch.setattr(checkpoint._LoopDecidesPreemption, "save", real_save)
  assert train.train_and_evaluate(_config(steps=6), str(tmp_path))["step"] == 6


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


def test_a_run_keeps_its_newest_checkpoint_keep_checkpoints(tmp_path):
  config = _config()
  config.checkpoint.update(every=1, keep=2)
  outputs = train._outputs(config, str(tmp_path))  # pylint: disable=protected-access
  state = {"w": np.arange(4.0, dtype=np.float32)}
  layout = checkpoint.parameter_layout(state)
  try:
    for at in (1, 2, 3, 4):
      outputs.checkpointer.save(at, state, {"param_layout": layout, "state_layout": layout})
  finally:
    outputs.checkpointer.close()
    outputs.writer.close()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "4"]


def test_start_over_moves_a_workdir_s_damaged_checkpoints_aside_and_trains_from_step_0(tmp_path):
  """checkpoint.start_over=true: a workdir whose every checkpoint is damaged (here one cut off
  mid-write) trains from step 0; the damaged ones are kept beside the folder, not deleted."""
  old = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), every=1, keep=3)
  state = {"w": np.arange(4.0, dtype=np.float32)}
  old.save(5, state, {"param_layout": checkpoint.parameter_layout(state)})
  old.close()
  rewrite_metadata(tmp_path / "checkpoints" / "5", lambda text: text[:len(text) // 2])
  config = _config(steps=2)
  with pytest.raises(checkpoint.UnusableCheckpointError, match="start_over=true"):
    train.train_and_evaluate(config, str(tmp_path))
  config.checkpoint.start_over = True
  assert train.train_and_evaluate(config, str(tmp_path))["step"] == 2
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  (aside,) = tmp_path.glob("checkpoints.damaged-*")
  assert sorted(os.listdir(aside)) == ["5"]


def _run(workdir, **data):
  """The command line's run, in this process."""
  config = _config()
  config.data.update(data)
  with pytest.raises(SystemExit) as stop:
    train.run(config, str(workdir))
  return stop.value.code


def test_a_failure_is_one_console_line_and_its_traceback_goes_to_the_workdir_log(tmp_path,
                                                                                  monkeypatch,
                                                                                  capfd):
  def broken(*args, **kwargs):
    raise KeyError("a bug deep in the loop")
  monkeypatch.setattr(train, "_train", broken)
  assert _run(tmp_path) == 1
  console = capfd.readouterr().err
  assert f"Stopped by KeyError: 'a bug deep in the loop' (traceback in {tmp_path}/train.log)" in (
      console)
  assert "Traceback" not in console
  log = (tmp_path / "train.log").read_text()
  assert "Traceback (most recent call last)" in log and "def broken" not in console
  assert "raise KeyError" in log


def test_a_run_stopped_by_non_finite_steps_ends_in_its_message_not_as_a_bug(tmp_path,
                                                                           monkeypatch, capfd):
  """Non-finite steps come from the data or the config (a learning rate too high), not from a
  bug in glmjax: the console's last line is the error's own advice, exit status 1, with no
  "Stopped by" naming its type and no traceback."""
  _poison(monkeypatch, bad_steps=set(range(1, 100)))  # every step from the first is NaN
  config = _config(steps=6, max_nonfinite_steps=2)
  with pytest.raises(SystemExit) as stop:
    train.run(config, str(tmp_path))
  assert stop.value.code == 1
  err = capfd.readouterr().err
  last = err.strip().splitlines()[-1]
  assert "2 consecutive steps" in last and "Stopped by" not in last
  assert "Traceback" not in err


def test_an_unwritable_workdir_is_one_line_naming_it(tmp_path, capfd):
  (tmp_path / "file").write_text("not a folder")
  assert _run(tmp_path / "file" / "run") == 1
  console = capfd.readouterr().err.strip().splitlines()
  assert len(console) == 1 and f"--workdir={tmp_path}/file/run cannot be written" in console[0]


def test_a_damaged_tokenizer_is_one_line_without_a_traceback(tmp_path, capfd):
  (tmp_path / "tokenizer.json").write_bytes(b"\x7fELF\x02\x01" + bytes(range(256)))
  assert _run(tmp_path / "run", tokenizer="hf",
              tokenizer_path=str(tmp_path / "tokenizer.json")) == 1
  console = capfd.readouterr().err
  assert "cannot be read as a tokenizer.json" in console and "Traceback" not in console


# One host of two: saves steps 1 and 2 of a small sharded state, then restores with process
# 1's read of `part` of step 2 failing as `error` says; prints the outcome as one line.
_PARTIAL_READ = '''
import logging, sys
import numpy as np
import jax
from glmjax import parallel
parallel.initialize_distributed(60)
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from glmjax import checkpoint as ck
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
    ck.restore_params(directory, abstract["params"], layout)
    print("READ", flush=True)
  except ck.UnusableCheckpointError as failure:
    print("STOPPED", str(failure).splitlines()[0], flush=True)
  sys.exit(0)
try:
  restored = checkpointer.restore_latest(abstract, layout)
  total = multihost_utils.process_allgather(restored.state["params"]["w"], tiled=True).sum()
  print("RESTORED", restored.step, float(total), flush=True)
except ck.UnusableCheckpointError as failure:
  print("STOPPED", str(failure).splitlines()[0], flush=True)
checkpointer.close()
'''


@pytest.mark.parametrize("part, error, outcome", [
    ("state", "missing", "RESTORED 1 36.0"),    # both hosts skip the damaged step 2
    ("metadata", "missing", "RESTORED 1 36.0"),
    ("state", "denied", "STOPPED The checkpoint at step 2"),  # both stop: no hang either way
    ("init_from", "missing", "STOPPED checkpoint.init_from: the parameters at step 2"),
])
def test_a_read_that_fails_on_one_host_only_gives_every_host_one_verdict(tmp_path, part, error,
                                                                       outcome, coordinator_port):
  script = tmp_path / "partial_read.py"
  script.write_text(_PARTIAL_READ)
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
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
  else:  # host 0 read fine: it stops because host 1 could not
    assert "on another host" in results[0][0], results[0]
