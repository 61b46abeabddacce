"""Model FLOPs count what the step computes: checked by hand and against XLA's compiled count."""
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from glmjax import attention_choice
from glmjax import loss as loss_lib
from glmjax import model as model_lib
from glmjax import optim, parallel, step as step_lib
from glmjax.bench.step import synthetic_batch
from glmjax.data import pipeline as pipeline_lib, sources, tokenizers


def test_step_flops_equal_a_hand_count_for_a_tiny_config():
  cfg = model_lib.ModelConfig(vocab_size=10, hidden_size=4, ffn_size=16, num_layers=1,
                              num_heads=1)
  seq_len, seps = 4, (1, 3)
  # Pairs the mask allows, counted on the mask itself: row sep=1 has 1 Part A pair and Part B
  # rows seeing 2, 3, 4 keys (10); row sep=3 has 9 Part A pairs and one Part B row seeing 4 (13).
  mask = np.asarray(model_lib.glm_mask(jnp.array(seps), seq_len))
  pairs = int(mask.sum())
  assert pairs == 23 == sum(model_lib.visible_pairs(seq_len, s) for s in seps)
  # By hand, 3 x forward, 2 FLOPs per multiply-add:
  #   layers  6 x (QKV 3·16 + out 16 + MLP 2·4·16 = 192 weights) x 8 tokens   = 9216
  #   attention  3 x 2 matmuls x 2 x H=4 per pair x 23 pairs                  = 1104
  #   vocabulary 6 x V·H = 40 weights x 4 scored positions                     =  960
  flops = model_lib.step_flops(cfg, tokens=2 * seq_len, visible_pairs=pairs, logit_positions=4)
  assert flops == 9216 + 1104 + 960


def test_geglu_step_flops_count_its_three_mlp_projections_by_hand():
  cfg = model_lib.ModelConfig(vocab_size=10, hidden_size=4, ffn_size=16, num_layers=1,
                              num_heads=1, mlp="geglu")
  # The tiny config above with a GeGLU MLP: a gate and a value projection (H x F each) and the
  # output one (F x H). 3 x forward, 2 FLOPs per multiply-add, 23 pairs, 4 scored positions:
  #   layers  6 x (QKV 3·16 + out 16 + MLP 3·4·16 = 256 weights) x 8 tokens   = 12288
  #   attention and vocabulary as above                                        = 1104 + 960
  flops = model_lib.step_flops(cfg, tokens=8, visible_pairs=23, logit_positions=4)
  assert flops == 12288 + 1104 + 960


@pytest.mark.parametrize("mlp", ["gelu", "geglu"])
def test_per_token_layer_flops_are_six_per_weight_of_the_model_s_layer_matmuls(mlp):
  cfg = model_lib.ModelConfig(vocab_size=64, hidden_size=16, ffn_size=24, num_layers=2,
                              num_heads=2, mlp=mlp, dtype="float32", attention="xla",
                              scan_layers=False)
  tokens = jnp.zeros((1, 8), jnp.int32)
  shapes = jax.eval_shape(model_lib.GLM(cfg).init, jax.random.key(0), tokens, tokens, tokens,
                          jnp.array([4]))["params"]
  kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(nn.meta.unbox(shapes))
             if "kernel" in jax.tree_util.keystr(path)]
  matmul_weights = sum(math.prod(leaf.shape) for leaf in kernels)
  assert matmul_weights > 0
  one_token = model_lib.step_flops(cfg, tokens=1, visible_pairs=0, logit_positions=0)
  assert one_token == 6 * matmul_weights


def test_planning_flops_per_token_use_the_config_s_part_b_share():
  cfg = model_lib.ModelConfig(vocab_size=128, hidden_size=32, num_layers=2, num_heads=4)
  blank_only = model_lib.flops_per_token(cfg, 64, part_b_fraction=0.2)
  no_loss = model_lib.flops_per_token(cfg, 64, part_b_fraction=0.0)  # full attention, no logits
  assert no_loss == pytest.approx(6 * 2 * 12 * 32 * 32 + 12 * 32 * 2 * 64)
  expected = model_lib.step_flops(cfg, tokens=64, visible_pairs=model_lib.visible_pairs(64, 51),
                                  logit_positions=0.2 * 64) / 64
  assert blank_only == pytest.approx(expected)


# [gMASK] at gen_min_ratio 0.5 and 0.2: formulas that agree at 0.5 (1 - r/2) differ at 0.2.
# [sMASK] at GLM's 512: whole sentences overshoot 15% of a short row (0.32 of 128 tokens).
@pytest.mark.parametrize("objective, gen_min_ratio, seq_len, rel", [
    ("blank", 0.5, 128, 0.1), ("sentence", 0.5, 512, 0.1), ("document", 0.5, 128, 0.1),
    ("document", 0.2, 128, 0.1),
    # GLM's row: the [MASK]s in Part A count in the row (without them the plan said 8% more).
    ("blank", 0.5, 512, 0.03)])
def test_the_expected_part_b_share_matches_built_rows(objective, gen_min_ratio, seq_len, rel):
  config = importlib.import_module("configs.base").get_config("local")
  config.data.update(seq_len=seq_len, batch_size=64, builtin_docs=600, blank_prob=0.0,
                     gen_min_ratio=gen_min_ratio)
  config.data[f"{objective}_prob"] = 1.0
  tokenizer = tokenizers.load_tokenizer(config.data)
  docs, _ = sources.load_documents(config.data, tokenizer)
  batch = pipeline_lib.BatchPipeline(config.data, tokenizer, docs, seed=0).build_rows(
      0, np.arange(64))
  measured = float(np.mean(config.data.seq_len - batch["sep"])) / config.data.seq_len
  assert pipeline_lib.expected_part_b_fraction(config.data) == pytest.approx(measured, rel=rel)


def _full_logits_loss(hidden, embeddings, targets, weights, chunk=None):
  del chunk
  logits = jnp.einsum("bth,vh->btv", hidden, embeddings.astype(hidden.dtype),
                      preferred_element_type=jnp.float32)
  token_loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets) * weights
  correct = (jnp.argmax(logits, -1) == targets) * weights
  return {"loss_sum": jnp.sum(token_loss), "row_loss": jnp.sum(token_loss, -1),
          "row_correct": jnp.sum(correct, -1), "logit_positions": jnp.float32(targets.size)}


def _compiled_step(config, batch):
  """(XLA's FLOPs for the compiled step, the step's metrics) on one device."""
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
  rules = parallel.logical_rules(config.mesh)
  with parallel.activate(mesh, rules):
    program = step_lib.build_program(config, mesh, rules,
                                     attention_choice.resolved_model_config(config))
    compiled = program.compile_train_step(config, mesh)
    state = step_lib.init_sharded_state(program.init_fn, program.shardings, config.seed)
    _, metrics = compiled(state, parallel.global_batch(batch, parallel.host_rows(mesh, 8)))
  return compiled.cost_analysis()["flops"], jax.device_get(metrics)


def test_compiled_flops_drop_by_the_vocabulary_share_when_only_part_b_is_scored(monkeypatch):
  config = importlib.import_module("configs.base").get_config("local")
  config.model.update(hidden_size=32, num_heads=2, num_layers=1, vocab_size=512,
                      max_position=64, scan_layers=False, attention="xla")
  config.data.update(seq_len=64, batch_size=8)
  config.mesh.update(data=1, fsdp=1, tensor=1)
  batch = synthetic_batch(8, 64, 512)
  # One scored position fewer (120 -> 119): model FLOPs that counted the chunk-rounded logit
  # positions instead of the scored ones would then differ.
  batch["loss_mask"] = np.array(batch["loss_mask"])
  batch["loss_mask"][0, -1] = 0
  # XLA counts a loop body once: with 8-position chunks the Part B loss shows as 8 positions.
  config.train.loss_chunk = 8
  part_b_flops, metrics = _compiled_step(config, batch)
  monkeypatch.setattr(loss_lib, "part_b_cross_entropy", _full_logits_loss)
  full_flops, full_metrics = _compiled_step(config, batch)
  vocabulary = 6 * 512 * 32
  assert full_flops - part_b_flops == pytest.approx(vocabulary * (8 * 64 - 8), rel=0.1)
  # Model FLOPs count the scored positions; the loss computed those plus the last chunk's tail.
  scored = int(np.sum(batch["loss_mask"]))
  assert scored % 8
  assert metrics["model_flops"] == pytest.approx(model_lib.step_flops(
      model_lib.ModelConfig.from_config(config.model), tokens=8 * 64, logit_positions=scored,
      visible_pairs=sum(model_lib.visible_pairs(64, int(s)) for s in batch["sep"])))
  assert metrics["logit_positions"] == -(-scored // 8) * 8
  assert full_metrics["logit_positions"] == 8 * 64
  assert float(metrics["loss"]) == pytest.approx(float(full_metrics["loss"]), rel=1e-5)


def test_the_train_step_counts_the_visible_pairs_of_rows_longer_than_46340_tokens():
  """T·(T+1) passes int32 at T = 46341: as a Python int beside the step's float32 count, jax
  refuses it and the step does not even trace. Counted with T as a float, the pairs of rows of
  65536 tokens are the exact integer count to float32's precision."""
  config = importlib.import_module("configs.base").get_config("local")
  long = 46464
  config.model.update(hidden_size=32, num_heads=2, num_layers=1, vocab_size=512,
                      max_position=long, scan_layers=False, attention="xla")
  config.data.update(seq_len=long, batch_size=1)
  config.mesh.update(data=1, fsdp=1, tensor=1)
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
  rules = parallel.logical_rules(config.mesh)
  with parallel.activate(mesh, rules):
    program = step_lib.build_program(config, mesh, rules,
                                     attention_choice.resolved_model_config(config))
    batch = step_lib.abstract_batch(1, long, mesh)
    # Traced and lowered, not compiled: the step's arrays are never built.
    lowered = program.train_step.lower(program.abstract_state, batch)
    metrics = lowered.out_info[1]
  assert metrics["model_flops"].dtype == jnp.float32
  seps = [30000, 40000, 65536]
  counted = jax.jit(lambda sep: jnp.sum(model_lib.visible_pairs(65536.0, sep)))(
      jnp.asarray(seps, jnp.float32))
  assert float(counted) == pytest.approx(sum(model_lib.visible_pairs(65536, s) for s in seps),
                                         rel=1e-6)
