"""Export: a workdir, imported or trained here, becomes a Hugging Face GLM checkpoint in the
import's dtypes, names and files, with a config.json that says what the run trained (its dropout
rates, its position encoding) and that imports back to the same parameters."""
import json
import logging
import os
import re

import jax
import numpy as np
import pytest
import torch

import convert_sources as sources
import original_glm as og
from convert_sources import H, HEADS, L, MSL, V
from glmjax import config as config_lib
from glmjax import convert, pretrained
from glmjax.convert import safetensors_io, tokenizer_files
from glmjax.data import tokenizers


@pytest.fixture(scope="module")
def weights():
  return sources.random_weights()


def test_dropout_rates_come_from_config_json_and_go_back_into_the_exported_one(weights, tmp_path):
  hf = og.hf_config(V, H, L, HEADS, MSL)
  # The HF GLM code's names: output_dropout_prob is the hidden dropout (as embedding_...).
  hf.update(embedding_dropout_prob=0.05, output_dropout_prob=0.05, attention_dropout_prob=0.2)
  og.save_hf(str(tmp_path / "hf"), weights, hf, prefix=False, fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  model = pretrained.read_config(str(tmp_path / "run")).model
  assert (model.hidden_dropout, model.attention_dropout) == (0.05, 0.2)
  convert.export_workdir(str(tmp_path / "run"), str(tmp_path / "out"))
  exported = json.loads((tmp_path / "out" / "config.json").read_text())
  assert {key: exported[key] for key in ("embedding_dropout_prob", "output_dropout_prob",
                                         "attention_dropout_prob")} == dict(
      embedding_dropout_prob=0.05, output_dropout_prob=0.05, attention_dropout_prob=0.2)


def test_zero_dropout_in_a_bin_folder_s_config_json_imports_as_zero_and_exports_no_bin(
    weights, tmp_path):
  hf = og.hf_config(V, H, L, HEADS, MSL)
  hf.update(embedding_dropout_prob=0.0, output_dropout_prob=0.0, attention_dropout_prob=0.0)
  og.save_hf(str(tmp_path / "hf"), weights, hf, prefix=False, fmt="bin")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  model = pretrained.read_config(str(tmp_path / "run")).model
  assert (model.hidden_dropout, model.attention_dropout) == (0.0, 0.0)  # not the 0.1 defaults
  convert.export_workdir(str(tmp_path / "run"), str(tmp_path / "out"))
  # The exported weights are model.safetensors alone: the imported .bin would be stale beside it.
  assert not [name for name in os.listdir(tmp_path / "out") if name.endswith((".bin", ".pt"))]
  assert (tmp_path / "out" / "model.safetensors").is_file()


def test_a_sharded_import_exports_one_file_that_the_safetensors_library_and_glmjax_read(
    weights, tmp_path):
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors", shards=3)
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  convert.export_workdir(str(tmp_path / "run"), str(tmp_path / "out"))
  assert sorted(name for name in os.listdir(tmp_path / "out")
                if name.endswith((".safetensors", ".json"))) == ["config.json",
                                                                 "model.safetensors"]
  # transformers refuses a safetensors file whose metadata lacks the framework it was saved from.
  with safe_open(str(tmp_path / "out" / "model.safetensors"), framework="pt") as handle:
    assert handle.metadata() == {"format": "pt"}
    assert sorted(handle.keys()) == sorted(weights)
    for key in weights:
      assert torch.equal(handle.get_tensor(key), weights[key]), key
  _, params = convert.load_pretrained(str(tmp_path / "out"))
  np.testing.assert_array_equal(params["word_embeddings"], weights["word_embeddings.weight"])


def test_a_run_continued_from_an_import_exports_in_the_import_s_dtypes_names_and_files(
    weights, tmp_path):
  half = {key: value.to(torch.bfloat16) for key, value in weights.items()}
  og.save_hf(str(tmp_path / "hf"), half, og.hf_config(V, H, L, HEADS, MSL), prefix=True,
             fmt="safetensors")
  (tmp_path / "hf" / "modeling_glm.py").write_text("# the hub's code, kept for export\n")
  tokenizer_config = '{"tokenizer_class": "GLMGPT2Tokenizer"}\n'  # a hub's .json beside it
  (tmp_path / "hf" / "tokenizer_config.json").write_text(tokenizer_config)
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  # What train writes from WORKDIR/config.py: the parameters, and init_from in its config.json.
  params = jax.device_get(pretrained.load(str(tmp_path / "run")).params)
  pretrained.save(str(tmp_path / "continued"), sources.continue_config(str(tmp_path / "run")),
                  params)
  # ... and a run continued from that one: the import is found up the chain of init_from,
  # which may name a run's checkpoints/ folder as well as the run's own.
  again = pretrained.read_config(str(tmp_path / "continued"))
  again.checkpoint.init_from = str(tmp_path / "continued" / "checkpoints")
  pretrained.save(str(tmp_path / "again"), again, params)
  convert.export_workdir(str(tmp_path / "again"), str(tmp_path / "out"))
  exported, _ = safetensors_io.read(str(tmp_path / "out" / "model.safetensors"))
  assert sorted(exported) == sorted("glm." + key for key in half)
  for key, value in half.items():
    assert str(exported["glm." + key].dtype) == "bfloat16", key
    np.testing.assert_array_equal(exported["glm." + key].astype(np.float32),
                                  value.float().numpy(), err_msg=key)
  assert (tmp_path / "out" / "modeling_glm.py").is_file()
  assert (tmp_path / "out" / "tokenizer_config.json").read_text() == tokenizer_config


def test_a_run_whose_import_was_moved_away_exports_plain_float32_and_says_why(weights, tmp_path,
                                                                             caplog):
  half = {key: value.to(torch.float16) for key, value in weights.items()}
  og.save_hf(str(tmp_path / "hf"), half, og.hf_config(V, H, L, HEADS, MSL), prefix=True,
             fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  params = jax.device_get(pretrained.load(str(tmp_path / "run")).params)
  pretrained.save(str(tmp_path / "continued"), sources.continue_config(str(tmp_path / "run")),
                  params)
  os.rename(tmp_path / "run", tmp_path / "elsewhere")
  with caplog.at_level(logging.WARNING):
    convert.export_workdir(str(tmp_path / "continued"), str(tmp_path / "out"))
  assert (f"continues from {tmp_path / 'run'} (checkpoint.init_from), which is not found "
          "(moved, removed") in caplog.text
  assert f"checkpoint.init_from in {tmp_path / 'continued' / 'config.json'}" in caplog.text
  exported, _ = safetensors_io.read(str(tmp_path / "out" / "model.safetensors"))
  assert sorted(exported) == sorted(half)  # plain names, not the import's glm. prefix
  assert {str(value.dtype) for value in exported.values()} == {"float32"}


def test_a_workdir_with_unscanned_layers_exports_the_same_tensors(weights, tmp_path):
  from glmjax.model import unstack_layers  # pylint: disable=import-outside-toplevel
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  config = pretrained.read_config(str(tmp_path / "run"))
  config.model.scan_layers = False  # layers_0, layers_1, ...: a run trained without nn.scan
  params = jax.device_get(pretrained.load(str(tmp_path / "run")).params)
  pretrained.save(str(tmp_path / "unscanned"), config, unstack_layers(params, L))
  convert.export_workdir(str(tmp_path / "unscanned"), str(tmp_path / "out"))
  exported, _ = safetensors_io.read(str(tmp_path / "out" / "model.safetensors"))
  assert sorted(exported) == sorted(weights)
  for key, value in weights.items():
    np.testing.assert_array_equal(exported[key], value.numpy(), err_msg=key)


def test_a_run_continued_with_other_dropout_rates_exports_them_not_the_imported_ones(weights,
                                                                                    tmp_path):
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")  # dropout 0.1 everywhere
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  config = sources.continue_config(str(tmp_path / "run"))
  config.model.update(hidden_dropout=0.0, attention_dropout=0.05)  # fine-tuned without dropout
  params = jax.device_get(pretrained.load(str(tmp_path / "run")).params)
  pretrained.save(str(tmp_path / "continued"), config, params)
  convert.export_workdir(str(tmp_path / "continued"), str(tmp_path / "out"))
  exported = json.loads((tmp_path / "out" / "config.json").read_text())
  assert {key: exported[key] for key in ("embedding_dropout_prob", "output_dropout_prob",
                                         "attention_dropout_prob")} == dict(
      embedding_dropout_prob=0.0, output_dropout_prob=0.0, attention_dropout_prob=0.05)
  assert exported["_name_or_path"] == "glmjax-tests/glm-tiny"  # the rest is the imported file's


def test_a_model_trained_from_scratch_exports_a_config_json_that_imports_back_to_it(weights,
                                                                                   tmp_path):
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  # The same parameters saved by a run that did not start from the import: no source.json, no
  # kept files, so export writes its own config.json for the Hugging Face GLM code.
  config = pretrained.read_config(str(tmp_path / "run"))
  params = jax.device_get(pretrained.load(str(tmp_path / "run")).params)
  pretrained.save(str(tmp_path / "scratch"), config, params)
  convert.export_workdir(str(tmp_path / "scratch"), str(tmp_path / "out"))
  exported = json.loads((tmp_path / "out" / "config.json").read_text())
  # The HF code's switches for this model: learned 2-D (block) positions, no relative ones.
  assert (exported["block_position_encoding"], exported["relative_encoding"]) == (True, False)
  assert {k: exported[k] for k in ("num_layers", "hidden_size", "num_attention_heads",
                                   "vocab_size", "max_sequence_length")} == dict(
      num_layers=L, hidden_size=H, num_attention_heads=HEADS, vocab_size=V,
      max_sequence_length=MSL)
  again_config, again = convert.load_pretrained(str(tmp_path / "out"))
  assert again_config.num_heads == HEADS
  jax.tree.map(np.testing.assert_array_equal, again, params)


def test_an_existing_empty_out_folder_is_written_by_export_and_by_import(weights, tmp_path):
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  for name in ("run", "out", "again"):  # made beforehand, as a user or a job script may
    (tmp_path / name).mkdir()
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  convert.export_workdir(str(tmp_path / "run"), str(tmp_path / "out"))
  convert.import_checkpoint(str(tmp_path / "out"), str(tmp_path / "again"))
  _, params = convert.load_pretrained(str(tmp_path / "again"))
  np.testing.assert_array_equal(params["word_embeddings"], weights["word_embeddings.weight"])


def _scratch_run(weights, tmp_path, **data):
  """The imported parameters saved as a run trained here with the tokenizer fields `data`."""
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  config = pretrained.read_config(str(tmp_path / "run"))
  config.data.update(data)
  params = jax.device_get(pretrained.load(str(tmp_path / "run")).params)
  pretrained.save(str(tmp_path / "scratch"), config, params)
  return config


@pytest.mark.parametrize("kind", ["byte", "wordpiece", "bpe"])
def test_a_run_s_own_tokenizer_goes_out_with_its_export_and_comes_back_with_the_import(
    weights, tmp_path, kind):
  data = dict(tokenizer="byte", tokenizer_path="", tokenizer_vocab="")
  if kind == "wordpiece":
    (tmp_path / "vocab.txt").write_text("[UNK]\na\nb\n##a\n##b\n", encoding="utf-8")
    data = dict(tokenizer="wordpiece", tokenizer_path=str(tmp_path / "vocab.txt"),
                tokenizer_vocab="")
  if kind == "bpe":  # two files: the vocabulary (the path) and its merges; GLM-10B's ids
    from test_released_tokenizers import write_gpt2_files  # pylint: disable=import-outside-toplevel
    _, vocab_path = write_gpt2_files(str(tmp_path / "gpt2"))
    data = dict(tokenizer="bpe", tokenizer_path=vocab_path, tokenizer_vocab="gpt2")
  config = _scratch_run(weights, tmp_path, **data)
  trained_with = tokenizers.tokenizer_info(tokenizers.load_tokenizer(config.data))
  convert.export_workdir(str(tmp_path / "scratch"), str(tmp_path / "out"))
  record = json.loads((tmp_path / "out" / tokenizer_files.TOKENIZER_RECORD).read_text())
  assert record["tokenizer"] == kind and record["tokenizer_vocab"] == data["tokenizer_vocab"]
  convert.import_checkpoint(str(tmp_path / "out"), str(tmp_path / "again"))
  # generate and evaluate load it as they load any workdir's tokenizer: the same ids as the run's
  loaded = pretrained.load(str(tmp_path / "again"))
  assert tokenizers.tokenizer_info(pretrained.load_tokenizer(loaded)) == trained_with
  # ... and its parameters carry that tokenizer, as a run's checkpoints do: a run started from
  # them (checkpoint.init_from) under another tokenizer is refused.
  assert sources.saved_tokenizer(tmp_path / "again") == trained_with
  if kind == "wordpiece":  # the file travels with the workdir, which can move
    assert (tmp_path / "again" / "tokenizer" / "vocab.txt").read_text() == (
        tmp_path / "vocab.txt").read_text()
    # Named by its weights file, the export is the same import: its record is in that folder.
    convert.import_checkpoint(str(tmp_path / "out" / "model.safetensors"),
                              str(tmp_path / "by_file"))
    assert tokenizers.tokenizer_info(pretrained.load_tokenizer(
        pretrained.load(str(tmp_path / "by_file")))) == trained_with


def test_a_tokenizer_named_to_the_import_wins_over_the_export_s_record(weights, tmp_path):
  from test_released_tokenizers import write_gpt2_files  # pylint: disable=import-outside-toplevel
  _, vocab_path = write_gpt2_files(str(tmp_path / "gpt2"))
  _scratch_run(weights, tmp_path, tokenizer="byte", tokenizer_path="", tokenizer_vocab="")
  convert.export_workdir(str(tmp_path / "scratch"), str(tmp_path / "out"))  # records byte
  convert.import_checkpoint(str(tmp_path / "out"), str(tmp_path / "named"),
                            tokenizer=str(tmp_path / "gpt2"))
  gpt2 = config_lib.data_defaults()
  gpt2.update(tokenizer="bpe", tokenizer_path=vocab_path, tokenizer_vocab="gpt2")
  assert sources.saved_tokenizer(tmp_path / "named") == tokenizers.tokenizer_info(
      tokenizers.load_tokenizer(gpt2))


def test_a_workdir_without_a_tokenizer_exports_no_record_and_imports_as_unknown(weights,
                                                                               tmp_path):
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))  # no tokenizer files
  convert.export_workdir(str(tmp_path / "run"), str(tmp_path / "out"))
  assert not (tmp_path / "out" / tokenizer_files.TOKENIZER_RECORD).exists()
  convert.import_checkpoint(str(tmp_path / "out"), str(tmp_path / "again"))
  with pytest.raises(config_lib.ConfigError, match="imported without its tokenizer"):
    pretrained.load_tokenizer(pretrained.load(str(tmp_path / "again")))
  assert sources.saved_tokenizer(tmp_path / "again") is None  # none to check an init_from against



def test_a_damaged_tokenizer_record_is_one_line_naming_it(weights, tmp_path):
  _scratch_run(weights, tmp_path, tokenizer="byte", tokenizer_path="", tokenizer_vocab="")
  convert.export_workdir(str(tmp_path / "scratch"), str(tmp_path / "out"))
  (tmp_path / "out" / tokenizer_files.TOKENIZER_RECORD).write_text("[1, 2]")
  with pytest.raises(ValueError, match=r"glmjax_tokenizer.json: not a tokenizer record .* "
                                       r"give --tokenizer=PATH"):
    convert.import_checkpoint(str(tmp_path / "out"), str(tmp_path / "again"))


def test_a_model_computing_the_tanh_gelu_is_exported_with_a_warning_the_exact_one_without(
    weights, tmp_path, caplog):
  """The Hugging Face code computes the exact GeLU: a gelu_tanh model (the default, what a run
  trains) goes out all the same, with a warning that its logits will differ there."""
  caplog.set_level(logging.INFO)
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "exact"))
  config = pretrained.read_config(str(tmp_path / "exact"))
  params = jax.device_get(pretrained.load(str(tmp_path / "exact")).params)
  config.model.activation = "gelu_tanh"
  pretrained.save(str(tmp_path / "tanh"), config, params)
  warned = {}
  for name in ("exact", "tanh"):
    caplog.clear()
    convert.export_workdir(str(tmp_path / name), str(tmp_path / f"out_{name}"))
    warned[name] = [r.getMessage() for r in caplog.records
                    if r.levelno == logging.WARNING and "exact GeLU" in r.getMessage()]
    exported, _ = safetensors_io.read(str(tmp_path / f"out_{name}" / "model.safetensors"))
    assert len(exported) == len(weights), name
  assert warned["exact"] == [] and len(warned["tanh"]) == 1, warned
  assert "model.activation=gelu_tanh" in warned["tanh"][0]



def test_a_long_export_write_says_how_far_it_got(weights, tmp_path, monkeypatch, caplog):
  """GLM-10B's model.safetensors is 20 GB: a line at most every 30 s while it is written."""
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  monkeypatch.setattr(convert.original, "PROGRESS_EVERY_S", 0)  # a line after every tensor
  with caplog.at_level(logging.INFO, logger="glmjax.convert.original"):
    convert.export_workdir(str(tmp_path / "run"), str(tmp_path / "out"))
  said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Writing model.")]
  assert len(said) == len(weights), said  # one a tensor here
  done, total = re.match(r"Writing model\.safetensors: ([\d.]+) of ([\d.]+) GB after \d+ s$",
                         said[-1]).groups()
  assert done == total
