"""The training objective against a reference written apart from the code under test.

The reference takes only the model's forward (checked against a float64 numpy forward in
test_model.py) and recomputes in numpy what the README says the step does: the Part B
cross-entropy of each row averaged over its Part B tokens, then over the rows (the original's
weighting), Part B accuracy, the
per-objective sums, the gradient (plain `jax.grad` of that loss over the full batch, no micro
batches), global-norm clipping, AdamW with decay on weight matrices and embedding tables only,
and the warmup-then-cosine schedule read at the step's own index. The step under test runs
sharded over 8 devices with gradient accumulation, two real steps with a nonzero learning rate.
"""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glmjax import attention_choice
from glmjax import optim, parallel, step as step_lib
from glmjax import model as model_lib
from glmjax.data import pipeline as pipeline_lib, sources, tokenizers

STEPS = 2


def _config(grad_clip):
  config = importlib.import_module("configs.base").get_config("local")
  config.model.update(hidden_size=64, num_heads=4, num_layers=2, max_position=64,
                      hidden_dropout=0.0, attention_dropout=0.0)
  config.data.update(seq_len=64, batch_size=16, blank_prob=0.5, sentence_prob=0.3,
                     document_prob=0.2, builtin_docs=300)
  # No warmup, so step 0 already moves the parameters; a short cosine, so the rate of step 0
  # and of step 1 differ by a few percent (a schedule read one step late shows).
  config.optim.update(learning_rate=1e-2, warmup_ratio=0.0, decay_steps=8, final_ratio=0.1,
                      weight_decay=0.1, grad_clip=grad_clip, grad_accum_steps=2, eps=1e-8)
  config.mesh.update(data=2, fsdp=2, tensor=2)
  return config


def _batches(config):
  tokenizer = tokenizers.load_tokenizer(config.data)
  docs, _ = sources.load_documents(config.data, tokenizer)
  pipeline = pipeline_lib.BatchPipeline(config.data, tokenizer, docs, seed=config.seed)
  rows = np.arange(config.data.batch_size)
  return [pipeline.build_rows(index, rows) for index in range(STEPS)]


def _run_step_under_test(config, batches):
  """(params before each step, metrics of each step, params and opt state after the last)."""
  mesh = parallel.make_mesh(config.mesh)
  rules = parallel.logical_rules(config.mesh)
  with parallel.activate(mesh, rules):
    program = step_lib.build_program(config, mesh, rules,
                                     attention_choice.resolved_model_config(config))
    state = step_lib.init_sharded_state(program.init_fn, program.shardings, config.seed)
    # Biases start at 0; moved off it, decay wrongly applied to them would show in the update.
    state = state.replace(params=jax.tree_util.tree_map_with_path(
        lambda path, p: p + 0.1 if _name(path).endswith("bias") else p, state.params))
    host = parallel.host_rows(mesh, config.data.batch_size)
    seen, metrics = [], []
    for batch in batches:
      seen.append(jax.device_get(state.params))
      state, step_metrics = program.train_step(state, parallel.global_batch(batch, host))
      metrics.append(jax.device_get(step_metrics))
    return program.model, seen, metrics, jax.device_get(state)


# ----------------------------------------------------------------------------- the reference
def _logits(model, params, batch):
  return np.asarray(model.apply({"params": params}, batch["tokens"], batch["position_ids"],
                                batch["block_position_ids"], batch["sep"], deterministic=True),
                    np.float64)


def _reference_sums(logits, batch):
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  token_loss = -np.take_along_axis(log_probs, batch["targets"][..., None], -1)[..., 0]
  mask = batch["loss_mask"].astype(np.float64)
  correct = (logits.argmax(-1) == batch["targets"]) * mask
  per_objective = [(token_loss * mask)[batch["objective"] == k].sum() for k in range(3)]
  weights = [mask[batch["objective"] == k].sum() for k in range(3)]
  # As the original weighs them (micro-batches of one objective and Part B size, averaged
  # alike): each row's mean over its Part B tokens, averaged over the rows.
  rows = mask.sum(-1) > 0
  loss = ((token_loss * mask).sum(-1)[rows] / mask.sum(-1)[rows]).mean()
  return dict(loss=loss, accuracy=correct.sum() / mask.sum(),
              tokens=mask.sum(), objective_loss_sum=per_objective, objective_weight=weights)


def _reference_gradient(model, params, batch):
  def loss(p):
    logits = model.apply({"params": p}, batch["tokens"], batch["position_ids"],
                         batch["block_position_ids"], batch["sep"], deterministic=True)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    picked = jnp.take_along_axis(log_probs, jnp.asarray(batch["targets"])[..., None], -1)[..., 0]
    mask = jnp.asarray(batch["loss_mask"])
    per_row = mask.sum(-1)
    rows = per_row > 0
    return -((picked * mask).sum(-1) / jnp.maximum(per_row, 1.0) * rows).sum() / rows.sum()
  return jax.tree.map(lambda g: np.asarray(g, np.float64), jax.grad(loss)(params))


def _rate(config, t):
  o = config.optim
  return o.learning_rate * (o.final_ratio + (1 - o.final_ratio) * 0.5 * (
      1 + np.cos(np.pi * min(t / o.decay_steps, 1.0))))


def _name(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator="/")


def _decays(path) -> bool:
  return _name(path).endswith("kernel") or _name(path).endswith("embeddings")


def _reference_adamw(config, params, grads_per_step):
  o = config.optim
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  m = jax.tree.map(np.zeros_like, p)
  v = jax.tree.map(np.zeros_like, p)
  for t, g in enumerate(grads_per_step):
    norm = np.sqrt(sum((x ** 2).sum() for x in jax.tree.leaves(g)))
    if o.grad_clip:
      g = jax.tree.map(lambda x: x * min(1.0, o.grad_clip / norm), g)
    m = jax.tree.map(lambda m_, g_: o.b1 * m_ + (1 - o.b1) * g_, m, g)
    v = jax.tree.map(lambda v_, g_: o.b2 * v_ + (1 - o.b2) * g_ ** 2, v, g)
    def update(path, p_, m_, v_):
      step = (m_ / (1 - o.b1 ** (t + 1))) / (np.sqrt(v_ / (1 - o.b2 ** (t + 1))) + o.eps)
      return p_ - _rate(config, t) * (step + (o.weight_decay * p_ if _decays(path) else 0.0))
    p = jax.tree_util.tree_map_with_path(update, p, m, v)
  return p, m


def _relative_errors(ours, reference) -> dict[str, float]:
  """Per array: |ours - reference| / |reference| (a bug in a small array is not averaged away)."""
  errors = {}
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(reference)):
    errors[_name(path)] = float(np.linalg.norm(np.asarray(a, np.float64) - b)
                                / max(np.linalg.norm(b), 1e-12))
  return errors


def _first_moments(opt_state):
  """The `mu` tree of the optimizer state, wherever the chain keeps it."""
  found = []
  def visit(node):
    if hasattr(node, "mu") and hasattr(node, "nu"):
      found.append(node.mu)
    elif isinstance(node, (tuple, list)):
      for child in node:
        visit(child)
  visit(opt_state)
  (mu,) = found
  return mu


@pytest.mark.parametrize("grad_clip", [0.0, 0.25], ids=["no clipping", "clipping"])
def test_loss_metrics_gradient_and_update_equal_an_independent_reference(grad_clip):
  config = _config(grad_clip)
  batches = _batches(config)
  model, params_seen, metrics, final = _run_step_under_test(config, batches)
  grads, seen_objectives = [], np.zeros(3)
  for params, batch, step_metrics in zip(params_seen, batches, metrics):
    reference = _reference_sums(_logits(model, params, batch), batch)
    np.testing.assert_allclose(step_metrics["loss"], reference["loss"], rtol=2e-5)
    np.testing.assert_allclose(step_metrics["accuracy"], reference["accuracy"], rtol=1e-6)
    np.testing.assert_allclose(step_metrics["loss_tokens"], reference["tokens"], rtol=0)
    np.testing.assert_allclose(step_metrics["objective_loss_sum"],
                               reference["objective_loss_sum"], rtol=2e-5)
    np.testing.assert_allclose(step_metrics["objective_weight"], reference["objective_weight"],
                               rtol=0)
    seen_objectives = np.add(reference["objective_weight"], seen_objectives)
    grads.append(_reference_gradient(model, params, batch))
    norm = np.sqrt(sum((g ** 2).sum() for g in jax.tree.leaves(grads[-1])))
    np.testing.assert_allclose(step_metrics["grad_norm"], norm, rtol=1e-4)
    np.testing.assert_allclose(step_metrics["learning_rate"], _rate(config, len(grads) - 1),
                               rtol=1e-6)
  assert seen_objectives.min() > 0  # blank, sentence and document rows were all scored
  if grad_clip:
    assert all(m["grad_norm"] > grad_clip for m in metrics)  # clipping really acted
  params, first_moment = _reference_adamw(config, params_seen[0], grads)
  moved = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - b, final.params, params_seen[0])
  reference_moved = jax.tree.map(lambda a, b: a - np.asarray(b, np.float64), params,
                                 params_seen[0])
  errors = _relative_errors(moved, reference_moved)
  assert max(errors.values()) < 1e-3, errors  # measured: at most 3e-4 (qkv_bias)
  errors = _relative_errors(_first_moments(final.opt_state), first_moment)
  assert max(errors.values()) < 1e-4, errors
