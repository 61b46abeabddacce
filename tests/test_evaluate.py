"""glmjax.evaluate's held-out report: against numpy and against train's own eval figures, and
the inputs it refuses (the command's flags and console: test_evaluate_command.py; cloze scoring:
test_cloze.py)."""
import dataclasses
import importlib
import json
import logging
import os
import re
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest

from glmjax import evaluate, held_out, pretrained, train
from glmjax import model as model_lib
from glmjax import step as step_lib
from glmjax import workdir as workdir_lib
from glmjax.data import pipeline as pipeline_lib
from glmjax.data import sources
from glmjax.data.tokenizers import ByteTokenizer, tokenizer_info

BYTE = ByteTokenizer()
S = BYTE.specials


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
  (tmp_path / workdir_lib.CONFIG_FILE).write_text(text)
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
  path = os.path.join(copy, workdir_lib.CONFIG_FILE)
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


def test_a_corpus_changed_since_the_run_is_said_to_give_other_figures_than_train_logged(
    trained, tmp_path, caplog):
  """Same config, other text (here fewer built-in documents): the held-out split moves, so the
  report cannot be the eval/ figures of the run, and that was not said."""
  run = tmp_path / "run"
  shutil.copytree(trained, run)
  caplog.set_level(logging.WARNING, logger="glmjax")
  evaluate.evaluate(str(run), batches=1)
  assert "not the eval/ figures" not in caplog.text  # the run's own corpus
  saved = json.loads((run / "config.json").read_text())
  saved["data"]["builtin_docs"] = 250
  (run / "config.json").write_text(json.dumps(saved))
  said = (r"now holds 250 documents, [\d,]+ tokens; step 2 was trained on 300 documents, "
          r"[\d,]+ tokens: the held-out split is not the run's, so these are not the eval/ "
          r"figures train logged")
  evaluate.evaluate(str(run), batches=1)
  assert re.search(said, caplog.text), caplog.text
  caplog.clear()
  # The run's corpus given where it is now (--data_source): an edit on the way is said too.
  evaluate.evaluate(str(run), batches=1, data_source="builtin")
  assert re.search(said, caplog.text), caplog.text


def test_more_batches_than_the_held_out_split_holds_say_its_documents_come_back(trained,
                                                                                  caplog):
  """Rows draw held-out documents again once the batches outgrow the split: more batches then
  narrow the figures less than their number suggests, and the user asking for 1,000 was not
  told. The rows counted are those of --batch_size (16 here), not the run's 8."""
  caplog.set_level(logging.INFO, logger="glmjax")
  held = int(np.sum(sources.load_documents(_config().data, BYTE)[1].doc_lengths))
  evaluate.evaluate(trained, batches=1)
  assert "held-out split: its documents come back" not in caplog.text
  enough = -(-3 * held // (16 * 64))  # about three passes over the split in batches of 16 rows
  evaluate.evaluate(trained, batches=enough, batch_size=16)
  # Counted at the run's 8 rows, the same batches would be about 1.5 passes: no notice at all.
  found = re.search(r"(\d+) batches of 16 rows of 64 tokens read about (\d+) times the ([\d,]+) "
                    r"tokens of the held-out split: its documents come back", caplog.text)
  assert found, caplog.text
  assert (int(found[1]), int(found[2]), int(found[3].replace(",", ""))) == (enough, 3, held)


def test_the_report_is_written_where_out_says_in_folders_made_for_it(trained, tmp_path):
  out = tmp_path / "reports" / "run" / "step_2.json"
  report = evaluate.evaluate(trained, batches=0, out=str(out))
  assert report["out"] == str(out)
  assert json.loads(out.read_text()) == {"workdir": trained, "step": 2}


def test_an_out_folder_is_refused_first_and_a_report_it_cannot_write_is_printed(
    trained, tmp_path, capsys, monkeypatch):
  with pytest.raises(evaluate.EvaluateError, match=r"^--out=.* is a folder; give a file path"):
    evaluate.evaluate(str(tmp_path / "no_run_here"), out=str(tmp_path))
  def unwritable(*args, **kwargs):
    raise PermissionError(13, "Permission denied")
  monkeypatch.setattr(evaluate, "write_report", unwritable)
  with pytest.raises(evaluate.EvaluateError, match=r"Permission denied; it is printed above\.$"):
    evaluate.evaluate(trained, batches=0, out=str(tmp_path / "report.json"))
  assert json.loads(capsys.readouterr().out) == {"workdir": trained, "step": 2}


def test_a_second_evaluation_of_a_step_keeps_the_first_report_and_writes_beside_it(
    trained, tmp_path):
  """The default path never overwrites: a report with cloze figures would otherwise be lost
  to a later held-out-only run of the same step."""
  run = str(tmp_path / "run")
  shutil.copytree(trained, run)
  shutil.rmtree(os.path.join(run, "eval"), ignore_errors=True)
  first = evaluate.evaluate(run, batches=1)
  second = evaluate.evaluate(run, batches=0)
  third = evaluate.evaluate(run, batches=0)
  folder = os.path.join(run, "eval")
  assert [first["out"], second["out"], third["out"]] == [
      os.path.join(folder, name) for name in ("step_2.json", "step_2.2.json", "step_2.3.json")]
  with open(first["out"], encoding="utf-8") as f:
    assert "held_out" in json.load(f)  # the first report, untouched
  assert sorted(os.listdir(folder)) == ["step_2.2.json", "step_2.3.json", "step_2.json"]


def test_a_default_report_path_taken_between_its_check_and_its_write_is_not_overwritten(
    tmp_path, monkeypatch):
  """Two evaluations of one step at once: the one that finds step_N.json free but loses it to
  the other before writing takes the next path."""
  (tmp_path / "eval").mkdir()
  taken = tmp_path / "eval" / "step_7.json"
  found = evaluate.unused_report_path
  calls = []

  def racing(workdir, step):  # the first look sees the path free; then the other run takes it
    calls.append(step)
    if len(calls) == 1:
      taken.write_text("the other run's report\n", encoding="utf-8")
      return str(taken)
    return found(workdir, step)

  monkeypatch.setattr(evaluate, "unused_report_path", racing)
  path = evaluate.write_report("mine\n", None, str(tmp_path), 7)
  assert path == str(tmp_path / "eval" / "step_7.2.json")
  assert taken.read_text(encoding="utf-8") == "the other run's report\n"
  assert (tmp_path / "eval" / "step_7.2.json").read_text(encoding="utf-8") == "mine\n"
  # A path the user gave is written as given, over what is there.
  assert evaluate.write_report("again\n", str(taken), str(tmp_path), 7) == str(taken)
  assert taken.read_text(encoding="utf-8") == "again\n"
  # Paths taken as fast as they are found: a bounded search, then one line naming the flag.
  monkeypatch.setattr(evaluate, "unused_report_path", lambda workdir, step: str(taken))
  with pytest.raises(evaluate.EvaluateError, match=r"No free report path .* give --out=FILE"):
    evaluate.write_report("mine\n", None, str(tmp_path), 7)
  assert taken.read_text(encoding="utf-8") == "again\n"


def test_a_bucket_workdir_s_report_is_written_through_its_file_system(monkeypatch):
  """gs:// has no create-if-absent through open(): the report goes through epath, after the
  earlier reports of the step (step_7.json is there) are stepped over."""
  files = {"gs://b/run/eval/step_7.json": "earlier\n"}

  class BucketPath:  # the part of epath.Path the report uses
    def __init__(self, path):
      self.path = str(path)

    parent = property(lambda self: BucketPath(self.path.rsplit("/", 1)[0]))
    exists = lambda self: self.path in files  # noqa: E731
    mkdir = lambda self, **_: None  # noqa: E731

    def write_text(self, text, encoding):
      assert encoding == "utf-8"
      files[self.path] = text

  monkeypatch.setattr(evaluate.epath, "Path", BucketPath)
  assert evaluate.write_report("mine\n", None, "gs://b/run", 7) == "gs://b/run/eval/step_7.2.json"
  assert files == {"gs://b/run/eval/step_7.json": "earlier\n",
                   "gs://b/run/eval/step_7.2.json": "mine\n"}


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


# ------------------------------------------------------------------------------------ refusals
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
                           r"give a smaller --batch_size \(a multiple of 8\)\. "),
], ids=["prepared folder missing", "split smaller than a batch"])
def test_held_out_data_that_is_missing_or_smaller_than_a_batch_is_refused_in_words(
    trained, tmp_path, flags, message):
  with pytest.raises(evaluate.EvaluateError, match=message):
    evaluate.evaluate(trained, batches=1, out=str(tmp_path / "report.json"), **flags)


def test_parameters_are_refused_under_a_tokenizer_other_than_the_one_they_were_trained_with(
    trained, monkeypatch):
  """A tokenizer file trained again at the same path, or a relative tokenizer_path read from
  the current folder, would give the embeddings other text without a word."""
  loaded = pretrained.load(trained)
  assert loaded.tokenizer == tokenizer_info(pretrained.load_tokenizer(loaded))
  retrained = dataclasses.replace(loaded, tokenizer={**loaded.tokenizer, "fingerprint": "0123"})
  monkeypatch.setattr(pretrained, "load", lambda *args, **kwargs: retrained)
  with pytest.raises(evaluate.EvaluateError, match=r"^The checkpoint of step 2 in .* was "
                                                   r"trained with the tokenizer byte .*differ "
                                                   r"in fingerprint\)\. Point data.tokenizer_path"):
    evaluate.evaluate(trained, batches=1)
