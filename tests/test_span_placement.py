"""[MASK] span placement (glmjax/data/span_placement.py): which document each span goes to, by the
original's rule, and where in it, as the original places them; what a fixed-shape row does with
the spans the original would drop it for."""
import numpy as np
from scipy import stats

from glmjax.data import infilling, span_placement
from glmjax.data.infilling import RowRandom


def test_place_spans_single_document_stays_inside_and_apart():
  rows = 2000
  rng = RowRandom.for_rows(2, 0, np.arange(rows))
  lengths, n_spans, text_len = infilling.sample_blank_lengths(
      rng, infilling.span_length_cdf(3.0, 39), 0.15, 128)
  seg_start = np.ones((rows, 1), np.int64)
  seg_len = (text_len - 2)[:, None]
  starts, placed, count = span_placement.place_spans(rng, lengths, n_spans, seg_start, seg_len,
                                                     0.15)
  np.testing.assert_array_equal(count, n_spans)
  np.testing.assert_array_equal(placed, lengths)   # one segment: lengths kept, order kept
  valid = np.arange(starts.shape[1])[None] < count[:, None]
  stops = starts + placed
  assert np.all(starts[valid] >= 1) and np.all(stops[valid] <= (text_len - 1)[:, None].repeat(
      starts.shape[1], 1)[valid])
  gaps = starts[:, 1:] - stops[:, :-1]
  assert np.all(gaps[valid[:, 1:]] >= 1)
  # Uniform placement: the first span's start is spread over the row, not stuck at the left.
  first = starts[:, 0]
  assert first.min() == 1 and np.percentile(first, 90) > 25


def test_place_spans_multi_document_respects_barriers():
  rows = 500
  rng = RowRandom.for_rows(3, 0, np.arange(rows))
  lengths, n_spans, _ = infilling.sample_blank_lengths(
      rng, infilling.span_length_cdf(3.0, 39), 0.15, 256)
  sizes = rng.integers(9, np.full(rows, 60), 6)  # segments of 0..60 tokens
  seg_start = np.cumsum(sizes + 2, axis=1) - sizes - 1
  starts, placed, count = span_placement.place_spans(rng, lengths, n_spans, seg_start, sizes, 0.15)
  assert np.mean(count == n_spans) > 0.9
  for r in range(rows):
    covered = np.zeros(seg_start[r, -1] + sizes[r, -1] + 2, int)
    for s, ell in zip(starts[r, :count[r]], placed[r, :count[r]]):
      assert ell >= 1
      covered[s:s + ell] += 1
      seg = np.searchsorted(seg_start[r], s, side="right") - 1
      assert s + ell <= seg_start[r, seg] + sizes[r, seg]       # inside one segment
      assert covered[s - 1] == 0 and covered[s + ell] == 0       # >= 1 token apart
    assert covered.max() <= 1


def _place_one_layout(lengths, seg_start, seg_len, rows=300, ratio=0.15):
  """place_spans of the same spans and segments in many rows (each with its own random gaps):
  the distinct (starts, lengths, count) the rows get."""
  rng = RowRandom.for_rows(5, 0, np.arange(rows))
  starts, placed, count = span_placement.place_spans(
      rng, np.tile([lengths], (rows, 1)), np.full(rows, len(lengths)),
      np.tile([seg_start], (rows, 1)), np.tile([seg_len], (rows, 1)), ratio)
  return {(tuple(s[:c]), tuple(p[:c]), int(c)) for s, p, c in zip(
      starts.tolist(), placed.tolist(), count.tolist())}


def test_spans_that_exactly_fill_a_segment_are_all_placed():
  # A segment of 6 tokens at 1..6 offers 7 units; spans of 2 and 3 need 3 + 4 = 7 (each
  # itself and one separator): the only layout is 2 tokens at 1, a gap at 3, 3 tokens at 4.
  assert _place_one_layout([2, 3], [1], [6]) == {((1, 4), (2, 3), 2)}


def test_a_span_is_placed_whole_in_the_later_document_where_it_just_fits():
  # Two documents' texts: 1 token at 1 and 2 tokens at 4..5. A 2-token span fits only in the
  # second, exactly: wherever its gap falls, it is kept whole there, never shortened.
  assert _place_one_layout([2], [1, 4], [1, 2]) == {((4,), (2,), 1)}


def test_spans_the_reference_s_rule_leaves_over_go_where_they_fit_and_a_row_keeps_one():
  # Texts of 7 (at 1) and 4 (at 10): the 4 has a budget of int(0.6) = 0 and the 7 holds the two
  # spans of 3 (3 + 1 + 3); the reference would drop this row for its third span. Here the span
  # of 1 goes to the 4, anywhere in it.
  assert _place_one_layout([3, 3, 1], [1, 10], [7, 4]) == {
      ((1, 5, x), (3, 3, 1), 3) for x in range(10, 14)}
  # A span of 3 left over fills a text of 3 (4 units) exactly.
  assert _place_one_layout([3, 3, 3], [1, 10], [7, 3]) == {((1, 5, 10), (3, 3, 3), 3)}
  # A text of 10 that holds a span of 1 (2 units) has 9 left: a span of 9 left over (10 units)
  # does not fit there beside it.
  assert {c for _, _, c in _place_one_layout([1, 9, 9, 9], [1, 30], [20, 10])} == {3}
  # Texts of 20, 10 and 8: the two shorter have budgets of 1; the 20 holds the spans of 9; the
  # two spans of 2 go to the longer of the others (what is left over goes to documents from the
  # longest down), not to the 8 at 50.
  layouts = _place_one_layout([9, 9, 2, 2], [1, 30, 50], [20, 10, 8])
  assert len(layouts) > 1 and all(c == 4 and 30 <= s[2] < s[3] < 40 for s, _, c in layouts)
  # Two one-token texts and a 3-token span: nothing holds it, so the row gets one span of 1 in
  # its longest text (the first of equals), and still trains.
  assert _place_one_layout([3], [1, 4], [1, 1]) == {((1,), (1,), 1)}
  assert _place_one_layout([3], [1], [0]) == {((), (), 0)}  # a row with no text to mask: none


def test_a_shorter_document_never_takes_more_spans_than_it_holds_whatever_the_ratio():
  # At mask_ratio 1 the 3 tokens at 1..3 have a budget of 3, but hold two 1-token spans with
  # their separators, not three; the third goes to the 10 at 6.
  layouts = _place_one_layout([1, 1, 1], [1, 6], [3, 10], ratio=1.0)
  assert {s[:2] for s, _, _ in layouts} == {(1, 3)} and all(
      c == 3 and 6 <= s[2] <= 15 for s, _, c in layouts)
  # Spans of 1 and 2 need 5 units, the 3 tokens offer 4: the 2 goes to the 10.
  layouts = _place_one_layout([1, 2], [1, 6], [3, 10], ratio=1.0)
  assert all(c == 2 and p == (1, 2) and 1 <= s[0] <= 3 and 6 <= s[1] <= 14
             for s, p, c in layouts), layouts


def _reference_documents(lengths, seg_len, ratio):
  """The reference's sample_span_in_document, its assignment part, row by row in plain Python:
  documents from the shortest (the later first among equals), each but the longest filling its
  own int(ratio * length) budget, the longest taking what fits with separators."""
  docs = sorted(range(len(seg_len)), key=lambda d: (seg_len[d], -d))
  out, i = [], 0
  for rank, d in enumerate(docs):
    total, n = 0, 0
    while i + n < len(lengths):
      if rank < len(docs) - 1:
        fits = total + lengths[i + n] <= int(seg_len[d] * ratio)
      else:
        fits = total + lengths[i + n] + n <= seg_len[d]
      if not fits:
        break
      total, n = total + lengths[i + n], n + 1
    out, i = out + [d] * n, i + n
  return out + [-1] * (len(lengths) - i)


def test_spans_go_to_documents_as_the_reference_assigns_them():
  rows = 3000
  rng = RowRandom.for_rows(11, 0, np.arange(rows))
  lengths, n_spans, _ = infilling.sample_blank_lengths(
      rng, infilling.span_length_cdf(3.0, 39), 0.15, 256)
  seg_len = rng.integers(12, np.full(rows, 90), 5) * (rng.uniform(13, 5) < 0.8)  # some empty
  seg_len[:100] = 40  # equal lengths: which is the longest
  document, placed = span_placement.assign_to_documents(lengths, n_spans, seg_len, 0.15)
  left_over = 0
  for r in range(rows):
    expected = _reference_documents(lengths[r, :n_spans[r]].tolist(), seg_len[r].tolist(), 0.15)
    assigned = [d for d in expected if d >= 0]  # the reference keeps the row if that is all
    left_over += len(assigned) < n_spans[r]
    assert document[r, :len(assigned)].tolist() == assigned, r
    if len(assigned) == n_spans[r]:
      assert np.all(document[r, n_spans[r]:] == -1), r
      np.testing.assert_array_equal(placed[r], np.where(document[r] >= 0, lengths[r], 0))
  # Both rules at work: about a third of the spans go to documents other than the longest, and
  # some rows have spans left over; among equals the later document fills its budget first.
  active = np.arange(lengths.shape[1])[None, :] < n_spans[:, None]
  elsewhere = document != np.argmax(seg_len, axis=1)[:, None]
  assert 0.2 < np.mean(elsewhere[active]) < 0.5 and left_over > 50
  assert np.mean(document[:100, 0] == 4) > 0.9  # (0: a first span over the budget of 6)


def test_no_token_of_a_packed_row_starts_a_span_more_often_than_its_document_s_others():
  # One span of 1 token over texts of 5 (tokens 1..5) and 6 (8..13): the 5 has no budget
  # (int(0.75) = 0), so the span is in the 6, each of its tokens equally likely. Before, spans
  # were placed along the joined texts and one drawn across the boundary moved to the next
  # text's first token, which started spans twice as often as the others.
  share = _one_token_span_starts([1, 8], [5, 6])
  assert share[:8].sum() == 0 and share[14:].sum() == 0
  assert stats.chisquare(share[8:14] * 22000).pvalue > 1e-3
  # Two texts of 20: each takes spans, and inside each every first token is as likely.
  rows = 20000
  starts, placed, count = span_placement.place_spans(
      RowRandom.for_rows(12, 0, np.arange(rows)), np.ones((rows, 4), np.int64),
      np.full(rows, 4), np.tile([1, 23], (rows, 1)), np.tile([20, 20], (rows, 1)), 0.15)
  assert np.all(count == 4)  # the second text (the later of equals) takes its budget of 3
  second = starts[:, 1:].ravel()
  assert np.all((second >= 23) & (second <= 42)) and np.all((starts[:, 0] >= 1)
                                                            & (starts[:, 0] <= 20))
  assert stats.chisquare(np.bincount(starts[:, 0] - 1, minlength=20)).pvalue > 1e-3


def test_spans_take_every_placement_the_reference_draws_the_segment_s_last_token_included():
  # The reference's placer: m = n - Σℓ - k + 1, k sorted draws in [0, m]. A segment of 5 tokens
  # at 1..5 with spans of 1 and 2 has m = 1: draws (0, 0), (0, 1), (1, 1) start them at (1, 3),
  # (1, 4) and (2, 4); the last puts the 2-token span on the segment's last token.
  assert _place_one_layout([1, 2], [1], [5]) == {
      ((1, 3), (1, 2), 2), ((1, 4), (1, 2), 2), ((2, 4), (1, 2), 2)}


def _one_token_span_starts(seg_start, seg_len, rows=22000):
  """Where one span of 1 token starts, over `rows` rows of the given maskable segments: the
  share of the rows at each token."""
  starts, _, _ = span_placement.place_spans(
      RowRandom.for_rows(1, 0, np.arange(rows)), np.ones((rows, 1), np.int64),
      np.ones(rows, np.int64), np.tile(seg_start, (rows, 1)), np.tile(seg_len, (rows, 1)), 0.15)
  return np.bincount(starts[:, 0], minlength=13) / rows


def test_a_document_with_nothing_to_mask_takes_no_span_even_one_left_over():
  # A 1-token document (its maskable run empty) after a text of 7 that holds two spans of 3:
  # the span of 1 left over fits nowhere, as without that document; it is not put at 9.
  layouts = _place_one_layout([3, 3, 1], [1, 9], [7, 0])
  assert layouts == _place_one_layout([3, 3, 1], [1], [7]) == {((1, 5), (3, 3), 2)}
  # The same beside a row of three texts, whose documents the batch then goes through.
  rows = 200
  starts, _, count = span_placement.place_spans(
      RowRandom.for_rows(13, 0, np.arange(rows)), np.tile([3, 3, 1], (rows, 1)),
      np.full(rows, 3), np.tile([[1, 9, 20], [1, 9, 20]], (rows // 2, 1)),
      np.tile([[7, 0, 0], [7, 5, 5]], (rows // 2, 1)), 0.15)
  assert np.all(count[::2] == 2) and np.all(starts[::2, :2] == [1, 5])
  np.testing.assert_array_equal(_one_token_span_starts([1, 7, 8], [5, 0, 5]),
                                _one_token_span_starts([1, 8], [5, 5]))
