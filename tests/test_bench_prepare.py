"""bench --what=prepare: corpus preparation with one worker and the read rate of its shards, in
windows from anywhere in a document, as the pipeline reads them."""
import itertools
import json
import types

import ml_collections
import numpy as np

from glmjax.bench import prepare as bench_prepare
from glmjax.data import builtin_corpus, sources
from test_prepare import SHARD_MB
from test_prepare import data_config as prepare_config


def test_the_prepare_benchmark_s_read_rate_is_the_tokens_of_its_windows_over_the_time(
    monkeypatch):
  # Two batches are read, in 2.5 s; a clock that starts at 0 would hide a start added, not
  # subtracted.
  clock = iter([100.0, 100.4, 100.9, 102.1, 102.5])
  monkeypatch.setattr(bench_prepare, "time",
                      types.SimpleNamespace(perf_counter=lambda: next(clock)))
  doc_lengths = np.array([100, 0, 50, 300])
  reads = []

  def read(docs, starts, lengths):
    reads.append((docs, starts, lengths))
    return np.zeros(int(lengths.sum()), np.int32)

  store = types.SimpleNamespace(doc_lengths=doc_lengths, read=read)
  figures = bench_prepare._read_rate(store, rows=4, row_tokens=64, seconds=2.0)
  assert len(reads) == 2
  for docs, starts, lengths in reads:  # windows of at most a row, inside non-empty documents
    assert len(docs) == 4 and all(doc_lengths[docs] > 0)
    assert all(lengths == np.minimum(doc_lengths[docs], 64))
    assert all(starts >= 0) and all(starts + lengths <= doc_lengths[docs])
  tokens = sum(int(lengths.sum()) for _, _, lengths in reads)
  assert figures == {"read_tokens_per_s": round(tokens / 2.5), "read_batches_per_s": 0.8}


def test_the_prepare_benchmark_reads_its_windows_from_anywhere_in_a_document(monkeypatch):
  # As the pipeline reads: a benchmark that always read a document's first tokens would time
  # the reads the page cache serves best.
  clock = itertools.chain([100.0], itertools.repeat(100.5, 20), [103.0, 103.0])  # 20 reads
  monkeypatch.setattr(bench_prepare, "time",
                      types.SimpleNamespace(perf_counter=lambda: next(clock)))
  starts = []
  store = types.SimpleNamespace(doc_lengths=np.array([300, 500]), read=lambda docs, first,
                                lengths: starts.extend(first) or np.zeros(int(lengths.sum())))
  bench_prepare._read_rate(store, rows=4, row_tokens=64, seconds=2.0)
  assert len(starts) == 4 * 20 and min(starts) >= 0 and max(starts) <= 500 - 64
  assert len(set(starts)) > 40  # spread over the documents, not a few fixed places


def test_the_prepare_benchmark_prepares_with_one_worker_as_its_figure_s_name_says(monkeypatch,
                                                                                  capsys):
  workers, prepare = [], bench_prepare.prepare.prepare
  monkeypatch.setattr(bench_prepare.prepare, "prepare", lambda *args, **kwargs: (
      workers.append(kwargs["workers"]) or prepare(*args, **kwargs)))
  monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # the benchmark sets it; put it back
  data = prepare_config(builtin_docs=20, seq_len=32, batch_size=4)
  bench_prepare.main(ml_collections.ConfigDict(dict(data=data)), [])
  assert workers == [1] and "prepare_tokens_per_s_one_core" in json.loads(capsys.readouterr().out)


def test_the_prepare_benchmark_counts_the_shards_it_wrote_of_a_source_it_did_not_finish(
    monkeypatch, capsys):
  # 300 builtin documents in shards of 0.05 MiB (58 documents): the benchmark writes 2 of the
  # 6 and reads back what they hold.
  monkeypatch.setattr(bench_prepare, "_SHARD_MB", SHARD_MB)
  clock = itertools.chain([100.0, 104.0], itertools.count(110.0))  # preparing takes 4 s
  monkeypatch.setattr(bench_prepare, "time",
                      types.SimpleNamespace(perf_counter=lambda: next(clock)))
  monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # the benchmark sets it; put it back
  data = prepare_config(builtin_docs=300, seq_len=32, batch_size=4)
  bench_prepare.main(ml_collections.ConfigDict(dict(data=data)), [])
  figures = json.loads(capsys.readouterr().out)
  pieces = sources.plan_pieces(data, int(SHARD_MB * (1 << 20)))
  assert len(pieces) == 6
  written = [i for piece in pieces[:2] for i in range(*piece["builtin"])]
  # Byte tokens: a document's tokens are its UTF-8 bytes.
  tokens = sum(len(builtin_corpus.document(i).encode()) for i in written)
  assert (figures["shards"], figures["docs"], figures["tokens"]) == (2, len(written), tokens)
  assert figures["prepare_seconds"] == 4.0
  assert figures["prepare_tokens_per_s_one_core"] == round(tokens / 4.0)
  # Windows of data.seq_len tokens, data.batch_size of them per read.
  assert (figures["row_tokens"], figures["rows_per_read"]) == (32, 4)
