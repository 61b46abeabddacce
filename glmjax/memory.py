"""Device memory of compiled programs and of the train state, for start-up lines, aot and bench.

A compiled program's peak is its arguments and outputs (a donated buffer counted once) plus its
temporaries; a checkpoint.device_snapshot save keeps one more copy of the state beside the next
step. train warns at start-up when that copy would not fit; aot counts it in the peak.
"""
from __future__ import annotations

import logging

import jax


def memory_analysis(compiled):
  """The compiled program's memory_analysis(), or None where the backend gives none."""
  try:
    return compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - not every backend reports it
    return None


def device_memory_limit() -> int | None:
  """Bytes the first local device may allocate (GPU, TPU), or None where it is not reported."""
  try:
    stats = jax.local_devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - not every backend reports it
    return None
  return stats.get("bytes_limit")


def program_bytes(memory) -> int:
  """What a compiled program (its memory_analysis()) holds at its peak: arguments and outputs,
  donated buffers counted once, and temporaries."""
  return int(memory.argument_size_in_bytes + memory.output_size_in_bytes
             - memory.alias_size_in_bytes + memory.temp_size_in_bytes)


def compiled_bytes(compiled) -> int | None:
  """`program_bytes` of a compiled program, None where the backend gives no analysis."""
  memory = memory_analysis(compiled)
  return None if memory is None else program_bytes(memory)


def memory_summary(compiled) -> str:
  memory = memory_analysis(compiled)
  if memory is None:
    return "memory analysis unavailable on this backend"
  gib = lambda n: f"{n / 2**30:.2f} GiB"
  return (f"per device: arguments {gib(memory.argument_size_in_bytes)}, outputs "
          f"{gib(memory.output_size_in_bytes)}, temporaries {gib(memory.temp_size_in_bytes)}")


def state_bytes_per_device(state) -> int:
  """Bytes of `state` on its first device (a save's copy adds as much with device_snapshot)."""
  return sum(leaf.addressable_shards[0].data.nbytes for leaf in jax.tree.leaves(state))


def device_snapshot_report(memory, copy_bytes: int, limit: int | None) -> tuple[int, str]:
  """(log level, line) for checkpoint.device_snapshot at start-up. The copy lives while the
  next step runs, so it needs room beside that step's peak (`program_bytes` of `memory`, the
  compiled step's memory_analysis, or None; aot counts it the same way); past the device's
  `limit` it is a warning now, not an out-of-memory error at the first save, thousands of
  steps in."""
  gib = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
  line = (f"checkpoint.device_snapshot: each save holds a copy of the state on the devices "
          f"until it is handed to Orbax, {gib(copy_bytes)} per device")
  if memory is None or not limit:
    return logging.INFO, line
  needed = program_bytes(memory) + copy_bytes
  if needed <= limit:
    return logging.INFO, f"{line} ({gib(needed)} of {gib(limit)} with the step)"
  return logging.WARNING, (f"{line}: with the step that is {gib(needed)}, more than the device's "
                           f"{gib(limit)}, so a save may run out of memory; set "
                           "checkpoint.device_snapshot=false (or lower data.batch_size)")
