"""A run's log file: WORKDIR/train.log (other processes: train.process-N.log), or for a bucket
workdir, which a file cannot be appended to, a local file copied into WORKDIR/logs/ while the run
goes and once more at its end, so that deleting the VM does not lose it. What goes into the file
is logs.py's concern.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import time

from etils import epath

from glmjax import error_text, logs
# By name: a test makes the run's log alone take a local folder for a bucket (run_log.is_remote).
from glmjax.paths import is_remote

# The logger of these lines when RunLog was in logs.py: the log file names it.
log = logging.getLogger("glmjax.logs")

# Often enough that a VM lost mid-run loses at most a few minutes of its log, rarely enough that
# re-uploading the whole (growing) file costs nothing worth measuring.
COPY_EVERY_S = 300.0
# At exit, how long the last copy may hold up the process's end (a stuck network, a preempted
# VM with seconds left): past it the local file is all there is, and the console says so.
LAST_COPY_WAIT_S = 60.0


def log_file(workdir: str, process_index: int) -> str:
  """The local file this process logs to: in the workdir, or, for a bucket workdir (which a
  file handler cannot append to), in the local temporary folder."""
  name = "train.log" if process_index == 0 else f"train.process-{process_index}.log"
  if is_remote(workdir):
    run = workdir.rstrip("/").replace("://", "_").replace("/", "_")
    return os.path.join(tempfile.gettempdir(), f"glmjax-{run}-{name}")
  return os.path.join(workdir, name)


class RunLog:
  """This process's log file for one run and, for a bucket workdir, its copy in the workdir.

  The copy holds this run's part of the local file (which earlier runs on this VM appended to),
  is rewritten whole by a background thread every `every_s` seconds and once more when the
  `with` block ends, whatever ended it; the training thread never waits on the network except
  for that last copy (at most LAST_COPY_WAIT_S). A copy that fails is logged once as a warning
  and training goes on.
  """

  def __init__(self, local: str, copy: str | None = None, every_s: float = COPY_EVERY_S):
    self.local, self.copy, self.every_s = local, copy, every_s
    # This run's lines start here: the copy leaves out what earlier runs appended.
    self._start = os.path.getsize(local) if os.path.exists(local) else 0
    self._copied_size = -1  # the local file's size at the last good copy
    self._last_ok = False  # no copy yet: a failure line names the local file until one lands
    self._warned = threading.Event()  # set once by whichever thread warns first
    self._folder_made = False
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._copy_until_stopped, daemon=True,
                                    name="glmjax-log-copy")

  @classmethod
  def attach(cls, workdir: str, process_index: int) -> "RunLog":
    """The run's log for `workdir`, attached (attach_file); enter it to start the copying."""
    local = log_file(workdir, process_index)
    run_log = cls(local, _copy_path(workdir, process_index) if is_remote(workdir) else None,
                  COPY_EVERY_S)
    logs.attach_file(local, run_log.copy)  # a VM's temporary file goes with the VM: name the copy
    return run_log

  @property
  def where(self) -> str:
    """The file to name in a failure line: the workdir's copy, unless the last copy failed."""
    return self.copy if self.copy is not None and self._last_ok else self.local

  def __enter__(self) -> "RunLog":
    if self.copy is not None:
      log.info(
          "This run's log file: %s (a bucket cannot be appended to), copied to %s every %g s "
          "and at exit", self.local, self.copy, self.every_s)
      self._thread.start()
    return self

  def __exit__(self, *exc_info) -> None:
    if self.copy is None:
      return
    self._stop.set()
    self._thread.join(LAST_COPY_WAIT_S)
    if self._thread.is_alive():
      self._failed(TimeoutError(f"the last copy took over {LAST_COPY_WAIT_S:g} s"))

  def _copy_until_stopped(self) -> None:
    self._copy_now()  # at once: an unusable destination is reported at start-up
    while not self._stop.wait(self.every_s):
      self._copy_now()
    self._copy_now()  # the last lines: a failure's traceback, logged before the block ended

  def _copy_now(self) -> None:
    try:
      with open(self.local, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == self._copied_size:
          return
        f.seek(self._start if size >= self._start else 0)  # shorter: emptied by someone
        data = f.read()
        size = f.tell()
      destination = epath.Path(self.copy)
      if not self._folder_made:
        destination.parent.mkdir(parents=True, exist_ok=True)
        self._folder_made = True
      destination.write_bytes(data)  # whole: an object in a bucket cannot be appended to
      self._copied_size, self._last_ok = size, True
    except Exception as error:  # noqa: BLE001 - any failure to copy must leave training running
      self._failed(error)

  def _failed(self, error: BaseException) -> None:
    self._last_ok = False
    if not self._warned.is_set():  # once: a bucket down for hours would fill the console
      self._warned.set()
      log.warning(
          "Could not copy the log file to %s (%s); it stays at %s on this VM only. "
          "Training goes on (later copy failures are not reported).", self.copy,
          error_text.typed_line(error, None), self.local)


def _copy_path(workdir: str, process_index: int) -> str:
  """WORKDIR/logs/train-P-<start, UTC>.log, a name no earlier run used: a restart never
  overwrites the copy that holds the previous run's failure."""
  folder = epath.Path(workdir) / "logs"
  stem = f"train-{process_index}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
  path, index = folder / f"{stem}.log", 2
  try:
    while path.exists():
      path, index = folder / f"{stem}-{index}.log", index + 1
  except Exception:  # noqa: BLE001 - the copy's own attempt reports an unreachable workdir
    pass
  return str(path)
