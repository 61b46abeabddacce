"""Batches built and put on the devices ahead of the step that needs them, on a background thread.

The training thread then only dispatches the compiled step: while the devices run step k, the
host builds the rows of step k+1 (numpy) and transfers them, so the chips never wait for the
pipeline unless building a batch takes longer than a step. Batch k is still the pure function of
k that it was (`build(k)`), so resuming, determinism and multi-host feeding do not change.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable

_POLL_S = 0.1  # how often a blocked producer checks that it was closed
# Batches built ahead of the step that takes them: 2 is double-buffered. With the one being
# built and the one of the step dispatched behind the running step (train waits on a step's
# metrics one step late), up to DEPTH + 2 batches sit on the devices beside the running step's
# own (aot counts them).
DEPTH = 2


class Prefetcher:
  """`get(k)` returns `build(k)` for k = start, start + 1, ... in order; at most `depth` batches
  are built ahead (2: double-buffered). An error in `build(k)` is raised by `get(k)`; a later
  `get` raises at once (nothing is built after a failure, so waiting would never end)."""

  def __init__(self, build: Callable[[int], Any], start: int, stop: int, depth: int = DEPTH):
    if depth < 1:
      raise ValueError(f"prefetch depth must be at least 1, got {depth}")
    self._build, self._next, self._stop = build, start, stop
    self._failed: tuple[int, BaseException] | None = None
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._closed = threading.Event()
    self._thread = threading.Thread(target=self._produce, args=(start, stop),
                                    name="batch-prefetch", daemon=True)
    self._thread.start()

  def _produce(self, start: int, stop: int) -> None:
    for step in range(start, stop):
      try:
        item = (step, self._build(step), None)
      except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
        item = (step, None, error)
      while not self._closed.is_set():
        try:
          self._queue.put(item, timeout=_POLL_S)
          break
        except queue.Full:
          continue
      if item[2] is not None or self._closed.is_set():
        return

  def get(self, step: int) -> Any:
    if self._failed is not None:
      failed_step, error = self._failed
      raise RuntimeError(f"batch {step} was not built: building batch {failed_step} failed "
                         f"({type(error).__name__}: {error})") from error
    if step != self._next:
      raise ValueError(f"batches are prefetched in order: expected step {self._next}, "
                       f"asked for {step}")
    if step >= self._stop:
      raise ValueError(f"batches are prefetched up to step {self._stop - 1}, asked for {step}")
    built_step, batch, error = self._queue.get()
    self._next = built_step + 1
    if error is not None:
      self._failed = (built_step, error)
      raise error
    return batch

  def close(self) -> None:
    """Stops the thread; batches built ahead are dropped (they are rebuilt from k if needed)."""
    self._closed.set()
    while self._thread.is_alive():
      try:
        self._queue.get_nowait()
      except queue.Empty:
        pass
      self._thread.join(timeout=_POLL_S)

  def __enter__(self) -> "Prefetcher":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
