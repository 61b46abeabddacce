"""prepare: resumable, byte-identical shards; read back they equal on-the-fly tokenization."""
import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
import types

import numpy as np
import pytest

from glmjax import config as glm_config
from glmjax.data import builtin_corpus, prepare, sources
from glmjax.data.documents import PreparedDocs
from glmjax.data.tokenizers import ByteTokenizer

BYTE = ByteTokenizer()
SHARD_MB = 0.05  # about 58 builtin documents per shard


def data_config(**overrides):
  config = glm_config.data_defaults()
  config.source = "builtin"
  config.update(dict(seq_len=32, batch_size=4, builtin_docs=300, eval_fraction=0.05))
  config.update(overrides)
  return config


def directory_bytes(path) -> dict:
  return {name: open(os.path.join(path, name), "rb").read() for name in sorted(os.listdir(path))}


def test_interrupted_prepare_resumes_to_identical_shards(tmp_path):
  config = data_config()
  whole = prepare.prepare(config, str(tmp_path / "whole"), shard_mb=SHARD_MB, progress=False)
  assert whole is not None and len(whole["shards"]) >= 4
  resumed_dir = str(tmp_path / "resumed")
  assert prepare.prepare(config, resumed_dir, shard_mb=SHARD_MB, limit_shards=2,
                         progress=False) is None
  assert not os.path.exists(os.path.join(resumed_dir, "manifest.json"))
  assert len([n for n in os.listdir(resumed_dir) if n.endswith(".tokens.bin")]) == 2
  # A shard cut off mid-write leaves only a temporary file: it must not count as done.
  with open(os.path.join(resumed_dir, "shard-00002.tokens.bin.tmp-12345"), "wb") as f:
    f.write(b"partial")
  with pytest.raises(FileNotFoundError, match="has not finished there.*run the same prepare"):
    sources.load_documents(data_config(source="prepared", prepared_dir=resumed_dir), BYTE)
  first_shard = os.path.getmtime(os.path.join(resumed_dir, "shard-00000.tokens.bin"))
  assert prepare.prepare(config, resumed_dir, shard_mb=SHARD_MB, progress=False) == whole
  assert os.path.getmtime(os.path.join(resumed_dir, "shard-00000.tokens.bin")) == first_shard
  assert directory_bytes(resumed_dir) == directory_bytes(tmp_path / "whole")


def test_a_prepare_run_again_on_finished_shards_reports_the_tokens_they_hold(tmp_path, capsys):
  """The progress line counts an earlier run's shards in full, not as zero tokens."""
  config = data_config()
  manifest = prepare.prepare(config, str(tmp_path), shard_mb=SHARD_MB, progress=False)
  assert manifest["num_tokens"] > 100_000  # shown as 0.1M or more
  assert prepare.prepare(config, str(tmp_path), shard_mb=SHARD_MB) == manifest
  line = capsys.readouterr().err.strip().splitlines()[-1]
  shards = len(manifest["shards"])
  assert line.startswith(f"prepare: {shards}/{shards} shards, {manifest['num_docs']:,} docs, "
                         f"{manifest['num_tokens'] / 1e6:.1f}M tokens, 0.00M tokens/s"), line


def test_parallel_cli_matches_in_process_prepare(tmp_path):
  out = tmp_path / "cli"
  result = subprocess.run(
      [sys.executable, "-m", "glmjax.data.prepare", "--config=configs/base.py:local",
       "--config.data.builtin_docs=300", "--config.data.eval_fraction=0.05", f"--out={out}",
       "--workers=2", f"--shard_mb={SHARD_MB}"],
      capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.returncode == 0, result.stderr[-2000:]
  assert "prepare: " in result.stderr and "shards" in result.stderr  # the progress line
  assert "--config.data.prepared_dir=" in result.stdout
  local = glm_config.default_config().data
  local.update(source="builtin", builtin_docs=300, eval_fraction=0.05)
  prepare.prepare(local, str(tmp_path / "inline"), shard_mb=SHARD_MB, progress=False)
  assert directory_bytes(out) == directory_bytes(tmp_path / "inline")


def test_the_command_refuses_a_config_without_its_tokenizer_file_in_one_line(tmp_path):
  # The README's command without its data.tokenizer_path: configs/base.py tokenizes with hf.
  (tmp_path / "corpus.jsonl").write_text('{"text": "one document"}\n')
  result = subprocess.run(
      [sys.executable, "-m", "glmjax.data.prepare", "--config=configs/base.py",
       "--config.data.source=files", f"--config.data.files=('{tmp_path}/*.jsonl',)",
       f"--out={tmp_path}/prepared", "--workers=2"],
      capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)),
      env={**os.environ, "JAX_PLATFORMS": "cpu", "TMPDIR": str(tmp_path)})  # traceback file
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert "data.tokenizer='hf' needs data.tokenizer_path" in result.stderr
  assert not (tmp_path / "prepared").exists()
  # A ValueError is what a bug raises too: the line names a file in TMPDIR keeping its traceback.
  kept = re.search(r"\(traceback in (\S+)\)$", result.stderr.strip())
  assert kept and os.path.dirname(kept.group(1)) == str(tmp_path), result.stderr
  assert "Traceback (most recent call last)" in open(kept.group(1), encoding="utf-8").read()


def test_prepared_store_reads_what_on_the_fly_tokenization_gives(tmp_path):
  config = data_config()
  manifest = prepare.prepare(config, str(tmp_path), shard_mb=SHARD_MB, progress=False)
  assert manifest["tokenizer"]["specials"] == BYTE.specials.as_dict()
  assert manifest["split"]["num_eval_docs"] == 15 and manifest["token_dtype"] == "uint16"
  fly_train, fly_eval = sources.load_documents(config, BYTE)
  disk_train, disk_eval = sources.load_documents(
      data_config(source="prepared", prepared_dir=str(tmp_path)), BYTE)
  assert isinstance(disk_train.base, PreparedDocs)
  for fly, disk in ((fly_train, disk_train), (fly_eval, disk_eval)):
    assert np.array_equal(fly.doc_lengths, disk.doc_lengths)
    rng = np.random.default_rng(0)
    docs = rng.integers(0, len(fly.doc_lengths), 64)  # across all shards in one read
    lengths = np.minimum(fly.doc_lengths[docs], 40)
    starts = (rng.random(64) * (fly.doc_lengths[docs] - lengths + 1)).astype(np.int64)
    got = disk.read(docs, starts, lengths)
    assert got.dtype == np.int32 and np.array_equal(got, fly.read(docs, starts, lengths))
  with pytest.raises(IndexError):
    disk_train.base.read([0], [0], [disk_train.base.doc_lengths[0] + 1])


def test_prepare_files_cut_into_shards_with_invalid_bytes_counted(tmp_path):
  lines = [json.dumps({"text": f"document {i}: " + "text " * (i % 13)}).encode()
           for i in range(500)]
  lines[7] = b'{"text": "broken \xff byte"}'
  (tmp_path / "corpus.jsonl").write_bytes(b"\n".join(lines) + b"\n")
  config = data_config(source="files", files=(f"{tmp_path}/corpus.jsonl",))
  out = str(tmp_path / "out")
  manifest = prepare.prepare(config, out, shard_mb=0.005, progress=False)
  assert len(manifest["shards"]) > 3 and manifest["invalid_utf8"] == 1
  store = PreparedDocs(out)
  fly, _ = sources.tokenize_source(config, BYTE)
  assert np.array_equal(store.doc_lengths, fly.doc_lengths)
  assert np.array_equal(store.read(np.arange(500), np.zeros(500, int), store.doc_lengths),
                        fly.tokens.astype(np.int32))


def test_prepared_errors_name_the_fix(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match="needs data.prepared_dir"):
    sources.load_documents(data_config(source="prepared"), BYTE)
  with pytest.raises(FileNotFoundError, match="no manifest.json.*glmjax.data.prepare"):
    sources.load_documents(data_config(source="prepared", prepared_dir=str(tmp_path)), BYTE)
  prepare.prepare(data_config(), str(tmp_path), shard_mb=SHARD_MB, progress=False)
  with pytest.raises(ValueError, match=r"another source or tokenizer.*'source'"):
    prepare.prepare(data_config(builtin_docs=301), str(tmp_path), shard_mb=SHARD_MB,
                    progress=False)
  manifest_path = tmp_path / "manifest.json"
  manifest = json.loads(manifest_path.read_text())
  manifest["tokenizer"].update(fingerprint="0123", name="hf:other.json")
  manifest_path.write_text(json.dumps(manifest))
  with pytest.raises(ValueError, match="tokenized by hf:other.json.*data.tokenizer"):
    sources.load_documents(data_config(source="prepared", prepared_dir=str(tmp_path)), BYTE)
  with pytest.raises(ValueError, match="already tokenized"):
    prepare.prepare(data_config(source="prepared"), str(tmp_path / "x"), progress=False)
  (tmp_path / "a-file").write_text("not a folder")
  with pytest.raises(ValueError, match=r"--out='.*a-file': a file is there; give a folder"):
    prepare.prepare(data_config(), str(tmp_path / "a-file"), progress=False)
  assert (tmp_path / "a-file").read_text() == "not a folder"
  monkeypatch.chdir(tmp_path)  # a bucket was made as a local folder named "gs:" here
  with pytest.raises(ValueError, match=r"^--out='gs://bucket/p': shards are written, and "
                                       "memory-mapped by train, on a local disk"):
    prepare.prepare(data_config(), "gs://bucket/p", progress=False)
  assert not (tmp_path / "gs:").exists()


def test_shards_prepared_before_dblock_existed_still_open(tmp_path):
  """Manifests written before [dBLOCK] joined the specials lack it; its id never occurs in
  tokenized text, so they open; a changed id of a recorded role is still refused."""
  prepare.prepare(data_config(), str(tmp_path), shard_mb=SHARD_MB, progress=False)
  manifest_path = tmp_path / "manifest.json"
  manifest = json.loads(manifest_path.read_text())
  del manifest["tokenizer"]["specials"]["dblock"]
  manifest_path.write_text(json.dumps(manifest))
  train, _ = sources.load_documents(data_config(source="prepared", prepared_dir=str(tmp_path)),
                                    BYTE)
  assert len(train.doc_lengths) > 0
  manifest["tokenizer"]["specials"]["mask"] += 1
  manifest_path.write_text(json.dumps(manifest))
  with pytest.raises(ValueError, match="differ in \\['specials'\\]"):
    sources.load_documents(data_config(source="prepared", prepared_dir=str(tmp_path)), BYTE)


def test_a_crash_while_writing_the_manifest_leaves_a_prepare_that_reads_as_unfinished(
    tmp_path, monkeypatch):
  """manifest.json marks the whole directory as done: a crash (a full disk) halfway through
  writing it must leave no manifest, not a cut-off one, and the same command finishes it."""
  config, out = data_config(), str(tmp_path / "out")
  real_dump = json.dump

  def dump_then_fail(value, f, **kwargs):
    if "shards" not in value:  # plan.json and the shard records are written as usual
      return real_dump(value, f, **kwargs)
    f.write(json.dumps(value, **kwargs)[:100])
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(prepare.json, "dump", dump_then_fail)
  with pytest.raises(OSError, match="No space left"):
    prepare.prepare(config, out, shard_mb=SHARD_MB, progress=False)
  assert not os.path.exists(os.path.join(out, "manifest.json"))
  with pytest.raises(FileNotFoundError, match="has not finished there"):
    sources.load_documents(data_config(source="prepared", prepared_dir=out), BYTE)
  monkeypatch.setattr(prepare.json, "dump", real_dump)
  manifest = prepare.prepare(config, out, shard_mb=SHARD_MB, progress=False)
  assert manifest["num_docs"] == 300
  prepare.prepare(config, str(tmp_path / "whole"), shard_mb=SHARD_MB, progress=False)
  assert directory_bytes(out) == directory_bytes(tmp_path / "whole")


@pytest.mark.parametrize("gone", ["tokens.bin", "lengths.npy"])
def test_a_finished_shard_whose_token_or_lengths_file_is_gone_is_written_again_on_resume(
    tmp_path, gone):
  # A shard's record names its files; one missing (deleted, or lost in a partial copy of the
  # directory) makes the shard unfinished, not a manifest entry for a file that is not there.
  config = data_config()
  prepare.prepare(config, str(tmp_path / "whole"), shard_mb=SHARD_MB, progress=False)
  resumed = tmp_path / "resumed"
  prepare.prepare(config, str(resumed), shard_mb=SHARD_MB, limit_shards=2, progress=False)
  os.remove(resumed / f"shard-00001.{gone}")
  prepare.prepare(config, str(resumed), shard_mb=SHARD_MB, progress=False)
  assert directory_bytes(resumed) == directory_bytes(tmp_path / "whole")


def test_the_manifest_and_shard_records_count_what_the_shards_hold(tmp_path):
  config = data_config()
  manifest = prepare.prepare(config, str(tmp_path), shard_mb=SHARD_MB, progress=False)
  assert len(manifest["shards"]) >= 4
  for record in manifest["shards"]:
    lengths = np.load(tmp_path / record["lengths"])
    tokens = (tmp_path / record["tokens"]).stat().st_size // 2  # uint16 tokens
    assert record["num_docs"] == len(lengths) and record["num_tokens"] == lengths.sum() == tokens
  _, held_out = sources.load_documents(data_config(source="prepared", prepared_dir=str(tmp_path)),
                                       BYTE)
  # Byte tokens: a held-out document's tokens are its UTF-8 bytes.
  _, eval_ids = sources.split_documents(300, config.eval_fraction)
  expected = sum(len(builtin_corpus.document(int(i)).encode()) for i in eval_ids)
  assert manifest["split"]["num_eval_docs"] == len(held_out) == len(eval_ids)
  assert manifest["split"]["num_eval_tokens"] == int(held_out.doc_lengths.sum()) == expected


def test_a_shard_of_only_empty_documents_opens_and_reads_like_the_others(tmp_path):
  # A piece whose texts are all blank (a file of empty records) makes a shard of no tokens; the
  # store opens around it, and a read of no tokens at the very end of the corpus is empty.
  for name, texts in (("a", ["first", "second"]), ("b", ["  ", "", "\n"]), ("c", ["third"])):
    (tmp_path / f"{name}.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in texts))
  config = data_config(source="files", files=(f"{tmp_path}/*.jsonl",), eval_fraction=0.0)
  out = str(tmp_path / "out")
  # About 10 bytes of text per shard: every line (a record) is a shard of its own.
  manifest = prepare.prepare(config, out, shard_mb=1e-5, progress=False)
  assert [r["num_docs"] for r in manifest["shards"]] == [1, 1, 0, 0, 0, 1]
  store = PreparedDocs(out)
  texts = [BYTE.decode(store.read([i], [0], [n])) for i, n in enumerate(store.doc_lengths)]
  assert texts == ["first", "second", "third"]
  assert store.read([2], [5], [0]).tolist() == []
  assert BYTE.decode(store.read([1, 2, 2], [0, 5, 0], [6, 0, 5])) == "secondthird"


def test_an_out_folder_holding_the_corpus_files_is_refused_before_any_shard_is_written(tmp_path):
  # With 'corpus/*' the shards written there would match the glob: the end of the run (its
  # every shard tokenized) and every rerun would read them as corpus files.
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  (corpus / "a.jsonl").write_text("".join(json.dumps({"text": f"words {i} " * 40}) + "\n"
                                           for i in range(40)))
  config = data_config(source="files", files=(f"{corpus}/*",))
  with pytest.raises(ValueError, match=r"holds the corpus file .*a\.jsonl.*folder of their own"):
    prepare.prepare(config, str(corpus), progress=False)
  assert sorted(os.listdir(corpus)) == ["a.jsonl"]
  assert prepare.prepare(config, str(corpus / "shards"), progress=False)["num_docs"] == 40


def test_a_files_source_without_files_is_refused_naming_data_files(tmp_path):
  # An empty data.files must not prepare an empty corpus that looks complete.
  config = data_config(source="files", files=())
  with pytest.raises(ValueError, match=r"data.source='files' needs data.files"):
    prepare.prepare(config, str(tmp_path / "out"), progress=False)
  assert not os.path.exists(tmp_path / "out" / "manifest.json")
  with pytest.raises(ValueError, match=r"needs data.files"):
    sources.load_documents(config, BYTE)


def test_every_file_prepare_renames_into_place_reaches_the_disk_before_its_name(
    tmp_path, monkeypatch):
  """A finished name must never survive a power loss without its bytes: each file is flushed
  (fsync, all of its bytes) before the rename, and the directory after it."""
  events, real_fsync, real_replace = [], os.fsync, os.replace

  def fsync(fd):
    events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))
    real_fsync(fd)

  def replace(source, target):
    events.append(("replace", os.path.realpath(source), os.path.getsize(source)))
    real_replace(source, target)
    events.append(("renamed", os.path.dirname(os.path.realpath(target)), None))

  monkeypatch.setattr(os, "fsync", fsync)
  monkeypatch.setattr(os, "replace", replace)
  out = tmp_path / "out"
  manifest = prepare.prepare(data_config(), str(out), shard_mb=SHARD_MB, progress=False)
  monkeypatch.undo()
  # plan, two files and a record per shard, and the manifest: all renamed into place
  renames = [i for i, event in enumerate(events) if event[0] == "replace"]
  assert len(renames) == 2 + 3 * len(manifest["shards"])
  for i in renames:
    _, source, size = events[i]
    assert ("fsync", source, size) in events[:i], f"{source} renamed before it was flushed"
    directory = events[i + 1][1]
    assert any(event[:2] == ("fsync", directory) for event in events[i + 1:]), (
        f"the rename into {directory} was not flushed")


def test_the_command_s_closing_line_names_the_tokenizer_that_wrote_the_shards(tmp_path):
  # Training on the shards with another tokenizer is refused: the line gives every field it
  # needs, quoted for the shell.
  config = data_config(tokenizer="sentencepiece", tokenizer_path="/data/spm.model",
                       tokenizer_vocab="chinese_sp")
  assert prepare.training_flags(config, "/data/prepared").split() == [
      "--config.data.source=prepared", "--config.data.prepared_dir=/data/prepared",
      "--config.data.tokenizer=sentencepiece", "--config.data.tokenizer_path=/data/spm.model",
      "--config.data.tokenizer_vocab=chinese_sp"]
  # Empty fields too: a config whose own layout is bert must be told '' for the byte tokenizer.
  assert prepare.training_flags(data_config(), "my out").split(" ") == [
      "--config.data.source=prepared", "--config.data.prepared_dir='my", "out'",
      "--config.data.tokenizer=byte", "--config.data.tokenizer_path=''",
      "--config.data.tokenizer_vocab=''"]


def test_a_mount_that_cannot_sync_a_directory_still_prepares(tmp_path, monkeypatch):
  """CIFS, 9p and vboxsf answer a directory fsync with EINVAL: the renames stand as such a
  mount keeps them, and prepare finishes (a file's own fsync is still required)."""
  real_fsync = os.fsync

  def fsync(fd):
    if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")):
      raise OSError(errno.EINVAL, "Invalid argument")
    real_fsync(fd)
  monkeypatch.setattr(os, "fsync", fsync)
  manifest = prepare.prepare(data_config(), str(tmp_path / "out"), shard_mb=SHARD_MB,
                             progress=False)
  assert manifest is not None and manifest["num_docs"] == 300


class _Terminal(io.StringIO):
  """A stderr that says it is a terminal: prepare then rewrites one progress line."""

  def isatty(self):
    return True


def test_a_prepare_that_fails_midway_ends_its_progress_line_before_the_error(tmp_path,
                                                                           monkeypatch):
  terminal = _Terminal()
  monkeypatch.setattr(sys, "stderr", terminal)
  written, real = [], prepare.write_shard

  def write_shard(task):
    if written:
      raise OSError("[Errno 28] No space left on device")
    written.append(task)
    return real(task)

  monkeypatch.setattr(prepare, "write_shard", write_shard)
  with pytest.raises(OSError, match="No space left"):
    prepare.prepare(data_config(), str(tmp_path / "out"), shard_mb=SHARD_MB)
  text = terminal.getvalue()
  assert "\rprepare: 1/" in text  # the line after the first shard
  assert text.endswith("\n")  # ended: the error the command prints starts on its own line


def sigint_disposition(_):
  """In a worker: what SIGINT does there (a spawned worker imports this module to run it)."""
  return signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_tokenizer_workers_ignore_ctrl_c_from_the_moment_they_start(monkeypatch):
  """The terminal sends Ctrl-C to the workers too: one arriving while a worker still imports
  its modules would print a traceback from each. So they are started with SIGINT ignored (a
  disposition a new process inherits and Python leaves alone), not told to ignore it later."""
  before = signal.getsignal(signal.SIGINT)
  pool = prepare._worker_pool(2)  # pylint: disable=protected-access
  try:
    assert pool.map(sigint_disposition, range(2)) == [True, True]
  finally:
    pool.terminate()
  assert signal.getsignal(signal.SIGINT) is before  # the parent's own Ctrl-C still works
  # Ignored while the pool starts its processes, whatever they do once started; from a parent
  # that hears Ctrl-C (pytest run in the background by a shell inherits it ignored already).
  at_start = []
  spawning = types.SimpleNamespace(
      Pool=lambda processes, **kwargs: at_start.append(signal.getsignal(signal.SIGINT)))
  monkeypatch.setattr(prepare.multiprocessing, "get_context", lambda method: spawning)
  hearing = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    prepare._worker_pool(1)  # pylint: disable=protected-access
  finally:
    signal.signal(signal.SIGINT, hearing)
  assert at_start == [signal.SIG_IGN]
