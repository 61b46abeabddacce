"""Attention kernels: `python -m glmjax.bench --what=attention --config=configs/large.py`.

For every implementation of model_config.KERNELS that passes the start-up check on this
platform (those `auto` tries first, then the others; a TPU kernel off TPU, which would run in
the Pallas interpreter, is listed as skipped), times forward and forward+backward under the GLM
mask (Part A 70-95% of each row, as blank infilling gives) at the config's heads, head dim,
sequence length and a small batch, in the compute dtype. Prints one JSON line with a record per
implementation (or the reason it was skipped).
With --attention_autotune, tokamax's GPU kernel is also autotuned at that shape
(`tokamax.autotune`, an exhaustive search over its block configurations) and timed again with
the configurations it chose: `tokamax_autotuned`, with the search's seconds and its result as
tokamax serialises it (train runs the kernel's default configuration).
"""
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from glmjax import attention_choice, error_text
from glmjax.model import attention
from glmjax.model import mask as mask_lib
from glmjax.model import model_config

DEFAULT_STEPS = 10
BATCH = 4


def kernels(platform: str) -> list[str]:
  """The kernels timed after xla: what 'auto' tries on `platform`, in its order, then every other
  kernel model_config.KERNELS has, so that one 'auto' does not try is timed too."""
  reference = model_config.REFERENCE
  tried = [name for name in attention_choice.auto_order(platform) if name != reference]
  return tried + [name for name in attention.IMPLEMENTATIONS if name not in (*tried, reference)]


def _time(fn, *args, steps: int) -> float:
  jax.block_until_ready(fn(*args))  # compile and warm up
  start = time.perf_counter()
  for _ in range(steps):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def _forward_backward(run):
  """vjp runs the forward and the backward: one fwd+bwd training pass."""
  return lambda q, k, v, sep, cotangent: jax.vjp(
      lambda q, k, v: run(q, k, v, sep), q, k, v)[1](cotangent)


def _timings(run, args, flops_forward: float, steps: int) -> dict:
  """Forward and forward+backward milliseconds of `run` (jitted afresh: traced now, so under
  whatever autotuning context is active) and the fwd+bwd TFLOP/s."""
  forward_s = _time(jax.jit(run), *args[:4], steps=steps)
  total_s = _time(jax.jit(_forward_backward(run)), *args, steps=steps)
  return {"forward_ms": 1e3 * forward_s, "forward_backward_ms": 1e3 * total_s,
          "tflops_forward_backward": 3.5 * flops_forward / total_s / 1e12}


def _autotuned(timings, run, args) -> dict:
  """`timings()` again under the configurations tokamax's autotuner picks for the forward and
  backward at this shape; or the reason it could not run."""
  try:
    import tokamax  # pylint: disable=import-outside-toplevel
    start = time.perf_counter()
    result = tokamax.autotune(_forward_backward(run), *args, progress_bar=False)
    search_s = time.perf_counter() - start
    with result:
      record = timings()
    configs = _serialized(result)
  except Exception as error:  # noqa: BLE001 - an experiment: its failure is a figure too
    return {"skipped": f"autotune failed: {error_text.typed_line(error)}"}
  return {**record, "autotune_s": search_s, "configs": configs}


def _serialized(result) -> str:
  """The autotuning result as tokamax writes it, without failed trials where it can leave them
  out (tokamax 0.0.13; 0.0.12's dumps has no such argument)."""
  try:
    return result.dumps(prune_errors=True)
  except TypeError:
    return result.dumps()


def main(config, argv):
  del argv
  steps = flags.FLAGS.steps or DEFAULT_STEPS
  platform = jax.default_backend()
  dtype = jnp.dtype(config.model.dtype)
  heads = config.model.num_heads
  head_dim = config.model.hidden_size // heads
  seq_len = config.data.seq_len
  rng = np.random.default_rng(0)
  sep = jnp.asarray(rng.integers(int(0.7 * seq_len), int(0.95 * seq_len), BATCH), jnp.int32)
  shape = (BATCH, seq_len, heads, head_dim)
  q, k, v, cotangent = (jnp.asarray(rng.standard_normal(shape), dtype) for _ in range(4))
  # Pairs the mask leaves visible, counted as in the train-step FLOPs (4 flops per pair-dim).
  visible = float(jnp.sum(mask_lib.key_ends(sep, seq_len)))
  flops_forward = 4.0 * visible * heads * head_dim
  records = {}
  # xla first: the reference every kernel is checked and timed against.
  for name in [model_config.REFERENCE, *kernels(platform)]:
    if model_config.KERNELS[name].tpu and platform != "tpu":
      records[name] = {"skipped": "a TPU kernel: here it would run in the Pallas interpreter"}
      continue
    # A dtype or length the kernel never takes is said as such, not as the check's error.
    reason = (attention_choice.passed_over(name, seq_len, dtype)
              or attention_choice.check_attention(name, dtype=dtype, seq_len=seq_len,
                                                  head_dim=head_dim)
              if name != model_config.REFERENCE else None)
    if reason is not None:
      records[name] = {"skipped": reason}
      continue
    run = lambda q, k, v, sep, name=name: attention.glm_attention(q, k, v, sep,
                                                                  implementation=name)
    timings = lambda: _timings(run, (q, k, v, sep, cotangent), flops_forward, steps)
    records[name] = timings()
    if name == "tokamax" and flags.FLAGS.attention_autotune:
      records["tokamax_autotuned"] = _autotuned(timings, run, (q, k, v, sep, cotangent))
  print(json.dumps({"what": "attention", "device_kind": jax.devices()[0].device_kind,
                    "dtype": str(dtype), "batch": BATCH, "seq_len": seq_len, "heads": heads,
                    "head_dim": head_dim, "implementations": records}))
