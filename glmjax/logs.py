"""Where a run's words go: short lines on the console, everything (tracebacks too) in a file.

The console shows glmjax's own lines (process 0 from INFO up, the other processes from WARNING
up) and library records from warnings up, each as its first line, without tracebacks. Orbax's
errors from its background save threads are left off the console: the save's failure reaches
the training loop and is reported there once; so are the reads a failed restore abandons
(asyncio's and TensorStore's reports of them), the restore's verdict being the line that
counts. The run's log file, WORKDIR/train.log (other processes: train.process-N.log;
glmjax/run_log.py picks it and copies it into a bucket workdir), is appended with every one of
those records in full, and the traceback of the failure that stopped the run; the console gets
the failure as one line.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import traceback
from typing import NoReturn

from absl import logging as absl_logging

from glmjax import error_text

_FORMAT = "%(asctime)s %(message)s"


def _ours() -> logging.Logger:
  return logging.getLogger("glmjax")


class _FirstLine(logging.Formatter):
  """A library record as one console line: its first line, no traceback or stack, and where the
  rest is when a run's log file is attached (a record from before, such as a jax plugin's at
  start-up, is on the console only)."""

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
    files = [handler.glmjax_shown_path for handler in logging.getLogger().handlers
             if getattr(handler, "glmjax_run_log", False)]
    return lines[0][:400] + ((f" [...; in full in {files[0]}]" if files else " [...]")
                             if cut else "")


# Orbax's notices that a checkpoint folder opened for reading is read-only (evaluate, generate,
# convert and init_from open it so on purpose), and that a step lacks its commit record
# (_CHECKPOINT_METADATA, the only file Orbax words so; the step still restores and its checksums
# are verified; a state's missing tree file is a damaged step, said by glmjax): on the console
# they are noise.
_ORBAX_NOISE = ("read_only=True", "directory is read only", "Metadata file does not exist")


def _shown_on_console(record: logging.LogRecord) -> bool:
  """A library record for the console: not Orbax's errors (glmjax reports the failure itself,
  in one line), nor its notices above, nor asyncio's "Task exception was never retrieved" for
  the reads of a restore Orbax gave up (one per array: the failure is reported once, as the
  checkpoint skipped or the restore failed; a save's task that fails is still shown). The log
  file still gets them all."""
  orbax = f"{os.sep}orbax{os.sep}"
  if orbax not in record.pathname and record.name != "asyncio":
    return True
  if orbax in record.pathname and record.levelno >= logging.ERROR:
    return False
  try:
    message = record.getMessage()
  except Exception:  # noqa: BLE001 - a malformed call: let the handler report it as usual
    return True
  if record.name == "asyncio":  # Orbax's read of one array, from a restore that failed
    return not ((orbax in message and "async_deserialize" in message)
                or ("Future exception was never retrieved" in message
                    and "Error reading" in message and "OCDBT" in message))
  return not any(notice in message for notice in _ORBAX_NOISE)


def _late_read_on_a_closed_loop(unraisable) -> bool:
  """A read that Orbax's failed restore left in flight, finishing after Orbax closed its event
  loop: TensorStore's native callback calls the loop's call_soon_threadsafe, which refuses, and
  Python would print its traceback (one per read, dozens, among the lines that say which
  checkpoint was skipped). Nothing is lost. Only that shape is matched: the refusal raised in
  asyncio's call_soon_threadsafe called from no Python frame, for no object (a finalizer's
  would name it)."""
  if unraisable.object is not None or not (
      isinstance(unraisable.exc_value, RuntimeError)
      and str(unraisable.exc_value) == "Event loop is closed"):
    return False
  frames = traceback.extract_tb(unraisable.exc_traceback)
  return bool(frames) and frames[0].name == "call_soon_threadsafe" and (
      f"{os.sep}asyncio{os.sep}" in frames[0].filename)


def _quiet_late_reads(previous):
  def hook(unraisable):
    if _late_read_on_a_closed_loop(unraisable):
      _ours().debug("A read of an abandoned checkpoint restore ended after its event loop:",
                    exc_info=(unraisable.exc_type, unraisable.exc_value,
                              unraisable.exc_traceback))
    else:
      previous(unraisable)
  hook.quiets_late_reads = True
  return hook


def setup_console(process_index: int) -> None:
  """The console for process `process_index` (INFO on process 0, WARNING elsewhere). Before
  jax.distributed is joined, call it with 0 (every process speaks), then again with the real
  index; calling it again replaces the handler."""
  if not getattr(sys.unraisablehook, "quiets_late_reads", False):
    sys.unraisablehook = _quiet_late_reads(sys.unraisablehook)
  absl_logging.set_verbosity(absl_logging.WARNING)
  library = absl_logging.get_absl_handler()
  library.setFormatter(_FirstLine(absl_logging.PythonFormatter()))
  if _shown_on_console not in library.filters:
    library.addFilter(_shown_on_console)
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
  handler.setLevel(logging.INFO if process_index == 0 else logging.WARNING)
  ours = _ours()
  ours.handlers[:] = [handler]
  ours.setLevel(logging.DEBUG)  # the file handler takes DEBUG (tracebacks); the console does not
  ours.propagate = False


class _RunLogFile(logging.FileHandler):
  """The run's log file. A write that fails (a full disk, a workdir removed or made read-only)
  is said once on the console: logging's own handling printed "--- Logging error ---" and a
  traceback for every record after it, hundreds of lines on a full disk around the one line
  that says what happened. Later records are still tried, and land once there is room."""

  glmjax_run_log = True
  failed = False

  def handleError(self, record: logging.LogRecord) -> None:
    error = sys.exc_info()[1]
    if not isinstance(error, OSError):  # a malformed record: logging's own report, as ever
      super().handleError(record)
      return
    if not self.failed:
      self.failed = True  # first: the warning below reaches this handler too
      _ours().warning("Could not write the run's log file %s (%s); lines and tracebacks from "
                      "here on may be missing from it.", self.baseFilename,
                      error.strerror or error)

  def close(self) -> None:
    try:
      super().close()
    except OSError:  # the lines still buffered cannot be written either; said once above
      if not self.failed:
        raise


def attach_file(path: str, shown: str | None = None) -> None:
  """Appends every glmjax line (and DEBUG tracebacks) to `path`, instead of any earlier file;
  the folder must exist. `shown`: the file a console line names for the rest of a record
  (a bucket workdir's copy of `path`; default `path`)."""
  for logger in (_ours(), logging.getLogger()):
    for old in [h for h in logger.handlers if getattr(h, "glmjax_run_log", False)]:
      logger.removeHandler(old)
      old.close()
  handler = _RunLogFile(path, encoding="utf-8")
  handler.glmjax_shown_path = shown or path
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
  where = f" (traceback in {path})" if path else ""
  stopped = f"Stopped by {error_text.typed_line(error, None)}{where}"
  log.error("%s", str(error) if expected else stopped)
  if path:
    log.debug("Traceback of the failure above:", exc_info=error)
  elif not expected:  # no file to put it in: a bug's traceback must not be lost
    log.error("Traceback:", exc_info=error)


def fail(error: BaseException, log_path: str | None = None, *, expected: bool = True,
         status: int = 1) -> NoReturn:
  """Ends the command: `error` as one console line, its traceback only in the log file at
  `log_path` (logs.report_failure), exit status `status`."""
  if not logging.getLogger("glmjax").handlers:  # stopped before the command set up its console
    setup_console(0)
  report_failure(error, log_path, expected=expected)
  raise SystemExit(status) from None


def fail_keeping_traceback(error: BaseException, status: int = 1) -> NoReturn:
  """`fail` for an error of a type that bugs raise too (ValueError, OSError): the line names a
  file in the temporary folder that keeps the traceback."""
  path = _keep_traceback(error)
  fail(ValueError(f"{error} (traceback in {path})" if path else str(error)), status=status)


INTERRUPTED = 130  # a command Ctrl-C ended: 128 + SIGINT, as a shell reports it


def exit_at_once(status: int) -> NoReturn:
  """Ends the process with `status` without the interpreter's finalization (cli.run, for a
  command Ctrl-C ended), once its Python threads have ended and its lines are written.

  Ctrl-C's KeyboardInterrupt can cut Python's wait for native work that goes on: an XLA compile
  on jaxlib's thread pool. The usual exit then runs jax's atexit clean-up, which frees the
  backend under that compile, and the process crashes after its one line (SIGSEGV, status 139).
  So this does what the interpreter's shutdown does first, waiting for the threads that are not
  daemons (Orbax writes a save in one: a save under way completes), flushes the log handlers
  and the console, and leaves by os._exit: no atexit handler runs, nothing is freed. A Ctrl-C
  during that wait ends it: a save cut short is left in Orbax's temporary folder, never read as
  a checkpoint and removed at the next start (checkpoint.py: cleanup_tmp_directories)."""
  current = threading.current_thread()
  try:
    # As the interpreter's exit does first: the threading atexit calls wake idle thread pools
    # (concurrent.futures', which Orbax keeps until its manager closes) so that their threads
    # end, and multiprocessing's exit stops a pool's workers and frees its semaphores.
    for call in reversed(getattr(threading, "_threading_atexits", [])):
      call()
    for thread in threading.enumerate():
      if thread is not current and not thread.daemon:
        thread.join()
    if "multiprocessing.util" in sys.modules:
      sys.modules["multiprocessing.util"]._exit_function()  # pylint: disable=protected-access
  except KeyboardInterrupt:
    pass
  logging.shutdown()  # flushes and closes every handler: the console, the run's log file
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):  # closed, or a pipe whose reader left
      pass
  os._exit(status)  # pylint: disable=protected-access


def _keep_traceback(error: BaseException) -> str | None:
  """The path of a new file in the temporary folder holding `error`'s traceback; None when it
  cannot be written."""
  try:
    handle, path = tempfile.mkstemp(prefix="glmjax-traceback-", suffix=".txt")
    with os.fdopen(handle, "w", encoding="utf-8") as f:
      traceback.print_exception(error, file=f)
    return path
  except OSError:
    return None
