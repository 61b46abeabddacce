"""The model's view of `config.model`: a frozen, hashable dataclass, plus size and FLOPs formulas.

Flax module attributes must be hashable and immutable, so the ConfigDict is copied into
`ModelConfig` once. `param_count`, `step_flops` and `flops_per_token` are analytic (no
arrays are built).
"""
from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import ml_collections

POSITION_ENCODINGS = ("learned_2d", "rope_2d", "rope")
NORMS = ("pre", "deepnorm")
MLPS = ("gelu", "geglu")
ACTIVATIONS = ("gelu_tanh", "gelu_exact")
REMATS = ("none", "minimal", "full")
DTYPES = ("float32", "bfloat16", "float16")   # float16 is refused for training (config.validate)
PARAM_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Kernel:
  """What the rest of glmjax needs to know of one attention implementation (model/attention.py
  runs it; attention_choice.AUTO_ORDER says where 'auto' tries it)."""
  seq_len_multiple: int = 1        # it tiles the sequence in blocks: data.seq_len a multiple
  attention_dropout: bool = False  # it applies attention-probability dropout
  named_residuals: bool = False    # it tags its output and softmax statistics for remat
  tpu: bool = False                # a TPU kernel (model/splash.py; interpreted elsewhere)
  sixteen_bit_only: bool = False   # takes bfloat16 / float16 inputs only ('auto' skips it)
  mosaic: bool = False             # a Mosaic custom call in the compiled program (TPU or GPU)


# One row per kernel; "auto" is resolved once at start-up (attention_choice).
KERNELS = {
    # The dense reference; its backward needs the [T, T] probabilities, nothing to tag.
    "xla": Kernel(attention_dropout=True),
    # cuDNN row split (gpu_kernels.py), and the Mosaic GPU flash kernel (its sm90 kernel masks
    # key ranges in chunks of two 64-row query blocks: other lengths fail to trace on a GPU).
    "cudnn": Kernel(named_residuals=True, sixteen_bit_only=True),
    "tokamax": Kernel(seq_len_multiple=128, named_residuals=True, sixteen_bit_only=True,
                      mosaic=True),
    # TPU splash: the in-kernel mask from qpos, and the public per-example bool mask.
    "splash": Kernel(seq_len_multiple=128, named_residuals=True, tpu=True, mosaic=True),
    "splash_dynamic": Kernel(seq_len_multiple=128, named_residuals=True, tpu=True, mosaic=True),
}
# The dense kernel: the start-up check compares each fused kernel with it; 'auto' falls back to it.
REFERENCE = "xla"
ATTENTION_IMPLEMENTATIONS = tuple(KERNELS)
ATTENTION_SETTINGS = ("auto", *ATTENTION_IMPLEMENTATIONS)  # what model.attention may say
SPLASH = tuple(name for name, kernel in KERNELS.items() if kernel.tpu)
WITH_ATTENTION_DROPOUT = tuple(name for name, kernel in KERNELS.items()
                               if kernel.attention_dropout)
WITH_NAMED_RESIDUALS = tuple(name for name, kernel in KERNELS.items() if kernel.named_residuals)
SIXTEEN_BIT_ONLY = tuple(name for name, kernel in KERNELS.items() if kernel.sixteen_bit_only)
MOSAIC = tuple(name for name, kernel in KERNELS.items() if kernel.mosaic)
# The remat tag on a fused kernel's saved output and softmax statistics (remat='minimal' keeps
# them, so the backward pass does not run the attention forward again).
ATTENTION_RESIDUALS = "attention_residuals"
# The fields that can shape the parameters (an array's shape or dtype, or the tree): a change in
# any other model field leaves another run's parameters usable. tests/test_model.py checks both.
PARAMETER_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "ffn_size",
                    "max_position", "position_encoding", "mlp", "param_dtype", "scan_layers")
PLATFORMS = ("", "cpu", "gpu", "tpu")  # jax.default_backend() names; '' = this host's
# Each choice field of `config.model` and its allowed values: ModelConfig refuses others, and
# config.validate names them as `model.FIELD`.
CHOICES = {"position_encoding": POSITION_ENCODINGS, "norm": NORMS, "mlp": MLPS,
           "activation": ACTIVATIONS, "dtype": DTYPES, "param_dtype": PARAM_DTYPES,
           "attention": ATTENTION_SETTINGS, "remat": REMATS}


def seq_len_multiple(attention: str) -> int:
  """The multiple data.seq_len must be for `attention` (1: any length)."""
  return KERNELS[attention].seq_len_multiple if attention in KERNELS else 1


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int = 30592             # >= the tokenizer's vocab_size; a multiple of 128 is fastest
  hidden_size: int = 768              # H: width of the residual stream and the embeddings
  num_layers: int = 12                # L: transformer layers
  num_heads: int = 12                 # attention heads; hidden_size / num_heads is the head dim
  ffn_size: int = 0                   # 0 means 4 * hidden_size (GLM hard-codes 4H)
  max_position: int = 512             # position tables have max_position + 1 rows
  position_encoding: str = "learned_2d"  # learned_2d | rope_2d | rope
  rope_theta: float = 10000.0         # rotary base (rope, rope_2d only)
  norm: str = "pre"                   # pre | deepnorm
  mlp: str = "gelu"                   # gelu | geglu
  activation: str = "gelu_tanh"       # gelu_tanh (Megatron training code) | gelu_exact (HF GLM)
  layernorm_eps: float = 1e-5         # LayerNorm epsilon (GLM: 1e-5)
  hidden_dropout: float = 0.1         # dropout on embeddings and each residual branch (GLM: 0.1)
  attention_dropout: float = 0.0      # GLM: 0.1; only attention=xla has it (auto then picks xla)
  init_std: float = 0.02              # normal init std; output projections get it / sqrt(2L)
  dtype: str = "bfloat16"             # compute: bfloat16 | float32 (float16 needs loss scaling)
  param_dtype: str = "float32"        # stored parameters: float32 | bfloat16
  attention: str = "auto"             # auto | xla | cudnn | tokamax | splash | splash_dynamic
  remat: str = "none"                 # none | minimal | full
  save_dropout_masks: bool = False    # minimal, full: keep hidden dropout's masks, not redraw
  scan_layers: bool = True            # nn.scan over layers: faster compiles; a layers axis
  # Not a user setting: the platform the program is compiled for ('' = this host's backend).
  # attention_choice.resolved_model_config sets it (aot asks for 'tpu' or 'gpu'), so a program
  # compiled on a CPU host for another platform carries that platform's kernels.
  target_platform: str = ""

  def __post_init__(self):
    for field, choices in (*CHOICES.items(), ("target_platform", PLATFORMS)):
      if getattr(self, field) not in choices:
        raise ValueError(f"model.{field}={getattr(self, field)!r}: choose one of {choices}.")
    for field in ("vocab_size", "hidden_size", "num_layers", "num_heads", "max_position"):
      if getattr(self, field) < 1:
        raise ValueError(f"model.{field}={getattr(self, field)!r}: must be a positive integer.")
    if self.ffn_size < 0:
      raise ValueError(f"model.ffn_size={self.ffn_size}: must be 0 (4 * hidden_size) or positive.")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"model.hidden_size={self.hidden_size} is not divisible by "
                       f"model.num_heads={self.num_heads}; pick sizes with an integer head dim.")
    rotary_multiple = {"rope_2d": 4, "rope": 2}.get(self.position_encoding, 1)
    if self.head_dim % rotary_multiple:
      raise ValueError(f"model.position_encoding={self.position_encoding!r} needs a head dim "
                       f"divisible by {rotary_multiple} (hidden_size/num_heads = "
                       f"{self.head_dim}).")

  @classmethod
  def from_config(cls, model: ml_collections.ConfigDict) -> "ModelConfig":
    """From a run's `config.model`; its fields that only the run reads are left out."""
    if not isinstance(model, ml_collections.ConfigDict):
      raise TypeError(f"ModelConfig.from_config takes a run's config.model (a ConfigDict), got "
                      f"{type(model).__name__}: build ModelConfig(**fields) from a mapping.")
    config = model.to_dict()
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in config.items() if key in names})

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def position_tables(self) -> bool:
    """Whether the model learns position tables (learned_2d), whose max_position + 1 rows bound
    every position id; the rotary encodings have no tables and no such bound."""
    return self.position_encoding == "learned_2d"

  @property
  def ffn(self) -> int:
    """Inner MLP width (GeGLU: the width of each of the two halves)."""
    return self.ffn_size or 4 * self.hidden_size

  def parameter_axes(self) -> dict[str, tuple[int, str]]:
    """Each logical axis the parameters use (their names in the sharding rules): its size, and
    the config field that sets it. tests/test_config_validation.py checks it against GLM."""
    position = ({"position": (self.max_position + 1, "model.max_position + 1")}
                if self.position_tables else {})
    return {"vocab": (self.vocab_size, "model.vocab_size"),
            "embed": (self.hidden_size, "model.hidden_size"),
            "norm": (self.hidden_size, "model.hidden_size"),
            "mlp": (self.ffn, "model.ffn_size" if self.ffn_size else "4 x model.hidden_size"),
            "heads": (self.num_heads, "model.num_heads"),
            "kv": (self.head_dim, "the head dim, model.hidden_size / model.num_heads"),
            "layers": (self.num_layers, "model.num_layers"), **position}

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def weights_dtype(self):
    return jnp.dtype(self.param_dtype)

  @property
  def deepnorm_alpha(self) -> float:
    return math.sqrt(2.0 * self.num_layers)


def user_fields(config: ModelConfig) -> dict:
  """`config`'s fields as a run's `config.model` holds them (config.model_defaults is
  `user_fields(ModelConfig())`): all but target_platform, which start-up sets."""
  fields = dataclasses.asdict(config)
  fields.pop("target_platform")
  return fields


def layer_param_count(config: ModelConfig) -> int:
  hidden, ffn = config.hidden_size, config.ffn
  attention = 3 * hidden * hidden + 3 * hidden + hidden * hidden + hidden
  mlp_in = (2 if config.mlp == "geglu" else 1) * (hidden * ffn + ffn)
  mlp_out = ffn * hidden + hidden
  layernorms = 4 * hidden
  return attention + mlp_in + mlp_out + layernorms


def param_count(config: ModelConfig) -> int:
  """Parameters of GLM: V·H + 2(P+1)·H + L(12H² + 13H) + 2H for the original GLM.

  Generalised: RoPE variants have no position tables; GeGLU doubles the first MLP projection;
  ffn_size replaces 4H. The output projection is tied to the word embeddings (no extra term).
  """
  hidden = config.hidden_size
  embeddings = config.vocab_size * hidden
  if config.position_tables:
    embeddings += 2 * (config.max_position + 1) * hidden
  return embeddings + config.num_layers * layer_param_count(config) + 2 * hidden


def visible_pairs(seq_len: int, sep):
  """(query, key) pairs the GLM mask allows in a row of Part A length `sep` (0 <= sep <= T):
  Part A sees Part A (sep²), Part B row i sees sep + i + 1 keys. Takes ints, or a float T with
  float arrays of sep: past T = 46340, T·(T+1) as a Python int beside a jnp array overflows
  int32 (jax refuses it), so the step passes T as a float."""
  return sep * sep + (seq_len * (seq_len + 1) - sep * (sep + 1)) // 2


def step_flops(config: ModelConfig, *, tokens, visible_pairs, logit_positions):
  """Training FLOPs of one step (forward + backward = 3 x forward), the MFU convention:

    6 · (L · per-layer matmul parameters) · tokens     QKV, output and MLP projections
    + 3 · 4·H·L · visible_pairs                        QKᵀ and PV over the pairs the mask allows
    + 6 · V·H · logit_positions                        the tied vocabulary projection

  `tokens` counts every position of the batch, `visible_pairs` sums `visible_pairs(T, sep)`
  over its rows and `logit_positions` counts the positions the loss scores (Part B; the step's
  loss computes those and, per device, at most one chunk of padding, which is hardware work and
  not counted). Embedding lookups, LayerNorms, the softmax and rematerialisation are not counted
  (model FLOPs, not hardware FLOPs).
  """
  hidden, ffn = config.hidden_size, config.ffn
  mlp_matmul = (3 if config.mlp == "geglu" else 2) * hidden * ffn
  layer_matmul = config.num_layers * (4 * hidden * hidden + mlp_matmul)
  return (6.0 * layer_matmul * tokens + 12.0 * hidden * config.num_layers * visible_pairs
          + 6.0 * config.vocab_size * hidden * logit_positions)


def flops_per_token(config: ModelConfig, seq_len: int, *, part_b_fraction: float) -> float:
  """`step_flops` per token of a row whose Part B (and scored part) is `part_b_fraction` of the
  row: a planning figure for a config not yet run (data.pipeline.expected_part_b_fraction gives
  the fraction a data config makes on average). Training and bench count their real batches."""
  part_a = round((1.0 - part_b_fraction) * seq_len)
  return step_flops(config, tokens=seq_len, visible_pairs=visible_pairs(seq_len, part_a),
                    logit_positions=part_b_fraction * seq_len) / seq_len
