"""[sMASK] sentence selection, vectorised over rows (the original's sentence mode)."""
from __future__ import annotations

import numpy as np

from glmjax.data.infilling import (STREAM_SENTENCE, STREAM_SENTENCE_TAIL, RowRandom,
                                   blank_budget)


def select_sentences(rng: RowRandom, tokens, window_len, sentence_end, specials, mask_ratio: float,
                     seq_len: int, max_rounds: int = 8, original: bool = False,
                     end_at_sentence: bool = False):
  """[sMASK]: whole sentences, in random order, until they cover int(ratio * n) of the text.

  A sentence ends at (and includes) a token marked in `sentence_end`; it starts after the previous
  end, after an eos or after a [CLS] (so it never holds a [CLS]: the reference keeps the [CLS] of
  every packed document but the first, we drop that quirk). The row's unterminated tail is not a
  sentence. The text length n = T - 2k must fit the k chosen sentences: start from k = 1, choose
  sentences inside the first n tokens, and raise k to the number needed until it suffices
  (padding 2 per unused slot, usually none).
  `original` (data.original_sentences): as the reference, a sentence after an eos starts at the
  next document's [CLS] (only the row's first [CLS] is skipped), and the text's unterminated
  tail, after its last sentence end or eos, is a sentence too (its own random rank).
  `end_at_sentence` (data.sentence_windows): the text that fits T - 2k is cut back to its last
  sentence end or eos, the rest padded, so the row ends where a sentence does.
  Returns starts, lengths [R, K] (left to right), n_spans [R] (0: no sentence) and text_len [R].
  """
  num_rows, width = tokens.shape
  col = np.arange(width)[None, :]
  special = (tokens == specials.eos) | (tokens == specials.cls)
  bound = ((tokens == specials.eos) | ((col == 0) & (tokens == specials.cls))) if original \
      else special
  is_end = sentence_end[tokens] & ~special & (col < np.asarray(window_len)[:, None])
  last_bound = np.maximum.accumulate(np.where(is_end | bound, col, -1), axis=1)
  rows, ends = np.nonzero(is_end)
  starts = np.where(ends > 0, last_bound[rows, np.maximum(ends - 1, 0)] + 1, 0)
  counts = is_end.sum(axis=1)
  tail = int(original)  # one more slot: the tail, whose extent follows the text length
  num_slots = max(int(counts.max(initial=0)), 1) + tail
  rank = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
  sent_start = np.zeros((num_rows, num_slots), np.int64)
  sent_stop = np.full((num_rows, num_slots), np.iinfo(np.int32).max, np.int64)
  sent_start[rows, rank], sent_stop[rows, rank] = starts, ends + 1
  slot = np.arange(num_slots)[None, :]
  used = (slot < counts[:, None]) | ((slot == num_slots - 1) & bool(tail))
  draws = rng.uniform(STREAM_SENTENCE, num_slots)
  if tail:  # its own stream: the slot index depends on the other rows built alongside
    draws[:, -1] = rng.uniform(STREAM_SENTENCE_TAIL, 1)[:, 0]
  priority = np.where(used, draws, 2.0)
  by_priority = np.argsort(priority, axis=1, kind="stable")
  tail_rank = np.argmax(by_priority == num_slots - 1, axis=1)
  row_index = np.arange(num_rows)
  p_start = np.take_along_axis(sent_start, by_priority, axis=1)
  p_stop = np.take_along_axis(sent_stop, by_priority, axis=1)
  k_cap = (seq_len - 3) // 2

  last_stop = np.maximum.accumulate(
      np.where(is_end | (tokens == specials.eos), col + 1, 0), axis=1)  # after the last end

  def choose(k):
    text_len = np.minimum(seq_len - 2 * k, window_len)
    if end_at_sentence:
      cut = last_stop[row_index, np.maximum(text_len - 1, 0)]
      text_len = np.where(cut > 0, cut, text_len)
    if tail:  # [after the last bound before text_len, text_len), when not empty
      begin = last_bound[row_index, np.maximum(text_len - 1, 0)] + 1
      empty = begin >= text_len
      p_start[row_index, tail_rank] = sent_start[:, -1] = begin
      p_stop[row_index, tail_rank] = sent_stop[:, -1] = np.where(
          empty, np.iinfo(np.int32).max, text_len)
    candidate = p_stop <= text_len[:, None]
    covered = np.cumsum(np.where(candidate, p_stop - p_start, 0), axis=1)
    reached = candidate & (covered >= blank_budget(mask_ratio, text_len)[:, None])
    cut = np.where(reached.any(axis=1), np.argmax(reached, axis=1), num_slots)
    return text_len, candidate, (candidate & (slot <= cut[:, None])).sum(axis=1)

  k = np.ones(num_rows, np.int64)
  for _ in range(max_rounds):
    text_len, candidate, need = choose(k)
    if np.all(need <= k):
      break
    k = np.minimum(np.maximum(k, need), k_cap)
  else:
    text_len, candidate, need = choose(k)
  # A row still short of room takes the first k candidates (below budget; rare).
  take = candidate & (np.cumsum(candidate, axis=1) <= np.minimum(need, k)[:, None])
  chosen = np.zeros_like(take)
  np.put_along_axis(chosen, by_priority, take, axis=1)
  n_spans = chosen.sum(axis=1)
  k_out = max(int(n_spans.max(initial=0)), 1)
  left_to_right = np.argsort(~chosen, axis=1, kind="stable")[:, :k_out]
  valid = np.arange(k_out)[None, :] < n_spans[:, None]
  starts = np.where(valid, np.take_along_axis(sent_start, left_to_right, axis=1), 0)
  stops = np.where(valid, np.take_along_axis(sent_stop, left_to_right, axis=1), 0)
  return starts, stops - starts, n_spans, text_len
