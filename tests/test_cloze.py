"""Cloze scoring (python -m glmjax.evaluate --cloze): rows against rows built here by hand from
GLM's definition, a model trained to be certain of its answers, how the text is split into
context and answer, the row lengths each attention kernel takes, and the cloze file's errors."""
import json

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from glmjax import cloze as cloze_lib
from glmjax import evaluate, parallel, pretrained
from glmjax import model as model_lib
from glmjax import step as step_lib
from test_evaluate import BYTE, S, _config, _forward, _log_softmax

LETTERS = "abcd"


def _row_by_hand(context, answer, length=None):
  """The GLM row of one cloze example, written out from the original's LambadaDataset: Part B
  is [sop] and the answer but its last token, each position predicting the next answer token."""
  part_a = [S.cls, *context, S.mask, S.eos]
  sep = len(part_a)
  tokens = part_a + [S.sop, *answer[:-1]]
  targets = [0] * sep + [*answer]
  positions = list(range(sep)) + [sep - 2] * len(answer)
  blocks = [0] * sep + list(range(1, len(answer) + 1))
  weights = [0] * sep + [1] * len(answer)
  length = length or len(tokens)
  pad = lambda values, fill=0: values + [fill] * (length - len(values))  # noqa: E731
  return dict(tokens=pad(tokens, S.pad), targets=pad(targets), position_ids=pad(positions),
              block_position_ids=pad(blocks), sep=sep, weights=pad(weights))


def _pattern(rng):
  """A context of one letter repeated; the answer is that letter in upper case."""
  letter = str(rng.choice(list(LETTERS)))
  return " ".join([letter] * int(rng.integers(2, 10))), letter.upper()


@pytest.fixture(scope="module")
def cloze_model():
  """(config, random params, params trained with optax on rows built by hand until the answers
  of `_pattern` are certain)."""
  config = _config(max_position=192)
  model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  init = lambda rng: nn.meta.unbox(model.init(rng, *step_lib.dummy_inputs(1, 32))["params"])
  initial = jax.jit(init)(jax.random.key(1))
  optimizer = optax.adam(5e-3)

  def loss_fn(params, batch):
    logits = model.apply({"params": params}, batch["tokens"], batch["position_ids"],
                         batch["block_position_ids"], batch["sep"])
    token_loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    return (token_loss * batch["weights"]).sum() / batch["weights"].sum()

  @jax.jit
  def update(params, state, batch):
    grads = jax.grad(loss_fn)(params, batch)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  rng = np.random.default_rng(0)
  params, state = initial, optimizer.init(initial)
  for _ in range(60):  # measured: every answer right after 40
    rows = [_row_by_hand(BYTE.encode(c).tolist(), BYTE.encode(" " + a).tolist(), 32)
            for c, a in (_pattern(rng) for _ in range(16))]
    batch = {key: np.array([row[key] for row in rows]) for key in rows[0]}
    params, state = update(params, state, batch)
  return config, initial, params


def _reference(forward, params, context, answer):
  """(log-likelihood, correct) of one example from a forward of its row alone, padded to 192
  (Part A and Part B see nothing after them, so padding at the end changes no logit)."""
  row = {key: np.asarray(value)[None]
         for key, value in _row_by_hand(context, answer, 192).items()}
  logits = forward(params, row)[0]
  sep = int(row["sep"][0])
  scored = slice(sep, sep + len(answer))
  log_probs = _log_softmax(logits[scored])
  return (log_probs[np.arange(len(answer)), answer].sum(),
          bool(np.all(logits[scored].argmax(-1) == answer)))


def test_cloze_scores_equal_a_forward_of_each_row_built_by_hand(cloze_model, tmp_path):
  config, _, params = cloze_model
  rng = np.random.default_rng(1)
  lines, expected = [], []  # expected: (context, answer) as the README's rule reads them
  for index in range(12):
    context, answer = _pattern(rng)
    if index % 4 == 1:
      answer = "Quiet"  # an answer the model does not give, longer than the others
    if index % 4 == 2:  # text holding its answer, with trailing whitespace
      lines.append({"text": f"{context} {answer}\n", "answer": answer})
    elif index % 4 == 3:  # long contexts: rows of 128 and 192 tokens, the longest ones cut
      context = " ".join(rng.choice(list(LETTERS), 15 * index))
      lines.append({"text": context + " ", "answer": answer})
    else:
      lines.append({"text": context, "answer": answer})
    expected.append((BYTE.encode(context).tolist(), BYTE.encode(" " + answer).tolist()))
  path = tmp_path / "cloze.jsonl"
  path.write_text("".join(json.dumps(line) + "\n" for line in lines))
  limit = 192
  cut = [(c[len(c) - (limit - 3 - len(a)):] if len(c) + len(a) + 3 > limit else c, a)
         for c, a in expected]
  forward = _forward(config)
  reference = [_reference(forward, params, c, a) for c, a in cut]

  examples = cloze_lib.read_examples(str(path))
  rows, n_cut = cloze_lib.encode(examples, BYTE, limit, str(path))
  assert [(c.tolist(), a.tolist()) for c, a in rows] == cut
  assert n_cut == sum(len(c) + len(a) + 3 > limit for c, a in expected) > 0
  assert {cloze_lib.bucket_length(len(c) + len(a) + 3, limit) for c, a in cut} == {64, 128, 192}
  mesh = parallel.make_mesh(config.mesh)
  model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  with parallel.activate(mesh, parallel.logical_rules(config.mesh)):  # rows over 8 devices
    log_likelihood, correct = cloze_lib.score(params, model, mesh, rows, S, limit=limit,
                                              batch_size=8)
  np.testing.assert_allclose(log_likelihood, [ll for ll, _ in reference], rtol=1e-4)
  assert correct.tolist() == [right for _, right in reference]
  assert 0 < sum(right for _, right in reference) < len(reference)  # both outcomes compared


def test_a_model_certain_of_the_answers_scores_1_and_a_random_one_scores_low(cloze_model,
                                                                              tmp_path):
  config, initial, params = cloze_model
  rng = np.random.default_rng(2)
  path = tmp_path / "cloze.jsonl"
  path.write_text("".join(json.dumps(dict(zip(("text", "answer"), _pattern(rng)))) + "\n"
                          for _ in range(40)))
  scores = {}
  for name, weights in (("trained", params), ("random", initial)):
    workdir = str(tmp_path / name)
    pretrained.save(workdir, config, weights)
    # Batches of 3 rows do not split over 8 devices: replicated (test above: split).
    report = evaluate.evaluate(workdir, cloze=str(path), batches=0, batch_size=3)
    assert "held_out" not in report and report["cloze"]["count"] == 40
    scores[name] = report["cloze"]
  assert scores["trained"]["accuracy"] == 1.0 and scores["trained"]["correct"] == 40
  assert scores["random"]["accuracy"] <= 0.1
  assert scores["trained"]["mean_log_likelihood"] > scores["random"]["mean_log_likelihood"] + 5


def test_the_cloze_report_gives_the_mean_answer_log_likelihood_and_the_count_right(cloze_model,
                                                                                   tmp_path):
  config, initial, _ = cloze_model
  rng = np.random.default_rng(3)
  examples = [_pattern(rng) for _ in range(6)]
  path = tmp_path / "cloze.jsonl"
  path.write_text("".join(json.dumps({"text": c, "answer": a}) + "\n" for c, a in examples))
  pretrained.save(str(tmp_path / "run"), config, initial)
  report = evaluate.evaluate(str(tmp_path / "run"), cloze=str(path), batches=0)["cloze"]
  forward = _forward(config)
  reference = [_reference(forward, initial, BYTE.encode(c).tolist(),
                          BYTE.encode(" " + a).tolist()) for c, a in examples]
  assert report["count"] == 6 and report["correct"] == sum(right for _, right in reference)
  # Rows hold max_position=192 tokens; contexts of at most 17 bytes fit them uncut.
  assert report["contexts_cut"] == 0 and report["max_row_tokens"] == 192
  np.testing.assert_allclose(report["accuracy"], report["correct"] / 6)
  np.testing.assert_allclose(report["mean_log_likelihood"], np.mean([ll for ll, _ in reference]),
                             rtol=1e-4)

def test_the_batch_size_flag_sets_the_rows_of_each_cloze_batch(cloze_model, tmp_path,
                                                               monkeypatch):
  """--batch_size is the way to lower the memory cloze scoring takes: it, not the run's
  data.batch_size (8), is what the batches of rows are made of."""
  config, initial, _ = cloze_model
  pretrained.save(str(tmp_path / "run"), config, initial)
  path = tmp_path / "cloze.jsonl"
  rng = np.random.default_rng(4)
  path.write_text("".join(json.dumps(dict(zip(("text", "answer"), _pattern(rng)))) + "\n"
                          for _ in range(5)))
  sizes, score = [], cloze_lib.score
  monkeypatch.setattr(cloze_lib, "score",
                      lambda *a, **kw: sizes.append(kw["batch_size"]) or score(*a, **kw))
  report = evaluate.evaluate(str(tmp_path / "run"), cloze=str(path), batches=0, batch_size=2)
  assert sizes == [2] and report["cloze"]["count"] == 5


# ------------------------------------------------------------ the text, its rows and the cloze file
@pytest.mark.parametrize("content, message", [
    ('{"text": "a b", "answer": "c"}\n\n{"text": "a b", answer: "c"}\n', "line 3: not JSON"),
    ('{"text": "a b", "answer": "c"}\n{"text": "a b"}\n', 'line 2: no "answer" string'),
    ('{"text": "a b", "answer": "c"}\n["a b", "c"]\n', "line 2: a JSON list, not an object"),
    ('{"answer": "c", "text": 3}\n', 'line 1: "text" is not a string'),
    ("\n\n", "has no examples"),
    ('{"text": "a b", "answer": "c"}\n{"text": "a b", "answer": " \\n"}\n',
     'line 2: the "answer" is empty'),
], ids=["not json", "no answer", "not an object", "text not a string", "empty", "blank answer"])
def test_a_bad_cloze_file_is_named_with_the_line(tmp_path, content, message):
  path = tmp_path / "bad.jsonl"
  path.write_text(content)
  with pytest.raises(cloze_lib.ClozeFileError) as raised:
    cloze_lib.read_examples(str(path))
  assert f"--cloze={path}" in str(raised.value) and message in str(raised.value)


def test_the_answer_follows_the_context_as_in_running_text():
  assert cloze_lib.split_text("He gave it to", "Bob") == ("He gave it to", " Bob")
  assert cloze_lib.split_text("He gave it to ", "Bob") == ("He gave it to", " Bob")
  assert cloze_lib.split_text("He gave it to Bob.\n", "Bob.") == ("He gave it to", " Bob.")
  assert cloze_lib.split_text("He gave it to\nBob", "Bob") == ("He gave it to", "\nBob")
  assert cloze_lib.split_text("He gave it to\n", "Bob") == ("He gave it to", "\nBob")
  assert cloze_lib.split_text("un", "able") == ("un", " able")  # a word of its own
  assert cloze_lib.split_text("unable", "able") == ("un", "able")  # cut from the text as written
  # Whitespace around the answer field is the file's, not the answer's.
  assert cloze_lib.split_text("He gave it to", " Bob\n") == ("He gave it to", " Bob")
  assert cloze_lib.split_text("He gave it to Bob", "Bob ") == ("He gave it to", " Bob")


def test_a_cloze_context_loses_the_whitespace_it_starts_with_as_the_original_strips_it():
  # LambadaDataset.get_tokens: text[:start].strip(), so no space follows [CLS].
  assert cloze_lib.split_text("  He gave it to", "Bob") == ("He gave it to", " Bob")
  assert cloze_lib.split_text("\nHe gave it to Bob\n", "Bob") == ("He gave it to", " Bob")


def test_an_answer_with_no_context_before_it_gets_no_space_before_it():
  # No text at all, or a text of the answer alone: nothing precedes the answer in running
  # text, so no space is put in front of it (a byte-level BPE would score ' Bob' instead).
  assert cloze_lib.split_text("", "Bob") == ("", "Bob")
  assert cloze_lib.split_text("Bob", "Bob") == ("", "Bob")
  # Whitespace alone is no context either.
  assert cloze_lib.split_text("  Bob", "Bob") == ("", "Bob")
  assert cloze_lib.split_text("   ", "Bob") == ("", "Bob")


def test_a_cloze_file_s_records_end_at_newlines_only_not_at_unicode_line_separators(tmp_path):
  # json.dumps(..., ensure_ascii=False) writes U+2028 and U+0085 as they are, inside a string.
  path = tmp_path / "cloze.jsonl"
  records = [{"text": "one\u2028two", "answer": "three"}, {"text": "four\x85five", "answer": "six"}]
  path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                  encoding="utf-8")
  examples = cloze_lib.read_examples(str(path))
  assert [(e.context, e.answer, e.line) for e in examples] == [
      ("one\u2028two", " three", 1), ("four\x85five", " six", 2)]


def test_rows_are_padded_to_lengths_the_attention_kernel_takes():
  config = model_lib.ModelConfig(max_position=300, attention="xla")
  assert cloze_lib.row_limit(config, 256) == 300
  assert [cloze_lib.bucket_length(n, 300) for n in (5, 64, 65, 290)] == [64, 64, 128, 300]
  splash = model_lib.ModelConfig(max_position=300, attention="splash")  # blocks of 128
  assert cloze_lib.row_limit(splash, 256) == 256 and cloze_lib.bucket_multiple(splash) == 128
  # tokamax's GPU kernel takes whole chunks of 128 rows too (64, 192, 320 fail to trace).
  tokamax = model_lib.ModelConfig(max_position=300, attention="tokamax", dtype="bfloat16")
  assert cloze_lib.bucket_multiple(tokamax) == 128
  # A table shorter than one block: the text stays inside it, the padding fills the block.
  short = model_lib.ModelConfig(max_position=100, attention="splash")
  assert cloze_lib.row_limit(short, 256) == 100
  assert cloze_lib.bucket_length(100, 100, 128) == 128
  rotary = model_lib.ModelConfig(max_position=100, position_encoding="rope", attention="xla")
  assert cloze_lib.row_limit(rotary, 256) == 256  # no table: the training length
  longer = model_lib.ModelConfig(max_position=300, position_encoding="rope", attention="xla")
  assert cloze_lib.row_limit(longer, 256) == 300  # or max_position, if that is longer
  rotary_2d = model_lib.ModelConfig(max_position=100, position_encoding="rope_2d", attention="xla")
  assert cloze_lib.row_limit(rotary_2d, 256) == 256  # GLM's 2D rotary: no table either


def test_an_answer_that_fills_the_whole_row_is_scored_with_no_context_and_a_longer_one_refused(
    tmp_path):
  # [CLS] [MASK] eos [sop] and the answer but its last token (a target, never an input): a row
  # of 64 holds an answer of 61 tokens.
  examples = [cloze_lib.Example("the context", " " + "x" * 60, line=1)]
  rows, cut = cloze_lib.encode(examples, BYTE, 64, "f.jsonl")
  assert [(c.tolist(), len(a)) for c, a in rows] == [([], 61)] and cut == 1
  row = cloze_lib.build_row(S, *rows[0], 64)
  assert row["tokens"].tolist()[:4] == [S.cls, S.mask, S.eos, S.sop] and row["sep"] == 3
  assert row["targets"].tolist()[-1] == ord("x") and row["tokens"].tolist()[-1] == ord("x")
  longer = [cloze_lib.Example("the context", " " + "x" * 61, line=7)]
  with pytest.raises(cloze_lib.ClozeFileError, match="line 7: the answer is 62 tokens; a row of "
                                                     "at most 64 tokens cannot hold it"):
    cloze_lib.encode(longer, BYTE, 64, "f.jsonl")


def test_a_cloze_row_reads_the_answer_but_its_last_token_as_the_original_s_lambada_rows():
  # LambadaDataset + build_input_from_ids: [CLS] context [MASK] eos | [sop] answer[:-1], every
  # Part B position the [MASK]'s, block positions 1.., targets the answer; no [eop] target.
  row = cloze_lib.build_row(S, [10, 11], [20, 21, 22], 10)
  assert row["tokens"].tolist() == [S.cls, 10, 11, S.mask, S.eos, S.sop, 20, 21, S.pad, S.pad]
  assert row["targets"].tolist() == [0] * 5 + [20, 21, 22] + [0] * 2
  assert row["position_ids"].tolist() == [0, 1, 2, 3, 4, 3, 3, 3, 0, 0]
  assert row["block_position_ids"].tolist() == [0] * 5 + [1, 2, 3] + [0] * 2
  assert (row["sep"], row["answer_len"]) == (5, 3)
  # So a row of 8 tokens holds that context and answer whole, as the original's does.
  rows, cut = cloze_lib.encode([cloze_lib.Example("ab", " cd", line=1)], BYTE, 8, "f.jsonl")
  assert [len(c) for c, _ in rows] == [2] and cut == 0


def test_a_context_that_exactly_fills_the_row_is_not_counted_as_cut():
  # [CLS] [MASK] eos [sop] and the answer " x" (2 bytes, its last never an input) leave 59 of
  # 64 tokens to the context, as the original's LambadaDataset leaves them.
  fits = cloze_lib.Example("y" * 59, " x", line=1)
  longer = cloze_lib.Example("y" * 60, " x", line=2)
  rows, cut = cloze_lib.encode([fits], BYTE, 64, "f.jsonl")
  assert len(rows[0][0]) == 59 and cut == 0
  rows, cut = cloze_lib.encode([fits, longer], BYTE, 64, "f.jsonl")
  assert [len(c) for c, _ in rows] == [59, 59] and cut == 1
  assert len(cloze_lib.build_row(S, *rows[0], 64)["tokens"]) == 64


def test_lines_of_whitespace_are_skipped_and_the_lines_after_keep_their_numbers(tmp_path):
  path = tmp_path / "cloze.jsonl"
  path.write_text('{"text": "a b", "answer": "c"}\n   \n\t\r\n{"text": "d e", "answer": "f"}\n')
  examples = cloze_lib.read_examples(str(path))
  assert [(e.context, e.answer, e.line) for e in examples] == [("a b", " c", 1), ("d e", " f", 4)]


class _UniformModel:
  """Stands in for GLM under `attention`: zero hidden states, so every answer token has
  probability 1/V; records the row lengths it is compiled for."""

  def __init__(self, attention):
    self.config = model_lib.ModelConfig(attention=attention)
    self.lengths = set()

  def apply(self, variables, tokens, *args, **kwargs):
    del variables, args, kwargs
    self.lengths.add(tokens.shape[1])
    return jax.numpy.zeros((*tokens.shape, 4))


def _score_uniform(attention, rows, **kwargs):
  model = _UniformModel(attention)
  params = {"word_embeddings": np.zeros((S.eop + 1, 4), np.float32)}
  config = _config()
  mesh = parallel.make_mesh(config.mesh)
  with parallel.activate(mesh, parallel.logical_rules(config.mesh)):
    log_likelihood, correct = cloze_lib.score(params, model, mesh, rows, S, limit=256, **kwargs)
  return model.lengths, log_likelihood, correct


def test_under_a_kernel_of_128_token_blocks_cloze_rows_are_padded_to_a_multiple_of_128():
  # Rows of 3 + 10 + 2, 3 + 60 + 2 (one past 64) and 3 + 100 + 2 tokens: buckets of 64, 128
  # and 128 for the dense kernel; splash tiles rows in blocks of 128, so all are 128 long.
  rows = [(np.full(context, 120, np.int32), np.array([32, 120], np.int32))
          for context in (10, 60, 100)]
  for attention, lengths in (("xla", {64, 128}), ("splash", {128})):
    seen, log_likelihood, _ = _score_uniform(attention, rows, batch_size=8)
    assert seen == lengths, attention
    # Every id equally likely: each answer token scores -log V.
    np.testing.assert_allclose(log_likelihood, [-2 * np.log(S.eop + 1)] * 3, rtol=1e-5)


def test_cloze_progress_reports_the_texts_sent_so_far_and_only_after_every_s():
  rows = [(np.full(5, 120, np.int32), np.array([32, 120], np.int32))] * 10
  reported = []
  _score_uniform("xla", rows, batch_size=8, progress=reported.append, every_s=-1.0)  # each batch
  assert reported == [8, 10]  # batches of 8 rows (one per device): 8, then the last 2
  reported.clear()
  _score_uniform("xla", rows, batch_size=8, progress=reported.append, every_s=3600.0)
  assert reported == []  # a quick run logs nothing
