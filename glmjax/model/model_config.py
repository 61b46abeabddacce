"""The model's view of `config.model`: a frozen, hashable dataclass, plus size and FLOPs formulas.

Flax module attributes must be hashable and immutable, so the ConfigDict is copied into
`ModelConfig` once. `param_count` and `flops_per_token` are analytic (no arrays are built).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax.numpy as jnp

POSITION_ENCODINGS = ("learned_2d", "rope_2d", "rope")
NORMS = ("pre", "deepnorm")
MLPS = ("gelu", "geglu")
ACTIVATIONS = ("gelu_tanh", "gelu_exact")
REMATS = ("none", "minimal", "full")
PLATFORMS = ("", "cpu", "gpu", "tpu")  # jax.default_backend() names; '' = this host's


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int = 30592
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  ffn_size: int = 0
  max_position: int = 512
  position_encoding: str = "learned_2d"
  rope_theta: float = 10000.0
  norm: str = "pre"
  mlp: str = "gelu"
  activation: str = "gelu_tanh"
  layernorm_eps: float = 1e-5
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  init_std: float = 0.02
  dtype: str = "bfloat16"
  param_dtype: str = "float32"
  attention: str = "auto"
  remat: str = "none"
  scan_layers: bool = True
  # Not a user setting: the platform the program is compiled for ('' = this host's backend).
  # step.resolved_model_config sets it from the mesh's devices, so a TPU program compiled on a
  # CPU host (python -m glmjax.aot) carries the Mosaic kernels, not their interpreter.
  target_platform: str = ""

  def __post_init__(self):
    for field, choices in (("position_encoding", POSITION_ENCODINGS), ("norm", NORMS),
                           ("mlp", MLPS), ("activation", ACTIVATIONS), ("remat", REMATS),
                           ("target_platform", PLATFORMS)):
      if getattr(self, field) not in choices:
        raise ValueError(f"model.{field}={getattr(self, field)!r}: choose one of {choices}.")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"model.hidden_size={self.hidden_size} is not divisible by "
                       f"model.num_heads={self.num_heads}.")
    rotary_multiple = {"rope_2d": 4, "rope": 2}.get(self.position_encoding, 1)
    if self.head_dim % rotary_multiple:
      raise ValueError(f"model.position_encoding={self.position_encoding!r} needs a head dim "
                       f"divisible by {rotary_multiple}, got {self.head_dim}.")

  @classmethod
  def from_any(cls, config: Any) -> "ModelConfig":
    """From a ModelConfig, an ml_collections ConfigDict or a mapping; unknown keys are ignored."""
    if isinstance(config, cls):
      return config
    if hasattr(config, "to_dict"):
      config = config.to_dict()
    if not isinstance(config, Mapping):
      raise TypeError(f"Expected a model config (ConfigDict, mapping or ModelConfig), got "
                      f"{type(config).__name__}.")
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in config.items() if key in names})

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def ffn(self) -> int:
    """Inner MLP width (GeGLU: the width of each of the two halves)."""
    return self.ffn_size or 4 * self.hidden_size

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def weights_dtype(self):
    return jnp.dtype(self.param_dtype)

  @property
  def deepnorm_alpha(self) -> float:
    return math.sqrt(2.0 * self.num_layers)


def layer_param_count(config: ModelConfig) -> int:
  hidden, ffn = config.hidden_size, config.ffn
  attention = 3 * hidden * hidden + 3 * hidden + hidden * hidden + hidden
  mlp_in = (2 if config.mlp == "geglu" else 1) * (hidden * ffn + ffn)
  mlp_out = ffn * hidden + hidden
  layernorms = 4 * hidden
  return attention + mlp_in + mlp_out + layernorms


def param_count(model_config: Any) -> int:
  """Parameters of GLM: V·H + 2(P+1)·H + L(12H² + 13H) + 2H for the original GLM (§2.1).

  Generalised: RoPE variants have no position tables; GeGLU doubles the first MLP projection;
  ffn_size replaces 4H. The output projection is tied to the word embeddings (no extra term).
  """
  config = ModelConfig.from_any(model_config)
  hidden = config.hidden_size
  embeddings = config.vocab_size * hidden
  if config.position_encoding == "learned_2d":
    embeddings += 2 * (config.max_position + 1) * hidden
  return embeddings + config.num_layers * layer_param_count(config) + 2 * hidden


def visible_pairs(seq_len: int, sep: int) -> int:
  """Number of (query, key) pairs the GLM mask allows in one row with Part A of length sep."""
  sep = min(max(int(sep), 0), seq_len)
  return sep * sep + (seq_len * (seq_len + 1) - sep * (sep + 1)) // 2


def flops_per_token(model_config: Any, seq_len: int, *, part_a_fraction: float = 0.85) -> float:
  """Training FLOPs per token (forward + backward = 3 x forward), the MFU convention.

  Weights: 6 · (matmul parameters per token): QKV, output, MLP projections and the tied output
  projection V·H; embedding lookups and layer norms are not counted.
  Attention: 3 · 4·H per visible (query, key) pair per layer (QK^T and PV, 2 FLOPs per
  multiply-add), averaged over a row of seq_len tokens whose Part A is `part_a_fraction` of the
  row (0.85 ≈ GLM's blank infilling at 15% masking; 0 gives plain causal, 1 full attention).
  Rematerialisation is not counted (model FLOPs, not hardware FLOPs).
  """
  config = ModelConfig.from_any(model_config)
  hidden, ffn = config.hidden_size, config.ffn
  mlp_matmul = (3 if config.mlp == "geglu" else 2) * hidden * ffn
  layer_matmul = 4 * hidden * hidden + mlp_matmul
  matmul_params = config.num_layers * layer_matmul + config.vocab_size * hidden
  pairs_per_token = visible_pairs(seq_len, round(part_a_fraction * seq_len)) / seq_len
  attention = 3 * 4 * hidden * pairs_per_token * config.num_layers
  return 6.0 * matmul_params + attention
