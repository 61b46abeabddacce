"""Import and export refuse, in one line naming the tensor, file or flag, what they cannot
convert exactly: missing or misshapen tensors, missing parts or shards, and models the Hugging
Face GLM code would compute differently."""
import json
import logging
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn

import convert_sources as sources
import original_glm as og
from convert_sources import H, HEADS, L, MSL, V
from glmjax import convert, pretrained
from glmjax.convert import mapping, original
from glmjax.model import GLM, ModelConfig


@pytest.fixture(scope="module")
def weights():
  return sources.random_weights()


def _damaged(weights, tmp_path, change):
  state = dict(weights)
  config = og.hf_config(V, H, L, HEADS, MSL)
  change(state, config)
  og.save_hf(str(tmp_path), state, config, prefix=False, fmt="safetensors")
  with pytest.raises(mapping.CheckpointMismatchError) as raised:
    convert.load_pretrained(str(tmp_path))
  return str(raised.value)


def test_a_missing_key_is_named(weights, tmp_path):
  message = _damaged(weights, tmp_path, lambda state, _: state.pop(
      "transformer.layers.1.mlp.dense_4h_to_h.bias"))
  assert message == "transformer.layers.1.mlp.dense_4h_to_h.bias is missing from the checkpoint."


def test_a_wrong_shape_is_named(weights, tmp_path):
  def change(state, _):
    state["transformer.layers.0.attention.dense.weight"] = torch.zeros(H, H + 1)
  message = _damaged(weights, tmp_path, change)
  assert message.startswith("transformer.layers.0.attention.dense.weight has shape (32, 33)")


def test_a_config_that_does_not_match_the_tensors_is_named(weights, tmp_path):
  message = _damaged(weights, tmp_path, lambda _, config: config.update(vocab_size=256))
  assert "vocab_size=256" in message and "word_embeddings.weight" in message
  # The width too: the tensors alone would import, computing another model than config.json says.
  message = _damaged(weights, tmp_path / "wider", lambda _, config: config.update(hidden_size=64))
  assert message == ("config.json has hidden_size=64, but the tensors have 32 "
                     "(word_embeddings.weight).")


def test_bin_files_ask_for_torch_when_it_is_missing(weights, tmp_path, monkeypatch):
  og.save_hf(str(tmp_path), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False, fmt="bin")
  monkeypatch.setattr(original, "_torch", lambda: None)
  with pytest.raises(ModuleNotFoundError, match="needs PyTorch, which is not installed"):
    convert.load_pretrained(str(tmp_path))


def test_a_head_count_that_does_not_divide_the_hidden_size_is_refused_naming_the_flag(
    weights, tmp_path):
  og.save_hf(str(tmp_path), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  with pytest.raises(mapping.CheckpointMismatchError, match="num_attention_heads=5 does not "
                                                         "divide hidden_size=32; pass --num_heads"):
    convert.load_pretrained(str(tmp_path), num_heads=5)


@pytest.mark.parametrize("form, keep", [("zip", 4096), ("zip", 0.01), ("zip", 0.5),
                                        ("legacy", 0.5), ("legacy", 16)])
def test_a_cut_off_bin_file_is_called_damaged_and_never_sent_to_trust_pickle(weights, tmp_path,
                                                                             form, keep):
  """A download cut short was told to use --trust_pickle, which runs code stored in the file
  and would not read it either; torch words each cut in its own way (an OSError, a pickle
  error, 'unexpected EOF'), in its zip format and in the older pickle one."""
  path = tmp_path / "pytorch_model.bin"
  torch.save({k: v.clone() for k, v in weights.items()}, path,
             _use_new_zipfile_serialization=form == "zip")
  whole = path.read_bytes()
  kept = keep if isinstance(keep, int) else int(len(whole) * keep)
  path.write_bytes(whole[:kept])
  (tmp_path / "config.json").write_text(json.dumps(og.hf_config(V, H, L, HEADS, MSL)))
  with pytest.raises(ValueError) as raised:
    convert.load_pretrained(str(tmp_path))
  message = str(raised.value)
  assert message.endswith(f"the file is damaged or incomplete ({kept:,} bytes): download it "
                          "again."), message
  assert "--trust_pickle" not in message


def test_an_intact_checkpoint_holding_more_than_tensors_is_sent_to_trust_pickle(tmp_path):
  """The other side of the damage check: a whole file that weights-only loading refuses (an
  optimizer's state holds Python objects) is pointed at --trust_pickle, not called damaged."""
  path = tmp_path / "mp_rank_00_model_states.pt"
  torch.save({"module": {"x": torch.zeros(2)}, "rng": _Opaque()}, path)
  with pytest.raises(ValueError) as raised:
    original._load_torch_file(str(path), allow_pickle=False)
  assert "needs --trust_pickle" in str(raised.value) and "damaged" not in str(raised.value)


class _Opaque:
  """A Python object in a checkpoint: weights-only loading refuses it."""


def test_a_num_heads_flag_that_contradicts_the_checkpoint_s_config_is_said_with_both_counts(
    weights, tmp_path, caplog):
  """The head count cannot be read from the tensors: a mistyped --num_heads gives a model of
  other logits, so replacing what config.json records is a warning, and agreeing is silent."""
  og.save_hf(str(tmp_path), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  with caplog.at_level(logging.WARNING):
    assert convert.load_pretrained(str(tmp_path), num_heads=HEADS)[0].num_heads == HEADS
    assert not [r for r in caplog.records if "--num_heads" in r.getMessage()]
    assert convert.load_pretrained(str(tmp_path), num_heads=2 * HEADS)[0].num_heads == 2 * HEADS
  assert [r.getMessage() for r in caplog.records if "--num_heads" in r.getMessage()] == [
      f"--num_heads={2 * HEADS} replaces the {HEADS} heads the checkpoint's config.json "
      "records: the imported model computes other logits than the original; leave "
      f"--num_heads out to keep {HEADS}."]


@pytest.mark.parametrize("field, value", [("layernorm_eps", 1e-6), ("norm", "deepnorm")])
def test_export_refuses_a_model_that_the_hugging_face_glm_code_would_compute_differently(
    weights, tmp_path, field, value):
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  # The same parameter shapes, another function: GLM's code has pre-LayerNorm with eps 1e-5.
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  saved["model"][field] = value
  (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
  with pytest.raises(ValueError, match=f"{field}.*cannot be exported"):
    convert.export_workdir(str(tmp_path / "run"), str(tmp_path / "out"))
  assert not (tmp_path / "out" / "model.safetensors").exists()


def test_export_refuses_an_activation_that_neither_original_code_computes(weights, tmp_path,
                                                                          monkeypatch):
  # An activation added to model_config (here a pretend 'silu') is not a GeLU the Hugging Face
  # code is "slightly" off from: export must refuse it, not warn of a 5e-3 difference.
  from glmjax import config as config_lib  # pylint: disable=import-outside-toplevel
  from glmjax.model import glm, model_config  # pylint: disable=import-outside-toplevel
  with_silu = (*model_config.ACTIVATIONS, "silu")
  monkeypatch.setitem(model_config.CHOICES, "activation", with_silu)
  monkeypatch.setitem(config_lib.CHOICES, "model.activation", with_silu)
  gelus = glm._activation
  monkeypatch.setattr(glm, "_activation",
                      lambda name: jax.nn.silu if name == "silu" else gelus(name))
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  saved["model"]["activation"] = "silu"
  (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
  with pytest.raises(ValueError, match="activation.*cannot be exported"):
    convert.export_workdir(str(tmp_path / "run"), str(tmp_path / "out"))
  assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_model_parallel_checkpoint_missing_a_rank_is_refused_naming_the_parts(weights,
                                                                               tmp_path):
  og.save_megatron(str(tmp_path), weights, parts=2)
  os.remove(tmp_path / "mp_rank_00_model_states.pt")
  with pytest.raises(FileNotFoundError, match=r"model-parallel parts \[1\] are not 0\.\.0"):
    convert.load_pretrained(str(tmp_path), num_heads=HEADS)


def test_a_model_parallel_checkpoint_missing_its_last_rank_is_refused_naming_the_count(
    weights, tmp_path):
  # mp_rank_00 alone looks like a whole checkpoint; DeepSpeed's mp_world_size says it is not.
  og.save_megatron(str(tmp_path), weights, parts=2)
  os.remove(tmp_path / "mp_rank_01_model_states.pt")
  with pytest.raises(FileNotFoundError, match=r"mp_rank_00_model_states.pt is one of 2 "
                                              r"model-parallel parts, but .* holds 1; copy every "
                                              r"mp_rank_XX_model_states.pt \(00\.\.01\)"):
    convert.load_pretrained(str(tmp_path), num_heads=HEADS)


@pytest.mark.parametrize("tracked", [b"5000", b"release", b"", b"\xff\xfe"])
def test_a_tracker_file_naming_an_iteration_not_there_is_refused_naming_the_one_that_is(
    weights, tmp_path, tracked):
  """The released layout: <dir>/<iteration>/mp_rank_00..., named by the tracker file. One copied
  from another run, or written by a save that did not finish, names a folder that is missing."""
  og.save_megatron(str(tmp_path), weights, iteration=4000)
  (tmp_path / "latest_checkpointed_iteration.txt").write_bytes(tracked + b"\n")
  said = "is empty" if not tracked else "names iteration '.+', but .* holds no mp_rank_\\*"
  with pytest.raises(FileNotFoundError, match=(
      rf"latest_checkpointed_iteration.txt {said}.*; give --from={tmp_path / '4000'}\.$")):
    convert.load_pretrained(str(tmp_path), num_heads=HEADS)
  convert.load_pretrained(str(tmp_path / "4000"), num_heads=HEADS)  # what the message gives


@pytest.mark.parametrize("tracker, tag, said", [
    ("latest", "global_step9", "latest names iteration 'global_step9', but .* holds no"),
    ("latest_checkpointed_iteration.txt", "", "latest_checkpointed_iteration.txt is empty")])
def test_a_stale_tracker_beside_the_parts_themselves_is_warned_of_and_the_parts_read(
    weights, tmp_path, caplog, tracker, tag, said):
  og.save_megatron(str(tmp_path), weights)
  (tmp_path / tracker).write_text(tag + "\n")
  with caplog.at_level(logging.WARNING):
    convert.load_pretrained(str(tmp_path), num_heads=HEADS)
  assert re.search(said + ".*: reading the parts beside it", caplog.text), caplog.text


def test_a_tracker_naming_a_missing_iteration_among_several_lists_every_one_there(weights,
                                                                                tmp_path):
  og.save_megatron(str(tmp_path), weights, iteration=2000)
  og.save_megatron(str(tmp_path), weights, iteration=1000)  # the tracker now names 1000
  os.rename(tmp_path / "1000", tmp_path / "global_step1000")
  with pytest.raises(FileNotFoundError, match=(
      rf"names iteration '1000', .*; give --from={tmp_path / 'ITERATION'}, one of 2000, "
      r"global_step1000\.$")):
    convert.load_pretrained(str(tmp_path), num_heads=HEADS)


def test_a_megatron_folder_with_glob_characters_in_its_name_is_read_through_its_tracker(
    weights, tmp_path):
  og.save_megatron(str(tmp_path / "glm[10b]"), weights, iteration="iter[5]")
  _, params = convert.load_pretrained(str(tmp_path / "glm[10b]"), num_heads=HEADS)
  np.testing.assert_array_equal(np.asarray(params["word_embeddings"]),
                                weights["word_embeddings.weight"].numpy())


def test_a_part_of_another_checkpoint_copied_in_beside_the_parts_is_refused_naming_the_count(
    weights, tmp_path):
  # Its ranks run 0..1, but mp_rank_00 says it is the whole of a one-part checkpoint.
  og.save_megatron(str(tmp_path), weights)
  (tmp_path / "mp_rank_01_model_states.pt").write_bytes(
      (tmp_path / "mp_rank_00_model_states.pt").read_bytes())
  with pytest.raises(FileNotFoundError, match=r"mp_rank_00_model_states.pt is one of 1 "
                                              r"model-parallel parts, but .* holds 2"):
    convert.load_pretrained(str(tmp_path), num_heads=HEADS)

def test_a_sharded_checkpoint_missing_a_shard_names_the_file_to_download(weights, tmp_path):
  files = og.save_hf(str(tmp_path), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
                     fmt="safetensors", shards=3)
  os.remove(tmp_path / files[1])
  with pytest.raises(FileNotFoundError, match=rf"lists \['{files[1]}'\] that are not in .*"
                                               "download every shard"):
    convert.load_pretrained(str(tmp_path))


def test_a_checkpoint_missing_the_last_layer_that_its_config_counts_is_refused(weights,
                                                                             tmp_path):
  # Layers 0..L-2 alone form a valid, shallower GLM: only config.json tells that one is lost.
  message = _damaged(weights, tmp_path, lambda state, _: [
      state.pop(key) for key in list(state) if key.startswith(f"transformer.layers.{L - 1}.")])
  assert f"num_layers={L}" in message and f"tensors have {L - 1} (transformer.layers.*)" in message


def test_a_checkpoint_trained_without_block_positions_is_refused_naming_the_setting(weights,
                                                                                   tmp_path):
  def change(state, config):  # the original code's --no-block-position: one position table
    state.pop("transformer.block_position_embeddings.weight")
    config.update(block_position_encoding=False)
  assert "block_position_encoding=false" in _damaged(weights, tmp_path, change)


@pytest.mark.parametrize("field, value", [("mlp", "geglu"), ("position_encoding", "rope")])
def test_export_refuses_a_model_with_other_parameters_than_the_hugging_face_glm_code_has(
    weights, tmp_path, field, value):
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  # A run of the imported size trained from scratch with a GeGLU MLP or rotary positions.
  config = pretrained.read_config(str(tmp_path / "run"))
  config.model.update({field: value, "attention": "xla"})
  tokens = jnp.zeros((1, 8), jnp.int32)
  shapes = jax.eval_shape(lambda: GLM(ModelConfig.from_config(config.model)).init(
      jax.random.key(0), tokens, tokens, tokens, jnp.array([4]))["params"])
  pretrained.save(str(tmp_path / "other"), config, jax.tree.map(
      lambda leaf: np.zeros(leaf.shape, leaf.dtype), nn.meta.unbox(shapes)))
  with pytest.raises(ValueError, match=f"{field}.*cannot be exported"):
    convert.export_workdir(str(tmp_path / "other"), str(tmp_path / "out"))
  assert not (tmp_path / "out" / "model.safetensors").exists()


def test_an_out_that_is_a_file_or_a_bucket_is_one_line_before_anything_is_read(tmp_path,
                                                                               monkeypatch):
  (tmp_path / "a-file").write_text("keep me")
  out = str(tmp_path / "a-file")
  # Neither the checkpoint nor the workdir exists: --out is checked first.
  with pytest.raises(ValueError, match=rf"--out={out}: a file is there; give a folder for the "
                                       "glmjax workdir"):
    convert.import_checkpoint(str(tmp_path / "no-checkpoint"), out)
  with pytest.raises(ValueError, match=rf"--out={out}: a file is there; give a folder for the "
                                       "Hugging Face files"):
    convert.export_workdir(str(tmp_path / "no-run"), out)
  assert (tmp_path / "a-file").read_text() == "keep me"
  # A bucket: os.makedirs made a local folder named "gs:" and wrote half the workdir there.
  monkeypatch.chdir(tmp_path)
  for call, holds in ((convert.import_checkpoint, "the glmjax workdir"),
                      (convert.export_workdir, "the Hugging Face files")):
    with pytest.raises(ValueError, match=f"^--out=gs://b/run: convert writes {holds} to a local "
                                         "folder"):
      call(str(tmp_path / "nothing"), "gs://b/run")
  assert not (tmp_path / "gs:").exists()


def _files(folder):
  """Every file under `folder` with its bytes: what a refused command must leave as it was."""
  found = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as handle:
        found[os.path.relpath(path, folder)] = handle.read()
  return found


def test_an_out_folder_holding_other_files_is_refused_by_import_and_export_and_kept(weights,
                                                                                     tmp_path):
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  notes = tmp_path / "notes"  # unrelated files, one of them named as export would name its own
  notes.mkdir()
  for name in ("config.json", "a.txt", "b.txt", "c.txt"):
    (notes / name).write_text(f"my {name}")
  kept = _files(notes)
  with pytest.raises(FileExistsError, match=rf"^--out={notes} holds files \(a\.txt, b\.txt, "
                                            r"c\.txt, \.\.\.\): give a new or empty folder for "
                                            r"the Hugging Face files; nothing was written\.$"):
    convert.export_workdir(str(tmp_path / "run"), str(notes))
  with pytest.raises(FileExistsError, match=rf"^--out={notes} holds files .*: give a new or "
                                            "empty folder for the glmjax workdir; nothing was "
                                            "written"):
    convert.import_checkpoint(str(tmp_path / "hf"), str(notes))
  assert _files(notes) == kept


@pytest.mark.parametrize("named_by", ["folder", "weights file"])
def test_import_refuses_the_checkpoint_s_own_folder_as_out_and_leaves_it_as_it_was(
    weights, tmp_path, named_by):
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  kept = _files(tmp_path / "hf")
  source = tmp_path / "hf" / ("model.safetensors" if named_by == "weights file" else "")
  with pytest.raises(FileExistsError, match=rf"^--out={tmp_path / 'hf'} is the --from folder "
                                            "itself: give a new or empty folder"):
    convert.import_checkpoint(str(source), str(tmp_path / "hf"))
  assert _files(tmp_path / "hf") == kept  # its Hugging Face config.json above all


def test_export_refuses_the_workdir_itself_as_out_and_the_workdir_still_loads(weights,
                                                                             tmp_path):
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  kept = _files(tmp_path / "run")
  with pytest.raises(FileExistsError, match=rf"^--out={tmp_path / 'run'} is the --workdir "
                                            "folder itself: give a new or empty folder for the "
                                            "Hugging Face files; nothing was written"):
    convert.export_workdir(str(tmp_path / "run"), str(tmp_path / "run"))
  assert _files(tmp_path / "run") == kept  # glmjax's config.json, not the Hugging Face one
  assert pretrained.load(str(tmp_path / "run")).model_config.num_layers == L


@pytest.mark.parametrize("out_exists", [False, True], ids=["new folder", "empty folder"])
def test_a_failed_import_leaves_out_as_it_found_it_and_the_same_command_then_runs(tmp_path,
                                                                                 out_exists):
  """An export's record names merges.txt, which the copy lacks: the import stops, and a retry
  once the file is there used to be refused for the half-written --out."""
  from test_released_tokenizers import write_gpt2_files  # pylint: disable=import-outside-toplevel
  source = tmp_path / "export"
  og.save_hf(str(source), og.random_state_dict(50304, H, L, HEADS, MSL, seed=5),
             og.hf_config(50304, H, L, HEADS, MSL), prefix=False, fmt="safetensors")
  write_gpt2_files(str(tmp_path / "gpt2"))
  os.rename(tmp_path / "gpt2" / "vocab.json", source / "vocab.json")
  (source / "glmjax_tokenizer.json").write_text(json.dumps(
      {"tokenizer": "bpe", "tokenizer_vocab": "gpt2", "files": ["vocab.json", "merges.txt"]}))
  out = tmp_path / "run"
  if out_exists:
    out.mkdir()
  with pytest.raises(FileNotFoundError, match="merges.txt"):
    convert.import_checkpoint(str(source), str(out))
  assert (sorted(os.listdir(out)) == []) if out_exists else not out.exists()
  os.rename(tmp_path / "gpt2" / "merges.txt", source / "merges.txt")
  convert.import_checkpoint(str(source), str(out))
  assert pretrained.load(str(out)).model_config.vocab_size == 50304
