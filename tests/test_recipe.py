"""The rest of GLM's data recipe: [dBLOCK] input masking, single-span rows, per-batch draws.

Each option is checked against the original's semantics (GLM.md §1.4-§1.9 of the reference this
project follows): token for token on the worked example where the layout is fixed, and by rates
over many rows where it is random. Every option keeps the batch contract, determinism and host
independence (tests/test_pipeline.py's checks, reused).
"""
import numpy as np
import pytest
from scipy import stats

from glmjax.data import masking, pipeline, sentences
from glmjax.data.infilling import RowRandom
from glmjax.data.specials import BERT_SPECIALS as S
from test_infilling import TEXT_1, one_row
from test_pipeline import Tokenizer, check_contract, corpus, data_config, reconstruct

DBLOCK = S.dblock


@pytest.fixture(scope="module")
def docs():
  return corpus([40, 90, 150, 260, 300, 700, 1200, 2000] * 4)


def test_block_masking_replaces_span_inputs_after_sop_on_the_worked_example():
  # Spans x3 and x5 x6, Part B order x5 x6 first (the paper's Figure 2).
  batch = one_row(TEXT_1, [3, 5], [1, 2], [1, 0], S.mask, 12)
  key = RowRandom(np.array([7], np.uint64))
  every = masking.block_mask(key, batch["tokens"], batch["block_position_ids"], 1.0, DBLOCK)
  np.testing.assert_array_equal(
      every[0], [101, 2001, 2002, 103, 2004, 103, 0, 30522, DBLOCK, DBLOCK, 30522, DBLOCK])
  none = masking.block_mask(key, batch["tokens"], batch["block_position_ids"], 0.0, DBLOCK)
  np.testing.assert_array_equal(none, batch["tokens"])


def test_context_masking_draws_part_a_tokens_within_three_of_a_span_edge():
  # Text of 40 tokens, spans at 10 (3 tokens) and 25 (2 tokens): Part A runs [0, 10), [11, 23)
  # and [24, 36) in the laid-out row; candidates are 3 tokens after each [MASK] and 3 before
  # each [MASK] or the end of Part A.
  text = [101] + list(range(2001, 2039)) + [0]
  batch = one_row(text, [10, 25], [3, 2], [0, 1], S.mask, 44)
  sep = int(batch["sep"][0])
  masks = [j for j in range(sep) if batch["tokens"][0, j] == S.mask]
  assert masks == [10, 23] and sep == 37
  expected = {7, 8, 9, 11, 12, 13, 20, 21, 22, 24, 25, 26, 34, 35, 36}
  seen = set()
  for seed in range(60):
    out = masking.context_mask(RowRandom(np.array([seed], np.uint64)), batch["tokens"],
                               batch["sep"], np.array([40]), S.mask, 0.1, DBLOCK)
    changed = set(np.flatnonzero(out[0] != batch["tokens"][0]).tolist())
    assert len(changed) == 4 and changed <= expected          # int(0.1 * 40) tokens
    assert np.all(out[0, sorted(changed)] == DBLOCK)
    seen |= changed
  assert seen == expected  # every candidate, and nothing else, is drawn over many rows
  everything = masking.context_mask(RowRandom(np.array([1], np.uint64)), batch["tokens"],
                                    batch["sep"], np.array([40]), S.mask, 1.0, DBLOCK)
  assert set(np.flatnonzero(everything[0] == DBLOCK).tolist()) == expected  # capped


def test_block_masking_rate_and_rows_in_the_pipeline(docs):
  config = data_config(blank_prob=0.5, sentence_prob=0.3, document_prob=0.2, batch_size=512,
                       block_mask_prob=0.1)
  batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=3).global_batch(0)
  check_contract(batch, 256, 512)
  span_inputs = batch["block_position_ids"] >= 2
  blank = (batch["objective"] == pipeline.BLANK)[:, None]
  replaced = batch["tokens"] == DBLOCK
  assert not np.any(replaced & ~(span_inputs & blank))  # blank rows' span inputs only
  n, k = int(np.sum(span_inputs & blank)), int(np.sum(replaced))
  assert stats.binomtest(k, n, 0.1).pvalue > 1e-3
  # Only inputs change: targets, loss and positions are those of the same rows without it.
  plain = pipeline.BatchPipeline(data_config(blank_prob=0.5, sentence_prob=0.3,
                                             document_prob=0.2, batch_size=512),
                                 Tokenizer(), docs, seed=3).global_batch(0)
  for key in pipeline.BATCH_KEYS:
    if key != "tokens":
      np.testing.assert_array_equal(batch[key], plain[key])
  np.testing.assert_array_equal(np.where(replaced, plain["tokens"], batch["tokens"]),
                                plain["tokens"])


def test_single_span_rows_have_one_poisson_span_at_their_rate(docs):
  config = data_config(blank_prob=0.0, sentence_prob=0.0, document_prob=1.0, batch_size=1024,
                       single_span_prob=0.25)
  batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=4).global_batch(0)
  check_contract(batch, 256, 1024)
  single = batch["objective"] == pipeline.BLANK
  assert stats.binomtest(int(single.sum()), 1024, 0.25).pvalue > 1e-3
  lengths = []
  for r in np.flatnonzero(single):
    _, fill = reconstruct(batch, r, S.mask)
    assert len(fill) == 1
    lengths.append(len(next(iter(fill.values()))))
  assert 2.7 < np.mean(lengths) < 3.6  # Poisson(3) conditioned on 1..39: mean 3.16


def test_per_batch_draws_give_every_row_one_objective_and_one_generation_length(docs):
  config = data_config(blank_prob=0.5, sentence_prob=0.3, document_prob=0.2, batch_size=32,
                       draw_per_batch=True)
  p = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=6)
  seen = set()
  for step in range(40):
    batch = p.global_batch(step)
    check_contract(batch, 256, 32)
    objectives = set(batch["objective"].tolist())
    seen |= objectives
    assert len(objectives) == 1 or objectives == {pipeline.BLANK, pipeline.SENTENCE}
    if objectives == {pipeline.DOCUMENT}:
      # Generated tokens: Part B, less the [eop] that ends a span inside the text (a suffix
      # span ends the row and has none).
      part_b = batch["block_position_ids"] > 0
      generated = part_b.sum(axis=1) - np.any(part_b & (batch["targets"] == S.eop), axis=1)
      assert len(set(generated.tolist())) == 1, generated
  assert seen == {pipeline.BLANK, pipeline.SENTENCE, pipeline.DOCUMENT}


@pytest.mark.parametrize("draw_per_batch", [False, True])
def test_every_option_on_is_deterministic_and_independent_of_the_host_count(docs, draw_per_batch):
  config = data_config(blank_prob=0.5, sentence_prob=0.3, document_prob=0.2, batch_size=16,
                       single_span_prob=0.2, block_mask_prob=0.1, context_mask_ratio=0.05,
                       short_seq_prob=0.3, sentence_windows=True, original_sentences=True,
                       draw_per_batch=draw_per_batch)
  a = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=8)
  whole = a.global_batch(5)
  again = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=8).global_batch(5)
  for hosts in (2, 4):
    per_host = 16 // hosts
    parts = [a.build_rows(5, np.arange(h * per_host, (h + 1) * per_host)) for h in range(hosts)]
    for key in pipeline.BATCH_KEYS:
      np.testing.assert_array_equal(np.concatenate([part[key] for part in parts]), whole[key])
      np.testing.assert_array_equal(again[key], whole[key])
  reversed_rows = a.build_rows(5, np.arange(16)[::-1])
  np.testing.assert_array_equal(reversed_rows["tokens"][::-1], whole["tokens"])
  check_contract(whole, 256, 16)
  for step in range(6):  # every row of several steps decodes back to its text
    batch = a.global_batch(step)
    check_contract(batch, 256, 16)
    for r in np.flatnonzero(batch["objective"] != pipeline.DOCUMENT):
      tokens = batch["tokens"][r]
      mask = S.mask if batch["objective"][r] == pipeline.BLANK else S.smask
      batch["tokens"][r] = np.where(tokens == DBLOCK, batch["targets"][r], tokens)
      text, _ = reconstruct(batch, r, mask)
      assert_windows_of_the_corpus(text, docs)


@pytest.mark.parametrize("original, spans", [
    (False, [(1, 4), (8, 11)]),            # sentences never hold a [CLS]; no tail
    (True, [(1, 4), (7, 11), (11, 13)]),   # after an eos from the [CLS]; the tail "g h" too
])
def test_original_sentences_start_at_the_cls_after_an_eos_and_count_the_tail(original, spans):
  #        [CLS]  a     b     .    c     d    eos  [CLS]  e     f     .     g     h
  text = [[101, 2001, 2002, 1012, 2003, 2004, 0, 101, 2005, 2006, 1012, 2007, 2008]]
  table = np.zeros(30592, bool)
  table[1012] = True
  starts, lengths, n_spans, text_len = sentences.select_sentences(
      RowRandom(np.array([3], np.uint64)), np.array(text), np.array([13]), table, S,
      mask_ratio=1.0, seq_len=40, original=original)  # ratio 1: every candidate is chosen
  assert text_len[0] == 13
  chosen = [(int(s), int(s + n)) for s, n in zip(starts[0, :n_spans[0]], lengths[0, :n_spans[0]])]
  assert chosen == spans


def test_original_sentence_rows_still_decode_to_their_text(docs):
  config = data_config(blank_prob=0.0, sentence_prob=1.0, batch_size=256,
                       original_sentences=True)
  batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=10).global_batch(0)
  check_contract(batch, 256, 256)
  tails = with_cls = 0
  for r in np.flatnonzero(batch["objective"] == pipeline.SENTENCE):
    text, fill = reconstruct(batch, r, S.smask)
    spans = list(fill.values())
    with_cls += any(S.cls in span for span in spans)
    tails += any(span[-1] not in (1012, S.eos) for span in spans)
  assert with_cls > 0 and tails > 0


def test_short_rows_hold_a_uniformly_short_text_at_their_rate(docs):
  """[gMASK] rows fill T - 1 or T - 2 text tokens, so a row shorter than T is a short row; its
  text is U{32..T} tokens (cut to what the layout holds) and the rest of the row is padding."""
  config = data_config(blank_prob=0.0, document_prob=1.0, batch_size=2048, short_seq_prob=0.3)
  batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=12).global_batch(0)
  check_contract(batch, 256, 2048)
  real = batch["sep"] + np.sum(batch["block_position_ids"] > 0, axis=1)
  short = real < 256
  # A draw of 255 or 256 tokens is cut to the row's own T - 1 or T - 2: not seen as short.
  assert stats.binomtest(int(short.sum()), 2048, 0.3 * 223 / 225).pvalue > 1e-3
  text_len = real[short] - 1 - np.any(
      (batch["block_position_ids"][short] > 0) & (batch["targets"][short] == S.eop), axis=1)
  assert text_len.min() >= 32
  counts = np.histogram(text_len, bins=8, range=(32, 256))[0]
  assert stats.chisquare(counts).pvalue > 1e-3, counts
  for r in np.flatnonzero(short)[:50]:  # [gMASK] still the one blank, its loss on the text
    assert np.sum(batch["tokens"][r] == S.gmask) == 1


def test_a_short_row_s_text_length_takes_each_value_from_32_to_t_equally_often():
  """The original draws U{32..seq_len - 2} and cuts each sample into windows of about that many
  tokens; here a short row fetches U{32..T} tokens, cut to what its layout holds."""
  lengths = pipeline.short_lengths(np.arange(33 * 100) / (33 * 100), 64)
  values, counts = np.unique(lengths, return_counts=True)
  assert values.tolist() == list(range(32, 65))
  assert counts.tolist() == [100] * 33


def assert_windows_of_the_corpus(text, docs):
  """Each run of text between specials is a contiguous piece of one document (every id but
  the period occurs once in the corpus, so a token tells its document and position)."""
  where = {}
  for d in range(len(docs.doc_lengths)):
    tokens = docs.read(np.array([d]), np.array([0]), np.array([docs.doc_lengths[d]]))
    where.update({int(t): (d, i) for i, t in enumerate(tokens) if t != 1012})
  runs = np.split(np.arange(len(text)), np.flatnonzero(np.isin(text, (S.cls, S.eos))))
  for run in runs:
    placed = [(where[int(text[j])], j) for j in run if int(text[j]) in where]
    assert len({d for (d, _), _ in placed}) <= 1, "a run mixes documents"
    assert len({i - j for (_, i), j in placed}) <= 1, "a run is not contiguous in its document"


def test_original_sentences_do_not_depend_on_the_rows_built_alongside(docs):
  config = data_config(blank_prob=0.0, sentence_prob=1.0, batch_size=32,
                       original_sentences=True)
  p = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=13)
  together = p.global_batch(2)
  for r in range(32):
    alone = p.build_rows(2, np.array([r]))
    for key in pipeline.BATCH_KEYS:
      np.testing.assert_array_equal(alone[key][0], together[key][r])


def test_texts_cut_short_keep_the_masked_share_of_their_own_length(docs):
  config = data_config(batch_size=1024, short_seq_prob=0.5, sentence_windows=True)
  batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=14).global_batch(0)
  part_b = np.sum(batch["block_position_ids"] > 0, axis=1)
  spans = np.sum(batch["block_position_ids"] == 1, axis=1)
  cut = batch["sep"] + part_b < 256                 # short rows and rows cut at a sentence end
  masked, text = (part_b - spans)[cut], (batch["sep"] + part_b - 2 * spans)[cut]
  assert cut.sum() > 300
  assert 0.14 < masked.sum() / text.sum() < 0.19   # spans drawn for T would mask ~0.25


def _context_candidates(part_a, mask_token):
  """Part A columns a context mask may draw: not a [MASK], within three tokens after a [MASK],
  or within three before a [MASK] or the end of Part A (the original's candidates)."""
  masks = [j for j, token in enumerate(part_a) if token == mask_token]
  bounds = masks + [len(part_a)]
  return {j for j in range(len(part_a)) if part_a[j] != mask_token and (
      any(0 < j - m <= masking.CONTEXT_RANGE for m in masks) or
      any(0 < b - j <= masking.CONTEXT_RANGE for b in bounds))}


def test_context_masking_turns_its_ratio_of_each_blank_row_s_text_into_dblock_in_part_a(docs):
  mixture = dict(blank_prob=0.5, sentence_prob=0.3, document_prob=0.2, batch_size=256)
  config = data_config(context_mask_ratio=0.05, **mixture)
  assert config.block_mask_prob == 0.0  # context masking alone
  batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=15).global_batch(0)
  plain = pipeline.BatchPipeline(data_config(**mixture), Tokenizer(), docs,
                                 seed=15).global_batch(0)
  check_contract(batch, 256, 256)
  for key in pipeline.BATCH_KEYS:  # only inputs change
    if key != "tokens":
      np.testing.assert_array_equal(batch[key], plain[key])
  changed = batch["tokens"] != plain["tokens"]
  assert np.all(batch["tokens"][changed] == DBLOCK)
  blank = np.flatnonzero(batch["objective"] == pipeline.BLANK)
  assert not changed[batch["objective"] != pipeline.BLANK].any()  # [MASK] rows only
  assert len(blank) > 80
  for r in blank:
    sep = int(plain["sep"][r])
    assert not changed[r, sep:].any()  # Part A only
    text, _ = reconstruct(plain, r, S.mask)
    candidates = _context_candidates(plain["tokens"][r, :sep].tolist(), S.mask)
    replaced = set(np.flatnonzero(changed[r]).tolist())
    assert replaced <= candidates
    # int(ratio x the row's text length) tokens, all the candidates when there are fewer.
    assert len(replaced) == min(int(0.05 * len(text)), len(candidates)) > 0, r


def test_every_part_b_target_of_a_sentence_row_carries_loss_a_cls_its_sentence_holds_too(docs):
  """Only a [gMASK] suffix row leaves its packed [CLS] targets out of the loss (the original's
  own loss mask for them); an [sMASK] row scores every Part B target, the [CLS] that an
  original sentence starting after an eos holds included, in a batch that has both."""
  config = data_config(blank_prob=0.0, sentence_prob=0.7, document_prob=0.3, batch_size=256,
                       original_sentences=True)
  batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=16).global_batch(0)
  check_contract(batch, 256, 256)
  part_b = batch["block_position_ids"] > 0
  sentence = batch["objective"] == pipeline.SENTENCE
  suffix = (batch["objective"] == pipeline.DOCUMENT) & ~np.any(
      part_b & (batch["targets"] == S.eop), axis=1)
  cls_targets = part_b & (batch["targets"] == S.cls)
  assert cls_targets[sentence].sum() > 0 and cls_targets[suffix].sum() > 0  # both kinds occur
  np.testing.assert_array_equal(batch["loss_mask"][sentence] > 0, part_b[sentence])
  assert not np.any(batch["loss_mask"][cls_targets & suffix[:, None]])


def test_a_row_s_context_masking_does_not_depend_on_the_rows_masked_with_it():
  # A 512-token row (a [MASK] every 8 tokens of Part A: ~370 candidates) masked alone and beside
  # a row with a larger count to draw: the same tokens, whatever the grouping (hosts and batches
  # group rows differently). Only long rows show it: numpy orders short partitions anyway.
  width, sep = 512, np.array([500])
  tokens = np.arange(2000, 2000 + width)[None, :]
  tokens[0, :500:8] = S.mask
  for seed in range(10):
    keys = np.array([seed, seed + 1000], np.uint64)
    alone = masking.context_mask(RowRandom(keys[:1]), tokens, sep, np.array([100]), S.mask,
                                 0.1, DBLOCK)
    paired = masking.context_mask(RowRandom(keys), np.concatenate([tokens, tokens]),
                                  np.concatenate([sep, sep]), np.array([100, 2000]), S.mask,
                                  0.1, DBLOCK)
    np.testing.assert_array_equal(paired[0], alone[0])
    assert np.sum(paired[1] == DBLOCK) == 200 > np.sum(alone[0] == DBLOCK) == 10


def test_single_span_rows_are_drawn_before_the_objective_so_mask_rows_reach_their_share(docs):
  """The original draws single-span first and the objective only for the other rows: with
  single_span_prob s and blank_prob b a row is [MASK] with probability s + (1 - s) b, here
  0.2 + 0.8 x 0.5 = 0.6 (single-span rows are not a share of the blank ones)."""
  config = data_config(blank_prob=0.5, sentence_prob=0.0, document_prob=0.5, batch_size=1024,
                       single_span_prob=0.2)
  batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=17).global_batch(0)
  blank = int(np.sum(batch["objective"] == pipeline.BLANK))
  assert stats.binomtest(blank, 1024, 0.6).pvalue > 1e-3, blank


def test_per_batch_draws_make_every_row_of_a_step_single_span_or_none_and_short_or_none(docs):
  """draw_per_batch: single span and short rows are drawn once per step, as the objective is
  (README: data.draw_per_batch), the original's one draw per micro-batch."""
  config = data_config(blank_prob=0.0, document_prob=1.0, batch_size=16, draw_per_batch=True,
                       single_span_prob=0.3, short_seq_prob=0.3)
  p = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=18)
  singles, shorts = set(), set()
  for step in range(30):
    batch = p.global_batch(step)
    single = batch["objective"] == pipeline.BLANK   # only single-span rows are [MASK] here
    short = batch["sep"] + np.sum(batch["block_position_ids"] > 0, axis=1) < 256
    assert len(set(single.tolist())) == 1 and len(set(short.tolist())) == 1, (step, single, short)
    singles.add(bool(single[0]))
    shorts.add(bool(short[0]))
  assert singles == shorts == {False, True}
