"""Parameters (and, if asked, the optimizer state) from the newest checkpoint of another run:
what `checkpoint.init_from` starts a run from (continued pretraining with a new schedule or
sequence length), and what `generate` and `evaluate` read from a workdir. Checked before use
as a resume is: the saved layout against the model's, every array against its checksum, the
same verdict on every host.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from glmjax import checksums
from glmjax import restore_agreement as agreement
from glmjax.checkpoint import (METADATA_ITEM, STATE_ITEM, IncompatibleCheckpointError,
                               UnusableCheckpointError, in_workdir, layout_differences, location,
                               parameter_layout)

log = logging.getLogger(__name__)


def checkpoints_directory(source: str, field: str = "checkpoint.init_from") -> str:
  """A run's workdir or its checkpoints/ folder -> the folder holding the step directories;
  `field` is the setting that named `source`, for the error."""
  directory = in_workdir(source)
  directory = directory if epath.Path(directory).is_dir() else source
  if not epath.Path(directory).is_dir():
    raise FileNotFoundError(f"{field}={source!r}: no such directory; give the workdir of the "
                            "run to start from.")
  return directory


def restore_params(source: str, abstract_params: Any, current_layout: dict, *,
                   field: str = "checkpoint.init_from",
                   check: Callable[[dict, int], None] | None = None,
                   changes: Callable[[dict], list[str]] | None = None,
                   fix: str = "", on_host: bool = False) -> tuple[Any, int]:
  """Parameters only, from the newest checkpoint of another run (a workdir or its checkpoints/).
  `check(metadata, step)` may refuse them from what was saved with them, before they are read.
  Parameters that do not fit the model are refused naming the arrays, the config fields that
  `changes(metadata)` finds different, and `fix`.

  For continued pretraining with a new optimizer, schedule or sequence length (as GLM-10B's
  second stage continued from the first). Read straight into `abstract_params`' shardings, or
  with `on_host` into numpy arrays (a command that only reads them: no device copy).
  """
  parts, step = restore_parts(source, {"params": abstract_params}, current_layout, field=field,
                              check=check, changes=changes, fix=fix, on_host=on_host)
  return parts["params"], step


def restore_parts(source: str, abstract: dict[str, Any], current_layout: dict, *,
                  field: str = "checkpoint.init_from",
                  check: Callable[[dict, int], None] | None = None,
                  changes: Callable[[dict], list[str]] | None = None,
                  fix: str = "", on_host: bool = False) -> tuple[dict[str, Any], int]:
  """The parts of a saved TrainState that `abstract` names ("params", and "opt_state" for the
  optimizer state too), checked as restore_params checks the parameters."""
  directory = checkpoints_directory(source, field)
  manager = ocp.CheckpointManager(
      location(directory), item_names=(STATE_ITEM, METADATA_ITEM),
      options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  try:
    steps = sorted(manager.all_steps())
    if not steps:
      raise FileNotFoundError(f"{field}={source!r}: no checkpoint in {directory}.")
    step = steps[-1]

    def read(what: str, restore: Callable[[], Any]) -> Any:
      """`restore()`, or the same error on every host (one host alone must not hang)."""
      value, failure = agreement.attempt(restore, log)
      failure = agreement.agree(agreement.settle(failure, f"{what} {step}"))
      if failure is not None:
        raise UnusableCheckpointError(f"{field}: the {what} at step {step} in {directory} "
                                      f"could not be read: {failure[1]}.")
      return value

    saved = read("metadata", lambda: manager.restore(step, args=ocp.args.Composite(**{
        METADATA_ITEM: ocp.args.JsonRestore()}))[METADATA_ITEM])
    if check is not None:
      agreement.refuse_together(lambda: check(saved, step),
                                f"{field}: the checkpoint at step {step} in {directory}")
    problems = layout_differences(saved.get("param_layout", {}), current_layout)
    if problems:
      differ = changes(saved) if changes else []
      raise IncompatibleCheckpointError(
          f"{field}: the parameters at step {step} in {directory} do not fit this "
          "model: " + "; ".join(problems)
          + (f" (the config differs in {'; '.join(differ)})" if differ else "") + "."
          + (f" {fix}" if fix else ""))
    item = dict(abstract)
    if "opt_state" in item:
      _check_optimizer_state(saved, item["opt_state"], f"{field}: the checkpoint at step {step} "
                             f"in {directory}")
    what = "parameters" if list(item) == ["params"] else "state"
    restored = read(what, lambda: manager.restore(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.PyTreeRestore(
            item=item, restore_args=(
                jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
                if on_host else ocp.checkpoint_utils.construct_restore_args(item)),
            partial_restore=True)})))
    problem = checksums.corruption(restored[STATE_ITEM], saved.get("checksums"))
    if problem:
      raise UnusableCheckpointError(
          f"{field}: the {what} at step {step} in {directory} are {problem}.")
    return {name: restored[STATE_ITEM][name] for name in item}, step
  finally:
    manager.close()


def _check_optimizer_state(saved: dict, abstract_opt_state: Any, where: str) -> None:
  """Refuses, before any read, an optimizer state that is not there (an import or
  `pretrained.save` holds parameters only) or of another layout than this run's optimizer: read
  anyway, the first fails as a damaged checkpoint would, and the second is cast (moments_dtype)
  and then fails its checksums."""
  saved_layout = {name: layout for name, layout in saved.get("state_layout", {}).items()
                  if name.startswith("opt_state/")}
  if not saved_layout:
    raise IncompatibleCheckpointError(
        f"{where} holds parameters only (an import, or pretrained.save), no optimizer state: set "
        "checkpoint.init_optimizer=false to start from its parameters with a new optimizer.")
  problems = layout_differences(saved_layout, parameter_layout({"opt_state": abstract_opt_state}))
  if problems:
    raise IncompatibleCheckpointError(
        f"{where} has an optimizer state that does not fit this run's optimizer: "
        + "; ".join(problems) + ". Make optim.grad_clip and optim.moments_dtype that run's "
        "(its config.json), or set checkpoint.init_optimizer=false to take its parameters alone.")
