"""Sources: the built-in corpus, local files, the split, bad input (TFDS: test_tfds_source.py)."""
import gzip
import hashlib
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from glmjax import config as glm_config
from glmjax.data import builtin_corpus, sources, text_files
from glmjax.data.tokenizers import ByteTokenizer

BYTE = ByteTokenizer()


def data_config(**overrides):
  config = glm_config.data_defaults()
  config.source = "builtin"
  config.update(dict(seq_len=16, batch_size=2))
  config.update(overrides)
  return config


def texts_of(store) -> list[str]:
  return [BYTE.decode(store.read([i], [0], [n])) for i, n in enumerate(store.doc_lengths)]


def test_builtin_corpus_is_fixed_and_large_enough():
  digest = hashlib.sha256("\x00".join(builtin_corpus.documents(0, 50)).encode()).hexdigest()
  # The corpus is generated from integer hashes only: this digest holds on every machine.
  assert digest[:16] == "3a3d18eb10898ed7", digest
  start = time.perf_counter()
  config = data_config(seq_len=128, batch_size=16)
  train, held_out = sources.load_documents(config, BYTE)
  assert time.perf_counter() - start < 5
  tokens = int(train.doc_lengths.sum())
  assert tokens > 4 * 300 * 16 * 128  # a few hundred steps of 16 x 128 see each token < once
  assert 0.005 < len(held_out) / (len(train) + len(held_out)) < 0.02
  text = "\n".join(texts_of(train)[:500])
  sentences = [s for s in text.replace("\n", " ").split(". ") if s]
  assert len(set(sentences)) > 0.5 * len(sentences)


def test_split_is_deterministic_disjoint_and_stable_when_appending():
  train, held_out = sources.split_documents(1000, 0.05)
  assert len(held_out) == 50 and len(np.intersect1d(train, held_out)) == 0
  assert np.array_equal(np.sort(np.concatenate([train, held_out])), np.arange(1000))
  again, held_again = sources.split_documents(1000, 0.05)
  assert np.array_equal(held_out, held_again)
  _, held_more = sources.split_documents(1500, 0.05)
  assert np.array_equal(held_more[:50], held_out)
  assert len(sources.split_documents(5, 0.01)[1]) == 1  # a tiny corpus still holds one out
  assert len(sources.split_documents(5, 0.0)[1]) == 0
  with pytest.raises(ValueError, match="eval_fraction"):
    sources.split_documents(5, 1.5)


def test_every_block_of_the_split_the_last_partial_one_too_holds_out_one_document():
  """One held-out document per block of round(1 / eval_fraction) consecutive documents: a corpus
  that does not end on a block boundary still holds one out of its last, shorter block."""
  for fraction in (0.3, 0.1, 0.05):
    block = round(1 / fraction)
    for num_docs in range(2, 6 * block):
      train, held_out = sources.split_documents(num_docs, fraction)
      size = min(block, num_docs)  # a corpus of one block or less: that one block
      assert np.bincount(held_out // size).tolist() == [1] * -(-num_docs // size), (
          fraction, num_docs, held_out)
      assert len(train) + len(held_out) == num_docs


def write_corpus(tmp_path):
  """A .txt, a .jsonl with a huge line and invalid bytes, and a .jsonl.gz; the expected texts."""
  huge = "word " * 200_000 + "end."
  txt = "First paragraph, line one.\r\nLine two: ünïcödé 世界.\r\n\r\n\n   \nSecond paragraph!\n\n"
  jsonl = (json.dumps({"text": "json doc één"}).encode() + b"\n\n"
           + b'{"text": "bad \xff\xfe bytes", "id": 3}\n'
           + json.dumps({"text": huge}).encode() + b"\n"
           + json.dumps({"text": "   "}).encode() + b"\n"
           + json.dumps({"text": "lone \ud800 surrogate"}).encode() + b"\n")
  (tmp_path / "a.txt").write_bytes(txt.encode())
  (tmp_path / "b.jsonl").write_bytes(jsonl)
  with gzip.open(tmp_path / "c.jsonl.gz", "wb") as f:
    f.write(json.dumps({"text": "gzip doc."}).encode() + b"\n")
  expected = ["First paragraph, line one.\nLine two: ünïcödé 世界.", "Second paragraph!",
              "json doc één", "bad \ufffd\ufffd bytes", huge, "lone \ufffd surrogate", "gzip doc."]
  return expected


def test_files_source_reads_txt_jsonl_gz(tmp_path, caplog):
  expected = write_corpus(tmp_path)
  config = data_config(source="files", files=(f"{tmp_path}/*.txt", f"{tmp_path}/*.jsonl*"))
  store, stats = sources.tokenize_source(config, BYTE)
  assert texts_of(store) == expected
  assert stats.invalid_utf8 == 3  # two bad bytes and one lone surrogate
  assert "replaced 3 invalid UTF-8 bytes" in caplog.text
  train, held_out = sources.load_documents(config, BYTE)
  assert len(train) + len(held_out) == len(expected)


@pytest.mark.parametrize("source", ["builtin", "files"])
def test_the_training_and_held_out_splits_read_the_documents_their_ids_name(tmp_path, source):
  """Document i of a split is document split_ids[i] of the whole corpus, token for token."""
  if source == "files":
    corpus = write_corpus(tmp_path)
    config = data_config(source="files", files=(f"{tmp_path}/*.txt", f"{tmp_path}/*.jsonl*"),
                         eval_fraction=0.3)
  else:
    corpus = list(builtin_corpus.documents(0, 60))
    config = data_config(builtin_docs=60, eval_fraction=0.1)
  train_ids, held_out_ids = sources.split_documents(len(corpus), config.eval_fraction)
  assert len(held_out_ids) >= 2 and held_out_ids[0] > 0  # not the first documents by chance
  train, held_out = sources.load_documents(config, BYTE)
  assert texts_of(train) == [corpus[i] for i in train_ids]
  assert texts_of(held_out) == [corpus[i] for i in held_out_ids]


class CountingTokenizer(ByteTokenizer):
  def __init__(self):
    super().__init__()
    self.calls = 0

  def encode_batch(self, texts):
    self.calls += 1
    return super().encode_batch(texts)


def test_a_source_too_big_for_memory_is_refused_before_or_while_tokenizing(tmp_path):
  (tmp_path / "c.jsonl").write_text(
      "".join(json.dumps({"text": f"{i} " + "x" * 1000}) + "\n" for i in range(100)))
  config = data_config(source="files", files=(f"{tmp_path}/c.jsonl",))
  stored = sources.stored_bytes(config)
  assert stored == (tmp_path / "c.jsonl").stat().st_size
  # Below the floor of the stored size (8 bytes per token, 2 bytes each): refused unread.
  tokenizer = CountingTokenizer()
  with pytest.raises(ValueError, match=r"c.jsonl.*GiB stored would make at least.*data.prepare"):
    sources.tokenize_source(config, tokenizer, memory_limit=stored // 8)
  assert tokenizer.calls == 0
  # Above the floor, below the real tokens (one per byte here): refused once they pass it.
  with pytest.raises(ValueError, match=r"documents already make.*source=prepared"):
    sources.tokenize_source(config, tokenizer, memory_limit=stored // 2)
  assert tokenizer.calls > 0
  store, _ = sources.tokenize_source(config, tokenizer, memory_limit=4 * stored)
  assert len(store.doc_lengths) == 100
  assert texts_of(store) == [json.loads(line)["text"] for line in
                             (tmp_path / "c.jsonl").read_text().splitlines()]


def test_the_memory_budget_is_shared_by_the_slurm_tasks_of_a_node():
  alone = sources.memory_budget({})
  assert 0 < alone <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 3
  assert sources.memory_budget({"SLURM_NTASKS_PER_NODE": "8"}) == alone // 8
  assert sources.memory_budget({"SLURM_TASKS_PER_NODE": "4(x2)"}) == alone // 4
  assert sources.memory_budget({"SLURM_NTASKS_PER_NODE": "16"}) == alone // 16
  assert sources.memory_budget({"SLURM_TASKS_PER_NODE": "12(x2)"}) == alone // 12


def test_a_file_that_several_globs_match_is_read_once_in_the_place_of_its_first_glob(tmp_path):
  expected = write_corpus(tmp_path)  # a.txt's two documents, then b.jsonl's four, c's one
  globs = (f"{tmp_path}/a.txt", f"{tmp_path}/*.jsonl*", f"{tmp_path}/*", f"{tmp_path}/b.jsonl")
  config = data_config(source="files", files=globs)
  assert text_files.expand_globs(list(globs)) == [str(tmp_path / name) for name in
                                                  ("a.txt", "b.jsonl", "c.jsonl.gz")]
  store, _ = sources.tokenize_source(config, BYTE)
  assert texts_of(store) == expected
  # --config.data.files=A,B on the command line gives one string: its globs split at commas,
  # unless the string matches a file as it is (a name with a comma in it).
  assert text_files.expand_globs([",".join(globs)]) == text_files.expand_globs(list(globs))
  # A space after a comma, or a comma at the end, as people type lists.
  assert text_files.expand_globs([", ".join(globs) + ","]) == text_files.expand_globs(list(globs))
  (tmp_path / "d,e.txt").write_text("a document in a file with a comma in its name\n")
  assert text_files.expand_globs([f"{tmp_path}/d,e.txt"]) == [f"{tmp_path}/d,e.txt"]


def test_a_shard_size_below_one_builtin_document_plans_one_document_per_piece():
  pieces = sources.plan_pieces(data_config(builtin_docs=5), target_bytes=100)
  assert pieces == [dict(builtin=[i, i + 1]) for i in range(5)]


def test_the_files_a_glob_matches_are_read_in_the_order_of_their_names(tmp_path):
  """Document ids follow the corpus order, so every host and every run must read the files in
  one order, whatever order the file system lists them in: their names'."""
  names = [f"part-{i:03d}.jsonl" for i in range(40)]
  for i in np.random.default_rng(0).permutation(len(names)):  # created out of order
    (tmp_path / names[i]).write_text(json.dumps({"text": f"document {i}"}) + "\n")
  config = data_config(source="files", files=(f"{tmp_path}/part-*.jsonl",))
  assert text_files.expand_globs(list(config.files)) == [str(tmp_path / n) for n in names]
  store, _ = sources.tokenize_source(config, BYTE)
  assert texts_of(store) == [f"document {i}" for i in range(len(names))]


def test_txt_files_can_be_whole_file_documents(tmp_path):
  write_corpus(tmp_path)
  config = data_config(source="files", files=(f"{tmp_path}/a.txt",), txt_documents="file")
  store, _ = sources.tokenize_source(config, BYTE)
  assert texts_of(store) == [(tmp_path / "a.txt").read_text().replace("\r\n", "\n")]


def test_a_paragraph_keeps_the_indentation_and_spacing_of_its_lines(tmp_path):
  """A .txt paragraph is its lines as written, joined by newlines: code and verse keep their
  indentation; only the line ends (and \\r) go, and blank lines separate documents."""
  paragraphs = ["def f(x):\n    return x  # four spaces\n\tand a tab", "  indented start\nend  "]
  written = "\r\n\r\n".join(p.replace("\n", "\r\n") for p in paragraphs) + "\r\n"
  (tmp_path / "code.txt").write_bytes(written.encode())
  store, _ = sources.tokenize_source(
      data_config(source="files", files=(f"{tmp_path}/code.txt",)), BYTE)
  assert texts_of(store) == paragraphs


def test_big_files_are_cut_at_document_boundaries(tmp_path):
  write_corpus(tmp_path)
  lines = [json.dumps({"text": f"document {i} " * (i % 7 + 1)}) for i in range(400)]
  (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
  paragraphs = [f"para {i}\nsecond line {i}" for i in range(300)]
  (tmp_path / "e.txt").write_text("\n\n \n".join(paragraphs) + "\n")
  config = data_config(source="files", files=(f"{tmp_path}/*",))
  pieces = sources.plan_pieces(config, target_bytes=2000)
  assert sum(len(p["files"]) for p in pieces) > 10
  for piece in pieces:  # every range starts where a document starts
    for path, start, _ in piece["files"]:
      assert start == 0 or open(path, "rb").read()[start - 1:start] == b"\n"
  # Both big files are cut (blank lines end the .txt's documents), and a piece closes on the
  # range that brings it to 2000 bytes: each but the last holds 2000 bytes or more.
  ranges = [r for p in pieces for r in p["files"]]
  assert all(sum(r[0].endswith(name) for r in ranges) > 1 for name in ("d.jsonl", "e.txt"))
  sizes = [[(os.path.getsize(path) if end < 0 else end) - start for path, start, end in
            piece["files"]] for piece in pieces]
  assert all(sum(bytes_[:-1]) < 2000 <= sum(bytes_) for bytes_ in sizes[:-1])
  stats = text_files.TextStats()
  by_pieces = [t for p in pieces for t in sources.iter_piece_texts(config, p, stats)]
  assert by_pieces == list(sources.iter_source_texts(config, text_files.TextStats()))
  assert paragraphs[0] in by_pieces and paragraphs[-1] in by_pieces


def test_files_errors_name_the_field_and_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"data.files: .*matches no file"):
    sources.load_documents(data_config(source="files", files=(f"{tmp_path}/*.jsonl",)), BYTE)
  (tmp_path / "x.jsonl").write_text('{"body": "text here"}\n')
  with pytest.raises(ValueError, match=r"no field 'text'.*\['body'\].*data.text_field"):
    sources.load_documents(data_config(source="files", files=(f"{tmp_path}/x.jsonl",)), BYTE)
  (tmp_path / "y.jsonl").write_text("not json\n")
  with pytest.raises(ValueError, match=r"y.jsonl.*not JSON"):
    sources.load_documents(data_config(source="files", files=(f"{tmp_path}/y.jsonl",)), BYTE)
  (tmp_path / "z.csv").write_text("a,b\n")
  with pytest.raises(ValueError, match="unsupported type"):
    sources.load_documents(data_config(source="files", files=(f"{tmp_path}/z.csv",)), BYTE)
  with pytest.raises(ValueError, match="data.source='nope'"):
    sources.load_documents(data_config(source="nope"), BYTE)


def test_a_gz_file_whose_compressed_data_is_damaged_is_refused_naming_it(tmp_path):
  """Damage inside the compressed stream raises zlib.error, neither an OSError nor an EOFError:
  it ended the run as an unforeseen error that named no file."""
  path = tmp_path / "bad.jsonl.gz"
  path.write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)  # a gzip header, then no deflate stream
  with pytest.raises(ValueError, match=r"^data.files: cannot read '.*bad.jsonl.gz': .*; the file "
                                       r"is damaged or cut short: copy or compress it again$"):
    sources.load_documents(data_config(source="files", files=(str(path),)), BYTE)


def test_the_tokenizing_line_calls_only_the_built_in_corpus_generated(tmp_path, caplog):
  """An empty file stores 0 bytes: it was said to be "generated", like the built-in corpus."""
  (tmp_path / "empty.txt").write_text("")
  caplog.set_level(logging.INFO, logger="glmjax")
  sources.tokenize_source(data_config(source="files", files=(str(tmp_path / "empty.txt"),)),
                          BYTE)
  sources.tokenize_source(data_config(builtin_docs=3), BYTE)
  said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("tokenizing ")]
  assert "(0.00 GiB stored; " in said[0] and "(generated; " in said[1], said


@pytest.mark.parametrize("record, kind", [([{"text": "one"}, {"text": "two"}], "an array"),
                                          (None, "null"), ("text", "a str")])
def test_a_json_file_holding_one_array_is_refused_as_not_json_lines(tmp_path, record, kind):
  """It was told to set data.text_field, which cannot help: the layout is what is wrong."""
  path = tmp_path / "docs.json"
  path.write_text(json.dumps(record))
  with pytest.raises(ValueError, match=rf"^data.files: .*docs.json \(line at byte 0\) is {kind}, "
                                       r"not a JSON object; .* one JSON object per line"):
    sources.load_documents(data_config(source="files", files=(str(path),)), BYTE)


def test_a_folder_given_as_data_files_is_refused_with_a_glob_of_its_files(tmp_path):
  (tmp_path / "a.txt").write_text("some text\n")
  with pytest.raises(FileNotFoundError, match=r"^data.files: '.*' is a folder; give a glob of "
                                              r"its files, e.g. '.*/\*.txt'"):  # what is there
    sources.load_documents(data_config(source="files", files=(str(tmp_path),)), BYTE)


def test_corpus_smaller_than_a_batch_is_an_error(tmp_path):
  (tmp_path / "small.txt").write_text("one short document.\n\nanother one.\n")
  config = data_config(source="files", files=(f"{tmp_path}/small.txt",), seq_len=64,
                       batch_size=4)
  with pytest.raises(ValueError, match=r"fewer than one batch.*data.batch_size=4"):
    sources.load_documents(config, BYTE)


def test_core_modules_do_not_import_tensorflow():
  code = ("import sys\n"
          "from glmjax.data import sources, tokenizers, prepare, documents, text_files\n"
          "from glmjax import config\n"
          "tok = tokenizers.load_tokenizer(config.data_defaults())\n"
          "c = config.data_defaults(); c.source = 'builtin'; c.builtin_docs = 20\n"
          "c.batch_size = 1; c.seq_len = 8\n"
          "sources.load_documents(c, tok)\n"
          "print(sorted(m for m in sys.modules if m.split('.')[0] in "
          "('tensorflow', 'tensorflow_datasets')))\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert result.stdout.strip() == "[]"


def test_a_binary_file_among_the_text_files_is_refused_by_name(tmp_path):
  (tmp_path / "good.txt").write_text("A real paragraph of text.\n\n" * 400)
  # A program renamed to .txt: random bytes, about half of them invalid UTF-8.
  (tmp_path / "ls.txt").write_bytes(np.random.default_rng(0).bytes(64 * 1024))
  config = data_config(source="files", files=(f"{tmp_path}/*.txt",))
  with pytest.raises(ValueError, match=r"ls.txt' is not UTF-8 text: \d+ of the first \d+ bytes "
                                       r"read \(\d+%\).*at most 1%"):
    sources.load_documents(config, BYTE)
  # Text with a few stray bytes (below 1%) is read, the bytes replaced.
  (tmp_path / "ls.txt").write_bytes(
      b"Some text with one \xff stray byte, then a long enough sentence to dilute it, as real "
      b"text with a stray byte here and there would; a little more to pass 1 percent.\n\n" * 200)
  train, held_out = sources.load_documents(config, BYTE)
  assert len(train) + len(held_out) == 400 + 200


def test_a_clean_file_read_after_one_with_stray_bytes_is_judged_by_its_own_bytes(tmp_path):
  # 40 stray bytes in 6 KB (0.7%: accepted), then a clean 5.5 KB file, which would hold 1.5%
  # and be refused as binary if the first file's stray bytes were counted as its own.
  (tmp_path / "a.txt").write_bytes(b"".join(
      [b"Text with one \xff stray byte, then more words.\n\n"]
      + [b"Plain text that dilutes the stray bytes below 1%.\n\n"] * 2) * 40)
  (tmp_path / "b.txt").write_text("Clean text after it.\n\n" * 250)
  config = data_config(source="files", files=(f"{tmp_path}/*.txt",))
  train, held_out = sources.load_documents(config, BYTE)
  assert len(train) + len(held_out) == 3 * 40 + 250


def test_a_binary_file_is_refused_within_its_first_kilobytes_not_after_reading_it_all(tmp_path):
  # prepare on a large binary file stops at once instead of tokenizing all of it first.
  (tmp_path / "big.txt").write_bytes(b"\xff\xfe\xfd abc\n\n" * 100_000)  # 1 MB, 3 bytes in 10 invalid
  texts = text_files.iter_range_texts(str(tmp_path / "big.txt"), 0, -1, "text", "paragraphs",
                                      text_files.TextStats())
  yielded = 0
  with pytest.raises(ValueError, match="big.txt' is not UTF-8 text"):
    for _ in texts:
      yielded += 1
  assert yielded < 1000  # refused once 4 KiB are read: about 450 paragraphs of 10 bytes


def test_an_unset_source_is_refused_with_the_ways_to_give_data():
  with pytest.raises(ValueError, match=r"data.source is not set.*source=files.*source=tfds.*"
                                       r"source=prepared.*source=builtin"):
    sources.load_documents(data_config(source=""), BYTE)
  for name in ("base", "large", "glm_2b", "glm_10b"):  # the real configs ship without one
    config = __import__(f"configs.{name}", fromlist=["get_config"])
    assert config.get_config().data.source == "" and config.get_config("local").data.source == (
        "builtin")


def test_an_evaluation_split_smaller_than_a_batch_is_refused():
  config = data_config(builtin_docs=200, eval_fraction=0.01, seq_len=128, batch_size=16)
  _, held_out = sources.load_documents(config, BYTE)
  assert int(held_out.doc_lengths.sum()) < 16 * 128
  with pytest.raises(ValueError, match=r"evaluation split has \d+ tokens in 2 documents, fewer "
                                       r"than one batch \(data.batch_size=16 x data.seq_len=128 "
                                       r"= 2048\).*eval_fraction"):
    sources.check_held_out(config, held_out)
  config.eval_fraction = 0.2
  sources.check_held_out(config, sources.load_documents(config, BYTE)[1])


def test_a_document_longer_than_one_read_block_is_not_cut_where_a_piece_starts(tmp_path):
  """The next document start after a cut point is searched for in 1 MiB blocks: a document that
  runs past the first block still ends its range at its own newline, not in its middle."""
  huge = "x" * (3 << 19)  # 1.5 MiB: no newline in the first block read after the cut point
  texts = ["a" * 150, huge, "b" * 150, "c" * 150]
  lines = [json.dumps({"text": t}) + "\n" for t in texts]
  (tmp_path / "big.jsonl").write_text("".join(lines))
  config = data_config(source="files", files=(f"{tmp_path}/big.jsonl",))
  pieces = sources.plan_pieces(config, target_bytes=100)  # each line is longer: a piece each
  starts = [start for piece in pieces for _, start, _ in piece["files"]]
  assert starts == np.cumsum([0] + [len(line) for line in lines[:-1]]).tolist()
  assert [t for p in pieces for t in sources.iter_piece_texts(config, p, text_files.TextStats())
          ] == texts


def test_a_line_that_is_not_json_is_named_by_the_byte_it_starts_at(tmp_path):
  first = json.dumps({"text": "fine"}) + "\n"
  (tmp_path / "x.jsonl").write_text(first + "\n" + "not json\n")
  with pytest.raises(ValueError, match=rf"x.jsonl \(line at byte {len(first) + 1}\) is not JSON"):
    sources.load_documents(data_config(source="files", files=(f"{tmp_path}/x.jsonl",)), BYTE)


def test_a_record_whose_text_is_null_is_skipped(tmp_path):
  # Exported datasets write a missing text as null: no document, not a refused corpus.
  (tmp_path / "x.jsonl").write_text(
      '{"text": "one"}\n{"text": null, "id": 2}\n{"text": "three"}\n')
  store, stats = sources.tokenize_source(
      data_config(source="files", files=(f"{tmp_path}/x.jsonl",)), BYTE)
  assert texts_of(store) == ["one", "three"] and stats.docs == 2


@pytest.mark.parametrize("name", ["x.json", "x.json.gz", "x.jsonl.gz"])
def test_a_json_file_compressed_or_not_gives_its_text_fields_as_documents(tmp_path, name):
  lines = (json.dumps({"text": "one", "id": 1}) + "\n" + json.dumps({"text": "two"}) + "\n")
  opener = gzip.open if name.endswith(".gz") else open
  with opener(tmp_path / name, "wb") as f:
    f.write(lines.encode())
  store, _ = sources.tokenize_source(
      data_config(source="files", files=(f"{tmp_path}/{name}",)), BYTE)
  assert texts_of(store) == ["one", "two"]


def test_a_double_star_glob_reads_the_files_of_every_folder_below(tmp_path):
  for folder, name in (("", "top"), ("a", "one"), ("a/b", "two")):
    os.makedirs(tmp_path / folder, exist_ok=True)
    (tmp_path / folder / f"{name}.jsonl").write_text(json.dumps({"text": name}) + "\n")
  config = data_config(source="files", files=(f"{tmp_path}/**/*.jsonl",))
  store, _ = sources.tokenize_source(config, BYTE)
  assert sorted(texts_of(store)) == ["one", "top", "two"]  # ** matches no folder, one, two


def test_a_glob_under_the_home_folder_is_expanded(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  os.makedirs(tmp_path / "corpus")
  (tmp_path / "corpus" / "x.jsonl").write_text(json.dumps({"text": "at home"}) + "\n")
  store, _ = sources.tokenize_source(
      data_config(source="files", files=("~/corpus/*.jsonl",)), BYTE)
  assert texts_of(store) == ["at home"]
