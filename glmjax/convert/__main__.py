"""python -m glmjax.convert import|export: see glmjax/convert/__init__.py and the README."""
from __future__ import annotations

from absl import app, flags

from glmjax import checkpoint as checkpoint_lib
from glmjax import cli, convert, logs
from glmjax.convert import mapping

_FROM = flags.DEFINE_string("from", "", "import: an original GLM checkpoint (a Hugging Face "
                            "folder or a Megatron folder / mp_rank_00_model_states.pt).")
_OUT = flags.DEFINE_string("out", "", "import: the glmjax workdir to write; export: the folder "
                           "for the Hugging Face files.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "import: the tokenizer's file or folder "
                                 "(vocab.txt, vocab.json + merges.txt, a .model, tokenizer.json)"
                                 "; default: the one in --from, if any.")
_WORKDIR = flags.DEFINE_string("workdir", "", "export: the glmjax workdir to export.")
_NUM_HEADS = flags.DEFINE_integer("num_heads", 0, "import: attention heads, for a Megatron file "
                                  "that does not record them (default: hidden_size / 64).")
_TRUST_PICKLE = flags.DEFINE_boolean("trust_pickle", False, "import: read .pt/.bin files with "
                                     "pickle (runs code stored in the file; only for your own).")
# Failures written for the user: their message is the line, exit status 1. A ValueError or
# OSError is one line too, its traceback kept in a file the line names (bugs raise those types).
_USER_ERRORS = (ModuleNotFoundError, mapping.CheckpointMismatchError,
                checkpoint_lib.UnusableCheckpointError)


# Each command and the flags it needs.
_USAGE = {"import": "--from=CHECKPOINT --out=WORKDIR", "export": "--workdir=WORKDIR --out=FOLDER"}
COMMANDS = tuple(_USAGE)


def main(argv):
  logs.setup_console(0)
  # A mistyped command line is one line naming the word, not the flags' help.
  if len(argv) != 2 or argv[1] not in COMMANDS:
    given = ("no command given" if len(argv) == 1 else
             f"{argv[1]!r} takes flags only, not {' '.join(argv[2:])!r}" if argv[1] in COMMANDS
             else f"{' '.join(argv[1:])!r} is not a command")
    logs.fail(app.UsageError(f"python -m glmjax.convert: {given}; use " + " or ".join(
        f"'{name} {usage}'" for name, usage in _USAGE.items()) + "."))
  needed = (_FROM.value, _OUT.value) if argv[1] == "import" else (_WORKDIR.value, _OUT.value)
  if not all(needed):
    logs.fail(app.UsageError(f"{argv[1]} needs {_USAGE[argv[1]]}."))
  try:
    if argv[1] == "import":
      convert.import_checkpoint(_FROM.value, _OUT.value, tokenizer=_TOKENIZER.value,
                                num_heads=_NUM_HEADS.value, allow_pickle=_TRUST_PICKLE.value)
    else:
      convert.export_workdir(_WORKDIR.value, _OUT.value)
  except _USER_ERRORS as error:
    logs.fail(error)


if __name__ == "__main__":
  cli.run(main, user_errors=(ValueError, OSError))
