"""A row's random choices do not depend on one another: which document, where in it, which
objective, short or not, one span or many, the span lengths and Part B's order each come from a
draw of their own. With data.draw_per_batch the choices the original makes per micro-batch
(objective, single span, short row) are shared by a step's rows, and the ones it makes per sample
(the text, the span lengths, Part B's order) are still each row's own.

A draw read twice gives statistics that still look right one at a time (every document drawn in
its share, every objective in its share), so each test looks at two choices together. The
tests are seeded; a p-value above 1e-3 (about 3.3 sigma) is the bound for independence.
"""
import numpy as np
from scipy import stats

from glmjax.data import infilling, pipeline
from glmjax.data.infilling import RowRandom
from glmjax.data.specials import BERT_SPECIALS as S
from test_pipeline import (PERIOD, Tokenizer, check_contract, corpus, data_config, parse_row,
                           reconstruct)

T = 256
DOC_LENGTH = 2800  # longer than a row: a row's text is one document from a random offset
MASK_OF = {pipeline.BLANK: S.mask, pipeline.SENTENCE: S.smask, pipeline.DOCUMENT: S.gmask}


def _ten_documents():
  """The corpus, and where each token but the sentence end (in every document) sits in it."""
  docs = corpus([DOC_LENGTH] * 10)
  token_place = {}
  for d in range(10):
    for i, token in enumerate(docs.read(np.array([d]), np.array([0]), np.array([DOC_LENGTH]))):
      if token != PERIOD:
        token_place[int(token)] = (d, i)
  return docs, token_place


def _mixed_batch(docs, rows, **overrides):
  config = data_config(seq_len=T, batch_size=rows, blank_prob=0.4, sentence_prob=0.3,
                       document_prob=0.3, **overrides)
  batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=1).global_batch(0)
  check_contract(batch, T, rows)
  return batch


def _text_tokens(batch, r):
  """Row r's text tokens: Part A's but its blanks, and Part B's targets but [eop]."""
  part_a = batch["tokens"][r, :batch["sep"][r]]
  part_b = batch["targets"][r][batch["block_position_ids"][r] > 0]
  return np.concatenate([part_a[part_a != MASK_OF[int(batch["objective"][r])]],
                         part_b[part_b != S.eop]])


def _documents(batch, token_place):
  """The document each row reads most of (a row reaches past its first one rarely)."""
  return np.array([np.bincount([token_place[int(t)][0] for t in _text_tokens(batch, r)
                                if int(t) in token_place], minlength=10).argmax()
                   for r in range(len(batch["sep"]))])


def test_a_long_document_s_windows_start_anywhere_in_it_whichever_document_it_is():
  # The offset into a document longer than a row must not follow from the draw that picked the
  # document: each of ten documents is read from every part of it.
  docs, token_place = _ten_documents()
  p = pipeline.BatchPipeline(data_config(seq_len=T), Tokenizer(), docs, seed=0)
  rows = np.arange(3000)
  text, _, _ = p.windows(RowRandom.for_rows(0, 0, rows), np.full(len(rows), T))
  # The window's first token, or its second where the first is a sentence end.
  places = [token_place[int(t1)] if t1 != PERIOD else (token_place[int(t2)][0],
                                                       token_place[int(t2)][1] - 1)
            for t1, t2 in text[:, 1:3]]
  doc, offset = np.array(places).T
  # Which fifth of the offsets that reach the document's end (0 to 2 + DOC_LENGTH - T).
  fifth = np.minimum(offset * 5 // (DOC_LENGTH + 2 - T), 4)
  table = np.array([np.bincount(fifth[doc == d], minlength=5) for d in range(10)])
  assert table.min() > 20, table  # every document read from every fifth of it
  assert stats.chi2_contingency(table).pvalue > 1e-3, table


def test_a_long_document_followed_by_short_ones_is_read_from_anywhere_in_it():
  # One document longer than a row among 19 that fit one: the long one's offset is drawn by its
  # own length, not the next document's (a short one after it would pin its windows at 0).
  docs = corpus([DOC_LENGTH] + [150] * 19)
  first = docs.read(np.array([0]), np.array([0]), np.array([DOC_LENGTH]))
  index_of = {int(token): i for i, token in enumerate(first) if token != PERIOD}
  p = pipeline.BatchPipeline(data_config(seq_len=T), Tokenizer(), docs, seed=0)
  text, _, _ = p.windows(RowRandom.for_rows(0, 0, np.arange(3000)), np.full(3000, T))
  offsets = np.array([index_of[int(t1)] if int(t1) in index_of else index_of[int(t2)] - 1
                      for t1, t2 in text[:, 1:3] if int(t1) in index_of or int(t2) in index_of])
  # About half the rows read it; offsets uniform over 0..DOC_LENGTH + 2 - T (1 in 2547 at 0).
  assert len(offsets) > 1200, len(offsets)
  assert np.mean(offsets == 0) < 0.01 and np.mean(offsets < (DOC_LENGTH + 2 - T) // 2) < 0.56


def test_a_row_s_objective_does_not_depend_on_which_document_it_reads():
  docs, token_place = _ten_documents()
  batch = _mixed_batch(docs, 1024)
  doc = _documents(batch, token_place)
  table = np.array([np.bincount(doc[batch["objective"] == o], minlength=10) for o in range(3)])
  assert table.min() > 5, table  # each objective reads every document
  assert stats.chi2_contingency(table).pvalue > 1e-3, table


def test_short_rows_come_at_their_rate_in_every_objective_and_among_single_span_rows():
  """A short row's text has U{32..T} tokens, a full row's about 200 or more here: a text under 150
  tokens is a short row whose length fell below 150, as likely in every kind of row."""
  docs, _ = _ten_documents()
  batch = _mixed_batch(docs, 2048, short_seq_prob=0.5, single_span_prob=0.2)
  lengths = np.array([len(_text_tokens(batch, r)) for r in range(2048)])
  spans = np.array([len(parse_row(batch, r)[1]) for r in range(len(lengths))])
  single = (batch["objective"] == pipeline.BLANK) & (spans == 1)
  below = np.mean(pipeline.short_lengths(np.linspace(0, 1, 10**5, endpoint=False), T) < 150)
  groups = {name: rows & ~single for name, rows in (
      ("[MASK]", batch["objective"] == pipeline.BLANK),
      ("[sMASK]", batch["objective"] == pipeline.SENTENCE),
      ("[gMASK]", batch["objective"] == pipeline.DOCUMENT))}
  groups["single span"] = single
  for name, rows in groups.items():
    assert rows.sum() > 250, name
    short = int(np.sum(lengths[rows] < 150))
    assert stats.binomtest(short, int(rows.sum()), 0.5 * below).pvalue > 1e-3, (name, short,
                                                                               rows.sum())


def test_part_b_s_order_does_not_follow_the_span_lengths():
  # Of two neighbours in Part B of unequal length, the shorter comes first half the time.
  docs, _ = _ten_documents()
  config = data_config(seq_len=512, batch_size=512)
  batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=2).global_batch(0)
  shorter_first = [len(a) < len(b) for r in range(512)
                   for (_, a), (_, b) in zip(parse_row(batch, r)[1], parse_row(batch, r)[1][1:])
                   if len(a) != len(b)]
  assert len(shorter_first) > 3000
  assert stats.binomtest(int(np.sum(shorter_first)), len(shorter_first), 0.5).pvalue > 1e-3


def test_per_batch_draws_still_give_each_row_its_own_text_span_lengths_and_part_b_order():
  docs, _ = _ten_documents()
  config = data_config(seq_len=T, batch_size=128, draw_per_batch=True)
  batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=4).global_batch(0)
  check_contract(batch, T, 128)
  assert np.all(batch["objective"] == pipeline.BLANK)
  texts = [reconstruct(batch, r, S.mask)[0] for r in range(128)]
  assert len({tuple(text[:16]) for text in texts}) > 120  # 128 windows (two may meet)
  rows = [parse_row(batch, r)[1] for r in range(128)]
  # Span lengths in text order, and Part B's order as ranks of the spans' places in the text.
  lengths = [tuple(len(span) - 1 for _, span in sorted(spans)) for spans in rows]
  assert len(set(lengths)) > 120, len(set(lengths))
  # ...drawn per row, not one draw shuffled per row: the rows' sets of lengths differ too.
  assert len({tuple(sorted(row)) for row in lengths}) > 100
  ranks = [tuple(np.argsort(np.argsort([index for index, _ in spans]))) for spans in rows]
  counts = np.bincount([len(r) for r in ranks])
  # The commonest span count (about 12 here): its rows' orders all differ; at k >= 8 a
  # repeat among 20 rows of k! orders has odds under 1%.
  k = int(np.argmax(counts))
  assert counts[k] >= 10 and k >= 8, counts
  assert len({r for r in ranks if len(r) == k}) == counts[k]


def test_a_row_s_random_streams_have_different_numbers_and_draws():
  # RowRandom's streams are numbered; two choices given one number read the same uniforms
  # (the objective's draw would pick the first span's length: a [MASK] row's first span short).
  streams = {name: value for name, value in vars(infilling).items() if name.startswith("STREAM_")}
  assert len(streams) >= 13, sorted(streams)
  assert len(set(streams.values())) == len(streams), streams
  rng = RowRandom.for_rows(seed=3, step=0, rows=np.arange(4))
  firsts = {tuple(rng.uniform(value, 1)[:, 0]) for value in streams.values()}
  assert len(firsts) == len(streams)
  # draw_per_batch: a step's shared draws come from a key no row of any batch size has.
  shared = RowRandom.for_rows(seed=3, step=0, rows=[pipeline.BATCH_KEY]).keys
  assert not np.isin(shared, RowRandom.for_rows(seed=3, step=0, rows=np.arange(1 << 20)).keys)


def test_the_span_that_reached_the_budget_lands_anywhere_not_always_last_in_the_text():
  # Lengths are drawn until the budget is reached, so the last drawn is longer on average (a
  # long span is likelier to cross it); the reference shuffles them before placing. The
  # rightmost span's lengths follow the same law as all the others (3.84 on average unshuffled).
  p = pipeline.BatchPipeline(data_config(seq_len=512, batch_size=512), Tokenizer(),
                             corpus([1500] * 20), seed=3)
  batch = p.global_batch(0)
  rightmost = np.array([len(max(parse_row(batch, r)[1])[1]) - 1 for r in range(512)])
  assert abs(rightmost.mean() - 3.157) < 0.3
  pmf = np.diff(np.concatenate([[0.0], p.length_cdf]))
  observed = np.bincount(np.minimum(rightmost, 7), minlength=8)[1:]
  expected = np.concatenate([pmf[:6], [pmf[6:].sum()]]) * len(rightmost)
  assert stats.chisquare(observed, expected).pvalue > 1e-3
