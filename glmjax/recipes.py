"""The published recipes that configs/*.py build on, and the `:local` variant of every config.

configs/NAME.py starts from `config.default_config()`, applies a recipe here where GLM's scripts
give one (GLM-Base and GLM-Large share one; GLM-10B's two stages, which GLM-2B follows too),
and reads its argument with `parse_arg` (`configs/base.py:local`,
`configs/glm_10b.py:stage2,local`).
"""
from __future__ import annotations

import ml_collections

from glmjax.config import ConfigError


def glm_dropout(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """GLM trained with hidden and attention dropout 0.1; the fused attention kernels (splash,
  cuDNN, tokamax) have none, so attention dropout stays off (0.1 makes attention=auto use
  xla)."""
  config.model.update(hidden_dropout=0.1, attention_dropout=0.0)
  return config


def bert_vocabulary_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """GLM-Base and GLM-Large (THUDM/GLM's config scripts): BERT vocabulary, 512 tokens, 1024 rows
  of [MASK] spans only; Adam (0.9, 0.98, 1e-6), weight decay 0.1, 5% warmup, cosine decay.
  Each config sets its shape, peak learning rate, decay horizon, final ratio and steps."""
  glm_dropout(config)
  config.model.update(vocab_size=30592, max_position=512)
  config.data.update(seq_len=512, batch_size=1024, blank_prob=1.0, sentence_prob=0.0,
                     document_prob=0.0, tokenizer="hf", tokenizer_vocab="bert")
  config.optim.update(b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.1, warmup_ratio=0.05,
                      schedule="cosine")
  return config


def glm_10b_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """GLM-10B stage 1 objectives, data recipe and optimizer (GLM's published scripts), GPT-2
  vocabulary. As the original: [dBLOCK] on 10% of Part B span inputs, 2% short rows, windows
  cut at sentence ends, its [sMASK] sentences. Objectives stay drawn per row (set
  data.draw_per_batch=True for the original's per-batch draws). GLM-2B and GLM-10B set their
  shape; both keep every activation's recomputation (remat=full) to fit."""
  glm_dropout(config)
  config.model.update(vocab_size=50304, max_position=1024, remat="full")
  config.data.update(seq_len=512, batch_size=1024, blank_prob=0.5, sentence_prob=0.3,
                     document_prob=0.2, gen_min_ratio=0.25, tokenizer="hf", tokenizer_vocab="gpt2",
                     block_mask_prob=0.1, short_seq_prob=0.02, sentence_windows=True,
                     original_sentences=True)
  # Warmup 7k of a 175k decay horizon, cosine to 10% of the peak; 250k steps.
  config.optim.update(learning_rate=1e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                      warmup_ratio=0.04, decay_steps=175_000, schedule="cosine", final_ratio=0.1)
  config.train.steps = 250_000
  config.mesh.update(data=1, fsdp=-1, tensor=1)
  return config


def glm_10b_stage2(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """GLM-10B's second stage ("-1024"): the stage-1 run continued at 1024 tokens with more
  [gMASK], 5% single-span and 50% short rows; lr 3e-5, 0.5% warmup, linear over 50k steps.
  Start it from the stage-1 workdir with --config.checkpoint.init_from=STAGE1_WORKDIR. The
  original's rows per GPU drop from 21 of 512 tokens to 8 of 1024 (its DeepSpeed configs):
  on the same GPUs 0.38 of stage 1's rows, 0.76 of its tokens. 512 rows keep stage 1's tokens
  a step and split over any power-of-two slice (1024 rows were twice the tokens)."""
  config.data.update(seq_len=1024, batch_size=512, blank_prob=0.4, sentence_prob=0.3,
                     document_prob=0.3, single_span_prob=0.05, short_seq_prob=0.5)
  config.optim.update(learning_rate=3e-5, warmup_ratio=0.005, decay_steps=50_000,
                      schedule="linear", final_ratio=0.1)
  config.train.steps = 50_000
  config.checkpoint.init_optimizer = True  # the original loaded stage 1's Adam state too
  return config


def parse_arg(arg: str | None, allowed: tuple[str, ...] = ("local",)) -> set[str]:
  """Config-file argument (`configs/base.py:local`, `configs/glm_10b.py:stage2,local`) as a set
  of flags; a word not in `allowed` is a ConfigError (a typo would otherwise train the full
  config)."""
  words = {part.strip() for part in (arg or "").split(",") if part.strip()}
  unknown = sorted(words - set(allowed))
  if unknown:
    raise ConfigError(f"config argument {','.join(unknown)!r} is not one of this config's: "
                      f"{', '.join(allowed)} (configs/NAME.py:{allowed[0]}).")
  return words


def shrink_to_local(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A few-minute run on 2 CPU cores, on the offline built-in corpus with the byte tokenizer."""
  config.model.update(vocab_size=384, hidden_size=128, num_layers=2, num_heads=4, max_position=128,
                      hidden_dropout=0.0, attention_dropout=0.0, dtype="float32", attention="xla")
  config.data.update(source="builtin", tokenizer="byte", tokenizer_path="", tokenizer_vocab="",
                     seq_len=128, batch_size=16)
  config.optim.update(learning_rate=2e-3, warmup_ratio=0.05, decay_steps=300, final_ratio=0.1)
  config.train.update(steps=300, log_every=20, eval_every=100, eval_batches=2)
  config.checkpoint.update(every=100, keep=2)
  config.mesh.update(data=-1, fsdp=1, tensor=1)
  return config
