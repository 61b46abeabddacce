"""python -m glmjax.bench --what=prepare --config=...: corpus preparation and shard read speed.

Prepares the configured source (at most _MAX_SHARDS shards of _SHARD_MB MiB of text) with one
worker process, then reads the shards through PreparedDocs.read in batches of data.batch_size
random windows of data.seq_len tokens, as the pipeline does. Prints one JSON line. The read rate
is with the shards in the page cache (they were just written).
"""
from __future__ import annotations

import glob
import json
import os
import tempfile
import time

import numpy as np

from glmjax.data import prepare
from glmjax.data.documents import PreparedDocs

_SHARD_MB = 16.0
_MAX_SHARDS = 2
_READ_SECONDS = 2.0


def _read_rate(store, rows: int, row_tokens: int, seconds: float) -> dict:
  rng = np.random.default_rng(0)
  usable = np.flatnonzero(store.doc_lengths > 0)
  batches = tokens = 0
  start = time.perf_counter()
  while time.perf_counter() - start < seconds:
    docs = usable[rng.integers(0, len(usable), rows)]
    lengths = np.minimum(store.doc_lengths[docs], row_tokens)
    starts = (rng.random(rows) * (store.doc_lengths[docs] - lengths + 1)).astype(np.int64)
    tokens += len(store.read(docs, starts, lengths))
    batches += 1
  elapsed = time.perf_counter() - start
  return dict(read_tokens_per_s=round(tokens / elapsed), read_batches_per_s=round(batches / elapsed,
                                                                                  1))


def main(config, argv):
  del argv
  os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core: no tokenizer thread pool
  data = config.data
  with tempfile.TemporaryDirectory() as out:
    start = time.perf_counter()
    manifest = prepare.prepare(data, out, workers=1, shard_mb=_SHARD_MB, limit_shards=_MAX_SHARDS,
                               progress=False)
    prepare_seconds = time.perf_counter() - start
    if manifest is None:  # a large source: read the shards written so far
      records = []
      for path in sorted(glob.glob(os.path.join(out, "shard-*.json"))):
        with open(path) as f:
          records.append(json.load(f))
      with open(os.path.join(out, "plan.json")) as f:
        manifest = dict(token_dtype=json.load(f)["token_dtype"], shards=records)
    store = PreparedDocs(out, manifest)
    total_tokens = int(store.doc_lengths.sum())
    result = dict(what="prepare", source=data.source, tokenizer=data.tokenizer,
                  docs=len(store), tokens=total_tokens, shards=len(manifest["shards"]),
                  prepare_seconds=round(prepare_seconds, 2),
                  prepare_tokens_per_s_one_core=round(total_tokens / prepare_seconds),
                  row_tokens=data.seq_len, rows_per_read=data.batch_size,
                  **_read_rate(store, data.batch_size, data.seq_len, _READ_SECONDS))
  print(json.dumps(result))
