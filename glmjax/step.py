"""Pure training and evaluation steps, shared by train, bench and tests.

The loss is cross-entropy on Part B (`loss_mask`): each row's mean over its Part B tokens,
averaged over the rows that have any. That is the original's weighting: it averages the tokens
of each micro-batch, which holds one objective (and for [gMASK] one generated length, so rows
of one Part B size), and then the micro-batches alike. A mean over all the tokens of a batch
that mixes objectives would let [gMASK] rows (Part B about 75% of a row, against 18% for
[MASK]) take several times their share of the gradient. Row by row, it needs no sum over the
batch before the forward pass. Gradient accumulation sums the rows' losses over micro-batches
and divides once, so `grad_accum_steps=k` equals one step on the full batch (exactly so
without dropout: each micro-batch draws its own dropout mask). The learning rate is
`schedule(state.step)`, applied here, so the logged rate is the applied one even after skipped
(non-finite) steps.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from glmjax import model as model_lib
from glmjax import loss as loss_lib
from glmjax import optim, parallel, xla_options
from glmjax.data.pipeline import BATCH_KEYS, OBJECTIVE_NAMES

NUM_OBJECTIVES = len(OBJECTIVE_NAMES)
# Dropout masks' generators (train.dropout_rng): jax.random.key's impl names. rbg and
# unsafe_rbg cost less per mask than threefry (why MaxText defaults to unsafe_rbg).
DROPOUT_RNGS = ("threefry2x32", "rbg", "unsafe_rbg")


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def dummy_inputs(batch_size: int, seq_len: int) -> tuple[jax.Array, ...]:
  tokens = jnp.zeros((batch_size, seq_len), jnp.int32)
  return tokens, tokens, tokens, jnp.full((batch_size,), seq_len // 2, jnp.int32)


def make_init_fn(model: nn.Module, optimizer: optax.GradientTransformation, seq_len: int
                 ) -> Callable[[jax.Array], TrainState]:
  """Returns rng -> TrainState with logically partitioned (boxed) params and moments."""
  def init(rng):
    params = model.init(rng, *dummy_inputs(1, seq_len))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params))
  return init


def _abstract_key() -> jax.ShapeDtypeStruct:
  """An rng key's shape and dtype, never placed on a device: the mesh may be a TPU topology's
  devices that this host cannot reach (ahead-of-time compilation)."""
  return jax.eval_shape(lambda: jax.random.key(0))


def state_shardings(init_fn, mesh, rules) -> Any:
  """NamedShardings of the (unboxed) state, from the logical names on the boxed abstract state."""
  abstract = jax.eval_shape(init_fn, _abstract_key())
  return parallel.logical_to_shardings(nn.get_partition_spec(abstract), mesh, rules)


def init_sharded_state(init_fn, shardings, seed: int) -> TrainState:
  """Every device creates only its own shard: no full copy of the parameters on the host."""
  unboxed = lambda rng: nn.meta.unbox(init_fn(rng))
  return jax.jit(unboxed, out_shardings=shardings)(jax.random.key(seed))


def abstract_state(init_fn, shardings) -> TrainState:
  """ShapeDtypeStructs with target shardings: what a checkpoint restores into."""
  shapes = jax.eval_shape(lambda rng: nn.meta.unbox(init_fn(rng)), _abstract_key())
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, shardings)


def loss_sums(params, batch, rng, *, model: nn.Module, deterministic: bool,
              loss_chunk: int = loss_lib.DEFAULT_CHUNK, rows_alike: bool = False):
  """Summed Part B cross-entropy and the counts needed to average it exactly.

  `loss_sum` (what the gradient follows) sums the tokens' losses, or with `rows_alike` each
  row's mean over its Part B tokens (training's loss, `rows` of them to divide by); the other
  sums are over tokens either way. The vocabulary projection runs only on Part B positions
  (loss.part_b_cross_entropy): the [B, T, V] logits of the whole row are never built.
  """
  hidden = model.apply({"params": params}, batch["tokens"], batch["position_ids"],
                       batch["block_position_ids"], batch["sep"], deterministic=deterministic,
                       rngs=None if deterministic else {"dropout": rng}, return_hidden=True)
  embeddings = nn.meta.unbox(params["word_embeddings"])
  mask = batch["loss_mask"].astype(jnp.float32)
  row_weight = jnp.sum(mask, axis=-1)
  per_token = jnp.where(row_weight > 0, 1.0 / jnp.maximum(row_weight, 1.0), 0.0)
  scored = loss_lib.part_b_cross_entropy(
      hidden, embeddings, batch["targets"], mask * per_token[:, None] if rows_alike else mask,
      chunk=loss_chunk)
  objective = jax.nn.one_hot(batch["objective"], NUM_OBJECTIVES, dtype=jnp.float32)
  row_loss, row_correct = scored["row_loss"], scored["row_correct"]
  if rows_alike:  # the metrics over tokens again
    row_loss, row_correct = row_loss * row_weight, row_correct * row_weight
  sums = {
      "loss_sum": scored["loss_sum"],
      "rows": jnp.sum(row_weight > 0, dtype=jnp.float32),
      "weight": jnp.sum(row_weight),
      "correct": jnp.sum(row_correct),
      "objective_loss_sum": row_loss @ objective,
      "objective_weight": row_weight @ objective,
      "objective_correct": row_correct @ objective,
      "logit_positions": scored["logit_positions"],
      "scored_positions": jnp.sum(batch["loss_mask"] != 0, dtype=jnp.float32),
  }
  return sums["loss_sum"], sums


def _micro_batches(batch, count: int):
  """[B, ...] -> [count, B/count, ...], micro-batch i holding rows i, i+count, ...

  Interleaving keeps every device's rows in every micro-batch, so no device idles.
  """
  def split(x):
    return x.reshape(x.shape[0] // count, count, *x.shape[1:]).swapaxes(0, 1)
  return jax.tree.map(split, batch)


def _zeros_like_output(fn, *args):
  """Zeros shaped as `fn(*args)`'s output (traced, never run): a scan's starting sums, so the
  keys of loss_sums are written in one place. The extra trace of the forward costs far less
  than the compile it precedes (layers are scanned by default)."""
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, *args))


def summed_gradients(params, batch, rng, *, model, grad_accum_steps: int,
                     loss_chunk: int = loss_lib.DEFAULT_CHUNK):
  forward = functools.partial(loss_sums, model=model, deterministic=False, loss_chunk=loss_chunk,
                              rows_alike=True)
  grad_fn = jax.grad(forward, has_aux=True)
  # Gradients with respect to the compute-dtype view of the projections (`model` is a GLM: its
  # config says the dtype): the same values, half the bytes where the backward pass stacks them
  # and the optimizer reads them (bfloat16 to float32 is exact; docs/performance.md).
  view = model_lib.in_compute_dtype(params, model.config)
  in_params_dtype = lambda grads: jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
  if grad_accum_steps == 1:
    grads, sums = grad_fn(view, batch, rng)
    return in_params_dtype(grads), sums

  def body(carry, micro):
    index, micro_batch = micro
    grads, sums = grad_fn(view, micro_batch, jax.random.fold_in(rng, index))
    return jax.tree.map(jnp.add, carry, (in_params_dtype(grads), sums)), None

  micro = (jnp.arange(grad_accum_steps), _micro_batches(batch, grad_accum_steps))
  first = jax.tree.map(lambda x: x[0], micro[1])
  zero = (jax.tree.map(jnp.zeros_like, params),
          _zeros_like_output(lambda b: forward(params, b, rng)[1], first))
  (grads, sums), _ = jax.lax.scan(body, zero, micro)
  return grads, sums


def all_finite(tree) -> jax.Array:
  """True iff every floating-point element of `tree` is finite (integer leaves are ignored)."""
  checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(leaf.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def train_step(state: TrainState, batch, *, model, optimizer, schedule, seed: int,
               grad_accum_steps: int, dropout_rng: str = DROPOUT_RNGS[0],
               loss_chunk: int = loss_lib.DEFAULT_CHUNK):
  """One optimizer update. The update is skipped (flagged in metrics) when the loss or the
  gradient is non-finite, or when it would make any parameter or optimizer moment non-finite.

  Dropout masks come from fold_in(key(seed, impl=dropout_rng), step): a pure function of the
  step, so a resumed run draws the masks it would have drawn."""
  rng = jax.random.fold_in(jax.random.key(seed, impl=dropout_rng), state.step)
  grads, sums = summed_gradients(state.params, batch, rng, model=model,
                                 grad_accum_steps=grad_accum_steps, loss_chunk=loss_chunk)
  rows, weight = jnp.maximum(sums["rows"], 1.0), jnp.maximum(sums["weight"], 1.0)
  grads = jax.tree.map(lambda g: g / rows, grads)
  loss = sums["loss_sum"] / rows
  grad_norm = optax.global_norm(grads)

  learning_rate = schedule(state.step)

  def updated(params, opt_state):
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    updates = jax.tree.map(lambda u: learning_rate * u, updates)
    return optax.apply_updates(params, updates), new_opt_state

  new_params, new_opt_state = updated(state.params, state.opt_state)
  # Finite inputs can still give a non-finite state (a NaN or huge learning rate, an overflowing
  # moment): what would be committed is checked, not only what went in. The check computes the
  # update a second time, from the state behind an optimization barrier: XLA cannot merge the
  # two, so it reads the state twice instead of writing the new moments out, reading them back
  # to check them and again to commit them (GLM-2B's GPU program: 68 -> 48 bytes of memory
  # traffic per parameter; docs/performance.md). The same arithmetic on the same inputs, so the
  # verdict is the committed values' (up to how XLA rounds each copy).
  checked = updated(*jax.lax.optimization_barrier((state.params, state.opt_state)))
  finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(checked))
  keep_if_finite = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = TrainState(step=state.step + 1,
                         params=keep_if_finite(new_params, state.params),
                         opt_state=keep_if_finite(new_opt_state, state.opt_state))
  metrics = {
      "loss": loss,
      "accuracy": sums["correct"] / weight,
      "objective_loss_sum": sums["objective_loss_sum"],
      "objective_weight": sums["objective_weight"],
      "loss_tokens": sums["weight"],
      "logit_positions": sums["logit_positions"],
      "model_flops": model_lib.step_flops(
          model.config, tokens=batch["tokens"].size, logit_positions=sums["scored_positions"],
          visible_pairs=jnp.sum(model_lib.visible_pairs(float(batch["tokens"].shape[1]),
                                                        batch["sep"].astype(jnp.float32)))),
      "grad_norm": grad_norm,
      "param_norm": optax.global_norm(new_state.params),
      "learning_rate": learning_rate,
      "nonfinite": jnp.logical_not(finite),
  }
  return new_state, metrics


def eval_step(params, batch, *, model, micro_batches: int = 1,
              loss_chunk: int = loss_lib.DEFAULT_CHUNK):
  """Sums over one evaluation batch, in micro-batches as training does (same peak memory). Its
  loss is the plain mean over Part B tokens (a perplexity's), not training's weighting by
  objective; the per-objective means are the same either way."""
  sums_fn = lambda b: loss_sums(params, b, None, model=model, deterministic=True,
                                loss_chunk=loss_chunk)[1]
  if micro_batches == 1:
    return sums_fn(batch)
  add = lambda total, micro: (jax.tree.map(jnp.add, total, sums_fn(micro)), None)
  micro = _micro_batches(batch, micro_batches)
  zero = _zeros_like_output(sums_fn, jax.tree.map(lambda x: x[0], micro))
  return jax.lax.scan(add, zero, micro)[0]


ROW_KEYS = ("sep", "objective")  # [B]; every other batch key is [B, T]


def batch_shardings(mesh) -> dict:
  return {key: parallel.batch_sharding(mesh, 1 if key in ROW_KEYS else 2) for key in BATCH_KEYS}


def abstract_batch(batch_size: int, seq_len: int, mesh) -> dict:
  """Shapes, dtypes and shardings of a global batch (the batch contract, docs/architecture.md)."""
  shardings = batch_shardings(mesh)
  def spec(key):
    shape = (batch_size,) if key in ROW_KEYS else (batch_size, seq_len)
    dtype = jnp.float32 if key == "loss_mask" else jnp.int32
    return jax.ShapeDtypeStruct(shape, dtype, sharding=shardings[key])
  return {key: spec(key) for key in BATCH_KEYS}


def jit_train_step(model, optimizer, schedule, config, mesh, shardings):
  """The train step jitted with explicit shardings and the state donated."""
  step_fn = functools.partial(train_step, model=model, optimizer=optimizer, schedule=schedule,
                              seed=int(config.seed),
                              grad_accum_steps=int(config.optim.grad_accum_steps),
                              dropout_rng=str(config.train.dropout_rng),
                              loss_chunk=int(config.train.loss_chunk))
  return jax.jit(step_fn, in_shardings=(shardings, batch_shardings(mesh)),
                 out_shardings=(shardings, None), donate_argnums=0)


def jit_eval_step(model, mesh, params_shardings, *, micro_batches: int, loss_chunk: int):
  """The eval step jitted with explicit shardings: training's held-out passes and `evaluate`."""
  return jax.jit(functools.partial(eval_step, model=model, micro_batches=micro_batches,
                                   loss_chunk=loss_chunk),
                 in_shardings=(params_shardings, batch_shardings(mesh)))


@dataclasses.dataclass(frozen=True)
class Program:
  """What one config and mesh make: the model, the optimizer, the state's layout (shapes,
  dtypes, shardings) and the jitted train step. `train` runs it; `aot` compiles the same for
  a TPU slice or GPU hosts that are not attached."""
  model: nn.Module
  optimizer: optax.GradientTransformation
  schedule: Callable[[Any], Any]
  init_fn: Callable[[jax.Array], TrainState]
  shardings: Any
  abstract_state: TrainState
  train_step: Any  # jax.jit-wrapped train_step, not yet compiled
  eval_step: Any   # jax.jit-wrapped eval_step, not yet compiled
  compiler_options: dict  # XLA options for the target platform (glmjax/xla_options.py)

  def compile_train_step(self, config, mesh):
    """Lowered on abstract values (no array is built) and compiled; call under the mesh."""
    batch = abstract_batch(config.data.batch_size, config.data.seq_len, mesh)
    lowered = self.train_step.lower(self.abstract_state, batch)
    return xla_options.compiled(lowered, self.compiler_options)

  def compile_eval_step(self, config, mesh):
    """The evaluation step for batches of the training batch's shape; call under the mesh."""
    batch = abstract_batch(config.data.batch_size, config.data.seq_len, mesh)
    lowered = self.eval_step.lower(self.abstract_state.params, batch)
    return xla_options.compiled(lowered, self.compiler_options)


def build_program(config, mesh, rules, model_config: model_lib.ModelConfig) -> Program:
  """Call with the mesh and rules active (`parallel.activate`); `model_config` from
  `attention_choice.resolved_model_config`."""
  model = model_lib.GLM(model_config)
  optimizer = optim.make_optimizer(config.optim)
  schedule = optim.learning_rate_schedule(config.optim)
  init_fn = make_init_fn(model, optimizer, config.data.seq_len)
  shardings = state_shardings(init_fn, mesh, rules)
  platform = model_config.target_platform or jax.default_backend()
  return Program(model=model, optimizer=optimizer, schedule=schedule, init_fn=init_fn,
                 shardings=shardings, abstract_state=abstract_state(init_fn, shardings),
                 train_step=jit_train_step(model, optimizer, schedule, config, mesh, shardings),
                 eval_step=jit_eval_step(
                     model, mesh, shardings.params,
                     micro_batches=int(config.optim.grad_accum_steps),
                     loss_chunk=int(config.train.loss_chunk)),
                 compiler_options=xla_options.for_platform(platform,
                                                           os.environ.get("XLA_FLAGS", "")))
