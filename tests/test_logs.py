"""The console gets library records as one line without tracebacks; Orbax's save-thread errors
stay off it; the log file gets everything in full, and a bucket workdir gets a copy of it."""
import importlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from absl import logging as absl_logging

from glmjax import logs, paths, run_log as run_log_lib, train


def _record(pathname, level, message, exc_info=None):
  return logging.LogRecord("absl", level, pathname, 1, message, None, exc_info)


def test_a_library_record_is_one_line_on_the_console_and_orbax_errors_and_notices_stay_off():
  try:
    raise ValueError("deep\ninside")
  except ValueError as error:
    exc_info = (type(error), error, error.__traceback__)
  formatter = logs._FirstLine(logging.Formatter("%(message)s"))
  record = _record("/x/site-packages/jax/a.py", logging.WARNING, "first\nsecond", exc_info)
  line = formatter.format(record)
  assert line == "first [...]" and "Traceback" not in line  # no log file attached
  assert record.exc_info is exc_info  # left intact for the log file's handler
  assert "Traceback" in logging.Formatter("%(message)s").format(record)
  orbax = f"{os.sep}x{os.sep}orbax{os.sep}checkpoint{os.sep}future.py"
  assert not logs._shown_on_console(_record(orbax, logging.ERROR, "save thread failed"))
  assert logs._shown_on_console(_record(orbax, logging.WARNING, "a warning"))
  assert logs._shown_on_console(_record("/x/jax/a.py", logging.ERROR, "not orbax"))
  # A folder opened read-only on purpose (evaluate, generate, convert, init_from).
  manager = f"{os.sep}x{os.sep}orbax{os.sep}checkpoint{os.sep}checkpoint_manager.py"
  assert not logs._shown_on_console(_record(
      manager, logging.WARNING, "CheckpointManagerOptions.read_only=True, setting save_interval"))
  assert not logs._shown_on_console(_record(
      manager, logging.WARNING, "Given directory is read only=/runs/a/checkpoints"))
  # A step without its commit record restores (and its checksums are verified).
  assert not logs._shown_on_console(_record(
      manager, logging.WARNING, "Metadata file does not exist: /runs/a/2/_CHECKPOINT_METADATA"))
  # The reads of a restore Orbax gave up, one record per array; asyncio's other records stay.
  never_retrieved = _record(f"{os.sep}x{os.sep}asyncio{os.sep}base_events.py", logging.ERROR,
                            "Task exception was never retrieved\nfuture: <Task finished coro="
                            f"<async_deserialize() defined at {os.sep}x{os.sep}orbax{os.sep}"
                            "checkpoint/serialization.py:394>>")
  never_retrieved.name = "asyncio"
  assert not logs._shown_on_console(never_retrieved)
  never_retrieved.msg = "Task exception was never retrieved\nfuture: <Task coro=<mine()>>"
  assert logs._shown_on_console(never_retrieved)
  never_retrieved.msg = ("Task exception was never retrieved\nfuture: <Task coro=<async_save() "
                         f"defined at {os.sep}x{os.sep}orbax{os.sep}checkpoint/handler.py:12>>")
  assert logs._shown_on_console(never_retrieved)  # a save's failure nobody else reports
  never_retrieved.msg = ("Future exception was never retrieved\nfuture: <Future finished "
                         "exception=ValueError('NOT_FOUND: Error opening \"zarr\" driver: Error "
                         "reading \"params.w/.zarray\" in OCDBT database at local file')>")
  assert not logs._shown_on_console(never_retrieved)  # TensorStore's read, as a bare future


_LATE_READS = """
import asyncio, sys
from glmjax import logs
loop = asyncio.new_event_loop()
loop.close()
seen = []
sys.unraisablehook, default = seen.append, sys.unraisablehook
class Finalizer:
  def __del__(self):
    loop.call_soon_threadsafe(print)
Finalizer()
sys.unraisablehook = default
Args = type(seen[0])  # sys.UnraisableHookArgs, to hand the hook what the interpreter hands it
logs.setup_console(0)
try:
  loop.call_soon_threadsafe(print)
except RuntimeError as error:
  late = error
# TensorStore's native callback: the traceback starts in call_soon_threadsafe, for no object.
for _ in range(3):
  sys.unraisablehook(Args((RuntimeError, late, late.__traceback__.tb_next, None, None)))
# A finalizer's refusal, native code's refusal for an object, other errors still print.
sys.unraisablehook(seen[0])
sys.unraisablehook(Args((RuntimeError, late, late.__traceback__.tb_next, None, Args)))
other = RuntimeError("another problem")
sys.unraisablehook(Args((RuntimeError, other, late.__traceback__.tb_next, None, None)))
sys.unraisablehook(Args((ValueError, ValueError("a real problem"), None, None, None)))
print("done", flush=True)
"""


def test_reads_finishing_after_a_failed_restore_print_no_tracebacks_and_other_errors_still_do():
  finished = subprocess.run([sys.executable, "-c", _LATE_READS], capture_output=True, text=True,
                            timeout=120, check=True)
  assert "done" in finished.stdout
  assert finished.stderr.count("RuntimeError: Event loop is closed") == 2
  assert "Finalizer.__del__" in finished.stderr and "UnraisableHookArgs" in finished.stderr
  assert "another problem" in finished.stderr and "a real problem" in finished.stderr


def test_a_bucket_workdir_logs_to_a_local_file_named_after_it():
  assert run_log_lib.log_file("/runs/a", 0) == "/runs/a/train.log"
  assert run_log_lib.log_file("/runs/a", 3) == "/runs/a/train.process-3.log"
  path = run_log_lib.log_file("gs://bucket/run", 0)
  assert "://" not in path and path.endswith("glmjax-gs_bucket_run-train.log")


@pytest.fixture
def bucket(tmp_path, monkeypatch, logging_restored):
  """A local folder standing in for a gs:// workdir, and the VM's temporary folder (which
  deleting the VM erases); the logging that train.run sets up is undone afterwards."""
  monkeypatch.setattr(run_log_lib, "is_remote", lambda workdir: True)
  monkeypatch.setattr(run_log_lib, "COPY_EVERY_S", 0.05)
  vm = tmp_path / "vm-tmp"
  vm.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(vm))
  return tmp_path / "bucket" / "run", vm


def _run(workdir, monkeypatch, train_and_evaluate):
  """train.run (the command) with `train_and_evaluate` in place of training; its exit code."""
  monkeypatch.setattr(train, "train_and_evaluate", train_and_evaluate)
  try:
    train.run(importlib.import_module("configs.base").get_config("local"), str(workdir))
  except SystemExit as stop:
    return stop.code
  return 0


def _wait_for(predicate, timeout_s=30.0):
  deadline = time.monotonic() + timeout_s
  while not predicate():
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.02)


def test_a_bucket_workdir_keeps_each_runs_log_and_traceback_after_the_vm_is_deleted(
    bucket, monkeypatch, capfd):
  workdir, vm = bucket
  copies = lambda: sorted((workdir / "logs").glob("train-0-*.log"))  # noqa: E731

  def fails(message):
    def train_and_evaluate(config, workdir_, termination):
      logging.getLogger("glmjax.train").info("%s: step 1", message)
      # Copied while the run goes, not only at its end.
      _wait_for(lambda: any(f"{message}: step 1" in path.read_text() for path in copies()))
      raise KeyError(message)
    return train_and_evaluate

  assert _run(workdir, monkeypatch, fails("first run")) == 1
  (first,) = copies()
  assert f"Stopped by KeyError: 'first run' (traceback in {first})" in capfd.readouterr().err
  assert _run(workdir, monkeypatch, fails("second run")) == 1
  (second,) = set(copies()) - {first}  # a new name, even within the same second
  assert f"(traceback in {second})" in capfd.readouterr().err
  (local,) = vm.iterdir()
  assert "first run" in local.read_text()  # the VM's file has both runs; a copy has its own
  local.unlink()  # the dead VM deleted and recreated
  first_log, second_log = first.read_text(), second.read_text()
  assert "Traceback (most recent call last)" in first_log and "KeyError: 'first run'" in first_log
  assert "second run" not in first_log
  assert "Traceback (most recent call last)" in second_log and "first run" not in second_log


def test_a_log_copy_that_fails_is_one_warning_and_the_run_goes_on(bucket, monkeypatch, capfd):
  workdir, vm = bucket
  workdir.mkdir(parents=True)
  (workdir / "logs").write_text("a file where the copies' folder would be")

  def trains(config, workdir_, termination):
    for step in range(10):  # long enough for several copies to fail
      logging.getLogger("glmjax.train").info("step %d", step)
      time.sleep(0.05)
    return {"step": 10}

  assert _run(workdir, monkeypatch, trains) == 0
  (local,) = vm.iterdir()
  log = local.read_text()
  assert log.count("Could not copy the log file") == 1 and "step 9" in log
  assert f"it stays at {local} on this VM only" in log
  assert capfd.readouterr().err.count("Could not copy the log file") == 1


def test_a_local_workdirs_log_is_not_copied(tmp_path, logging_restored):
  assert paths.is_remote("gs://bucket/run") and not paths.is_remote(str(tmp_path))
  run_log = run_log_lib.RunLog.attach(str(tmp_path), 0)
  with run_log:
    logging.getLogger("glmjax.train").warning("a line")
  assert "a line" in (tmp_path / "train.log").read_text()
  assert run_log.copy is None and run_log.where == str(tmp_path / "train.log")
  assert os.listdir(tmp_path) == ["train.log"]  # no logs/ folder, no copy


def test_when_the_copy_cannot_be_written_the_failure_line_names_the_vms_file(bucket, monkeypatch,
                                                                            capfd):
  workdir, vm = bucket
  workdir.mkdir(parents=True)
  (workdir / "logs").write_text("a file where the copies' folder would be")

  def fails(config, workdir_, termination):
    _wait_for(lambda: "Could not copy" in next(vm.iterdir()).read_text())
    raise KeyError("a bug")

  assert _run(workdir, monkeypatch, fails) == 1
  (local,) = vm.iterdir()
  assert f"Stopped by KeyError: 'a bug' (traceback in {local})" in capfd.readouterr().err
  assert "Traceback (most recent call last)" in local.read_text()


def test_only_process_0_s_console_shows_progress_the_other_processes_show_warnings(
    logging_restored, capfd):
  log = logging.getLogger("glmjax.train")
  logs.setup_console(1)
  log.info("step 1 on process 1")
  log.warning("a warning on process 1")
  console = capfd.readouterr().err
  assert "step 1 on process 1" not in console and "a warning on process 1" in console
  logs.setup_console(0)
  log.info("step 1 on process 0")
  assert "step 1 on process 0" in capfd.readouterr().err


def test_a_failure_is_one_console_line_and_its_traceback_goes_to_the_log_file_only(
    tmp_path, logging_restored, capfd):
  logs.setup_console(0)
  path = tmp_path / "train.log"
  logs.attach_file(str(path))
  try:
    raise RuntimeError("shapes do not match\n  lhs: (4, 8)\n  rhs: (8, 3)")
  except RuntimeError as error:
    logs.report_failure(error, str(path), expected=False)
  (line,) = capfd.readouterr().err.strip().splitlines()
  assert line.endswith(f"Stopped by RuntimeError: shapes do not match (traceback in {path})")
  log = path.read_text()
  assert "Traceback (most recent call last)" in log and "rhs: (8, 3)" in log


def test_a_log_file_on_a_full_disk_is_one_console_warning_not_a_traceback_per_record(
    logging_restored, capfd):
  """/dev/full fails every write with ENOSPC, as the workdir's disk did when a save filled it."""
  logs.setup_console(0)
  logs.attach_file("/dev/full")
  for step in range(5):
    logging.getLogger("glmjax.train").info("step %d", step)
    logging.getLogger("absl").warning("a library line")
  console = capfd.readouterr().err
  assert "Logging error" not in console and "Traceback" not in console
  (warning,) = [line for line in console.splitlines() if "log file" in line]
  assert "Could not write the run's log file /dev/full (No space left on device)" in warning
  assert console.count("step 4") == 1  # the console goes on


def test_a_bug_s_traceback_goes_to_the_console_when_there_is_no_log_file(logging_restored,
                                                                        capfd):
  logs.setup_console(0)
  try:
    raise RuntimeError("a bug before the log file was opened")
  except RuntimeError as error:
    logs.report_failure(error, None, expected=False)
  console = capfd.readouterr().err
  assert "Stopped by RuntimeError: a bug before the log file was opened" in console
  assert "Traceback (most recent call last)" in console  # nowhere else to keep it


def test_a_library_record_longer_than_400_characters_is_cut_on_the_console_naming_the_log_file(
    tmp_path, logging_restored):
  formatter = logs._FirstLine(logging.Formatter("%(message)s"))
  record = _record("/x/jax/a.py", logging.WARNING, "x" * 1000)
  assert formatter.format(record) == "x" * 400 + " [...]"  # before any run's log file
  logs.attach_file(str(tmp_path / "train.log"))
  assert formatter.format(record) == "x" * 400 + f" [...; in full in {tmp_path}/train.log]"


def test_a_copy_destination_that_cannot_be_written_is_reported_as_the_run_starts(
    tmp_path, logging_restored):
  """The first copy is made at once, not after the copy interval (300 s): a workdir the VM
  cannot write to is said at start-up, while its owner still watches the console."""
  local = tmp_path / "train.log"
  (tmp_path / "run").write_text("a file where the workdir's folder would be")
  logs.attach_file(str(local))
  copy = tmp_path / "run" / "logs" / "train-0.log"
  with run_log_lib.RunLog(str(local), str(copy), every_s=3600):
    _wait_for(lambda: "Could not copy the log file" in local.read_text())


def test_a_last_copy_that_hangs_ends_the_wait_after_its_limit_and_says_so(tmp_path, monkeypatch,
                                                                         logging_restored):
  """A stuck network (or a preempted VM with seconds left) must not hold the exit forever."""
  monkeypatch.setattr(run_log_lib, "LAST_COPY_WAIT_S", 0.2)
  local = tmp_path / "train.log"
  logs.attach_file(str(local))
  run_log = run_log_lib.RunLog(str(local), str(tmp_path / "bucket" / "train-0.log"),
                               every_s=3600)
  network = threading.Event()
  calls = []

  def copy_now():
    calls.append(len(calls))
    if len(calls) > 1:  # the last copy: the network does not answer until released
      network.wait(timeout=20)

  monkeypatch.setattr(run_log, "_copy_now", copy_now)
  release = threading.Timer(10, network.set)  # so that a wait without a limit ends too
  release.start()
  try:
    with run_log:
      _wait_for(lambda: calls)
  finally:
    network.set()
    release.cancel()
  assert "Could not copy the log file" in local.read_text()
  assert "the last copy took over 0.2 s" in local.read_text()
  assert run_log.where == str(local)  # the copy may lack the last lines


def test_a_copy_holds_the_lines_written_after_the_local_file_was_emptied(tmp_path,
                                                                        logging_restored):
  """This run's lines start where the file ended when it began; a file emptied since (by log
  rotation, or by hand) is copied from its start, not from past its end."""
  local, copy = tmp_path / "train.log", tmp_path / "bucket" / "train-0.log"
  local.write_text("an earlier run's line\n" * 10)
  with run_log_lib.RunLog(str(local), str(copy), every_s=3600):
    _wait_for(copy.exists)
    local.write_text("this run: step 7\n")
  assert copy.read_text() == "this run: step 7\n"


def test_once_a_copy_fails_the_failure_line_names_the_vms_file_not_the_stale_copy(
    tmp_path, logging_restored):
  local, copy = tmp_path / "train.log", tmp_path / "bucket" / "train-0.log"
  logs.attach_file(str(local))
  run_log = run_log_lib.RunLog(str(local), str(copy), every_s=0.02)
  with run_log:
    logging.getLogger("glmjax.train").warning("step 1")
    _wait_for(lambda: run_log.where == str(copy) and "step 1" in copy.read_text())
    copy.unlink()
    copy.mkdir()  # the bucket refuses the copies from now on
    logging.getLogger("glmjax.train").warning("step 2")
    _wait_for(lambda: "Could not copy the log file" in local.read_text())
    # The copy lacks step 2 and whatever follows: a traceback would be looked for in vain there.
    assert run_log.where == str(local)


def test_runs_started_in_the_same_second_each_get_a_copy_of_their_own(bucket, monkeypatch):
  workdir, _ = bucket
  monkeypatch.setattr(time, "gmtime", lambda *args: time.struct_time(
      (2025, 1, 2, 3, 4, 5, 3, 2, 0)))
  names = []
  for _ in range(3):  # three restarts within one second (a crash loop)
    run_log = run_log_lib.RunLog.attach(str(workdir), 0)
    with run_log:
      pass
    names.append(os.path.basename(run_log.copy))
  assert names == ["train-0-20250102-030405.log", "train-0-20250102-030405-2.log",
                   "train-0-20250102-030405-3.log"]
  assert sorted(os.listdir(workdir / "logs")) == sorted(names)


def test_each_process_of_a_bucket_run_copies_its_log_to_a_file_of_its_own(bucket):
  """The processes of a multi-host run start together: each copy is named by its process."""
  workdir, _ = bucket
  run_logs = [run_log_lib.RunLog.attach(str(workdir), index) for index in (0, 1)]
  for index, run_log in enumerate(run_logs):
    with open(run_log.local, "a", encoding="utf-8") as handle:
      handle.write(f"process {index}'s line\n")
  for run_log in run_logs:
    with run_log:
      pass
  assert [os.path.basename(run_log.copy)[:8] for run_log in run_logs] == ["train-0-", "train-1-"]
  assert sorted(os.listdir(workdir / "logs")) == sorted(
      os.path.basename(run_log.copy) for run_log in run_logs)
  for index, run_log in enumerate(run_logs):
    assert f"process {index}'s line" in open(run_log.copy, encoding="utf-8").read()


def test_lines_whose_copy_failed_reach_the_bucket_once_it_takes_copies_again(tmp_path):
  """A copy that fails is not counted as made: the copy at exit writes what it could not."""
  local, copy = tmp_path / "train.log", tmp_path / "bucket" / "train-0.log"
  run_log = run_log_lib.RunLog(str(local), str(copy), every_s=3600)
  local.write_text("step 1\n")
  copy.mkdir(parents=True)  # the bucket refuses the copy made as the run starts
  with run_log:
    _wait_for(run_log._warned.is_set)
    copy.rmdir()  # ... and takes copies again; no line was logged since
  assert copy.read_text() == "step 1\n"


def test_a_new_log_file_takes_the_library_records_and_the_earlier_one_gets_no_more(
    tmp_path, logging_restored):
  first, second = tmp_path / "first.log", tmp_path / "second.log"
  logs.attach_file(str(first))
  logs.attach_file(str(second))
  logging.getLogger("glmjax.train").error("a line of ours")
  logging.getLogger("orbax.checkpoint").error("a library's line")
  assert first.read_text() == ""
  assert "a line of ours" in second.read_text() and "a library's line" in second.read_text()


def test_a_cut_library_line_of_a_bucket_run_names_the_bucket_s_copy(bucket):
  """The VM's temporary file goes with the VM: the copy in the workdir is the one to name."""
  workdir, _ = bucket
  run_log = run_log_lib.RunLog.attach(str(workdir), 0)
  line = logs._FirstLine(logging.Formatter("%(message)s")).format(
      _record("/x/jax/a.py", logging.WARNING, "first\nsecond"))
  assert run_log.copy.startswith(str(workdir)) and line == f"first [...; in full in {run_log.copy}]"


def test_a_library_s_info_records_stay_off_the_console_and_its_warnings_show(logging_restored,
                                                                             capfd, monkeypatch):
  absl_logging.use_absl_handler()  # as absl's app.run does for the commands
  logs.setup_console(0)
  # absl's handler keeps the stderr of when absl was imported: in pytest, perhaps another
  # test's capture. A command's is the real one; here it is this test's.
  monkeypatch.setattr(absl_logging.get_absl_handler().python_handler, "stream", sys.stderr)
  absl_logging.info("a library's chatter")
  absl_logging.warning("a library's warning")
  console = capfd.readouterr().err
  assert "a library's warning" in console and "a library's chatter" not in console
