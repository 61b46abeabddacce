"""BatchPipeline: batch contract, objective semantics over many rows, determinism, errors."""
import dataclasses

import numpy as np
import pytest
from scipy import stats

from glmjax import config as glm_config
from glmjax.data import pipeline
from glmjax.data.documents import InMemoryDocs
from glmjax.data.infilling import RowRandom
from glmjax.data.specials import BERT_SPECIALS as S

VOCAB = 30592
PERIOD = 1012
# Every corpus token id is used once, so a token tells its document and position.
REGULAR = np.setdiff1d(np.arange(999, 30522), list(S.as_dict().values()))


class Tokenizer:
  def __init__(self, specials=S, vocab_size=VOCAB, sentence_ids=(PERIOD,)):
    self.specials, self.vocab_size = specials, vocab_size
    self.sentence_end = np.zeros(vocab_size, bool)
    self.sentence_end[list(sentence_ids)] = True


def corpus(lengths, seed=0, period_every=12):
  rng = np.random.default_rng(seed)
  ids = rng.permutation(REGULAR[REGULAR != PERIOD])[:sum(lengths)]
  docs, at = [], 0
  for n in lengths:
    doc = ids[at:at + n].copy()
    at += n
    doc[period_every - 1::period_every] = PERIOD   # sentence ends
    docs.append(doc)
  return InMemoryDocs.from_lists(docs)


def data_config(**overrides):
  data = glm_config.data_defaults()
  data.source = "builtin"
  data.update(seq_len=256, batch_size=64)
  data.update(**overrides)
  return data


MIXED_LENGTHS = [0, 1, 1, 2, 5, 30, 80, 150, 260, 300, 700, 1200, 0, 3, 40, 90, 500, 2000] * 2


@pytest.fixture(scope="module")
def docs():
  return corpus(MIXED_LENGTHS)


def parse_row(batch, r):
  """Part A, and the Part B spans as (mask index, span tokens) in Part B order."""
  sep, blocks = int(batch["sep"][r]), batch["block_position_ids"][r]
  spans, current = [], None
  for j in range(sep, len(blocks)):
    if blocks[j] == 1:
      current = (int(batch["position_ids"][r, j]), [])
      spans.append(current)
    if blocks[j] > 0:
      current[1].append(int(batch["targets"][r, j]))
  return batch["tokens"][r, :sep], spans


def reconstruct(batch, r, mask_token):
  part_a, spans = parse_row(batch, r)
  fill = {}
  for position, target in spans:
    assert target[-1] == S.eop and part_a[position] == mask_token
    fill[position] = target[:-1]
  assert sorted(fill) == [j for j, t in enumerate(part_a) if t == mask_token]
  text = []
  for j, token in enumerate(part_a):
    text.extend(fill.get(j, [token]))
  return np.array(text), fill


def check_contract(batch, seq_len, rows):
  assert batch["sep"].shape == batch["objective"].shape == (rows,)
  for key in ("tokens", "targets", "position_ids", "block_position_ids"):
    assert batch[key].shape == (rows, seq_len) and batch[key].dtype == np.int32
  assert batch["loss_mask"].dtype == np.float32
  col = np.arange(seq_len)[None]
  part_a = col < batch["sep"][:, None]
  part_b = batch["block_position_ids"] > 0
  assert not np.any(part_a & part_b)
  positions = np.where(part_a, batch["position_ids"], col)
  assert np.array_equal(positions, np.broadcast_to(col, part_a.shape))
  assert np.all(batch["loss_mask"][~part_b] == 0)
  # Part B asks for text and [eop] only: no target is a mask token ([MASK], [sMASK], [gMASK]).
  assert not np.any(part_b & np.isin(batch["targets"], [S.mask, S.smask, S.gmask]))
  assert np.all(batch["position_ids"] < batch["sep"][:, None])
  assert np.all(np.where(part_b & (batch["block_position_ids"] == 1), batch["tokens"], S.sop)
                == S.sop)
  # Part B is teacher-forced: after a span's [sop] each input is the target before it (or
  # [dBLOCK] where data.block_mask_prob hides it), block positions count up by one, and the
  # span's position ids all stay at its blank.
  block = batch["block_position_ids"]
  following = part_b[:, 1:] & (block[:, 1:] > 1)
  inputs, previous_targets = batch["tokens"][:, 1:], batch["targets"][:, :-1]
  assert np.all((inputs == previous_targets) | (inputs == S.dblock) | ~following)
  assert np.all((block[:, 1:] == block[:, :-1] + 1) | ~following)
  assert np.all((batch["position_ids"][:, 1:] == batch["position_ids"][:, :-1]) | ~following)
  real = part_a | part_b
  assert np.all(real[:, :-1] | ~real[:, 1:])                # padding only at the end
  assert np.all(np.where(real, S.pad, batch["tokens"]) == S.pad)


def test_blank_rows_keep_the_contract_and_decode_to_their_text(docs):
  p = pipeline.BatchPipeline(data_config(), Tokenizer(), docs, seed=3)
  batch = p.global_batch(5)
  check_contract(batch, 256, 64)
  assert np.all(batch["objective"] == 0)
  np.testing.assert_array_equal(batch["loss_mask"] > 0, batch["block_position_ids"] > 0)
  text_lengths = []
  for r in range(64):
    text, fill = reconstruct(batch, r, S.mask)
    text_lengths.append(len(text))
    spans = [np.array(t) for t in fill.values()]
    assert all(not np.isin(s, [S.cls, S.eos]).any() for s in spans)   # never [CLS] or eos
    part_a = batch["tokens"][r, :batch["sep"][r]]
    assert not np.any((part_a[1:] == S.mask) & (part_a[:-1] == S.mask))  # >= 1 token apart
    assert part_a[0] == S.cls and part_a[-1] != S.mask                    # row's last token kept
  # ...and only that one: a span may end on the token before it (about 6% of rows; over
  # 128 rows, none at all has odds of about 3e-4).
  later = p.global_batch(6)
  before_last = [batch["tokens"][r, batch["sep"][r] - 2] == S.mask for r in range(64)] + [
      later["tokens"][r, later["sep"][r] - 2] == S.mask for r in range(64)]
  assert sum(before_last) >= 1
  # Part A + Part B is exactly the text the pipeline drew for the row.
  rows = np.arange(64)
  expected, _, _ = p.windows(RowRandom.for_rows(3, 5, rows), np.array(text_lengths))
  for r in rows:
    np.testing.assert_array_equal(reconstruct(batch, r, S.mask)[0], expected[r, :text_lengths[r]])


def test_a_pipeline_s_rows_of_consecutive_steps_are_not_its_rows_shifted_by_one(docs):
  """Row r + 1 of step k and row r of step k + 1 draw from different keys: a key of seed and
  step + row alone would give them the same text, spans and all."""
  p = pipeline.BatchPipeline(data_config(), Tokenizer(), docs, seed=3)
  now, then = p.global_batch(5)["tokens"], p.global_batch(6)["tokens"]
  assert not any(np.array_equal(now[r + 1], then[r]) for r in range(len(now) - 1))


def test_windows_are_packed_documents(docs):
  p = pipeline.BatchPipeline(data_config(), Tokenizer(), docs, seed=0)
  where = {int(t): (d, i) for d in range(len(docs)) for i, t in
           enumerate(docs.read([d], [0], [docs.doc_lengths[d]]))}
  text, _, _ = p.windows(RowRandom.for_rows(0, 0, np.arange(200)), np.full(200, 256))
  single, packed = 0, 0
  for row in text:
    assert row[0] == S.cls
    pieces = np.split(row, np.flatnonzero(row == S.cls)[1:])
    single, packed = single + (len(pieces) == 1), packed + (len(pieces) > 1)
    for k, piece in enumerate(pieces):
      last = k == len(pieces) - 1
      assert last or (piece[-1] == S.eos and len(piece) >= 3)   # only the last is cut short
      body = piece[1:-1] if piece[-1] == S.eos else piece[1:]
      found = [(where[int(t)], i) for i, t in enumerate(body) if t != PERIOD]
      assert len({doc for (doc, _), _ in found}) <= 1            # one document per piece
      shifts = {position - i for (_, position), i in found}
      assert len(shifts) <= 1                                    # a contiguous slice of it
      if k > 0:
        assert shifts <= {0}                                     # packed ones from their start
  assert single > 150 and packed >= 3   # long documents are split, short ones packed


def test_blank_statistics_over_many_rows():
  p = pipeline.BatchPipeline(data_config(seq_len=512, batch_size=512), Tokenizer(),
                             corpus(np.random.default_rng(1).integers(100, 1500, 20).tolist()),
                             seed=1)
  batch = p.global_batch(0)
  blocks, sep = batch["block_position_ids"], batch["sep"].astype(np.int64)
  part_b = (blocks > 0).sum(1)
  spans = (blocks == 1).sum(1)
  masked = part_b - spans
  text = sep + masked - spans
  assert abs(masked.sum() / text.sum() - 0.15) < 0.01
  assert 1 - (sep + part_b).sum() / blocks.size < 0.02           # padding
  lengths = np.concatenate([[len(t) - 1 for _, t in parse_row(batch, r)[1]] for r in range(512)])
  assert abs(lengths.mean() - 3.157) < 0.1 and lengths.max() <= 39
  pmf = np.diff(np.concatenate([[0.0], p.length_cdf]))
  observed = np.bincount(np.minimum(lengths, 9), minlength=10)[1:]
  expected = np.concatenate([pmf[:8], [pmf[8:].sum()]]) * len(lengths)
  assert stats.chisquare(observed, expected).pvalue > 1e-3


def _part_b_orders(shuffle_spans):
  """Per row, the Part A mask index of each span in Part B order."""
  p = pipeline.BatchPipeline(data_config(seq_len=512, batch_size=512, shuffle_spans=shuffle_spans),
                             Tokenizer(), corpus([1500] * 20), seed=2)
  batch = p.global_batch(0)
  return [[index for index, _ in parse_row(batch, r)[1]] for r in range(512)]


def test_part_b_holds_the_spans_in_a_uniformly_random_order():
  orders = _part_b_orders(shuffle_spans=True)
  # Each neighbouring pair is in text order half the time (a sorted Part B: always).
  pairs = [a < b for order in orders for a, b in zip(order, order[1:])]
  assert len(pairs) > 5000 and abs(np.mean(pairs) - 0.5) < 0.03
  # The first block is any of a row's k spans with probability 1/k: uniform ranks.
  for k in (20, 23, 26):
    ranks = [sorted(order).index(order[0]) for order in orders if len(order) == k]
    assert len(ranks) > 20
    counts = np.bincount(np.asarray(ranks) * 4 // k, minlength=4)  # quarters of the ranks
    assert stats.chisquare(counts).pvalue > 1e-3, (k, counts)
  # The option that turns it off keeps text order (the original's no-shuffle setting).
  assert all(order == sorted(order) for order in _part_b_orders(shuffle_spans=False))


def test_sentence_rows_mask_whole_sentences(docs):
  tok = Tokenizer()
  p = pipeline.BatchPipeline(data_config(blank_prob=0.0, sentence_prob=1.0), tok, docs, seed=2)
  batch = p.global_batch(0)
  check_contract(batch, 256, 64)
  assert np.mean(batch["objective"] == 1) > 0.9
  for r in np.flatnonzero(batch["objective"] == 1):
    text, fill = reconstruct(batch, r, S.smask)
    covered = sum(len(t) for t in fill.values())
    assert covered >= int(0.15 * len(text))
    for position, span in fill.items():
      start = position + sum(len(t) - 1 for q, t in fill.items() if q < position)
      assert tok.sentence_end[span[-1]] and not tok.sentence_end[span[:-1]].any()
      assert text[start - 1] in (S.cls, S.eos, PERIOD)           # starts after a boundary
      assert S.cls not in span and S.eos not in span


def test_sentence_rows_stop_choosing_sentences_once_their_own_text_s_share_is_covered():
  """Sentences are chosen until they cover int(ratio x n) of the row's text of n = T - 2k tokens,
  not of the T tokens fetched: without the last sentence chosen, a row is below that budget.
  Short sentences (4 tokens) make k large, so T - 2k is well short of T."""
  short_sentences = corpus([300, 700, 1200, 2000] * 3, period_every=4)
  config = data_config(blank_prob=0.0, sentence_prob=1.0, batch_size=256)
  batch = pipeline.BatchPipeline(config, Tokenizer(), short_sentences, seed=3).global_batch(0)
  check_contract(batch, 256, 256)
  rows = np.flatnonzero(batch["objective"] == pipeline.SENTENCE)
  assert len(rows) > 240
  masked = text_tokens = 0
  for r in rows:
    text, fill = reconstruct(batch, r, S.smask)
    lengths = [len(span) for span in fill.values()]
    budget = int(0.15 * len(text))
    assert len(text) <= 256 - 2 * len(lengths)
    # Whichever sentence was chosen last, the others alone are short of the budget.
    assert sum(lengths) - max(lengths) < budget, (r, lengths, len(text))
    masked, text_tokens = masked + sum(lengths), text_tokens + len(text)
  assert 0.14 < masked / text_tokens < 0.15 + 4 / 220, masked / text_tokens


def test_windows_of_long_documents_start_at_uniform_offsets_not_after_sentence_ends():
  # A deliberate difference (README): the original moves a window's start to just after a
  # sentence end; here a document longer than a row starts at a uniform offset.
  one_document = corpus([6000], period_every=12)
  p = pipeline.BatchPipeline(data_config(), Tokenizer(), one_document, seed=0)
  rows = np.arange(4000)
  text, start, _ = p.windows(RowRandom.for_rows(0, 0, rows), np.full(len(rows), 256))
  assert np.all(start[:, 0] == 0) and np.all(text[:, 0] == S.cls)
  source = one_document.read(np.zeros(1, np.int64), np.zeros(1, np.int64),
                             np.array([6000]))
  where = {int(token): index for index, token in enumerate(source)}
  offsets = np.array([where[int(token)] for token in text[:, 1]])
  after_end = np.mean([offset == 0 or source[offset - 1] == PERIOD for offset in offsets])
  assert abs(after_end - 1 / 12) < 0.02, after_end  # the base rate, not 1.0
  counts = np.bincount(offsets * 10 // (6000 + 2 - 256), minlength=10)  # tenths of the range
  assert stats.chisquare(counts).pvalue > 1e-3, counts


def test_document_rows_fill_the_row_and_keep_the_contract(docs):
  p = pipeline.BatchPipeline(data_config(blank_prob=0.0, document_prob=1.0, batch_size=400),
                             Tokenizer(), docs, seed=4)
  batch = p.global_batch(0)
  check_contract(batch, 256, 400)
  assert np.all(batch["objective"] == 2)
  real = batch["sep"] + (batch["block_position_ids"] > 0).sum(1)
  np.testing.assert_array_equal(real, 256)
  fractions, layouts = [], []
  for r in range(400):
    part_a, spans = parse_row(batch, r)
    assert len(spans) == 1 and np.sum(part_a == S.gmask) == 1
    suffix = part_a[-1] == S.gmask
    layouts.append(suffix)
    generated = len(spans[0][1]) - (0 if suffix else 1)
    fractions.append(generated / (255 if suffix else 254))
  assert 0.4 < np.mean(layouts) < 0.9
  assert stats.kstest(fractions, stats.uniform(0.5, 0.5).cdf).pvalue > 0.01


def interleave(parts: list[np.ndarray]) -> np.ndarray:
  """The global rows from hosts that built rows h, h + n, h + 2n, ... (n hosts)."""
  whole = np.empty((sum(len(p) for p in parts),) + parts[0].shape[1:], parts[0].dtype)
  for h, part in enumerate(parts):
    whole[h::len(parts)] = part
  return whole


def test_batches_are_the_same_for_any_host_split_and_on_resume(docs):
  config = data_config(blank_prob=0.5, sentence_prob=0.3, document_prob=0.2, batch_size=16)
  a = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=11)
  first = [a.global_batch(k) for k in range(3)]
  b = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=11)   # fresh: resume at step 2
  for key in pipeline.BATCH_KEYS:
    np.testing.assert_array_equal(b.global_batch(2)[key], first[2][key])
  assert not np.array_equal(first[0]["tokens"], first[1]["tokens"])
  other_seed = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=12).global_batch(0)
  assert not np.array_equal(other_seed["tokens"], first[0]["tokens"])
  for hosts in (1, 2, 4):  # strided rows per host, as a slice's device order can give
    parts = [a.build_rows(1, np.arange(16)[h::hosts]) for h in range(hosts)]
    assert all(len(part["sep"]) == 16 // hosts for part in parts)
    for key in pipeline.BATCH_KEYS:
      np.testing.assert_array_equal(interleave([part[key] for part in parts]), first[1][key])


def test_tiny_and_empty_documents_still_give_rows_that_train():
  docs = corpus([0, 1, 0, 1, 1, 2, 0, 1], period_every=1)
  for probs in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)):
    config = data_config(blank_prob=probs[0], sentence_prob=probs[1], document_prob=probs[2],
                         seq_len=64, batch_size=32)
    batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=0).global_batch(0)
    check_contract(batch, 64, 32)
    assert np.all(batch["loss_mask"].sum(1) > 0)                    # every row trains
    for r in np.flatnonzero(batch["objective"] == 0):
      part_a, spans = parse_row(batch, r)
      assert all(len(t) <= 3 and not {S.cls, S.eos} & set(t[:-1]) for _, t in spans)


def test_a_document_one_token_longer_than_its_room_takes_either_offset_with_even_odds():
  """[CLS] + 99 tokens + eos needs 101 places; a window of 100 starts the document at offset 0
  (its last token kept, no eos) or 1 (its eos kept): the original's uniform left cut, so every
  token of the document, its eos included, can reach a row."""
  one = corpus([99])
  p = pipeline.BatchPipeline(data_config(), Tokenizer(), one, seed=0)
  rows = np.arange(400)
  text, _, _ = p.windows(RowRandom.for_rows(0, 0, rows), np.full(400, 100))
  first_token = one.read(np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1, np.int64))[0]
  from_start = text[:, 1] == first_token
  assert np.all(text[from_start, 99] != S.eos) and np.all(text[~from_start, 99] == S.eos)
  assert 0.4 < np.mean(from_start) < 0.6, np.mean(from_start)


def test_documents_longer_than_a_row():
  docs = corpus([3000, 5000])
  batch = pipeline.BatchPipeline(data_config(seq_len=128), Tokenizer(), docs).global_batch(0)
  check_contract(batch, 128, 64)
  used = batch["sep"] + (batch["block_position_ids"] > 0).sum(1)
  assert np.all((used >= 126) & (used <= 128)) and np.mean(used == 128) > 0.8


@dataclasses.dataclass(frozen=True)
class Clash:
  pad: int = 0
  eos: int = 0
  cls: int = 101
  mask: int = 103
  smask: int = 30525
  gmask: int = 30523      # same id as eop, as in GLM-10B-Chinese without --fix-command-token
  sop: int = 30522
  eop: int = 30523

  def as_dict(self):
    return dataclasses.asdict(self)


@pytest.mark.parametrize("overrides, tokenizer, documents, match", [
    (dict(blank_prob=0.5, sentence_prob=0.3, document_prob=0.1), None, None,
     r"data\.blank_prob \+ data\.sentence_prob \+ data\.document_prob"),
    (dict(blank_prob=1.2, document_prob=-0.2), None, None, r"data\.blank_prob"),
    (dict(seq_len=32), None, None, r"data\.seq_len=32 .*at least 43"),
    (dict(mask_ratio=0.0), None, None, r"data\.mask_ratio"),
    (dict(gen_min_ratio=1.5), None, None, r"data\.gen_min_ratio"),
    ({}, Tokenizer(vocab_size=30522), None, r"smask=30525 is outside .*data\.tokenizer"),
    ({}, Tokenizer(specials=Clash()), None, r"gmask and eop share id 30523"),
    (dict(blank_prob=0.5, sentence_prob=0.5), Tokenizer(sentence_ids=()), None,
     r"data\.sentence_prob"),
    ({}, None, InMemoryDocs.from_lists([]), r"empty .*data\.source"),
    ({}, None, InMemoryDocs.from_lists([[], []]), r"empty .*data\.source"),
])
def test_bad_inputs_raise_at_construction(docs, overrides, tokenizer, documents, match):
  with pytest.raises(ValueError, match=match):
    pipeline.BatchPipeline(data_config(**overrides), tokenizer or Tokenizer(),
                           docs if documents is None else documents)


def test_a_tokenizer_without_sentence_ends_is_accepted_when_no_sentence_rows_are_drawn(docs):
  # A byte or character tokenizer may mark no sentence end: only [sMASK] rows need one.
  config = data_config(blank_prob=0.8, sentence_prob=0.0, document_prob=0.2, batch_size=8)
  batch = pipeline.BatchPipeline(config, Tokenizer(sentence_ids=()), docs).global_batch(0)
  check_contract(batch, 256, 8)


def test_evaluation_pipeline_reads_only_its_documents(docs):
  held_out = corpus([400, 90, 700], seed=9)
  own = set(held_out.tokens.tolist()) | set(S.as_dict().values())
  config = data_config(blank_prob=0.5, sentence_prob=0.3, document_prob=0.2, batch_size=16)
  batch = pipeline.BatchPipeline(config, Tokenizer(), held_out, seed=123).global_batch(0)
  assert set(batch["tokens"].ravel().tolist()) <= own
  train = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=0).global_batch(0)
  assert not set(train["tokens"].ravel().tolist()) <= own


def test_documents_are_drawn_in_proportion_to_their_length_and_an_empty_one_never():
  # The original picks a document with probability proportional to its length: of 0, 10, 0 and
  # 30 tokens, a row's first document is the 10-token one a quarter of the time, and an empty
  # one ([CLS] then eos at once) never.
  docs = corpus([0, 10, 0, 30])
  p = pipeline.BatchPipeline(data_config(seq_len=64), Tokenizer(), docs, seed=0)
  rows = 4000
  text, _, _ = p.windows(RowRandom.for_rows(0, 0, np.arange(rows)), np.full(rows, 64))
  assert not np.any((text[:, :-1] == S.cls) & (text[:, 1:] == S.eos))
  ten = docs.read(np.array([1]), np.array([0]), np.array([10]))
  first_is_ten = np.isin(text[:, 1], ten)
  assert np.all(first_is_ten | np.isin(text[:, 1], docs.read(
      np.array([3]), np.array([0]), np.array([30]))))
  assert stats.binomtest(int(first_is_ten.sum()), rows, 0.25).pvalue > 1e-3


def test_sentence_rows_of_a_text_without_a_sentence_end_fall_back_to_mask_rows_that_train(
    caplog):
  # No period in the corpus: no row holds a whole sentence, so every [sMASK] row falls back
  # to [MASK] spans (objective 0), which carry loss, never an [sMASK] row with no Part B.
  # The objective mix changes: that is said once.
  no_ends = corpus([300, 700, 1200], period_every=10**6)
  config = data_config(blank_prob=0.0, sentence_prob=1.0, batch_size=32)
  p = pipeline.BatchPipeline(config, Tokenizer(), no_ends, seed=19)
  for step in range(3):  # a host of 4 rows a step: counted over the steps, said once
    p.build_rows(step, np.arange(4))
  batch = p.global_batch(3)
  warnings = [r.getMessage() for r in caplog.records if "no whole sentence" in r.getMessage()]
  assert warnings == ["8 of the 8 [sMASK] rows built up to step 1 found no whole sentence and "
                      "became [MASK] rows: the tokenizer marks few sentence ends in this text "
                      "(the byte tokenizer knows only . ? ! ; : and newline). "
                      "data.sentence_prob gives fewer [sMASK] rows than it says; use a tokenizer "
                      "that marks them, or lower it."]
  check_contract(batch, 256, 32)
  assert np.all(batch["objective"] == pipeline.BLANK)
  assert np.all(batch["loss_mask"].sum(axis=1) > 0)
  assert np.all(np.any(batch["tokens"] == S.mask, axis=1))
