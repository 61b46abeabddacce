"""Sentence-aligned windows (`data.sentence_windows`), the original's BlockDataset cuts.

The original (GLM.md §1.3) cuts a document longer than a row at a uniformly drawn offset, then,
with probability 1/2 each, moves the cut left or right, at most T // 2 tokens, to the nearest
place just after a sentence end (or the document's start); it stops where the move runs out
when there is none. The row's last document is cut where its room runs out, moved back to just
after the last sentence end that keeps at least half of that room (else cut hard). Both are
vectorised here over rows; a row cut short stays short and is padded (the batch shape is fixed).
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
  window = np.full((len(offset), width), -1, np.int64)
  rows = np.repeat(np.arange(len(offset)), count)
  cols = gather_indices(np.zeros(len(offset), np.int64), count)
  window[rows, cols] = docs.read(doc, first, count)
  ends = np.zeros_like(window, dtype=bool)
  ends[window >= 0] = np.asarray(sentence_end)[window[window >= 0]]
  # A start p is good when the token p - 1 ends a sentence (its column: p - 1 - first).
  steps = np.arange(reach + 1)
  left_p = offset[:, None] - steps[None, :]                  # p = offset, offset - 1, ...
  right_p = offset[:, None] + steps[None, :]                 # p = offset, offset + 1, ...

  def good(p):
    col = np.clip(p - 1 - first[:, None], 0, width - 1)
    return (p >= 1) & (p <= doc_len[:, None]) & np.take_along_axis(ends, col, axis=1)

  left_ok = good(left_p) | (left_p == 0)
  right_ok = good(right_p)
  # The first good place in the moving direction; else where the move of `reach` tokens ends.
  left_stop = np.where(left_ok.any(1), left_p[np.arange(len(offset)), np.argmax(left_ok, 1)],
                       np.maximum(offset - reach, 0))
  right_stop = np.where(right_ok.any(1), right_p[np.arange(len(offset)), np.argmax(right_ok, 1)],
                        np.minimum(offset + reach, doc_len))
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
