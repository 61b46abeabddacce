"""An import stores the tokenizer it is given (or the one in a Hugging Face folder) with the
workdir; without one, generate, evaluate and train refuse in one line naming the flag."""
import dataclasses
import json
import logging
import os
import shutil
from unittest import mock

import pytest

import convert_sources as sources
import original_glm as og
from convert_sources import H, HEADS, L, MSL, V
from glmjax import config as config_lib
from glmjax import convert, paths, pretrained
from glmjax.data import tokenizers


@pytest.fixture(scope="module")
def weights():
  return sources.random_weights()


@pytest.fixture(scope="module")
def untokenized(tmp_path_factory):
  """(Megatron source folder, its workdir imported without --tokenizer, the import's log). A
  vocabulary of 384 rows: the byte tokenizer's 262 ids fit, so only the refusal stops it."""
  folder = tmp_path_factory.mktemp("untokenized")
  og.save_megatron(str(folder / "megatron"), og.random_state_dict(384, H, L, HEADS, MSL, seed=2))
  records, logger = [], logging.getLogger("glmjax.convert")
  handler = logging.Handler()
  handler.emit = lambda record: records.append(record.getMessage())
  level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    convert.import_checkpoint(str(folder / "megatron"), str(folder / "run"), num_heads=HEADS)
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
  return str(folder / "megatron"), str(folder / "run"), "\n".join(records)


@pytest.mark.parametrize("kind, specials", [("wordpiece", (101, 103, 30522, 30523)),
                                             ("bpe", (50259, 50260, 50257, 50258))])
def test_import_stores_the_tokenizer_with_the_workdir_and_it_moves_with_it(weights, tmp_path,
                                                                           kind, specials,
                                                                           monkeypatch):
  # pylint: disable-next=import-outside-toplevel
  from test_released_tokenizers import write_bert_vocab, write_gpt2_files
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  (write_bert_vocab if kind == "wordpiece" else write_gpt2_files)(str(tmp_path / "downloaded"))
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"),
                            tokenizer=str(tmp_path / "downloaded"))
  assert (tmp_path / "run" / "tokenizer" / tokenizers.FOLDER_FILES[kind]).is_file()
  # The workdir needs neither the folder it was imported from nor the downloaded tokenizer
  # files (bpe: vocab.json and its merges.txt) any more.
  shutil.rmtree(tmp_path / "downloaded")
  os.rename(tmp_path / "run", tmp_path / "moved")
  loaded = pretrained.load(str(tmp_path / "moved"))
  tokenizer = pretrained.load_tokenizer(loaded)
  assert (tokenizer.specials.cls, tokenizer.specials.mask, tokenizer.specials.sop,
          tokenizer.specials.eop) == specials
  assert loaded.config.data.tokenizer == kind
  # Recorded with the parameters, as a run's checkpoints record theirs: checkpoint.init_from
  # under another tokenizer is refused.
  assert sources.saved_tokenizer(tmp_path / "moved") == tokenizers.tokenizer_info(tokenizer)
  # Nor is a model exported with a tokenizer other than its own (a file trained again).
  retrained = dataclasses.replace(loaded, tokenizer={**loaded.tokenizer, "fingerprint": "0"})
  monkeypatch.setattr(pretrained, "load", lambda *args, **kwargs: retrained)
  with pytest.raises(ValueError, match="was trained with the tokenizer .*differ in fingerprint"):
    convert.export_workdir(str(tmp_path / "moved"), str(tmp_path / "exported"))


def test_an_import_without_a_tokenizer_is_refused_by_generate_and_evaluate_naming_the_flag(
    untokenized, tmp_path):
  from glmjax import evaluate  # pylint: disable=import-outside-toplevel
  source, workdir, log_text = untokenized
  assert "No tokenizer stored: generate and evaluate will refuse" in log_text
  assert pretrained.read_config(workdir).data.tokenizer_path == pretrained.NO_TOKENIZER
  loaded = pretrained.load(workdir)  # the parameters need no tokenizer
  with pytest.raises(config_lib.ConfigError) as refused:
    pretrained.load_tokenizer(loaded)
  message = str(refused.value)
  assert f"python -m glmjax.convert import --from={source} " in message
  assert "--tokenizer=PATH" in message and "\n" not in message
  with pytest.raises(evaluate.EvaluateError, match="--tokenizer=PATH"), mock.patch.object(
      pretrained, "load", mock.Mock(side_effect=AssertionError("loaded first"))):
    evaluate.evaluate(workdir, batches=1)  # refused before the parameters load
  generated = sources.run_command("glmjax.generate", f"--workdir={workdir}", "--text=the [MASK] of",
                           temp=tmp_path)
  lines = [line for line in generated.stderr.splitlines() if line.strip()]
  assert generated.returncode == 1 and "Traceback" not in generated.stderr, generated.stderr
  assert "imported without its tokenizer" in lines[-1] and "--tokenizer=PATH" in lines[-1]
  assert not generated.stdout.strip()  # no text was filled in
  convert.export_workdir(workdir, str(tmp_path / "out"))  # nor does export need one
  assert (tmp_path / "out" / "model.safetensors").is_file()


def test_an_import_made_before_the_placeholder_existed_is_refused_too(untokenized, tmp_path):
  _, workdir, _ = untokenized
  old = tmp_path / "old"
  old.mkdir()
  saved = json.loads(open(os.path.join(workdir, "config.json"), encoding="utf-8").read())
  saved["data"]["tokenizer_path"] = ""  # what the import wrote before: glmjax's byte default
  (old / "config.json").write_text(json.dumps(saved))
  (old / "source.json").write_text(open(os.path.join(workdir, "source.json")).read())
  data = pretrained.tokenizer_config(pretrained.read_config(str(old)), str(old))
  with pytest.raises(config_lib.ConfigError, match="--tokenizer=PATH"):
    pretrained.require_tokenizer(data, str(old))
  os.remove(old / "source.json")  # a run trained from scratch on bytes is not refused
  data = pretrained.tokenizer_config(pretrained.read_config(str(old)), str(old))
  pretrained.require_tokenizer(data, str(old))


def test_training_from_an_import_without_a_tokenizer_is_refused_unless_the_command_line_names_one(
    untokenized, tmp_path):
  from glmjax import train  # pylint: disable=import-outside-toplevel
  _, workdir, log_text = untokenized
  assert "--config.data.tokenizer=... --config.data.tokenizer_path=..." in log_text
  config = sources.continue_config(workdir)
  config_lib.validate(config)  # what aot checks: the config compiles without a tokenizer
  trained = sources.run_command("glmjax.train", f"--config={workdir}/config.py",
                         f"--workdir={tmp_path / 'refused'}", "--config.data.source=builtin",
                         temp=tmp_path)
  lines = [line for line in trained.stderr.splitlines() if line.strip()]
  assert trained.returncode == 1 and "Traceback" not in trained.stderr, trained.stderr
  assert "data.tokenizer_path: this config comes from a checkpoint imported without its tokenizer" \
      in lines[-1]
  assert "--config.data.tokenizer=KIND --config.data.tokenizer_path=PATH" in lines[-1]
  # Named on the command line, the tokenizer wins, even glmjax's byte one.
  config.data.update(source="builtin", builtin_docs=50, max_span_length=5, tokenizer="byte",
                     tokenizer_path="")
  config.train.eval_every = 0
  inputs = train._inputs(config)  # pylint: disable=protected-access
  assert inputs.model_config.vocab_size == 384


@pytest.mark.parametrize("given", ["hf", "hf/model.safetensors", "model.safetensors"])
def test_the_tokenizer_in_a_hugging_face_folder_is_stored_without_naming_it(weights, tmp_path,
                                                                           given, monkeypatch):
  # --from may name the folder or its weights file (in the current folder, too): the same
  # import either way.
  from test_released_tokenizers import write_bert_vocab  # pylint: disable=import-outside-toplevel
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  write_bert_vocab(str(tmp_path / "hf"))  # the hub folders hold their tokenizer's files
  source = str(tmp_path / given)
  if given == "model.safetensors":
    monkeypatch.chdir(tmp_path / "hf")
    source = given
  convert.import_checkpoint(source, str(tmp_path / "run"))
  assert (tmp_path / "run" / "tokenizer" / "vocab.txt").is_file()
  config = pretrained.read_config(str(tmp_path / "run"))
  assert (config.data.tokenizer, config.data.tokenizer_vocab) == ("wordpiece", "bert")
  assert config.data.tokenizer_path != pretrained.NO_TOKENIZER
  assert sources.saved_tokenizer(tmp_path / "run")["name"].startswith("wordpiece")
  # The float32 source sets the stored parameters, not the compute dtype training continues in.
  assert config.model.dtype == config_lib.model_defaults().dtype == "bfloat16"
  assert pretrained.load(str(tmp_path / "run")).step == 0


def test_an_import_given_a_tokenizer_path_that_holds_none_is_refused_before_it_writes_anything(
    weights, tmp_path):
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  (tmp_path / "empty").mkdir()  # a mistyped --tokenizer: checked before a long checkpoint read
  with pytest.raises(ValueError, match="holds no tokenizer glmjax reads"):
    convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"),
                              tokenizer=str(tmp_path / "empty"))
  assert not (tmp_path / "run").exists()  # nothing half-written to clear before the retry


def test_an_imported_workdir_in_a_bucket_reads_the_tokenizer_stored_in_it_not_the_current_folder_s(
    weights, tmp_path, monkeypatch):
  # pylint: disable-next=import-outside-toplevel
  from test_released_tokenizers import write_bert_vocab
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(V, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  write_bert_vocab(str(tmp_path / "downloaded"))
  workdir = str(tmp_path / "bucket" / "run")
  convert.import_checkpoint(str(tmp_path / "hf"), workdir, tokenizer=str(tmp_path / "downloaded"))
  config = pretrained.read_config(workdir)
  want = tokenizers.tokenizer_info(pretrained.workdir_tokenizer(config, workdir))
  monkeypatch.setattr(paths, "is_remote", lambda path: path == workdir)  # the copy in a bucket
  # The command runs elsewhere, from a folder that has a tokenizer/ of its own.
  elsewhere = tmp_path / "elsewhere"
  os.makedirs(elsewhere / "tokenizer")
  (elsewhere / "tokenizer" / "vocab.txt").write_text("[PAD]\n[UNK]\n")
  monkeypatch.chdir(elsewhere)
  data = pretrained.tokenizer_config(config, workdir)
  assert os.path.isabs(data.tokenizer_path) and not data.tokenizer_path.startswith(workdir)
  assert tokenizers.tokenizer_info(pretrained.workdir_tokenizer(config, workdir)) == want
  # A tokenizer file at the workdir's top level comes alone, not with the run's other files.
  with open(os.path.join(workdir, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write((elsewhere / "tokenizer" / "vocab.txt").read_text())
  config.data.tokenizer_path = "vocab.txt"
  top_level = pretrained.tokenizer_config(config, workdir).tokenizer_path
  assert os.listdir(os.path.dirname(top_level)) == ["vocab.txt"]


@pytest.mark.parametrize("rows, warned", [
    (200, "has ids up to 30526, past the checkpoint's 200 vocabulary rows"),
    (50304, "pads to 30592 ids, not the checkpoint's 50304 vocabulary rows"),
    (30592, None)])
def test_an_import_warns_of_a_tokenizer_whose_ids_are_not_the_checkpoint_s_rows(
    tmp_path, caplog, rows, warned):
  """Every released GLM's tokenizer pads to exactly its model's rows; GLM-10B's checkpoint with
  BERT's vocab.txt imported without a word, and generate fed it BERT ids."""
  from test_released_tokenizers import write_bert_vocab  # pylint: disable=import-outside-toplevel
  og.save_hf(str(tmp_path / "hf"), og.random_state_dict(rows, H, L, HEADS, MSL, seed=4),
             og.hf_config(rows, H, L, HEADS, MSL), prefix=False, fmt="safetensors")
  write_bert_vocab(str(tmp_path / "bert"))
  caplog.set_level(logging.WARNING, logger="glmjax.convert")
  convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"),
                            tokenizer=str(tmp_path / "bert"))
  tokenizer_warnings = [r.getMessage() for r in caplog.records if "The tokenizer at" in
                        r.getMessage()]
  assert [warned in message for message in tokenizer_warnings] == ([True] if warned else [])
