"""python -m glmjax.aot --config=configs/large.py --topology=v5p-128   (or --topology=h100-8)

Compiles the real train step for a Cloud TPU slice, or for NVIDIA GPU hosts, on this machine,
without the hardware: the devices come from libtpu's description of the topology (or from jax's
CUDA plugin, gpu_topology.py), the program is the one `train` builds (`step.build_program`, same
shardings, same donation, same XLA options), and the attention kernel is the one the chip would
run (Mosaic on TPU, not the Pallas interpreter; tokamax's Mosaic GPU kernel on sm90 GPUs). It
reports, per chip, the bytes of the
parameters and optimizer state, the temporaries, the total against the chip's HBM, the mesh,
the hosts and the model FLOPs per step; and it plans the input of every host as `train` would,
so that a layout that cannot be fed, or a config that does not fit, fails here and not after
the slice is paid for. Exit status: 0 fits, 1 does not fit, 2 a mistake in the command (a flag,
the config argument, a field, a value that cannot work).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import re
import sys
import time

import jax
import numpy as np
from absl import app, flags
from jax.experimental.compilation_cache import compilation_cache
from ml_collections import config_flags

from glmjax import attention_choice, cli, error_text, logs
from glmjax import config as config_lib
from glmjax import memory as memory_lib
from glmjax import metrics as metrics_lib
from glmjax import model as model_lib
from glmjax import gpu_topology, parallel, prefetch, step as step_lib, topology
from glmjax.data import pipeline as pipeline_lib

log = logging.getLogger("glmjax.aot")

# How a Mosaic kernel shows in the compiled HLO, per platform.
MOSAIC_CALLS = {"tpu": 'custom_call_target="tpu_custom_call"',
                "gpu": 'custom_call_target="mosaic_gpu'}
TARGET_MFU = 0.5  # the step time reported is the one at this model FLOPs utilisation


class DoesNotFit(RuntimeError):
  """The compiled step needs more memory per chip than the chip has."""


class UnfeedableLayout(ValueError):
  """Some batch rows would be built by no host, or would not reach the chips that hold them."""


@dataclasses.dataclass
class Report:
  topology: str
  accelerator_type: str
  platform: str                 # tpu or gpu
  device_kind: str
  chips: int
  hosts: int
  mesh: dict
  attention: str
  mosaic_kernels: int           # Mosaic custom calls in the compiled train step (TPU or GPU)
  state_bytes: int              # parameters + optimizer state, per chip
  temp_bytes: int               # the train step's temporaries, per chip
  snapshot_bytes: int           # the state's copy a save keeps beside the next step, per chip
                                #   (checkpoint.device_snapshot; 0 when off)
  eval_batch_bytes: int         # the held-out batches train keeps on the chips, per chip
  prefetch_bytes: int           # batches train's prefetcher holds ahead of the step, per chip
  total_bytes: int              # peak per chip: train step (+ that copy) or evaluation, plus
                                #   the eval batches and the prefetched batches
  hbm_bytes: int
  model_flops_per_step: float
  step_time_at_target_mfu_s: float
  rows_per_host: int            # rows each host builds per step (the most any host builds)
  hosts_per_row: int            # hosts that build each row (1 unless mesh.tensor spans hosts)
  host_row_runs: int            # contiguous runs of rows on host 0 (1 = one block)
  compile_s: float
  batch_size: int
  seq_len: int
  remat: str
  slices: int = 1               # TPU slices joined over the data-center network (multi-slice)

  @property
  def fits(self) -> bool:
    return self.total_bytes <= self.hbm_bytes


def per_chip_bytes(abstract_tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs."""
  total = 0
  for leaf in jax.tree.leaves(abstract_tree):
    shard = leaf.sharding.shard_shape(leaf.shape)
    total += math.prod(shard) * np.dtype(leaf.dtype).itemsize
  return total


def plan_host_input(mesh, global_batch_size: int) -> dict[int, parallel.HostRows]:
  """process index -> `parallel.host_rows`, as `train` makes them on each host of the slice."""
  processes = sorted({device.process_index for device in mesh.devices.flat})
  return {process: parallel.host_rows(mesh, global_batch_size, process) for process in processes}


def check_host_feeding(compiled, layouts: dict[int, parallel.HostRows]) -> None:
  """Every chip must find the rows the compiled step expects on it among the rows its own host
  builds (the lookup `parallel.global_batch` makes), for every batch key."""
  taken = compiled.input_shardings[0][1]  # (state, batch) -> the batch's shardings
  batch_size = next(iter(layouts.values())).global_batch_size
  for key, sharding in taken.items():
    shape = (batch_size,) if key in step_lib.ROW_KEYS else (batch_size, 1)
    for device, index in sharding.devices_indices_map(shape).items():
      rows = index[0].indices(batch_size)[:2]
      if rows not in layouts[device.process_index].shards:
        raise UnfeedableLayout(
            f"the compiled step expects rows {rows[0]}-{rows[1] - 1} of batch[{key!r}] on chip "
            f"{device.id}, which its host (process {device.process_index}) does not build.")


def _row_runs(rows: np.ndarray) -> int:
  return int(1 + np.count_nonzero(np.diff(rows) != 1)) if len(rows) else 0


_SIZE = r"([\d.]+)([KMGT])i?B?"
# libtpu's ways of saying that a program needs more HBM than the chip has: (needed, limit).
_OUT_OF_MEMORY = (re.compile(r"required for HLO temporaries \(" + _SIZE + r"\) exceeds available "
                             r"HBM \(" + _SIZE + r"\)"),
                  re.compile(r"Used " + _SIZE + r" of " + _SIZE + r" hbm"),
                  re.compile(r"Requires " + _SIZE + r", has " + _SIZE + r" available"))


def _out_of_memory(error: Exception) -> str | None:
  """What the TPU compiler said when the program needs more HBM than a chip has, else None.

  libtpu stops compiling at that point, so the numbers come from its message."""
  text = str(error)
  if memory_lib.out_of_memory(error) is None:  # the one test of "ran out", vmem left out
    return None
  scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
  for pattern in _OUT_OF_MEMORY:
    match = pattern.search(text)
    if match:
      needed, available = (float(match.group(i)) * scale[match.group(i + 1)] for i in (1, 3))
      return (f"needs {needed / 2**30:.2f} GiB per chip, {(needed - available) / 2**30:.2f} GiB "
              f"more than the {available / 2**30:.2f} GiB of HBM a program may use")
  return error_text.first_line(error) if "hbm" in text.lower() else None


def _compile_or_explain(compile_fn, config, mesh, where: str, what: str, **state):
  """compile_fn(config, mesh); running out of HBM is DoesNotFit with memory.fit_advice(**state)."""
  try:
    return compile_fn(config, mesh)
  except Exception as error:  # noqa: BLE001 - only an out-of-memory compile is reported here
    reason = _out_of_memory(error)
    if reason is None:
      raise
    advice = memory_lib.fit_advice(config, **state)
    raise DoesNotFit(f"{where}: the {what} {reason}; {advice}") from None


@contextlib.contextmanager
def _no_persistent_cache():
  """jax's persistent compilation cache off, then back as it was: a compile-only executable
  cannot be loaded back (that needs the TPU client), so an entry would only take disk and
  warn when the next compile of the same program reads it."""
  # jax decides once per process whether the cache is used; reset_cache makes it decide again.
  before = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  compilation_cache.reset_cache()
  try:
    yield
  finally:
    jax.config.update("jax_enable_compilation_cache", before)
    compilation_cache.reset_cache()


def compile_for_slice(config, spec: topology.TpuSlice | gpu_topology.GpuHosts, *,
                      on_compiled=None) -> Report:
  """Compiles config's train step (and eval step, as train does at start-up) for `spec`;
  raises DoesNotFit with the numbers and the knobs to turn. `on_compiled` is given the compiled
  train step before the memory check (bench --what=traffic reads its program)."""
  gpu = spec.platform == "gpu"
  devices = gpu_topology.gpu_devices(spec) if gpu else topology.slice_devices(spec)
  config_lib.validate(config, num_devices=len(devices))
  mesh = parallel.make_mesh(config.mesh, devices)
  config_lib.validate(config, num_devices=len(devices),
                      batch_parallelism=parallel.batch_axis_size(mesh))
  batch_size, seq_len = int(config.data.batch_size), int(config.data.seq_len)
  layouts = plan_host_input(mesh, batch_size)
  model_config = attention_choice.resolved_model_config(config, platform=spec.platform,
                                                        device=devices[0])
  rules = parallel.logical_rules(config.mesh)
  hbm = spec.hbm_bytes
  # tokamax picks its GPU kernel for jax's default device, which must then be the target's.
  on_target = jax.default_device(devices[0]) if gpu else contextlib.nullcontext()
  where = f"{spec.name} ({' '.join(f'{a}={n}' for a, n in mesh.shape.items())})"
  started = time.perf_counter()
  with parallel.activate(mesh, rules), _no_persistent_cache(), on_target:
    program = step_lib.build_program(config, mesh, rules, model_config)
    state_bytes = per_chip_bytes(program.abstract_state)
    sizes = dict(state_bytes=state_bytes, hbm=hbm, platform=spec.platform,
                 batch_parallelism=parallel.batch_axis_size(mesh),
                 slices=parallel.slice_count(devices), data=mesh.shape["data"])
    compiled = _compile_or_explain(program.compile_train_step, config, mesh, where, "train step",
                                   **sizes)
    evaluated = (_compile_or_explain(program.compile_eval_step, config, mesh, where, "eval step",
                                     **sizes) if config.train.eval_every else None)
  compile_s = time.perf_counter() - started
  if on_compiled is not None:
    on_compiled(compiled)
  check_host_feeding(compiled, layouts)
  # Evaluation runs while the optimizer state stays in HBM, and train keeps the eval batches
  # on the devices for the whole run.
  batch_bytes = per_chip_bytes(step_lib.abstract_batch(batch_size, seq_len, mesh))
  resident = int(config.train.eval_batches) * batch_bytes if evaluated is not None else 0
  # Beside the running step's batch: the next step's, already dispatched (train reads metrics
  # one step late), up to DEPTH built batches in the prefetcher's queue and one in transfer.
  ahead = (prefetch.DEPTH + 2) * batch_bytes
  eval_peak = (memory_lib.program_bytes(evaluated.memory_analysis()) + state_bytes
               - per_chip_bytes(program.abstract_state.params)) if evaluated is not None else 0
  memory = compiled.memory_analysis()
  # checkpoint.device_snapshot: each save's copy of the state stays on the chips while the next
  # steps run (train's start-up check, memory.device_snapshot_report, counts it the same way),
  # and through an evaluation that falls before it is handed over. Only periodic saves are
  # deferred: with checkpoint.every=0 no copy is ever made.
  deferred = config.checkpoint.device_snapshot and int(config.checkpoint.every) > 0
  snapshot = state_bytes if deferred else 0
  total = max(memory_lib.program_bytes(memory), eval_peak) + snapshot + resident + ahead
  # A planning figure: the config's average Part B share (a real step counts its own batch).
  flops = model_lib.flops_per_token(
      model_config, seq_len, part_b_fraction=pipeline_lib.expected_part_b_fraction(config.data)
  ) * batch_size * seq_len
  peak = metrics_lib.peak_flops(devices[0].device_kind) or float("nan")
  holders = np.bincount(np.concatenate([layout.rows for layout in layouts.values()]),
                        minlength=batch_size)
  report = Report(
      topology=spec.topology_name, accelerator_type=spec.accelerator_type, platform=spec.platform,
      device_kind=devices[0].device_kind, chips=spec.chips, hosts=spec.hosts,
      slices=spec.slices if spec.platform == "tpu" else 1,
      mesh=dict(mesh.shape), attention=model_config.attention,
      mosaic_kernels=compiled.as_text().count(MOSAIC_CALLS[spec.platform]),
      state_bytes=state_bytes,
      temp_bytes=memory.temp_size_in_bytes, snapshot_bytes=snapshot, eval_batch_bytes=resident,
      prefetch_bytes=ahead,
      total_bytes=total,
      hbm_bytes=hbm,
      model_flops_per_step=flops,
      step_time_at_target_mfu_s=flops / (spec.chips * peak * TARGET_MFU),
      rows_per_host=max(len(layout.rows) for layout in layouts.values()),
      hosts_per_row=int(holders.max()), host_row_runs=_row_runs(layouts[0].rows),
      compile_s=compile_s, batch_size=batch_size, seq_len=seq_len, remat=config.model.remat)
  if not report.fits:
    unit, memory_name = ("GPU", "jax's share of GPU memory") if gpu else ("chip", "HBM")
    raise DoesNotFit(f"{where}: training needs {total / 2**30:.2f} GiB per {unit} at its peak, "
                     f"{(total - hbm) / 2**30:.2f} GiB more than the {hbm / 2**30:.2f} GiB of "
                     f"{memory_name} a program may use; "
                     f"{memory_lib.fit_advice(config, snapshot=snapshot > 0, **sizes)}")
  return report


def _count(number: int, noun: str) -> str:
  return f"{number} {noun}{'s' if number != 1 else ''}"


def describe(report: Report, name: str, attention_setting: str) -> str:
  gib = lambda n: f"{n / 2**30:.2f} GiB"
  unit = "GPU" if report.platform == "gpu" else "chip"
  mesh = " ".join(f"{axis}={size}" for axis, size in report.mesh.items())
  kernels = (f", {report.mosaic_kernels} Mosaic kernel calls in the program"
             if report.attention in model_lib.model_config.MOSAIC else "")
  if attention_setting == "auto":  # train checks the pick on the chip and may fall back
    kernels += (f" (auto's {report.platform.upper()} choice; train checks it on the chip at "
                "start-up)")
  slices = f", {report.slices} such slices" if report.slices > 1 else ""
  layout = ("one block of rows" if report.host_row_runs == 1
            else f"{report.host_row_runs} separate runs of rows")
  builders = ("every row is built by one host" if report.hosts_per_row == 1 else
              f"each row is built by {report.hosts_per_row} hosts (mesh.tensor spans hosts)")
  return "\n".join([
      f"{name}: {report.device_kind}, {_count(report.chips, unit)} on "
      f"{_count(report.hosts, 'host')}, "
      f"{'torus' if report.platform == 'tpu' else 'hosts'} {report.topology}{slices} (compiled "
      f"here in "
      f"{report.compile_s:.0f} s)",
      f"  mesh        {mesh}; batch {report.batch_size} x {report.seq_len}; "
      f"remat {report.remat}; attention {report.attention}{kernels}",
      f"  per {unit:<8}parameters + optimizer {gib(report.state_bytes)} | train-step temporaries "
      f"{gib(report.temp_bytes)} | "
      + (f"a save's copy of the state {gib(report.snapshot_bytes)} | "
         if report.snapshot_bytes else "")
      + f"held-out and prefetched batches {gib(report.eval_batch_bytes + report.prefetch_bytes)} | "
      + f"peak {gib(report.total_bytes)} of {gib(report.hbm_bytes)} "
      + ("HBM" if report.platform == "tpu" else "(jax's share of the GPU's memory)")
      + f": fits ({100 * report.total_bytes / report.hbm_bytes:.0f}%)",
      f"  compute     {report.model_flops_per_step / 1e15:.3f} PFLOP per step (model FLOPs); "
      f"{report.step_time_at_target_mfu_s:.3f} s per step at {TARGET_MFU:.0%} MFU",
      f"  input       a host builds up to {report.rows_per_host} rows a step (host 0: {layout}); "
      f"{builders}, and each chip's rows reach it",
  ])


def define_flags() -> None:
  """Command-line flags, defined only when this module is the program (train has --config too)."""
  config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py).",
                                  lock_config=True)
  flags.DEFINE_string("topology", None, "TPU slice: v4-32, v5p-128, v5litepod-16 / v5e-16, "
                      "v6e-64, or a torus shape such as v5p:4x4x4; or NVIDIA GPUs: h100 (one), "
                      "h100-8 (a host of 8), h200-16 (two hosts), h100:4x8 (hosts x GPUs).")
  flags.DEFINE_bool("json", False, "Print the report as one JSON line.")


def main(argv) -> None:
  # Compile-only devices need no backend here; do not probe for an attached TPU or GPU (nor
  # check CUDA's libraries, which a GPU description does not use).
  jax.config.update("jax_platforms", jax.config.jax_platforms or "cpu")
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}", exitcode=2)
  config, name = flags.FLAGS.config, flags.FLAGS.topology
  if config is None or not name:
    raise app.UsageError("Both --config and --topology are required.", exitcode=2)
  logs.setup_console(0)  # glmjax's lines; libraries' (jax's cache resets) only from WARNING
  # Without a GPU tokamax never finds its tuned block sizes (one long warning per kernel shape)
  # and takes its heuristics, as train does on a GPU that was not tuned.
  logging.getLogger("absl").addFilter(
      lambda record: not record.getMessage().startswith("Autotuning cache miss"))
  try:
    spec = (gpu_topology.parse_gpus(name) if gpu_topology.is_gpu_name(name)
            else topology.parse_slice(name))
    # A config the slice cannot take is one line now, not after a line promising minutes.
    config_lib.validate(config, num_devices=spec.chips)
    unit = "GPU" if spec.platform == "gpu" else "chip"
    print(f"Compiling {config.model.num_layers}-layer GLM for {spec.name} "
          f"({_count(spec.chips, unit)}, {_count(spec.hosts, 'host')}); this takes "
          "minutes on a small machine...",
          file=sys.stderr, flush=True)
    if vocab_warning := config_lib.vocab_size_warning(config.model):
      log.warning(vocab_warning)
    report = compile_for_slice(config, spec)
  except topology.TopologyError as error:  # neither a slice nor a GPU name
    print(f"error: {str(error).rstrip('.')} (or NVIDIA GPUs: h100-8, h200:2x8).", file=sys.stderr)
    raise SystemExit(2) from None
  except (gpu_topology.GpuTopologyError, config_lib.ConfigError, parallel.SliceMeshError,
          UnfeedableLayout) as error:
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2) from None
  except DoesNotFit as error:
    print(f"does not fit: {error}", file=sys.stderr)
    raise SystemExit(1) from None
  print(json.dumps({**dataclasses.asdict(report), "fits": report.fits}) if flags.FLAGS.json
        else describe(report, spec.name, config.model.attention))


if __name__ == "__main__":
  define_flags()
  # Exit status 2 for any mistake in the command, as 1 means "does not fit"; main validates
  # the config itself, for the slice's device count.
  cli.run(main, status=2)
