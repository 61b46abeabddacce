"""Every random draw of the model is its own: hidden dropout drops a residual branch, never the
residual stream; embedding dropout draws a mask for every position of every row; the fused
query, key and value kernels start as independent draws. Each statistic alone (a rate, a std)
would look right with a draw shared, so each test looks at two draws together."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_model_semantics import SEQ, VOCAB, WIDTH, _model, _params

RATE = 0.5


@pytest.fixture(scope="module", name="zeros")
def _embedding_gradient_zeros():
  """[B, T, WIDTH]: where a training forward's gradient reaching each token's word embedding is
  zero, the layer's two branches set to add nothing. Every token id occurs once, so that is
  where its embedding's entries were dropped."""
  model = _model(num_layers=1, hidden_dropout=RATE)
  tokens = np.random.default_rng(0).permutation(VOCAB)[:2 * SEQ].reshape(2, SEQ)
  arange = np.broadcast_to(np.arange(SEQ, dtype=np.int32), (2, SEQ))
  batch = (tokens.astype(np.int32), arange, np.zeros_like(arange), np.array([SEQ, SEQ], np.int32))
  params = _params(model, batch)
  layer = params["layers_0"]  # zero output projections: the layer is the identity
  for branch, names in (("attention", ("out_kernel", "out_bias")),
                        ("mlp", ("wo_kernel", "wo_bias"))):
    for name in names:
      layer[branch][name] = jnp.zeros_like(layer[branch][name])
  cotangent = jax.random.normal(jax.random.key(7), (2, SEQ, WIDTH))
  loss = lambda p: jnp.sum(model.apply({"params": p}, *batch, deterministic=False,  # noqa: E731
                                       return_hidden=True,
                                       rngs={"dropout": jax.random.key(0)}) * cotangent)
  return np.asarray(jax.jit(jax.grad(loss))(params)["word_embeddings"])[tokens] == 0


def test_hidden_dropout_drops_the_residual_branches_never_the_residual_stream(zeros):
  # GLM's layer is x + Drop(Attn(LN(x))), then x + Drop(MLP(LN(x))): with both branches
  # zero it passes its input through whatever dropout draws, so the only zeros left in the
  # embeddings' gradient are embedding dropout's, about RATE of them (512 entries: std 0.022).
  # A dropout of the sum, Drop(x + branch), would zero 1 - (1 - RATE)^2 = 0.75 of them (one
  # branch) or 1 - (1 - RATE)^3 = 0.875 (both).
  assert abs(zeros.mean() - RATE) < 0.08, zeros.mean()


def test_embedding_dropout_draws_a_mask_for_every_position_of_every_row(zeros):
  # Two positions (two rows) drop the same features about half the time (64 or 256 entries
  # compared: std 0.06 or 0.03, so 0.8 is 4.8 sigma or more); a mask shared along the
  # sequence (or the batch) would drop the same ones always.
  across_positions = [np.mean(zeros[:, 0] == zeros[:, t]) for t in range(1, SEQ)]
  across_rows = np.mean(zeros[0] == zeros[1])
  assert max(across_positions) < 0.8 and across_rows < 0.8, (across_positions, across_rows)


def test_the_fused_kernel_s_queries_keys_and_values_start_as_independent_draws():
  model = _model(num_layers=1, hidden_size=64)
  tokens = np.zeros((1, SEQ), np.int32)
  params = _params(model, (tokens, tokens, tokens, np.array([SEQ], np.int32)))
  qkv = np.asarray(params["layers_0"]["attention"]["qkv_kernel"])  # [H, 3, N, D]
  slots = qkv.transpose(1, 0, 2, 3).reshape(3, -1)  # 4096 entries each
  correlation = np.corrcoef(slots)
  # Independent: each correlation within a few 1/64 (its std) of zero; copies: 1.
  assert np.all(np.abs(correlation[np.triu_indices(3, 1)]) < 0.1), correlation
