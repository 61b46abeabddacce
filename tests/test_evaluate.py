"""python -m glmjax.evaluate: the held-out report against numpy and against train's own eval
figures, cloze rows against rows built here by hand, a model trained to be certain, and the
one-line errors."""
import importlib
import json
import logging
import os
import re
import shutil
import types

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from absl import app

from glmjax import cloze as cloze_lib
from glmjax import config as config_lib
from glmjax import evaluate, held_out, logs, parallel, pretrained, train
from glmjax import model as model_lib
from glmjax import step as step_lib
from glmjax.data import pipeline as pipeline_lib
from glmjax.data import sources
from glmjax.data.tokenizers import ByteTokenizer

BYTE = ByteTokenizer()
S = BYTE.specials
LETTERS = "abcd"


def _config(max_position=64):
  config = importlib.import_module("configs.base").get_config("local")
  config.model.update(hidden_size=32, num_layers=2, num_heads=4, max_position=max_position)
  config.data.update(seq_len=64, batch_size=8, builtin_docs=300, eval_fraction=0.1,
                     blank_prob=0.5, sentence_prob=0.3, document_prob=0.2)
  config.train.update(steps=2, log_every=1, eval_every=2, eval_batches=2)
  config.optim.update(warmup_ratio=0.0, learning_rate=1e-2)  # so the 2 steps move the params
  return config


def _forward(config):
  """Float64 logits of GLM(config.model) on unsharded params: one program per input shape."""
  model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
  apply = jax.jit(lambda params, tokens, positions, blocks, sep: model.apply(
      {"params": params}, tokens, positions, blocks, sep))
  return lambda params, row: np.asarray(apply(params, row["tokens"], row["position_ids"],
                                              row["block_position_ids"], row["sep"]), np.float64)


def _log_softmax(logits):
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 2-step training run whose step 2 was evaluated by train itself (eval/ in metrics.jsonl)."""
  workdir = str(tmp_path_factory.mktemp("run"))
  train.train_and_evaluate(_config(), workdir)
  return workdir


# ------------------------------------------------------------------------------------ held-out
def test_the_held_out_report_equals_a_numpy_computation_on_the_same_batches(trained):
  report = evaluate.evaluate(trained, batches=2)["held_out"]
  config = _config()
  _, eval_docs = sources.load_documents(config.data, BYTE)
  pipeline = pipeline_lib.BatchPipeline(config.data, BYTE, eval_docs, seed=config.seed + 1)
  params = jax.device_get(pretrained.load(trained).params)
  forward = _forward(config)
  loss, right, tokens = np.zeros(3), np.zeros(3), np.zeros(3)
  for index in range(2):
    batch = pipeline.build_rows(index, np.arange(config.data.batch_size))
    logits = forward(params, batch)
    token_loss = -np.take_along_axis(_log_softmax(logits), batch["targets"][..., None], -1)[..., 0]
    hit = logits.argmax(-1) == batch["targets"]
    for k in range(3):
      mask = batch["loss_mask"] * (batch["objective"] == k)[:, None]
      loss[k] += (token_loss * mask).sum()
      right[k] += (hit * mask).sum()
      tokens[k] += mask.sum()
  assert tokens.min() > 0  # every objective was scored
  np.testing.assert_allclose(report["loss"], loss.sum() / tokens.sum(), rtol=1e-5)
  np.testing.assert_allclose(report["accuracy"], right.sum() / tokens.sum(), rtol=1e-6)
  np.testing.assert_allclose(report["perplexity"], np.exp(loss.sum() / tokens.sum()), rtol=1e-5)
  assert report["tokens"] == tokens.sum()
  for k, name in enumerate(pipeline_lib.OBJECTIVE_NAMES):
    np.testing.assert_allclose(report[f"loss_{name}"], loss[k] / tokens[k], rtol=1e-5)
    np.testing.assert_allclose(report[f"accuracy_{name}"], right[k] / tokens[k], rtol=1e-6)
    np.testing.assert_allclose(report[f"perplexity_{name}"], np.exp(loss[k] / tokens[k]),
                               rtol=1e-5)
    assert report[f"tokens_{name}"] == tokens[k]
  # The objectives partition the Part B tokens: their token-weighted mean is the overall figure.
  weights = np.array([report[f"tokens_{name}"] for name in pipeline_lib.OBJECTIVE_NAMES])
  for figure in ("loss", "accuracy"):
    per_objective = [report[f"{figure}_{name}"] for name in pipeline_lib.OBJECTIVE_NAMES]
    np.testing.assert_allclose(weights @ per_objective / weights.sum(), report[figure], rtol=1e-5)


def test_with_its_defaults_the_report_equals_what_train_logged_at_that_step(trained):
  report = evaluate.evaluate(trained)
  with open(os.path.join(trained, "metrics.jsonl"), encoding="utf-8") as f:
    logged = [json.loads(line) for line in f if "eval/loss" in line]
  assert [record["step"] for record in logged] == [report["step"]] == [2]
  for key, value in report["held_out"].items():
    if f"eval/{key}" in logged[0]:
      np.testing.assert_allclose(value, logged[0][f"eval/{key}"], rtol=1e-5, err_msg=key)
  assert "eval/accuracy_sentence" in logged[0]  # train logs the per-objective accuracy too
  with open(os.path.join(trained, "eval", "step_2.json"), encoding="utf-8") as f:
    assert json.load(f) == {k: v for k, v in report.items() if k != "out"}


def test_a_workdir_s_config_reads_back_as_its_run_wrote_it_the_seed_included(tmp_path):
  """evaluate draws the held-out batches with the run's seed + 1, generate and convert take
  the model from the same file: every field read back, top-level ones (seed) as well."""
  config = _config()
  config.seed, config.optim.b2 = 7, 0.95
  text = config.to_json_best_effort(indent=2, sort_keys=True)  # as train writes config.json
  (tmp_path / pretrained.CONFIG_FILE).write_text(text)
  read = pretrained.read_config(str(tmp_path))
  assert read.seed == 7
  assert json.loads(read.to_json_best_effort()) == json.loads(text)


def test_a_workdir_without_held_out_data_says_how_to_give_it(trained, tmp_path):
  copy = str(tmp_path / "imported")
  shutil.copytree(trained, copy)
  saved = json.loads(open(os.path.join(copy, "config.json")).read())
  saved["data"]["source"] = ""
  with open(os.path.join(copy, "config.json"), "w") as f:
    json.dump(saved, f)
  with pytest.raises(evaluate.EvaluateError, match=r"data\.source is empty.*--data_source=.*"
                                                   r"--batches=0"):
    evaluate.evaluate(copy)
  report = evaluate.evaluate(copy, data_source="builtin", batches=1)
  assert report["held_out"]["tokens"] > 0 and report["held_out"]["batches"] == 1


def _edited_copy(trained, tmp_path, section, **fields):
  """A copy of the run `trained` whose config.json has `fields` of `section` replaced."""
  copy = str(tmp_path / "edited")
  shutil.copytree(trained, copy)
  path = os.path.join(copy, pretrained.CONFIG_FILE)
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  saved[section].update(fields)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(saved, f)
  return copy


def _sums(loss, correct, tokens):
  """step.loss_sums' sums of held-out batches whose blank, sentence and document objectives
  summed `loss`, got `correct` tokens right and scored `tokens` Part B tokens."""
  total = lambda values: np.float32(sum(values))  # noqa: E731
  return {"loss_sum": total(loss), "correct": total(correct), "weight": total(tokens),
          "objective_loss_sum": np.array(loss, np.float32),
          "objective_correct": np.array(correct, np.float32),
          "objective_weight": np.array(tokens, np.float32)}


def test_an_objective_with_no_held_out_tokens_has_no_figures_rather_than_a_zero_loss():
  # No sentence spans in the batches: a loss of 0 (perplexity 1) would read as a perfect model.
  scalars = held_out.eval_scalars(_sums(loss=[6.0, 0.0, 3.0], correct=[1, 0, 2],
                                        tokens=[4, 0, 2]))
  for figure in ("loss", "accuracy", "perplexity"):
    assert scalars[f"{figure}_sentence"] is None, figure
  assert scalars["loss_blank"] == 6.0 / 4 and scalars["accuracy_blank"] == 1 / 4
  assert scalars["loss_document"] == 3.0 / 2 and scalars["accuracy_document"] == 2 / 2
  assert scalars["loss"] == 9.0 / 6 and scalars["accuracy"] == 3 / 6
  np.testing.assert_allclose(scalars["perplexity_blank"], np.exp(1.5))
  row = next(line for line in evaluate.format_report(
      {"workdir": "/w", "step": 0, "out": "/w/e.json", "held_out": {
          "batches": 1, "batch_size": 2, "seq_len": 8, "data": "builtin", "tokens": 6,
          "tokens_blank": 4, "tokens_sentence": 0, "tokens_document": 2, **scalars}}).splitlines()
      if line.strip().startswith("sentence"))
  assert row.split() == ["sentence", "n/a", "n/a", "n/a", "0"]


def test_a_diverged_model_s_perplexity_is_a_finite_number_a_json_report_can_hold():
  # A mean loss of 1000 nats: e**1000 overflows a float, and JSON has no Infinity.
  scalars = held_out.eval_scalars(_sums(loss=[4000.0, 2.0, 1.0], correct=[0, 1, 1],
                                        tokens=[4, 1, 1]))
  assert scalars["loss_blank"] == 1000.0
  for key in ("perplexity", "perplexity_blank"):
    assert np.isfinite(scalars[key]) and scalars[key] > 1e20, key  # still astronomically high
  np.testing.assert_allclose(scalars["perplexity_sentence"], np.exp(2.0))
  json.loads(json.dumps(scalars, allow_nan=False))


def test_the_batch_size_flag_sets_the_rows_of_each_held_out_batch(trained, tmp_path):
  report = evaluate.evaluate(trained, batches=1, batch_size=16,
                             out=str(tmp_path / "report.json"))["held_out"]
  config = _config()
  config.data.batch_size = 16
  _, eval_docs = sources.load_documents(config.data, BYTE)
  pipeline = pipeline_lib.BatchPipeline(config.data, BYTE, eval_docs, seed=config.seed + 1)
  rows = pipeline.build_rows(0, np.arange(16))
  assert report["batch_size"] == 16 and report["batches"] == 1
  assert report["tokens"] == rows["loss_mask"].sum() > 0  # the Part B tokens of 16 rows


def test_the_report_is_written_where_out_says_in_folders_made_for_it(trained, tmp_path):
  out = tmp_path / "reports" / "run" / "step_2.json"
  report = evaluate.evaluate(trained, batches=0, out=str(out))
  assert report["out"] == str(out)
  assert json.loads(out.read_text()) == {"workdir": trained, "step": 2}


def test_a_run_trained_in_micro_batches_is_evaluated_in_them_when_the_batch_splits_so(
    trained, tmp_path, monkeypatch):
  """The same peak memory as training: grad_accum_steps=2 over 8 devices splits a batch of 16
  rows into 2 micro-batches of one row a device; one of 8 rows cannot split so and runs whole.
  Micro-batches change no figure: the sums are the same tokens'."""
  copy = _edited_copy(trained, tmp_path, "optim", grad_accum_steps=2)
  micro, jit = [], step_lib.jit_eval_step
  monkeypatch.setattr(step_lib, "jit_eval_step",
                      lambda *a, **kw: micro.append(kw["micro_batches"]) or jit(*a, **kw))
  out = str(tmp_path / "report.json")
  split = evaluate.evaluate(copy, batches=1, batch_size=16, out=out)["held_out"]
  evaluate.evaluate(copy, batches=1, batch_size=8, out=out)
  whole = evaluate.evaluate(trained, batches=1, batch_size=16, out=out)["held_out"]
  assert micro == [2, 1, 1]
  for key in ("loss", "accuracy", "tokens"):
    np.testing.assert_allclose(split[key], whole[key], rtol=1e-5, err_msg=key)


def test_a_model_whose_vocabulary_cannot_hold_the_tokenizer_s_ids_is_refused(tmp_path):
  # The byte tokenizer's ids run to 263: a table of 256 rows would be indexed past its end
  # (JAX clamps the index: wrong figures, no error); one of exactly 264 rows holds them all.
  for vocab_size in (BYTE.ids_used, BYTE.ids_used - 8):
    config = _config()
    config.model.vocab_size = vocab_size
    model = model_lib.GLM(model_lib.ModelConfig.from_config(config.model))
    init = lambda rng: nn.meta.unbox(  # noqa: E731
        model.init(rng, *step_lib.dummy_inputs(1, 8))["params"])
    shapes = jax.eval_shape(init, jax.random.key(0))
    workdir = str(tmp_path / str(vocab_size))
    pretrained.save(workdir, config, jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype),
                                                  shapes))
    if vocab_size == BYTE.ids_used:
      assert evaluate.evaluate(workdir, batches=0)["step"] == 0
    else:
      with pytest.raises(evaluate.EvaluateError, match=re.escape(
          f"has {BYTE.ids_used} ids, more than the model's model.vocab_size={vocab_size}")):
        evaluate.evaluate(workdir, batches=0)


# --------------------------------------------------------------------------------------- cloze
def _row_by_hand(context, answer, length=None):
  """The GLM row of one cloze example, written out from its definition."""
  part_a = [S.cls, *context, S.mask, S.eos]
  sep = len(part_a)
  tokens = part_a + [S.sop, *answer]
  targets = [0] * sep + [*answer, S.eop]
  positions = list(range(sep)) + [sep - 2] * (len(answer) + 1)
  blocks = [0] * sep + list(range(1, len(answer) + 2))
  weights = [0] * sep + [1] * len(answer) + [0]
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
  cut = [(c[len(c) - (limit - 4 - len(a)):] if len(c) + len(a) + 4 > limit else c, a)
         for c, a in expected]
  forward = _forward(config)
  reference = [_reference(forward, params, c, a) for c, a in cut]

  examples = cloze_lib.read_examples(str(path))
  rows, n_cut = cloze_lib.encode(examples, BYTE, limit, str(path))
  assert [(c.tolist(), a.tolist()) for c, a in rows] == cut
  assert n_cut == sum(len(c) + len(a) + 4 > limit for c, a in expected) > 0
  assert {cloze_lib.bucket_length(len(c) + len(a) + 4, limit) for c, a in cut} == {64, 128, 192}
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

# -------------------------------------------------------------------------------------- errors
def test_a_negative_number_of_batches_is_refused(trained):
  with pytest.raises(evaluate.EvaluateError, match=re.escape(
      "--batches=-1: give a number of batches, or 0 to skip")):
    evaluate.evaluate(trained, batches=-1)


def test_a_batch_that_does_not_split_over_the_devices_is_refused_for_the_held_out_report(
    trained, tmp_path):
  # 12 rows over 8 devices (cloze rows may be replicated, training's batch may not).
  with pytest.raises(evaluate.EvaluateError, match=r"--batch_size=12 does not split over the 8 "
                                                   r"devices of the batch axes.*multiple"):
    evaluate.evaluate(trained, batches=1, batch_size=12, out=str(tmp_path / "report.json"))


def test_a_run_that_held_out_no_documents_is_told_to_skip_the_report_before_its_corpus_is_read(
    trained, tmp_path, monkeypatch):
  copy = _edited_copy(trained, tmp_path, "data", eval_fraction=0.0)

  def read(*args):
    raise AssertionError("the corpus was read")
  monkeypatch.setattr(sources, "load_documents", read)
  with pytest.raises(evaluate.EvaluateError, match=r"data\.eval_fraction=0\.0: the run held out "
                                                   r"no documents; skip .* --batches=0"):
    evaluate.evaluate(copy)


@pytest.mark.parametrize("flags, message", [
    (dict(data_source="prepared:/nonexistent/glmjax-prepared"),
     r"held-out data: data\.prepared_dir='/nonexistent/glmjax-prepared' has no manifest\.json"),
    # The 30 held-out documents hold fewer than 448 x 64 tokens: batches would repeat them.
    (dict(batch_size=448), r"held-out data: .*the evaluation split has \d+ tokens in 30 "
                           r"documents, fewer than one batch \(data\.batch_size=448 .*\); "
                           r"give a smaller --batch_size\. "),
], ids=["prepared folder missing", "split smaller than a batch"])
def test_held_out_data_that_is_missing_or_smaller_than_a_batch_is_refused_in_words(
    trained, tmp_path, flags, message):
  with pytest.raises(evaluate.EvaluateError, match=message):
    evaluate.evaluate(trained, batches=1, out=str(tmp_path / "report.json"), **flags)


def test_the_command_hands_its_flags_to_the_evaluation_and_refuses_extra_words(monkeypatch):
  calls = []
  monkeypatch.setattr(evaluate, "run", lambda workdir, **kw: calls.append((workdir, kw)))
  given = dict(cloze="c.jsonl", batches=3, batch_size=16, data_source="builtin", out="r.json")
  monkeypatch.setattr(evaluate, "flags", types.SimpleNamespace(
      FLAGS=types.SimpleNamespace(workdir="/w", **given)))
  evaluate.main(["evaluate"])
  assert calls == [("/w", given)]
  with pytest.raises(app.UsageError, match="Unexpected arguments: extra"):
    evaluate.main(["evaluate", "extra"])
  assert len(calls) == 1


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


@pytest.fixture
def console():
  """The glmjax logger as it was: `run` gives it a console handler on this test's stderr."""
  logger = logging.getLogger("glmjax")
  saved = logger.handlers[:], logger.level, logger.propagate
  yield
  logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_the_command_reports_a_user_error_in_one_line(tmp_path, capsys, console):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"text": "a b", "answer": "c"}\nnot json\n')
  for workdir, cloze, message in ((str(tmp_path / "missing"), None, "no config.json there"),
                                  (str(tmp_path), str(path), f"{path} line 2: not JSON")):
    with pytest.raises(SystemExit) as raised:
      evaluate.run(workdir, cloze=cloze)
    assert raised.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_the_command_joins_the_multi_host_job_before_it_touches_a_device(tmp_path, monkeypatch,
                                                                       capsys, console):
  order = []
  monkeypatch.setattr(parallel, "initialize_distributed",
                      lambda timeout_s, env=None: order.append(("join", timeout_s)))
  monkeypatch.setattr(logs, "setup_console", lambda index: order.append(("console", index)))
  with pytest.raises(SystemExit):
    evaluate.run(str(tmp_path / "missing"))
  # A console for every process's join line first, then process 0's after the join.
  assert order == [("console", 0), ("join", config_lib.train_defaults().distributed_timeout_s),
                   ("console", 0)]
  # A run's workdir: hosts wait as long as that run's training waited for them.
  (tmp_path / "config.json").write_text('{"train": {"distributed_timeout_s": 77}}')
  order.clear()
  with pytest.raises(SystemExit):
    evaluate.run(str(tmp_path))  # no checkpoint yet: a one-line error after the join
  assert order == [("console", 0), ("join", 77), ("console", 0)]


def test_only_process_0_prints_the_report_of_a_multi_host_evaluation(tmp_path, monkeypatch,
                                                                      capsys):
  # Every host computes the same report: one copy on the console, not one per host.
  monkeypatch.setattr(parallel, "initialize_distributed", lambda timeout_s, env=None: None)
  monkeypatch.setattr(logs, "setup_console", lambda index: None)
  report = {"workdir": str(tmp_path), "step": 3, "out": "r.json"}
  monkeypatch.setattr(evaluate, "evaluate", lambda workdir, **kw: report)
  for process, printed in ((1, ""), (0, f"Evaluation of {tmp_path} at step 3\nwritten to "
                                        "r.json\n")):
    monkeypatch.setattr(jax, "process_index", lambda process=process: process)
    assert evaluate.run(str(tmp_path)) == report
    assert capsys.readouterr().out == printed, process


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


def test_an_answer_with_no_context_before_it_gets_no_space_before_it():
  # No text at all, or a text of the answer alone: nothing precedes the answer in running
  # text, so no space is put in front of it (a byte-level BPE would score ' Bob' instead).
  assert cloze_lib.split_text("", "Bob") == ("", "Bob")
  assert cloze_lib.split_text("Bob", "Bob") == ("", "Bob")


def test_rows_are_padded_to_lengths_the_attention_kernel_takes():
  config = model_lib.ModelConfig(max_position=300, attention="xla")
  assert cloze_lib.row_limit(config, 256) == 300
  assert [cloze_lib.bucket_length(n, 300) for n in (5, 64, 65, 290)] == [64, 64, 128, 300]
  splash = model_lib.ModelConfig(max_position=300, attention="splash")  # blocks of 128
  assert cloze_lib.row_limit(splash, 256) == 256 and cloze_lib.bucket_multiple(splash) == 128
  rotary = model_lib.ModelConfig(max_position=100, position_encoding="rope", attention="xla")
  assert cloze_lib.row_limit(rotary, 256) == 256  # no table: the training length
  longer = model_lib.ModelConfig(max_position=300, position_encoding="rope", attention="xla")
  assert cloze_lib.row_limit(longer, 256) == 300  # or max_position, if that is longer
  rotary_2d = model_lib.ModelConfig(max_position=100, position_encoding="rope_2d", attention="xla")
  assert cloze_lib.row_limit(rotary_2d, 256) == 256  # GLM's 2D rotary: no table either


def test_the_report_keeps_its_columns_apart_for_an_untrained_model_s_perplexity():
  held_out = {"batches": 1, "batch_size": 2, "seq_len": 8, "data": "builtin"}
  for name in ("", "_blank", "_sentence", "_document"):
    held_out.update({f"loss{name}": 30.0782, f"accuracy{name}": 0.0421,
                     f"perplexity{name}": 1.1556e13, f"tokens{name}": 393})
  text = evaluate.format_report({"workdir": "/w", "step": 0, "held_out": held_out,
                                 "out": "/w/eval/step_0.json"})
  row = next(line for line in text.splitlines() if line.strip().startswith("all"))
  assert row.split() == ["all", "30.0782", "0.042", "1.156e+13", "393"]


def test_the_console_report_counts_batches_and_cut_contexts_as_they_were():
  scores = {"batches": 1, "batch_size": 2, "seq_len": 8, "data": "builtin"}
  for name in ("", "_blank", "_sentence", "_document"):
    scores.update({f"loss{name}": 2.0, f"accuracy{name}": 0.5, f"perplexity{name}": 7.389,
                     f"tokens{name}": 4})
  cloze = {"file": "c.jsonl", "count": 3, "correct": 2, "accuracy": 2 / 3,
           "mean_log_likelihood": -1.5, "contexts_cut": 0, "max_row_tokens": 64}
  report = {"workdir": "/w", "step": 0, "held_out": scores, "cloze": cloze, "out": "/w/r.json"}
  lines = evaluate.format_report(report).splitlines()
  assert lines[1] == "held-out: 1 batch of 2 x 8 tokens, builtin"
  assert "cloze: c.jsonl, 3 texts" in lines and not any("cut" in line for line in lines)
  scores["batches"], cloze["contexts_cut"] = 2, 1
  lines = evaluate.format_report(report).splitlines()
  assert lines[1] == "held-out: 2 batches of 2 x 8 tokens, builtin"
  assert ("cloze: c.jsonl, 3 texts (1 contexts cut from the left to fit rows of 64 tokens)"
          in lines)


def test_an_answer_that_fills_the_whole_row_is_scored_with_no_context_and_a_longer_one_refused(
    tmp_path):
  # [CLS] [MASK] eos [sop] around the answer: a row of 64 holds an answer of 60 tokens.
  examples = [cloze_lib.Example("the context", " " + "x" * 59, line=1)]
  rows, cut = cloze_lib.encode(examples, BYTE, 64, "f.jsonl")
  assert [(c.tolist(), len(a)) for c, a in rows] == [([], 60)] and cut == 1
  row = cloze_lib.build_row(S, *rows[0], 64)
  assert row["tokens"].tolist()[:4] == [S.cls, S.mask, S.eos, S.sop] and row["sep"] == 3
  longer = [cloze_lib.Example("the context", " " + "x" * 60, line=7)]
  with pytest.raises(cloze_lib.ClozeFileError, match="line 7: the answer is 61 tokens; a row of "
                                                     "at most 64 tokens cannot hold it"):
    cloze_lib.encode(longer, BYTE, 64, "f.jsonl")


def test_a_context_that_exactly_fills_the_row_is_not_counted_as_cut():
  # [CLS] [MASK] eos [sop] and the answer " x" (2 bytes) leave 58 of 64 tokens to the context.
  fits = cloze_lib.Example("y" * 58, " x", line=1)
  longer = cloze_lib.Example("y" * 59, " x", line=2)
  rows, cut = cloze_lib.encode([fits], BYTE, 64, "f.jsonl")
  assert len(rows[0][0]) == 58 and cut == 0
  rows, cut = cloze_lib.encode([fits, longer], BYTE, 64, "f.jsonl")
  assert [len(c) for c, _ in rows] == [58, 58] and cut == 1


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
  # Rows of 4 + 10 + 2 and 4 + 100 + 2 tokens: buckets of 64 and 128 for the dense kernel;
  # splash tiles rows in blocks of 128, so both of its rows are 128 long.
  rows = [(np.full(10, 120, np.int32), np.array([32, 120], np.int32)),
          (np.full(100, 120, np.int32), np.array([32, 120], np.int32))]
  for attention, lengths in (("xla", {64, 128}), ("splash", {128})):
    seen, log_likelihood, _ = _score_uniform(attention, rows, batch_size=8)
    assert seen == lengths, attention
    # Every id equally likely: each answer token scores -log V.
    np.testing.assert_allclose(log_likelihood, [-2 * np.log(S.eop + 1)] * 2, rtol=1e-5)


def test_cloze_progress_reports_the_texts_sent_so_far_and_only_after_every_s():
  rows = [(np.full(5, 120, np.int32), np.array([32, 120], np.int32))] * 10
  reported = []
  _score_uniform("xla", rows, batch_size=8, progress=reported.append, every_s=-1.0)  # each batch
  assert reported == [8, 10]  # batches of 8 rows (one per device): 8, then the last 2
  reported.clear()
  _score_uniform("xla", rows, batch_size=8, progress=reported.append, every_s=3600.0)
  assert reported == []  # a quick run logs nothing


def test_the_data_source_and_batch_size_flags_set_the_fields_they_name():
  assert evaluate.data_overrides("files:a/*.txt,b/*.jsonl", 16) == {
      "batch_size": 16, "source": "files", "files": ("a/*.txt", "b/*.jsonl")}
  assert evaluate.data_overrides("prepared:/data/run", None) == {
      "source": "prepared", "prepared_dir": "/data/run"}
  assert evaluate.data_overrides("tfds:wiki", None) == {"source": "tfds", "tfds_name": "wiki"}
  assert evaluate.data_overrides("builtin", None) == {"source": "builtin"}
  assert evaluate.data_overrides(None, None) == {}


@pytest.mark.parametrize("data_source, batch_size, message", [
    ("files:", None, "--data_source='files:'"),
    ("prepared", None, "--data_source='prepared'"),
    ("builtin:x", None, "--data_source='builtin:x'"),
    ("hdfs:/x", None, "--data_source='hdfs:/x'"),
    (None, 0, "--batch_size=0: must be a positive number of rows"),
], ids=["files without globs", "prepared without a folder", "builtin with a path",
        "unknown source", "no rows"])
def test_a_data_source_or_batch_size_flag_that_names_nothing_usable_is_refused(
    data_source, batch_size, message):
  with pytest.raises(evaluate.EvaluateError, match=re.escape(message)):
    evaluate.data_overrides(data_source, batch_size)
