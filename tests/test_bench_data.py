"""bench --what=data: its figures (span lengths, masked and padding shares, per objective, the
runs it compares) against the rows it measured, laid out by hand or read back."""
import importlib
import json
import types

import numpy as np
import pytest

from glmjax import config as glm_config
from glmjax.bench import data as bench_data
from glmjax.data import pipeline
from glmjax.data.specials import BERT_SPECIALS as S
from test_bench import _flags
from test_bench_step import _Clock
from test_infilling import TEXT_1, one_row
from test_pipeline import Tokenizer, corpus, data_config, parse_row


def test_the_data_benchmark_s_span_length_histogram_is_that_of_the_batch_s_spans():
  # The paper's worked example: spans x3 (1 token) and x5 x6 (2 tokens), each ended by [eop].
  worked = one_row(TEXT_1, [3, 5], [1, 2], [1, 0], S.mask, 12)
  worked["objective"] = np.zeros(1, np.int32)
  assert bench_data.objective_stats(worked, S.eop)["blank"]["span_length_histogram"] == (
      [0.5, 0.5] + [0.0] * 9)
  # Built rows of every objective: the lengths of the spans their Part B holds (a [gMASK]
  # suffix has no [eop]; its targets are all text).
  config = data_config(blank_prob=0.4, sentence_prob=0.3, document_prob=0.3, batch_size=256)
  batch = pipeline.BatchPipeline(config, Tokenizer(), corpus([300, 700, 1500, 3000] * 3),
                                 seed=6).global_batch(0)
  per_objective = bench_data.objective_stats(batch, S.eop)
  for index, name in enumerate(pipeline.OBJECTIVE_NAMES):
    rows = np.flatnonzero(batch["objective"] == index)
    lengths = [len(span) - (span[-1] == S.eop) for r in rows for _, span in parse_row(batch, r)[1]]
    assert len(lengths) >= 40 and per_objective[name]["rows"] == len(rows)
    if index == pipeline.DOCUMENT:  # both layouts occur: a suffix and an [eop]-ended span
      assert {span[-1] == S.eop for r in rows for _, span in parse_row(batch, r)[1]} == {
          True, False}
    # Part A holds the text ([CLS] included) less its spans, plus one mask token per span.
    spans = [len(parse_row(batch, r)[1]) for r in rows]
    text = int(batch["sep"][rows].sum()) - sum(spans) + sum(lengths)
    assert per_objective[name]["masked_fraction"] == pytest.approx(sum(lengths) / text,
                                                                   abs=1e-4)
    expected = np.bincount(np.minimum(lengths, 11), minlength=12)[1:] / len(lengths)
    np.testing.assert_allclose(per_objective[name]["span_length_histogram"], expected,
                               atol=1e-4)


def test_the_data_benchmark_s_blank_figures_are_those_of_the_batch_s_spans():
  # The worked example: a text of 8 tokens, spans of 1 and 2 tokens; 12 positions, none padding.
  worked = one_row(TEXT_1, [3, 5], [1, 2], [1, 0], S.mask, 12)
  worked["objective"] = np.zeros(1, np.int32)
  figures = bench_data.batch_stats(worked)
  assert figures["masked_fraction"] == pytest.approx(3 / 8)
  assert figures["mean_span_length"] == pytest.approx(1.5)
  assert figures["spans_per_blank_row"] == 2 and figures["padding_fraction"] == 0
  # Built rows of a mixture: the [MASK] rows' spans as parse_row reads them back.
  config = data_config(blank_prob=0.5, sentence_prob=0.3, document_prob=0.2, batch_size=128,
                       short_seq_prob=0.3)
  batch = pipeline.BatchPipeline(config, Tokenizer(), corpus([300, 700, 1500, 3000] * 3),
                                 seed=7).global_batch(0)
  figures = bench_data.batch_stats(batch)
  rows = np.flatnonzero(batch["objective"] == pipeline.BLANK)
  spans = [[len(span) - 1 for _, span in parse_row(batch, r)[1]] for r in rows]
  masked = sum(sum(s) for s in spans)
  text = int(batch["sep"][rows].sum()) - sum(len(s) for s in spans) + masked
  assert len(rows) > 40
  assert figures["masked_fraction"] == pytest.approx(masked / text)
  assert figures["mean_span_length"] == pytest.approx(masked / sum(len(s) for s in spans))
  assert figures["spans_per_blank_row"] == pytest.approx(np.mean([len(s) for s in spans]))
  used = batch["sep"] + (batch["block_position_ids"] > 0).sum(axis=1)
  assert figures["padding_fraction"] == pytest.approx(1 - used.sum() / batch["sep"].size / 256)
  assert figures["padding_fraction"] > 0  # short rows pad


def test_the_data_benchmark_s_tokens_per_s_are_every_timed_batch_s_tokens_over_the_time(
    monkeypatch):
  clock = iter([50.0, 52.0])  # the timed batches take 2 s; nothing real is timed
  monkeypatch.setattr(bench_data, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
  config = data_config(batch_size=8, seq_len=128)
  figures = bench_data.measure(config, Tokenizer(), corpus([300, 700, 1500] * 2), steps=3)
  assert figures["tokens_per_s"] == pytest.approx(3 * 8 * 128 / 2.0)
  assert figures["batch_s"] == pytest.approx(2.0 / 3)


def test_the_data_benchmark_counts_each_objective_s_rows_spans_and_padding_apart():
  # Two hand-laid rows of 14 positions: the worked example (Part A 7, Part B 5: 2 padding) as a
  # blank row, and one span of 3 tokens (Part A 8 - 3 + 1 = 6, Part B 3 + 1 = 4: 4 padding) as a
  # document row; no sentence row.
  rows = [one_row(TEXT_1, [3, 5], [1, 2], [1, 0], S.mask, 14),
          one_row(TEXT_1, [2], [3], [0], S.mask, 14)]
  batch = {key: np.concatenate([row[key] for row in rows]) for key in rows[0]}
  batch["objective"] = np.array([pipeline.BLANK, pipeline.DOCUMENT], np.int32)
  per_objective = bench_data.objective_stats(batch, S.eop)
  assert set(per_objective) == {"blank", "document"}
  blank, document = per_objective["blank"], per_objective["document"]
  assert (blank["rows"], blank["spans_per_row"]) == (1, 2)
  assert (document["rows"], document["spans_per_row"]) == (1, 1)
  # Each objective's padding is a share of its own rows' positions.
  assert blank["padding_fraction"] == pytest.approx(2 / 14, abs=1e-4)
  assert document["padding_fraction"] == pytest.approx(4 / 14, abs=1e-4)
  assert bench_data.batch_stats(batch)["objective_shares"] == [0.5, 0.0, 0.5]


def test_the_data_benchmark_counts_span_starts_at_a_later_document_s_first_place_and_elsewhere():
  #                 0    1   2       3      4      5       6  7  8      9      10 11   12 (pad)
  tokens = np.array([[S.cls, 5, S.mask, S.eos, S.cls, S.mask, 6, 7, S.eos, S.cls, 8, S.mask, 0],
                     [S.cls, S.mask, 9, S.eos, S.cls, 4, S.eos, S.pad, 0, 0, 0, 0, 0]])
  # Places: Part A tokens that are not [CLS], eos or padding. First places follow a [CLS] that
  # is not the row's own: 5 and 10 in row 0 (one starts a span), 5 in row 1 (none does); the
  # row's own first place (1) counts with the others: 1, 2, 6, 7, 11 and 1, 2 (3 start spans).
  shares = bench_data.start_shares({"tokens": tokens, "sep": np.array([12, 7])}, S)
  assert shares == {"first_places": round(1 / 3, 4), "other_places": round(3 / 7, 4)}


def test_the_data_benchmark_finds_a_packed_document_s_first_place_starts_spans_as_others_do():
  # Before spans went to documents by the original's rule, one drawn across a boundary moved to
  # the next document's first place: 0.20 of those places started a span, against 0.054.
  config = importlib.import_module("configs.large").get_config()
  shares = bench_data.document_start_spans(
      config.data, bench_data.SyntheticTokenizer(int(config.model.vocab_size)), seed=0)
  assert 0.7 < shares["first_places"] / shares["other_places"] < 1.3, shares
  assert 0.05 < shares["other_places"] < 0.06  # 15% of the text in spans of 3.16 on average


def _measured_by_run(monkeypatch):
  """bench_data.main builds nothing: each run's figures are numbered by the run, and the
  configs it was given are returned."""
  measured = []

  def measure(data_config, tokenizer, docs, steps, seed=0):
    measured.append(data_config)
    run = len(measured)
    assert steps == 2
    return {"tokens_per_s": 1000.0 * run, "batch_s": 0.5, "padding_fraction": 0.1 * run,
            "per_objective": {"run": run}}

  monkeypatch.setattr(bench_data, "measure", measure)
  monkeypatch.setattr(bench_data, "sentence_start_share", lambda data, seed=0: 0.04)
  monkeypatch.setattr(bench_data, "document_start_spans", lambda data, tokenizer, seed=0: {})
  return measured


def test_the_data_benchmark_reports_the_config_the_glm_10b_mixture_and_it_with_every_option(
    monkeypatch, capsys):
  config = importlib.import_module("configs.base").get_config("local")
  config.data.update(blank_prob=0.6, sentence_prob=0.3, document_prob=0.1)
  _flags(monkeypatch, bench_data, steps=2)
  measured = _measured_by_run(monkeypatch)
  bench_data.main(config, [])
  record = json.loads(capsys.readouterr().out)
  own, mixture, every_option = measured
  probs = lambda c: (c.blank_prob, c.sentence_prob, c.document_prob)  # noqa: E731
  assert probs(own) == (0.6, 0.3, 0.1) and not own.sentence_windows
  # GLM-10B's mixture: blank .5, sentence .3, document .2; then the same with every option on.
  assert probs(mixture) == (0.5, 0.3, 0.2) and not mixture.sentence_windows
  assert probs(every_option) == (0.5, 0.3, 0.2)
  assert all(every_option[key] == value for key, value in bench_data.EVERY_OPTION.items())
  assert record["objectives"] == [0.6, 0.3, 0.1] and record["steps"] == 2
  assert (record["tokens_per_s"], record["mixture_tokens_per_s"],
          record["every_option_tokens_per_s"]) == (1000, 2000, 3000)
  assert (record["padding_fraction"], record["mixture_padding_fraction"],
          record["every_option_padding_fraction"]) == (0.1, 0.2, 0.3)
  assert record["every_option_per_objective"] == {"run": 3}
  assert config.data.blank_prob == 0.6  # the config itself left as it was


def test_the_data_benchmark_counts_the_cores_this_process_may_run_on_not_the_machine_s(
    monkeypatch, capsys):
  _flags(monkeypatch, bench_data, steps=2)
  _measured_by_run(monkeypatch)
  # Run as `taskset -c 0,3` on a 16-core machine: 2 cores are this process's.
  monkeypatch.setattr(bench_data.os, "sched_getaffinity", lambda pid: {0, 3})
  monkeypatch.setattr(bench_data.os, "cpu_count", lambda: 16)
  bench_data.main(importlib.import_module("configs.base").get_config("local"), [])
  assert json.loads(capsys.readouterr().out)["cpu_cores_allowed"] == 2


def test_the_data_benchmark_starts_its_clock_after_a_warm_up_batch(monkeypatch):
  clock, built = _Clock(), []

  class Pipeline(pipeline.BatchPipeline):
    def global_batch(self, step):  # the first batch pays first-touch of memory: 3 s, then 0.25 s
      clock.advance(0.25 if built else 3.0)
      built.append(step)
      return super().global_batch(step)

  monkeypatch.setattr(bench_data, "time", clock)
  monkeypatch.setattr(bench_data.pipeline, "BatchPipeline", Pipeline)
  config = data_config(batch_size=8, seq_len=128)
  figures = bench_data.measure(config, Tokenizer(), corpus([300, 700, 1500] * 2), steps=3)
  assert built == [0, 1, 2, 3]  # batch 0 untimed, then the 3 timed
  assert figures["batch_s"] == pytest.approx(0.25)
  assert figures["tokens_per_s"] == pytest.approx(8 * 128 / 0.25)


def test_the_every_option_figures_turn_on_every_recipe_option_the_defaults_leave_off(
    monkeypatch, capsys):
  # Whatever data option is off by default (a switch, or a rate of 0 other than an objective's
  # share) is on in the third run, so that `every_option_tokens_per_s` times the slowest recipe.
  defaults = glm_config.data_defaults()
  switches = [name for name, value in defaults.items() if value is False]
  rates = [name for name, value in defaults.items() if name.endswith(("_prob", "_ratio"))
           and value == 0 and name not in bench_data.MIXTURE]
  assert "draw_per_batch" in switches and "block_mask_prob" in rates  # the lists are not empty
  _flags(monkeypatch, bench_data, steps=2)
  measured = _measured_by_run(monkeypatch)
  bench_data.main(importlib.import_module("configs.base").get_config("local"), [])
  capsys.readouterr()
  every_option = measured[2]
  assert [name for name in switches if every_option[name] is not True] == []
  assert [name for name in rates if not every_option[name] > 0] == []
