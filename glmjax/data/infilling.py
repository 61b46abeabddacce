"""GLM blank infilling in pure numpy, vectorized across rows (the original's blocklm_utils.py).

Every function works on many rows at once ([R, ...] arrays) and takes its randomness from an
explicit `RowRandom`, so a row's result depends only on its key and its inputs. `layout_rows`
turns text plus chosen spans (`RowSpans`) into the batch arrays; it needs no randomness and
accepts fixed spans (the paper's worked example, its Figure 2, is a test of it). Where [MASK]
spans go is in span_placement.py, [sMASK] sentence choice in sentences.py, [dBLOCK] masking in
masking.py, sentence-aligned windows in alignment.py.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

# Counter streams of RowRandom: each random decision of a row reads its own stream.
STREAM_OBJECTIVE, STREAM_LENGTHS, STREAM_PLACE, STREAM_ORDER = 1, 2, 3, 4
STREAM_DOCS, STREAM_OFFSET, STREAM_SENTENCE, STREAM_GENERATION = 5, 6, 7, 8
STREAM_DBLOCK, STREAM_CONTEXT, STREAM_SINGLE_SPAN, STREAM_SHORT = 9, 10, 11, 12
STREAM_SENTENCE_TAIL, STREAM_LENGTH_ORDER = 13, 14

GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_U64 = (1 << 64) - 1


def mix64(z: np.ndarray) -> np.ndarray:
  """SplitMix64 finalizer: a bijective scrambler of uint64 (wraps silently on arrays)."""
  z = (z ^ (z >> np.uint64(30))) * _MIX1
  z = (z ^ (z >> np.uint64(27))) * _MIX2
  return z ^ (z >> np.uint64(31))


class RowRandom:
  """Counter-based random numbers: draw i of stream s for a row is a pure function of
  (row key, s, i), so rows can be built in any grouping, order or host split."""

  def __init__(self, keys: np.ndarray):
    self.keys = np.asarray(keys, dtype=np.uint64)

  @classmethod
  def for_rows(cls, seed: int, step: int, rows) -> "RowRandom":
    base = mix64(np.array([seed & _U64], np.uint64))
    base = mix64(base + np.array([step & _U64], np.uint64) * GAMMA)
    return cls(mix64(base + np.asarray(rows, np.int64).astype(np.uint64) * GAMMA))

  def take(self, index) -> "RowRandom":
    return RowRandom(self.keys[index])

  def uniform(self, stream: int, count: int) -> np.ndarray:
    """[R, count] floats in [0, 1)."""
    counters = (np.uint64(stream) << np.uint64(32)) + np.arange(1, count + 1, dtype=np.uint64)
    bits = mix64(self.keys[:, None] + counters[None, :] * GAMMA)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))

  def integers(self, stream: int, high, count: int) -> np.ndarray:
    """[R, count] integers uniform in [0, high] (inclusive); `high` is [R] or [R, count]."""
    high = np.asarray(high, dtype=np.int64)
    if high.ndim == 1:
      high = high[:, None]
    return (self.uniform(stream, count) * (high + 1)).astype(np.int64)


# ----------------------------------------------------------------------------------- span lengths

def span_length_cdf(poisson_lambda: float, max_span_length: int) -> np.ndarray:
  """CDF of Poisson(λ) conditioned on 1 <= ℓ <= max (the reference weights k=1..max by its pmf)."""
  ks = np.arange(1, max_span_length + 1)
  log_pmf = np.array([k * math.log(poisson_lambda) - math.lgamma(k + 1) for k in ks])
  pmf = np.exp(log_pmf - log_pmf.max())
  cdf = np.cumsum(pmf) / pmf.sum()
  cdf[-1] = 1.0  # uniforms are < 1, so the last length is reachable and never exceeded
  return cdf


def blank_budget(mask_ratio: float, text_len) -> np.ndarray:
  """Tokens to cover: int(ratio * len(text)); the text counts its [CLS]/eos, as in the reference."""
  return (mask_ratio * np.asarray(text_len, dtype=np.float64)).astype(np.int64)


def max_blank_spans(mask_ratio: float, seq_len: int) -> int:
  """Most spans a row can need: all of length 1, stop at the first k with k >= budget(T - 2k)."""
  k = 1
  while k < int(blank_budget(mask_ratio, seq_len - 2 * k)):
    k += 1
  return k


def spans_for_budget(lengths, budget) -> np.ndarray:
  """[R]: how many of each row's drawn lengths the reference draws for a budget: up to the first
  whose running total reaches it (at least one)."""
  reached = np.cumsum(lengths, axis=1) >= np.asarray(budget)[:, None]
  return np.where(reached.any(axis=1), np.argmax(reached, axis=1) + 1, lengths.shape[1])


def sample_blank_lengths(rng: RowRandom, cdf: np.ndarray, mask_ratio: float, seq_len: int):
  """Span lengths drawn first; then the longest text n, with the reference's span count k for
  it, that lays out (n + 2k tokens) in T.

  Draw ℓ_1, ℓ_2, ... and take the first k with ℓ_1+..+ℓ_k >= int(ratio * (T - 2k)), n = T - 2k:
  a row of exactly T tokens. In some rows (about 9% at GLM's 15% and λ=3) the first k-1 reach
  int(ratio * (T - 2k)), so the reference would stop at k-1 for that text; those rows keep k-1
  spans and a text of T - 2k + 1 tokens (T - 2k where its budget is not reached), and end in
  one or two padding positions: every row is a draw the reference could make for its text.
  Returns lengths [R, K] (0 past each row's count), n_spans [R], text_len [R].
  """
  k_max = max_blank_spans(mask_ratio, seq_len)
  lengths = np.searchsorted(cdf, rng.uniform(STREAM_LENGTHS, k_max), side="right") + 1
  counts = np.arange(1, k_max + 1)
  covered = np.cumsum(lengths, axis=1)
  reached = covered >= blank_budget(mask_ratio, seq_len - 2 * counts)[None, :]
  n_spans = np.argmax(reached, axis=1) + 1  # some k <= k_max always reaches: cumsum >= k
  text_len = seq_len - 2 * n_spans
  # The reference's count for that text; k-1 at the least, as k-1 failed for a longer text.
  fewer = spans_for_budget(lengths, blank_budget(mask_ratio, text_len)) < n_spans
  n_spans = np.where(fewer, n_spans - 1, n_spans)
  before = covered[np.arange(len(n_spans)), np.maximum(n_spans - 1, 0)]
  one_more = fewer & (before >= blank_budget(mask_ratio, text_len + 1))
  text_len = text_len + one_more
  lengths = np.where(counts[None, :] <= n_spans[:, None], lengths, 0).astype(np.int64)
  return lengths, n_spans, text_len


# --------------------------------------------------------------------------------------- span order

def _permutation(rng: RowRandom, stream: int, n_spans, k_max: int) -> np.ndarray:
  """[R, K]: a random permutation of each row's first n_spans slots, then the unused slots."""
  slots = np.arange(k_max)[None, :]
  keys = np.where(slots < np.asarray(n_spans)[:, None], rng.uniform(stream, k_max), 2.0)
  return np.argsort(keys, axis=1, kind="stable")


def shuffle_lengths(rng: RowRandom, lengths, n_spans) -> np.ndarray:
  """[R, K]: each row's first n_spans lengths in random order, the rest where they were.

  The reference shuffles the drawn lengths before placing them. Placed in draw order, the span
  that crossed the budget (longer on average: a long span is likelier to cross) would always be
  the row's last in the text.
  """
  lengths = np.asarray(lengths)
  order = _permutation(rng, STREAM_LENGTH_ORDER, n_spans, lengths.shape[1])
  return np.take_along_axis(lengths, order, axis=1)


def random_order(rng: RowRandom, n_spans, k_max: int, shuffle: bool = True) -> np.ndarray:
  """Part B order [R, K]: a permutation of each row's spans first, then the unused slots."""
  if not shuffle:
    return np.broadcast_to(np.arange(k_max)[None, :], (len(n_spans), k_max)).copy()
  return _permutation(rng, STREAM_ORDER, n_spans, k_max)


# ------------------------------------------------------------------------------------ generation

def sample_generation(rng: RowRandom, multi_document, seq_len: int, gen_min_ratio: float,
                      suffix_prob: float, shared: RowRandom | None = None, available=None,
                      batch_len=None):
  """[gMASK]: one span of g ~ U{int(ratio * n) .. n - 2} tokens (the original's gpt mode, per row).

  Suffix layout (always for a row with several documents): text n = T - 1, the span is the last
  g tokens, laid out to n + 1 = T. Otherwise one span anywhere in [1, n - 1) of text n = T - 2,
  laid out to n + 2 = T. Returns suffix [R] bool, text_len, start, length [R].
  With `shared` (draw_per_batch: the same key for every row) all rows get one length, drawn as
  the original draws its batch's G: U{int(ratio * (F - 1)) .. F - 3} for the F = `batch_len`
  tokens every row fetched (T - 1, or a short row's length), which every layout fits.
  `available` [R] caps the text of rows cut short (sentence windows; padded after layout).
  """
  draws = rng.uniform(STREAM_GENERATION, 3)
  suffix = np.asarray(multi_document, bool) | (draws[:, 0] < suffix_prob)
  text_len = np.where(suffix, seq_len - 1, seq_len - 2).astype(np.int64)
  if available is not None:
    text_len = np.minimum(text_len, available)
  high = text_len - 2
  low = np.clip((gen_min_ratio * text_len).astype(np.int64), 1, high)
  length = low + (draws[:, 1] * (high - low + 1)).astype(np.int64)
  if shared is not None:  # the batch's G, capped by each row's text as the original caps it
    fetched = np.asarray(batch_len, np.int64)  # the same for every row of a step
    top = np.maximum(fetched - 3, 1)
    bottom = np.clip((gen_min_ratio * (fetched - 1)).astype(np.int64), 1, top)
    batch_g = bottom + (shared.uniform(STREAM_GENERATION, 2)[:, 1] * (top - bottom + 1))
    length = np.minimum(batch_g.astype(np.int64), high)
  inner = 1 + (draws[:, 2] * (text_len - 1 - length)).astype(np.int64)
  return suffix, text_len, np.where(suffix, text_len - length, inner), length


# ---------------------------------------------------------------------------------------- layout

@dataclasses.dataclass
class RowSpans:
  """The spans of many rows, of any objective: what `layout_rows` lays out.

  starts, lengths [R, K]: sorted by start, the first n_spans[r] real, the rest ignored.
  text_len [R]: the text tokens that count. mask_token [R]: what stands for each span in Part A
  ([MASK], [sMASK] or [gMASK]). suffix [R]: [gMASK] suffix rows, whose single span is the text's
  tail, laid out without the final eop position and with no loss on [CLS] targets (the
  original's own loss mask for them).
  """
  starts: np.ndarray
  lengths: np.ndarray
  n_spans: np.ndarray
  text_len: np.ndarray
  mask_token: np.ndarray
  suffix: np.ndarray

  @classmethod
  def empty(cls, num_rows: int, seq_len: int, mask_token: int) -> "RowSpans":
    """No spans yet: rows of seq_len text tokens, to be filled objective by objective."""
    return cls(starts=np.zeros((num_rows, 1), np.int64), lengths=np.zeros((num_rows, 1), np.int64),
               n_spans=np.zeros(num_rows, np.int64), text_len=np.full(num_rows, seq_len, np.int64),
               mask_token=np.full(num_rows, mask_token, np.int64),
               suffix=np.zeros(num_rows, bool))

  @property
  def width(self) -> int:
    return self.starts.shape[1]

  def set(self, rows, starts, lengths, n_spans, text_len, mask_token: int, suffix=False):
    """Gives `rows` these spans ([len(rows), K'] each), widening every row to K' if needed."""
    if starts.shape[1] > self.width:
      grow = ((0, 0), (0, starts.shape[1] - self.width))
      self.starts, self.lengths = np.pad(self.starts, grow), np.pad(self.lengths, grow)
    self.starts[rows] = 0
    self.lengths[rows] = 0
    self.starts[rows, :starts.shape[1]] = starts
    self.lengths[rows, :starts.shape[1]] = lengths
    self.n_spans[rows] = n_spans
    self.text_len[rows] = text_len
    self.mask_token[rows] = mask_token
    self.suffix[rows] = suffix


def layout_rows(text, spans: RowSpans, order, specials, seq_len: int) -> dict[str, np.ndarray]:
  """Part A / Part B layout of many rows (the original's make_block_data), padded to seq_len.

  text [R, W] (only the first spans.text_len[r] tokens count), order [R, K] (Part B order, real
  spans first). Returns the batch arrays of the batch contract (docs/architecture.md) except
  `objective`.
  """
  text = np.asarray(text)
  num_rows, width = text.shape
  T = seq_len
  starts, lengths, n_spans = spans.starts, spans.lengths, spans.n_spans
  text_len, mask_token, suffix = spans.text_len, spans.mask_token, spans.suffix
  rows = np.arange(num_rows)[:, None]
  col = np.arange(T, dtype=np.int32)[None, :]
  valid = np.arange(starts.shape[1])[None, :] < np.asarray(n_spans)[:, None]
  ell = np.where(valid, lengths, 0)
  shrink = np.where(valid, ell - 1, 0)
  removed = np.cumsum(shrink, axis=1)
  mask_pos = np.where(valid, starts - (removed - shrink), 0)   # each span's mask in Part A
  sep = np.asarray(text_len, np.int64) - removed[:, -1]
  ell_b = np.take_along_axis(ell, order, axis=1)                # Part B blocks, in order
  block_start = sep[:, None] + np.cumsum(ell_b + valid, axis=1) - (ell_b + valid)
  total = sep + (ell_b + valid).sum(axis=1) - suffix
  if np.any(total > T):
    raise ValueError(f"layout_rows: a row needs {int(total.max())} > seq_len={T} positions")

  # Every position reads text[position + offset]; the offset is piecewise constant, so it is a
  # cumsum of jumps: + (ℓ - 1) after each mask in Part A, then per block (source - block start).
  # A mask at sep - 1 would jump at sep, where block 0 jumps too: fold it into block 0's jump.
  at_sep = valid & (mask_pos + 1 >= sep[:, None])
  block_offset = np.take_along_axis(starts, order, axis=1) - block_start
  previous = np.concatenate([(removed[:, -1] - np.where(at_sep, shrink, 0).sum(1))[:, None],
                             block_offset[:, :-1]], axis=1)
  jumps = np.zeros((num_rows, T + 2), np.int32)
  jumps[rows, np.where(valid & ~at_sep, mask_pos + 1, T + 1)] = shrink
  jumps[rows, np.where(valid, block_start, T + 1)] = block_offset - previous
  source = np.cumsum(jumps[:, :T], axis=1, dtype=np.int32)
  source += col
  if num_rows * width >= 2**31:  # flat indices past int32
    source = source.astype(np.int64)
  source += (rows * width).astype(source.dtype)
  read = np.take(text, source, mode="clip")   # padding reads are overwritten

  # Which positions are a mask, a block's sop, a block's eop (kinds 1, 2, 3).
  kind = np.zeros((num_rows, T + 2), np.int8)
  kind[rows, np.where(valid, mask_pos, T + 1)] = 1
  kind[rows, np.where(valid, block_start, T + 1)] = 2
  kind[rows, np.where(valid, np.minimum(block_start + ell_b, T), T + 1)] = 3
  kind = kind[:, :T]
  real = col < total[:, None]
  in_a = col < sep[:, None]
  in_b = real & ~in_a
  mask_token = np.broadcast_to(np.asarray(mask_token), (num_rows,))[:, None]
  targets = np.where(kind == 1, mask_token, np.where(kind == 3, specials.eop, read))
  targets = np.where(real, targets, specials.pad).astype(np.int32, copy=False)
  # Inside a block the input is the previous target; a block opens with sop.
  tokens = targets.copy()
  tokens[:, 1:] = np.where(in_b[:, 1:], targets[:, :-1], targets[:, 1:])
  tokens[kind == 2] = specials.sop

  # Part B position (its mask's index) and block start, both piecewise constant: one packed cumsum.
  mask_of_block = np.take_along_axis(mask_pos, order, axis=1)
  packed = (mask_of_block << 32) + block_start
  packed_previous = np.concatenate([np.zeros((num_rows, 1), np.int64), packed[:, :-1]], axis=1)
  steps = np.zeros((num_rows, T + 2), np.int64)
  steps[rows, np.where(valid, block_start, T + 1)] = packed - packed_previous
  packed = np.cumsum(steps[:, :T], axis=1)
  position = (packed >> 32).astype(np.int32)
  block = col - (packed & 0xFFFFFFFF).astype(np.int32) + 1
  loss = in_b
  if suffix.any():
    loss = loss & ~(suffix[:, None] & (targets == specials.cls))
  return {
      "tokens": tokens,
      "targets": targets,
      "loss_mask": loss.astype(np.float32),
      "position_ids": np.where(in_a, col, np.where(in_b, position, 0)).astype(np.int32),
      "block_position_ids": np.where(in_b, block, 0).astype(np.int32),
      "sep": sep.astype(np.int32),
  }
