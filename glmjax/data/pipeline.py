"""Step-indexed GLM training batches: documents -> packed text rows -> blank infilling.

Row r of global step k is a pure function of (seed, k, r): its random numbers come from a
counter-based generator keyed by (seed, k, r) (infilling.RowRandom), its text window included.
So each host builds only its own rows (`build_rows`, given the global rows its devices hold:
parallel.host_rows, not always one contiguous range on a real slice), the global batch of a
step is the same for every host count, no two hosts build the same row, and resuming at step k
needs only k. An evaluation
pipeline is another instance of the same class over held-out documents with its own seed.

The objective is drawn per row by default, not per batch as in the original (its collate
function; `data.draw_per_batch=True` does that): every step then mixes all objectives in their
configured shares, so the per-step loss is steadier and every step has per-objective metrics;
with fixed shapes nothing requires one objective per batch.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from glmjax.data import alignment, infilling, masking, sentences, span_placement
from glmjax.data.documents import gather_indices
from glmjax.data.infilling import RowRandom

# Each objective's index in the batch's `objective`; its share of the rows is data.{name}_prob.
OBJECTIVE_NAMES = ("blank", "sentence", "document")
# Read from the names, so that reordering them cannot leave a row built for another objective.
BLANK, SENTENCE, DOCUMENT = map(OBJECTIVE_NAMES.index, ("blank", "sentence", "document"))
BATCH_KEYS = ("tokens", "targets", "loss_mask", "position_ids", "block_position_ids", "sep",
              "objective")
BATCH_KEY = -1  # the RowRandom key of a step's shared draws (draw_per_batch): no row has it
FALLBACK_WARNING = 0.1  # a share of [sMASK] rows without a whole sentence worth a warning

log = logging.getLogger(__name__)
SHORT_MIN = 32  # shortest text of a short row (the original's split_samples)


class BatchPipeline:
  """Fixed-shape GLM batches ([b, T] arrays, `sep` and `objective` [b]) from a DocumentStore."""

  def __init__(self, data_config, tokenizer, docs, seed: int = 0):
    validate(data_config, tokenizer, docs)
    self.seq_len = int(data_config.seq_len)
    self.batch_size = int(data_config.batch_size)
    self.seed = int(seed)
    self.mask_ratio = float(data_config.mask_ratio)
    self.shuffle_spans = bool(data_config.shuffle_spans)
    self.gen_min_ratio = float(data_config.gen_min_ratio)
    self.gen_suffix_prob = float(data_config.gen_suffix_prob)
    self.single_span_prob = float(data_config.single_span_prob)
    self.short_seq_prob = float(data_config.short_seq_prob)
    self.block_mask_prob = float(data_config.block_mask_prob)
    self.context_mask_ratio = float(data_config.context_mask_ratio)
    self.draw_per_batch = bool(data_config.draw_per_batch)
    self.sentence_windows = bool(data_config.sentence_windows)
    self.original_sentences = bool(data_config.original_sentences)
    self._fallback_warned = False  # _warn_of_fallbacks has spoken
    self._fallbacks = (0, 0)  # [sMASK] rows drawn, and those that found no whole sentence
    probs = np.array(objective_probs(data_config), np.float64)
    self.objective_cdf = np.cumsum(probs / probs.sum())
    self.length_cdf = infilling.span_length_cdf(float(data_config.poisson_lambda),
                                                int(data_config.max_span_length))
    self.specials = tokenizer.specials
    self.sentence_end = np.asarray(tokenizer.sentence_end, bool)
    self.docs = docs
    self.doc_lengths = np.asarray(docs.doc_lengths, np.int64)
    self._doc_ends = np.cumsum(self.doc_lengths)
    self._num_tokens = int(self._doc_ends[-1])
    # Documents a row draws at first: enough for most rows; rows that need more draw more.
    weighted_piece = float(np.sum(self.doc_lengths * (self.doc_lengths + 2.0))) / self._num_tokens
    self._first_pieces = max(2, int(math.ceil(self.seq_len / weighted_piece)) + 2)

  def global_batch(self, step: int) -> dict[str, np.ndarray]:
    """All rows of `step`, for one process that feeds every device (and for tests)."""
    return self.build_rows(step, np.arange(self.batch_size))

  def build_rows(self, step: int, rows) -> dict[str, np.ndarray]:
    """The given global rows of `step`, in any subset or order: each depends on its index only."""
    rows = np.asarray(rows, np.int64)
    T = self.seq_len
    rng = RowRandom.for_rows(self.seed, step, rows)
    # Per-row draws, or (draw_per_batch) one draw per step that every row reads.
    draws = RowRandom.for_rows(self.seed, step, np.full(len(rows), BATCH_KEY)) if (
        self.draw_per_batch) else rng
    objective = np.minimum(np.searchsorted(self.objective_cdf,
                                           draws.uniform(infilling.STREAM_OBJECTIVE, 1)[:, 0],
                                           side="right"), len(OBJECTIVE_NAMES) - 1)
    single = draws.uniform(infilling.STREAM_SINGLE_SPAN, 1)[:, 0] < self.single_span_prob
    objective[single] = BLANK
    blank_lengths, blank_spans, blank_len = infilling.sample_blank_lengths(
        rng, self.length_cdf, self.mask_ratio, T)
    # A single-span row keeps its first length (the same law) in a text of T - 2 tokens.
    blank_spans[single], blank_len[single] = 1, T - 2
    fetch = np.select([objective == BLANK, objective == SENTENCE], [blank_len, T], T - 1)
    # Short rows (data.short_seq_prob) fetch U{32..T} tokens, as the original re-cuts a batch.
    short = draws.uniform(infilling.STREAM_SHORT, 2)
    fetch = np.where(short[:, 0] < self.short_seq_prob,
                     np.minimum(fetch, short_lengths(short[:, 1], T)), fetch)
    text, piece_start, piece_avail = self.windows(rng, fetch)
    available = fetch  # text tokens of each row: all it fetched, or less when cut at a sentence
    if self.sentence_windows:
      available = alignment.sentence_end_cut(text, piece_start, fetch, self.sentence_end,
                                             self.specials.eos)
      text[np.arange(T)[None, :] >= available[:, None]] = self.specials.pad

    plan = infilling.RowSpans.empty(len(rows), T, self.specials.mask)
    sentence_rows = np.flatnonzero(objective == SENTENCE)
    if len(sentence_rows):
      starts, lengths, n_spans, text_len = sentences.select_sentences(
          rng.take(sentence_rows), text[sentence_rows], available[sentence_rows],
          self.sentence_end, self.specials, self.mask_ratio, T,
          original=self.original_sentences, end_at_sentence=self.sentence_windows)
      found = n_spans > 0     # a window without a whole sentence falls back to [MASK]
      objective[sentence_rows[~found]] = BLANK
      self._warn_of_fallbacks(step, len(sentence_rows), int(np.sum(~found)))
      plan.set(sentence_rows[found], starts[found], lengths[found], n_spans[found],
               text_len[found], self.specials.smask)
    document_rows = np.flatnonzero(objective == DOCUMENT)
    if len(document_rows):
      room = np.minimum(available[document_rows], T - 2)
      multi_document = piece_start[document_rows, 1] < room
      suffix, text_len, start, length = infilling.sample_generation(
          rng.take(document_rows), multi_document, T, self.gen_min_ratio, self.gen_suffix_prob,
          draws.take(document_rows) if self.draw_per_batch else None,
          available[document_rows], fetch[document_rows])
      plan.set(document_rows, start[:, None], length[:, None], np.ones_like(start), text_len,
               self.specials.gmask, suffix)
    blank_rows = np.flatnonzero(objective == BLANK)
    if len(blank_rows):
      n = np.minimum(blank_len[blank_rows], available[blank_rows])
      shorter = blank_rows[(n < blank_len[blank_rows]) & ~single[blank_rows]]
      if len(shorter):  # a text cut short (sentence windows, short rows) needs fewer spans
        blank_spans[shorter] = infilling.spans_for_budget(
            blank_lengths[shorter], infilling.blank_budget(self.mask_ratio, available[shorter]))
      seg_start, seg_len = maskable_segments(piece_start[blank_rows], piece_avail[blank_rows], n)
      # Counted in draw order (the reference draws until the budget), placed shuffled.
      lengths = infilling.shuffle_lengths(rng.take(blank_rows), blank_lengths[blank_rows],
                                          blank_spans[blank_rows])
      starts, lengths, n_spans = span_placement.place_spans(
          rng.take(blank_rows), lengths, blank_spans[blank_rows], seg_start, seg_len,
          self.mask_ratio)
      plan.set(blank_rows, starts, lengths, n_spans, n, self.specials.mask)

    order = infilling.random_order(rng, plan.n_spans, plan.width, self.shuffle_spans)
    batch = infilling.layout_rows(text, plan, order, self.specials, T)
    batch["objective"] = objective.astype(np.int32)
    self._mask_inputs(rng, batch, blank_rows, plan.text_len)
    return batch

  def _warn_of_fallbacks(self, step: int, drawn: int, without: int) -> None:
    """Once per pipeline: many [sMASK] rows finding no whole sentence change the objective mix
    unseen (text with few sentence ends the tokenizer marks: code, or CJK with the byte one)."""
    # Counted over the steps this pipeline built: a host may draw few such rows a step.
    self._fallbacks = (self._fallbacks[0] + drawn, self._fallbacks[1] + without)
    drawn, without = self._fallbacks
    if self._fallback_warned or drawn < 8 or without <= FALLBACK_WARNING * drawn:
      return
    self._fallback_warned = True
    log.warning("%d of the %d [sMASK] rows built up to step %d found no whole sentence and "
                "became [MASK] rows: the tokenizer marks few sentence ends in this text (the "
                "byte tokenizer knows only . ? ! ; : and newline). data.sentence_prob gives "
                "fewer [sMASK] rows than it says; use a tokenizer that marks them, or lower it.",
                without, drawn, step)

  def _mask_inputs(self, rng: RowRandom, batch, blank_rows, text_len) -> None:
    """[dBLOCK] in the inputs of [MASK] rows (data.block_mask_prob, data.context_mask_ratio)."""
    if not len(blank_rows) or not (self.block_mask_prob or self.context_mask_ratio):
      return
    tokens, rows = batch["tokens"], rng.take(blank_rows)
    if self.context_mask_ratio:
      tokens[blank_rows] = masking.context_mask(
          rows, tokens[blank_rows], batch["sep"][blank_rows], text_len[blank_rows],
          self.specials.mask, self.context_mask_ratio, self.specials.dblock)
    if self.block_mask_prob:
      tokens[blank_rows] = masking.block_mask(rows, tokens[blank_rows],
                                              batch["block_position_ids"][blank_rows],
                                              self.block_mask_prob, self.specials.dblock)

  def windows(self, rng: RowRandom, window_len):
    """Packed text rows [R, T] (like the original BlockDataset): the first window_len[r] tokens of
    `[CLS] doc eos [CLS] doc' eos ...`, documents drawn with probability proportional to length.
    A first document longer than a row starts at a uniform offset (split across rows); the last
    document is cut at the row end (no eos). Returns text, piece_start and piece_avail [R, P]:
    where each document's [CLS] sits and how many of its tokens follow it.
    """
    num_rows, T = len(window_len), self.seq_len
    window_len = np.asarray(window_len, np.int64)[:, None]
    pieces = self._first_pieces
    while True:  # draws are indexed, so drawing more documents keeps the first ones
      picks = (rng.uniform(infilling.STREAM_DOCS, pieces) * self._num_tokens).astype(np.int64)
      doc = np.searchsorted(self._doc_ends, np.minimum(picks, self._num_tokens - 1), side="right")
      avail = self.doc_lengths[doc]
      # A first document longer than the window starts at an offset that lets the window reach
      # its end ([CLS] + tail + eos), so every token of it can be masked.
      long_first = avail[:, 0] + 2 > window_len[:, 0]
      offset = np.zeros_like(avail)
      offset[:, 0] = np.where(long_first, rng.integers(
          infilling.STREAM_OFFSET, np.maximum(avail[:, 0] + 2 - window_len[:, 0], 0), 1)[:, 0], 0)
      if self.sentence_windows and long_first.any():
        offset[long_first, 0] = alignment.sentence_start(
            rng.take(np.flatnonzero(long_first)), self.docs, self.sentence_end,
            doc[long_first, 0], offset[long_first, 0], avail[long_first, 0], T)
      avail -= offset
      wrapped = avail + 2
      start = np.cumsum(wrapped, axis=1) - wrapped
      if np.all(start[:, -1] + wrapped[:, -1] >= window_len[:, 0]):
        break
      pieces *= 2
    used = start < window_len
    taken = np.clip(window_len - start - 1, 0, avail)
    has_eos = start + 1 + avail < window_len
    text = np.full((num_rows, T), self.specials.pad, np.int32)
    flat = text.reshape(-1)
    row_base = (np.arange(num_rows, dtype=np.int64) * T)[:, None]
    read = used & (taken > 0)
    flat[gather_indices((row_base + start + 1)[read], taken[read])] = self.docs.read(
        doc[read], offset[read], taken[read])
    flat[(row_base + start)[used]] = self.specials.cls
    flat[(row_base + start + 1 + avail)[has_eos]] = self.specials.eos
    return text, start, avail


def short_lengths(uniform, seq_len: int):
  """U{SHORT_MIN..seq_len} text lengths of short rows, from draws uniform in [0, 1)."""
  return (SHORT_MIN + uniform * (seq_len - SHORT_MIN + 1)).astype(np.int64)


def maskable_segments(piece_start, piece_avail, text_len):
  """Runs a [MASK] span may cover: each document's text after its [CLS], before its eos, and
  never the row's last token (as the original)."""
  first = piece_start + 1
  last = np.minimum(first + piece_avail, np.asarray(text_len)[:, None] - 1)
  return first, np.maximum(last - first, 0)


# ---------------------------------------------------------------------------------- expectations

def expected_part_b_fraction(data) -> float:
  """The average share of a row that is Part B (and scored), for planning FLOPs before a run.

  [MASK] and [sMASK] rows: the masked tokens plus one [sop] per span, r · (1 + 1 / μ) of the
  text for mask_ratio r and mean span μ, in a row that also holds a [MASK] per span: the text
  is 1 / (1 + 2r / μ) of the row (GLM-Large's [MASK] rows: 0.180 of the row, 0.182 measured;
  r · (1 + 1 / μ) alone said 0.198). [sMASK] rows' whole sentences overshoot the ratio: there
  r · (1 + 1 / μ) is the planning figure, an empirical one (built-in corpus at GLM's 512 tokens:
  0.204 measured; in short rows more, 0.32 of 128 tokens).
  [gMASK] rows: the generated length, uniform between gen_min_ratio and all of the row.
  """
  cdf = infilling.span_length_cdf(data.poisson_lambda, data.max_span_length)
  mean_span = float(np.sum(np.arange(1, len(cdf) + 1) * np.diff(cdf, prepend=0.0)))
  masked = data.mask_ratio * (1.0 + 1.0 / mean_span)
  blank = masked / (1.0 + 2.0 * data.mask_ratio / mean_span)
  # One entry per objective: one added to OBJECTIVE_NAMES without its own is a KeyError here,
  # not a share of rows left out of the average.
  fraction = {"blank": blank, "sentence": masked, "document": (1.0 + data.gen_min_ratio) / 2.0}
  probs = objective_probs(data)
  return sum(p * fraction[name] for name, p in zip(OBJECTIVE_NAMES, probs)) / sum(probs)


# ------------------------------------------------------------------------------------ validation

def min_seq_len(max_span_length: int) -> int:
  """Shortest T where a row of one document holds a longest span: [CLS], ℓ + 1 units, last token.

  Rarer rows whose spans outgrow their text (tiny T, many long spans) lose their last spans
  (span_placement), so this bound is about use, not safety.
  """
  return max(8, max_span_length + 4)


def objective_probs(data) -> tuple[float, ...]:
  """data.{name}_prob of each objective, in OBJECTIVE_NAMES' order: read from the names, so an
  objective added there is drawn and validated with the others."""
  return tuple(float(data[f"{name}_prob"]) for name in OBJECTIVE_NAMES)


def recipe_problem(data) -> str | None:
  """What is wrong with the objective recipe of `data` (one line naming the field to change
  and how), None when nothing is. Needs no tokenizer or corpus: config.validate runs it, so
  aot and bench refuse what train would."""
  probs = objective_probs(data)
  total = sum(probs)
  if any(p < 0 for p in probs) or abs(total - 1.0) > 1e-6:
    return (f"{' + '.join(f'data.{name}_prob' for name in OBJECTIVE_NAMES)} = "
            f"{' + '.join(str(data[f'{name}_prob']) for name in OBJECTIVE_NAMES)} = {total:g}: "
            "the objective probabilities must be >= 0 and sum to 1 (GLM-Large: 1/0/0, GLM-10B: "
            "0.5/0.3/0.2).")
  if not 0.0 < float(data.mask_ratio) <= 0.5:
    return f"data.mask_ratio={data.mask_ratio}: must be in (0, 0.5] (GLM uses 0.15)."
  if not float(data.poisson_lambda) > 0:
    return f"data.poisson_lambda={data.poisson_lambda}: must be > 0 (GLM uses 3)."
  if int(data.max_span_length) < 1:
    return f"data.max_span_length={data.max_span_length}: must be >= 1 (GLM uses 39)."
  if not 0.0 < float(data.gen_min_ratio) <= 1.0:
    return f"data.gen_min_ratio={data.gen_min_ratio}: must be in (0, 1] (GLM: 0.5)."
  for field in ("gen_suffix_prob", "single_span_prob", "block_mask_prob", "context_mask_ratio",
                "short_seq_prob"):
    if not 0.0 <= float(data[field]) <= 1.0:
      return f"data.{field}={data[field]}: must be in [0, 1]."
  shortest = min_seq_len(int(data.max_span_length))
  if int(data.seq_len) < shortest:
    return (f"data.seq_len={data.seq_len} is too small to hold the spans of a row (a span can "
            f"be data.max_span_length={data.max_span_length} tokens): raise data.seq_len to at "
            f"least {shortest} or lower data.max_span_length.")
  return None


def validate(data, tokenizer, docs) -> None:
  """Construction-time checks; each ValueError names the field to change and how."""
  problem = recipe_problem(data)
  if problem:
    raise ValueError(problem)
  _validate_tokenizer(data, tokenizer)
  lengths = np.asarray(docs.doc_lengths)
  if lengths.size == 0 or int(lengths.sum()) <= 0:
    raise ValueError(
        f"The document store is empty ({lengths.size} documents, 0 tokens): point data.source / "
        "data.files (or data.prepared_dir) at a non-empty corpus; for an evaluation split, raise "
        "data.eval_fraction.")


def _validate_tokenizer(data, tokenizer) -> None:
  fix = ("use a tokenizer that defines GLM's special tokens inside its vocabulary "
         "(data.tokenizer / data.tokenizer_vocab).")
  vocab_size = int(tokenizer.vocab_size)
  specials = tokenizer.specials.as_dict()
  for name, token in specials.items():
    if not 0 <= int(token) < vocab_size:
      raise ValueError(f"Special token {name}={token} is outside the tokenizer vocabulary of "
                       f"{vocab_size} ids: {fix}")
  # pad may equal eos (as in GLM); every other role needs its own id.
  distinct = {name: token for name, token in specials.items() if name != "pad"}
  if len(set(distinct.values())) != len(distinct) or specials["pad"] in (
      specials[name] for name in ("cls", "mask", "smask", "gmask", "sop", "eop", "dblock")):
    groups: dict[int, list[str]] = {}
    for name, token in specials.items():
      groups.setdefault(int(token), []).append(name)
    clash = next(names for names in groups.values() if len(names) > 1 and names != ["pad", "eos"])
    raise ValueError(f"Special tokens {' and '.join(clash)} share id {specials[clash[0]]}; "
                     f"GLM needs distinct ids for them: {fix}")
  table = np.asarray(tokenizer.sentence_end)
  if table.ndim != 1 or table.shape[0] < vocab_size:
    raise ValueError(f"tokenizer.sentence_end has shape {table.shape}, expected ({vocab_size},): "
                     f"{fix}")
  if float(data.sentence_prob) > 0 and not table.any():
    raise ValueError("data.sentence_prob > 0 but the tokenizer marks no sentence-end token: set "
                     "data.sentence_prob=0 or use a tokenizer with sentence ends (data.tokenizer).")
