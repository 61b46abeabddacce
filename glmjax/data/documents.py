"""Tokenized documents with random access: the interface between corpora and the pipeline.

A document store exposes `doc_lengths` (int64 [num_docs]) and `read(doc_ids, starts, lengths)`,
which returns the requested token slices concatenated in one int32 array. Prepared shards on
disk (data/prepare.py) implement the same two members, so the pipeline reads only what its rows
need.
"""
from __future__ import annotations

import json
import os
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


class DocumentSubset:
  """A view of some documents of another store: document i here is `ids[i]` there."""

  def __init__(self, base: DocumentStore, ids: np.ndarray):
    self.base = base
    self.ids = np.asarray(ids, dtype=np.int64)
    self.doc_lengths = np.asarray(base.doc_lengths)[self.ids].astype(np.int64, copy=False)

  def __len__(self) -> int:
    return len(self.ids)

  def read(self, doc_ids, starts, lengths) -> np.ndarray:
    return self.base.read(self.ids[np.asarray(doc_ids, dtype=np.int64)], starts, lengths)


class PreparedDocs:
  """Token shards written by data/prepare.py, memory-mapped: reads touch only the pages they need.

  The shards together form one virtual flat token array; `offsets[i]` is where document i starts
  in it, and `shard_starts[s]` where shard s starts. A read never crosses a shard (documents don't).
  """

  def __init__(self, directory: str, manifest: dict | None = None):
    self.directory = directory
    if manifest is None:
      with open(os.path.join(directory, "manifest.json")) as f:
        manifest = json.load(f)
    self.manifest = manifest
    dtype = np.dtype(manifest["token_dtype"])
    self._shards, lengths = [], []
    for shard in manifest["shards"]:
      path = os.path.join(directory, shard["tokens"])
      # np.memmap refuses empty files; an empty shard holds no documents anyway.
      self._shards.append(np.memmap(path, dtype=dtype, mode="r") if shard["num_tokens"]
                          else np.zeros(0, dtype))
      lengths.append(np.load(os.path.join(directory, shard["lengths"])))
    self.doc_lengths = (np.concatenate(lengths).astype(np.int64) if lengths
                        else np.zeros(0, np.int64))
    self.offsets = np.concatenate([[0], np.cumsum(self.doc_lengths)])
    self.shard_starts = np.concatenate([[0], np.cumsum([len(s) for s in self._shards])])
    if self.offsets[-1] != self.shard_starts[-1]:
      raise ValueError(f"{directory}: shard token files disagree with their document lengths; "
                       "the directory is damaged: prepare it again")

  def __len__(self) -> int:
    return len(self.doc_lengths)

  def read(self, doc_ids, starts, lengths) -> np.ndarray:
    doc_ids = np.asarray(doc_ids, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if np.any(starts < 0):
      raise IndexError("read before the start of a document (a negative start)")
    if np.any(starts + lengths > self.doc_lengths[doc_ids]):
      raise IndexError("read past the end of a document")
    flat = self.offsets[doc_ids] + starts
    if len(self._shards) == 1:
      return self._shards[0][gather_indices(flat, lengths)].astype(np.int32)
    # 'right' skips empty shards; the clip keeps an empty read at the very end in range.
    shard_of = np.minimum(np.searchsorted(self.shard_starts, flat, side="right") - 1,
                          len(self._shards) - 1)
    out = np.empty(int(lengths.sum()), dtype=np.int32)
    out_starts = np.cumsum(lengths) - lengths
    for shard in np.unique(shard_of):
      pick = shard_of == shard
      source = gather_indices(flat[pick] - self.shard_starts[shard], lengths[pick])
      out[gather_indices(out_starts[pick], lengths[pick])] = self._shards[shard][source]
    return out
