"""Where a row's [MASK] spans go: to documents by the original's rule, then inside each as the
original places them (its sample_span_in_document and sample_spans), vectorized across rows.

A span of ℓ tokens needs ℓ + 1 units, itself and a separator; a document of m maskable tokens
offers m + 1 (the barrier after it is its last separator).
"""
from __future__ import annotations

import numpy as np

from glmjax.data.infilling import STREAM_PLACE, RowRandom, blank_budget


def assign_to_documents(lengths, n_spans, seg_len, mask_ratio: float):
  """Which document each span goes to, and the lengths that go.

  lengths [R, K]: span lengths in the shuffled list's order, the first n_spans [R] of a row in
  use; seg_len [R, P]: each document's maskable length (0 for an empty one or an unused slot).
  Returns document [R, K] (segment index, -1 for none) and lengths [R, K] (0 for none).

  First the reference's rule: documents from the shortest (ties: the later one first); each but
  the longest takes spans from the list while their total stays within its own budget,
  int(ratio * its length); the longest takes what follows while the spans and a separator
  between each two fit in it. The reference drops a row with spans left over; a fixed-shape
  batch keeps it, so what is left goes, in list order, to the other documents with room (from
  the longest down), up to the first span none holds; a row given no span by then gets one span
  of 1 token in its longest document, so that every row with text trains.
  """
  lengths = np.asarray(lengths, np.int64)
  seg_len = np.asarray(seg_len, np.int64)
  num_rows, k_max = lengths.shape
  span_index = np.arange(k_max)[None, :]
  count = seg_len.shape[1]
  # Ascending length; among equals the later document first (the reference lists them from the
  # row's end and sorts stably), so the longest is the earliest of the longest.
  order = np.lexsort((np.broadcast_to(-np.arange(count), seg_len.shape), seg_len), axis=-1)
  sizes = np.take_along_axis(seg_len, order, axis=1)
  active = span_index < np.asarray(n_spans)[:, None]
  units = np.where(active, lengths + 1, 0)
  total = np.cumsum(units, axis=1)
  document = np.full((num_rows, k_max), -1, np.int64)
  taken = np.zeros((num_rows, 1), np.int64)  # spans given out, from the list's start
  given = np.zeros((num_rows, 1), np.int64)  # their units
  # Empty documents (first in the order) take nothing in either pass: skipped.
  first = count - int(np.max((seg_len > 0).sum(axis=1), initial=0))

  def give(rank, room):
    """To the document of this rank, the run of spans from `taken` whose running units stay
    within `room`: [R, 1], or [R, K] where it depends on how many spans the run holds."""
    nonlocal document, taken, given
    # The running totals grow with the index, so what fits is a run from `taken`: the
    # reference's loop, which stops at the first span that does not fit.
    fits = (total - given <= room) & active & (span_index >= taken)
    document = np.where(fits, order[:, rank:rank + 1], document)
    taken = taken + fits.sum(axis=1, keepdims=True)
    given = given + np.where(fits, units, 0).sum(axis=1, keepdims=True)

  for rank in range(first, count - 1):
    # Its budget counts span lengths only: a run of k spans has k units more. Capped at its
    # room, which binds only for a mask_ratio over 0.5 (the config refuses one).
    size = sizes[:, rank:rank + 1]
    run_length = span_index - taken + 1
    give(rank, np.minimum(blank_budget(mask_ratio, size) + run_length, size + 1))
  give(count - 1, sizes[:, -1:] + 1)
  # What is left: the longest is not asked again, as its room is what just refused the span.
  held = _held_units(document, units, count)
  for rank in range(count - 2, first - 1, -1):
    give(rank, sizes[:, rank:rank + 1] + 1 - np.take_along_axis(held, order[:, rank:rank + 1], 1))
  alone = (taken[:, 0] == 0) & active[:, 0] & (sizes[:, -1] > 0)
  document[alone, 0] = order[alone, -1]
  lengths = np.where(alone[:, None] & (span_index == 0), 1, lengths)
  return document, np.where(document >= 0, lengths, 0)


def _held_units(document, units, count: int) -> np.ndarray:
  """[R, count]: the units of the spans each document holds."""
  rows = np.arange(len(document))[:, None] * count
  flat = np.where(document >= 0, rows + document, len(document) * count)
  return np.bincount(flat.ravel(), units.ravel(), len(document) * count + 1)[:-1].reshape(
      len(document), count).astype(np.int64)


def place_spans(rng: RowRandom, lengths, n_spans, seg_start, seg_len, mask_ratio: float):
  """Place spans inside maskable segments, as the reference places them in its documents.

  Segments ([R, P] start and length in the row, starts ascending) are the runs a span may
  cover: a document's text without its [CLS], its eos and the row's last token; K >= 1 span
  slots. Spans go to documents as `assign_to_documents` says; inside each, k spans of total Σℓ
  in m tokens take k sorted draws in [0, m - Σℓ - k + 1] (with repeats, as the original's), span
  i starting at its draw plus the spans and separators before it. No span is ever moved off a
  boundary, so no document's first token is favoured for it. Returns starts [R, K], lengths
  [R, K], n_spans [R], spans sorted by start.
  """
  seg_start, seg_len = np.asarray(seg_start, np.int64), np.asarray(seg_len, np.int64)
  document, lengths = assign_to_documents(lengths, n_spans, seg_len, mask_ratio)
  k_max, count = lengths.shape[1], seg_len.shape[1]
  valid = document >= 0
  segment = np.maximum(document, 0)
  units = np.where(valid, lengths + 1, 0)
  held = _held_units(document, units, count)
  free = np.take_along_axis(seg_len + 1 - held, segment, axis=1)  # >= 0: none holds more
  # One draw per span slot with its document's room: a one-document row keeps the spans earlier
  # versions gave it (but for a row they gave none, which now gets its span of 1).
  draws = rng.integers(STREAM_PLACE, free, k_max)
  # Spans grouped by document in row order, in list order inside each: sorted by start. Each
  # document's draws go to its spans in ascending order; unplaced spans come last.
  doc_key = np.where(valid, segment, count)
  by_document = np.argsort(doc_key * k_max + np.arange(k_max), axis=1)
  sorted_key = np.take_along_axis(doc_key, by_document, axis=1)
  wide = int(seg_len.max(initial=0)) + 2  # past every draw
  draws = np.sort(doc_key * wide + draws, axis=1) - sorted_key * wide
  units = np.take_along_axis(units, by_document, axis=1)
  segment = np.minimum(sorted_key, count - 1)  # unplaced slots read the last one, then masked
  before = (np.cumsum(units, axis=1) - units  # its document's spans and separators before it
            - np.take_along_axis(np.cumsum(held, axis=1) - held, segment, axis=1))
  valid = sorted_key < count
  starts = np.take_along_axis(seg_start, segment, axis=1) + draws + before
  return (np.where(valid, starts, 0),
          np.where(valid, np.take_along_axis(lengths, by_document, axis=1), 0), valid.sum(axis=1))
