"""The tokenizer trainer's flags are spelled as every glmjax command's (underscores; the first,
hyphenated spellings still work), and its last line gives --config flags that train with the
new model from a shipped config as they are copied."""
import os
import shlex

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
