"""What a run keeps in its workdir besides checkpoints: its config history, and the checks that
keep a resumed run the same run (and another run's parameters on the same tokenizer).

config.json is the config of the newest start; an earlier, different one is kept beside it as
config.until-step-N.json. A resume whose config changes what the run computes is refused
unless allowed (`train.allow_config_change`).
"""
from __future__ import annotations

import logging
import os

from etils import epath

from glmjax import config as config_lib
from glmjax.data import tokenizers

CONFIG_FILE = "config.json"  # the config of the workdir's newest start (generate, evaluate read it)

log = logging.getLogger(__name__)


class ConfigChangedError(ValueError):
  """The run would resume with a config that changes what it computes."""


def check_resume(saved: dict, current: dict, *, step: int, workdir: str, allow: bool) -> None:
  """`saved`: the config stored with the checkpoint of `step`; `current`: this run's. Called
  before the state is read, so a refusal costs no restore."""
  changes = config_lib.trajectory_changes(saved, current)
  if changes and not allow:
    raise ConfigChangedError(
        f"The checkpoint at step {step} in {workdir} was saved with another config: "
        + "; ".join(changes) + ". Use the config it was saved with (config.json in the "
        "workdir), a new --workdir, or --config.train.allow_config_change=true to resume "
        "with the change.")
  if changes:
    log.warning("Resuming step %d with a changed config (allowed): %s", step, "; ".join(changes))


def check_tokenizer(recorded: dict | None, current: dict, *, what: str, fix: str) -> None:
  """Refuses parameters trained on another tokenizer's ids: their embeddings would be read as
  other text. `recorded`: the tokenizer_info saved with them (None in checkpoints older than
  that record, which pass unchecked); `what` names them and `fix` says what to do."""
  if not recorded:
    return
  differs = tokenizers.tokenizer_differences(recorded, current)
  if differs:
    raise ConfigChangedError(
        f"{what} was trained with the tokenizer {recorded['name']} but the config's data "
        f"tokenizer fields load {current['name']} (they differ in {', '.join(differs)}). {fix}")


def write_config(workdir: str, text: str, start: int) -> None:
  """Writes config.json; a different earlier one is kept as config.until-step-N.json, N being
  the step at which it was replaced."""
  path = epath.Path(workdir) / CONFIG_FILE
  if path.exists() and path.read_text(encoding="utf-8") != text:
    kept, index = epath.Path(workdir) / f"config.until-step-{start}.json", 1
    while kept.exists():
      kept, index = epath.Path(workdir) / f"config.until-step-{start}.{index}.json", index + 1
    path.rename(kept)
  path.write_text(text, encoding="utf-8")


def unwritable(workdir: str, error: OSError) -> str:
  """The line for a workdir this user cannot write (read-only, permissions, not a folder)."""
  where = f" ({error.filename})" if error.filename else ""
  return (f"--workdir={workdir} cannot be written: {error.strerror or error}{where}; give a "
          "workdir this user can write to.")


def compilation_cache_dir(configured: str, workdir: str, env: dict) -> str:
  """Where compiled programs persist, so a restart or a resume skips most compilation: the
  JAX_COMPILATION_CACHE_DIR of the environment, else train.compilation_cache_dir, else the
  workdir's xla_cache/ ('' when 'none' turns it off)."""
  if env.get("JAX_COMPILATION_CACHE_DIR"):
    return env["JAX_COMPILATION_CACHE_DIR"]
  if configured == "none":
    return ""
  return configured or os.path.join(workdir, "xla_cache")
