"""Data inputs the other data tests leave open: prepare's buffered writes and resumes, the ends
of the recipe's valid ranges, and the special-token checks of the pipeline."""
import dataclasses
import gzip
import io
import json
import os

import numpy as np
import pytest
from scipy import stats

from glmjax import cloze, generate
from glmjax.data import builtin_corpus, pipeline, prepare, sources
from glmjax.data.documents import DocumentSubset, InMemoryDocs, PreparedDocs
from glmjax.data.infilling import RowRandom
from glmjax.data.specials import BERT_SPECIALS as S
from glmjax.data.tokenizers import ByteTokenizer, load_tokenizer
from test_pipeline import Tokenizer, corpus, data_config
from test_prepare import SHARD_MB, directory_bytes
from test_prepare import data_config as prepare_config

BYTE = ByteTokenizer()


def builtin_texts(store, count):
  """Each document of a byte-tokenized store as the text it encodes."""
  return [bytes(store.read([i], [0], [store.doc_lengths[i]]).astype(np.uint8)).decode()
          for i in range(count)]


def test_a_shard_written_in_many_blocks_holds_every_document_once(tmp_path, monkeypatch):
  # Tokens are buffered and written in blocks; a block every few documents here, so a block
  # written twice (or lost) shows up in a corpus of a few kilobytes.
  monkeypatch.setattr(prepare, "_WRITE_BYTES", 1000)
  manifest = prepare.prepare(prepare_config(builtin_docs=40), str(tmp_path), shard_mb=1.0,
                             progress=False)
  assert len(manifest["shards"]) == 1
  store = PreparedDocs(str(tmp_path))
  assert len(store) == 40
  assert builtin_texts(store, 40) == [builtin_corpus.document(i) for i in range(40)]


def test_a_resume_with_another_shard_size_is_refused_naming_the_pieces(tmp_path):
  # Shards cut for another --shard_mb hold other documents: mixing them with the new cut would
  # repeat some documents and drop others.
  config = prepare_config()
  assert prepare.prepare(config, str(tmp_path), shard_mb=SHARD_MB, limit_shards=1,
                         progress=False) is None
  with pytest.raises(ValueError, match=r"another source or tokenizer.*\['pieces'\]"):
    prepare.prepare(config, str(tmp_path), shard_mb=2 * SHARD_MB, progress=False)


def test_a_resume_that_writes_a_missing_middle_shard_keeps_the_corpus_order(tmp_path):
  # Parallel workers can finish shard 2 before shard 1 is interrupted: the resume writes shard 1
  # last, yet the manifest (and so every document id) must follow the corpus order.
  config = prepare_config()
  whole = prepare.prepare(config, str(tmp_path / "whole"), shard_mb=SHARD_MB, progress=False)
  assert len(whole["shards"]) >= 3
  resumed = tmp_path / "resumed"
  prepare.prepare(config, str(resumed), shard_mb=SHARD_MB, limit_shards=3, progress=False)
  os.remove(resumed / "shard-00001.json")  # shard 1 never finished
  assert prepare.prepare(config, str(resumed), shard_mb=SHARD_MB, progress=False) == whole
  assert directory_bytes(resumed) == directory_bytes(tmp_path / "whole")
  store = PreparedDocs(str(resumed))
  assert builtin_texts(store, len(store)) == [builtin_corpus.document(i) for i in range(300)]


def test_the_ends_of_the_documented_ranges_are_accepted():
  # mask_ratio in (0, 0.5], gen_min_ratio in (0, 1]: the closed ends are valid settings.
  assert pipeline.recipe_problem(data_config(mask_ratio=0.5)) is None
  assert pipeline.recipe_problem(data_config(gen_min_ratio=1.0)) is None
  assert "data.mask_ratio" in pipeline.recipe_problem(data_config(mask_ratio=0.51))
  assert "data.gen_min_ratio" in pipeline.recipe_problem(data_config(gen_min_ratio=1.01))


def test_a_dblock_that_shares_the_pad_id_is_refused():
  # pad may equal eos only: a [dBLOCK] input equal to pad would read as padding. pad has an id
  # of its own here, so only the pad rule can refuse it (eos keeps BERT's 0).
  tokenizer = Tokenizer()
  tokenizer.specials = dataclasses.replace(tokenizer.specials, pad=tokenizer.specials.dblock)
  with pytest.raises(ValueError, match=r"pad and dblock share id 30526"):
    pipeline.BatchPipeline(data_config(), tokenizer, corpus([300]))


def test_a_sentence_end_table_shorter_than_the_vocabulary_is_refused():
  tokenizer = Tokenizer()
  tokenizer.sentence_end = tokenizer.sentence_end[:-1]  # the last id has no entry
  with pytest.raises(ValueError, match=r"sentence_end has shape"):
    pipeline.BatchPipeline(data_config(), tokenizer, corpus([300]))


def test_a_shard_whose_tokens_disagree_with_its_lengths_is_refused_as_damaged(tmp_path):
  # A token file cut short (a full disk, a partial copy) would shift every later document.
  prepare.prepare(prepare_config(builtin_docs=40), str(tmp_path), shard_mb=1.0, progress=False)
  tokens = tmp_path / "shard-00000.tokens.bin"
  tokens.write_bytes(tokens.read_bytes()[:-2])  # one uint16 token fewer
  with pytest.raises(ValueError, match="damaged"):
    PreparedDocs(str(tmp_path))


def test_a_store_refuses_offsets_and_reads_that_reach_outside_its_documents(tmp_path):
  # Offsets that do not start at 0 would leave tokens in no document; a read that starts
  # before its document would hand back the end of the one before it.
  with pytest.raises(ValueError, match="offsets must start at 0"):
    InMemoryDocs(np.arange(5), np.array([1, 3, 5]))
  # ... and offsets that end past the tokens would make the last document read past them.
  with pytest.raises(ValueError, match="offsets must start at 0"):
    InMemoryDocs(np.arange(5), np.array([0, 3, 6]))
  prepare.prepare(prepare_config(builtin_docs=4, eval_fraction=0.0), str(tmp_path),
                  shard_mb=1.0, progress=False)
  store = PreparedDocs(str(tmp_path))
  whole = store.read([1], [0], [3])
  np.testing.assert_array_equal(store.read([1], [1], [2]), whole[1:])
  with pytest.raises(IndexError, match="before the start of a document"):
    store.read([1], [-1], [3])
  # ... and one that ends past its document would hand back the start of the next.
  end = int(store.doc_lengths[1])
  np.testing.assert_array_equal(store.read([1], [end - 2], [2]), store.read([1], [0], [end])[-2:])
  with pytest.raises(IndexError, match="past the end of a document"):
    store.read([1], [end - 2], [3])


def test_a_long_first_document_starts_at_every_offset_that_keeps_its_end_in_reach():
  # A document of L tokens longer than a window of W starts at an offset uniform over
  # 0 .. L + 2 - W: the last of them fits [CLS], the document's tail and its eos exactly, so its
  # last tokens and its end can be masked too.
  length, window = 300, 256
  one_document = corpus([length], period_every=length + 1)  # no periods: ids are unique
  p = pipeline.BatchPipeline(data_config(), Tokenizer(), one_document, seed=0)
  rows = np.arange(3000)
  text, _, _ = p.windows(RowRandom.for_rows(0, 0, rows), np.full(len(rows), window))
  source = one_document.read([0], [0], [length])
  where = {int(token): index for index, token in enumerate(source)}
  offsets = np.array([where.get(int(token), -1) for token in text[:, 1]])
  assert (offsets >= 0).all()  # [CLS], then a token of the document
  assert set(offsets.tolist()) == set(range(length + 2 - window + 1))
  last = offsets == length + 2 - window
  assert np.all(text[last, -1] == S.eos) and np.all(text[last, -2] == source[-1])


def test_a_generation_row_whose_text_holds_one_document_may_take_either_layout():
  # Documents of T - 4 tokens: [CLS] doc eos fill T - 2 tokens, the text of a row laid out with
  # one span anywhere, and the next document's [CLS] falls just past it. That text holds one
  # document, so the layout is drawn (gen_suffix_prob=0.5), not forced to the suffix one that a
  # text of several documents needs.
  config = data_config(blank_prob=0.0, document_prob=1.0, batch_size=400)
  batch = pipeline.BatchPipeline(config, Tokenizer(), corpus([256 - 4] * 20),
                                 seed=4).global_batch(0)
  suffix = np.array([batch["tokens"][r, batch["sep"][r] - 1] == S.gmask for r in range(400)])
  assert 0.4 < suffix.mean() < 0.6, suffix.mean()


def test_shard_mb_is_mebibytes_of_text_per_shard(tmp_path):
  # 100 documents of about 1 KiB: 0.05 MiB (51.2 KiB) of text per shard cuts them in two.
  lines = [json.dumps({"text": f"{i:03d} " + "x" * 1000}) for i in range(100)]
  (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n")
  config = prepare_config(source="files", files=(f"{tmp_path}/corpus.jsonl",))
  manifest = prepare.prepare(config, str(tmp_path / "out"), shard_mb=0.05, progress=False)
  assert len(manifest["shards"]) == 2 and manifest["num_docs"] == 100


def test_a_whole_file_txt_document_is_never_cut_into_pieces(tmp_path):
  # With txt_documents='file' a blank line is part of the document, not a place to cut it.
  text = "\n\n".join(f"paragraph {i} " + "y" * 100 for i in range(50)) + "\n"
  (tmp_path / "book.txt").write_text(text)
  config = prepare_config(source="files", files=(f"{tmp_path}/book.txt",), txt_documents="file",
                          eval_fraction=0.0)  # one document: none held out
  manifest = prepare.prepare(config, str(tmp_path / "out"), shard_mb=0.001, progress=False)
  store = PreparedDocs(str(tmp_path / "out"))
  assert manifest["num_docs"] == 1 and builtin_texts(store, 1) == [text]


def test_a_held_out_share_over_a_half_still_leaves_every_other_document_to_train_on():
  # round(1 / 0.9) = 1 would hold out every document; a block is never under two documents.
  for fraction in (0.7, 0.9):
    train, held_out = sources.split_documents(10, fraction)
    assert len(train) == len(held_out) == 5
    assert np.array_equal(np.sort(np.concatenate([train, held_out])), np.arange(10))


def test_one_document_of_each_block_of_round_one_over_the_fraction_is_held_out():
  """0.15 gives blocks of round(6.67) = 7 documents (int() would give 6): 1000 documents make
  142 whole blocks and a last one of 6, so 143 held out, one in each block, the last included."""
  train, held_out = sources.split_documents(1000, 0.15)
  assert len(held_out) == 143 and len(train) == 857
  assert np.array_equal(np.unique(held_out // 7), np.arange(143))
  assert held_out[-1] >= 994  # the short last block's pick lies inside it
  # 25 documents in blocks of 7: the last block holds 4 (21..24), and its pick is one of them.
  assert [int(i) for i in sources.split_documents(25, 1 / 7)[1] // 7] == [0, 1, 2, 3]


def test_the_held_out_document_s_place_in_its_block_varies_from_block_to_block():
  """A corpus with a period (files of ten documents, a title page every tenth) must not have
  every held-out document at one place in its block: the places are uniform over the block."""
  _, held_out = sources.split_documents(10_000, 0.1)
  places = np.bincount(held_out % 10, minlength=10)  # 1000 blocks of 10
  assert stats.chisquare(places).pvalue > 1e-3, places


def test_a_held_out_share_of_one_or_a_one_document_corpus_is_refused():
  with pytest.raises(ValueError, match=r"data.eval_fraction=1.0: expected a fraction in \[0, 1\)"):
    sources.split_documents(10, 1.0)
  with pytest.raises(ValueError, match="corpus has 1 document.*data.eval_fraction=0"):
    sources.split_documents(1, 0.1)
  assert [len(part) for part in sources.split_documents(1, 0.0)] == [1, 0]


def test_a_corpus_of_no_documents_is_refused_as_empty_not_as_one_document(tmp_path):
  assert [part.tolist() for part in sources.split_documents(0, 0.1)] == [[], []]
  (tmp_path / "blank.txt").write_text("\n\n  \n\n")
  config = prepare_config(source="files", files=(f"{tmp_path}/blank.txt",), eval_fraction=0.1)
  with pytest.raises(ValueError, match=r"training split has 0 tokens in 0 documents"):
    sources.load_documents(config, BYTE)
  manifest = prepare.prepare(config, str(tmp_path / "out"), shard_mb=SHARD_MB, progress=False)
  assert manifest["num_docs"] == manifest["split"]["num_eval_docs"] == 0


def test_a_split_of_exactly_one_batch_of_tokens_is_enough():
  # batch_size x seq_len tokens fill one batch: the check refuses fewer, not that many.
  config = data_config(seq_len=8, batch_size=2)
  store = InMemoryDocs.from_lists([[5] * 10, [6] * 6, [7] * 5])
  sources.check_held_out(config, DocumentSubset(store, np.array([0, 1])))  # 16 tokens
  with pytest.raises(ValueError, match=r"evaluation split has 15 tokens in 2 documents"):
    sources.check_held_out(config, DocumentSubset(store, np.array([0, 2])))


def test_a_vocabulary_of_65536_ids_fits_uint16_tokens_and_a_larger_one_does_not():
  # Ids run 0 .. vocab_size - 1: uint16 holds them up to 65535, one more id wraps to 0.
  assert sources.token_dtype(1 << 16) == np.uint16
  assert sources.token_dtype((1 << 16) + 1) == np.int32


def test_a_vocabulary_over_65536_ids_is_prepared_as_int32_tokens_and_read_back_whole(tmp_path):
  # A vocab.txt of 70,000 entries (the GLM tokens appended): w65600 ... have ids past uint16.
  vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  vocab += [f"w{i}" for i in range(70_000 - len(vocab))]
  (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
  (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": f"w{i} w{69_000 - i} w12"}) + "\n"
                                            for i in range(0, 69_000, 1000)))
  config = prepare_config(source="files", files=(f"{tmp_path}/c.jsonl",), tokenizer="wordpiece",
                          tokenizer_path=str(tmp_path / "vocab.txt"), tokenizer_vocab="")
  tokenizer = load_tokenizer(config)
  fly, _ = sources.tokenize_source(config, tokenizer)
  assert fly.tokens.max() > 65_535
  manifest = prepare.prepare(config, str(tmp_path / "out"), shard_mb=1e-3, progress=False)
  assert manifest["token_dtype"] == "int32" and len(manifest["shards"]) > 1
  store = PreparedDocs(str(tmp_path / "out"))
  assert store.doc_lengths.tolist() == fly.doc_lengths.tolist()
  assert store.read(np.arange(len(store)), np.zeros(len(store)), store.doc_lengths).tolist() == (
      fly.tokens.tolist())


def test_a_cgroup_memory_limit_below_the_host_s_memory_bounds_the_budget(monkeypatch):
  # A container or SLURM --mem job may use its cgroup's limit, not the host's memory.
  host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  limit = host // 4
  real_open = open

  version = [2]

  def fake_open(path, *args, **kwargs):  # cgroup v2's file, or only v1's
    if str(path) == "/sys/fs/cgroup/memory.max":
      if version[0] == 1:
        raise FileNotFoundError(path)
      return io.StringIO(f"{limit}\n")
    if str(path) == "/sys/fs/cgroup/memory/memory.limit_in_bytes":
      if version[0] == 2:
        raise FileNotFoundError(path)
      return io.StringIO(f"{limit}\n")
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr(sources, "open", fake_open, raising=False)
  assert sources.memory_budget({}) == limit // 3
  assert sources.memory_budget({"SLURM_NTASKS_PER_NODE": "2"}) == limit // 6
  version[0] = 1  # an older container runtime: cgroup v1
  assert sources.memory_budget({}) == limit // 3
  limit = 2 * host  # a limit above the host's memory: the host's memory bounds it
  assert sources.memory_budget({}) == host // 3


def test_a_cgroup_without_a_memory_limit_leaves_the_host_s_memory_as_the_bound(monkeypatch):
  # cgroup v2 writes 'max' in memory.max when the group has no limit (most plain VMs).
  host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  real_open = open

  def fake_open(path, *args, **kwargs):
    if str(path) == "/sys/fs/cgroup/memory.max":
      return io.StringIO("max\n")
    if str(path) == "/sys/fs/cgroup/memory/memory.limit_in_bytes":
      raise FileNotFoundError(path)
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr(sources, "open", fake_open, raising=False)
  assert sources.memory_budget({}) == host // 3


def test_a_document_that_encodes_to_no_tokens_is_dropped_and_the_rest_kept_in_order():
  # An empty document would be a zero-length entry of the store, a window with no text.
  texts = ["ab", "", "c", "", "", "def"]  # batches of 2 cut between and inside the empties
  encoded = [ids.tolist() for ids in sources.encode_documents(BYTE, iter(texts), batch=2)]
  assert encoded == [BYTE.encode("ab").tolist(), BYTE.encode("c").tolist(),
                     BYTE.encode("def").tolist()]


def test_a_corpus_of_more_documents_than_one_join_of_4096_holds_each_document_once(tmp_path):
  # Documents are joined 4096 at a time while tokenizing; 9000 make three joins, the last short.
  texts = [f"document {i}." for i in range(9000)]
  (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
  config = data_config(source="files", files=(f"{tmp_path}/c.jsonl",))
  store, _ = sources.tokenize_source(config, BYTE, memory_limit=0)
  assert len(store.doc_lengths) == 9000
  assert [BYTE.decode(store.read([i], [0], [n])) for i, n in enumerate(store.doc_lengths)] == texts


def test_the_memory_limit_counts_the_bytes_of_each_token_not_the_tokens(tmp_path):
  # 100 documents of 1000 byte tokens, stored as uint16: 200,000 bytes of tokens (plus 8 bytes
  # of length each), over a limit of 150,000 bytes although there are only 100,000 tokens.
  (tmp_path / "c.jsonl").write_text(
      "".join(json.dumps({"text": f"{i:03d}" + "x" * 997}) + "\n" for i in range(100)))
  config = data_config(source="files", files=(f"{tmp_path}/c.jsonl",))
  assert sources.token_dtype(BYTE.vocab_size) == np.uint16
  with pytest.raises(ValueError, match=r"documents already make.*source=prepared"):
    sources.tokenize_source(config, BYTE, memory_limit=150_000)
  store, _ = sources.tokenize_source(config, BYTE, memory_limit=210_000)
  assert int(store.doc_lengths.sum()) == 100_000


def test_a_prepared_dir_in_a_bucket_is_refused_with_the_way_to_a_local_copy():
  config = data_config(source="prepared", prepared_dir="gs://bucket/prepared")
  with pytest.raises(ValueError, match=r"data.prepared_dir='gs://bucket/prepared'.*memory-mapped"
                                       r".*local disk"):
    sources.load_documents(config, BYTE)


def test_a_special_token_id_equal_to_the_vocabulary_size_is_refused():
  # Ids run 0 .. vocab_size - 1: a [dBLOCK] at 30526 needs 30527 rows of the embedding, one more
  # than this vocabulary has (an out-of-range gather is clamped silently on device).
  with pytest.raises(ValueError, match=r"dblock=30526 is outside the tokenizer vocabulary"):
    pipeline.BatchPipeline(data_config(), Tokenizer(vocab_size=30526), corpus([300]))


def test_a_short_row_share_past_one_is_refused_naming_the_field():
  assert "data.short_seq_prob" in pipeline.recipe_problem(data_config(short_seq_prob=1.5))
  assert pipeline.recipe_problem(data_config(short_seq_prob=1.0)) is None


@pytest.mark.parametrize("txt_documents", ["paragraphs", "file"])
def test_every_input_file_that_starts_with_a_byte_order_mark_reads_as_without_it(
    tmp_path, txt_documents):
  """Windows tools and pandas' utf-8-sig start a file with U+FEFF: json.loads refuses it, and
  a .txt file's first document would begin with it. Training data, cloze and prompt files."""
  # pylint: disable=protected-access
  bom = "\ufeff".encode()
  (tmp_path / "a.jsonl").write_bytes(bom + b'{"text": "first"}\n{"text": "second"}\n')
  with gzip.open(tmp_path / "b.jsonl.gz", "wb") as f:
    f.write(bom + b'{"text": "third"}\n')
  (tmp_path / "c.txt").write_bytes(bom + b"fourth\n\nfifth\n")
  config = data_config(source="files", files=(f"{tmp_path}/*",), txt_documents=txt_documents)
  store, _ = sources.tokenize_source(config, ByteTokenizer())
  texts = [ByteTokenizer().decode(store.read([i], [0], [n])) for i, n in
           enumerate(store.doc_lengths)]
  assert texts == ["first", "second", "third"] + (
      ["fourth", "fifth"] if txt_documents == "paragraphs" else ["fourth\n\nfifth\n"])
  (tmp_path / "cloze.jsonl").write_bytes(bom + b'{"text": "He gave it to", "answer": "Bob"}\n')
  assert [(e.context, e.answer) for e in cloze.read_examples(str(tmp_path / "cloze.jsonl"))] == [
      ("He gave it to", " Bob")]
  (tmp_path / "prompts.jsonl").write_bytes(bom + b'{"text": "a [MASK]"}\n')
  assert list(generate._read_prompts(str(tmp_path / "prompts.jsonl")).values()) == ["a [MASK]"]
