"""Files that torch.load reads (a hub's pytorch_model.bin, Megatron's mp_rank_XX_model_states.pt):
what weights-only loading reads, what needs --trust_pickle wherever --from points, storages saved
on a GPU, and entries that are not tensors."""
import argparse
import json
import logging
import os

import jax
import numpy as np
import pytest
import torch

import convert_sources as sources
import original_glm as og
from convert_sources import H, HEADS, L, MSL, V
from glmjax import convert

MEGATRON_FILE = "mp_rank_00_model_states.pt"


@pytest.fixture(scope="module")
def weights():
  return sources.random_weights()


def _same_params(got, want):
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))


def _hub_bin(folder, state):
  """A hub folder whose pytorch_model.bin holds `state` as torch.save writes it."""
  os.makedirs(folder, exist_ok=True)
  (folder / "config.json").write_text(json.dumps(og.hf_config(V, H, L, HEADS, MSL)))
  torch.save(state, folder / "pytorch_model.bin")


def test_a_megatron_file_holding_its_training_args_but_no_rng_states_needs_no_trust_pickle(
    weights, tmp_path):
  """argparse.Namespace is the one object weights-only loading is allowed to build: the heads
  and dropout rates it records are read without running code stored in the file."""
  torch.save({"module": weights, "args": argparse.Namespace(num_attention_heads=HEADS,
                                                            hidden_dropout=0.05)},
             tmp_path / MEGATRON_FILE)
  model_config, params = convert.load_pretrained(str(tmp_path))  # no allow_pickle
  assert (model_config.num_heads, model_config.hidden_dropout) == (HEADS, 0.05)  # not H / 64
  np.testing.assert_array_equal(params["word_embeddings"], weights["word_embeddings.weight"])


def test_trust_pickle_reaches_a_megatron_file_named_by_itself(weights, tmp_path):
  torch.save({"module": weights, "np_rng_state": np.random.get_state()}, tmp_path / MEGATRON_FILE)
  with pytest.raises(ValueError, match="needs --trust_pickle"):
    convert.load_pretrained(str(tmp_path / MEGATRON_FILE), num_heads=HEADS)
  model_config, params = convert.load_pretrained(str(tmp_path / MEGATRON_FILE),
                                                 allow_pickle=True, num_heads=HEADS)
  assert model_config.num_heads == HEADS
  _same_params(params, convert.load_pretrained(str(tmp_path), allow_pickle=True,
                                               num_heads=HEADS)[1])
  np.testing.assert_array_equal(params["word_embeddings"], weights["word_embeddings.weight"])


def test_trust_pickle_reaches_a_hugging_face_bin_file(weights, tmp_path):
  """A value that weights-only loading refuses (a numpy array) is read with the flag alone."""
  _hub_bin(tmp_path, dict(weights, extra=np.arange(3)))
  with pytest.raises(ValueError, match="needs --trust_pickle"):
    convert.load_pretrained(str(tmp_path))
  _, params = convert.load_pretrained(str(tmp_path), allow_pickle=True)
  np.testing.assert_array_equal(params["word_embeddings"], weights["word_embeddings.weight"])


@pytest.mark.parametrize("layout", ["hf-bin", "megatron"])
def test_a_checkpoint_saved_from_a_gpu_imports_on_a_machine_without_one(weights, tmp_path,
                                                                         layout, monkeypatch):
  """torch.save records each storage's device; a GPU's (cuda:0) is mapped to the CPU on load,
  not refused because this machine has no CUDA."""
  monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CUDA build too
  on_gpu = (0, lambda storage: "cuda:0", lambda storage, location: None)  # every storage's tag
  torch.serialization._package_registry.insert(0, on_gpu)
  try:
    if layout == "megatron":
      og.save_megatron(str(tmp_path), weights)
    else:
      og.save_hf(str(tmp_path), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
                 fmt="bin")
  finally:
    torch.serialization._package_registry.remove(on_gpu)
  saved = tmp_path / (MEGATRON_FILE if layout == "megatron" else "pytorch_model.bin")
  with pytest.raises(RuntimeError, match="CUDA"):  # as saved: its storages are the GPU's
    torch.load(str(saved), weights_only=True)
  _, params = convert.load_pretrained(str(tmp_path), num_heads=HEADS)
  np.testing.assert_array_equal(params["word_embeddings"], weights["word_embeddings.weight"])


@pytest.mark.parametrize("layout", ["hf-bin", "megatron"])
def test_an_entry_that_is_not_a_tensor_is_refused_in_one_line_naming_it_and_its_file(
    weights, tmp_path, layout):
  state = dict(weights, _meta=np.random.get_state())  # a tuple: no array to import
  if layout == "megatron":
    torch.save({"module": state}, tmp_path / MEGATRON_FILE)
    path = tmp_path / MEGATRON_FILE
  else:
    _hub_bin(tmp_path, state)
    path = tmp_path / "pytorch_model.bin"
  with pytest.raises(ValueError) as raised:
    convert.load_pretrained(str(tmp_path), allow_pickle=True)
  message = str(raised.value)
  assert message.startswith(f"{path}: the entry _meta is a tuple, not a tensor")
  assert "\n" not in message


def test_an_import_says_each_file_it_has_read_of_how_many_then_the_join_and_the_write(
    weights, tmp_path, caplog):
  # A 10B checkpoint takes minutes to read: a line a file, so a slow import is not a hang.
  files = og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL),
                     prefix=False, fmt="safetensors", shards=3)
  og.save_megatron(str(tmp_path / "mp"), weights, parts=2)
  with caplog.at_level("INFO"):
    convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run_hf"))
    convert.import_checkpoint(str(tmp_path / "mp"), str(tmp_path / "run_mp"), num_heads=HEADS)
  said = [r.getMessage() for r in caplog.records if r.name.startswith("glmjax.")]
  read = [line for line in said if line.startswith("Read ")]
  assert [line.split(" GB)")[0].rsplit(", ", 1)[0] for line in read] == [
      f"Read {name} ({i} of 3" for i, name in enumerate(sorted(files), 1)] + [
      f"Read mp_rank_0{i}_model_states.pt ({i + 1} of 2" for i in range(2)]
  gb = os.path.getsize(tmp_path / "hf" / sorted(files)[0]) / 1e9
  assert f"3, {gb:.2f} GB) after " in read[0]
  assert said.index("Joining 2 model-parallel parts") > said.index(read[-1])
  assert said.count(f"Writing the parameters to {tmp_path / 'run_mp'}") == 1


@pytest.mark.parametrize("fixed", [False, True])
def test_a_chinese_glm_trained_without_fix_command_token_gets_the_hub_release_s_gmask_row(
    tmp_path, caplog, fixed):
  """GLM-10B-Chinese's files: [gMASK] trained on <|endofpiece|>'s row 50007; the Hugging Face
  release copies that row to 50009, [gMASK]'s id there and in glmjax's chinese_sp layout."""
  state = og.random_state_dict(50048, H, L, HEADS, MSL, seed=4)
  os.makedirs(tmp_path / "megatron")
  torch.save({"module": state, "args": argparse.Namespace(
      num_attention_heads=HEADS, task_mask=True, tokenizer_type="ChineseSPTokenizer",
      fix_command_token=fixed)}, tmp_path / "megatron" / MEGATRON_FILE)
  with caplog.at_level(logging.INFO):
    _, params = convert.load_pretrained(str(tmp_path / "megatron"), num_heads=HEADS)
  source = state["word_embeddings.weight"].numpy()
  want = source.copy()
  if not fixed:
    want[50009] = source[50007]
  np.testing.assert_array_equal(np.asarray(params["word_embeddings"]), want)
  assert ("shared <|endofpiece|>'s id 50007: its row is copied to 50009" in caplog.text) == (
      not fixed)


def test_glm_10b_chinese_shaped_files_without_args_are_warned_of_and_kept_as_they_are(caplog):
  """GLM's own saves keep no training args: the files cannot say how [gMASK] was trained."""
  table = np.broadcast_to(np.float16(1), (50048, 4096))  # GLM-10B-Chinese's, without memory
  with caplog.at_level(logging.WARNING):
    kept = convert.original._gmask_on_its_own_row({"word_embeddings.weight": table}, {}, "/m")
  assert kept["word_embeddings.weight"] is table
  assert ("/m: a GLM-10B-Chinese-shaped checkpoint without its training args. If it was trained "
          "without --fix-command-token" in caplog.text)
  caplog.clear()  # GLM-Large-Chinese (hidden 1024) was trained with the flag: no word
  convert.original._gmask_on_its_own_row(
      {"word_embeddings.weight": np.broadcast_to(np.float16(1), (50048, 1024))}, {}, "/m")
  assert caplog.text == ""



@pytest.mark.parametrize("args,rows", [
    (dict(tokenizer_type="ChineseSPTokenizer", task_mask=False), 50048),  # no [gMASK] trained
    (dict(tokenizer_type="GPT2BPETokenizer", task_mask=True), 50304),  # GLM-10B: own ids
    (dict(tokenizer_type="ChineseSPTokenizer", task_mask=True), 50009),  # no row 50009
])
def test_only_a_chinese_glm_trained_with_task_mask_has_its_gmask_row_copied(args, rows):
  table = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
  kept = convert.original._gmask_on_its_own_row({"word_embeddings.weight": table}, args, "/m")
  assert kept["word_embeddings.weight"] is table


def test_the_gmask_row_is_copied_into_a_new_table_leaving_the_one_read_as_it_was():
  table = np.arange(50048 * 4, dtype=np.float32).reshape(50048, 4)
  before = table.copy()
  args = dict(tokenizer_type="ChineseSPTokenizer", task_mask=True, fix_command_token=False)
  copied = convert.original._gmask_on_its_own_row({"word_embeddings.weight": table}, args, "/m")
  np.testing.assert_array_equal(table, before)
  np.testing.assert_array_equal(copied["word_embeddings.weight"][50009], before[50007])


def test_glm_10b_chinese_shaped_files_whose_args_do_not_name_the_tokenizer_are_warned_of(caplog):
  table = np.broadcast_to(np.float16(1), (50048, 4096))
  with caplog.at_level(logging.WARNING):
    convert.original._gmask_on_its_own_row({"word_embeddings.weight": table},
                                           {"num_attention_heads": 64}, "/m")
  assert "/m: a GLM-10B-Chinese-shaped checkpoint without its training args" in caplog.text

def test_a_megatron_file_without_the_word_table_is_refused_naming_it(tmp_path):
  state = dict(og.random_state_dict(V, H, L, HEADS, MSL, seed=5))
  del state["word_embeddings.weight"]
  os.makedirs(tmp_path / "megatron")
  torch.save({"module": state}, tmp_path / "megatron" / MEGATRON_FILE)
  with pytest.raises(ValueError, match="word_embeddings.weight is missing from the checkpoint"):
    convert.load_pretrained(str(tmp_path / "megatron"), num_heads=HEADS)
