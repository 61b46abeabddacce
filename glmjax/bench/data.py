"""Data-pipeline throughput on one core:

  taskset -c 0 python -m glmjax.bench --what=data --config=configs/large.py

Builds batches of the config's shape from a synthetic in-memory corpus (like the original
measurement in docs/performance.md: 2000 random documents of mean length ~700, ids from the model
vocabulary avoiding the special tokens, a few ids marked as sentence ends) and prints one JSON
line: output tokens per second (token ids to finished batch, this process only), padding, masked
fraction and mean span length for the config's objectives, and the same for the GLM-10B mixture
(blank .5, sentence .3, document .2) and for that mixture with every recipe option on
(EVERY_OPTION); per objective: spans per row, masked fraction, span-length histogram and padding;
the share of rows whose window starts after a sentence end (`sentence_start_share`,
data.sentence_windows: ~1.0; off: the base rate); and, in rows packed from short documents, the
share of a document's first places that start a span against its other places
(`document_start_spans`: about equal). The original GLM builds ~0.75-0.88 M tokens/s on one core
(docs/performance.md).
"""
import json
import os
import time

import numpy as np
from absl import flags

from glmjax.data import infilling, pipeline, specials, tokenizers
from glmjax.data.documents import InMemoryDocs

DEFAULT_STEPS = 5
NUM_DOCS, MEAN_DOC_LEN = 2000, 700
SENTENCE_END_SHARE = 1 / 25   # of the ids in use: sentences of ~25 tokens
MIXTURE = dict(blank_prob=0.5, sentence_prob=0.3, document_prob=0.2)
# GLM-10B stage 2's options, all on (with the mixture): the slowest recipe the pipeline builds.
EVERY_OPTION = dict(sentence_windows=True, original_sentences=True, short_seq_prob=0.5,
                    single_span_prob=0.05, block_mask_prob=0.1, context_mask_ratio=0.05,
                    draw_per_batch=True)


class SyntheticTokenizer:
  """GLM specials chosen by vocabulary size, and a sentence-end table over some plain ids."""

  def __init__(self, vocab_size: int, seed: int = 0):
    if vocab_size == 30592:
      self.specials = specials.BERT_SPECIALS
    elif vocab_size == 50304:
      self.specials = specials.GPT2_SPECIALS
    else:
      self.specials = tokenizers.ByteTokenizer().specials
    largest = max(self.specials.as_dict().values())
    self.vocab_size = max(vocab_size, specials.pad_vocab(largest + 1))
    added = min(self.specials.sop, self.specials.eop, self.specials.gmask, self.specials.smask)
    self.plain_ids = np.setdiff1d(np.arange(added), list(self.specials.as_dict().values()))
    rng = np.random.default_rng(seed)
    ends = rng.choice(self.plain_ids, max(1, int(len(self.plain_ids) * SENTENCE_END_SHARE)),
                      replace=False)
    self.sentence_end = np.zeros(self.vocab_size, bool)
    self.sentence_end[ends] = True


def synthetic_corpus(tokenizer: SyntheticTokenizer, num_docs: int = NUM_DOCS,
                     mean_length: int = MEAN_DOC_LEN, seed: int = 0) -> InMemoryDocs:
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, 2 * mean_length, num_docs)
  tokens = rng.choice(tokenizer.plain_ids, int(lengths.sum())).astype(np.int32)
  return InMemoryDocs(tokens, np.concatenate([[0], np.cumsum(lengths)]))


def objective_stats(batch, eop: int) -> dict:
  """Per objective (blank, sentence, document): rows, spans per row, masked fraction of the text,
  span-length histogram (lengths 1..10, then 11 or more, as shares) and padding. `eop`: the
  tokenizer's [eop] id, which ends every span but a generation suffix."""
  blocks, sep = batch["block_position_ids"], batch["sep"].astype(np.int64)
  out = {}
  for index, name in enumerate(pipeline.OBJECTIVE_NAMES):
    rows = batch["objective"] == index
    if not rows.any():
      continue
    b = blocks[rows]
    part_b, spans = (b > 0).sum(axis=1), (b == 1).sum(axis=1)
    # A span's last position: the one just before the next span's 1, or Part B's end. Its block
    # position is the span's length + 1 ([sop] first, [eop] predicted last), or the length
    # itself for a generation suffix, which has no [eop] (it predicts the text's last token).
    ends = (b > 0) & ~np.concatenate([b[:, 1:] > 1, np.zeros((len(b), 1), bool)], axis=1)
    open_end = ends & (batch["targets"][rows] != eop)
    lengths = b[ends] - 1 + open_end[ends]
    masked = part_b - spans + open_end.sum(axis=1)
    text = sep[rows] + part_b - 2 * spans + open_end.sum(axis=1)
    histogram = np.bincount(np.minimum(lengths, 11), minlength=12)[1:] / max(len(lengths), 1)
    out[name] = {
        "rows": int(rows.sum()),
        "spans_per_row": round(float(spans.mean()), 3),
        "masked_fraction": round(float(masked.sum() / max(text.sum(), 1)), 4),
        "span_length_histogram": [round(float(h), 4) for h in histogram],
        "padding_fraction": round(float(1 - (sep[rows] + part_b).sum() / b.size), 4),
    }
  return out


def sentence_start_share(data_config, seed: int = 0) -> float:
  """Share of rows whose text starts at a document start or just after a sentence end, on one
  long document of distinct ids with a sentence end every 25 tokens (the base rate is 1/25)."""
  tokenizer = SyntheticTokenizer(30592, seed)
  ids = np.setdiff1d(tokenizer.plain_ids, np.flatnonzero(tokenizer.sentence_end))
  rng = np.random.default_rng(seed)
  document = rng.permutation(ids)[:20_000].astype(np.int32)
  end_id = int(np.flatnonzero(tokenizer.sentence_end)[0])
  document[24::25] = end_id
  config = data_config.copy_and_resolve_references()
  config.update(blank_prob=1.0, sentence_prob=0.0, document_prob=0.0, short_seq_prob=0.0,
                single_span_prob=0.0, batch_size=512)
  docs = InMemoryDocs(document, np.array([0, len(document)]))
  p = pipeline.BatchPipeline(config, tokenizer, docs, seed=seed)
  text, _, _ = p.windows(infilling.RowRandom.for_rows(seed, 0, np.arange(512)),
                         np.full(512, int(config.seq_len) - 2))
  where = np.full(int(ids.max()) + 1, -1)
  where[document[document != end_id]] = np.flatnonzero(document != end_id)
  first = np.where(text[:, 1] == end_id, -2, where[np.minimum(text[:, 1], len(where) - 1)])
  after_end = (first == 0) | ((first > 0) & (document[np.maximum(first - 1, 0)] == end_id))
  return round(float(np.mean(after_end)), 4)


def document_start_spans(data_config, tokenizer, seed: int = 0) -> dict:
  """[MASK] rows packed from short documents (mean T/4 tokens): the share of a later document's
  first places (in Part A, where a span is one [MASK]) that start a span, and of its other
  places. The original's placement favours neither; spans pushed off document boundaries, as
  glmjax placed them before, made the first about four times the others."""
  config = data_config.copy_and_resolve_references()
  config.update(blank_prob=1.0, sentence_prob=0.0, document_prob=0.0, short_seq_prob=0.0,
                single_span_prob=0.0, batch_size=4096)  # ~12,000 first places at T = 512
  docs = synthetic_corpus(tokenizer, mean_length=max(int(config.seq_len) // 4, 8), seed=seed)
  batch = pipeline.BatchPipeline(config, tokenizer, docs, seed=seed).global_batch(0)
  return start_shares(batch, tokenizer.specials)


def start_shares(batch, marks) -> dict:
  """document_start_spans' two shares, of the rows of one batch."""
  tokens = batch["tokens"]
  place = np.arange(tokens.shape[1])[None, :] < batch["sep"][:, None]
  place &= ~np.isin(tokens, [marks.cls, marks.eos, marks.pad])
  first = np.zeros_like(place)
  first[:, 2:] = tokens[:, 1:-1] == marks.cls  # not the row's own [CLS], at 0
  first &= place
  starts = tokens == marks.mask
  return {"first_places": round(float(starts[first].mean()), 4),
          "other_places": round(float(starts[place & ~first].mean()), 4)}


def batch_stats(batch) -> dict:
  """Padding over all rows; span statistics over blank rows; shares of the objectives."""
  sep = batch["sep"].astype(np.int64)
  blocks = batch["block_position_ids"]
  part_b = (blocks > 0).sum(axis=1)
  spans = (blocks == 1).sum(axis=1)
  blank = batch["objective"] == pipeline.BLANK
  masked = (part_b - spans)[blank]
  text = (sep + part_b - 2 * spans)[blank]
  return {
      "padding_fraction": float(1 - (sep + part_b).sum() / blocks.size),
      "masked_fraction": float(masked.sum() / max(text.sum(), 1)),
      "mean_span_length": float(masked.sum() / max(spans[blank].sum(), 1)),
      "spans_per_blank_row": float(spans[blank].mean()) if blank.any() else 0.0,
      "objective_shares": [float(np.mean(batch["objective"] == o))
                           for o in range(len(pipeline.OBJECTIVE_NAMES))],
  }


def measure(data_config, tokenizer, docs, steps: int, seed: int = 0) -> dict:
  p = pipeline.BatchPipeline(data_config, tokenizer, docs, seed=seed)
  p.global_batch(0)  # warm-up: first-touch of memory, imports
  start = time.perf_counter()
  batches = [p.global_batch(step) for step in range(1, steps + 1)]
  elapsed = time.perf_counter() - start
  tokens = steps * p.batch_size * p.seq_len
  merged = {key: np.concatenate([b[key] for b in batches]) for key in pipeline.BATCH_KEYS}
  return {"tokens_per_s": tokens / elapsed, "batch_s": elapsed / steps, **batch_stats(merged),
          "per_objective": objective_stats(merged, tokenizer.specials.eop)}


def main(config, argv):
  del argv
  steps = flags.FLAGS.steps or DEFAULT_STEPS
  tokenizer = SyntheticTokenizer(int(config.model.vocab_size))
  docs = synthetic_corpus(tokenizer)
  data = config.data
  own = measure(data, tokenizer, docs, steps, config.seed)
  mixture_config = data.copy_and_resolve_references()
  mixture_config.update(**MIXTURE)
  mixture = measure(mixture_config, tokenizer, docs, steps, config.seed)
  every_option = mixture_config.copy_and_resolve_references()
  every_option.update(**EVERY_OPTION)
  all_on = measure(every_option, tokenizer, docs, steps, config.seed)
  result = {
      "what": "data",
      "seq_len": int(data.seq_len),
      "batch_size": int(data.batch_size),
      "steps": steps,
      "objectives": list(pipeline.objective_probs(data)),
      "cpu_cores_allowed": len(os.sched_getaffinity(0)),
      **{key: round(value, 4) if isinstance(value, float) else value for key, value in own.items()},
      **{f"mixture_{key}": (round(value, 4) if isinstance(value, float) else value)
         for key, value in mixture.items()},
  }
  result["tokens_per_s"] = round(own["tokens_per_s"])
  result["mixture_tokens_per_s"] = round(mixture["tokens_per_s"])
  result["every_option_tokens_per_s"] = round(all_on["tokens_per_s"])
  result["every_option_padding_fraction"] = round(all_on["padding_fraction"], 4)
  result["every_option_per_objective"] = all_on["per_objective"]
  result["sentence_start_share"] = sentence_start_share(data, config.seed)
  result["document_start_spans"] = document_start_spans(data, tokenizer, config.seed)
  print(json.dumps(result))
