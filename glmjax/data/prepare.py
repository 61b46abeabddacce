"""Tokenize a corpus once into memory-mapped token shards.

  python -m glmjax.data.prepare --config=configs/base.py:local --out=DIR [--workers=N]
  python -m glmjax.train ... --config.data.source=prepared --config.data.prepared_dir=DIR

The source is cut into pieces of about --shard_mb of text (big files at document boundaries,
TFDS splits into even sub-splits); each piece becomes one shard, written by one of --workers
processes. An interrupted run resumes: finished shards are kept, a shard being written lives
under a temporary name until it is complete. DIR holds:
  plan.json               source, tokenizer and pieces; a resume must match it
  shard-NNNNN.tokens.bin  the piece's token ids, documents back to back (manifest token_dtype)
  shard-NNNNN.lengths.npy int64 [docs]: tokens per document
  shard-NNNNN.json        the shard's counts; written last, so it marks the shard as done
  manifest.json           written when all shards are done: tokenizer (name, fingerprint,
                          vocab_size, special ids), token_dtype, totals, shards, held-out split
Shards are a pure function of the source, tokenizer and --shard_mb: byte-identical on every run.
"""
from __future__ import annotations

import errno
import functools
import json
import multiprocessing
import os
import shlex
import signal
import sys
import threading
import time

import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from glmjax import paths
from glmjax.data import sources
from glmjax.data.text_files import TextStats
from glmjax.data.tokenizers import load_tokenizer, tokenizer_info

FORMAT = "glmjax.prepared.v1"
_WRITE_BYTES = 8 << 20  # tokens are buffered and written in blocks of this size
_UNSYNCABLE_DIRECTORY = (errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EACCES, errno.EPERM,
                         errno.EISDIR)  # what a directory fsync raises where it cannot be done


def _flush_to_disk(f):
  """The bytes of a file about to be renamed into place reach the disk first: otherwise a power
  loss can keep the rename but not the data, and a shard of zeros reads as finished."""
  f.flush()
  os.fsync(f.fileno())


def _durable_replace(temporary: str, path: str):
  """Renames a flushed file into place and flushes the directory entry, so that after a power
  loss the new name exists (the shard counts as done) exactly when its bytes do."""
  os.replace(temporary, path)
  try:
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
      os.fsync(directory)
    finally:
      os.close(directory)
  except OSError as error:
    # Some mounts (CIFS, 9p, vboxsf) cannot sync a directory: the rename stands as they keep
    # it, and prepare goes on, as it did before it synced directories at all.
    if error.errno not in _UNSYNCABLE_DIRECTORY:
      raise


def _atomic_write_json(path: str, value):
  temporary = f"{path}.tmp-{os.getpid()}"
  with open(temporary, "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
    f.write("\n")
    _flush_to_disk(f)
  _durable_replace(temporary, path)


def _shard_name(index: int) -> str:
  return f"shard-{index:05d}"


def _load_record(out_dir: str, index: int) -> dict | None:
  """The record of a finished shard, or None."""
  name = os.path.join(out_dir, _shard_name(index))
  if not os.path.isfile(name + ".json"):
    return None
  with open(name + ".json") as f:
    record = json.load(f)
  done = all(os.path.isfile(os.path.join(out_dir, record[k])) for k in ("tokens", "lengths"))
  return record if done else None


@functools.lru_cache(maxsize=1)
def _tokenizer_for(data_json: str):
  """One tokenizer per worker process, loaded by its first shard (a pool task carries only the
  data config, as JSON so that it can be the cache key)."""
  return load_tokenizer(ml_collections.ConfigDict(json.loads(data_json)))


def write_shard(task: tuple) -> dict:
  """Tokenize one piece into shard files (temporary names first, renamed when complete)."""
  data_dict, out_dir, index, piece, dtype_name = task
  data_config = ml_collections.ConfigDict(data_dict)
  tokenizer = _tokenizer_for(json.dumps(data_dict, sort_keys=True, default=str))
  dtype, stats = np.dtype(dtype_name), TextStats()
  name = _shard_name(index)
  final = {kind: os.path.join(out_dir, f"{name}.{kind}")
           for kind in ("tokens.bin", "lengths.npy", "json")}
  temporary = {kind: f"{path}.tmp-{os.getpid()}" for kind, path in final.items()}
  lengths, buffered, buffered_bytes = [], [], 0
  with open(temporary["tokens.bin"], "wb") as f:
    texts = sources.iter_piece_texts(data_config, piece, stats)
    for ids in sources.encode_documents(tokenizer, texts):
      lengths.append(len(ids))
      buffered.append(ids.astype(dtype))
      buffered_bytes += len(ids) * dtype.itemsize
      if buffered_bytes >= _WRITE_BYTES:
        f.write(np.concatenate(buffered).tobytes())
        buffered, buffered_bytes = [], 0
    if buffered:
      f.write(np.concatenate(buffered).tobytes())
    _flush_to_disk(f)
  with open(temporary["lengths.npy"], "wb") as f:
    np.save(f, np.asarray(lengths, dtype=np.int64))
    _flush_to_disk(f)
  _durable_replace(temporary["tokens.bin"], final["tokens.bin"])
  _durable_replace(temporary["lengths.npy"], final["lengths.npy"])
  record = dict(index=index, tokens=f"{name}.tokens.bin", lengths=f"{name}.lengths.npy",
                num_docs=len(lengths), num_tokens=int(sum(lengths)),
                invalid_utf8=stats.invalid_utf8)
  _atomic_write_json(final["json"], record)
  return record


def _modified(source: dict) -> dict[str, int]:
  """Each corpus file's modification time (ns): an edit that keeps a file's size (a typo fixed
  in place) leaves its shards written before it holding the old text, in pieces cut at the
  old newlines."""
  return {path: os.stat(path).st_mtime_ns for path, _ in source.get("files", [])}


def _check_plan(out_dir: str, plan: dict):
  path = os.path.join(out_dir, "plan.json")
  plan = json.loads(json.dumps(plan))
  if os.path.isfile(path):
    with open(path) as f:
      existing = json.load(f)
    if "modified" not in existing:  # written before the times were recorded: sizes only
      plan.pop("modified")
    differs = sorted(k for k in set(plan) | set(existing) if plan.get(k) != existing.get(k))
    if differs == ["modified"]:
      raise ValueError(_written_since(out_dir, existing["modified"], plan["modified"]))
    if differs:
      raise ValueError(f"--out={out_dir!r} holds a prepare of another source or tokenizer "
                       f"(plan.json differs in {differs}; 'pieces' alone: another --shard_mb "
                       "or changed files; 'modified': a corpus file written since); use a new "
                       "--out, or delete that directory to start over")
  else:
    _atomic_write_json(path, plan)


def _written_since(out_dir: str, recorded: dict, current: dict) -> str:
  """The refusal of a resume whose corpus files were written since, naming them: a copy or a
  checkout rewrites a file with the same text, which its old time given back lets go on."""
  changed = sorted(path for path in current if recorded.get(path) != current[path])
  path = changed[0]
  seconds = f"{recorded[path] // 10**9}.{recorded[path] % 10**9:09d}"  # exact, as recorded
  return (f"--out={out_dir!r} was begun on corpus files written since: {', '.join(changed[:3])}"
          f"{' ...' if len(changed) > 3 else ''} (the shards written hold their old text); "
          f"use a new --out or delete that directory to start over, or, if the text is the "
          f"same, give each its recorded time back (touch -d @{seconds} {path}) to go on")


def _refuse_out_among_inputs(out_dir: str, source: dict):
  """Shards written beside the corpus files mix with them: a glob like 'corpus/*' then matches
  the shards (refused only at the end, after every shard is written) and a rerun sees another
  source."""
  out = os.path.realpath(out_dir)
  for path, _ in source.get("files", []):
    if os.path.commonpath([out, os.path.realpath(path)]) == out:
      raise ValueError(f"--out={out_dir!r} holds the corpus file {path!r} that data.files "
                       "reads; give the shards a folder of their own")


def _progress(done: int, total: int, finished: list[dict], new_tokens: int, started: float):
  """The shards, documents and tokens written so far (an earlier run's shards included); the
  rate of this run's own tokens."""
  elapsed = max(time.monotonic() - started, 1e-9)
  docs, tokens = (sum(record[key] for record in finished) for key in ("num_docs", "num_tokens"))
  line = (f"prepare: {done}/{total} shards, {docs:,} docs, {tokens / 1e6:.1f}M tokens, "
          f"{new_tokens / elapsed / 1e6:.2f}M tokens/s, {elapsed:.0f}s")
  tty = sys.stderr.isatty()
  print(("\r" if tty else "") + line, end="" if tty else "\n", file=sys.stderr, flush=True)


def _worker_pool(processes: int):
  """Spawned tokenizer processes that ignore Ctrl-C: the terminal sends it to them too, and the
  parent alone stops them (terminate), with one line instead of a traceback from each. They
  are started with SIGINT ignored, a disposition a new process keeps and Python then leaves
  alone, so that a Ctrl-C while they import their modules is ignored as well; the initializer
  covers a worker the pool starts later (after a crash), and a parent off its main thread,
  where the disposition cannot be changed."""
  ignore = dict(initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))
  if threading.current_thread() is not threading.main_thread():
    return multiprocessing.get_context("spawn").Pool(processes, **ignore)
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    return multiprocessing.get_context("spawn").Pool(processes, **ignore)
  finally:
    signal.signal(signal.SIGINT, previous)


def _manifest(data_config, plan: dict, records: list[dict]) -> dict:
  lengths = [np.load(os.path.join(plan["out_dir"], r["lengths"])) for r in records]
  doc_lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
  _, eval_ids = sources.split_documents(len(doc_lengths), data_config.eval_fraction)
  return dict(
      format=FORMAT, source=plan["source"], tokenizer=plan["tokenizer"],
      token_dtype=plan["token_dtype"], num_docs=int(len(doc_lengths)),
      num_tokens=int(doc_lengths.sum()), invalid_utf8=sum(r["invalid_utf8"] for r in records),
      shards=records,
      split=dict(eval_fraction=data_config.eval_fraction, num_eval_docs=int(len(eval_ids)),
                 num_eval_tokens=int(doc_lengths[eval_ids].sum()),
                 rule="one held-out document per block of round(1/eval_fraction) documents "
                      "(glmjax.data.sources.split_documents), recomputed from "
                      "data.eval_fraction when read"))


def prepare(data_config: ml_collections.ConfigDict, out_dir: str, workers: int = 1,
            shard_mb: float = 256.0, limit_shards: int = 0, progress: bool = True) -> dict | None:
  """Writes the shards of `data_config`'s source to out_dir; the manifest when all are done.

  limit_shards > 0 stops after writing that many shards (returns None; run again to go on).
  """
  if data_config.source == "prepared":
    raise ValueError("data.source='prepared' is already tokenized; set data.source to the "
                     "corpus to prepare (builtin, files or tfds)")
  if paths.is_remote(out_dir):  # os.makedirs would make a local folder named "gs:"
    raise ValueError(f"--out={out_dir!r}: shards are written, and memory-mapped by train, on a "
                     "local disk (or a gcsfuse mount); prepare them there")
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ValueError(f"--out={out_dir!r}: a file is there; give a folder for the shards (new, "
                     "or one an earlier prepare of the same data wrote)")
  tokenizer = load_tokenizer(data_config)
  pieces = sources.plan_pieces(data_config, max(1, int(shard_mb * (1 << 20))))
  dtype = sources.token_dtype(tokenizer.vocab_size)
  plan = dict(format=FORMAT, source=sources.describe_source(data_config),
              tokenizer=tokenizer_info(tokenizer), token_dtype=dtype.name, pieces=pieces)
  plan["modified"] = _modified(plan["source"])
  _refuse_out_among_inputs(out_dir, plan["source"])
  label = sources.source_label(data_config)  # now: a glob read again at the end may match more
  os.makedirs(out_dir, exist_ok=True)
  _check_plan(out_dir, plan)
  for stale in os.listdir(out_dir):  # left by an interrupted run: never complete
    if ".tmp-" in stale:
      os.remove(os.path.join(out_dir, stale))
  records = {i: _load_record(out_dir, i) for i in range(len(pieces))}
  pending = [i for i, record in records.items() if record is None]
  if limit_shards > 0:
    pending = pending[:limit_shards]
  data_dict = data_config.to_dict()
  tasks = [(data_dict, out_dir, i, pieces[i], dtype.name) for i in pending]
  started, finished = time.monotonic(), [r for r in records.values() if r is not None]
  if progress:
    _progress(len(finished), len(pieces), finished, 0, started)
  if workers > 1 and len(tasks) > 1:
    # spawn, not fork: TensorFlow and the tokenizers' thread pools do not survive a fork.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    pool = _worker_pool(min(workers, len(tasks)))
    results = pool.imap_unordered(write_shard, tasks)
  else:
    pool, results = None, map(write_shard, tasks)
  new_tokens = 0
  try:
    for record in results:
      records[record["index"]] = record
      finished.append(record)
      new_tokens += record["num_tokens"]
      if progress:
        _progress(len(finished), len(pieces), finished, new_tokens, started)
  finally:
    if pool is not None:
      pool.terminate()
    if progress and sys.stderr.isatty():  # ends the line the progress kept rewriting, so
      print(file=sys.stderr)  # that a failure's line starts on a line of its own
  if any(record is None for record in records.values()):
    return None
  ordered = [records[i] for i in range(len(pieces))]
  manifest = _manifest(data_config, dict(plan, out_dir=out_dir), ordered)
  sources.report_invalid_utf8(label, TextStats(
      docs=manifest["num_docs"], invalid_utf8=manifest["invalid_utf8"]))
  _atomic_write_json(os.path.join(out_dir, "manifest.json"), manifest)
  return manifest


def _define_flags():
  """Flags exist only when this module is the program (the trainer and bench import it)."""
  return dict(
      config=config_flags.DEFINE_config_file("config", None, "Run config file (its data "
                                             "section).", lock_config=True),
      out=flags.DEFINE_string("out", None, "Output directory for the shards and manifest."),
      workers=flags.DEFINE_integer("workers", os.cpu_count() or 1, "Tokenizer processes."),
      shard_mb=flags.DEFINE_float("shard_mb", 256.0, "Text per shard, in MiB (before "
                                  "tokenizing)."),
      limit_shards=flags.DEFINE_integer("limit_shards", 0, "Stop after this many new shards "
                                        "(0: all). Run again to continue."))


def main(argv, flag):
  del argv
  if flag["config"].value is None or not flag["out"].value:
    raise app.UsageError("needs --config=CONFIG_FILE[:ARG] and --out=DIR")
  out = flag["out"].value
  manifest = prepare(flag["config"].value.data, out, workers=flag["workers"].value,
                     shard_mb=flag["shard_mb"].value, limit_shards=flag["limit_shards"].value)
  if manifest is None:
    print(f"stopped after --limit_shards={flag['limit_shards'].value}; run again to continue")
    return
  print(f"prepared {manifest['num_docs']:,} documents, {manifest['num_tokens']:,} tokens in "
        f"{len(manifest['shards'])} shards at {out}; train with "
        f"{training_flags(flag['config'].value.data, out)}")


def training_flags(data_config: ml_collections.ConfigDict, out: str) -> str:
  """The --config flags that train on `out`: the source, and the tokenizer that wrote it (a
  run must read the shards with it; the data section of another config may name another)."""
  fields = dict(source="prepared", prepared_dir=out, tokenizer=data_config.tokenizer,
                tokenizer_path=data_config.tokenizer_path,
                tokenizer_vocab=data_config.tokenizer_vocab)
  # Every field, empty ones too ('' overrides the other config's bert layout), shell-quoted.
  return " ".join(f"--config.data.{key}={shlex.quote(str(value))}"
                  for key, value in fields.items())


if __name__ == "__main__":
  # The commands' shared start sits above the data layer: only this program block imports it.
  from glmjax import cli
  _flags = _define_flags()
  # Validated as train validates it; a tokenizer or corpus that is not there (or cannot be
  # read), or an --out of another prepare, ends as one line.
  cli.run(lambda argv: main(argv, _flags), validate=True, user_errors=(ValueError, OSError))
