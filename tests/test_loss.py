"""The Part B loss computes logits only where the loss is, and equals the full-logits loss.

The reference is the plain formula on the whole [B, T, V] logits (optax's cross-entropy, jnp's
argmax, `jax.grad`), which the step used before; the loss under test must give the same values,
per-row sums and gradients for rows of every shape GLM makes: short blank suffixes, [gMASK]
rows whose Part B is nearly the whole row (longer than any blank-only budget), padded rows with
gaps in the weights, and rows with no loss at all.
"""
import importlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from glmjax import loss as loss_lib
from glmjax import model as model_lib
from glmjax import parallel, step as step_lib
from glmjax.data import pipeline as pipeline_lib, sources, tokenizers

ROWS, LENGTH, WIDTH, VOCAB = 8, 24, 16, 40


def _full_logits_loss(hidden, embeddings, targets, weights):
  logits = jnp.einsum("bth,vh->btv", hidden, embeddings, preferred_element_type=jnp.float32)
  token_loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets) * weights
  correct = (jnp.argmax(logits, -1) == targets) * weights
  return jnp.sum(token_loss), jnp.sum(token_loss, -1), jnp.sum(correct, -1)


def _rows_of_every_shape(seed=0):
  """Weights of blank-like rows (Part B a short suffix), [gMASK]-like rows (Part B 90% of the
  row), a row with padding gaps inside Part B, and a row with no loss."""
  rng = np.random.default_rng(seed)
  weights = np.zeros((ROWS, LENGTH), np.float32)
  for row in range(ROWS):
    kind = row % 4
    if kind == 0:    # blank infilling: Part B is the last ~20%
      weights[row, rng.integers(17, 20):] = 1
    elif kind == 1:  # document: Part B is nearly everything
      weights[row, 2:] = 1
    elif kind == 2:  # padded Part B: gaps with no loss
      weights[row, 12:] = rng.integers(0, 2, LENGTH - 12)
    # kind 3: no loss in this row
  hidden = rng.normal(size=(ROWS, LENGTH, WIDTH)).astype(np.float32)
  embeddings = rng.normal(size=(VOCAB, WIDTH)).astype(np.float32)
  targets = rng.integers(0, VOCAB, (ROWS, LENGTH)).astype(np.int32)
  targets[0, -3:] = np.argmax(hidden[0, -3:] @ embeddings.T, -1)  # some correct predictions
  return hidden, embeddings, targets, weights


def _under_test(hidden, embeddings, targets, weights, chunk):
  def loss_sum(h, e):
    out = loss_lib.part_b_cross_entropy(h, e, targets, weights, chunk=chunk)
    return out["loss_sum"], out
  (value, out), grads = jax.jit(jax.value_and_grad(loss_sum, argnums=(0, 1), has_aux=True))(
      hidden, embeddings)
  return value, out, grads


def _reference(hidden, embeddings, targets, weights):
  def loss_sum(h, e):
    total, row_loss, row_correct = _full_logits_loss(h, e, targets, weights)
    return total, (row_loss, row_correct)
  return jax.value_and_grad(loss_sum, argnums=(0, 1), has_aux=True)(hidden, embeddings)


def _assert_equal_to_full_logits(inputs, chunk):
  value, out, grads = _under_test(*inputs, chunk)
  (ref_value, (ref_rows, ref_correct)), ref_grads = _reference(*inputs)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  np.testing.assert_allclose(out["row_loss"], ref_rows, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(out["row_correct"], ref_correct)
  for got, want in zip(grads, ref_grads):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  return out


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_part_b_loss_equals_the_full_logits_loss_in_values_and_gradients(chunk):
  out = _assert_equal_to_full_logits(_rows_of_every_shape(), chunk)
  assert out["row_correct"][0] >= 3


@pytest.mark.parametrize("mesh_shape,vocab", [
    (dict(data=2, fsdp=2, tensor=2), VOCAB),       # vocabulary split over the tensor axis
    (dict(data=1, fsdp=2, tensor=4), VOCAB),       # four vocabulary shards
    (dict(data=2, fsdp=1, tensor=4), VOCAB - 2),   # 38 rows: not divisible, kept whole
])
def test_sharded_part_b_loss_equals_the_full_logits_loss(mesh_shape, vocab):
  hidden, embeddings, targets, weights = _rows_of_every_shape(seed=1)
  embeddings, targets = embeddings[:vocab], targets % vocab
  config = importlib.import_module("configs.base").get_config("local")
  config.mesh.update(**mesh_shape)
  mesh = parallel.make_mesh(config.mesh)
  with parallel.activate(mesh, parallel.logical_rules(config.mesh)):
    _assert_equal_to_full_logits((hidden, embeddings, targets, weights), chunk=5)


def test_a_top_logit_tied_across_vocabulary_shards_is_predicted_as_its_first_id():
  hidden, embeddings, targets, weights = _rows_of_every_shape(seed=3)
  # Ids 3 and 23 (one in each half of the vocabulary) share an embedding, and rows 0 and 1 end
  # on hidden states for which it gives the top logit: jnp.argmax predicts the first, id 3.
  embeddings[VOCAB // 2 + 3] = embeddings[3]
  hidden[:2, -4:] = 4 * embeddings[3]
  targets[:2, -4:] = 3
  config = importlib.import_module("configs.base").get_config("local")
  config.mesh.update(data=2, fsdp=2, tensor=2)
  mesh = parallel.make_mesh(config.mesh)
  with parallel.activate(mesh, parallel.logical_rules(config.mesh)):
    out = _assert_equal_to_full_logits((hidden, embeddings, targets, weights), chunk=5)
  assert out["row_correct"][0] >= 4 and out["row_correct"][1] >= 4


def test_under_a_mesh_the_embedding_gradient_leaves_split_as_the_parameter_is():
  """Vocabulary rows over tensor (each device's logits cover its own quarter of the vocabulary, 10 rows),
  width over fsdp (reduce-scattered, not all-reduced then resharded): no device holds the whole
  table's gradient."""
  hidden, embeddings, targets, weights = _rows_of_every_shape(seed=2)
  config = importlib.import_module("configs.base").get_config("local")
  config.mesh.update(data=1, fsdp=2, tensor=4)
  mesh = parallel.make_mesh(config.mesh)
  with parallel.activate(mesh, parallel.logical_rules(config.mesh)):
    _, _, (_, d_embeddings) = _under_test(hidden, embeddings, targets, weights, chunk=5)
  wanted = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("tensor", "fsdp"))
  assert d_embeddings.sharding.is_equivalent_to(wanted, 2), d_embeddings.sharding
  assert d_embeddings.addressable_shards[0].data.shape == (VOCAB // 4, WIDTH // 2)


def test_logits_are_computed_for_the_scored_positions_only_rounded_up_to_a_chunk():
  hidden, embeddings, targets, weights = _rows_of_every_shape()
  scored = int(np.sum(weights != 0))
  out = loss_lib.part_b_cross_entropy(hidden, embeddings, targets, weights, chunk=16)
  assert int(out["logit_positions"]) == -(-scored // 16) * 16
  assert scored < 0.6 * ROWS * LENGTH  # the point: far fewer than all positions
  none = loss_lib.part_b_cross_entropy(hidden, embeddings, targets, np.zeros_like(weights))
  assert float(none["logit_positions"]) == 0.0 and float(none["loss_sum"]) == 0.0


def test_bfloat16_hidden_states_give_the_full_logits_loss_within_bfloat16_rounding():
  hidden, embeddings, targets, weights = _rows_of_every_shape()
  hidden = jnp.asarray(hidden, jnp.bfloat16)
  value, _, (d_hidden, d_embeddings) = _under_test(hidden, embeddings, targets, weights, 16)
  (ref_value, _), (ref_hidden, ref_embeddings) = _reference(
      hidden, jnp.asarray(embeddings, jnp.bfloat16), targets, weights)
  assert d_hidden.dtype == jnp.bfloat16
  np.testing.assert_allclose(value, ref_value, rtol=1e-2)
  np.testing.assert_allclose(np.float32(d_hidden), np.float32(ref_hidden), rtol=0.05, atol=0.05)
  np.testing.assert_allclose(np.float32(d_embeddings), np.float32(ref_embeddings), rtol=0.05,
                             atol=0.3)


@pytest.mark.parametrize("objective", ["blank", "sentence", "document"])
def test_the_step_loss_equals_the_full_logits_loss_on_pipeline_batches(objective):
  """Real rows of each objective through the model: loss_sums and its parameter gradients equal
  those of the full [B, T, V] logits; document rows' Part B exceeds a blank-only budget."""
  config = importlib.import_module("configs.base").get_config("local")
  config.model.update(hidden_size=32, num_heads=2, num_layers=1, max_position=64,
                      hidden_dropout=0.0, attention_dropout=0.0, vocab_size=256)
  config.data.update(seq_len=64, batch_size=8, builtin_docs=200, blank_prob=0.0,
                     sentence_prob=0.0, document_prob=0.0)
  config.data[f"{objective}_prob"] = 1.0
  config.mesh.update(data=2, fsdp=2, tensor=2)
  tokenizer = tokenizers.load_tokenizer(config.data)
  docs, _ = sources.load_documents(config.data, tokenizer)
  batch = pipeline_lib.BatchPipeline(config.data, tokenizer, docs, seed=0).build_rows(
      0, np.arange(8))
  part_b = np.sum(batch["loss_mask"], axis=1) / config.data.seq_len
  if objective == "document":
    assert part_b.max() > 0.4  # beyond what 15% blank masking ever scores
  model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  params = nn.meta.unbox(model.init(jax.random.key(0), *step_lib.dummy_inputs(1, 64))["params"])

  def reference(p):
    logits = model.apply({"params": p}, batch["tokens"], batch["position_ids"],
                         batch["block_position_ids"], batch["sep"])
    token_loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    return jnp.sum(token_loss * batch["loss_mask"])

  mesh = parallel.make_mesh(config.mesh)
  with parallel.activate(mesh, parallel.logical_rules(config.mesh)):
    under_test = jax.jit(jax.value_and_grad(lambda p: step_lib.loss_sums(
        p, batch, None, model=model, deterministic=True)[0]))
    value, grads = under_test(params)
  ref_value, ref_grads = jax.value_and_grad(reference)(params)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_a_loss_on_every_position_the_first_included_counts_each_position_once():
  """Every weight nonzero (the first position of the first row too) and a chunk that does not
  divide the count: the positions that pad the last chunk must add nothing, even though they
  repeat a position that is scored."""
  hidden, embeddings, targets, _ = _rows_of_every_shape(seed=2)
  weights = np.ones((ROWS, LENGTH), np.float32)
  assert (ROWS * LENGTH) % 7  # the last chunk is partial
  _assert_equal_to_full_logits((hidden, embeddings, targets, weights), chunk=7)


def test_the_gradient_of_a_scaled_loss_is_scaled_as_the_loss_is():
  """A user averaging the loss (loss_sum / tokens) differentiates a scaled loss_sum: its
  gradients must be the full-logits ones times the same factor, not those of the sum."""
  hidden, embeddings, targets, weights = _rows_of_every_shape()
  tokens = float(np.sum(weights))

  def mean_loss(h, e):
    return loss_lib.part_b_cross_entropy(h, e, targets, weights, chunk=16)["loss_sum"] / tokens

  grads = jax.jit(jax.grad(mean_loss, argnums=(0, 1)))(hidden, embeddings)
  _, ref_grads = _reference(hidden, embeddings, targets, weights)
  for got, want in zip(grads, ref_grads):
    np.testing.assert_allclose(got, np.asarray(want) / tokens, rtol=1e-4, atol=1e-7)


def test_a_chunk_longer_than_the_batch_computes_no_more_positions_than_the_batch_has():
  """The default chunk (1024) exceeds a small device batch (2 rows of 256): the loop must not
  compute logits for a whole chunk of padding beyond the batch's own positions."""
  hidden, embeddings, targets, weights = _rows_of_every_shape()
  weights = np.ones_like(weights)
  out = loss_lib.part_b_cross_entropy(hidden, embeddings, targets, weights, chunk=10_000)
  assert int(out["logit_positions"]) == ROWS * LENGTH


def test_under_a_mesh_the_logit_positions_count_those_of_every_data_parallel_device():
  """Rows split over data x fsdp = 4 devices (2 rows each): each rounds its own scored count up
  to a chunk, and the reported figure sums the four (it is the whole step's work)."""
  hidden, embeddings, targets, weights = _rows_of_every_shape(seed=1)
  config = importlib.import_module("configs.base").get_config("local")
  config.mesh.update(data=2, fsdp=2, tensor=2)
  mesh = parallel.make_mesh(config.mesh)
  chunk, shards = 5, 4
  per_shard = np.sum(weights != 0, axis=1).reshape(shards, ROWS // shards).sum(axis=1)
  expected = sum(-(-int(count) // chunk) * chunk for count in per_shard)
  with parallel.activate(mesh, parallel.logical_rules(config.mesh)):
    out = jax.jit(lambda h, e, t, w: loss_lib.part_b_cross_entropy(h, e, t, w, chunk=chunk))(
        hidden, embeddings, targets, weights)
  assert int(out["logit_positions"]) == expected
  assert expected > max(-(-int(count) // chunk) * chunk for count in per_shard)


def test_fractional_weights_scale_each_position_s_loss_and_gradient():
  """Weights are a float per position (not only 0/1): a position weighted 0.25 or 3 adds that
  multiple of its cross-entropy, and of its gradient, as in the full-logits reference."""
  hidden, embeddings, targets, weights = _rows_of_every_shape(seed=3)
  scale = np.random.default_rng(3).choice([0.25, 1.0, 3.0], size=weights.shape)
  _assert_equal_to_full_logits((hidden, embeddings, targets, weights * scale), chunk=7)


def test_the_weights_receive_no_gradient():
  """Weights are data (the loss mask), not a parameter: their gradient is zero, as documented."""
  hidden, embeddings, targets, weights = _rows_of_every_shape()
  d_weights = jax.grad(lambda w: loss_lib.part_b_cross_entropy(
      hidden, embeddings, targets, w, chunk=16)["loss_sum"])(jnp.asarray(weights))
  assert not np.any(np.asarray(d_weights))


def test_tied_logits_of_bfloat16_hidden_states_are_accumulated_and_returned_in_float32():
  """Scoring and generation read these logits: with bfloat16 hidden states the products are
  summed in float32 and kept there (a bfloat16 result would round each logit by ~0.4%)."""
  hidden, embeddings, _, _ = _rows_of_every_shape()
  hidden = jnp.asarray(hidden, jnp.bfloat16)
  logits = model_lib.tied_logits(jnp.asarray(embeddings), hidden)
  assert logits.dtype == jnp.float32
  exact = np.einsum("bth,vh->btv", np.float64(hidden),
                    np.float64(jnp.asarray(embeddings, jnp.bfloat16)))
  np.testing.assert_allclose(logits, exact, rtol=1e-5, atol=1e-5 * np.abs(exact).max())


def test_a_loss_chunk_below_one_is_refused_not_read_as_the_default():
  hidden, embeddings = jnp.ones((1, 4, 8)), jnp.ones((16, 8))
  targets, weights = jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4))
  with pytest.raises(ValueError, match="chunk=0: the loss reads at least one position"):
    loss_lib.part_b_cross_entropy(hidden, embeddings, targets, weights, chunk=0)


def test_a_width_that_does_not_split_over_fsdp_gives_the_full_logits_values_and_gradients():
  """Width 15 on fsdp=2: the embedding gradient cannot be reduce-scattered over its width, so
  it is summed whole instead of failing to compile."""
  hidden, embeddings, targets, weights = _rows_of_every_shape(seed=4)
  hidden, embeddings = hidden[..., :15], embeddings[:, :15]
  config = importlib.import_module("configs.base").get_config("local")
  config.mesh.update(data=1, fsdp=2, tensor=4)
  mesh = parallel.make_mesh(config.mesh)
  with parallel.activate(mesh, parallel.logical_rules(config.mesh)):
    _assert_equal_to_full_logits((hidden, embeddings, targets, weights), chunk=5)


def test_logits_far_above_float32_s_exp_range_give_a_finite_loss_and_gradients():
  """Logits in the hundreds (exp overflows float32 past ~88): the softmax is taken relative to
  the top logit, so the loss and its gradients are finite and equal the full-logits ones."""
  hidden, embeddings, targets, weights = _rows_of_every_shape(seed=5)
  hidden = 30 * hidden
  top = np.max(np.einsum("bth,vh->btv", hidden, embeddings))
  assert top > 200, top
  value, out, grads = _under_test(hidden, embeddings, targets, weights, 7)
  (ref_value, (ref_rows, _)), ref_grads = _reference(hidden, embeddings, targets, weights)
  assert np.isfinite(value) and all(np.all(np.isfinite(grad)) for grad in grads)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  np.testing.assert_allclose(out["row_loss"], ref_rows, rtol=1e-5, atol=1e-3)
  for got, want in zip(grads, ref_grads):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_a_top_logit_tied_within_one_vocabulary_shard_is_predicted_as_its_first_id():
  """No mesh (one shard): ids 3 and 9 share an embedding that gives the top logit, and the
  target is 3; jnp.argmax predicts the first, so those positions count as correct."""
  hidden, embeddings, targets, weights = _rows_of_every_shape(seed=6)
  embeddings[9] = embeddings[3]
  hidden[:2, -4:] = 4 * embeddings[3]
  targets[:2, -4:] = 3
  weights[:2, -4:] = 1
  out = _assert_equal_to_full_logits((hidden, embeddings, targets, weights), chunk=5)
  assert out["row_correct"][0] >= 4 and out["row_correct"][1] >= 4


def test_with_bfloat16_hidden_states_every_vocabulary_matmul_reads_bfloat16_operands():
  """float32 embeddings are cast to the hidden states' dtype, forward and backward: each matmul
  of the loss and its gradient multiplies bfloat16 by bfloat16 (accumulating in float32), not
  float32 by float32 at several times the cost."""
  hidden, embeddings, targets, weights = _rows_of_every_shape()
  grad = jax.grad(lambda h, e: loss_lib.part_b_cross_entropy(
      h, e, targets, weights, chunk=16)["loss_sum"], argnums=(0, 1))
  text = jax.jit(grad).lower(jnp.asarray(hidden, jnp.bfloat16),
                             jnp.asarray(embeddings)).as_text()
  operands = re.findall(r"stablehlo\.dot_general .*: \((tensor<[^>]*>), (tensor<[^>]*>)\)",
                        text)
  assert len(operands) >= 3, text  # logits, d_hidden, d_embeddings
  for pair in operands:
    assert all(operand.endswith("xbf16>") for operand in pair), pair


def test_the_loss_loop_runs_once_per_chunk_of_scored_positions_not_per_chunk_of_the_batch(
    monkeypatch):
  """The trip count comes from the data: a batch with few scored positions runs few chunks (a
  loop over every chunk of the batch gives the same values, each extra chunk weighing 0, at
  many times the cost). Run eagerly, so the count the loop is given is a number."""
  hidden, embeddings, targets, weights = _rows_of_every_shape()
  trips, fori_loop = [], jax.lax.fori_loop
  monkeypatch.setattr(jax.lax, "fori_loop", lambda lower, upper, body, carry: (
      trips.append(int(upper) - int(lower)) or fori_loop(lower, upper, body, carry)))
  for scored_weights in (weights, np.zeros_like(weights)):
    loss_lib.part_b_cross_entropy(hidden, embeddings, targets, scored_weights, chunk=16)
  scored = int(np.sum(weights != 0))
  assert ROWS * LENGTH >= 2 * scored  # so the batch's chunk count is not the scored one
  assert trips == [-(-scored // 16), 0], trips
