"""Sentence windows (GLM's sentence-aligned text windows, data.sentence_windows): a window
starts at its document's start or just after a sentence end, moves a cut left or right with the
original's even odds, and is cut back to a sentence end only when that keeps half its room.

Checked on documents whose ids tell their place (tests/test_pipeline.py's corpus), against the
original's rules, token for token where they are fixed and by rates where they are random.
"""
import numpy as np
import pytest
from scipy import stats

from glmjax.data import alignment, pipeline
from glmjax.data.documents import InMemoryDocs
from glmjax.data.infilling import RowRandom
from glmjax.data.specials import BERT_SPECIALS as S
from test_pipeline import (PERIOD, REGULAR, Tokenizer, check_contract, corpus, data_config,
                           reconstruct)


@pytest.fixture(scope="module")
def docs():
  return corpus([40, 90, 150, 260, 300, 700, 1200, 2000] * 4)


def _source_index(document):
  source = document.read(np.zeros(1, np.int64), np.zeros(1, np.int64),
                         np.array([document.doc_lengths[0]]))
  return source, {int(token): index for index, token in enumerate(source)}


def test_sentence_windows_start_after_a_sentence_end_and_end_at_one():
  one_document = corpus([6000], period_every=12)
  source, where = _source_index(one_document)
  config = data_config(batch_size=512, sentence_windows=True)
  batch = pipeline.BatchPipeline(config, Tokenizer(), one_document, seed=2).global_batch(0)
  check_contract(batch, 256, 512)
  starts_after_end = ends_at_end = 0
  for r in range(512):
    text, _ = reconstruct(batch, r, S.mask)
    assert text[0] == S.cls
    first, last = where[int(text[1])], int(text[-1])
    starts_after_end += first == 0 or source[first - 1] == 1012
    # The last document ends at a sentence end, or is cut hard when the room it had holds none
    # (fewer tokens than one sentence after its [CLS]), as the original cuts it.
    last_document = len(text) - np.flatnonzero(text == S.cls)[-1]
    assert last in (1012, S.eos) or last_document < 12, text[-20:]
    ends_at_end += last in (1012, S.eos)
  assert starts_after_end == 512 and ends_at_end > 0.95 * 512
  padding = float(np.mean((batch["block_position_ids"] == 0) & (
      np.arange(256)[None, :] >= batch["sep"][:, None])))
  assert 0 < padding < 12 / 256  # a cut drops less than one sentence


def test_sentence_windows_keep_every_objective_s_rows_whole(docs):
  config = data_config(blank_prob=0.5, sentence_prob=0.3, document_prob=0.2, batch_size=256,
                       sentence_windows=True)
  batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=9).global_batch(0)
  check_contract(batch, 256, 256)
  for r in np.flatnonzero(batch["objective"] != pipeline.DOCUMENT):
    mask = S.mask if batch["objective"][r] == pipeline.BLANK else S.smask
    text, _ = reconstruct(batch, r, mask)
    last_document = len(text) - np.flatnonzero(text == S.cls)[-1]
    assert text[-1] in (1012, S.eos) or last_document < 12  # the rule of the test above
  documents = batch["objective"] == pipeline.DOCUMENT
  assert np.all(np.any(batch["tokens"][documents] == S.gmask, axis=1))


def test_per_batch_generation_rows_cut_at_a_sentence_end_generate_only_their_own_text(docs):
  """draw_per_batch: the step's one [gMASK] length is capped by each row's text; a window cut
  back to a sentence end is shorter than what the step fetched, and its span must still leave
  [CLS] in Part A and end inside the text."""
  config = data_config(blank_prob=0.0, document_prob=1.0, batch_size=64, draw_per_batch=True,
                       sentence_windows=True)
  p = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=4)
  for step in range(16):
    batch = p.global_batch(step)
    check_contract(batch, 256, 64)
    for r in range(64):
      part_a = batch["tokens"][r, :batch["sep"][r]]
      assert part_a[0] == S.cls and np.sum(part_a == S.gmask) == 1, (step, r)


def test_blank_rows_reach_the_last_tokens_of_a_long_document():
  one_document = corpus([600], period_every=12)
  source, where = _source_index(one_document)
  batch = pipeline.BatchPipeline(data_config(batch_size=1024), Tokenizer(),
                                 one_document, seed=1).global_batch(0)
  reached, ended = set(), 0
  for r in range(1024):
    text, _ = reconstruct(batch, r, S.mask)
    reached.update(where[int(t)] for t in text if int(t) in where and int(t) != 1012)
    ended += int(text[-1] == S.eos)
  # Every token of the document's second half, the last ones too (they were out of reach when
  # the offset was drawn for T instead of the row's own window; periods share one id).
  assert {i for i in range(300, 600) if source[i] != 1012} <= reached
  assert ended > 0  # and the document's end: a row whose text closes with its eos


def test_sentence_windows_move_a_cut_left_or_right_with_even_odds_wherever_it_falls():
  """The original moves a long document's cut left or right with probability 1/2 each,
  independently of where the cut fell. Sentences alternate 2 and 40 tokens, so a window that
  starts just after a short sentence was moved left from inside the long one that follows (40
  offsets) or right from inside the short one (2 offsets): half the windows, in every part of
  the document. A direction tied to the offset would favour one kind in each half."""
  words = REGULAR[REGULAR != PERIOD]
  pattern = [False, True] + [False] * 39 + [True]   # sentence ends: a short, then a long one
  is_end = np.array(pattern * 150)
  document = np.where(is_end, PERIOD, words[:len(is_end)])
  position = {int(token): i for i, token in enumerate(document) if token != PERIOD}
  after_short = np.zeros(len(document) + 1, bool)
  after_short[np.flatnonzero(is_end)[::2] + 1] = True  # the token after each short one's end
  one_document = InMemoryDocs.from_lists([document])
  p = pipeline.BatchPipeline(data_config(sentence_windows=True), Tokenizer(), one_document, seed=4)
  rows = 4000
  text, _, _ = p.windows(RowRandom.for_rows(4, 0, np.arange(rows)), np.full(rows, 256))
  starts = np.array([position[int(token)] for token in text[:, 1]])
  assert np.all((starts == 0) | is_end[np.maximum(starts - 1, 0)])  # after a sentence end
  middle = len(document) // 2
  for part in (starts[(starts >= 100) & (starts < middle)],
               starts[(starts >= middle) & (starts < len(document) - 400)]):
    assert len(part) > 1000
    short = int(after_short[part].sum())
    assert stats.binomtest(short, len(part), 0.5).pvalue > 1e-3, (short, len(part))


def _moved_start(is_end, offset, reach, step):
  """The original's loop (BlockDataset): move the cut one token at a time, at most `reach`
  times, until the token before it ends a sentence; left it stops at the document's start,
  right at its end. Token -1 is the eos the original appends to a document: no sentence end,
  so a move right from offset 0 goes on (and drops the first sentence)."""
  at = offset
  for _ in range(reach):
    if (step < 0 and at == 0) or at == len(is_end) or (at > 0 and is_end[at - 1]):
      break
    at += step
  return at


def test_a_moved_window_start_follows_the_original_move_within_half_a_row_and_its_document():
  """Each cut moves left or right as the original's loop does: at most T // 2 tokens, to just
  after a sentence end, never past the document's end or before its start; from the start, a
  move right skips the first sentence as the original's does."""
  seq_len, reach, rows = 32, 16, 3000
  gen = np.random.default_rng(0)
  table = np.zeros(100, bool)
  table[:15] = True                               # ids 0..14 end sentences: ~15% of tokens
  lengths = gen.integers(2, 60, size=rows)        # many shorter than a move, some longer
  docs = InMemoryDocs.from_lists([gen.integers(0, 100, size=n) for n in lengths])
  # Offsets inside each document (as the pipeline draws them), and many at 0, 1 and 2.
  offset = np.where(np.arange(rows) % 4 == 0, np.minimum(np.arange(rows) % 3, lengths - 1),
                    gen.integers(0, lengths))
  got = alignment.sentence_start(RowRandom.for_rows(1, 0, np.arange(rows)), docs, table,
                                 np.arange(rows), offset, lengths, seq_len)
  went_left = []
  for r in range(rows):
    is_end = table[docs.read([r], [0], [lengths[r]])]
    left = _moved_start(is_end, int(offset[r]), reach, -1)
    right = _moved_start(is_end, int(offset[r]), reach, +1)
    assert got[r] in (left, right), (r, offset[r], got[r], left, right)
    if left != right:
      went_left.append(got[r] == left)
  assert 0.45 < np.mean(went_left) < 0.55  # either way with even odds


def _cut(row, window_len):
  """alignment.sentence_end_cut of one window (periods end sentences, BERT ids: eos = 0)."""
  text = np.zeros((1, 16), np.int32)
  text[0, :len(row)] = row
  piece_start = np.flatnonzero(text[0, :window_len] == S.cls)
  return int(alignment.sentence_end_cut(text, piece_start[None], np.array([window_len]),
                                        Tokenizer().sentence_end, S.eos)[0])


def test_a_window_whose_last_document_ends_inside_it_keeps_that_document_and_its_eos():
  #        [CLS]  a     b     .    c     d    eos
  whole = [101, 2001, 2002, 1012, 2003, 2004, 0]
  assert _cut(whole, 7) == 7
  # The same text cut by the row end instead (no eos) goes back to just after the period.
  assert _cut(whole[:6] + [2005], 7) == 4


def test_a_window_is_cut_back_to_a_sentence_end_only_when_that_keeps_half_its_last_room():
  # The last document ([CLS] at 0) had 8 positions of room: a cut after the period at 3 keeps
  # 4 of them, exactly half, and is made; after a period at 2 it would keep 3, and is not.
  assert _cut([101, 2001, 2002, 1012, 2003, 2004, 2005, 2006], 8) == 4
  assert _cut([101, 2001, 1012, 2002, 2003, 2004, 2005, 2006], 8) == 8
  # Half of the last document's room, not of the row: [CLS] at 4 with 8 positions of room.
  assert _cut([101, 2001, 1012, 0, 101, 2002, 2003, 1012, 2004, 2005, 2006, 2007], 12) == 8
  assert _cut([101, 2001, 1012, 0, 101, 2002, 1012, 2003, 2004, 2005, 2006, 2007], 12) == 12


def test_sentence_rows_cut_back_to_a_sentence_end_hold_no_padding_in_their_text():
  """A [sMASK] row's text is cut back to its last sentence end and the rest of its room padded:
  that padding follows the row's Part B, never sits in Part A as context. (In the bert layout
  padding and eos are both 0: a 0 in Part A must follow a document's last token, which here is
  never a sentence end.)"""
  docs = corpus([41, 91, 151, 261, 301, 701, 1201, 2001] * 4)  # no length a multiple of 12
  config = data_config(blank_prob=0.0, sentence_prob=1.0, document_prob=0.0, batch_size=256,
                       sentence_windows=True)
  batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=9).global_batch(0)
  check_contract(batch, 256, 256)
  count = len(docs.doc_lengths)
  last_tokens = set(docs.read(np.arange(count), np.asarray(docs.doc_lengths) - 1,
                              np.ones(count, np.int64)).tolist())
  for r in range(256):
    part_a = batch["tokens"][r, :batch["sep"][r]]
    after = part_a[np.flatnonzero(part_a[1:] == S.pad)]  # the token before each 0
    assert set(after.tolist()) <= last_tokens, (r, part_a[-20:])
