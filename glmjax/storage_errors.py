"""What a failed checkpoint read or write means, from the error and its chain of causes.

A restore that fails is "unreadable" (permissions, I/O, storage errors: stop, touch nothing),
"damaged" (files missing or cut off, data that does not decode: skip to an older checkpoint) or
"unknown" (anything else, such as memory or a bug: stop). A save that fails for a reason the
user must fix (a full disk, a quota, a read-only or unwritable folder) is named in one line.
"""
from __future__ import annotations

import errno
import json
import os
import shutil

from glmjax import error_text, paths


# Words of an error (or of its causes) that mean "could not read", not "the data is bad":
# POSIX errors, and the status codes TensorStore and cloud storage clients put in messages.
_UNREADABLE_WORDS = ("permission denied", "permission_denied", "access denied", "forbidden",
                     "input/output error", "unavailable", "deadline_exceeded", "unauthenticated")


# Words of an error (or of its causes) that mean the checkpoint's bytes are bad or missing:
# only these make a checkpoint "damaged" (skipped). Any other failure stops the run.
_DAMAGED_WORDS = ("not_found", "not found", "no such file", "out_of_range", "data_loss",
                  "corrupt", "decompress", "unexpected end of", "truncated")

# Why a save failed, when it is the user's to fix: errno first, then words of the message.
_UNWRITABLE_ERRNOS = {errno.ENOSPC: "no space left on device",
                      errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
                      errno.EACCES: "permission denied", errno.EPERM: "permission denied"}
_UNWRITABLE_WORDS = {"no space left on device": "no space left on device",
                     "disk quota exceeded": "disk quota exceeded",
                     "read-only file system": "read-only file system",
                     "permission denied": "permission denied",
                     "permission_denied": "permission denied"}


def write_cause(error: BaseException) -> str | None:
  """Why a save failed, if it is for the user to fix (disk full, quota, read-only, access)."""
  errors = list(chain(error))
  for each in errors:
    if isinstance(each, OSError) and each.errno in _UNWRITABLE_ERRNOS:
      return _UNWRITABLE_ERRNOS[each.errno]
  texts = [str(each).lower() for each in errors]
  return next((cause for phrase, cause in _UNWRITABLE_WORDS.items()
               if any(phrase in text for text in texts)), None)


def restore_failure(error: BaseException) -> tuple[str, str]:
  """('unreadable' | 'damaged' | 'unknown', one line) for an error raised by a restore."""
  reason = _unreadable_reason(error)
  if reason is not None:
    return "unreadable", reason
  for each in chain(error):
    if isinstance(each, (FileNotFoundError, json.JSONDecodeError, EOFError)) or any(
        word in str(each).lower() for word in _DAMAGED_WORDS):
      return "damaged", f"cut off, files missing or unreadable data ({short(each)})"
  return "unknown", short(error)


def chain(error: BaseException | None):
  """`error`, then its causes and contexts, each once."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def _cause_line(error: BaseException | None, errnos, words) -> str | None:
  """The first line of `error` or of its causes that matches `errnos` or `words`."""
  for each in chain(error):
    if isinstance(each, OSError) and each.errno in errnos:
      return f"{each.strerror or each}" + (f": {each.filename}" if each.filename else "")
    for line in str(each).splitlines():
      if any(word in line.lower() for word in words):
        return line.strip()[:300]
  return None


def _unreadable_reason(error: BaseException | None) -> str | None:
  """The line of `error` or of its causes that says it could not be read; None if none does."""
  return _cause_line(error, (errno.EACCES, errno.EPERM, errno.EIO), _UNREADABLE_WORDS)


def free_space(directory: str) -> str:
  """', X GiB free' on the local disk of `directory`; '' for a bucket or an unknown disk."""
  path = directory
  while path and not os.path.isdir(path):
    path = os.path.dirname(path)
  if paths.is_remote(directory) or not path:
    return ""
  return f" ({shutil.disk_usage(path).free / 2**30:.2f} GiB free there)"


def short(error: Exception) -> str:
  """One line: the error's type and first line (a cause in the middle of a long message, such
  as 'Permission denied', is what decides between stopping and skipping, not this text)."""
  text = error_text.typed_line(error, None)
  return text if len(text) < 300 else text[:300] + "..."
