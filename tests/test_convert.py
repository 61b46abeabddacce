"""Original GLM checkpoints in every layout import to the original's logits and export back exactly.

The original model is tests/original_glm.py: an independently written PyTorch forward with its
own checkpoint writers (Hugging Face and Megatron, model-parallel parts included). Refused
sources are in test_convert_refusals.py, tokenizers stored with an import in
test_convert_tokenizer.py, the config.json and tensors export writes in test_convert_export.py.
"""
import importlib
import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from absl import app
from absl import flags as absl_flags

import convert_sources as sources
import original_glm as og
from convert_sources import H, HEADS, L, MSL, V
from glmjax import checkpoint as checkpoint_lib
from glmjax import config as config_lib
from glmjax import convert, logs, params_restore, pretrained
from glmjax.convert import original, safetensors_io
from glmjax.model import GLM

TOKENS = np.array([[3, 17, 1, 99, 150, 42, 7, 8, 9, 10, 11, 12],
                   [5, 6, 7, 199, 0, 1, 2, 3, 4, 5, 6, 7]], np.int32)
POSITIONS = np.array([list(range(7)) + [3] * 5, list(range(9)) + [2] * 3], np.int32)
BLOCKS = np.array([[0] * 7 + [1, 2, 3, 4, 5], [0] * 9 + [1, 2, 3]], np.int32)
SEP = np.array([7, 9], np.int32)


@pytest.fixture(scope="module")
def weights():
  return sources.random_weights()


def _original_logits(state_dict, activation):
  with torch.no_grad():
    return og.forward(state_dict, torch.tensor(TOKENS, dtype=torch.long),
                      torch.tensor(POSITIONS, dtype=torch.long),
                      torch.tensor(BLOCKS, dtype=torch.long), torch.tensor(SEP),
                      num_heads=HEADS, activation=activation).numpy()


def _our_logits(model_config, params):
  """load_pretrained's config applied as it comes: no kernel left to choose."""
  return np.asarray(GLM(model_config).apply({"params": params}, jnp.asarray(TOKENS),
                                            jnp.asarray(POSITIONS), jnp.asarray(BLOCKS),
                                            jnp.asarray(SEP)))


def _write(layout, directory, weights):
  if layout.startswith("megatron"):
    parts = 2 if layout == "megatron-2-parts" else 1
    og.save_megatron(str(directory), weights, parts=parts,
                     iteration=5000 if layout == "megatron-release" else None)
    return "tanh"
  fmt, prefix, shards = {"hf-safetensors": ("safetensors", False, 1),
                         "hf-bin-prefixed": ("bin", True, 1),
                         "hf-safetensors-3-shards-prefixed": ("safetensors", True, 3),
                         "hf-bin-2-shards": ("bin", False, 2)}[layout]
  og.save_hf(str(directory), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=prefix, fmt=fmt,
             shards=shards)
  return "erf"


@pytest.mark.parametrize("layout", ["hf-safetensors", "hf-bin-prefixed",
                                    "hf-safetensors-3-shards-prefixed", "hf-bin-2-shards",
                                    "megatron-2-parts", "megatron-release"])
def test_each_original_layout_gives_the_original_logits(layout, weights, tmp_path):
  activation = _write(layout, tmp_path, weights)
  model_config, params = convert.load_pretrained(str(tmp_path), num_heads=HEADS)
  assert model_config.activation == {"erf": "gelu_exact", "tanh": "gelu_tanh"}[activation]
  assert (model_config.vocab_size, model_config.max_position) == (V, MSL)
  expected = _original_logits(weights, activation)
  # float32 through XLA (optimised or not, as the compilation cache serves it) against torch:
  # typically 1e-4 apart, up to ~8e-4 seen; a wrong import is off by O(1).
  np.testing.assert_allclose(_our_logits(model_config, params), expected, atol=1e-3, rtol=0)
  # The other GeLU is measurably different: the activation choice is what makes them agree.
  other = _original_logits(weights, "tanh" if activation == "erf" else "erf")
  assert np.abs(other - expected).max() > 1e-3


@pytest.mark.parametrize("dtype, fmt", [(torch.float16, "bin"), (torch.bfloat16, "safetensors"),
                                        (torch.bfloat16, "bin")])
def test_import_writes_a_workdir_that_loads_and_exports_bit_exactly(weights, tmp_path, caplog,
                                                                     dtype, fmt):
  caplog.set_level(logging.INFO)
  half = {key: value.to(dtype) for key, value in weights.items()}  # released files: fp16, bf16
  half["transformer.final_layernorm.weight"] = weights["transformer.final_layernorm.weight"]
  og.save_hf(str(tmp_path / "hf"), half, og.hf_config(V, H, L, HEADS, MSL), prefix=True,
             fmt=fmt)
  (tmp_path / "hf" / "modeling_glm.py").write_text("# the hub's code, kept for export\n")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  assert "model.activation=gelu_exact" in caplog.text
  assert "not a multiple of 128" in caplog.text
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  assert saved["model"]["activation"] == "gelu_exact"
  assert (saved["model"]["vocab_size"], saved["model"]["num_layers"]) == (V, L)

  model_config, params = convert.load_pretrained(str(tmp_path / "run"))
  np.testing.assert_allclose(_our_logits(model_config.__class__(**{
      **model_config.__dict__, "dtype": "float32"}), params),
      _original_logits({k: v.float() for k, v in half.items()}, "erf"), atol=1e-3, rtol=0)

  convert.export_workdir(str(tmp_path / "run"), str(tmp_path / "out"))
  exported, _ = safetensors_io.read(str(tmp_path / "out" / "model.safetensors"))
  assert sorted(exported) == sorted("glm." + key for key in half)
  for key, value in half.items():  # each tensor in its own dtype (one is float32 here)
    assert str(exported["glm." + key].dtype) == str(value.dtype).replace("torch.", ""), key
    np.testing.assert_array_equal(exported["glm." + key].astype(np.float32),
                                  value.float().numpy(), err_msg=key)
  config = json.loads((tmp_path / "out" / "config.json").read_text())
  assert {k: config[k] for k in ("num_layers", "hidden_size", "num_attention_heads",
                                 "vocab_size", "max_sequence_length")} == dict(
      num_layers=L, hidden_size=H, num_attention_heads=HEADS, vocab_size=V,
      max_sequence_length=MSL)
  assert (tmp_path / "out" / "modeling_glm.py").exists()
  # ... and the exported folder imports again to the same parameters.
  again_config, again = convert.load_pretrained(str(tmp_path / "out"))
  jax.tree.map(np.testing.assert_array_equal, again, jax.device_get(params))


def test_the_imported_workdir_is_what_train_continues_from(weights, tmp_path):
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  config = sources.continue_config(str(tmp_path / "run"))
  assert config.checkpoint.init_from == str(tmp_path / "run")
  assert (config.model.hidden_size, config.model.max_position) == (H, MSL)
  assert config.data.seq_len <= MSL
  # The longest span a 16-position row holds, not 1: its other 4 places are [CLS], the [MASK],
  # [sop] and the text's last token, which is never masked.
  assert config.data.max_span_length == config.data.seq_len - 4
  config_lib.validate(config)  # e.g. its longest span fits the model's 16-position rows
  # What train does with checkpoint.init_from: read the parameters into the model's layout.
  loaded = pretrained.load(str(tmp_path / "run"))
  params, step = params_restore.restore_params(
      config.checkpoint.init_from, pretrained.abstract_params(
          loaded.model_config, loaded.mesh, loaded.rules),
      checkpoint_lib.parameter_layout(loaded.params))
  assert step == 0
  np.testing.assert_array_equal(np.asarray(params["word_embeddings"]),
                                weights["word_embeddings.weight"].numpy())


def test_a_word_after_the_colon_of_an_import_s_config_py_is_refused_saying_what_to_do(
    weights, tmp_path):
  """`--config=RUN/config.py:local` failed as "get_config() takes 0 positional arguments"."""
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  result = sources.run_command("glmjax.train", f"--config={tmp_path}/run/config.py:local",
                               f"--workdir={tmp_path}/continued", temp=tmp_path)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].endswith(
      "this import's config.py takes no word after the colon (got 'local'); change fields with "
      "--config.SECTION.FIELD=VALUE instead")


def test_an_import_with_more_positions_than_the_default_row_keeps_the_default_row_length(
    tmp_path):
  """The position table bounds the rows; it does not choose them: a 600-position model trains
  at the default data.seq_len (512) until the user asks for more, as a smaller one is cut to
  its table."""
  long_table = 600
  og.save_hf(str(tmp_path / "hf"), og.random_state_dict(V, H, L, HEADS, long_table, seed=0),
             og.hf_config(V, H, L, HEADS, long_table), prefix=False, fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  config = sources.continue_config(str(tmp_path / "run"))
  default = config_lib.data_defaults().seq_len
  assert default < long_table
  assert (config.model.max_position, config.data.seq_len) == (long_table, default)
  assert config.data.max_span_length == config_lib.data_defaults().max_span_length


def test_the_imported_workdir_trains_from_another_folder_and_the_result_generates(
    tmp_path, monkeypatch):
  from test_released_tokenizers import write_bert_vocab  # pylint: disable=import-outside-toplevel
  from glmjax import decoding, generate, train  # pylint: disable=import-outside-toplevel
  bert = og.random_state_dict(30592, H, L, HEADS, 64, seed=1)  # a BERT-vocabulary GLM
  og.save_hf(str(tmp_path / "hf"), bert, og.hf_config(30592, H, L, HEADS, 64), prefix=False,
             fmt="safetensors")
  write_bert_vocab(str(tmp_path / "bert"))
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "imported"),
                            tokenizer=str(tmp_path / "bert"))
  config = sources.continue_config(str(tmp_path / "imported"))
  config.data.update(source="builtin", builtin_docs=200, batch_size=8)
  config.train.update(steps=1, eval_every=0, log_every=1)
  config.checkpoint.every = 1
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  monkeypatch.chdir(elsewhere)  # the stored tokenizer is found from any working directory
  train.train_and_evaluate(config, str(tmp_path / "continued"))
  continued = pretrained.load(str(tmp_path / "continued"))
  assert continued.step == 1 and continued.config.data.tokenizer == "wordpiece"
  # One step at warmup's zero learning rate: the imported parameters, carried through train.
  np.testing.assert_array_equal(np.asarray(continued.params["word_embeddings"]),
                                bert["word_embeddings.weight"].numpy())
  result = generate.generate(continued, pretrained.load_tokenizer(continued),
                             ["the [MASK] of"], sampling=decoding.Sampling(max_blank_tokens=3))
  assert len(result[0]["blanks"]) == 1


def test_a_megatron_file_with_training_args_and_rng_states(weights, tmp_path):
  import argparse  # pylint: disable=import-outside-toplevel
  os.makedirs(tmp_path / "1000")
  (tmp_path / "latest").write_text("1000")  # DeepSpeed's name for the iteration file
  torch.save({"module": weights, "np_rng_state": np.random.get_state(),
              "args": argparse.Namespace(num_attention_heads=HEADS, hidden_dropout=0.05,
                                         attention_dropout=0.0)},
             tmp_path / "1000" / "mp_rank_00_model_states.pt")
  with pytest.raises(ValueError, match="needs --trust_pickle"):
    convert.load_pretrained(str(tmp_path))
  model_config, params = convert.load_pretrained(str(tmp_path), allow_pickle=True)
  assert (model_config.num_heads, model_config.hidden_dropout,
          model_config.attention_dropout) == (HEADS, 0.05, 0.0)  # from the args, not H / 64
  # --num_heads wins over the args, as it does over a config.json.
  assert convert.load_pretrained(str(tmp_path), allow_pickle=True,
                                 num_heads=2 * HEADS)[0].num_heads == 2 * HEADS
  np.testing.assert_allclose(_our_logits(model_config, params),
                             _original_logits(weights, "tanh"), atol=1e-3, rtol=0)


def test_a_checkpoint_whose_mlp_is_not_four_times_the_hidden_size_imports_its_own_size(
    weights, tmp_path):
  """GLM's MLP is 4x the hidden size in every release; a checkpoint with another width keeps
  it (and computes the original's logits), while a 4x one records the default (ffn_size=0)."""
  narrow = dict(weights)
  rng = torch.Generator().manual_seed(7)
  for i in range(L):
    p = f"transformer.layers.{i}.mlp."
    narrow[p + "dense_h_to_4h.weight"] = torch.randn((3 * H, H), generator=rng) / H ** 0.5
    narrow[p + "dense_h_to_4h.bias"] = torch.randn((3 * H,), generator=rng) * 0.2
    narrow[p + "dense_4h_to_h.weight"] = torch.randn((H, 3 * H), generator=rng) / (3 * H) ** 0.5
  for name, state_dict in (("narrow", narrow), ("four_times", weights)):
    og.save_hf(str(tmp_path / name), state_dict, og.hf_config(V, H, L, HEADS, MSL),
               prefix=False, fmt="safetensors")
    model_config, params = convert.load_pretrained(str(tmp_path / name))
    assert model_config.ffn_size == (3 * H if name == "narrow" else 0)
    np.testing.assert_allclose(_our_logits(model_config, params),
                               _original_logits(state_dict, "erf"), atol=1e-3, rtol=0)


def test_a_megatron_file_without_args_gets_heads_of_64_dims(tmp_path, caplog):
  """A Megatron file holds no head count: every released GLM has heads of 64 dims, so a hidden
  size of 128 is read as 2 heads (the logits of any other split differ)."""
  state_dict = og.random_state_dict(V, 128, 1, 2, MSL, seed=3)
  og.save_megatron(str(tmp_path), state_dict)
  with caplog.at_level(logging.WARNING):
    model_config, params = convert.load_pretrained(str(tmp_path))
  assert model_config.num_heads == 2
  assert any("Pass --num_heads if yours differs" in r.getMessage() for r in caplog.records)
  with torch.no_grad():
    want = og.forward(state_dict, torch.tensor(TOKENS, dtype=torch.long),
                      torch.tensor(POSITIONS, dtype=torch.long),
                      torch.tensor(BLOCKS, dtype=torch.long), torch.tensor(SEP), num_heads=2,
                      activation="tanh").numpy()
  np.testing.assert_allclose(_our_logits(model_config, params), want, atol=1e-3, rtol=0)


def test_safetensors_files_are_read_without_torch(weights, tmp_path, monkeypatch):
  og.save_hf(str(tmp_path), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  monkeypatch.setattr(original, "_torch", lambda: None)
  _, params = convert.load_pretrained(str(tmp_path))
  np.testing.assert_array_equal(params["word_embeddings"], weights["word_embeddings.weight"])


def test_glmjax_imports_without_torch():
  code = ("import sys; sys.modules['torch'] = None; import glmjax.convert, glmjax.generate, "
          "glmjax.train; print('ok')")
  result = subprocess.run([sys.executable, "-c", code], cwd=sources.REPO, capture_output=True,
                          text=True, check=False, timeout=300)
  assert result.stdout.strip() == "ok", result.stderr[-2000:]


def test_convert_command_imports_and_exports_and_errors_in_one_line(weights, tmp_path):
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TMPDIR": str(tmp_path)}  # traceback files
  run = lambda *args: subprocess.run(  # noqa: E731
      [sys.executable, "-m", "glmjax.convert", *args], cwd=sources.REPO, env=env,
      capture_output=True, text=True, check=False, timeout=300)
  imported = run("import", f"--from={tmp_path / 'hf'}", f"--out={tmp_path / 'run'}")
  assert imported.returncode == 0, imported.stderr[-2000:]
  assert "gelu_exact" in imported.stderr and "config.py" in imported.stderr
  exported = run("export", f"--workdir={tmp_path / 'run'}", f"--out={tmp_path / 'out'}")
  assert exported.returncode == 0, exported.stderr[-2000:]
  written, _ = safetensors_io.read(str(tmp_path / "out" / "model.safetensors"))
  np.testing.assert_array_equal(written["word_embeddings.weight"],
                                weights["word_embeddings.weight"].numpy())
  # The workdir as --out would lose its config.json to the Hugging Face one: refused, unchanged.
  kept = (tmp_path / "run" / "config.json").read_bytes()
  again = run("export", f"--workdir={tmp_path / 'run'}", f"--out={tmp_path / 'run'}")
  assert again.returncode == 1
  lines = [line for line in again.stderr.splitlines() if line.strip()]
  assert f"--out={tmp_path / 'run'} is the --workdir folder itself" in lines[-1]
  assert "Traceback" not in again.stderr
  assert (tmp_path / "run" / "config.json").read_bytes() == kept


def test_num_heads_given_to_the_import_wins_over_a_config_json_that_misstates_them(weights,
                                                                                   tmp_path):
  # A config.json copied from another size of GLM: the tensors are these, the head split is not.
  og.save_hf(str(tmp_path), weights, og.hf_config(V, H, L, 2 * HEADS, MSL), prefix=False,
             fmt="safetensors")
  model_config, params = convert.load_pretrained(str(tmp_path), num_heads=HEADS)
  assert model_config.num_heads == HEADS
  np.testing.assert_allclose(_our_logits(model_config, params), _original_logits(weights, "erf"),
                             atol=1e-3, rtol=0)


def test_a_workdir_saved_on_a_larger_slice_loads_over_this_host_s_devices(weights, tmp_path):
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  saved["mesh"].update(data=4, fsdp=4)  # 16 devices, as on the slice that trained it
  (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
  loaded = pretrained.load(str(tmp_path / "run"))
  assert dict(loaded.mesh.shape) == {"data": 1, "fsdp": jax.device_count(), "tensor": 1}
  np.testing.assert_array_equal(np.asarray(loaded.params["word_embeddings"]),
                                weights["word_embeddings.weight"].numpy())


def _convert_command(monkeypatch, *args, error=None):
  """`python -m glmjax.convert ARGS` run in this process, with import and export replaced by a
  record of what they were asked to do (and then raising `error`, if given): (the calls, what
  the command raised or None)."""
  command = importlib.import_module("glmjax.convert.__main__")  # defines the command's flags
  calls = []

  def recorded(name):
    def call(*a, **kw):
      calls.append((name, a, kw))
      if error is not None:
        raise error
    return call

  monkeypatch.setattr(convert, "import_checkpoint", recorded("import"))
  monkeypatch.setattr(convert, "export_workdir", recorded("export"))
  monkeypatch.setattr(logs, "setup_console", lambda index: None)  # leave pytest's logging be
  was_parsed = absl_flags.FLAGS.is_parsed()
  try:
    command.main(absl_flags.FLAGS(["convert", *args]))
  except (app.UsageError, SystemExit) as raised:
    return calls, raised
  finally:
    absl_flags.FLAGS.unparse_flags()  # back to the defaults, for the next command line
    if was_parsed:  # as the test found them (tokamax reads its flags once they are parsed)
      absl_flags.FLAGS.mark_as_parsed()
  return calls, None


def test_the_convert_command_hands_the_import_the_tokenizer_heads_and_pickle_flags(monkeypatch):
  calls, raised = _convert_command(monkeypatch, "import", "--from=ckpt", "--out=run",
                                   "--tokenizer=vocab.txt", "--num_heads=4", "--trust_pickle")
  assert raised is None
  assert calls == [("import", ("ckpt", "run"),
                    dict(tokenizer="vocab.txt", num_heads=4, allow_pickle=True))]
  # Without them: the one in the checkpoint, heads from its config, and no pickle (it runs code).
  calls, _ = _convert_command(monkeypatch, "import", "--from=ckpt", "--out=run")
  assert calls == [("import", ("ckpt", "run"), dict(tokenizer="", num_heads=0,
                                                     allow_pickle=False))]


@pytest.mark.parametrize("args", [["export", "--workdir=run"], ["export", "--out=hf"],
                                  ["import", "--from=ckpt"], ["import", "--out=run"],
                                  ["import", "extra", "--from=ckpt", "--out=run"], [],
                                  ["exprt", "--workdir=run", "--out=hf"]])
def test_the_convert_command_refuses_a_command_line_missing_a_folder_or_with_extra_words(
    monkeypatch, caplog, args):
  calls, raised = _convert_command(monkeypatch, *args)
  assert isinstance(raised, SystemExit) and raised.code == 1 and calls == []
  [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
  if args[:1] == ["import"] and "extra" not in args:
    assert line == "import needs --from=CHECKPOINT --out=WORKDIR."
  elif args[:1] == ["export"]:
    assert line == "export needs --workdir=WORKDIR --out=FOLDER."
  elif "extra" in args:
    assert "'import' takes flags only, not 'extra'" in line
  else:  # the words that are not a command are named
    words = " ".join(arg for arg in args if not arg.startswith("--"))
    assert (f"{words!r} is not a command" if words else "no command given") in line


def test_the_convert_command_reports_an_unusable_checkpoint_in_one_line(monkeypatch, caplog):
  caplog.set_level(logging.INFO)
  torn = checkpoint_lib.UnusableCheckpointError("run: the checkpoint at step 5 is torn.")
  calls, raised = _convert_command(monkeypatch, "export", "--workdir=run", "--out=hf",
                                   error=torn)
  assert calls == [("export", ("run", "hf"), {})]
  assert isinstance(raised, SystemExit) and raised.code == 1  # not a traceback
  assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
      "run: the checkpoint at step 5 is torn."]


def test_a_fine_tuned_classifier_imports_its_glm_network_and_leaves_its_head_out(weights,
                                                                                 tmp_path):
  # GLMForSequenceClassification.state_dict(): the network under glm., its head unprefixed.
  head = {"dense.weight": torch.randn(H, H), "dense.bias": torch.randn(H),
          "out_proj.weight": torch.randn(1, H), "out_proj.bias": torch.randn(1)}
  og.save_hf(str(tmp_path), {**{"glm." + key: value for key, value in weights.items()}, **head},
             og.hf_config(V, H, L, HEADS, MSL), prefix=False, fmt="safetensors")
  model_config, params = convert.load_pretrained(str(tmp_path))
  np.testing.assert_allclose(_our_logits(model_config, params), _original_logits(weights, "erf"),
                             atol=1e-3, rtol=0)


@pytest.mark.parametrize("layout, name", [("hf", "model.safetensors"),
                                          ("megatron", "mp_rank_00_model_states.pt")])
def test_an_import_from_a_weights_file_reads_the_whole_checkpoint_of_its_folder(
    weights, tmp_path, layout, name):
  if layout == "hf":
    og.save_hf(str(tmp_path), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
               fmt="safetensors")
  else:  # the file of rank 0 stands for both parts of a model-parallel checkpoint
    og.save_megatron(str(tmp_path), weights, parts=2)
  model_config, params = convert.load_pretrained(str(tmp_path / name), num_heads=HEADS)
  np.testing.assert_allclose(_our_logits(model_config, params),
                             _original_logits(weights, "erf" if layout == "hf" else "tanh"),
                             atol=1e-3, rtol=0)


@pytest.mark.parametrize("shards", [1, 2])
def test_a_folder_with_both_safetensors_and_bin_weights_is_read_from_the_safetensors(
    weights, tmp_path, monkeypatch, shards):
  # Hub folders often carry both formats: the safetensors ones need no torch and no pickle.
  for fmt in ("safetensors", "bin"):
    og.save_hf(str(tmp_path), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
               fmt=fmt, shards=shards)
  monkeypatch.setattr(original, "_torch", lambda: None)
  checkpoint = original.read(str(tmp_path))
  assert checkpoint.file_format == "safetensors"
  assert sorted(checkpoint.tensors) == sorted(weights)
  for key, value in weights.items():
    np.testing.assert_array_equal(checkpoint.tensors[key], value.numpy(), err_msg=key)
