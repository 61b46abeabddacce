"""Where a run's words go: short lines on the console, everything (tracebacks too) in a file.

The console shows glmjax's own lines (process 0 from INFO up, the other processes from WARNING
up) and library records from warnings up, each as its first line, without tracebacks. Orbax's
errors from its background save threads are left off the console: the save's failure reaches
the training loop and is reported there once. The run's log file, WORKDIR/train.log (other
processes: train.process-N.log), is appended with every one of those records in full, and the
traceback of the failure that stopped the run; the console gets the failure as one line.
"""
from __future__ import annotations

import logging
import os
import tempfile

from absl import logging as absl_logging

_FORMAT = "%(asctime)s %(message)s"


def _ours() -> logging.Logger:
  return logging.getLogger("glmjax")


class _FirstLine(logging.Formatter):
  """A library record as one console line: its first line, no traceback or stack."""

  def __init__(self, inner: logging.Formatter):
    super().__init__()
    self.inner = inner

  def format(self, record: logging.LogRecord) -> str:
    saved = record.exc_info, record.exc_text, record.stack_info
    record.exc_info = record.exc_text = record.stack_info = None
    try:
      lines = self.inner.format(record).splitlines() or [""]
    finally:
      record.exc_info, record.exc_text, record.stack_info = saved
    cut = len(lines) > 1 or len(lines[0]) > 400 or saved[0] is not None
    return lines[0][:400] + (" [...; in full in the run's train.log]" if cut else "")


def _not_orbax_errors(record: logging.LogRecord) -> bool:
  return not (record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)


def setup_console(process_index: int) -> None:
  """Must run after jax.distributed is initialised (the caller passes the process index)."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  library = absl_logging.get_absl_handler()
  library.setFormatter(_FirstLine(absl_logging.PythonFormatter()))
  if _not_orbax_errors not in library.filters:
    library.addFilter(_not_orbax_errors)
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
  handler.setLevel(logging.INFO if process_index == 0 else logging.WARNING)
  ours = _ours()
  ours.handlers[:] = [handler]
  ours.setLevel(logging.DEBUG)  # the file handler takes DEBUG (tracebacks); the console does not
  ours.propagate = False


def log_file(workdir: str, process_index: int) -> str:
  """The local file this process logs to: in the workdir, or, for a bucket workdir (which a
  file handler cannot append to), in the local temporary folder."""
  name = "train.log" if process_index == 0 else f"train.process-{process_index}.log"
  if "://" in workdir:
    run = workdir.rstrip("/").replace("://", "_").replace("/", "_")
    return os.path.join(tempfile.gettempdir(), f"glmjax-{run}-{name}")
  return os.path.join(workdir, name)


def attach_file(path: str) -> None:
  """Appends every glmjax line (and DEBUG tracebacks) to `path`, instead of any earlier file;
  the folder must exist."""
  for logger in (_ours(), logging.getLogger()):
    for old in [h for h in logger.handlers if getattr(h, "glmjax_run_log", False)]:
      logger.removeHandler(old)
      old.close()
  handler = logging.FileHandler(path, encoding="utf-8")
  handler.glmjax_run_log = True
  handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
  handler.setLevel(logging.DEBUG)
  _ours().addHandler(handler)
  logging.getLogger().addHandler(handler)  # library records, orbax's save threads among them


def report_failure(error: BaseException, path: str | None, *, expected: bool) -> None:
  """One console line for `error`; its traceback only in the log file at `path`.

  `expected`: an error written for the user (config, data, checkpoint), whose message is the
  line; otherwise the line names the error's type and says where the traceback is.
  """
  log = _ours()
  first = (str(error).strip().splitlines() or [""])[0]
  where = f" (traceback in {path})" if path else ""
  log.error("%s", str(error) if expected else f"Stopped by {type(error).__name__}: {first}{where}")
  if path:
    log.debug("Traceback of the failure above:", exc_info=error)
  elif not expected:  # no file to put it in: a bug's traceback must not be lost
    log.error("Traceback:", exc_info=error)
