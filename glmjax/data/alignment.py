"""Sentence-aligned windows (`data.sentence_windows`), the original's BlockDataset cuts.

The original (data_utils/datasets.py, BlockDataset) cuts a document longer than a row at a
uniformly drawn offset, then, with probability 1/2 each, moves the cut left or right, at most
T // 2 tokens, to the nearest place just after a sentence end (or the document's start); it stops
where the move runs out when there is none. The row's last document is cut where its room runs out,
moved back to just after the last sentence end that keeps at least half of that room (else cut
hard). Both are vectorised here over rows; a row cut short stays short and is padded (the batch
shape is fixed).
"""
from __future__ import annotations

import numpy as np

from glmjax.data import infilling
from glmjax.data.documents import gather_indices
from glmjax.data.infilling import RowRandom


def sentence_start(rng: RowRandom, docs, sentence_end, doc, offset, doc_len, seq_len: int):
  """Offsets [R] moved as the original moves the start of a long document's window.

  doc, offset, doc_len [R]: each row's first document, its uniformly drawn offset and its
  length. The token before the new offset ends a sentence, or the offset is 0, or the move
  reached T // 2 tokens without finding one.
  """
  offset, doc_len = np.asarray(offset, np.int64), np.asarray(doc_len, np.int64)
  reach = seq_len // 2
  left = rng.uniform(infilling.STREAM_OFFSET, 2)[:, 1] < 0.5
  # Tokens [offset - reach - 1, offset + reach) of each row's document, clipped to it.
  first = np.maximum(offset - reach - 1, 0)
  count = np.minimum(offset + reach, doc_len) - first
  width = 2 * reach + 1
  ends = np.zeros((len(offset), width), bool)  # whether token first + column ends a sentence
  flat = (np.arange(len(offset), dtype=np.int64) * width)[:, None]
  ends.reshape(-1)[gather_indices(flat[:, 0], count)] = np.asarray(sentence_end)[
      docs.read(doc, first, count)]
  # A start p > 0 is good when token p - 1 ends a sentence; token i sits in column i - first.
  col = np.arange(width)[None, :]
  row = np.arange(len(offset))
  at = offset - 1 - first                                   # the column of token offset - 1
  last_end = np.maximum.accumulate(np.where(ends, col, -1), axis=1)
  next_end = np.minimum.accumulate(np.where(ends, col, width)[:, ::-1], axis=1)[:, ::-1]
  # Left: the nearest good start at or before offset; else the document's start if within
  # reach; else where `reach` moves end.
  before = np.where(at >= 0, last_end[row, np.maximum(at, 0)], -1)
  left_stop = np.where(before >= 0, first + before + 1,
                       np.where(offset <= reach, 0, offset - reach))
  # Right: the nearest good start at or after offset (within reach and the document).
  after = next_end[row, np.maximum(at, 0)]
  right_p = first + after + 1
  right_stop = np.where((after < width) & (right_p - offset <= reach) & (right_p <= doc_len),
                        right_p, np.minimum(offset + reach, doc_len))
  # From offset 0 a move left stays (the document's start), and a move right goes to the first
  # sentence end, dropping the first sentence, as the original's does: its loop reads token -1,
  # the eos it appended to the document, which ends no sentence.
  return np.where(left, left_stop, right_stop)


def sentence_end_cut(text, piece_start, window_len, sentence_end, eos: int):
  """Text lengths [R]: each window cut back to just after its last sentence end, when the cut
  keeps at least half of the room its last document had (the original's right strip).

  text [R, T] as `BatchPipeline.windows` fills it, piece_start [R, P] where each document's
  [CLS] sits, window_len [R] the tokens filled. A window whose last document ends inside it (an
  eos at its end) is not cut.
  """
  text, window_len = np.asarray(text), np.asarray(window_len, np.int64)
  num_rows, width = text.shape
  col = np.arange(width)[None, :]
  last_piece = np.where(piece_start < window_len[:, None], piece_start, -1).max(axis=1)
  room = window_len - last_piece
  keep_from = last_piece + np.maximum(room // 2, 1) - 1   # the last kept token's lowest column
  ends = np.asarray(sentence_end)[text] & (col >= keep_from[:, None]) & (
      col < window_len[:, None])
  last_end = np.where(ends, col, -1).max(axis=1)
  whole = text[np.arange(num_rows), np.maximum(window_len - 1, 0)] == eos  # ends with its doc
  return np.where((last_end >= 0) & ~whole, last_end + 1, window_len)
