"""Where a path points: a local file system, or a bucket or other URL (gs://...).

A leaf: it imports no glmjax module, so every layer (data/ among them) may use it.
"""
from __future__ import annotations


def is_remote(path: str) -> bool:
  """A bucket or other URL (gs://...): no local folder, no file to append to or lock."""
  return "://" in path
