"""What the commands share: their flags parsed, and a user's mistake reported as one line with
exit status 1 (2 for aot, whose 1 means "does not fit"), never a traceback on the console.

absl parses --config while it parses the flags, before main runs; ml_collections then raises a
mistyped config argument (`configs/base.py:lcoal`) with the config file's traceback in the
message, an override of a field the config lacks (`--config.data.batch_sise`) as a bare
KeyError or AttributeError, and keeps a file it could not load until the config is first
touched. `run` replaces absl's flag parser with one that turns each of those into one line
naming the flag and the fix.
"""
from __future__ import annotations

import difflib
import os
import re
import traceback
from typing import Callable

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from glmjax import config as config_lib
from glmjax import logs


def run(main: Callable[[list[str]], object], *, validate: bool = False,
        user_errors: tuple[type[BaseException], ...] = (), status: int = 1) -> None:
  """`app.run(main)` with a mistyped flag, config argument or config field, or a config file
  that does not load, as one line with exit status `status` (aot, whose 1 means "does not
  fit", passes 2). `validate`: the config passes config.validate before main runs (for
  commands that do not validate it themselves). `user_errors`: what main raises for a user's
  mistake (a missing file, a value that cannot work); it ends as its message, in one line, too
  (logs.fail_keeping_traceback)."""
  def checked_main(argv):
    try:
      if validate and flags.FLAGS.config is not None:  # main says when --config is missing
        config_lib.validate(flags.FLAGS.config)
      return main(argv)
    except config_lib.ConfigError as error:
      logs.fail(error, status=status)
    except app.UsageError as error:  # main refusing its arguments: one line, not all the help
      hint = (" (a value holding spaces needs quotes: --flag='a b c')"
              if str(error).startswith("Unexpected arguments") else "")
      # absl's default exit code is 1; aot's mistakes are 2 (its 1 means "does not fit").
      # A message's own full stop would read ".;" before the pointer to the flags.
      logs.fail(ValueError(f"{str(error).removesuffix('.')}{hint}; --helpshort lists the flags"),
                status=status if error.exitcode == 1 else error.exitcode)
    except user_errors as error:
      logs.fail_keeping_traceback(error, status)
    except KeyboardInterrupt:  # Ctrl-C: the user knows why; 130 as a shell reports SIGINT
      logs.fail(KeyboardInterrupt("Interrupted by Ctrl-C"), status=logs.INTERRUPTED)
  try:
    app.run(checked_main, flags_parser=lambda argv: parse_flags(argv, status))
  except SystemExit as stop:
    # Ctrl-C here or in the command (train's second one): a compile it cut short may still run
    # on jaxlib's threads, and the interpreter's usual exit would crash under it (139).
    if stop.code == logs.INTERRUPTED:
      logs.exit_at_once(logs.INTERRUPTED)
    raise


def config_name() -> str | None:
  """The --config argument the command was given (`configs/large.py`, `configs/base.py:local`),
  so a figure in a log names what it measured; None before flags are parsed or without one."""
  if not flags.FLAGS.is_parsed() or "config" not in flags.FLAGS:
    return None
  return config_flags.get_config_filename(flags.FLAGS["config"])


def parse_flags(argv: list[str], status: int = 1) -> list[str]:
  """absl's flag parser (FLAGS(argv)), with the failures above as one line (exit `status`)."""
  try:
    rest = _parsed(argv)
    # A config file that did not load is an object that raises its OSError when touched.
    getattr(flags.FLAGS["config"].value if "config" in flags.FLAGS else None, "lock", None)
  except flags.Error as error:  # a bad value, an unknown flag (a config's own error inside)
    lines = str(error).splitlines() or [""]
    inner = _innermost(error)
    # A config file's error arrives as its traceback: keep the flag and the error's last line.
    if len(lines) > 1 and inner is not error:
      logs.fail(ValueError(f"{lines[0]} {_last_line(inner)}"), status=status)
    unknown = isinstance(error, flags.UnrecognizedFlagError)
    logs.fail(ValueError(lines[0] + (_suggestion(error, lines[0]) + " (--helpshort lists the "
                                     "flags)" if unknown else "")), status=status)
  except OSError as error:
    logs.fail(ValueError(f"--config: cannot load the config file "
                         f"({_last_line(_innermost(error))}); give the path of one, e.g. "
                         "--config=configs/base.py"), status=status)
  except (KeyError, AttributeError) as error:
    line = None if _raised_in_config_file(error, argv) else _unknown_field(error, argv)
    if line is None:
      raise  # not a --config.* override: a bug in the config file, whose traceback helps
    logs.fail(ValueError(line), status=status)
  return rest


# absl's help flags (app.define_help_flags): --help, -?, --helpshort, --helpfull, --helpxml.
_HELP = re.compile(r"--?help(short|full|xml)?|-\?")


def _parsed(argv: list[str]) -> list[str]:
  """flags.FLAGS(argv), with a help flag's exit status 0: absl ends --help, --helpshort and
  --helpfull with 1 after printing the help, but the user asked for it (the argparse commands,
  fit_table and the tokenizer trainer, give 0 too)."""
  try:
    return flags.FLAGS(argv)
  except SystemExit as stop:
    if stop.code == 1 and any(_HELP.fullmatch(arg) for arg in argv[1:]):
      raise SystemExit(0) from None
    raise


def _suggestion(error: flags.UnrecognizedFlagError, line: str) -> str:
  """". Did you mean: text ?" where absl's own suggestion (edit distance on a prefix) finds
  none: a short name such as --txt for the command's --text (absl's and libraries' own flags
  are not offered), or a config field given bare, --steps for --config.train.steps."""
  if "Did you mean" in line:
    return ""
  if error.flagname.startswith("config.") and "config" in flags.FLAGS:
    # absl defines the override flags from --config's file: without one none exists.
    return (f". It overrides a field of the config file, and no --config=FILE was given: add "
            f"one (e.g. --config=configs/base.py) before --{error.flagname}")
  # absl files a command's own flags under its module, or under its path when run as a program.
  ours = [flag.name for module, defined in flags.FLAGS.flags_by_module_dict().items()
          if "glmjax" in module for flag in defined]
  close = difflib.get_close_matches(error.flagname, ours, n=3, cutoff=0.6)
  if "config" in ours:
    defaults = config_lib.default_config()
    sections = [name for name in defaults if isinstance(defaults[name], ml_collections.ConfigDict)]
    close += [f"config.{section}.{error.flagname}" for section in sections
              if error.flagname in defaults[section]]
    if error.flagname in defaults and error.flagname not in sections:  # --seed
      close.append(f"config.{error.flagname}")
  return f". Did you mean: {', '.join(close)} ?" if close else ""


def _innermost(error: BaseException) -> BaseException:
  while (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
  return error


def _last_line(error: BaseException) -> str:
  return ([line.strip() for line in str(error).splitlines() if line.strip()] or [""])[-1]


def _raised_in_config_file(error: BaseException, argv: list[str]) -> bool:
  """Whether `error` came from the code of the --config file itself (its own bug), not from an
  override that names no field; the two can carry the same key."""
  paths = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
  paths += [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config"]
  files = {os.path.realpath(path.split(":", 1)[0]) for path in paths}
  return any(os.path.realpath(frame.filename) in files
             for frame in traceback.extract_tb(error.__traceback__))


def _unknown_field(error: BaseException, argv: list[str]) -> str | None:
  """'--config.PATH: ...' for the override naming no config field that `error` (ml_collections'
  KeyError, or an AttributeError holding it) is about; None when no override matches."""
  reason = error
  while reason.args and isinstance(reason.args[0], BaseException):
    reason = reason.args[0]
  text = str(reason.args[0]) if reason.args else str(reason)
  lines = text.splitlines() or [""]
  name, hint = lines[0].strip("'\""), " ".join(lines[1:])
  for arg in argv:
    match = re.match(r"--?(?:no)?config\.([^=]+)", arg)
    if match is None:
      continue
    path = match.group(1)
    if name in path.split("."):
      return (f"--config.{path}: the config has no field {name!r}. "
              + (hint or f"Its fields are listed in {config_lib.fields_listed_in(path)}."))
    if path in text:  # e.g. a field below a value that is not a section
      return f"--config.{path}: {' '.join(lines)}"
  return None
