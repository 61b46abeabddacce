"""The device's own ceilings: `python -m glmjax.bench --what=ceiling [--ceiling_n=8192]`.

MFU divides by the datasheet's peak; what a chip really gives is lower. This times a bf16
N-cubed matrix product on random data (random, as zeros run faster on some GPUs) and one
elementwise pass over N*N/32 x 1024 bf16 values (N=8192: 4 GiB read and 4 GiB written), each
the mean of 20 runs after a warm-up, and prints one JSON line: the matmul rate in TFLOP/s and
the copy bandwidth in TB/s, bytes read plus bytes written.
"""
import json
import time

import jax
import jax.numpy as jnp
from absl import flags

RUNS = 20


def main(config, argv):
  del config, argv
  size = flags.FLAGS.ceiling_n
  if size <= 0 or size % 32:
    raise ValueError(f"--ceiling_n={size}: give a positive multiple of 32 (default 8192)")
  print(json.dumps(measure(size)))


def measure(size: int) -> dict:
  a, b = (jax.random.normal(jax.random.key(i), (size, size), jnp.bfloat16) for i in (0, 1))
  matmul_s = timed(jax.jit(lambda a, b: a @ b), a, b)
  x = jax.random.normal(jax.random.key(2), (size * size // 32, 1024), jnp.bfloat16)
  copy_s = timed(jax.jit(lambda x: x + 1), x)
  return {"what": "ceiling", "device_kind": jax.devices()[0].device_kind, "n": size,
          "bf16_matmul_tflops": 2 * size ** 3 / matmul_s / 1e12,
          "copy_tb_per_s": 2 * x.size * x.dtype.itemsize / copy_s / 1e12}


def timed(fn, *args) -> float:
  """Mean seconds of fn(*args) over RUNS runs, after one that compiles it."""
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(RUNS):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / RUNS
