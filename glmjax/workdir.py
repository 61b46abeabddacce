"""What a run keeps in its workdir besides checkpoints: its config history, and the checks that
keep a resumed run the same run (and another run's parameters on the same tokenizer).

config.json is the config of the newest start; an earlier, different one is kept beside it as
config.until-step-N.json. A resume whose config changes what the run computes is refused
unless allowed (`train.allow_config_change`).
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from typing import IO

from etils import epath

from glmjax import config as config_lib
from glmjax import paths
from glmjax.data import tokenizers

CONFIG_FILE = "config.json"  # the config of the workdir's newest start (generate, evaluate read it)
LOCK_FILE = "train.lock"     # held by the train process writing the workdir; says who it is

log = logging.getLogger(__name__)


class ConfigChangedError(ValueError):
  """The run would resume with a config that changes what it computes."""


class WorkdirInUseError(ValueError):
  """Another train process is writing the workdir."""


def lock(workdir: str, process_index: int) -> IO | None:
  """Holds the workdir's LOCK_FILE for as long as the returned file stays open (None: no lock).

  Two runs in one workdir would both save the same steps and write every metric twice; the
  second is refused instead. The lock is the kernel's (flock), so it ends with the process
  however the process ends (kill -9, a lost VM): a stale file never blocks a resume. Process 0
  alone takes it (the hosts of one job may share the folder); a bucket (gs://) has no locks and
  is not checked."""
  if paths.is_remote(workdir) or process_index != 0:
    return None
  handle = open(os.path.join(workdir, LOCK_FILE), "a+", encoding="utf-8")
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.seek(0)
    holder = handle.read().strip() or "a process that has not said which yet"
    handle.close()
    raise WorkdirInUseError(f"--workdir={workdir} is in use by another train ({holder}): wait "
                            "for it to end, or give another --workdir.") from None
  except OSError as error:  # a filesystem without locks (some network mounts): run unchecked
    log.warning("Could not lock %s (%s); make sure no other train writes this workdir.",
                workdir, error.strerror or error)
    return handle
  handle.seek(0)
  handle.truncate()
  handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
               f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
  handle.flush()
  return handle


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


def corpus_record(split) -> dict:
  """What a checkpoint records of the corpus it was trained on: the documents and tokens of the
  whole source that `split` (either one, a DocumentSubset) was drawn from, which the start-up
  tokenizing or the prepared shards give."""
  lengths = split.base.doc_lengths
  return {"documents": int(len(lengths)), "tokens": int(lengths.sum())}


def corpus_change(recorded: dict | None, current: dict, label: str, trained: str) -> str | None:
  """'LABEL now holds N documents, T tokens; TRAINED on M documents, U tokens', or None when
  `recorded` (corpus_record saved with a checkpoint; None in older ones) is `current`."""
  if not recorded or recorded == current:
    return None
  return (f"{label} now holds {current['documents']:,} documents, {current['tokens']:,} tokens; "
          f"{trained} on {recorded['documents']:,} documents, {recorded['tokens']:,} tokens")


def check_corpus(recorded: dict | None, current: dict, *, step: int, workdir: str,
                 label: str, allow: bool) -> None:
  """Refuses a resume on a corpus edited in place (same data.files, other text): rows are drawn
  by document index, so every step's rows and the held-out split would change, and text the
  run trained on could be scored as held-out. Checkpoints older than the record pass."""
  change = corpus_change(recorded, current, label,
                         f"the checkpoint at step {step} in {workdir} was trained")
  if change is None:
    return
  if allow:
    log.warning("Resuming with a changed corpus (allowed): %s.", change)
    return
  raise ConfigChangedError(
      f"{change}: every step's rows and the held-out split would differ. Put the corpus back "
      "as it was (or the tokenizer library, if it now splits the same text otherwise), train "
      "in a new --workdir (checkpoint.init_from can start it from this one), or set "
      "--config.train.allow_config_change=true to go on with the new text.")


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
