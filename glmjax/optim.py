"""AdamW and GLM's schedule: linear warmup, then cosine or linear decay to a final ratio.

Weight decay applies to every weight matrix and embedding table; LayerNorm parameters and all
biases are excluded, as in the original (THUDM/GLM, DeepSpeed AdamW with its no-decay groups).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("cosine", "linear", "constant")
MOMENTS_DTYPES = ("float32", "param")  # AdamW moments: float32 always, or the parameters' dtype

# Leaves without weight decay: LayerNorm `scale` and every bias (`bias`, `qkv_bias`, ...).
# Everything else (kernels, embedding and position tables) decays, as in GLM.
def _decays(leaf_name: str) -> bool:
  return not (leaf_name == "scale" or leaf_name.endswith("bias"))


def warmup_steps(optim_config) -> int:
  """warmup_ratio x decay_steps, rounded (0.29 x 100 is 29 steps, not the float's 28.99...)."""
  return int(round(optim_config.warmup_ratio * int(optim_config.decay_steps)))


def learning_rate_schedule(optim_config) -> optax.Schedule:
  """GLM's AnnealingLR: warmup lr·t/W, then decay to final_ratio·lr at decay_steps, flat after."""
  peak = float(optim_config.learning_rate)
  decay_steps = int(optim_config.decay_steps)
  warmup = warmup_steps(optim_config)
  final_ratio = float(optim_config.final_ratio)
  kind = optim_config.schedule

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = peak * step / max(warmup, 1)
    progress = jnp.clip((step - warmup) / max(decay_steps - warmup, 1), 0.0, 1.0)
    if kind == "cosine":
      decayed = peak * (final_ratio + (1 - final_ratio) * 0.5 * (1 + jnp.cos(jnp.pi * progress)))
    elif kind == "linear":
      decayed = peak * (1 - (1 - final_ratio) * progress)
    elif kind == "constant":
      decayed = jnp.full_like(step, peak)
    else:
      raise ValueError(f"optim.schedule={kind!r}: use one of {SCHEDULES}.")
    return jnp.where(step < warmup, warm, decayed)

  return schedule


def schedule_line(optim_config, last_step: int) -> str:
  """The learning rate's course in one line, and the rate the run's last step applies (the one
  its log line shows: step N's update uses schedule(N - 1)); a shortened run (train.steps
  lowered for a try) keeps the recipe's horizon, decay_steps."""
  schedule = learning_rate_schedule(optim_config)
  decay_steps, warmup = int(optim_config.decay_steps), warmup_steps(optim_config)
  course = (f"constant {float(optim_config.learning_rate):.2e}" if optim_config.schedule ==
            "constant" else f"{optim_config.schedule} to {float(schedule(decay_steps)):.2e} at "
            f"step {decay_steps} (optim.decay_steps)")
  return (f"Learning rate: warmup to {float(optim_config.learning_rate):.2e} over {warmup} "
          f"steps, then {course}; at this run's last step, {last_step}, it is "
          f"{float(schedule(max(last_step - 1, 0))):.2e}")


def weight_decay_mask(params: Any) -> Any:
  def decays(path, _):
    # The last dict key names the leaf; boxed (logically partitioned) leaves add a `.value`.
    names = [entry.key for entry in path if isinstance(entry, jax.tree_util.DictKey)]
    return bool(names) and _decays(names[-1])
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(optim_config) -> optax.GradientTransformation:
  """Clipping by global norm, then AdamW at unit learning rate.

  The train step multiplies the updates by `learning_rate_schedule(...)(state.step)`: one step
  counter drives the schedule, including after skipped (non-finite) steps.
  """
  transforms = []
  if optim_config.grad_clip > 0:
    transforms.append(optax.clip_by_global_norm(optim_config.grad_clip))
  adamw = optax.adamw(
      learning_rate=1.0, b1=optim_config.b1, b2=optim_config.b2, eps=optim_config.eps,
      weight_decay=optim_config.weight_decay, mask=weight_decay_mask)
  transforms.append(in_float32(adamw) if optim_config.moments_dtype == "float32" else adamw)
  return optax.chain(*transforms)


def in_float32(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """`inner` run on float32 copies of the updates and parameters, so its state (AdamW's
  moments) is float32 whatever the parameters' dtype: bfloat16 second moments lose the small
  squared gradients. The updates come back in each parameter's dtype."""
  to_f32 = lambda tree: jax.tree.map(lambda x: x.astype(jnp.float32), tree)  # noqa: E731

  def init(params):
    return inner.init(to_f32(params))

  def update(updates, state, params=None):
    new, state = inner.update(to_f32(updates), state, None if params is None else to_f32(params))
    return jax.tree.map(lambda n, u: n.astype(u.dtype), new, updates), state

  return optax.GradientTransformation(init, update)
