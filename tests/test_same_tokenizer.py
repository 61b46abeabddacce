"""Parameters are only ever read under the tokenizer they were trained with: a resume and
`checkpoint.init_from` compare the tokenizer each checkpoint records with the config's."""
import importlib
import os

import pytest

from glmjax import train
from glmjax import workdir as workdir_lib
from glmjax.data import tokenizers

# A two-layer :local model on short rows: two steps and one checkpoint per run.
SMALL = {"model.hidden_size": 64, "model.num_layers": 2, "model.max_position": 64,
         "data.seq_len": 64}
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _config(tmp_path, steps: int, vocab: str | None = None):
  """The :local run; with `vocab` ("letters" or "reversed"), a WordPiece tokenizer of that
  vocabulary written to tmp_path/vocab.txt instead of the byte tokenizer."""
  config = importlib.import_module("configs.base").get_config("local")
  for field, value in SMALL.items():
    section, name = field.split(".")
    config[section][name] = value
  config.train.update(steps=steps, eval_every=0, log_every=1)
  config.checkpoint.every = 2
  if vocab:
    letters = LETTERS if vocab == "letters" else LETTERS[::-1]
    words = ["[UNK]", *letters, *(f"##{c}" for c in letters)]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    config.data.update(tokenizer="wordpiece", tokenizer_path=str(tmp_path / "vocab.txt"),
                       tokenizer_vocab="")
  return config


def _steps(workdir) -> list[int]:
  folder = workdir / "checkpoints"
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if folder.is_dir() else []


def test_init_from_a_run_trained_with_another_tokenizer_is_refused_naming_both(tmp_path):
  first, second = tmp_path / "first", tmp_path / "second"
  train.train_and_evaluate(_config(tmp_path, steps=2), str(first))  # the byte tokenizer
  config = _config(tmp_path, steps=2, vocab="letters")
  config.checkpoint.init_from = str(first)
  config.train.allow_config_change = True  # allows config changes, never another tokenizer
  with pytest.raises(workdir_lib.ConfigChangedError) as refused:
    train.train_and_evaluate(config, str(second))
  message = str(refused.value)
  assert "\n" not in message
  assert f"checkpoint.init_from={str(first)!r} (its step 2)" in message
  assert "tokenizer byte" in message and "load wordpiece:vocab.txt" in message
  assert "fingerprint" in message and "leave checkpoint.init_from empty" in message
  assert _steps(second) == []  # nothing trained on the misread parameters
  assert _steps(first) == [2]  # the run read from keeps its checkpoint


def test_a_resume_after_the_tokenizer_file_changed_is_refused_and_keeps_the_checkpoint(
    tmp_path):
  workdir = tmp_path / "run"
  train.train_and_evaluate(_config(tmp_path, steps=2, vocab="letters"), str(workdir))
  # The same path, retrained: same size, other ids for the same text.
  config = _config(tmp_path, steps=4, vocab="reversed")
  config.train.allow_config_change = True  # allows config changes, never another tokenizer
  with pytest.raises(workdir_lib.ConfigChangedError,
                     match=r"The checkpoint at step 2 in .* was trained with the tokenizer "
                           r"wordpiece:vocab.txt .*differ in fingerprint\)\. Point the data"
                     ) as refused:
    train.train_and_evaluate(config, str(workdir))
  assert "\n" not in str(refused.value)  # one line
  assert _steps(workdir) == [2]
  # With the file it was trained on, the same run resumes.
  result = train.train_and_evaluate(_config(tmp_path, steps=4, vocab="letters"), str(workdir))
  assert result["step"] == 4 and _steps(workdir)[-1] == 4


def test_checkpoints_from_before_the_tokenizer_record_pass_and_added_special_roles_do_not_count():
  byte = tokenizers.tokenizer_info(tokenizers.ByteTokenizer())
  workdir_lib.check_tokenizer(None, byte, what="old", fix="")  # nothing recorded: unchecked
  older = {**byte, "specials": dict(list(byte["specials"].items())[:-1])}  # one role fewer
  assert tokenizers.tokenizer_differences(older, byte) == []
  workdir_lib.check_tokenizer(older, byte, what="old", fix="")
  other = {**byte, "vocab_size": byte["vocab_size"] + 1}
  assert tokenizers.tokenizer_differences(other, byte) == ["vocab_size"]
  with pytest.raises(workdir_lib.ConfigChangedError, match=r"differ in vocab_size\)\. Do X"):
    workdir_lib.check_tokenizer(other, byte, what="A checkpoint", fix="Do X")
