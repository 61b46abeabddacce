"""The shipped configs load, carry GLM's published settings, and shrink for local runs."""
import importlib
import os
import re

import pytest

from glmjax.model import model_config

CONFIGS = ("base", "large", "glm_2b", "glm_10b")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", CONFIGS)
def test_local_variant_is_small_and_offline(name):
  module = importlib.import_module(f"configs.{name}")
  full, local = module.get_config(), module.get_config("local")
  assert local.model.hidden_size < full.model.hidden_size
  assert local.data.source == "builtin" and local.data.tokenizer == "byte"
  assert local.model.hidden_size % local.model.num_heads == 0


def test_configs_carry_the_published_optimizer_settings():
  base = importlib.import_module("configs.base").get_config()
  large = importlib.import_module("configs.large").get_config()
  assert (base.optim.learning_rate, base.optim.b2, base.optim.eps) == (4e-4, 0.98, 1e-6)
  assert large.optim.learning_rate == 2e-4
  assert large.optim.warmup_ratio * large.optim.decay_steps == 8000


# --bert-prob and --gap-sentence-prob of THUDM/GLM config/ds_block_2B.sh and ds_block_10B.sh;
# the rest of a row's draws are [gMASK] rows.
@pytest.mark.parametrize("name, blank", (("glm_2b", 0.4), ("glm_10b", 0.5)))
def test_gpt2_models_use_the_glm_10b_recipe_and_their_script_s_mix(name, blank):
  config = importlib.import_module(f"configs.{name}").get_config()
  assert (config.data.blank_prob, config.data.sentence_prob) == (blank, 0.3)
  assert config.data.document_prob == pytest.approx(1.0 - blank - 0.3)
  assert config.data.gen_min_ratio == 0.25 and config.data.tokenizer_vocab == "gpt2"
  assert (config.optim.learning_rate, config.optim.b2, config.optim.eps) == (1e-4, 0.95, 1e-8)
  assert config.optim.warmup_ratio * config.optim.decay_steps == pytest.approx(7000)
  # Billions of parameters: the parameters and AdamW's moments sharded over every device.
  assert (config.mesh.data, config.mesh.fsdp, config.mesh.tensor) == (1, -1, 1)


def test_glm_10b_carries_the_original_data_recipe_and_its_second_stage():
  module = importlib.import_module("configs.glm_10b")
  stage1, stage2 = module.get_config(), module.get_config("stage2")
  # Words after a comma may have a space before them, as people type them.
  assert module.get_config("stage2, local").to_dict() == module.get_config(
      "stage2,local").to_dict()
  assert module.get_config("stage2, local").data.seq_len != stage2.data.seq_len  # local too
  for stage, local in ((stage1, module.get_config("local")),
                       (stage2, module.get_config("stage2,local"))):  # its own objectives
    assert [local.data[f"{kind}_prob"] for kind in ("blank", "sentence", "document")] == [
        stage.data[f"{kind}_prob"] for kind in ("blank", "sentence", "document")]
  assert (stage1.data.block_mask_prob, stage1.data.short_seq_prob) == (0.1, 0.02)
  assert stage1.data.sentence_windows and stage1.data.original_sentences
  assert stage1.data.seq_len == 512 and stage2.data.seq_len == 1024
  assert (stage2.data.blank_prob, stage2.data.sentence_prob, stage2.data.document_prob) == (
      0.4, 0.3, 0.3)
  assert (stage2.data.single_span_prob, stage2.data.short_seq_prob) == (0.05, 0.5)
  assert stage2.optim.learning_rate == 3e-5 and stage2.optim.schedule == "linear"
  # Stage 1: 1024 rows, AdamW with weight decay 0.1, cosine to 10% over 175k of 250k steps.
  assert stage1.data.batch_size == 1024 and stage1.train.steps == 250_000
  assert (stage1.optim.weight_decay, stage1.optim.schedule, stage1.optim.decay_steps,
          stage1.optim.final_ratio) == (0.1, "cosine", 175_000, 0.1)
  # Stage 2: 512 rows of 1024 tokens (stage 1's tokens a step; the original's micro-batches
  # drop from 21 rows to 8 per GPU), 0.5% warmup, linear to 10% over its 50k steps.
  assert stage2.data.batch_size * stage2.data.seq_len == 1024 * 512
  # It takes stage 1's Adam state with its parameters, as the original loaded it.
  assert stage2.checkpoint.init_optimizer and not stage1.checkpoint.init_optimizer
  assert (stage2.optim.warmup_ratio, stage2.optim.decay_steps, stage2.optim.final_ratio,
          stage2.train.steps) == (0.005, 50_000, 0.1, 50_000)


# THUDM/GLM config/ds_block_base.sh and ds_block_large.sh (--train-iters, --lr-decay-iters,
# --lr-decay-ratio, --warmup, --seq-length, --max-position-embeddings) with
# config_block_{base,large}.json (Adam's lr, betas, eps, weight_decay). Not the objectives: the
# configs keep the paper's [MASK]-only GLM-Base and GLM-Large, where the last version of
# ds_block_large.sh (488da82) adds --task-mask with [sMASK] and [gMASK] rows.
GLM_SCRIPTS = {"base": dict(steps=150_000, decay_steps=120_000, lr=4e-4),
               "large": dict(steps=200_000, decay_steps=160_000, lr=2e-4)}


@pytest.mark.parametrize("name", GLM_SCRIPTS)
def test_base_and_large_train_and_decay_for_as_long_as_glm_s_scripts_say(name):
  config, script = importlib.import_module(f"configs.{name}").get_config(), GLM_SCRIPTS[name]
  assert (config.train.steps, config.optim.decay_steps) == (script["steps"],
                                                           script["decay_steps"])
  assert (config.optim.schedule, config.optim.final_ratio, config.optim.warmup_ratio) == (
      "cosine", 0.05, 0.05)
  assert (config.optim.learning_rate, config.optim.b1, config.optim.b2, config.optim.eps,
          config.optim.weight_decay) == (script["lr"], 0.9, 0.98, 1e-6, 0.1)
  assert (config.data.seq_len, config.model.max_position) == (512, 512)


def _readme_config_rows():
  """config name -> (model cell, objectives cell) of the README's table of shipped configs."""
  readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  rows = re.findall(r"^\| `configs/(\w+)\.py` \| ([^|]+) \| ([^|]+) \|", readme, re.M)
  return {name: (model.strip(), objectives.strip()) for name, model, objectives in rows}, readme


def test_the_readme_s_table_of_configs_gives_their_shapes_parameter_counts_and_objectives():
  rows, readme = _readme_config_rows()
  assert sorted(rows) == sorted(CONFIGS), rows
  vocab = None  # a row that names no vocabulary has the one of the row above it
  for name in CONFIGS:
    config = importlib.import_module(f"configs.{name}").get_config()
    model_cell, objectives_cell = rows[name]
    shape = re.search(r"(\d+)(?: layers)?, (\d+), (\d+)(?: heads)?(?:, [^(]*?vocab (\d+))? "
                      r"\(([\d.]+)([MB])\)", model_cell)
    layers, width, heads, vocab = int(shape[1]), int(shape[2]), int(shape[3]), int(
        shape[4] or vocab)
    assert (config.model.num_layers, config.model.hidden_size, config.model.num_heads,
            config.model.vocab_size) == (layers, width, heads, vocab), name
    count = model_config.param_count(model_config.ModelConfig.from_config(config.model))
    decimals = len(shape[5].split(".")[1])
    assert f"{count / {'M': 1e6, 'B': 1e9}[shape[6]]:.{decimals}f}" == shape[5], (name, count)
    probs = (config.data.blank_prob, config.data.sentence_prob, config.data.document_prob)
    if objectives_cell == "[MASK] only":
      assert probs == (1.0, 0.0, 0.0), name
    else:
      shares = [float(share) for share in re.findall(r"(?<![\d.])\.\d+", objectives_cell)]
      assert probs == tuple(shares[:3]), name
      if "gen min ratio" in objectives_cell:
        assert config.data.gen_min_ratio == shares[3], name
    assert (config.data.batch_size, config.data.seq_len) == tuple(map(int, re.search(
        r"The global batch is (\d+) rows of (\d+) tokens", readme).groups())), name
    local = importlib.import_module(f"configs.{name}").get_config("local")
    said = re.search(r"a (\d+)-layer, (\d+)-wide model on\s+the built-in corpus with the byte "
                     r"tokenizer, (\d+) steps", readme)
    assert (local.model.num_layers, local.model.hidden_size, local.train.steps) == tuple(
        map(int, said.groups())), name


# The released checkpoints' shapes (THUDM/GLM's config/ds_block_*.sh and
# config_tasks/model_blocklm_*.sh): layers, width, heads, vocabulary rows and
# --max-position-embeddings, whose position tables (max_position + 1 rows) an imported
# checkpoint must fill exactly.
RELEASED = {"base": (12, 768, 12, 30592, 512), "large": (24, 1024, 16, 30592, 512),
            "glm_2b": (36, 2048, 32, 50304, 1024), "glm_10b": (48, 4096, 64, 50304, 1024)}


@pytest.mark.parametrize("name", CONFIGS)
def test_each_shipped_config_has_its_released_model_s_shape_and_position_table(name):
  model = importlib.import_module(f"configs.{name}").get_config().model
  assert (model.num_layers, model.hidden_size, model.num_heads, model.vocab_size,
          model.max_position) == RELEASED[name]
