"""Tokenized documents with random access: the interface between corpora and the pipeline.

A document store exposes `doc_lengths` (int64 [num_docs]) and `read(doc_ids, starts, lengths)`,
which returns the requested token slices concatenated in one int32 array. Prepared shards on
disk (data/prepare.py) implement the same two members, so the pipeline reads only what its rows
need.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class DocumentStore(Protocol):
  doc_lengths: np.ndarray

  def read(self, doc_ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    ...


def gather_indices(bases: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """Flat indices base_i + 0..len_i-1 for every i, concatenated, without a Python loop."""
  lengths = np.asarray(lengths, dtype=np.int64)
  total = int(lengths.sum())
  if total == 0:
    return np.zeros(0, dtype=np.int64)
  piece_starts = np.cumsum(lengths) - lengths
  offsets = np.arange(total, dtype=np.int64) - np.repeat(piece_starts, lengths)
  return np.repeat(np.asarray(bases, dtype=np.int64), lengths) + offsets


class InMemoryDocs:
  """Documents as one flat token array plus offsets (offsets[i]:offsets[i+1] is document i)."""

  def __init__(self, tokens: np.ndarray, offsets: np.ndarray):
    self.tokens = np.asarray(tokens)
    self.offsets = np.asarray(offsets, dtype=np.int64)
    if self.offsets.ndim != 1 or self.offsets[0] != 0 or self.offsets[-1] != len(self.tokens):
      raise ValueError("offsets must start at 0 and end at len(tokens)")
    self.doc_lengths = np.diff(self.offsets)

  @classmethod
  def from_lists(cls, docs: Sequence[Sequence[int]]) -> "InMemoryDocs":
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = (np.concatenate([np.asarray(d, dtype=np.int32) for d in docs])
            if len(docs) and offsets[-1] else np.zeros(0, np.int32))
    return cls(flat, offsets)

  def __len__(self) -> int:
    return len(self.doc_lengths)

  def read(self, doc_ids, starts, lengths) -> np.ndarray:
    bases = self.offsets[np.asarray(doc_ids, dtype=np.int64)] + np.asarray(starts, dtype=np.int64)
    return self.tokens[gather_indices(bases, lengths)].astype(np.int32, copy=False)
