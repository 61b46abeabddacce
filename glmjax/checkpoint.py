"""Orbax checkpoints: asynchronous saves, resume from the newest verified one, checked layout.

Each checkpoint holds the train state and JSON metadata (the resolved config, the parameter
layout and a checksum of every array). Restoring reads straight into the shardings of the
current mesh, so a run saved on one mesh shape resumes on another. Restore sorts failures:
- cut off mid-write or files missing, and corrupted (a checksum differs, or non-finite values):
  skipped with a one-line warning, the next older one is tried; the damaged one is replaced
  only when the resumed run saves that step again;
- unreadable (permissions, I/O, storage errors): the run stops and nothing is touched;
- a layout that differs from the current run's: an error, never skipped.
A state with non-finite values is never saved.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from etils import epath

log = logging.getLogger(__name__)

STATE_ITEM = "state"
METADATA_ITEM = "metadata"


class IncompatibleCheckpointError(ValueError):
  pass


class NonFiniteStateError(RuntimeError):
  """The state to save holds NaN or Inf; saving it would let the keep policy delete good ones."""


class CheckpointWriteError(RuntimeError):
  """A save failed for a reason the user must fix (disk full, quota, read-only, permissions)."""


class UnusableCheckpointError(RuntimeError):
  """Checkpoints are there but none may be used: one cannot be read (permissions, I/O, storage
  errors), or all are damaged. Skipping on would restart the run and let the keep policy
  delete good checkpoints, so the run stops and nothing is touched."""


# Words of an error (or of its causes) that mean "could not read", not "the data is bad":
# POSIX errors, and the status codes TensorStore and cloud storage clients put in messages.
_UNREADABLE_WORDS = ("permission denied", "permission_denied", "access denied", "forbidden",
                     "input/output error", "unavailable", "deadline_exceeded", "unauthenticated")


# Phrase found in an error or its causes -> the cause as the user's line says it, first first.
_UNWRITABLE_WORDS = {"no space left": "no space left on device", "quota": "disk quota exceeded",
                     "read-only file system": "read-only file system",
                     "permission denied": "permission denied",
                     "permission_denied": "permission denied",
                     "resource_exhausted": "storage resource exhausted"}


def _cause_line(error: BaseException | None, errnos, words) -> str | None:
  """The first line of `error` or of its causes that matches `errnos` or `words`."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in errnos:
      return f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
    for line in str(error).splitlines():
      if any(word in line.lower() for word in words):
        return line.strip()[:300]
    error = error.__cause__ or error.__context__
  return None


def _write_cause(error: BaseException) -> str | None:
  """Why a save failed, if it is for the user to fix (disk full, quota, read-only, access)."""
  texts, seen = [], set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.strerror:
      texts.append(error.strerror.lower())
    texts.append(str(error).lower())
    error = error.__cause__ or error.__context__
  return next((cause for phrase, cause in _UNWRITABLE_WORDS.items()
               if any(phrase in text for text in texts)), None)


def _unreadable_reason(error: BaseException | None) -> str | None:
  """The line of `error` or of its causes that says it could not be read; None if none does."""
  return _cause_line(error, (errno.EACCES, errno.EPERM, errno.EIO), _UNREADABLE_WORDS)


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


def _leaf_summary(leaf: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(checksum, non-finite count) of one array, computed where its shards live.

  The checksum hashes every element's bits with its flat index and adds the hashes modulo
  2**32: addition commutes, so the value does not depend on how the array is sharded (a run
  saved on one mesh verifies on another), and any changed element changes it (but for 2**-32).
  """
  if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  if leaf.dtype == jnp.bool_ or leaf.dtype.itemsize == 1:
    bits = leaf.astype(jnp.uint32)
  else:
    unsigned = {2: jnp.uint16, 4: jnp.uint32}[leaf.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(leaf, unsigned).astype(jnp.uint32)
  index = jnp.arange(leaf.size, dtype=jnp.uint32).reshape(leaf.shape)
  mixed = bits * jnp.uint32(0x9E3779B1) + index * jnp.uint32(0x85EBCA77) + jnp.uint32(1)
  mixed = (mixed ^ (mixed >> 15)) * jnp.uint32(0x2C1B3C6D)
  mixed = mixed ^ (mixed >> 12)
  nonfinite = (jnp.sum(~jnp.isfinite(leaf)) if jnp.issubdtype(leaf.dtype, jnp.inexact)
               else jnp.zeros((), jnp.int32))
  return jnp.sum(mixed, dtype=jnp.uint32), nonfinite.astype(jnp.int32)


_summaries = jax.jit(lambda leaves: [_leaf_summary(leaf) for leaf in leaves])


def state_summary(state: Any) -> dict[str, tuple[int, int]]:
  """{'path/to/leaf': (checksum, non-finite count)} for every array of `state`, on device."""
  paths, leaves = zip(*jax.tree_util.tree_leaves_with_path(state)) or ((), ())
  summary = jax.device_get(_summaries(list(leaves)))
  return {jax.tree_util.keystr(path, simple=True, separator="/"): (int(pair[0]), int(pair[1]))
          for path, pair in zip(paths, summary)}


def corruption(restored: Any, checksums: dict | None) -> str | None:
  """Why a restored state is corrupted (non-finite values, a checksum that differs from the one
  saved with it), in one line; None if it is sound. `checksums` None: saved before checksums."""
  problems = []
  for name, (checksum, nonfinite) in state_summary(restored).items():
    if nonfinite:
      problems.append(f"{nonfinite} non-finite values in {name}")
    elif checksums is not None and name in checksums and int(checksums[name]) != checksum:
      problems.append(f"the checksum of {name} differs from the one saved")
  if not problems:
    return None
  more = f" (and {len(problems) - 3} more arrays)" if len(problems) > 3 else ""
  return "corrupted: " + "; ".join(problems[:3]) + more


@dataclasses.dataclass(frozen=True)
class Restored:
  state: Any
  step: int
  metadata: dict  # what was saved with it: config, layouts, checksums


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
    self._saving: int | None = None  # the step of the save in flight
    self._failed = False  # a save failed and was reported
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
    self.wait()  # surfaces an error of the previous asynchronous save here rather than never
    if step in self._damaged:
      log.warning("Replacing the damaged checkpoint %d in %s", step, self.directory)
      self.manager.delete(step)
      self._damaged.discard(step)
    elif step in self.manager.all_steps():
      return False
    summary = state_summary(state)
    nonfinite = {name: count for name, (_, count) in summary.items() if count}
    if nonfinite:
      names = ", ".join(f"{name} ({count})" for name, count in list(nonfinite.items())[:3])
      raise NonFiniteStateError(
          f"Not saving step {step} to {self.directory}: the state holds non-finite values "
          f"({names}); the newest checkpoint there (step {max(self.steps(), default=None)}) "
          "is kept.")
    metadata = {**metadata, "checksums": {name: checksum for name, (checksum, _) in
                                          summary.items()}}
    if preempted:
      self.manager.preempted_step = step
    self._saving = step
    with self._write_errors():
      return self.manager.save(step, args=ocp.args.Composite(**{
          STATE_ITEM: ocp.args.StandardSave(state),
          METADATA_ITEM: ocp.args.JsonSave(metadata)}), force=True)

  @contextlib.contextmanager
  def _write_errors(self):
    """A save that fails for a reason the user must fix ends the run in one line that names the
    step, the cause, the free space and the newest good checkpoint (which is left intact)."""
    try:
      yield
    except Exception as error:  # noqa: BLE001 - sorted: the user's to fix, or re-raised
      reason = _write_cause(error)
      if reason is None:
        raise
      self._failed = True
      good = [s for s in self.steps() if s != self._saving and s not in self._damaged]
      newest = f"step {good[-1]}, intact" if good else "none yet"
      raise CheckpointWriteError(
          f"Saving the checkpoint at step {self._saving} to {self.directory} failed: {reason}"
          f"{_free_space(self.directory)}. Newest good checkpoint: {newest}. Free space or fix "
          "the access, then run the same command to resume from it.") from error

  def read_metadata(self, step: int) -> dict:
    restored = self.manager.restore(step, args=ocp.args.Composite(**{
        METADATA_ITEM: ocp.args.JsonRestore()}))
    return restored[METADATA_ITEM]

  def restore_latest(self, abstract_state: Any, current_layout: dict, *,
                     start_over: bool = False) -> Restored | None:
    """The newest checkpoint that restores and verifies; None if there is none.

    A layout mismatch is an error (wrong config for this workdir), not a reason to fall back.
    When every checkpoint is damaged the run stops, unless `start_over`: then they are moved
    aside (kept, never deleted) and None is returned.
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
        self._skip(step, f"cut off or files missing ({_short(error)})")
        continue
      problem = corruption(restored[STATE_ITEM], metadata.get("checksums"))
      if problem:
        self._skip(step, problem)
        continue
      return Restored(restored[STATE_ITEM], step, metadata)
    if self.steps() and start_over:
      self._move_aside()
    elif self.steps():  # all damaged: a silent restart would let the keep policy delete them
      raise UnusableCheckpointError(
          f"Every checkpoint in {self.directory} (steps {self.steps()}) is damaged; see the "
          "warnings above. Nothing was changed and the run did not start over from step 0; "
          "to start over, keeping them aside, set --config.checkpoint.start_over=true.")
    return None

  def _move_aside(self) -> None:
    """Moves every step folder to a sibling `<directory>.damaged-<time>/` (one process does)."""
    aside = epath.Path(f"{self.directory}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    if jax.process_index() == 0:
      aside.mkdir(parents=True, exist_ok=True)
      for step in self.steps():
        for path in epath.Path(self.directory).iterdir():
          if path.name.split(".")[0] == str(step):
            path.rename(aside / path.name)
    multihost_utils.sync_global_devices("glmjax checkpoints moved aside")
    self.manager.reload()
    self._damaged.clear()
    log.warning("Moved the damaged checkpoints of %s to %s; starting over from step 0.",
                self.directory, aside)

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
    with self._write_errors():
      self.manager.wait_until_finished()

  def close(self) -> None:
    """Waits for the last save; after a failed save (already reported) only releases Orbax."""
    if not self._failed:
      self.wait()
    try:
      self.manager.close()
    except Exception:  # noqa: BLE001 - the failure was reported; closing must not mask it
      if not self._failed:
        raise


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
    problem = corruption(restored[STATE_ITEM], saved.get("checksums"))
    if problem:
      raise UnusableCheckpointError(
          f"checkpoint.init_from: the parameters at step {step} in {directory} are {problem}.")
    return restored[STATE_ITEM]["params"], step
  finally:
    manager.close()


def _free_space(directory: str) -> str:
  """', X GiB free' on the local disk of `directory`; '' for a bucket or an unknown disk."""
  path = directory
  while path and not os.path.isdir(path):
    path = os.path.dirname(path)
  if "://" in directory or not path:
    return ""
  return f" ({shutil.disk_usage(path).free / 2**30:.2f} GiB free there)"


def _short(error: Exception) -> str:
  """One line: the error's type and first line (a cause in the middle of a long message, such
  as 'Permission denied', is what decides between stopping and skipping, not this text)."""
  lines = str(error).strip().splitlines()
  text = f"{type(error).__name__}: {lines[0] if lines else ''}"
  return text if len(text) < 300 else text[:300] + "..."
