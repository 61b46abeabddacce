"""The model config a program is built from: `model.attention='auto'` resolved once, at start-up.

The attention pick is a start-up decision, not part of the pure step: it runs the kernels'
checks on this host's devices, logs why a kernel is rejected and, on several hosts, takes
process 0's answer so that every host compiles the same program.
"""
from __future__ import annotations

import logging

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from glmjax import model as model_lib
from glmjax.model import attention as attention_lib


def resolved_model_config(config, platform: str | None = None, *,
                          training: bool = True) -> model_lib.ModelConfig:
  """The model's frozen config for a program compiled for `platform` (default: this host's
  backend), from config.model.

  `attention='auto'` becomes one implementation, here and only here. Compiling for this host,
  the pick is checked against xla on process 0 and broadcast, so every host compiles the same
  program even if a check is flaky on one of them. Compiling for another platform (a TPU
  topology from a CPU host), the platform's first choice is taken unchecked. For training with
  model.attention_dropout > 0, auto means xla: the kernels have no attention dropout.
  """
  host_platform = jax.default_backend()
  platform = platform or host_platform
  model_config = ml_collections.ConfigDict(config.model.to_dict())
  needs_dropout = training and config.model.attention_dropout > 0
  if needs_dropout and config.model.attention == "auto":
    logging.getLogger(__name__).info(
        "attention=auto -> xla: model.attention_dropout=%s is applied by xla only (set it to 0 "
        "to use the fused kernels).", config.model.attention_dropout)
    model_config.attention = model_lib.model_config.WITH_ATTENTION_DROPOUT[0]
  elif platform == host_platform:  # checked at the run's dtype and shapes
    model_config.attention = agreed_attention(
        config.model.attention, dtype=config.model.dtype, seq_len=int(config.data.seq_len),
        head_dim=int(config.model.hidden_size) // int(config.model.num_heads))
  elif config.model.attention == "auto":
    model_config.attention = attention_lib.unvalidated_default(platform, int(config.data.seq_len))
  model_config.target_platform = platform
  return model_lib.ModelConfig.from_config(model_config)


def agreed_attention(name: str, **resolve_kwargs) -> str:
  """`resolve_attention(name)` decided by process 0 and shared with every process.

  'auto' and an explicit kernel run a check there (`resolve_attention`). If the check raises
  on process 0 (a crash, or an explicit kernel that fails it), every process raises instead of
  waiting for its answer.
  """
  if jax.process_count() == 1 or name == "xla":
    return model_lib.resolve_attention(name, **resolve_kwargs)
  choices = attention_lib.IMPLEMENTATIONS
  index, error = 0, None
  if jax.process_index() == 0:
    try:
      index = choices.index(model_lib.resolve_attention(name, **resolve_kwargs))
    except BaseException as raised:  # noqa: BLE001 - re-raised below, after telling the others
      index, error = -1, raised
  index = int(multihost_utils.broadcast_one_to_all(np.int32(index)))
  if error is not None:
    raise error
  if index < 0:
    raise RuntimeError(f"attention={name} failed on process 0 (its log has the error).")
  return choices[index]
