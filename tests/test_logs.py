"""The console gets library records as one line without tracebacks; Orbax's save-thread errors
stay off it; the log file gets everything in full."""
import logging
import os

from glmjax import logs


def _record(pathname, level, message, exc_info=None):
  return logging.LogRecord("absl", level, pathname, 1, message, None, exc_info)


def test_a_library_record_is_one_line_on_the_console_and_orbax_errors_are_left_off():
  try:
    raise ValueError("deep\ninside")
  except ValueError as error:
    exc_info = (type(error), error, error.__traceback__)
  formatter = logs._FirstLine(logging.Formatter("%(message)s"))
  record = _record("/x/site-packages/jax/a.py", logging.WARNING, "first\nsecond", exc_info)
  line = formatter.format(record)
  assert line == "first [...; in full in the run's train.log]" and "Traceback" not in line
  assert record.exc_info is exc_info  # left intact for the log file's handler
  assert "Traceback" in logging.Formatter("%(message)s").format(record)
  orbax = f"{os.sep}x{os.sep}orbax{os.sep}checkpoint{os.sep}future.py"
  assert not logs._not_orbax_errors(_record(orbax, logging.ERROR, "save thread failed"))
  assert logs._not_orbax_errors(_record(orbax, logging.WARNING, "a warning"))
  assert logs._not_orbax_errors(_record("/x/jax/a.py", logging.ERROR, "not orbax"))


def test_a_bucket_workdir_logs_to_a_local_file_named_after_it():
  assert logs.log_file("/runs/a", 0) == "/runs/a/train.log"
  assert logs.log_file("/runs/a", 3) == "/runs/a/train.process-3.log"
  path = logs.log_file("gs://bucket/run", 0)
  assert "://" not in path and path.endswith("glmjax-gs_bucket_run-train.log")
