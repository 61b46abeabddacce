"""The model config a program is built from: `model.attention='auto'` resolved once, at start-up.

The attention pick is a start-up decision, not part of the pure step: it runs each candidate
kernel (model/attention.py) against xla on this host's devices, in outputs and gradients at the
run's dtype and shapes, logs why a kernel is rejected and, on several hosts, takes process 0's
answer so that every host compiles the same program.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from glmjax import error_text
from glmjax import model as model_lib
from glmjax.model import attention as attention_lib
from glmjax.model.model_config import REFERENCE

log = logging.getLogger(__name__)

# What 'auto' tries on each platform, in order (each checked against REFERENCE at start-up).
AUTO_ORDER = {
    "gpu": ("tokamax", "cudnn", REFERENCE),
    "tpu": ("splash", "splash_dynamic", REFERENCE),
    "cpu": (REFERENCE,),
}


def auto_order(platform: str) -> tuple[str, ...]:
  """AUTO_ORDER's entry for `platform`; the dense kernel alone on a platform it does not name."""
  return AUTO_ORDER.get(platform, (REFERENCE,))


def resolved_model_config(config, platform: str | None = None, *, training: bool = True,
                          device: jax.Device | None = None) -> model_lib.ModelConfig:
  """The model's frozen config for a program compiled for `platform` (default: this host's
  backend), from config.model.

  `attention='auto'` becomes one implementation, here and only here. Compiling for this host,
  the pick is checked against xla on process 0 and broadcast, so every host compiles the same
  program even if a check is flaky on one of them. Compiling for another platform (a TPU
  slice or GPU hosts described on a CPU host), the platform's first choice is taken unchecked,
  for `device`: one of the target's compile-only devices, whose compute capability says what a
  GPU runs. For training with model.attention_dropout > 0, auto means xla: the kernels have no
  attention dropout.
  """
  host_platform = jax.default_backend()
  platform = platform or host_platform
  model_config = ml_collections.ConfigDict(config.model.to_dict())
  needs_dropout = training and config.model.attention_dropout > 0
  if needs_dropout and config.model.attention == "auto":
    log.info(
        "attention=auto -> xla: model.attention_dropout=%s is applied by xla only (set it to 0 "
        "to use the fused kernels).", config.model.attention_dropout)
    model_config.attention = REFERENCE
  elif platform == host_platform and device is None:  # checked at the run's dtype and shapes
    model_config.attention = agreed_attention(
        config.model.attention, dtype=config.model.dtype, seq_len=int(config.data.seq_len),
        head_dim=int(config.model.hidden_size) // int(config.model.num_heads))
  elif config.model.attention == "auto":
    model_config.attention = unvalidated_default(platform, int(config.data.seq_len), device,
                                                 dtype=config.model.dtype)
  model_config.target_platform = platform
  return model_lib.ModelConfig.from_config(model_config)


def agreed_attention(name: str, **resolve_kwargs) -> str:
  """`resolve_attention(name)` decided by process 0 and shared with every process.

  'auto' and an explicit kernel run a check there (`resolve_attention`). If the check raises
  on process 0 (a crash, or an explicit kernel that fails it), every process raises instead of
  waiting for its answer.
  """
  if jax.process_count() == 1 or name == REFERENCE:
    return resolve_attention(name, **resolve_kwargs)
  choices = attention_lib.IMPLEMENTATIONS
  index, error = 0, None
  if jax.process_index() == 0:
    try:
      index = choices.index(resolve_attention(name, **resolve_kwargs))
    except BaseException as raised:  # noqa: BLE001 - re-raised below, after telling the others
      index, error = -1, raised
  index = int(multihost_utils.broadcast_one_to_all(np.int32(index)))
  if error is not None:
    raise error
  if index < 0:
    raise RuntimeError(f"attention={name} failed on process 0 (its log has the error).")
  return choices[index]


def _gpu_is_sm90_or_sm100(device: jax.Device | None = None) -> bool:
  """tokamax's Mosaic kernel runs on compute capability 9.x and 10.x only (it refuses others)."""
  if device is None:
    try:
      device = jax.devices("gpu")[0]
    except RuntimeError:  # no GPU on this host: nothing to read the capability from
      return False
  return 9.0 <= float(getattr(device, "compute_capability", "0")) < 11.0


def _tokamax_usable(device: jax.Device | None = None) -> bool:
  """tokamax is installed and `device` (default: this host's GPU) runs its Mosaic kernel."""
  try:
    import tokamax  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return _gpu_is_sm90_or_sm100(device)


def passed_over(candidate: str, seq_len: int | None, dtype: Any) -> str | None:
  """Why 'auto' passes over `candidate` without trying it (a length or dtype the kernel never
  takes), or None; the same rule for a compile for another platform and a start-up check."""
  multiple = model_lib.model_config.seq_len_multiple(candidate)
  if seq_len is not None and seq_len % multiple:
    return f"it needs a sequence length that is a multiple of {multiple}, not {seq_len}"
  if candidate in model_lib.model_config.SIXTEEN_BIT_ONLY and jnp.dtype(dtype).itemsize != 2:
    return f"it runs 16-bit inputs only, not {jnp.dtype(dtype).name}"
  return None


def unvalidated_default(platform: str | None = None, seq_len: int | None = None,
                        device: jax.Device | None = None, dtype: str = "bfloat16") -> str:
  """What 'auto' means when compiling for another platform (an unattached slice or GPU): the first
  entry of its AUTO_ORDER that can run, unchecked (tokamax needs the package and an sm90 GPU,
  splash a `seq_len` that is a multiple of its block, the GPU kernels a 16-bit `dtype`)."""
  platform = platform or jax.default_backend()
  for candidate in auto_order(platform):
    if passed_over(candidate, seq_len, dtype) is not None:
      continue
    if candidate != "tokamax" or _tokamax_usable(device):
      return candidate
  return REFERENCE


# The start-up check's float32 reference holds [T, T] scores: a longer run is checked at this
# length plus T mod 128, which keeps T's remainder mod 128 (and so mod any power of two up to
# 128): a kernel needing such a multiple is refused or run as at T. The block a kernel picks
# can still differ (splash takes 256-token blocks at T=2304 but 512 at 2048, its check length).
CHECK_MAX_LEN = 2048


def check_length(seq_len: int) -> int:
  """The sequence length `check_attention` runs at for a run of `seq_len` tokens."""
  return seq_len if seq_len <= CHECK_MAX_LEN else CHECK_MAX_LEN + seq_len % 128


def check_attention(implementation: str, *, dtype: Any = jnp.bfloat16, seq_len: int = 256,
                    num_heads: int = 2, head_dim: int = 64,
                    device: jax.Device | None = None) -> str | None:
  """Runs fwd + grads of `implementation` against xla on a small input; None if they agree.

  Give the run's dtype, sequence length (`check_length` of it) and head size: a kernel may
  take one and not another (cuDNN runs no float32, splash needs a multiple of 128). The
  reference runs at full matmul precision; on an accelerator a float32 kernel's own matmuls
  may not (TPU passes, TF32), so it gets the bfloat16 tolerance there. Returns the reason for
  a failure (an exception or the error size) instead of raising.
  """
  dtype = jnp.dtype(dtype)
  device = device or jax.devices()[0]
  exact = dtype == jnp.float32 and device.platform == "cpu"
  tolerance = 1e-4 if exact else 3e-2
  # Empty, ragged (odd, so never on a block boundary) and full Part A.
  sep = jnp.array([0, ((seq_len * 3) // 10) | 1, seq_len], jnp.int32)
  keys = jax.random.split(jax.random.key(0), 4)
  shape = (sep.shape[0], seq_len, num_heads, head_dim)
  q, k, v, cotangent = (jax.random.normal(key, shape, jnp.float32) for key in keys)

  def outputs_and_grads(impl, dtype):
    def run(q, k, v):
      cast = lambda x: x.astype(dtype)
      out, vjp = jax.vjp(lambda q, k, v: attention_lib.glm_attention(
          q, k, v, sep, implementation=impl),
                         cast(q), cast(k), cast(v))
      return (out,) + vjp(cast(cotangent))
    return [x.astype(jnp.float32) for x in jax.jit(run)(q, k, v)]

  with jax.default_device(device):
    try:
      with jax.default_matmul_precision("highest"):
        expected = outputs_and_grads(REFERENCE, jnp.float32)
    except Exception as error:  # noqa: BLE001 - said apart: the kernel was never tried
      return f"the xla reference itself failed at T={seq_len} ({error_text.typed_line(error)})"
    try:
      got = outputs_and_grads(implementation, dtype)
      errors = [float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-6))
                for a, b in zip(got, expected)]
    except Exception as error:  # noqa: BLE001 - any failure means "use the next one"
      return error_text.typed_line(error)
  if not all(math.isfinite(e) and e <= tolerance for e in errors):
    return (f"mismatch against xla (relative errors out/dq/dk/dv "
            f"{', '.join(f'{e:.2g}' for e in errors)} > {tolerance})")
  return None


def resolve_attention(name: str, platform: str | None = None, *,
                      candidates: tuple[str, ...] | None = None, dtype: Any = jnp.bfloat16,
                      seq_len: int = 256, head_dim: int = 64,
                      check_explicit: bool | None = None) -> str:
  """Call once at start-up. 'auto' -> the first implementation for `platform` that passes
  `check_attention` at the run's `dtype`, `seq_len` and `head_dim` (else 'xla'), logging why
  each rejected one failed.

  An explicit kernel is honoured, and checked the same way when `check_explicit` (default: on
  a GPU or TPU, where it runs compiled; on CPU the test suite covers its interpret and XLA
  paths): one that disagrees with xla stops the run with the reason, instead of training on
  wrong gradients.
  """
  platform = platform or jax.default_backend()
  shape = dict(dtype=dtype, seq_len=check_length(seq_len), head_dim=head_dim)
  if name != "auto":
    if name not in attention_lib.IMPLEMENTATIONS:
      raise ValueError(f"attention={name!r}: choose one of auto, "
                       f"{', '.join(attention_lib.IMPLEMENTATIONS)}.")
    if check_explicit is None:
      check_explicit = platform in ("gpu", "tpu")
    if name != REFERENCE and check_explicit:
      reason = check_attention(name, **shape, device=jax.local_devices(backend=platform)[0])
      if reason is not None:
        raise ValueError(f"model.attention={name!r} fails its start-up check on {platform} "
                         f"({reason}): set model.attention=auto (the first kernel that passes) "
                         f"or another of {', '.join(attention_lib.IMPLEMENTATIONS)}.")
      log.info("attention=%s on %s: matches xla in outputs and gradients", name, platform)
    return name
  for candidate in candidates or auto_order(platform):
    if candidate == REFERENCE:
      log.info("attention=auto on %s -> xla", platform)
      return REFERENCE
    skipped = passed_over(candidate, seq_len, dtype)
    if skipped is not None:
      log.info("attention=auto on %s: %s skipped: %s", platform, candidate, skipped)
      continue
    device = jax.local_devices(backend=platform)[0]
    reason = check_attention(candidate, **shape, device=device)
    if reason is None:
      log.info("attention=auto on %s -> %s (matches xla in outputs and gradients)",
               platform, candidate)
      return candidate
    log.warning("attention=auto on %s: %s rejected: %s", platform, candidate, reason)
  log.warning("attention=auto on %s: falling back to xla", platform)
  return REFERENCE
