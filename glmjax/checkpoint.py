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
import logging
import os
import time
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from etils import epath

from glmjax import checksums, host_copy, paths
from glmjax import restore_agreement as agreement, storage_errors

log = logging.getLogger(__name__)

STATE_ITEM = "state"
METADATA_ITEM = "metadata"
TREE_FILE = "_METADATA"  # Orbax's record of an item's tree structure, in the item's folder


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


def parameter_layout(tree: Any) -> dict[str, list]:
  """{'path/to/leaf': [shape, dtype]} for every leaf (of the parameters, or the whole state)."""
  layout = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    layout[jax.tree_util.keystr(path, simple=True, separator="/")] = [
        list(leaf.shape), str(leaf.dtype)]
  return layout


def layout_differences(saved: dict, current: dict, limit: int = 3) -> list[str]:
  """The first `limit` arrays whose shape or dtype differ (or that only one side has), for an
  error's one line; '... N more' counts the rest."""
  problems = []
  for name in sorted(set(saved) | set(current)):
    if name not in current:
      problems.append(f"{name}: in the checkpoint, not in the model")
    elif name not in saved:
      problems.append(f"{name}: in the model, not in the checkpoint")
    elif list(saved[name]) != list(current[name]):
      problems.append(f"{name}: checkpoint {saved[name]} vs model {current[name]}")
  return problems[:limit] + ([f"... {len(problems) - limit} more"] if len(problems) > limit else [])


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

  def __init__(self, directory: str, *, every: int, keep: int, async_save: bool = True,
               snapshot_parts: int = 1):
    self.directory = location(directory)
    self.every = int(every)
    self.snapshot_parts = int(snapshot_parts)  # a device snapshot goes to the host in parts
    self._damaged: set[int] = set()
    self._saving: int | None = None  # the step of the save in flight
    self._failed = False  # a save failed and was reported
    # (step, host_copy.Transfer of the device copy, the copy's summary, metadata) to write
    self._deferred: tuple | None = None
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
           preempted: bool = False, defer: bool = False) -> bool:
    """Saves `state` as `step` if it is due (or `force`, or `preempted`); True if it is saved
    or, deferred, queued (a queued copy holding NaN or Inf is refused when it is written).

    defer=True (checkpoint.device_snapshot): the state and its checksums are copied on its
    devices, queued behind the running step, and the copy is sent on to host memory (in
    `snapshot_parts` parts, one per later `write_deferred()`); nothing waits. write_deferred(),
    called after each step is dispatched, hands the copy to Orbax once it is on the host. With
    several processes it does so at the call after the last part, arrived or not: every
    process must call Orbax, whose barriers are collectives, at the same point of the loop.
    The copy costs device memory for a second state until it is handed to Orbax (and, where
    it could not be sent, until Orbax has it on the host); a save due sooner sends the rest.
    """
    if not (force or preempted or self.should_save(step)):
      return False
    # Orbax makes a removed folder again and saves on into it. (A bucket has no folders to
    # find before the first write: only a local one is looked at.)
    if not paths.is_remote(self.directory) and not os.path.isdir(self.directory):
      log.warning("The checkpoints folder %s is gone: the workdir was removed or moved while "
                  "this run went on. Step %d and later are saved into a new one there; the "
                  "earlier checkpoints, metrics.jsonl and train.log went with the old one, and "
                  "no train.lock keeps another train out of it.", self.directory, step)
    if preempted and self._deferred is not None:
      # The run stops after this save, within a grace period: writing the queued copy of an
      # earlier step first would double what that period must hold. This step supersedes it.
      log.warning("Dropping the queued copy of step %d: the preemption save of step %d "
                  "replaces it.", self._deferred[0], step)
      self._deferred = None
    self.write_deferred(wait=True)
    self.wait()  # surfaces an error of the previous asynchronous save here rather than never
    if step in self.manager.all_steps() and step not in self._damaged:
      return False
    if defer and not preempted:  # a preempted run exits next: nothing would write the copy
      copy, summary = checksums.copy_with_summary(state)
      # The copy goes, not the state: the next step reuses the state's buffers, and would wait
      # for a transfer still reading them.
      transfer = host_copy.Transfer(copy, self.snapshot_parts)
      if self.snapshot_parts == 1:  # in parts, the save's step carries only the device copy
        transfer.send()
      self._deferred = (step, transfer, summary, metadata)
      return True
    return self._write(step, state, checksums.state_summary(state), metadata, preempted)

  @property
  def snapshot_pending(self) -> bool:
    """A `save(..., defer=True)` copy waits to be written."""
    return self._deferred is not None

  def write_deferred(self, wait: bool = False) -> bool:
    """Sends the next part of the copy a `save(..., defer=True)` made, or, all sent, writes it
    if it is on the host (or `wait`, which sends the rest, or with several processes); True if
    one was written."""
    if self._deferred is None:
      return False
    step, transfer, summary, metadata = self._deferred
    while wait and not transfer.all_sent:
      transfer.send()
    if not transfer.all_sent:
      transfer.send()
      return False
    if not (wait or jax.process_count() > 1 or transfer.arrived()):
      return False
    self._deferred = None
    state = host_copy.landed(transfer.copy, transfer.on_host())
    del transfer  # the copy not handed over is freed before Orbax needs memory
    return self._write(step, state, summary(), metadata, preempted=False)

  def _write(self, step: int, state: Any, summary: dict, metadata: dict,
             preempted: bool) -> bool:
    nonfinite = {name: count for name, (_, count) in summary.items() if count}
    if nonfinite:
      names = ", ".join(f"{name} ({count})" for name, count in list(nonfinite.items())[:3])
      raise NonFiniteStateError(
          f"Not saving step {step} to {self.directory}: the state holds non-finite values "
          f"({names}). Newest good checkpoint: {self._newest_good(step)}.")
    if step in self._damaged:  # kept aside, not deleted: only a verified restore says "damaged"
      self._move_aside([step], "replaced by a new save")
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
      reason = storage_errors.write_cause(error)
      if reason is None:
        raise
      self._failed = True
      # Orbax takes the steps a save will replace off its list as the save starts; they stay on
      # disk until it commits (with keep=1, the one good step): read the list from disk again.
      with contextlib.suppress(OSError):  # an unreadable folder: the message says so anyway
        self.manager.reload()
      raise CheckpointWriteError(
          f"Saving the checkpoint at step {self._saving} to {self.directory} failed: {reason}"
          f"{storage_errors.free_space(self.directory)}. Newest good checkpoint: "
          f"{self._newest_good(self._saving)}. Free space or fix the access, then run the same "
          "command to resume from it.") from error

  def _newest_good(self, besides: int | None) -> str:
    good = [s for s in self.steps() if s != besides and s not in self._damaged]
    return f"step {good[-1]}, intact" if good else "none yet"

  def read_metadata(self, step: int) -> dict:
    restored = self.manager.restore(step, args=ocp.args.Composite(**{
        METADATA_ITEM: ocp.args.JsonRestore()}))
    return restored[METADATA_ITEM]

  def restore_latest(self, abstract_state: Any, current_layout: dict, *,
                     start_over: bool = False,
                     check: Callable[[dict, int], None] | None = None,
                     config_changes: Callable[[dict], list[str]] | None = None
                     ) -> Restored | None:
    """The newest checkpoint that restores and verifies; None if there is none.

    A layout mismatch is an error (wrong config for this workdir), not a reason to fall back,
    naming the config fields that differ (`config_changes(metadata)`, when given); so is
    whatever `check(metadata, step)` raises, before the state is read. A checkpoint is
    skipped only when it is damaged (missing or cut-off files, unreadable data, a checksum that
    differs, non-finite values); any other failure stops the run and touches nothing. When
    every checkpoint is damaged the run stops, unless `start_over`: then they are moved aside
    (kept, never deleted) and None is returned. All processes reach the same verdict.
    """
    state_layout = parameter_layout(abstract_state)
    for step in reversed(self.steps()):
      metadata, failure = agreement.attempt(lambda step=step: self.read_metadata(step), log)
      failure = agreement.settle(failure, f"metadata {step}")
      restored = None
      if failure is None:
        for key, layout, what in (("param_layout", current_layout, "this model"),
                                  ("state_layout", state_layout, "this optimizer (optim.*)")):
          problems = layout_differences(metadata.get(key, layout), layout)
          if problems:
            changes = config_changes(metadata) if config_changes else []
            raise IncompatibleCheckpointError(
                f"The checkpoint at step {step} in {self.directory} does not fit {what}: "
                + "; ".join(problems)
                + (f" (the config differs in {'; '.join(changes)})" if changes else "")
                + ". Use the config it was saved with (metadata 'config' in the checkpoint), or "
                "a new --workdir.")
        if check is not None:
          agreement.refuse_together(lambda step=step: check(metadata, step),
                                    f"The checkpoint at step {step} in {self.directory}")
        restored, failure = agreement.attempt(
            lambda step=step: self._restore_state(step, abstract_state), log)
        failure = agreement.settle(failure, f"state {step}")
      if failure is None:
        problem = checksums.corruption(restored, metadata.get("checksums"))
        failure = ("damaged", problem) if problem else None
      failure = agreement.agree(failure)
      if failure is None:
        return Restored(restored, step, metadata)
      kind, line = failure
      if kind == "damaged":
        self._skip(step, line)
        continue
      raise UnusableCheckpointError(
          f"The checkpoint at step {step} in {self.directory} cannot be read: {line}. Nothing "
          "was changed. Fix the access (permissions, storage) and run again; to start over "
          "instead, use a new --workdir." if kind == "unreadable" else
          f"The checkpoint at step {step} in {self.directory} could not be restored: {line}. "
          "Nothing was changed: the error does not say the checkpoint is damaged (memory, the "
          "network or a bug can fail a restore; the traceback is in the run's log). Fix the "
          f"cause and run again; if the checkpoint is damaged, move {step}/ out of the folder.")
    if self.steps() and start_over:
      self._move_aside(self.steps(), "starting over from step 0")
    elif self.steps():  # all damaged: a silent restart would let the keep policy delete them
      raise UnusableCheckpointError(
          f"Every checkpoint in {self.directory} (steps {self.steps()}) is damaged; see the "
          "warnings above. Nothing was changed and the run did not start over from step 0; "
          "to start over, keeping them aside, set --config.checkpoint.start_over=true.")
    return None

  def _restore_state(self, step: int, abstract_state: Any) -> Any:
    """The state saved at `step`. Orbax reads a state without its tree file as a "pytree
    structure error", which says nothing of damage (a wrong target fails so too): the file is
    looked for first, in a listing of its folder, so that a missing one is damage (skipped) and
    a folder that cannot be listed is unreadable (the run stops), as for every other file."""
    folder = epath.Path(self.directory) / str(step) / STATE_ITEM
    if TREE_FILE not in {path.name for path in folder.iterdir()}:
      raise FileNotFoundError(f"{STATE_ITEM}/{TREE_FILE} missing (Orbax's record of the "
                              "state's tree structure)")
    return self.manager.restore(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardRestore(abstract_state)}))[STATE_ITEM]

  def _move_aside(self, steps: list[int], why: str) -> None:
    """Moves step folders to a sibling `<directory>.damaged-<time>/` (process 0 moves them)."""
    aside = epath.Path(f"{self.directory}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    if jax.process_index() == 0:
      aside.mkdir(parents=True, exist_ok=True)
      for path in epath.Path(self.directory).iterdir():
        if path.name.split(".")[0] in {str(step) for step in steps}:
          path.rename(aside / path.name)
    multihost_utils.sync_global_devices("glmjax checkpoints moved aside")
    self.manager.reload()
    self._damaged.difference_update(steps)
    log.warning("Moved the damaged checkpoint(s) %s of %s to %s (%s).", steps, self.directory,
                aside, why)

  def _skip(self, step: int, reason: str) -> None:
    log.warning("Skipping damaged checkpoint %d in %s: %s", step, self.directory, reason)
    self._damaged.add(step)

  def wait(self) -> None:
    with self._write_errors():
      self.manager.wait_until_finished()

  def close(self) -> None:
    """Waits for the last save; after a failed save (already reported) only releases Orbax.

    A deferred save still waiting means the loop stopped early (an error in the step after
    it): it is written here, as the run's newest good state, by a single process (on several,
    the others may never reach Orbax's barriers); failing, it is logged, not raised, so the
    error that stopped the loop is the one reported."""
    if self._deferred is not None and not self._failed:
      step = self._deferred[0]
      if jax.process_count() > 1:
        self._deferred = None
        log.warning("The checkpoint of step %d was not written: the run stopped before it "
                    "was (several processes cannot agree to write it now).", step)
      else:
        try:
          self.write_deferred(wait=True)
          self.wait()
        except Exception as error:  # noqa: BLE001 - the loop's own error is the one to report
          self._failed = True
          log.error("Could not write the checkpoint of step %d: %s", step, error)
    if not self._failed:
      self.wait()
    try:
      self.manager.close()
    except Exception:  # noqa: BLE001 - the failure was reported; closing must not mask it
      if not self._failed:
        raise


def location(path: str) -> str:
  """A local path made absolute; a URL (gs://bucket/run) kept as it is, for Orbax to open."""
  return path if paths.is_remote(path) else os.path.abspath(path)


def in_workdir(workdir: str) -> str:
  """The folder of a workdir (a run's, an import's) that holds its step directories."""
  return os.path.join(workdir, "checkpoints")
