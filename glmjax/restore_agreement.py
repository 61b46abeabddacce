"""One verdict on a checkpoint restore for all the processes of a multi-host run.

Each process reads its own shards, so a missing chunk or a network error can fail the read on
some hosts only. Orbax's restore ends in a barrier (a device collective, no timeout): a process
whose read failed never reaches it, and the ones that read fine would wait there for ever, or
meet the failed one's next collective under another name. So after every read each process
joins one barrier named by how its read went (`settle`). When some failed, the names differ,
and every process waiting in that collective (ours or Orbax's) gets the mismatch at once: the
ones that had read fine report it as 'peer'. Then `agree` takes the worst verdict of any
process, in which a real failure outranks 'peer', so all skip, stop or go on together. The
barrier names carry the step, so hosts that see different steps stop instead of restoring
different states.

This relies on two facts of jax 0.10-0.11 and Orbax 0.11-0.12, checked by the two-process test
in tests/test_faults.py: jax's sync_global_devices gathers every process's name (so each sees a
mismatch), and Orbax's barriers are such device collectives (its experimental distributed
barrier, EXPERIMENTAL_ORBAX_USE_DISTRIBUTED_BARRIER, is not: with it a failed host would wait).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from glmjax import storage_errors

VERDICTS = (None, "peer", "damaged", "unknown", "unreadable")  # worse later
_MISMATCH = "sync_global_devices name mismatch"  # jax's words when a barrier's names differ
Failure = tuple[str, str] | None  # (verdict, one line) or None


class RefusedOnAnotherHost(RuntimeError):
  """A check that this process passed refused the checkpoint on another one."""


def attempt(read: Callable[[], Any], log) -> tuple[Any, Failure]:
  """(what `read` returns, None), or (None, (verdict, line)) sorting the error it raised."""
  try:
    return read(), None
  except Exception as error:  # noqa: BLE001 - sorted: damaged (skip), unreadable/unknown (stop)
    if any(_MISMATCH in str(each) for each in storage_errors.chain(error)):
      return None, ("peer", "the read failed on another host (see that host's log)")
    log.debug("Restore failed:", exc_info=error)  # the traceback, in the run's log file
    return None, storage_errors.restore_failure(error)


def settle(failure: Failure, what: str) -> Failure:
  """Every process passes one barrier after a read, unless the read already ended in one
  (a 'peer' failure); see the module docstring."""
  if jax.process_count() == 1 or (failure and failure[0] == "peer"):
    return failure
  try:
    multihost_utils.sync_global_devices(f"glmjax {what}: {'failed' if failure else 'read'}")
  except AssertionError as error:  # the names differed: some process failed
    if _MISMATCH not in str(error):
      raise
    return failure or ("peer", "the read failed on another host (see that host's log)")
  return failure


def agree(failure: Failure) -> Failure:
  """The worst verdict of any process holds for all."""
  if jax.process_count() == 1:
    return failure
  mine = VERDICTS.index(failure[0] if failure else None)
  worst = int(np.max(multihost_utils.process_allgather(np.int32(mine))))
  if worst == mine:
    return failure
  return VERDICTS[worst], "it failed on another host (see that host's log)"


def refuse_together(check: Callable[[], None], what: str) -> None:
  """Runs `check`, which raises to refuse `what` (a resume on another corpus, say); when it
  refuses on any process it refuses on all: its own error where it was raised, and
  RefusedOnAnotherHost elsewhere. Hosts read their own data and tokenizer files, so a check
  can fail on one only, and the others would go on into the restore's collectives and wait
  there without a timeout. Every process must call it (after `settle`, all do or none)."""
  refusal = None
  try:
    check()
  except Exception as error:  # noqa: BLE001 - raised again below, once every host knows
    refusal = error
  if jax.process_count() > 1:
    refused = int(np.max(multihost_utils.process_allgather(np.int32(refusal is not None))))
    if refused and refusal is None:
      raise RefusedOnAnotherHost(
          f"{what} was refused on another host (its log says why; a data or tokenizer file "
          "that differs between the hosts?). Nothing was changed.")
  if refusal is not None:
    raise refusal
