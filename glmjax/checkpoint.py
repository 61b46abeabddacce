"""Orbax checkpoints: asynchronous saves, resume from the newest complete one, checked layout.

Each checkpoint holds the train state and JSON metadata (the resolved config and the parameter
layout). Restoring reads straight into the shardings of the current mesh, so a run saved on one
mesh shape resumes on another. A checkpoint that fails to restore (cut off mid-write, files
missing) is skipped with a warning and the next older one is tried; it is replaced only when the
resumed run saves that step again. A checkpoint whose parameter or optimizer-state layout differs
from the current run's is an error, never skipped.
"""
from __future__ import annotations

import errno
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

log = logging.getLogger(__name__)

STATE_ITEM = "state"
METADATA_ITEM = "metadata"


class IncompatibleCheckpointError(ValueError):
  pass


class UnusableCheckpointError(RuntimeError):
  """Checkpoints are there but none may be used: one cannot be read (permissions, I/O, storage
  errors), or all are damaged. Skipping on would restart the run and let the keep policy
  delete good checkpoints, so the run stops and nothing is touched."""


# Words of an error (or of its causes) that mean "could not read", not "the data is bad":
# POSIX errors, and the status codes TensorStore and cloud storage clients put in messages.
_UNREADABLE_WORDS = ("permission denied", "permission_denied", "access denied", "forbidden",
                     "input/output error", "unavailable", "deadline_exceeded", "unauthenticated")


def _unreadable_reason(error: BaseException | None) -> str | None:
  """The line of `error` or of its causes that says it could not be read; None if none does."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EIO):
      return f"{type(error).__name__}: {error}"
    for line in str(error).splitlines():
      if any(word in line.lower() for word in _UNREADABLE_WORDS):
        return line.strip()[:300]
    error = error.__cause__ or error.__context__
  return None


def parameter_layout(tree: Any) -> dict[str, list]:
  """{'path/to/leaf': [shape, dtype]} for every leaf (of the parameters, or the whole state)."""
  layout = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    layout[jax.tree_util.keystr(path, simple=True, separator="/")] = [
        list(leaf.shape), str(leaf.dtype)]
  return layout


def layout_differences(saved: dict, current: dict, limit: int = 8) -> list[str]:
  problems = []
  for name in sorted(set(saved) | set(current)):
    if name not in current:
      problems.append(f"{name}: in the checkpoint, not in the model")
    elif name not in saved:
      problems.append(f"{name}: in the model, not in the checkpoint")
    elif list(saved[name]) != list(current[name]):
      problems.append(f"{name}: checkpoint {saved[name]} vs model {current[name]}")
  return problems[:limit] + ([f"... {len(problems) - limit} more"] if len(problems) > limit else [])


class _LoopDecidesPreemption(ocp.CheckpointManager):
  """Orbax asks jax's preemption sync point itself, also from its finalize thread with an older
  step, which can move the agreed stop step. Only the training loop may ask; Orbax gets the
  loop's answer."""

  preempted_step: int | None = None

  def reached_preemption(self, step: int) -> bool:
    return step == self.preempted_step


class Checkpointer:
  """A CheckpointManager under `directory` that keeps the last `keep` checkpoints."""

  def __init__(self, directory: str, *, every: int, keep: int, async_save: bool = True):
    self.directory = location(directory)
    self.every = int(every)
    self._damaged: set[int] = set()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=int(keep), save_interval_steps=1, create=True,
        enable_async_checkpointing=bool(async_save), cleanup_tmp_directories=True)
    self.manager = _LoopDecidesPreemption(self.directory, options=options,
                                          item_names=(STATE_ITEM, METADATA_ITEM))

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def should_save(self, step: int) -> bool:
    return self.every > 0 and step % self.every == 0

  def save(self, step: int, state: Any, metadata: dict, *, force: bool = False,
           preempted: bool = False) -> bool:
    if not (force or preempted or self.should_save(step)):
      return False
    # Surfaces an error from the previous asynchronous save here rather than never.
    self.manager.wait_until_finished()
    if step in self._damaged:
      log.warning("Replacing the damaged checkpoint %d in %s", step, self.directory)
      self.manager.delete(step)
      self._damaged.discard(step)
    elif step in self.manager.all_steps():
      return False
    if preempted:
      self.manager.preempted_step = step
    return self.manager.save(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardSave(state),
        METADATA_ITEM: ocp.args.JsonSave(metadata)}), force=True)

  def read_metadata(self, step: int) -> dict:
    restored = self.manager.restore(step, args=ocp.args.Composite(**{
        METADATA_ITEM: ocp.args.JsonRestore()}))
    return restored[METADATA_ITEM]

  def restore_latest(self, abstract_state: Any, current_layout: dict) -> tuple[Any, int] | None:
    """(state, step) from the newest checkpoint that restores cleanly; None if there is none.

    A layout mismatch is an error (wrong config for this workdir), not a reason to fall back.
    """
    state_layout = parameter_layout(abstract_state)
    for step in reversed(self.steps()):
      try:
        metadata = self.read_metadata(step)
      except Exception as error:  # noqa: BLE001 - sorted into unreadable (stop) and damaged
        self._unreadable_stops(step, error)
        self._skip(step, f"metadata unreadable ({_short(error)})")
        continue
      for key, layout, what in (("param_layout", current_layout, "this model"),
                                ("state_layout", state_layout, "this optimizer (optim.*)")):
        problems = layout_differences(metadata.get(key, layout), layout)
        if problems:
          raise IncompatibleCheckpointError(
              f"The checkpoint at step {step} in {self.directory} does not fit {what}:\n  "
              + "\n  ".join(problems)
              + "\nUse the config it was saved with (metadata 'config' in the checkpoint), or "
              "a new --workdir.")
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardRestore(abstract_state)}))
      except Exception as error:  # noqa: BLE001 - sorted into unreadable (stop) and damaged
        self._unreadable_stops(step, error)
        self._skip(step, _short(error))
        continue
      return restored[STATE_ITEM], step
    if self.steps():  # every one damaged: a silent restart would let the keep policy delete them
      raise UnusableCheckpointError(
          f"Every checkpoint in {self.directory} (steps {self.steps()}) is damaged; see the "
          "warnings above. Nothing was changed and the run did not start over from step 0; "
          "move them aside or use a new --workdir to start over.")
    return None

  def _unreadable_stops(self, step: int, error: Exception) -> None:
    reason = _unreadable_reason(error)
    if reason is not None:
      raise UnusableCheckpointError(
          f"The checkpoint at step {step} in {self.directory} cannot be read: {reason}. "
          "Nothing was changed. Fix the access (permissions, storage) and run again; to start "
          "over instead, use a new --workdir.") from None

  def _skip(self, step: int, reason: str) -> None:
    log.warning("Skipping damaged checkpoint %d in %s: %s", step, self.directory, reason)
    self._damaged.add(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def location(path: str) -> str:
  """A local path made absolute; a URL (gs://bucket/run) kept as it is, for Orbax to open."""
  return path if "://" in path else os.path.abspath(path)


def checkpoints_directory(source: str) -> str:
  """A run's workdir or its checkpoints/ folder -> the folder holding the step directories."""
  directory = os.path.join(source, "checkpoints")
  directory = directory if epath.Path(directory).is_dir() else source
  if not epath.Path(directory).is_dir():
    raise FileNotFoundError(f"checkpoint.init_from={source!r}: no such directory; give the "
                            "workdir of the run to start from.")
  return directory


def restore_params(source: str, abstract_params: Any, current_layout: dict) -> tuple[Any, int]:
  """Parameters only, from the newest checkpoint of another run (a workdir or its checkpoints/).

  For continued pretraining with a new optimizer, schedule or sequence length (as GLM-10B's
  second stage continued from the first). Read straight into `abstract_params`' shardings.
  """
  directory = checkpoints_directory(source)
  manager = ocp.CheckpointManager(
      location(directory), item_names=(STATE_ITEM, METADATA_ITEM),
      options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  try:
    steps = sorted(manager.all_steps())
    if not steps:
      raise FileNotFoundError(f"checkpoint.init_from={source!r}: no checkpoint in {directory}.")
    step = steps[-1]
    saved = manager.restore(step, args=ocp.args.Composite(**{
        METADATA_ITEM: ocp.args.JsonRestore()}))[METADATA_ITEM]
    problems = layout_differences(saved.get("param_layout", {}), current_layout)
    if problems:
      raise IncompatibleCheckpointError(
          f"checkpoint.init_from: the parameters at step {step} in {directory} do not fit this "
          "model:\n  " + "\n  ".join(problems))
    item = {"params": abstract_params}
    restored = manager.restore(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
            partial_restore=True)}))
    return restored[STATE_ITEM]["params"], step
  finally:
    manager.close()


def _short(error: Exception) -> str:
  """One line: the error's type and first line (a cause in the middle of a long message, such
  as 'Permission denied', is what decides between stopping and skipping, not this text)."""
  lines = str(error).strip().splitlines()
  text = f"{type(error).__name__}: {lines[0] if lines else ''}"
  return text if len(text) < 300 else text[:300] + "..."
