"""TFDS sources: a real dataset by name and folder, split slices, pieces in a fixed order, the
text field, and one-line errors naming the field to fix."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds  # a requirement: these tests run, never skip

from glmjax.data import builtin_corpus, sources, text_files, tfds_source
# The data config and decoding helpers of the other sources' tests.
from test_sources import BYTE, CountingTokenizer, data_config, texts_of


TFDS_TEXTS = [builtin_corpus.document(i) for i in range(40)] + ["", "last document."]


class GlmjaxTestText(tfds.core.GeneratorBasedBuilder):
  """A small real TFDS dataset of generated text, built into tmp_path by the tests."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {"content": tfds.features.Text(), "index": tfds.features.Scalar(dtype=np.int32)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(TFDS_TEXTS), "test": self._generate_examples(["x"])}

  def _generate_examples(self, texts):
    for i, text in enumerate(texts):
      yield i, {"content": text, "index": i}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  GlmjaxTestText(data_dir=str(data_dir)).download_and_prepare()
  return str(data_dir)


def tfds_config(data_dir, **overrides):
  fields = dict(source="tfds", tfds_name="glmjax_test_text:1.0.0", tfds_data_dir=data_dir,
                text_field="content")
  return data_config(**{**fields, **overrides})


def test_tfds_real_dataset_by_name_and_data_dir(tfds_dir):
  store, stats = sources.tokenize_source(tfds_config(tfds_dir), BYTE)
  assert sorted(texts_of(store)) == sorted(t for t in TFDS_TEXTS if t)
  again, _ = sources.tokenize_source(tfds_config(tfds_dir), BYTE)
  assert texts_of(again) == texts_of(store)  # a fixed order
  sliced, _ = sources.tokenize_source(tfds_config(tfds_dir, tfds_split="train[:10]"), BYTE)
  assert len(sliced.doc_lengths) in (9, 10)  # ten examples; the empty one may be among them
  assert texts_of(sliced) == texts_of(store)[:len(sliced.doc_lengths)]


def test_a_sliced_tfds_split_counts_its_share_of_the_stored_bytes(tfds_dir):
  whole = tfds_source.split_bytes(tfds_config(tfds_dir))
  assert whole > 0
  tenth = tfds_source.split_bytes(tfds_config(tfds_dir, tfds_split="train[:10%]"))
  assert tenth == whole * 4 // len(TFDS_TEXTS)  # 10% of 42 examples is 4
  both = tfds_source.split_bytes(tfds_config(tfds_dir, tfds_split="train[:10%]+test"))
  assert both == tenth + tfds_source.split_bytes(tfds_config(tfds_dir, tfds_split="test")) > tenth


def test_tfds_pieces_give_the_same_documents_in_order(tfds_dir):
  config = tfds_config(tfds_dir)
  pieces = sources.plan_pieces(config, target_bytes=3000)
  assert len(pieces) > 2
  stats = text_files.TextStats()
  by_pieces = [t for p in pieces for t in sources.iter_piece_texts(config, p, stats)]
  assert by_pieces == list(sources.iter_source_texts(config, text_files.TextStats()))


def test_a_tfds_split_is_planned_in_the_fewest_pieces_of_at_most_the_target_size(tfds_dir):
  config = tfds_config(tfds_dir)
  whole = tfds_source.split_bytes(config)
  for target in (whole, whole - 1, whole // 2 + 1, whole // 2, whole // 3 + 7):
    pieces = tfds_source.plan_tfds_pieces(config, target)
    count = len(pieces)
    assert whole / count <= target < whole / (count - 1) if count > 1 else whole <= target
    assert pieces == [dict(tfds=["train", index, count]) for index in range(count)]



def test_a_split_of_unrecorded_size_is_planned_as_one_piece_and_prepared_whole(
    tfds_dir, tmp_path, monkeypatch):
  # TFDS may not record a split's bytes (0): the split is then one piece, not none.
  from glmjax.data import prepare
  monkeypatch.setattr(tfds_source, "split_bytes", lambda data_config: 0)
  config = tfds_config(tfds_dir)
  assert sources.plan_pieces(config, target_bytes=3000) == [dict(tfds=["train", 0, 1])]
  manifest = prepare.prepare(config, str(tmp_path), shard_mb=0.003, progress=False)
  assert manifest["num_docs"] == len([t for t in TFDS_TEXTS if t])


def test_a_tfds_split_too_big_for_memory_by_its_stored_size_is_refused_before_tokenizing(
    tfds_dir):
  config = tfds_config(tfds_dir)
  stored = sources.stored_bytes(config)
  assert stored == tfds_source.split_bytes(config) > 0
  # Below the floor of the stored size (8 bytes per token, 2 bytes each): refused unread.
  tokenizer = CountingTokenizer()
  with pytest.raises(ValueError, match=r"glmjax_test_text.*GiB stored would make at least.*"
                                       r"data.prepare"):
    sources.tokenize_source(config, tokenizer, memory_limit=stored // 8 * 2 - 1)
  assert tokenizer.calls == 0

SHARDED_TEXTS = [builtin_corpus.document(i) for i in range(160)]


class GlmjaxShardedText(GlmjaxTestText):
  """One split written in several files of more records than TFDS reads from a file at a time
  when it interleaves files (16), as real TFDS datasets are."""

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(SHARDED_TEXTS)}


def test_a_tfds_split_of_several_files_is_read_in_one_fixed_order(tmp_path):
  """Document ids (and with them the held-out split and every batch) follow the order the
  split is read in, on every host, every run and in prepare's pieces: the files one after
  another, in their stored order."""
  GlmjaxShardedText(data_dir=str(tmp_path)).download_and_prepare(
      download_config=tfds.download.DownloadConfig(num_shards=5))
  config = tfds_config(str(tmp_path), tfds_name="glmjax_sharded_text:1.0.0")
  reads = [texts_of(sources.tokenize_source(config, BYTE)[0]) for _ in range(3)]
  assert sorted(reads[0]) == sorted(SHARDED_TEXTS)
  assert reads[1] == reads[0] and reads[2] == reads[0]
  pieces = sources.plan_pieces(config, target_bytes=20_000)
  assert len(pieces) > 2
  assert [t for p in pieces for t in sources.iter_piece_texts(config, p, text_files.TextStats())
          ] == reads[0]


def test_tfds_prepared_shards_equal_on_the_fly(tfds_dir, tmp_path):
  from glmjax.data import prepare
  config = tfds_config(tfds_dir)
  manifest = prepare.prepare(config, str(tmp_path), shard_mb=0.003, progress=False)
  assert len(manifest["shards"]) > 2
  fly, _ = sources.tokenize_source(config, BYTE)
  disk, _ = sources.load_documents(data_config(source="prepared", prepared_dir=str(tmp_path)),
                                   BYTE)
  assert texts_of(disk.base) == texts_of(fly)


def test_tfds_errors_name_the_field_and_the_fix(tfds_dir, tmp_path):
  with pytest.raises(ValueError, match=r"no feature data.text_field='text'.*\['content', 'ind"):
    sources.load_documents(tfds_config(tfds_dir, text_field="text"), BYTE)
  with pytest.raises(ValueError, match=r"data.tfds_name='no_such_dataset_glmjax'.*no such"):
    sources.load_documents(data_config(source="tfds", tfds_name="no_such_dataset_glmjax",
                                       tfds_data_dir=str(tmp_path)), BYTE)
  with pytest.raises(ValueError, match=r"data.tfds_split='validation'.*\['train', 'test'\]"):
    sources.load_documents(tfds_config(tfds_dir, tfds_split="validation"), BYTE)
  with pytest.raises(FileNotFoundError, match="tfds build glmjax_test_text"):
    sources.load_documents(tfds_config(str(tmp_path)), BYTE)  # known code, no data there
  with pytest.raises(ValueError, match="needs data.tfds_name"):
    sources.load_documents(data_config(source="tfds"), BYTE)


def test_tfds_mock_data_text_field_and_invalid_bytes():
  records = [b"mocked text one.", b"caf\xe9 au lait", b"", b"three"]

  def as_dataset(self, split, **kwargs):
    import tensorflow as tf
    return tf.data.Dataset.from_tensor_slices({"text": records})

  config = data_config(source="tfds", tfds_name="lm1b")
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=as_dataset):
    store, stats = sources.tokenize_source(config, BYTE)
    with pytest.raises(ValueError, match=r"text_field='content'.*\['text'\]"):
      sources.tokenize_source(data_config(source="tfds", tfds_name="lm1b", text_field="content"),
                              BYTE)
  assert texts_of(store) == ["mocked text one.", "caf\ufffd au lait", "three"]
  assert stats.invalid_utf8 == 1


def test_a_whitespace_only_tfds_example_is_no_document():
  records = [b"first text.", b"  \n\t ", b"second text."]

  def as_dataset(self, split, **kwargs):
    import tensorflow as tf
    return tf.data.Dataset.from_tensor_slices({"text": records})

  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=as_dataset):
    store, stats = sources.tokenize_source(data_config(source="tfds", tfds_name="lm1b"), BYTE)
  assert texts_of(store) == ["first text.", "second text."] and stats.docs == 2


def test_reading_tfds_prints_none_of_tensorflow_s_start_up_lines():
  """TensorFlow's oneDNN notice (with absl's line before it, twice) came at every TFDS run's
  start, and TF_CPP_MIN_LOG_LEVEL does not silence it."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
  result = subprocess.run(
      # TFDS imports TensorFlow when it first reads; the import stands for that here.
      [sys.executable, "-c", "import jax; from glmjax.data import tfds_source; "
       "tfds_source._tfds(); import tensorflow; print('read')"], cwd=repo, capture_output=True,
      text=True, timeout=300, env={**env, "JAX_PLATFORMS": "cpu", "PYTHONPATH": repo})
  assert result.returncode == 0 and result.stdout == "read\n", result.stderr[-2000:]
  assert "oneDNN" not in result.stderr and "absl::InitializeLog" not in result.stderr, (
      result.stderr)


def test_a_tfds_name_not_found_with_an_empty_message_is_still_one_line(monkeypatch):
  # tfds raises DatasetNotFoundError with whatever message it builds; an empty one must not turn
  # the report into an IndexError.
  def builder(name, data_dir=None):
    raise tfds.core.registered.DatasetNotFoundError("")
  monkeypatch.setattr(tfds, "builder", builder)
  with pytest.raises(ValueError, match=r"data\.tfds_name='nope'.*TFDS has no such dataset "
                     r"\(DatasetNotFoundError\)\. Check the name"):
    tfds_source.open_builder(tfds_config("", tfds_name="nope"))


def test_a_text_field_naming_a_feature_that_is_not_text_is_a_one_line_error(tfds_dir):
  with pytest.raises(ValueError, match=r"feature 'index' holds int32, not text; set "
                                       r"data.text_field to a Text feature"):
    sources.tokenize_source(tfds_config(tfds_dir, text_field="index"), BYTE)


def test_the_source_s_description_names_its_split():
  train, test = tfds_config("/data", tfds_split="train"), tfds_config("/data", tfds_split="test")
  assert sources.describe_source(train)["tfds_split"] == "train"
  assert sources.source_label(train) != sources.source_label(test)


def test_a_resume_that_reads_the_dataset_from_another_data_dir_is_refused(tfds_dir, tmp_path):
  # A copy of the dataset gives the same pieces: only the recorded data_dir shows that the
  # finished shard was read from another place than the rest would be.
  from glmjax.data import prepare
  copy = str(tmp_path / "copy")
  shutil.copytree(tfds_dir, copy)
  out = str(tmp_path / "out")
  assert prepare.prepare(tfds_config(tfds_dir), out, shard_mb=0.003, limit_shards=1,
                         progress=False) is None
  with pytest.raises(ValueError, match=r"another source or tokenizer.*\['source'\]"):
    prepare.prepare(tfds_config(copy), out, shard_mb=0.003, progress=False)
