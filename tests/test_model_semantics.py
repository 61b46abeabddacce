"""The Flax GLM computes GLM in training too: dropout where and at the rate the original applies
it, and layers initialised independently. Tiny models (test_model.py holds the forward)."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from glmjax import config as config_lib
from glmjax import model as model_lib
from glmjax.model import glm as glm_lib

BATCH, SEQ, VOCAB, WIDTH = 2, 8, 64, 32


def _model(**overrides):
  config = config_lib.model_defaults()
  config.update(vocab_size=VOCAB, hidden_size=WIDTH, num_layers=2, num_heads=4,
                max_position=SEQ, dtype="float32", attention="xla", hidden_dropout=0.0,
                attention_dropout=0.0, scan_layers=False)
  config.update(**overrides)
  return model_lib.GLM(model_lib.ModelConfig.from_config(config))


def _batch():
  tokens = np.random.default_rng(0).integers(0, VOCAB, (BATCH, SEQ)).astype(np.int32)
  sep = np.array([3, 5], np.int32)
  arange = np.arange(SEQ)[None]
  position_ids = np.where(arange < sep[:, None], arange, sep[:, None] - 1).astype(np.int32)
  block_ids = np.maximum(arange - sep[:, None] + 1, 0).astype(np.int32)
  return tokens, position_ids, block_ids, sep


def _params(model, batch):
  return nn.meta.unbox(model.init(jax.random.key(0), *batch)["params"])


def test_the_model_asks_its_attention_for_the_attention_dropout_rate_not_the_hidden_one(
    monkeypatch):
  # GLM has two rates: attention_dropout on the attention probabilities, hidden_dropout on the
  # embeddings and residual branches. Record what each layer's attention is asked for.
  asked = []
  real = glm_lib.attention_lib.masked_attention

  def recording(*args, dropout_rate=0.0, dropout_rng=None, **kwargs):
    asked.append((dropout_rate, dropout_rng is not None))
    return real(*args, dropout_rate=dropout_rate, dropout_rng=dropout_rng, **kwargs)

  monkeypatch.setattr(glm_lib.attention_lib, "masked_attention", recording)
  model, batch = _model(hidden_dropout=0.3, attention_dropout=0.1), _batch()
  params = _params(model, batch)
  asked.clear()
  model.apply({"params": params}, *batch, deterministic=False,
              rngs={"dropout": jax.random.key(1)})
  assert asked == [(0.1, True), (0.1, True)]  # one call per layer
  asked.clear()
  model.apply({"params": params}, *batch)  # evaluation: no dropout anywhere
  assert asked == [(0.0, False), (0.0, False)]


def test_attention_dropout_alone_makes_a_training_forward_random():
  # hidden_dropout=0: the only randomness left is on the attention probabilities.
  model, batch = _model(attention_dropout=0.2), _batch()
  params = _params(model, batch)
  run = jax.jit(lambda key: model.apply({"params": params}, *batch, deterministic=False,
                                        rngs={"dropout": key}))
  clean = model.apply({"params": params}, *batch)
  assert float(jnp.max(jnp.abs(run(jax.random.key(0)) - clean))) > 1e-4
  assert float(jnp.max(jnp.abs(run(jax.random.key(0)) - run(jax.random.key(1))))) > 1e-4


def test_a_training_forward_returns_the_final_layernorm_output_undropped():
  # GLM (mpu/transformer.py) ends with final_layernorm and no dropout after it. With its
  # initial scale 1 and bias 0, every position's hidden state then has mean 0 and variance 1
  # whatever was dropped before it; a dropout after it would zero entries and scale the rest.
  model, batch = _model(hidden_dropout=0.5, attention_dropout=0.5), _batch()
  params = _params(model, batch)
  hidden = np.asarray(model.apply({"params": params}, *batch, deterministic=False,
                                  return_hidden=True, rngs={"dropout": jax.random.key(0)}),
                      np.float64)
  np.testing.assert_allclose(hidden.mean(-1), 0.0, atol=1e-5)
  # var / (var + eps): 0.99 at initialisation's small residual stream; a dropout doubles it.
  np.testing.assert_allclose(hidden.var(-1), 1.0, rtol=0.05)


def test_each_layer_of_a_scanned_stack_is_initialised_with_its_own_weights():
  # Layers drawn from one key would be copies of each other: every layer would learn the same.
  model, batch = _model(scan_layers=True, num_layers=3), _batch()
  layers = _params(model, batch)["layers"]
  for path, stacked in jax.tree_util.tree_leaves_with_path(layers):
    stacked = np.asarray(stacked)
    if np.all(stacked == stacked[:1]):  # initialised to a constant: LayerNorm, biases
      assert np.all(stacked == stacked.flat[0]), path
      continue
    for i in range(3):
      for j in range(i):
        assert not np.allclose(stacked[i], stacked[j]), (path, i, j)


def test_the_attention_output_projection_sees_every_context_entry_of_a_training_forward():
  # GLM drops the attention branch after its output projection (output_dropout), never the
  # context going into it. One token: the output kernel's gradient is the outer product of the
  # context and the branch's cotangent, so it is zero on exactly the dropped output columns
  # (where the output bias's gradient is zero) and on no whole context row.
  model = _model(num_layers=1, hidden_dropout=0.5)
  batch = tuple(np.asarray(x)[:1, :1] for x in _batch()[:3]) + (np.array([1], np.int32),)
  params = _params(model, batch)
  cotangent = jax.random.normal(jax.random.key(7), (1, 1, WIDTH))
  loss = lambda p: jnp.sum(model.apply({"params": p}, *batch, deterministic=False,
                                       return_hidden=True,
                                       rngs={"dropout": jax.random.key(0)}) * cotangent)
  grads = jax.jit(jax.grad(loss))(params)["layers_0"]["attention"]
  kernel = np.asarray(grads["out_kernel"]).reshape(WIDTH, WIDTH)  # [context, output]
  dropped_columns = np.asarray(grads["out_bias"]) == 0
  assert 0 < dropped_columns.sum() < WIDTH  # rate 0.5 over 32 entries
  np.testing.assert_array_equal(kernel == 0, np.broadcast_to(dropped_columns, kernel.shape))


def test_embedding_dropout_drops_the_sum_of_word_and_position_embeddings_with_one_mask():
  # GLM (mpu/transformer.py) adds the word, position and block position embeddings, then drops
  # the sum. Each id below is looked up once, so an entry's gradient is zero exactly where the
  # sum was dropped: the same entries in all three tables.
  model = _model(num_layers=1, hidden_dropout=0.5)
  tokens = np.random.default_rng(0).permutation(VOCAB)[:SEQ][None].astype(np.int32)
  arange = np.arange(SEQ, dtype=np.int32)[None]
  batch = (tokens, arange, SEQ - arange, np.array([SEQ], np.int32))  # ids 0..8, 8..1
  params = _params(model, batch)
  cotangent = jax.random.normal(jax.random.key(7), (1, SEQ, WIDTH))
  loss = lambda p: jnp.sum(model.apply({"params": p}, *batch, deterministic=False,
                                       return_hidden=True,
                                       rngs={"dropout": jax.random.key(0)}) * cotangent)
  grads = jax.jit(jax.grad(loss))(params)
  dropped = {name: np.asarray(grads[name])[ids[0]] == 0 for name, ids in (
      ("word_embeddings", tokens), ("position_embeddings", batch[1]),
      ("block_position_embeddings", batch[2]))}
  assert 0.3 < dropped["word_embeddings"].mean() < 0.7  # rate 0.5 over 256 entries
  np.testing.assert_array_equal(dropped["position_embeddings"], dropped["word_embeddings"])
  np.testing.assert_array_equal(dropped["block_position_embeddings"],
                                dropped["word_embeddings"])


def test_glm_s_tanh_gelu_equals_jax_s_in_value_and_gradient():
  x = jnp.linspace(-6.0, 6.0, 1201, dtype=jnp.float32)
  weights = jax.random.normal(jax.random.key(0), x.shape)
  np.testing.assert_array_equal(glm_lib.gelu_tanh(x), jax.nn.gelu(x, approximate=True))
  ours = jax.grad(lambda v: jnp.sum(glm_lib.gelu_tanh(v) * weights))
  reference = jax.grad(lambda v: jnp.sum(jax.nn.gelu(v, approximate=True) * weights))
  # Where tanh is near -1 both lose digits to cancellation; 1e-5 of a gradient up to 1.13.
  np.testing.assert_allclose(ours(x), reference(x), rtol=1e-5, atol=1e-5)
  # bfloat16: the derivative is formed in float32 and rounded once, so it is the float32
  # gradient of the same inputs to within bfloat16's rounding.
  x16, weights16 = x.astype(jnp.bfloat16), weights.astype(jnp.bfloat16)
  ours16 = jax.grad(lambda v: jnp.sum((glm_lib.gelu_tanh(v) * weights16).astype(jnp.float32)))(x16)
  assert ours16.dtype == jnp.bfloat16
  reference32 = jax.grad(lambda v: jnp.sum(jax.nn.gelu(v, approximate=True)
                                           * weights16.astype(jnp.float32)))(
                                               x16.astype(jnp.float32))
  np.testing.assert_allclose(ours16.astype(jnp.float32), reference32, rtol=2**-8, atol=1e-5)


# The model's variant fields: each value is a branch of model/glm.py or model/positions.py.
VARIANT_FIELDS = ("position_encoding", "norm", "mlp", "activation")


def test_every_value_of_a_variant_field_reaches_the_forward():
  # glm.py tells the variants apart with if/else: a value added to model_config's list and
  # never implemented would be validated, then silently computed as the else branch.
  batch = _batch()
  for field in VARIANT_FIELDS:
    outputs = {}
    for value in model_lib.model_config.CHOICES[field]:
      model = _model(**{field: value})
      params = model.init(jax.random.key(0), *batch)
      outputs[value] = np.asarray(model.apply(params, *batch))
    same = [(a, b) for i, a in enumerate(outputs) for b in list(outputs)[i + 1:]
            if np.array_equal(outputs[a], outputs[b])]
    assert not same, f"model.{field}: {same} compute the same function"


def test_the_numpy_forward_is_compared_for_every_value_of_every_variant_field():
  # tests/test_model.py's VARIANTS: a value missing there is never checked against the definition.
  from test_model import VARIANTS  # pylint: disable=import-outside-toplevel
  missing = [f"model.{field}={value}" for field in VARIANT_FIELDS
             for value in model_lib.model_config.CHOICES[field]
             if not any(variant[field] == value for variant in VARIANTS)]
  assert not missing, missing
