"""[dBLOCK] input masking of blank rows, after layout (the original's make_block_data).

Both corrupt only the model's inputs (`tokens`); targets, loss mask and positions stay as laid
out, so the model still predicts the original token at every Part B position.

- Block masking (`data.block_mask_prob`, GLM-10B stage 1: 0.1): each span token of Part B's
  input, the tokens after a span's [sop], becomes [dBLOCK] with this probability (the [sop]s
  stay). The model then cannot always copy the previous target when generating a span.
- Context masking (`data.context_mask_ratio`): int(ratio x text length) Part A tokens become
  [dBLOCK], drawn uniformly among those within CONTEXT_RANGE tokens of a span's [MASK] (after
  one, or before one or the end of Part A), as the original's candidates.
"""
from __future__ import annotations

import numpy as np

from glmjax.data import infilling
from glmjax.data.infilling import RowRandom

CONTEXT_RANGE = 3  # the original's context_mask_range (no flag)


def block_mask(rng: RowRandom, tokens, block_position_ids, prob: float, dblock: int):
  """tokens [R, T] with each Part B span token (block position >= 2) replaced by `dblock` with
  probability `prob`."""
  span_token = np.asarray(block_position_ids) >= 2
  draws = rng.uniform(infilling.STREAM_DBLOCK, tokens.shape[1])
  return np.where(span_token & (draws < prob), dblock, tokens).astype(tokens.dtype)


def context_mask(rng: RowRandom, tokens, sep, text_len, mask_token: int, ratio: float,
                 dblock: int):
  """tokens [R, T] with int(ratio * text_len) Part A tokens near span edges replaced by `dblock`
  (all candidates if there are fewer)."""
  num_rows, width = tokens.shape
  col = np.arange(width)[None, :]
  sep = np.asarray(sep)[:, None]
  part_a = col < sep
  is_mask = part_a & (tokens == mask_token)
  # Distance to the nearest [MASK] on the left, and to the next [MASK] (or sep) on the right.
  last_mask = np.maximum.accumulate(np.where(is_mask, col, -1), axis=1)
  next_bound = np.where(is_mask | (col == sep), col, width + 1)
  next_bound = np.minimum.accumulate(next_bound[:, ::-1], axis=1)[:, ::-1]
  after_mask = (last_mask >= 0) & (col - last_mask <= CONTEXT_RANGE)
  before_bound = next_bound - col <= CONTEXT_RANGE
  candidate = part_a & ~is_mask & (after_mask | before_bound)
  count = (ratio * np.asarray(text_len, np.float64)).astype(np.int64)
  keys = np.where(candidate, rng.uniform(infilling.STREAM_CONTEXT, width), 2.0)
  # The `count` smallest keys of each row: partition out the largest count of any row, then
  # order just those (a full sort of every row costs several times more).
  most = int(min(max(count.max(initial=0), 1), width))
  smallest = np.argpartition(keys, most - 1, axis=1)[:, :most]
  smallest = np.take_along_axis(
      smallest, np.argsort(np.take_along_axis(keys, smallest, axis=1), axis=1), axis=1)
  chosen = np.zeros_like(candidate)
  np.put_along_axis(chosen, smallest, np.arange(most)[None, :] < count[:, None], axis=1)
  chosen &= candidate
  return np.where(chosen, dblock, tokens).astype(tokens.dtype)
