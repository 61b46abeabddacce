"""An error said in one line, for the messages and log lines that report it.

A leaf: it imports no glmjax module, so every layer (model/ and data/ among them) may use it.
"""
from __future__ import annotations

import re

# Terminal colour codes: some libraries (torch) colour their messages; a log file or a
# message of ours would carry them as junk.
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def _message_line(error: BaseException, limit: int | None) -> str:
  lines = _COLOUR.sub("", str(error)).strip().splitlines()
  return (lines[0].rstrip() if lines else "")[:limit]


def first_line(error: BaseException, limit: int | None = 300) -> str:
  """The first line of `error`'s message without colour codes or the blank space around it,
  cut at `limit` characters (None: whole); the error's type name where the message is empty
  (`raise RuntimeError()`), so that a report still says what failed."""
  return _message_line(error, limit) or type(error).__name__


def typed_line(error: BaseException, limit: int | None = 300) -> str:
  """'Type: first line' (as `first_line`, the line cut at `limit`); 'Type: ' where the message
  is empty."""
  return f"{type(error).__name__}: {_message_line(error, limit)}"
