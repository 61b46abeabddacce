"""Pure infilling functions: the §1.11 worked example, span statistics, randomness. Where
[MASK] spans go is tests/test_span_placement.py."""
import numpy as np
import pytest
from scipy import stats

from glmjax.data import infilling, sentences
from glmjax.data.infilling import RowRandom
from glmjax.data.specials import BERT_SPECIALS as S

TEXT_1 = [101, 2001, 2002, 2003, 2004, 2005, 2006, 0]
TEXT_2 = [101, 2001, 2002, 2003, 1012, 2005, 2006, 2007, 1012, 0]


def one_row(text, starts, lengths, order, mask, seq_len, suffix=False):
  text = np.array([text])
  spans = infilling.RowSpans(
      starts=np.array([starts]), lengths=np.array([lengths]), n_spans=np.array([len(starts)]),
      text_len=np.array([text.shape[1]]), mask_token=np.array([mask]), suffix=np.array([suffix]))
  return infilling.layout_rows(text, spans, np.array([order]), S, seq_len)


def check(batch, tokens, targets, loss, positions, blocks, sep):
  np.testing.assert_array_equal(batch["tokens"][0], tokens)
  np.testing.assert_array_equal(batch["targets"][0], targets)
  np.testing.assert_array_equal(batch["loss_mask"][0], loss)
  np.testing.assert_array_equal(batch["position_ids"][0], positions)
  np.testing.assert_array_equal(batch["block_position_ids"][0], blocks)
  assert batch["sep"][0] == sep


def test_the_papers_worked_blank_example_gives_its_layout():
  # Spans x3 = (3, 4) and x5 x6 = (5, 7); Part B order puts x5 x6 first (paper Figure 2).
  batch = one_row(TEXT_1, [3, 5], [1, 2], [1, 0], S.mask, 12)
  check(batch,
        [101, 2001, 2002, 103, 2004, 103, 0, 30522, 2005, 2006, 30522, 2003],
        [101, 2001, 2002, 103, 2004, 103, 0, 2005, 2006, 30523, 2003, 30523],
        [0] * 7 + [1] * 5,
        [0, 1, 2, 3, 4, 5, 6, 5, 5, 5, 3, 3],
        [0] * 7 + [1, 2, 3, 1, 2], 7)


def test_worked_example_padding_and_kept_order():
  batch = one_row(TEXT_1, [3, 5], [1, 2], [0, 1], S.mask, 14)
  check(batch,
        [101, 2001, 2002, 103, 2004, 103, 0, 30522, 2003, 30522, 2005, 2006, 0, 0],
        [101, 2001, 2002, 103, 2004, 103, 0, 2003, 30523, 2005, 2006, 30523, 0, 0],
        [0] * 7 + [1] * 5 + [0, 0],
        [0, 1, 2, 3, 4, 5, 6, 3, 3, 5, 5, 5, 0, 0],
        [0] * 7 + [1, 2, 1, 2, 3, 0, 0], 7)


def test_worked_example_gpt_suffix_layout():
  batch = one_row(TEXT_2, [6], [4], [0], S.gmask, 11, suffix=True)
  check(batch,
        [101, 2001, 2002, 2003, 1012, 2005, 30524, 30522, 2006, 2007, 1012],
        [101, 2001, 2002, 2003, 1012, 2005, 30524, 2006, 2007, 1012, 0],
        [0] * 7 + [1] * 4,
        [0, 1, 2, 3, 4, 5, 6, 6, 6, 6, 6],
        [0] * 7 + [1, 2, 3, 4], 7)


def test_a_worked_sentence_example_gives_its_layout():
  batch = one_row(TEXT_2, [1], [4], [0], S.smask, 12)
  check(batch,
        [101, 30525, 2005, 2006, 2007, 1012, 0, 30522, 2001, 2002, 2003, 1012],
        [101, 30525, 2005, 2006, 2007, 1012, 0, 2001, 2002, 2003, 1012, 30523],
        [0] * 7 + [1] * 5,
        [0, 1, 2, 3, 4, 5, 6, 1, 1, 1, 1, 1],
        [0] * 7 + [1, 2, 3, 4, 5], 7)


def test_suffix_targets_of_a_packed_cls_carry_no_loss():
  text = [101, 2001, 2002, 0, 101, 2003, 2004, 0]
  batch = one_row(text, [2], [6], [0], S.gmask, 9, suffix=True)
  targets, loss = batch["targets"][0], batch["loss_mask"][0]
  assert targets[3 + 2] == 101 and loss[3 + 2] == 0
  assert loss.sum() == 5


def test_layout_rejects_rows_longer_than_seq_len():
  with pytest.raises(ValueError, match="seq_len"):
    one_row(TEXT_1, [3, 5], [1, 2], [1, 0], S.mask, 11)


def test_sentence_selection_picks_whole_sentences_of_the_example():
  table = np.zeros(30592, bool)
  table[1012] = True
  text = np.tile(np.array(TEXT_2 + [0, 0]), (64, 1))
  starts, lengths, n_spans, text_len = sentences.select_sentences(
      RowRandom.for_rows(0, 0, np.arange(64)), text, np.full(64, 12), table, S, 0.15, 12)
  assert np.all(n_spans == 1) and np.all(text_len == 10)
  spans = set(zip(starts[:, 0].tolist(), lengths[:, 0].tolist()))
  assert spans == {(1, 4), (5, 4)}   # both sentences, never with the [CLS]


def _sentence_rows(rows, seq_len, mean_length, seed=0):
  """[CLS] then filler tokens, each a '.' with probability 1/mean_length."""
  tokens = np.full((rows, seq_len), 2000)
  tokens[np.random.default_rng(seed).random((rows, seq_len)) < 1 / mean_length] = 1012
  tokens[:, 0] = S.cls
  table = np.zeros(30592, bool)
  table[1012] = True
  return tokens, table


@pytest.mark.parametrize("seq_len, ratio, mean_length", [(64, 0.15, 2), (64, 0.5, 8),
                                                         (256, 0.15, 4), (256, 0.5, 16),
                                                         (64, 0.9, 1)])
def test_a_sentence_row_covers_its_budget_whenever_its_whole_sentences_can(seq_len, ratio,
                                                                           mean_length):
  # Each [sMASK] takes 2 tokens of room, so the text shrinks as sentences are added; the count
  # is raised until it holds still, or rows stop short of a budget their text could meet.
  # (64, 0.9, 1): every token a sentence; 21 are needed, more than a third of the row's room.
  tokens, table = _sentence_rows(2048, seq_len, mean_length)
  _, lengths, n_spans, text_len = sentences.select_sentences(
      RowRandom.for_rows(0, 0, np.arange(2048)), tokens, np.full(2048, seq_len), table, S,
      ratio, seq_len)
  col = np.arange(seq_len)[None, :]
  # Whole sentences hold the tokens after the [CLS] up to the text's last '.'.
  in_sentences = np.max(np.where((tokens == 1012) & (col < text_len[:, None]), col, 0), axis=1)
  budget = infilling.blank_budget(ratio, text_len)
  can = in_sentences >= budget
  assert can.mean() > 0.5
  assert np.all(lengths.sum(axis=1)[can] >= budget[can])
  assert np.all(text_len + 2 * n_spans <= seq_len)


@pytest.mark.parametrize("seq_len", [6, 7, 8, 9])
def test_a_row_whose_sentences_outgrow_its_room_takes_only_what_the_room_holds(seq_len):
  # Every token a sentence and all of them asked for: the count can never settle.
  tokens, table = _sentence_rows(64, seq_len, mean_length=1)
  _, lengths, n_spans, text_len = sentences.select_sentences(
      RowRandom.for_rows(0, 0, np.arange(64)), tokens, np.full(64, seq_len), table, S, 1.0,
      seq_len)
  assert np.all(n_spans >= 1)
  assert np.all(text_len + 2 * n_spans <= seq_len)
  assert np.all(lengths[np.arange(lengths.shape[1])[None, :] < n_spans[:, None]] >= 1)


def test_span_lengths_follow_truncated_poisson():
  cdf = infilling.span_length_cdf(3.0, 39)
  lengths, n_spans, text_len = infilling.sample_blank_lengths(
      RowRandom.for_rows(1, 0, np.arange(4000)), cdf, 0.15, 512)
  drawn = lengths[lengths > 0]
  padding = 512 - text_len - 2 * n_spans
  assert len(drawn) == n_spans.sum() and set(np.unique(padding)) == {0, 1, 2}
  assert 0.9 < np.mean(padding == 0) < 0.93  # about 91% of rows fill T exactly (README)
  pmf = np.diff(np.concatenate([[0.0], cdf]))
  observed = np.bincount(np.minimum(drawn, 9), minlength=10)[1:]
  expected = np.concatenate([pmf[:8], [pmf[8:].sum()]]) * len(drawn)
  assert stats.chisquare(observed, expected).pvalue > 1e-3
  assert abs(drawn.mean() - 3.157) < 0.03
  # The reference's budget rule for each row's text: its spans reach int(0.15 * n), and all but
  # the last do not (the reference stops at the first count that reaches it)...
  covered = lengths.sum(axis=1)
  assert np.all(covered >= infilling.blank_budget(0.15, text_len))
  assert np.all(covered - lengths[np.arange(4000), n_spans - 1]
                < infilling.blank_budget(0.15, text_len))
  # ...and a row that ends in padding has the longest text that does so: one token more would
  # need another span, which does not fit.
  padded = padding > 0
  assert np.all(covered[padded] < infilling.blank_budget(0.15, text_len[padded] + 1))


@pytest.mark.parametrize("seq_len,ratio", [(512, 0.15), (64, 0.15), (1024, 0.3)])
def test_the_span_table_is_as_wide_as_the_most_spans_a_row_can_need_and_no_wider(seq_len, ratio):
  # Spans of length 1 (Poisson with a tiny rate) need the most: every row uses every column.
  # A wider table draws, places and sorts columns no row ever fills.
  cdf = infilling.span_length_cdf(1e-6, 10)
  lengths, n_spans, _ = infilling.sample_blank_lengths(
      RowRandom.for_rows(2, 0, np.arange(64)), cdf, ratio, seq_len)
  assert np.all(lengths[lengths > 0] == 1)
  assert n_spans.max() == lengths.shape[1], (n_spans.max(), lengths.shape)


def test_the_blank_budget_truncates_as_the_original_does():
  # int(0.15 * n) in the original; rounding up would mask one token more in most rows, and
  # leaving a token out of n (the [CLS]) one token fewer in some (n = 20: 3, not int(2.85)).
  assert infilling.blank_budget(0.15, np.array([510, 10, 19, 20])).tolist() == [76, 1, 2, 3]


def test_generation_fraction_is_uniform():
  rows = 6000
  suffix, text_len, start, length = infilling.sample_generation(
      RowRandom.for_rows(4, 0, np.arange(rows)), np.zeros(rows, bool), 512, 0.5, 0.5)
  assert 0.45 < suffix.mean() < 0.55
  assert np.all(start + length <= np.where(suffix, text_len, text_len - 1))
  assert np.all(start[~suffix] >= 1) and np.all(start[suffix] + length[suffix] == 511)
  assert stats.kstest(length / text_len, stats.uniform(0.5, 0.5).cdf).pvalue > 0.01
  forced, _, _, _ = infilling.sample_generation(
      RowRandom.for_rows(4, 0, np.arange(100)), np.ones(100, bool), 512, 0.5, 0.0)
  assert forced.all()   # several documents in the window: always the suffix layout


def test_row_random_is_keyed_and_uniform():
  a = RowRandom.for_rows(7, 3, np.arange(10, 20))
  b = RowRandom.for_rows(7, 3, np.arange(0, 30))
  np.testing.assert_array_equal(a.uniform(5, 4), b.uniform(5, 4)[10:20])
  np.testing.assert_array_equal(a.uniform(5, 8)[:, :4], a.uniform(5, 4))
  assert not np.array_equal(a.uniform(5, 4), a.uniform(6, 4))
  next_step = RowRandom.for_rows(7, 4, np.arange(10, 20))
  assert not np.array_equal(a.uniform(5, 4), next_step.uniform(5, 4))
  many = RowRandom.for_rows(0, 0, np.arange(1000)).uniform(1, 100).ravel()
  assert stats.kstest(many, "uniform").pvalue > 1e-3
  draws = RowRandom.for_rows(0, 0, np.arange(1000)).integers(2, np.full(1000, 4), 10)
  assert draws.min() == 0 and draws.max() == 4


def test_rows_of_consecutive_steps_do_not_repeat_shifted_by_one():
  # Keys from step + row (no mixing in between) would make row r + 1 of step k row r of k + 1.
  this_step = RowRandom.for_rows(7, 3, np.arange(1, 20)).uniform(1, 4)
  next_step = RowRandom.for_rows(7, 4, np.arange(0, 19)).uniform(1, 4)
  assert not np.any(np.all(this_step == next_step, axis=1))


def test_a_batch_s_generation_length_is_uniform_from_int_ratio_times_f_minus_1_to_f_minus_3():
  """draw_per_batch: the original draws its batch's [gMASK] length G ~ U{int(ratio (F - 1)) ..
  F - 3} for the F tokens its rows fetched. Each row's shared key here stands for one batch;
  suffix rows of T = F + 1 hold every such G (their text is F, the span at most F - 2)."""
  rows, fetched, ratio = 30000, 256, 0.5
  low, high = int(ratio * (fetched - 1)), fetched - 3
  _, text_len, _, length = infilling.sample_generation(
      RowRandom.for_rows(6, 0, np.arange(rows)), np.ones(rows, bool), fetched + 1, ratio, 0.0,
      shared=RowRandom.for_rows(7, 0, np.arange(rows)), batch_len=np.full(rows, fetched))
  assert np.all(text_len == fetched) and high <= fetched - 2
  assert (length.min(), length.max()) == (low, high)
  counts = np.bincount(length - low, minlength=high - low + 1)
  assert len(counts) == high - low + 1 and stats.chisquare(counts).pvalue > 1e-3


def test_sentence_windows_keep_a_row_whole_when_no_sentence_ends_inside_its_room_or_one_ends_it():
  # data.sentence_windows cuts the text that fits T - 2k back to its last sentence end; a row
  # with no end there has nothing to cut back to and keeps its room (here T - 2 = 10 tokens),
  # instead of losing all its text.
  table = np.zeros(30592, bool)
  table[1012] = True
  text = np.array([[101, *range(2001, 2011), 1012],                 # its only end: past the room
                   [101, 2001, 2002, 1012, *range(2004, 2012)],   # an end at 3: cut to 4
                   # ends at 3 and at 9, the room's last token: nothing to cut
                   [101, 2001, 2002, 1012, *range(2004, 2009), 1012, 2010, 2011]])
  _, _, _, text_len = sentences.select_sentences(
      RowRandom.for_rows(0, 0, np.arange(3)), text, np.full(3, 12), table, S, 0.15, 12,
      end_at_sentence=True)
  np.testing.assert_array_equal(text_len, [10, 4, 10])


def test_sentence_windows_cut_back_to_a_document_s_eos_after_the_last_sentence_end():
  # A document's eos ends the row's text as a sentence end does: the row below keeps its first
  # document whole, "c d" and its eos included, and drops only the next document's start.
  table = np.zeros(30592, bool)
  table[1012] = True
  #                [CLS]  a     b     .    c     d   eos [CLS]  e     f     g     h
  text = np.array([[101, 2001, 2002, 1012, 2003, 2004, 0, 101, 2005, 2006, 2007, 2008]])
  _, _, _, text_len = sentences.select_sentences(
      RowRandom.for_rows(0, 0, np.arange(1)), text, np.full(1, 12), table, S, 0.15, 14,
      end_at_sentence=True)
  np.testing.assert_array_equal(text_len, [7])


def test_span_lengths_run_from_one_to_max_span_length_weighted_by_the_poisson_pmf():
  # The original weights every length k = 1..max by Poisson(λ)'s pmf (max 39 from its
  # max_block_length of 40): the longest length is one of them.
  pmf = stats.poisson.pmf(np.arange(1, 6), 3.0)
  np.testing.assert_allclose(infilling.span_length_cdf(3.0, 5), np.cumsum(pmf) / pmf.sum())


def test_a_row_s_generation_length_is_uniform_from_int_ratio_times_n_to_n_minus_2():
  # [gMASK] per row: g ~ U{int(ratio n) .. n - 2} for its text of n tokens (the original's
  # randint(int(gpt_min_ratio len), len - 2)). T = 12: n = 10 with the span inside, 11 suffix.
  rows, ratio = 4000, 0.5
  suffix, text_len, _, length = infilling.sample_generation(
      RowRandom.for_rows(8, 0, np.arange(rows)), np.zeros(rows, bool), 12, ratio, 0.5)
  for layout, n in ((False, 10), (True, 11)):
    chosen = suffix == layout
    assert np.all(text_len[chosen] == n)
    low, high = int(ratio * n), n - 2
    assert set(length[chosen].tolist()) == set(range(low, high + 1)), (n, np.unique(length))
    assert stats.chisquare(np.bincount(length[chosen] - low)).pvalue > 1e-3


def test_a_generation_span_inside_the_text_starts_anywhere_between_the_cls_and_the_last_token():
  # The layout with one span anywhere (not the suffix) places it as the reference's placer does
  # in one document: after its [CLS], before its last token, every start equally likely. Text
  # n = 10 (T = 12): a span of g tokens starts at 1 .. n - 1 - g.
  rows = 8000
  suffix, text_len, start, length = infilling.sample_generation(
      RowRandom.for_rows(9, 0, np.arange(rows)), np.zeros(rows, bool), 12, 0.5, 0.0)
  assert not suffix.any() and np.all(text_len == 10)
  for g in np.unique(length):
    starts = start[length == g]
    assert set(starts.tolist()) == set(range(1, 10 - g)), (g, np.unique(starts))
    counts = np.bincount(starts - 1)
    assert len(counts) == 1 or stats.chisquare(counts).pvalue > 1e-3


def test_a_one_document_row_takes_the_suffix_layout_at_the_rate_gen_suffix_prob():
  # gen_suffix_prob is P(suffix layout) for a text of one document (the original's
  # gpt_infill_prob); 0.2 is not 0.5, so a draw read the wrong way round shows.
  rows = 4000
  suffix, _, _, _ = infilling.sample_generation(
      RowRandom.for_rows(10, 0, np.arange(rows)), np.zeros(rows, bool), 64, 0.5, 0.2)
  assert stats.binomtest(int(suffix.sum()), rows, 0.2).pvalue > 1e-3
