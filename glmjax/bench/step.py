"""Train-step throughput: `python -m glmjax.bench --what=step --config=configs/large.py`.

Times the jitted, sharded train step of the config on the devices present (one synthetic batch
with GLM-like Part A lengths), and prints one JSON line: step time, tokens/s, TFLOP/s per device
and MFU (metrics.py defines both; the step's model FLOPs are counted on its own batch by
model.step_flops, next to XLA's count of the compiled step), plus compile time and the
attention implementation used.
With a data source in the config it also times the step fed by the real pipeline through the
background prefetcher as train does (`step_time_s_pipeline`, and its ratio to the pre-built
figure). What a checkpoint save costs the steps is `--what=save` (save.py).
"""
import contextlib
import functools
import json
import logging
import time
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import flags

from glmjax import attention_choice, cli
from glmjax import memory as memory_lib
from glmjax import metrics, parallel, prefetch, step as step_lib
from glmjax.data import pipeline as pipeline_lib
from glmjax.data import sources, tokenizers

log = logging.getLogger(__name__)

DEFAULT_STEPS = 10


def synthetic_batch(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0):
  """Part A of 70-95% of the row (as blank infilling gives), the rest Part B with loss."""
  rng = np.random.default_rng(seed)
  sep = rng.integers(int(0.7 * seq_len), int(0.95 * seq_len), size=batch_size).astype(np.int32)
  positions = np.arange(seq_len, dtype=np.int32)[None, :]
  part_b = positions >= sep[:, None]
  tokens = rng.integers(0, vocab_size, size=(batch_size, seq_len)).astype(np.int32)
  return {
      "tokens": tokens,
      "targets": np.roll(tokens, -1, axis=1),
      "loss_mask": part_b.astype(np.float32),
      "position_ids": np.where(part_b, sep[:, None] - 1, positions).astype(np.int32),
      "block_position_ids": np.where(part_b, positions - sep[:, None] + 1, 0).astype(np.int32),
      "sep": sep,
      "objective": np.zeros(batch_size, np.int32),
  }


def main(config, argv):
  del argv
  print(json.dumps(measure(config, flags.FLAGS.steps or DEFAULT_STEPS)))


class Setup(NamedTuple):
  """What `compiled_step` yields."""
  compiled: Any  # the train step, compiled
  state: Any  # a fresh state (the step donates it)
  batch: dict  # one synthetic batch on the devices
  host: Any  # this process's rows of the batch (parallel.host_rows)
  model_config: Any
  compile_s: float
  program: step_lib.Program
  mesh: Any


@contextlib.contextmanager
def compiled_step(config):
  """The config's train step compiled on the devices present, with a fresh state and one
  synthetic batch, inside the mesh's context (a `Setup`). `profile` and `save` share it."""
  mesh = parallel.make_mesh(config.mesh)
  rules = parallel.logical_rules(config.mesh)
  model_config = attention_choice.resolved_model_config(config)
  batch = synthetic_batch(config.data.batch_size, config.data.seq_len, config.model.vocab_size)
  # Building, compiling and timing take minutes for a big config: say so, outside the clocks.
  log.info("Building and compiling the train step (%d rows of %d tokens, attention=%s, "
           "remat=%s)...", config.data.batch_size, config.data.seq_len, model_config.attention,
           config.model.remat)
  with parallel.activate(mesh, rules):
    program = step_lib.build_program(config, mesh, rules, model_config)
    state = step_lib.init_sharded_state(program.init_fn, program.shardings, config.seed)
    host = parallel.host_rows(mesh, config.data.batch_size)  # this process's rows of the batch
    device_batch = parallel.global_batch({k: v[host.rows] for k, v in batch.items()}, host)
    start = time.perf_counter()
    compiled = program.compile_train_step(config, mesh)
    compile_s = time.perf_counter() - start
    log.info("Compiled in %.1f s; timing it (one JSON line follows on stdout)", compile_s)
    yield Setup(compiled, state, device_batch, host, model_config, compile_s, program, mesh)


def measure(config, steps: int, *, with_pipeline: bool = True) -> dict:
  """The step's figures as a dict (what `main` prints); the sweep calls it per setting."""
  with compiled_step(config) as (compiled, state, device_batch, host, model_config, compile_s,
                                 program, _):
    state, out = compiled(state, device_batch)  # warm-up
    jax.block_until_ready(out)
    start = time.perf_counter()
    for _ in range(steps):
      state, out = compiled(state, device_batch)
    jax.block_until_ready(out)
    step_time = (time.perf_counter() - start) / steps
    peak_bytes = peak_device_memory()
    # The step donates the state: the helper hands back the one it ends with.
    pipeline_time = None
    if with_pipeline:
      pipeline_time, state = _fed_by_the_pipeline(config, compiled, state, host, steps)
  result = {
      "what": "step", "device_kind": jax.devices()[0].device_kind, "config": cli.config_name(),
      "num_devices": jax.device_count(), "attention": model_config.attention,
      "batch_size": config.data.batch_size, "seq_len": config.data.seq_len,
      "num_layers": config.model.num_layers, "hidden_size": config.model.hidden_size,
      "remat": config.model.remat, "dtype": config.model.dtype, "compile_s": compile_s,
      "loss": float(out["loss"]),
      **metrics.throughput(
          step_time_s=step_time, tokens_per_step=config.data.batch_size * config.data.seq_len,
          flops_per_step=float(out["model_flops"]), num_devices=jax.device_count(),
          device_kind=jax.devices()[0].device_kind),
      "formula_flops_per_step": float(out["model_flops"]),
      "compiled_flops_per_step": _compiled_flops(compiled),
      "peak_memory_bytes": peak_bytes,
      "compiled_memory_bytes": memory_lib.compiled_bytes(compiled),  # this program's peak
      "logit_positions_per_step": float(out["logit_positions"]),
      "xla_options": program.compiler_options,  # glmjax's, for the target (xla_options.py)
  }
  result.update(step_time_s_pipeline=pipeline_time,
                pipeline_vs_prebuilt=pipeline_time / step_time if pipeline_time else None)
  return result


def peak_device_memory() -> int | None:
  """Peak bytes in use on device 0 since the process started (None where not reported): every
  program this process ran counts, so `sweep` compares `compiled_memory_bytes` instead."""
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def _compiled_flops(compiled) -> float | None:
  """XLA's count for the whole step (all devices). It counts a loop body once: with
  scan_layers one layer of the stack, and one chunk of the Part B loss."""
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 - not every backend reports it
    return None
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  flops = (analysis or {}).get("flops")
  return None if flops is None else float(flops) * jax.device_count()


def _fed_by_the_pipeline(config, compiled, state, host, steps: int):
  """Seconds per step with batches built and transferred by the prefetcher, as train feeds
  them; None without a data source in the config."""
  if not config.data.source:
    return None, state
  tokenizer = tokenizers.load_tokenizer(config.data)
  docs, _ = sources.load_documents(config.data, tokenizer)
  pipeline = pipeline_lib.BatchPipeline(config.data, tokenizer, docs, seed=config.seed)
  build = functools.partial(parallel.pipeline_batch, pipeline, layout=host)
  with prefetch.Prefetcher(build, 0, steps + 1) as batches:
    state, out = compiled(state, batches.get(0))  # the first batch has no step to hide behind
    jax.block_until_ready(out)
    start = time.perf_counter()
    for step in range(1, steps + 1):
      state, out = compiled(state, batches.get(step))
    jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps, state
