"""The tokenizer trainer's flags are spelled as every glmjax command's (underscores; the first,
hyphenated spellings still work), and its last line gives --config flags that train with the
new model from a shipped config as they are copied. It reads the JSON field --text_field names,
says its own flags in the reader's errors, and cuts a line too long for SentencePiece."""
import json
import os
import re
import shlex
import subprocess
import sys

import ml_collections
import pytest
from absl import flags as absl_flags
from ml_collections import config_flags

from glmjax import config as config_lib
from glmjax.data import builtin_corpus, tokenizer_train
from glmjax.data import tokenizers as tk

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_with(command_line):
  """configs/base.py with `command_line`'s --config flags, as `train` parses them."""
  argv = ["train", f"--config={os.path.join(REPO, 'configs', 'base.py')}",
          *shlex.split(command_line)]
  values = absl_flags.FlagValues()  # the overrides are read from argv, not from sys.argv
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
  values(argv)
  return values.config


def test_the_trainer_s_hint_trains_from_the_shipped_base_config_as_it_is_copied(
    tmp_path, monkeypatch, capsys):
  (tmp_path / "corpus.txt").write_text("\n\n".join(builtin_corpus.documents(0, 20)),
                                       encoding="utf-8")
  monkeypatch.chdir(tmp_path)  # a relative --out: train may run from another folder
  tokenizer_train.main(["train", "--input=corpus.txt", "--vocab_size=500", "--model_type=bpe",
                        "--text_field=text", "--txt_documents=paragraphs", "--max_lines=150",
                        "--out=models/spm.model"])
  hint = capsys.readouterr().out.strip().splitlines()[-1]
  assert hint.startswith("wrote models/spm.model; use --config.data.tokenizer=sentencepiece ")
  config = _config_with(hint.split("; use ", 1)[1])
  assert config.data.tokenizer_path == str(tmp_path / "models" / "spm.model")
  config_lib.validate(config)
  # train's start-up: base.py's 'bert' layout is refused for these pieces, and a model smaller
  # than the tokenizer's ids; the hint sizes the model to the padded vocabulary.
  tokenizer = tk.load_tokenizer(config.data)
  assert tokenizer.ids_used <= config.model.vocab_size == tokenizer.vocab_size


def test_the_trainer_reads_the_json_field_text_field_names_and_says_that_flag_when_missing(
    tmp_path):
  documents = list(builtin_corpus.documents(0, 20))
  tmp_path = tmp_path / "data.files"  # a folder named as train's field: its path stays as it is
  tmp_path.mkdir()
  (tmp_path / "corpus.jsonl").write_text(
      "".join(json.dumps({"body": text}) + "\n" for text in documents), encoding="utf-8")
  out = tmp_path / "spm.model"
  # --text-field: the first spelling of --text_field, kept as the README says.
  tokenizer_train.main(["train", f"--input={tmp_path}/corpus.jsonl", "--vocab_size=500",
                        "--text-field=body", f"--out={out}"])
  tokenizer = tk.load_tokenizer(ml_collections.ConfigDict(dict(
      tokenizer="sentencepiece", tokenizer_path=str(out), tokenizer_vocab="")))
  assert tokenizer.decode(tokenizer.encode(documents[0])) == documents[0]
  assert len(tokenizer.encode(documents[0])) < 0.8 * len(documents[0])  # pieces, not bytes
  # Without the flag the file's lines have no 'text' field: the line says this command's flags,
  # not train's config fields, which the trainer does not take.
  with pytest.raises(ValueError) as refused:
    tokenizer_train.main(["train", f"--input={tmp_path}/corpus.jsonl", "--vocab_size=500",
                          f"--out={tmp_path}/other.model"])
  assert re.match(r"--input: .*/data\.files/corpus\.jsonl .*has no field 'text' "
                  r"\(it has \['body'\]\); "
                  r"set --text_field to the field", str(refused.value)), refused.value
  assert "config" not in str(refused.value) and not (tmp_path / "other.model").exists()


def test_the_trainer_cuts_a_line_sentencepiece_would_skip_into_lines_it_reads(tmp_path):
  long_line = " ".join(f"word{i}" for i in range(2000))  # past SentencePiece's sentence limit
  (tmp_path / "long.txt").write_text(f"short line\n{long_line}\n\n  \nlast", encoding="utf-8")
  lines = list(tokenizer_train.training_lines([str(tmp_path / "long.txt")], "text",
                                              "paragraphs"))
  assert lines[0] == "short line" and lines[-1] == "last"
  assert "".join(lines[1:-1]) == long_line
  assert len(lines) > 3 and all(len(line) <= tokenizer_train._MAX_LINE_CHARS for line in lines)


def test_running_the_trainer_s_module_says_which_command_trains():
  """It has no command of its own: it once exited 0 having done nothing."""
  result = subprocess.run([sys.executable, "-m", "glmjax.data.tokenizer_train", "--input=x"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 1
  assert result.stderr.strip() == ("The tokenizer trainer runs as `python -m glmjax.data."
                                   "tokenizers train --input=GLOB --vocab_size=N --out=FILE`.")
