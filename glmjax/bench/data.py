"""Data-pipeline throughput on one core:

  taskset -c 0 python -m glmjax.bench --what=data --config=configs/large.py

Builds batches of the config's shape from a synthetic in-memory corpus (like reference GLM.md §5:
2000 random documents of mean length ~700, ids from the model vocabulary avoiding the special
tokens, a few ids marked as sentence ends) and prints one JSON line: output tokens per second
(token ids to finished batch, this process only), padding, masked fraction and mean span length
for the config's objectives, and the same for the GLM-10B mixture (blank .5, sentence .3,
document .2). The original GLM builds ~0.75-0.88 M tokens/s on one core (§5).
"""
import json
import os
import time

import numpy as np
from absl import flags

from glmjax.data import pipeline, tokenizers
from glmjax.data.documents import InMemoryDocs

DEFAULT_STEPS = 5
NUM_DOCS, MEAN_DOC_LEN = 2000, 700
SENTENCE_END_SHARE = 1 / 25   # of the ids in use: sentences of ~25 tokens
MIXTURE = dict(blank_prob=0.5, sentence_prob=0.3, document_prob=0.2)


class SyntheticTokenizer:
  """GLM specials chosen by vocabulary size, and a sentence-end table over some plain ids."""

  def __init__(self, vocab_size: int, seed: int = 0):
    if vocab_size == 30592:
      self.specials = tokenizers.BERT_SPECIALS
    elif vocab_size == 50304:
      self.specials = tokenizers.GPT2_SPECIALS
    else:
      self.specials = tokenizers.ByteTokenizer().specials
    largest = max(self.specials.as_dict().values())
    self.vocab_size = max(vocab_size, tokenizers.pad_vocab(largest + 1))
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


def batch_stats(batch) -> dict:
  """Padding over all rows; span statistics over blank rows; shares of the objectives."""
  sep = batch["sep"].astype(np.int64)
  blocks = batch["block_position_ids"]
  part_b = (blocks > 0).sum(axis=1)
  spans = (blocks == 1).sum(axis=1)
  blank = batch["objective"] == 0
  masked = (part_b - spans)[blank]
  text = (sep + part_b - 2 * spans)[blank]
  return {
      "padding_fraction": float(1 - (sep + part_b).sum() / blocks.size),
      "masked_fraction": float(masked.sum() / max(text.sum(), 1)),
      "mean_span_length": float(masked.sum() / max(spans[blank].sum(), 1)),
      "spans_per_blank_row": float(spans[blank].mean()) if blank.any() else 0.0,
      "objective_shares": [float(np.mean(batch["objective"] == o)) for o in range(3)],
  }


def measure(data_config, tokenizer, docs, steps: int, seed: int = 0) -> dict:
  p = pipeline.BatchPipeline(data_config, tokenizer, docs, seed=seed)
  p.global_batch(0)  # warm-up: first-touch of memory, imports
  start = time.perf_counter()
  batches = [p.global_batch(step) for step in range(1, steps + 1)]
  elapsed = time.perf_counter() - start
  tokens = steps * p.batch_size * p.seq_len
  merged = {key: np.concatenate([b[key] for b in batches]) for key in pipeline.BATCH_KEYS}
  return {"tokens_per_s": tokens / elapsed, "batch_s": elapsed / steps, **batch_stats(merged)}


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
  result = {
      "what": "data",
      "seq_len": int(data.seq_len),
      "batch_size": int(data.batch_size),
      "steps": steps,
      "objectives": [float(data.blank_prob), float(data.sentence_prob), float(data.document_prob)],
      "cpu_cores_allowed": len(os.sched_getaffinity(0)),
      **{key: round(value, 4) if isinstance(value, float) else value for key, value in own.items()},
      **{f"mixture_{key}": (round(value, 4) if isinstance(value, float) else value)
         for key, value in mixture.items()},
  }
  result["tokens_per_s"] = round(own["tokens_per_s"])
  result["mixture_tokens_per_s"] = round(mixture["tokens_per_s"])
  print(json.dumps(result))
