"""Corpora as document stores, chosen by data.source. What the trainer calls:

  tok = tokenizers.load_tokenizer(config.data)
  train_docs, eval_docs = sources.load_documents(config.data, tok)

Sources:
  builtin   a generated offline corpus (data/builtin_corpus.py); data.builtin_docs documents.
  files     data.files globs of .txt / .jsonl / .json, optionally .gz (data/text_files.py).
  tfds      a prepared TFDS dataset, local or gs:// (data/tfds_source.py).
  prepared  token shards written by `python -m glmjax.data.prepare`, memory-mapped.
builtin/files/tfds are tokenized at start-up into memory on every host, refused past
memory_budget (a third of the process's share of the host's memory); prepare big ones once.
Both ways give the same documents with the same ids, so the held-out split and every batch
agree. The held-out split takes one document from every block of round(1/eval_fraction)
consecutive documents (which one: a hash of the block index): deterministic, spread over the
whole corpus, and unchanged for earlier blocks when documents are appended.
"""
from __future__ import annotations

import array
import json
import logging
import os
import re
import time
from typing import Iterable, Iterator, Mapping

import numpy as np

from glmjax import paths
from glmjax.data import builtin_corpus, infilling, text_files, tfds_source
from glmjax.data.documents import DocumentSubset, InMemoryDocs, PreparedDocs
from glmjax.data.text_files import TextStats
from glmjax.data.tokenizers import tokenizer_differences, tokenizer_info

log = logging.getLogger(__name__)

# Each data.source and the config field that names its data (None: the built-in corpus).
DATA_FIELD = {"builtin": None, "files": "files", "tfds": "tfds_name", "prepared": "prepared_dir"}
SOURCES = tuple(DATA_FIELD)
_BUILTIN_DOC_BYTES = 900  # about the mean builtin document, to size its pieces


def describe_source(data_config) -> dict:
  """The config fields that decide which texts a source yields."""
  source = data_config.source
  if not source:
    raise ValueError(
        "data.source is not set: name the data to train on, one of "
        "--config.data.source=files --config.data.files='corpus/*.jsonl.gz' | "
        "--config.data.source=tfds --config.data.tfds_name=c4/en:3.1.0 | "
        "--config.data.source=prepared --config.data.prepared_dir=DIR (made by python -m "
        "glmjax.data.prepare). The built-in toy corpus only when asked for: "
        "--config.data.source=builtin, or a :local config.")
  if source == "builtin":
    return dict(source=source, builtin_docs=int(data_config.builtin_docs))
  if source == "files":
    files = text_files.expand_globs(list(data_config.files))
    return dict(source=source, files=[[p, os.path.getsize(p)] for p in files],
                txt_documents=data_config.txt_documents, text_field=data_config.text_field)
  if source == "tfds":
    return dict(source=source, tfds_name=data_config.tfds_name, tfds_split=data_config.tfds_split,
                tfds_data_dir=data_config.tfds_data_dir, text_field=data_config.text_field)
  if source == "prepared":
    return dict(source=source, prepared_dir=data_config.prepared_dir)
  raise ValueError(f"data.source={source!r}: expected one of {SOURCES}")


def source_label(data_config) -> str:
  details = {k: v for k, v in describe_source(data_config).items() if k != "source"}
  if "files" in details:
    details["files"] = list(data_config.files)
  return f"data.source={data_config.source!r} " + json.dumps(details)


def plan_pieces(data_config, target_bytes: int) -> list[dict]:
  """The source cut into work units of about target_bytes of text, in corpus order."""
  source = data_config.source
  describe_source(data_config)  # validates the source name
  if source == "builtin":
    total, step = int(data_config.builtin_docs), max(1, target_bytes // _BUILTIN_DOC_BYTES)
    return [dict(builtin=[start, min(start + step, total)]) for start in range(0, total, step)]
  if source == "files":
    files = text_files.expand_globs(list(data_config.files))
    return [dict(files=[list(r) for r in ranges]) for ranges in
            text_files.plan_file_pieces(files, target_bytes, data_config.txt_documents)]
  if source == "tfds":
    return tfds_source.plan_tfds_pieces(data_config, target_bytes)
  raise ValueError("data.source='prepared' is already tokenized; choose the source to prepare")


def iter_piece_texts(data_config, piece: dict, stats: TextStats) -> Iterator[str]:
  if "builtin" in piece:
    start, stop = piece["builtin"]
    stats.docs += stop - start
    return builtin_corpus.documents(start, stop)
  if "files" in piece:
    return (text for path, start, end in piece["files"] for text in text_files.iter_range_texts(
        path, start, end, data_config.text_field, data_config.txt_documents, stats))
  return tfds_source.iter_tfds_texts(data_config, stats, piece["tfds"])


def iter_source_texts(data_config, stats: TextStats) -> Iterator[str]:
  """Every document of a source, in order, read whole (the same sequence as its pieces)."""
  source = data_config.source
  describe_source(data_config)
  if source == "builtin":
    return iter_piece_texts(data_config, dict(builtin=[0, int(data_config.builtin_docs)]), stats)
  if source == "files":
    files = text_files.expand_globs(list(data_config.files))
    return iter_piece_texts(data_config, dict(files=[[p, 0, -1] for p in files]), stats)
  if source == "tfds":
    return tfds_source.iter_tfds_texts(data_config, stats)
  raise ValueError("data.source='prepared' has no texts; read it with load_documents")


def encode_documents(tokenizer, texts: Iterable[str], batch: int = 256) -> Iterator[np.ndarray]:
  """Token ids per document (documents that encode to nothing are dropped)."""
  texts = iter(texts)
  while True:
    chunk = [text for _, text in zip(range(batch), texts)]
    if not chunk:
      return
    for ids in tokenizer.encode_batch(chunk):
      if len(ids):
        yield ids


def token_dtype(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.int32)


def report_invalid_utf8(label: str, stats: TextStats):
  if stats.invalid_utf8:
    log.warning("%s: replaced %d invalid UTF-8 bytes with U+FFFD (in %d documents read)",
                    label, stats.invalid_utf8, stats.docs)


def stored_bytes(data_config) -> int:
  """The source's size as stored: its files on disk (compressed ones at their compressed size),
  the TFDS split's records; 0 for the generated corpus."""
  if data_config.source == "files":
    return sum(os.path.getsize(p) for p in text_files.expand_globs(list(data_config.files)))
  if data_config.source == "tfds":
    return tfds_source.split_bytes(data_config)
  return 0


def memory_budget(env: Mapping[str, str]) -> int:
  """Bytes of tokens one process may build in memory: a third of what it may use (the build
  holds them twice at its peak), which is the host's memory or its cgroup's limit if lower
  (SLURM --mem, containers), shared by the SLURM tasks on the node (with one process per GPU,
  each builds the whole corpus). 0 where the host's memory is unknown: no limit then."""
  try:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (AttributeError, ValueError, OSError):  # not a POSIX system
    return 0
  for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
      with open(limit_file, encoding="ascii") as f:
        text = f.read().strip()
    except OSError:
      continue
    if text.isdigit():  # cgroup v2 says 'max' when unlimited
      memory = min(memory, int(text))
  tasks = re.match(r"\d+", env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", ""))
  return memory // (3 * max(1, int(tasks.group()) if tasks else 1))


def _too_big(label: str, found: str, limit: int) -> ValueError:
  return ValueError(
      f"{label}: {found}, more than the {limit / (1 << 30):.1f} GiB this process may hold (a "
      "third of its share of the host's memory), and every host would hold it all. Tokenize it "
      "once with `python -m glmjax.data.prepare --config=SAME_CONFIG --out=DIR` and train with "
      "--config.data.source=prepared --config.data.prepared_dir=DIR (memory-mapped shards)")


def tokenize_source(data_config, tokenizer, *, memory_limit: int | None = None
                    ) -> tuple[InMemoryDocs, TextStats]:
  """The whole source tokenized into memory, with a progress line every few seconds.

  Refused, before reading when the stored size shows it and else as soon as the tokens pass
  memory_limit (default: memory_budget), so that a corpus too big for memory fails in minutes
  with the fix named, not after hours of tokenizing or in the OOM killer."""
  label, stats = source_label(data_config), TextStats()
  dtype = token_dtype(tokenizer.vocab_size)
  limit = memory_budget(os.environ) if memory_limit is None else memory_limit
  stored = stored_bytes(data_config)
  # No common tokenizer averages more than 8 bytes of stored text per token: a floor on the
  # tokens (the stored size also counts metadata and compression; the check below is exact).
  if limit and stored // 8 * dtype.itemsize > limit:
    raise _too_big(label, f"{stored / (1 << 30):.1f} GiB stored would make at least "
                   f"{stored // 8 * dtype.itemsize / (1 << 30):.1f} GiB of tokens", limit)
  # Only the built-in corpus is generated; an empty file stores 0 bytes, and a TFDS split may
  # not say its size.
  size = ("generated" if data_config.source == "builtin"
          else f"{stored / (1 << 30):.2f} GiB stored" if stored or data_config.source == "files"
          else "stored size unknown")
  log.info("tokenizing %s into memory (%s; %s)", label, size,
           f"at most {limit / (1 << 30):.1f} GiB of tokens" if limit else "memory size unknown")
  # Documents are joined a few thousand at a time and lengths kept as int64s: a short document
  # costs its tokens and 8 bytes, not a numpy object and a Python int (about 200 bytes).
  pieces, chunk, lengths = [], [], array.array("q")
  held = 0
  start = last_report = time.monotonic()
  for ids in encode_documents(tokenizer, iter_source_texts(data_config, stats)):
    chunk.append(ids)
    lengths.append(len(ids))
    held += len(ids) * dtype.itemsize + lengths.itemsize
    if len(chunk) == 4096:
      pieces.append(np.concatenate(chunk).astype(dtype, copy=False))
      chunk = []
    if limit and held > limit:
      raise _too_big(label, f"{len(lengths)} documents already make "
                     f"{held / (1 << 30):.2f} GiB of tokens", limit)
    if time.monotonic() - last_report > 5:
      last_report = time.monotonic()
      log.info("tokenizing %s: %d documents, %.1f GiB of tokens so far", label, len(lengths),
               held / (1 << 30))
  pieces += [np.concatenate(chunk).astype(dtype, copy=False)] if chunk else []
  tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype)
  offsets = np.concatenate([[0], np.cumsum(np.frombuffer(lengths, np.int64))])
  log.info("tokenized %s: %d documents, %d tokens in %.1f s", label, len(lengths), len(tokens),
               time.monotonic() - start)
  report_invalid_utf8(label, stats)
  return InMemoryDocs(tokens, offsets), stats


def split_documents(num_docs: int, eval_fraction: float) -> tuple[np.ndarray, np.ndarray]:
  """(train ids, held-out ids): one held-out document per block of round(1/eval_fraction)."""
  if not 0 <= eval_fraction < 1:
    raise ValueError(f"data.eval_fraction={eval_fraction}: expected a fraction in [0, 1)")
  ids = np.arange(num_docs, dtype=np.int64)
  if eval_fraction == 0 or num_docs == 0:
    return ids, ids[:0]
  if num_docs < 2:
    raise ValueError("the corpus has 1 document: nothing is left to train on after holding one "
                     "out; add documents or set data.eval_fraction=0")
  block = min(max(2, round(1 / eval_fraction)), num_docs)
  block_index = ids // block
  block_size = np.minimum(block, num_docs - block_index * block)
  scrambled = infilling.mix64(block_index.astype(np.uint64) + infilling.GAMMA)
  chosen = (scrambled % block_size.astype(np.uint64)).astype(np.int64)
  held_out = ids % block == chosen
  return ids[~held_out], ids[held_out]


def open_prepared(data_config, tokenizer) -> PreparedDocs:
  directory = data_config.prepared_dir
  make = "python -m glmjax.data.prepare --config=CONFIG --out=DIR"
  if not directory:
    raise ValueError(f"data.source='prepared' needs data.prepared_dir, the --out of `{make}`")
  if paths.is_remote(directory):
    raise ValueError(f"data.prepared_dir={directory!r}: shards are memory-mapped, so they must "
                     "be on a local disk (or a gcsfuse mount); copy the directory there first")
  manifest_path = os.path.join(directory, "manifest.json")
  if not os.path.isfile(manifest_path):
    unfinished = os.path.isfile(os.path.join(directory, "plan.json"))
    raise FileNotFoundError(
        f"data.prepared_dir={directory!r} has no manifest.json: " +
        ("prepare has not finished there; run the same prepare command again to resume it"
         if unfinished else f"create it with `{make}`"))
  with open(manifest_path) as f:
    manifest = json.load(f)
  recorded, current = manifest["tokenizer"], tokenizer_info(tokenizer)
  differs = tokenizer_differences(recorded, current)
  if differs:
    raise ValueError(
        f"data.prepared_dir={directory!r} was tokenized by {recorded['name']} but the config "
        f"names {current['name']} (they differ in {differs}); set data.tokenizer, "
        "data.tokenizer_path and data.tokenizer_vocab to the ones used by prepare, or prepare "
        "again with this tokenizer")
  return PreparedDocs(directory, manifest)


def load_documents(data_config, tokenizer) -> tuple[DocumentSubset, DocumentSubset]:
  """(train, held-out) document stores of the configured source, tokenized by `tokenizer`."""
  if data_config.source == "prepared":
    store = open_prepared(data_config, tokenizer)
  else:
    store, _ = tokenize_source(data_config, tokenizer)
  train_ids, eval_ids = split_documents(len(store.doc_lengths), data_config.eval_fraction)
  train, held_out = DocumentSubset(store, train_ids), DocumentSubset(store, eval_ids)
  _require_a_batch(data_config, train, "training",
                   "add text to the source or lower data.batch_size / data.seq_len")
  return train, held_out


def check_held_out(data_config, held_out: DocumentSubset, fix: str | None = None) -> None:
  """An evaluation split smaller than one batch would score the same few texts again and
  again; that is refused rather than reported as a held-out loss. `fix`: what to do, for a
  command other than train (whose advice is the default)."""
  _require_a_batch(data_config, held_out, "evaluation",
                   fix or f"raise data.eval_fraction (now {data_config.eval_fraction}), add "
                          "text, or set train.eval_every=0")


def _require_a_batch(data_config, docs: DocumentSubset, split: str, fix: str) -> None:
  batch_tokens = data_config.batch_size * data_config.seq_len
  tokens = int(docs.doc_lengths.sum())
  if tokens < batch_tokens:
    raise ValueError(
        f"{source_label(data_config)}: the {split} split has {tokens} tokens in {len(docs)} "
        f"documents, fewer than one batch (data.batch_size={data_config.batch_size} x "
        f"data.seq_len={data_config.seq_len} = {batch_tokens}); {fix}.")
