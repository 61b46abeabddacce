"""Position encodings and the GLM mask, as pure jnp functions."""
import jax
import jax.numpy as jnp
import numpy as np

from glmjax.model import positions
from glmjax.model import mask as mask_lib


def _random(shape, seed=0):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _score(q, k):
  return jnp.sum(q * k, axis=-1)


def test_rope_score_depends_only_on_relative_position():
  q, k = _random((1, 1, 1, 16), 0), _random((1, 1, 1, 16), 1)
  score = lambda qpos, kpos: float(_score(positions.apply_rope(q, jnp.array([[qpos]])),
                                          positions.apply_rope(k, jnp.array([[kpos]])))[0, 0, 0])
  base = score(7, 3)
  for shift in (1, 5, 40):
    np.testing.assert_allclose(score(7 + shift, 3 + shift), base, rtol=1e-4, atol=1e-5)
  assert abs(score(9, 3) - base) > 1e-3  # a different offset gives a different score
  # Position 0 is the identity; rotation preserves the norm.
  np.testing.assert_allclose(positions.apply_rope(q, jnp.zeros((1, 1), jnp.int32)), q, atol=1e-7)
  np.testing.assert_allclose(jnp.linalg.norm(positions.apply_rope(q, jnp.array([[11]]))),
                             jnp.linalg.norm(q), rtol=1e-6)


def test_rope_2d_rotates_each_half_by_its_own_id():
  x = _random((2, 5, 3, 16))
  pos = jnp.arange(10).reshape(2, 5)
  block = (jnp.arange(10) % 3).reshape(2, 5)
  rotated = positions.apply_rope_2d(x, pos, block)
  np.testing.assert_allclose(rotated[..., :8], positions.apply_rope(x[..., :8], pos), atol=1e-6)
  np.testing.assert_allclose(rotated[..., 8:], positions.apply_rope(x[..., 8:], block), atol=1e-6)
  # Block ids move only the second half; position ids only the first.
  other_block = positions.apply_rope_2d(x, pos, block + 4)
  np.testing.assert_allclose(other_block[..., :8], rotated[..., :8], atol=1e-7)
  assert float(jnp.max(jnp.abs(other_block[..., 8:] - rotated[..., 8:]))) > 1e-2


def test_rope_2d_scores_are_relative_in_each_dimension():
  q, k = _random((1, 1, 1, 16), 2), _random((1, 1, 1, 16), 3)
  def score(qp, qb, kp, kb):
    rot = lambda x, p, b: positions.apply_rope_2d(x, jnp.array([[p]]), jnp.array([[b]]))
    return float(_score(rot(q, qp, qb), rot(k, kp, kb))[0, 0, 0])
  np.testing.assert_allclose(score(9, 2, 4, 1), score(15, 5, 10, 4), rtol=1e-4, atol=1e-5)


def test_learned_2d_adds_both_tables():
  table, block_table = _random((9, 4), 4), _random((9, 4), 5)
  pos, block = jnp.array([[0, 3, 3]]), jnp.array([[0, 1, 2]])
  got = positions.learned_2d_embeddings(table, block_table, pos, block)
  np.testing.assert_allclose(got[0, 2], table[3] + block_table[2], atol=1e-7)


def test_a_learned_position_past_the_table_gives_nan_not_the_last_row():
  # The original's torch lookup raises there; a clamped lookup would silently reuse row P, so
  # an out-of-range id must poison the output (the step's non-finite guard then stops the run).
  table, block_table = _random((9, 4), 4), _random((9, 4), 5)
  pos, block = jnp.array([[8, 9, 2]]), jnp.array([[1, 1, 12]])
  got = jax.jit(positions.learned_2d_embeddings)(table, block_table, pos, block)
  np.testing.assert_allclose(got[0, 0], table[8] + block_table[1], atol=1e-7)
  assert np.isnan(np.asarray(got[0, 1:])).all()


def test_glm_mask_matches_definition():
  seq_len = 9
  sep = jnp.array([0, 1, 4, 9])
  mask = np.asarray(mask_lib.glm_mask(sep, seq_len))
  for b, s in enumerate(np.asarray(sep)):
    expected = np.array([[j < s or j <= i for j in range(seq_len)] for i in range(seq_len)])
    np.testing.assert_array_equal(mask[b], expected)
  # The O(T) forms describe the same mask.
  key_end = np.asarray(mask_lib.key_ends(sep, seq_len))
  qpos = np.asarray(mask_lib.query_positions(sep, seq_len))
  cols = np.arange(seq_len)
  np.testing.assert_array_equal(cols[None, None, :] < key_end[:, :, None], mask)
  np.testing.assert_array_equal(cols[None, None, :] <= qpos[:, :, None], mask)


def test_mask_is_built_with_jnp_under_jit():
  seq_len = 6
  build = jax.jit(lambda sep: mask_lib.glm_mask(sep, seq_len))
  np.testing.assert_array_equal(build(jnp.array([3])), mask_lib.glm_mask(jnp.array([3]), seq_len))


def _np_rope(x, pos, theta=10000.0):
  """float64 rotary embedding from its definition: dims (i, i + D/2) rotate by
  pos * theta^(-2i/D)."""
  x = np.asarray(x, np.float64)
  half = x.shape[-1] // 2
  angle = np.asarray(pos, np.float64)[..., None, None] * theta ** (-2.0 * np.arange(half)
                                                                   / x.shape[-1])
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * np.cos(angle) - x2 * np.sin(angle),
                         x2 * np.cos(angle) + x1 * np.sin(angle)], axis=-1)


def test_bfloat16_rope_rotates_by_the_exact_position_at_long_context():
  # bfloat16 holds integers exactly only up to 256: the angles must come from the integer
  # positions (in float32), not from positions rounded to the input's dtype.
  pos = jnp.arange(301, 2048, 7)[None]  # past 256, 512, 1024: most inexact in bf16
  x = _random((1, pos.shape[1], 2, 16), 6).astype(jnp.bfloat16)
  got = positions.apply_rope(x, pos)
  assert got.dtype == jnp.bfloat16
  expected = _np_rope(x, pos)
  # Within bfloat16 rounding of the result (8 significant bits) of |x| <= ~4.
  np.testing.assert_allclose(np.asarray(got, np.float64), expected, atol=0.04, rtol=0)
  # Neighbouring positions rotate the same vector differently.
  same = jnp.broadcast_to(x[:, :1], (1, 4, 2, 16))
  rotated = np.asarray(positions.apply_rope(same, jnp.array([[1000, 1001, 1002, 1003]])),
                       np.float32)
  for i in range(3):
    assert np.max(np.abs(rotated[0, i + 1] - rotated[0, i])) > 0.1, i


def test_rope_and_rope_2d_rotate_queries_and_keys_at_the_configured_base():
  # model.rope_theta reaches both rotary encodings: with a base of 500 (not the default 1e4),
  # q and k rotate by pos * 500^(-2i/d) over the whole head (rope) or over each half (rope_2d).
  q, k = _random((1, 5, 2, 16), 7), _random((1, 5, 2, 16), 8)
  pos, block = jnp.array([[0, 3, 9, 40, 41]]), jnp.array([[0, 0, 1, 2, 7]])
  for encoding in ("rope", "rope_2d"):
    got = positions.rotate_queries_and_keys(q, k, encoding, pos, block, 500.0)
    for name, x, rotated in zip("qk", (q, k), got):
      if encoding == "rope":
        expected = _np_rope(x, pos, 500.0)
      else:
        expected = np.concatenate([_np_rope(x[..., :8], pos, 500.0),
                                   _np_rope(x[..., 8:], block, 500.0)], axis=-1)
      np.testing.assert_allclose(rotated, expected, atol=1e-5, err_msg=f"{encoding} {name}")
