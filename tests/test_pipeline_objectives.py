"""The objectives a BatchPipeline mixes: their shares of the rows, each one's rows alone, an
objective added by its name, and the planned Part B share that FLOPs planning reads."""
import numpy as np
import pytest
from scipy import stats

from glmjax.data import pipeline
from glmjax.data.specials import BERT_SPECIALS as S
from test_pipeline import MIXED_LENGTHS, Tokenizer, check_contract, corpus, data_config


@pytest.fixture(scope="module")
def docs():
  return corpus(MIXED_LENGTHS)


def test_objectives_mix_per_row_in_their_configured_shares(docs):
  p = pipeline.BatchPipeline(data_config(blank_prob=0.5, sentence_prob=0.3, document_prob=0.2,
                                         batch_size=512), Tokenizer(), docs, seed=5)
  batch = p.global_batch(1)
  check_contract(batch, 256, 512)
  shares = np.bincount(batch["objective"], minlength=3) / 512
  assert np.all(np.abs(shares - [0.5, 0.3, 0.2]) < 0.07)
  for objective, token in enumerate((S.mask, S.smask, S.gmask)):
    rows = batch["objective"] == objective
    assert np.all(np.any(batch["tokens"][rows] == token, axis=1))


def test_the_planned_part_b_share_of_mask_rows_is_the_masked_share_plus_one_sop_per_span():
  # FLOPs planning: a [MASK] row's Part B is its masked tokens (mask_ratio of the text) and one
  # [sop] per span, mask_ratio / mean span length more, in a row that is the text and two
  # tokens per span (a [MASK] in Part A, a [sop] in Part B); Poisson(3) on 1..39 has mean 3.157.
  ks = np.arange(1, 40)
  pmf = stats.poisson.pmf(ks, 3.0)
  mean_span = float(np.sum(ks * pmf) / np.sum(pmf))
  assert abs(mean_span - 3.157) < 1e-3
  assert pipeline.expected_part_b_fraction(data_config()) == pytest.approx(
      0.15 * (1 + 1 / mean_span) / (1 + 2 * 0.15 / mean_span))


@pytest.mark.parametrize("name", pipeline.OBJECTIVE_NAMES)
def test_every_objective_alone_makes_rows_of_its_kind_that_carry_loss(docs, name):
  # An objective that has a name and a probability but no row kind in build_rows would give
  # rows with no Part B: nothing to learn from, and no error.
  config = data_config(**{f"{other}_prob": float(other == name)
                          for other in pipeline.OBJECTIVE_NAMES}, batch_size=128)
  batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=3).global_batch(0)
  check_contract(batch, 256, 128)
  assert np.mean(batch["objective"] == pipeline.OBJECTIVE_NAMES.index(name)) > 0.9
  assert np.all(batch["loss_mask"].sum(axis=1) > 0)


def test_an_objective_added_to_the_names_is_validated_and_drawn_with_the_others(docs,
                                                                                monkeypatch):
  # An objective is its name in OBJECTIVE_NAMES and a data.{name}_prob field: the recipe check
  # and the draw read the probabilities from the names, so neither needs another edit.
  monkeypatch.setattr(pipeline, "OBJECTIVE_NAMES", (*pipeline.OBJECTIVE_NAMES, "toy"))
  config = data_config(blank_prob=0.5, batch_size=256)
  config.toy_prob = 0.0
  assert "data.toy_prob" in pipeline.recipe_problem(config)  # the shares sum to 0.5
  config.toy_prob = 0.5
  assert pipeline.recipe_problem(config) is None
  batch = pipeline.BatchPipeline(config, Tokenizer(), docs, seed=4).global_batch(0)
  assert abs(np.mean(batch["objective"] == 3) - 0.5) < 0.1
