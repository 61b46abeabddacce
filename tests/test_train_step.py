"""The train step: sharded equals single-device, accumulation equals one big batch, NaN skipped."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from glmjax import attention_choice, optim, parallel, step as step_lib
from glmjax import model as model_lib
from glmjax.bench.step import synthetic_batch


def _config(**mesh):
  config = importlib.import_module("configs.base").get_config("local")
  config.model.update(hidden_size=64, num_heads=4, num_layers=2)
  config.data.update(seq_len=32, batch_size=8)
  config.model.max_position = 32
  config.mesh.update(**mesh)
  return config


def _run_steps(config, devices, batches):
  """Losses and final params of len(batches) steps on a mesh over `devices`."""
  mesh = parallel.make_mesh(config.mesh, devices)
  rules = parallel.logical_rules(config.mesh)
  model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  optimizer = optim.make_optimizer(config.optim)
  schedule = optim.learning_rate_schedule(config.optim)
  init_fn = step_lib.make_init_fn(model, optimizer, config.data.seq_len)
  with parallel.activate(mesh, rules):
    shardings = step_lib.state_shardings(init_fn, mesh, rules)
    state = step_lib.init_sharded_state(init_fn, shardings, config.seed)
    train_fn = step_lib.jit_train_step(model, optimizer, schedule, config, mesh, shardings)
    losses, nonfinite = [], False
    for batch in batches:
      state, metrics = train_fn(state, parallel.global_batch(
          batch, parallel.host_rows(mesh, len(batch["sep"]))))
      losses.append(float(metrics["loss"]))
      nonfinite = bool(metrics["nonfinite"])
  return losses, state, nonfinite


def _batches(config, count):
  return [synthetic_batch(config.data.batch_size, config.data.seq_len, 256, seed=i)
          for i in range(count)]


def _assert_params_close(a, b, rtol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-6)


def _with_dropout(config):
  config.model.update(hidden_dropout=0.1, attention_dropout=0.1)  # the paper's rates
  return config


@pytest.mark.parametrize("dropout_rng", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_sharded_training_equals_single_device(dropout_rng):
  """With dropout on: each device draws its shard of the same masks the single device draws."""
  single = _with_dropout(_config(data=1, fsdp=1, tensor=1))
  sharded = _with_dropout(_config(data=2, fsdp=2, tensor=2))
  single.train.dropout_rng = sharded.train.dropout_rng = dropout_rng
  batches = _batches(single, 3)
  losses_1, state_1, _ = _run_steps(single, jax.devices()[:1], batches)
  losses_8, state_8, _ = _run_steps(sharded, jax.devices(), batches)
  np.testing.assert_allclose(losses_1, losses_8, rtol=2e-5)
  _assert_params_close(state_1.params, state_8.params, rtol=2e-4)
  # Adam moments are sharded like the parameters; only LayerNorm and bias leaves replicate.
  assert parallel.replicated_fraction(state_8.opt_state) < 0.01
  assert parallel.replicated_fraction(state_8.params) < 0.01


def test_gradient_accumulation_equals_one_large_batch():
  """With dropout off: with it on, each micro-batch draws its own masks (the next test)."""
  whole = _config(data=2, fsdp=1, tensor=1)
  accumulated = _config(data=2, fsdp=1, tensor=1)
  accumulated.optim.grad_accum_steps = 4
  batches = _batches(whole, 2)
  losses_1, state_1, _ = _run_steps(whole, jax.devices()[:2], batches)
  losses_4, state_4, _ = _run_steps(accumulated, jax.devices()[:2], batches)
  np.testing.assert_allclose(losses_1, losses_4, rtol=2e-5)
  _assert_params_close(state_1.params, state_4.params, rtol=2e-4)


def test_nonfinite_loss_skips_the_update():
  config = _config(data=1, fsdp=1, tensor=1)
  clean = _batches(config, 2)
  poisoned = {**clean[0], "loss_mask": clean[0]["loss_mask"].copy()}
  poisoned["loss_mask"][0, -1] = np.nan
  _, before, _ = _run_steps(config, jax.devices()[:1], [clean[0]])
  _, after, nonfinite = _run_steps(config, jax.devices()[:1], [clean[0], poisoned])
  assert nonfinite
  # Parameters and optimizer state (Adam moments and counts) are exactly those before the step.
  for x, y in zip(jax.tree.leaves((before.params, before.opt_state)),
                  jax.tree.leaves((after.params, after.opt_state))):
    np.testing.assert_array_equal(x, y)
  assert int(after.step) == 2  # the skipped step still counts: the next batch is batch 2's
  losses, _, nonfinite = _run_steps(config, jax.devices()[:1], [clean[0], poisoned, clean[1]])
  assert not nonfinite and np.isfinite(losses[-1])


def test_the_train_step_donates_the_state_it_is_given():
  """The step donates the state it is given (jax deletes those arrays), so XLA can reuse their
  buffers for the new state instead of holding two states: parameters and moments twice."""
  config = _config(data=2, fsdp=2, tensor=2)
  mesh = parallel.make_mesh(config.mesh)
  rules = parallel.logical_rules(config.mesh)
  model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  optimizer = optim.make_optimizer(config.optim)
  init_fn = step_lib.make_init_fn(model, optimizer, config.data.seq_len)
  with parallel.activate(mesh, rules):
    shardings = step_lib.state_shardings(init_fn, mesh, rules)
    state = step_lib.init_sharded_state(init_fn, shardings, config.seed)
    train_fn = step_lib.jit_train_step(model, optimizer, optim.learning_rate_schedule(
        config.optim), config, mesh, shardings)
    batch = _batches(config, 1)[0]
    new_state, _ = train_fn(state, parallel.global_batch(
        batch, parallel.host_rows(mesh, len(batch["sep"]))))
  jax.block_until_ready(new_state)
  assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state))


def test_the_state_is_created_on_the_devices_in_its_shardings_never_whole_on_one(monkeypatch):
  """eval_shape, then jit with out_shardings: each device makes only its shard of the new
  state, already laid out as the train step takes it (README: no host holds a full copy). The
  shardings alone say where, without the mesh's rules in scope (those would hide a jit that
  dropped them)."""
  config = _config(data=2, fsdp=2, tensor=2)
  mesh = parallel.make_mesh(config.mesh)
  rules = parallel.logical_rules(config.mesh)
  model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  init_fn = step_lib.make_init_fn(model, optim.make_optimizer(config.optim), config.data.seq_len)
  with parallel.activate(mesh, rules):
    shardings = step_lib.state_shardings(init_fn, mesh, rules)
  # Made whole, then moved: the same shardings at the end, a full copy on one device first.
  monkeypatch.setattr(jax, "device_put", lambda *a, **k: pytest.fail("state made, then moved"))
  state = step_lib.init_sharded_state(init_fn, shardings, config.seed)
  for leaf, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(shardings), strict=True):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (leaf.sharding, sharding)
  embeddings = state.params["word_embeddings"]
  assert max(s.data.size for s in embeddings.addressable_shards) < embeddings.size


def test_an_update_that_would_make_the_parameters_nan_is_skipped():
  """Loss and gradient are finite; only the update is not (a NaN learning rate)."""
  config = _config(data=1, fsdp=1, tensor=1)
  batches = _batches(config, 1)
  _, initial, _ = _run_steps(config, jax.devices()[:1], [])
  config.optim.learning_rate = float("nan")
  losses, after, nonfinite = _run_steps(config, jax.devices()[:1], batches)
  assert nonfinite and np.isfinite(losses[0])
  for x, y in zip(jax.tree.leaves((initial.params, initial.opt_state)),
                  jax.tree.leaves((after.params, after.opt_state))):
    np.testing.assert_array_equal(x, y)


def test_learning_rate_in_the_step_equals_optax_adamw_with_the_schedule():
  # The step multiplies unit-rate AdamW updates by schedule(state.step); weight decay must still
  # scale with the rate, exactly as optax.adamw(schedule) does.
  config = _config()
  config.optim.update(learning_rate=0.1, warmup_ratio=0.5, decay_steps=6, weight_decay=0.3)
  schedule = optim.learning_rate_schedule(config.optim)
  ours = optim.make_optimizer(config.optim)
  reference = optax.chain(optax.clip_by_global_norm(config.optim.grad_clip), optax.adamw(
      schedule, b1=config.optim.b1, b2=config.optim.b2, eps=config.optim.eps,
      weight_decay=config.optim.weight_decay, mask=optim.weight_decay_mask))
  params = {"dense": {"qkv_kernel": jnp.ones((3, 2)), "qkv_bias": jnp.ones(2)}}
  ours_params, ours_state = params, ours.init(params)
  ref_params, ref_state = params, reference.init(params)
  for t in range(6):
    grads = jax.tree.map(lambda p, t=t: jnp.sin(p * (t + 1)), ours_params)
    updates, ours_state = ours.update(grads, ours_state, ours_params)
    ours_params = optax.apply_updates(ours_params, jax.tree.map(lambda u, t=t: schedule(t) * u,
                                                                updates))
    updates, ref_state = reference.update(grads, ref_state, ref_params)
    ref_params = optax.apply_updates(ref_params, updates)
  _assert_params_close(ours_params, ref_params, rtol=1e-6)


def test_eval_in_micro_batches_equals_one_pass():
  config = _config()
  model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  batch = jax.tree.map(jnp.asarray, _batches(config, 1)[0])
  params = model.init(jax.random.key(0), *step_lib.dummy_inputs(1, config.data.seq_len))["params"]
  whole = step_lib.eval_step(params, batch, model=model)
  micro = step_lib.eval_step(params, batch, model=model, micro_batches=4)
  for key in whole:
    np.testing.assert_allclose(micro[key], whole[key], rtol=1e-5)


def test_the_training_program_s_held_out_step_runs_grad_accum_steps_micro_batches_in_loss_chunks():
  """The eval step train and evaluate compile takes the run's micro-batches (the peak memory
  training fits in) and train.loss_chunk: with one scored position a row, each micro-batch of
  2 rows pays one chunk of 8 positions."""
  config = _config(data=1, fsdp=1, tensor=1)
  config.optim.grad_accum_steps, config.train.loss_chunk = 4, 8
  batch = _batches(config, 1)[0]
  batch["loss_mask"] = np.zeros_like(batch["loss_mask"])
  batch["loss_mask"][:, -1] = 1.0  # the last position is in every row's Part B
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
  rules = parallel.logical_rules(config.mesh)
  with parallel.activate(mesh, rules):
    program = step_lib.build_program(config, mesh, rules,
                                     attention_choice.resolved_model_config(config))
    params = step_lib.init_sharded_state(program.init_fn, program.shardings, config.seed).params
    sums = jax.device_get(program.compile_eval_step(config, mesh)(
        params, parallel.global_batch(batch, parallel.host_rows(mesh, 8))))
  assert sums["scored_positions"] == 8
  # One pass would pay a single chunk (8); the default chunk (1024, capped at a micro-batch's
  # 64 positions) 256.
  assert sums["logit_positions"] == 4 * 8


def test_the_dropout_rng_is_the_seed_folded_with_the_step_then_the_micro_batch():
  config = _with_dropout(_config(data=1, fsdp=1, tensor=1))
  config.optim.grad_accum_steps = 2
  model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  optimizer = optim.make_optimizer(config.optim)
  init_fn = step_lib.make_init_fn(model, optimizer, config.data.seq_len)
  state = step_lib.init_sharded_state(init_fn, None, config.seed)
  batch = jax.tree.map(jnp.asarray, _batches(config, 1)[0])
  step_fn = jax.jit(lambda state, batch: step_lib.train_step(
      state, batch, model=model, optimizer=optimizer,
      schedule=optim.learning_rate_schedule(config.optim), seed=config.seed,
      grad_accum_steps=2)[1]["loss"])
  at = lambda step: float(step_fn(state.replace(step=jnp.array(step, jnp.int32)), batch))
  assert at(3) == at(3) and at(3) != at(4)  # same step, same masks; next step, new masks
  with_rbg = jax.jit(lambda state, batch: step_lib.train_step(
      state, batch, model=model, optimizer=optimizer, dropout_rng="rbg",
      schedule=optim.learning_rate_schedule(config.optim), seed=config.seed,
      grad_accum_steps=2)[1]["loss"])
  rbg_at = lambda step: float(with_rbg(state.replace(step=jnp.array(step, jnp.int32)), batch))
  assert rbg_at(3) == rbg_at(3) and rbg_at(3) != at(3)  # train.dropout_rng picks the generator
  # Micro-batch i (rows i, i+2, ...) draws from fold_in(fold_in(key(seed), step), i).
  total, weight = 0.0, 0.0
  for index in range(2):
    micro = jax.tree.map(lambda x, index=index: x[index::2], batch)
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), 3), index)
    _, sums = step_lib.loss_sums(nn.meta.unbox(state.params), micro, rng, model=model,
                                 deterministic=False, rows_alike=True)
    total, weight = total + float(sums["loss_sum"]), weight + float(sums["rows"])
  np.testing.assert_allclose(at(3), total / weight, rtol=1e-5)


def test_the_compiled_step_draws_dropout_masks_from_the_config_s_seed_and_generator():
  """train and bench run jit_train_step: its masks are those of seed and train.dropout_rng."""
  config = _with_dropout(_config(data=1, fsdp=1, tensor=1))
  config.seed, config.train.dropout_rng = 7, "rbg"
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
  rules = parallel.logical_rules(config.mesh)
  model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  optimizer = optim.make_optimizer(config.optim)
  schedule = optim.learning_rate_schedule(config.optim)
  init_fn = step_lib.make_init_fn(model, optimizer, config.data.seq_len)
  batch = _batches(config, 1)[0]
  with parallel.activate(mesh, rules):
    shardings = step_lib.state_shardings(init_fn, mesh, rules)
    state = step_lib.init_sharded_state(init_fn, shardings, 0)
    direct = lambda seed, rng: float(jax.jit(lambda s, b: step_lib.train_step(  # noqa: E731
        s, b, model=model, optimizer=optimizer, schedule=schedule, seed=seed,
        grad_accum_steps=1, dropout_rng=rng)[1]["loss"])(state, jax.tree.map(jnp.asarray,
                                                                             batch)))
    expected = direct(7, "rbg")
    for other in (direct(0, "rbg"), direct(7, "threefry2x32")):  # other masks, other losses
      assert abs(other - expected) > 1e-4 * abs(expected)
    train_fn = step_lib.jit_train_step(model, optimizer, schedule, config, mesh, shardings)
    _, metrics = train_fn(state, parallel.global_batch(batch, parallel.host_rows(mesh, 8)))
  assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-6)


def test_the_logged_parameter_norm_is_that_of_the_updated_parameters():
  config = _config(data=1, fsdp=1, tensor=1)
  config.optim.update(learning_rate=1e-2, warmup_ratio=0.0)  # step 0 moves the parameters
  model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  optimizer = optim.make_optimizer(config.optim)
  init_fn = step_lib.make_init_fn(model, optimizer, config.data.seq_len)
  state = step_lib.init_sharded_state(init_fn, None, config.seed)
  norm = lambda params: np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2)  # noqa: E731
                                    for x in jax.tree.leaves(params)))
  before = norm(state.params)
  new_state, metrics = jax.jit(lambda state, batch: step_lib.train_step(
      state, batch, model=model, optimizer=optimizer,
      schedule=optim.learning_rate_schedule(config.optim), seed=config.seed,
      grad_accum_steps=1))(state, jax.tree.map(jnp.asarray, _batches(config, 1)[0]))
  after = norm(new_state.params)
  assert abs(after - before) > 1e-3 * before  # the step moved them
  np.testing.assert_allclose(metrics["param_norm"], after, rtol=1e-5)


def test_held_out_sums_are_those_of_the_model_without_dropout():
  """The shipped configs train with hidden_dropout=0.1; evaluation must not drop anything (a
  held-out loss that moves with a dropout mask compares nothing)."""
  config = _with_dropout(_config())
  model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  batch = _batches(config, 1)[0]
  params = model.init(jax.random.key(0), *step_lib.dummy_inputs(1, config.data.seq_len))["params"]
  sums = jax.jit(lambda p, b: step_lib.eval_step(p, b, model=model))(
      params, jax.tree.map(jnp.asarray, batch))
  logits = np.asarray(model.apply({"params": params}, batch["tokens"], batch["position_ids"],
                                  batch["block_position_ids"], batch["sep"], deterministic=True),
                      np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  token_loss = -np.take_along_axis(log_probs, batch["targets"][..., None], -1)[..., 0]
  np.testing.assert_allclose(sums["loss_sum"], (token_loss * batch["loss_mask"]).sum(),
                             rtol=1e-5)


def test_the_initial_parameters_are_drawn_from_the_config_s_seed():
  config = _config(data=1, fsdp=1, tensor=1)
  model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  init_fn = step_lib.make_init_fn(model, optim.make_optimizer(config.optim), config.data.seq_len)
  leaves = lambda seed: jax.tree.leaves(step_lib.init_sharded_state(init_fn, None, seed).params)
  for again, first in zip(leaves(7), leaves(7), strict=True):  # a seed gives one state
    np.testing.assert_array_equal(np.asarray(again), np.asarray(first))
  # Another seed, other weights (a run's seed names its initial state, as for dropout).
  assert any(not np.array_equal(a, b) for a, b in zip(leaves(7), leaves(8)))


def test_the_compiled_step_takes_the_batch_contract_s_dtypes_a_float32_loss_mask():
  """docs/architecture.md: loss_mask is float32, every other key int32 (as the pipeline builds)."""
  mesh = parallel.make_mesh(_config(data=-1, fsdp=1, tensor=1).mesh)
  batch = step_lib.abstract_batch(8, 32, mesh)
  assert {key: str(spec.dtype) for key, spec in batch.items()} == {
      key: "float32" if key == "loss_mask" else "int32" for key in step_lib.BATCH_KEYS}
