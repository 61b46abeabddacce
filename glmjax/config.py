"""Default run configuration shared by configs/*.py.

Sections: `model` (glmjax/model), `data` (glmjax/data), `optim` (optim.py), `mesh`
(parallel.py), `train` (the loop: train.py, loop.py, step.py, held_out.py) and `checkpoint`
(checkpoint.py). Every field has a one-line comment. Validation (with errors that name the
field) lives in `validate`.
"""
from __future__ import annotations

import difflib
import math

import ml_collections

from glmjax import loss, optim, parallel, step
from glmjax.data import pipeline, sources, specials, text_files, tokenizers
from glmjax.model import model_config

# Logical axis names used by the model, mapped to mesh axes. Repeated names are fallbacks:
# the first rule whose mesh axis is still free for that array wins.
DEFAULT_LOGICAL_AXIS_RULES = (
    # Parameters.
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("layers", None),
    ("position", None),
    ("norm", None),
    # Activations.
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", "tensor"),  # the residual stream, LayerNorms and dropout split too
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
)


def model_defaults() -> ml_collections.ConfigDict:
  # One definition: ModelConfig's fields, with their one-line comments, in model/model_config.py.
  return ml_collections.ConfigDict(model_config.user_fields(model_config.ModelConfig()))


def data_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      seq_len=512,                 # T: every row of every batch has exactly this length
      batch_size=16,               # global batch (rows per step, all hosts together)
      # Objectives (the original: blocklm_utils.py; docs/architecture.md).
      blank_prob=1.0,              # token-level [MASK]
      sentence_prob=0.0,           # sentence-level [sMASK]
      document_prob=0.0,           # document-level [gMASK]
      mask_ratio=0.15,             # [MASK]/[sMASK]: share of a row's text that becomes spans
      poisson_lambda=3.0,          # [MASK] span lengths ~ Poisson(lambda) (GLM: 3)
      max_span_length=39,          # longest [MASK] span, in tokens
      shuffle_spans=True,          # Part B holds the spans in random order (GLM); False: in order
      gen_min_ratio=0.5,           # [gMASK]: the generated part is at least this share of the text
      gen_suffix_prob=0.5,         # [gMASK]: P(suffix layout) vs one random span
      sentence_windows=False,      # windows start after a sentence end and end at one (original)
      original_sentences=False,    # [sMASK]: a row's unended tail is a sentence too (original)
      short_seq_prob=0.0,          # P(a row is one short text of U{32..T} tokens) (GLM-10B: 0.02)
      single_span_prob=0.0,        # P(a row is [MASK] with exactly one span) (GLM-10B st. 2: 0.05)
      block_mask_prob=0.0,         # [MASK] rows: P(a Part B span input -> [dBLOCK]) (GLM-10B: 0.1)
      context_mask_ratio=0.0,      # [MASK] rows: text share -> [dBLOCK] near span edges (Part A)
      draw_per_batch=False,        # objective and lengths drawn per step (original), not per row
      # Source (data/sources.py).
      source="",                   # files | tfds | prepared | builtin (toy corpus); '' = not set
      tokenizer="byte",            # byte|sentencepiece|hf|wordpiece (BERT)|bpe (GPT-2, RoBERTa)
      tokenizer_path="",           # the tokenizer's file (or a folder holding it)
      tokenizer_vocab="",          # GLM ids: bert|gpt2|roberta|chinese_sp (original); "" appended
      files=(),                    # globs of .txt / .jsonl / .jsonl.gz
      txt_documents="paragraphs",  # .txt: paragraphs (blank-line separated) | file (whole file)
      text_field="text",           # the field holding the text in .jsonl records and TFDS examples
      tfds_name="",                # for example c4/en:3.1.0
      tfds_split="train",          # TFDS split read for training (eval_fraction is held out of it)
      tfds_data_dir="",            # folder or gs:// bucket of the built dataset; '' = TFDS default
      builtin_docs=4000,           # documents in the generated offline corpus (source=builtin)
      prepared_dir="",             # output of python -m glmjax.data.prepare
      eval_fraction=0.01,          # documents held out for evaluation
  ))


def optim_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      learning_rate=4e-4,          # peak learning rate, reached at the end of warmup
      b1=0.9,                      # AdamW beta1
      b2=0.98,                     # AdamW beta2
      eps=1e-6,                    # AdamW epsilon
      weight_decay=0.1,            # decoupled; not on biases or LayerNorm scales
      warmup_ratio=0.05,           # of decay_steps (GLM: warmup x lr-decay-iters)
      decay_steps=120_000,         # steps over which the schedule decays to final_ratio
      schedule="cosine",           # cosine | linear | constant
      final_ratio=0.05,            # lr at decay_steps / peak lr
      grad_clip=1.0,               # global gradient-norm clip; 0 turns it off
      grad_accum_steps=1,          # micro-batches per step (same global batch, less memory)
      moments_dtype="float32",     # AdamW moments: float32 | param (the parameters' dtype)
  ))


def mesh_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      data=-1,                     # -1 fills the remaining devices
      fsdp=1,                      # devices that shard parameters and optimizer state (-1: fill)
      tensor=1,                    # devices that split heads, MLP and vocabulary (-1: fill)
      rules=DEFAULT_LOGICAL_AXIS_RULES,  # logical axis -> mesh axis (sharding as data)
  ))


def train_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      steps=150_000,               # optimizer steps of the whole run (a resume continues to it)
      log_every=100,               # steps between console/TensorBoard lines
      eval_every=2000,             # steps between held-out evaluations; 0 turns them off
      eval_batches=10,             # held-out batches per evaluation (the same ones every time)
      max_nonfinite_steps=10,      # consecutive skipped (NaN/Inf) steps before the run stops
      profile_start=-1,            # first step of a profiler trace window; -1 disables
      profile_steps=5,             # length of that trace window, in steps
      distributed_timeout_s=1800,  # how long hosts wait for each other to join the job
      allow_config_change=False,   # resume even if seed/model/data/optim/dropout_rng changed
      compilation_cache_dir="",    # compiled programs' cache: '' = WORKDIR/xla_cache, 'none' = off
      loss_chunk=loss.DEFAULT_CHUNK,  # Part B positions per iteration of the loss
      dropout_rng="threefry2x32",  # dropout masks' generator: threefry2x32 | rbg | unsafe_rbg
  ))


def checkpoint_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      every=2000,                  # steps between checkpoints (the last step is always saved)
      keep=3,                      # newest checkpoints kept; older ones are deleted
      async_save=True,             # write in the background while training goes on
      device_snapshot=False,       # save a device copy of the state, sent over the next steps
      snapshot_parts=1,            # that copy goes in this many parts, one after each step
      init_from="",                # a run with no checkpoint starts from this workdir's params
      init_optimizer=False,        # with init_from: its optimizer state too (schedule anew)
      start_over=False,            # no usable checkpoint: move the damaged ones aside, step 0
  ))


def default_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0                  # data order, initial parameters and dropout all follow it
  config.model = model_defaults()
  config.data = data_defaults()
  config.optim = optim_defaults()
  config.mesh = mesh_defaults()
  config.train = train_defaults()
  config.checkpoint = checkpoint_defaults()
  return config


# The allowed values of each choice field, from the one module that defines them.
CHOICES = {
    **{f"model.{field}": choices for field, choices in model_config.CHOICES.items()},
    "train.dropout_rng": step.DROPOUT_RNGS,
    "optim.schedule": optim.SCHEDULES,
    "optim.moments_dtype": optim.MOMENTS_DTYPES,
    "data.source": ("", *sources.SOURCES),  # '': refused when the data is read
    "data.txt_documents": text_files.TXT_DOCUMENTS,
    "data.tokenizer": tokenizers.TOKENIZERS,
    "data.tokenizer_vocab": specials.VOCAB_LAYOUTS,
}


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field and the fix."""


def get_field(config, dotted: str):
  """The value of a dotted field, e.g. get_field(config, "train.dropout_rng")."""
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def _numbers(config, prefix: str = ""):
  """(dotted field, value) of every float field, sections included."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _numbers(value, f"{prefix}{key}.")
    elif isinstance(value, float):
      yield f"{prefix}{key}", value


def validate(config: ml_collections.ConfigDict, *, num_devices: int | None = None,
             batch_parallelism: int | None = None) -> None:
  """Checks that need no data or compilation; raises ConfigError naming the field."""
  _refuse_unknown_fields(config)
  for field, value in _numbers(config):
    if not math.isfinite(value):
      raise ConfigError(f"{field}={value}: must be a finite number.")
  for field, choices in CHOICES.items():
    if get_field(config, field) not in choices:
      raise ConfigError(
          f"{field}={get_field(config, field)!r}: choose one of "
          f"{', '.join(choice or repr(choice) for choice in choices)}.")
  model, data, optim, train = config.model, config.data, config.optim, config.train
  for field in ("model.hidden_size", "model.num_layers", "model.num_heads", "model.vocab_size",
                "data.seq_len", "data.batch_size", "optim.grad_accum_steps", "train.steps",
                "train.log_every", "train.loss_chunk", "checkpoint.snapshot_parts"):
    if int(get_field(config, field)) <= 0:
      raise ConfigError(f"{field}={get_field(config, field)}: must be a positive integer.")
  try:  # the model's own checks (head dim, rotary dims), defined once in ModelConfig
    frozen_model = model_config.ModelConfig.from_config(model)
  except ValueError as error:
    raise ConfigError(str(error)) from None
  if frozen_model.position_tables and model.max_position < data.seq_len:
    # Raising it would not fit the position tables of the parameters init_from reads.
    fix = ("keep data.seq_len at most that: the parameters of checkpoint.init_from come with "
           "tables of model.max_position + 1 positions (set model.max_position to that run's, "
           "in its config.json, if it is larger), so a longer sequence needs a first run with "
           "a larger model.max_position (configs/glm_10b.py has 1024 from its first stage)"
           if config.checkpoint.init_from else "raise model.max_position")
    raise ConfigError(f"model.max_position={model.max_position} < data.seq_len={data.seq_len}: "
                      f"position ids reach seq_len - 1; {fix}.")
  if model.dtype == "float16":
    raise ConfigError("model.dtype='float16' needs loss scaling, which glmjax does not do (its "
                      "gradients underflow): use model.dtype=bfloat16 (TPU, A100, H100) or "
                      "float32.")
  if model.attention not in ("auto", *model_config.WITH_ATTENTION_DROPOUT) and (
      model.attention_dropout > 0):
    raise ConfigError(
        f"model.attention={model.attention!r} has no attention dropout, so "
        f"model.attention_dropout={model.attention_dropout} would be skipped: set "
        "model.attention=xla (or auto) to keep it, or model.attention_dropout=0.")
  multiple = model_config.seq_len_multiple(model.attention)
  if data.seq_len % multiple:
    raise ConfigError(f"model.attention={model.attention!r} tiles the sequence in blocks of "
                      f"{multiple}: data.seq_len={data.seq_len} must be a multiple of {multiple} "
                      "(or set model.attention=auto, which then picks another kernel).")
  # A dropout of 1 zeroes everything; a beta of 1 divides by zero in AdamW's bias correction.
  for field in ("model.hidden_dropout", "model.attention_dropout", "optim.b1", "optim.b2"):
    if not 0.0 <= get_field(config, field) < 1.0:
      raise ConfigError(f"{field}={get_field(config, field)}: must be in [0, 1).")
  for field in ("optim.learning_rate", "optim.decay_steps", "optim.eps"):
    if get_field(config, field) <= 0:
      raise ConfigError(f"{field}={get_field(config, field)}: must be > 0.")
  for field in ("optim.warmup_ratio", "optim.final_ratio"):
    if not 0.0 <= get_field(config, field) <= 1.0:
      raise ConfigError(f"{field}={get_field(config, field)}: must be in [0, 1].")
  for field in ("optim.weight_decay", "optim.grad_clip"):
    if get_field(config, field) < 0:
      raise ConfigError(f"{field}={get_field(config, field)}: must be >= 0 (0 turns it off).")
  try:
    rules = parallel.logical_rules(config.mesh)
  except ValueError as error:
    raise ConfigError(str(error)) from None
  problem = pipeline.recipe_problem(data) or parallel.batch_rule_problem(rules)
  if problem:
    raise ConfigError(problem)
  if data.batch_size % optim.grad_accum_steps:
    raise ConfigError(f"data.batch_size={data.batch_size} is not divisible by "
                      f"optim.grad_accum_steps={optim.grad_accum_steps}.")
  if batch_parallelism:
    micro = data.batch_size // optim.grad_accum_steps
    if micro % batch_parallelism:
      raise ConfigError(
          f"data.batch_size={data.batch_size} / optim.grad_accum_steps={optim.grad_accum_steps}"
          f" = {micro} rows per micro-batch is not divisible by the data-parallel size "
          f"{batch_parallelism} (mesh.data x mesh.fsdp); change data.batch_size or the mesh.")
  if num_devices is not None:
    try:
      shape = parallel.mesh_shape(config.mesh, num_devices)
    except ValueError as error:
      raise ConfigError(str(error)) from None
    problem = parallel.unsplittable_axis(
        frozen_model.parameter_axes(),
        dict(zip(parallel.MESH_AXES, shape)), rules)
    if problem:
      raise ConfigError(problem)
  for field in ("train.eval_every", "checkpoint.every"):
    if get_field(config, field) < 0:
      raise ConfigError(f"{field}={get_field(config, field)}: must be >= 0 (0 disables it).")
  if config.checkpoint.keep < 1:
    raise ConfigError(f"checkpoint.keep={config.checkpoint.keep}: must be >= 1.")
  if train.eval_every and (train.eval_batches < 1 or not 0.0 < data.eval_fraction < 1.0):
    raise ConfigError(
        f"train.eval_every={train.eval_every} needs train.eval_batches >= 1 (got "
        f"{train.eval_batches}) and 0 < data.eval_fraction < 1 (got {data.eval_fraction}); "
        "or set train.eval_every=0 to train without evaluation.")


def _refuse_unknown_fields(config) -> None:
  """A config file's misspelled field (`config.train.eval_evry = 50`, `hiden_size=768` in an
  update) is a new field to ml_collections, which only locks the config after the file ran: it
  would be carried along, unread, while the field meant keeps its default."""
  known = set(_flat(default_config().to_dict()))
  for field in _flat(config.to_dict()):
    if field not in known:
      close = difflib.get_close_matches(field, sorted(known), n=1)
      hint = f" (did you mean {close[0]}?)" if close else ""
      raise ConfigError(f"{field} is not a config field{hint}: fix its name in the config "
                        f"file ({fields_listed_in(field)} lists its section's fields).")


def fields_listed_in(field: str) -> str:
  """The file whose one-line comments list the fields of `field`'s section."""
  return ("glmjax/model/model_config.py (ModelConfig)" if field.startswith("model.")
          else "glmjax/config.py")


# Sections and fields that change what a run computes; the rest (steps, logging, evaluation,
# checkpointing, the mesh, the attention kernel, remat and what it keeps) may change on resume.
TRAJECTORY_SECTIONS = ("seed", "model", "data", "optim")
TRAJECTORY_FIELDS = ("train.dropout_rng",)  # another generator draws every later dropout mask
FREE_FIELDS = ("model.attention", "model.remat", "model.save_dropout_masks",
               "optim.moments_dtype")  # the state's layout check catches a real mismatch


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
  return flat


def trajectory_changes(saved: dict, current: dict, *, free_too: bool = False) -> list[str]:
  """'field: saved -> current' for each field that changes the run's trajectory (and, with
  `free_too`, the FREE_FIELDS: a reason why the state's layout differs)."""
  before, after = _flat(saved), _flat(current)
  defaults = _flat(default_config().to_dict())
  changes = []
  for field in sorted(set(before) | set(after)):
    in_trajectory = field.split(".")[0] in TRAJECTORY_SECTIONS or field in TRAJECTORY_FIELDS
    if not in_trajectory or (field in FREE_FIELDS and not free_too):
      continue
    # A field that a later glmjax added reads as its default in an older checkpoint.
    old = before.get(field, defaults.get(field, "(absent)"))
    new = after.get(field, defaults.get(field, "(absent)"))
    if old != new:
      changes.append(f"{field}: {old!r} -> {new!r}")
  return changes


def vocab_size_warning(model) -> str | None:
  """Advice, never an error: an imported checkpoint keeps its vocabulary (its function must not
  change), so a size that is not a multiple of 128 is only slower."""
  if model.vocab_size % 128:
    return (f"model.vocab_size={model.vocab_size} is not a multiple of 128: the embedding and "
            "logits matmuls run faster padded (pad the tokenizer's vocabulary when you train "
            "from scratch).")
  return None


def snapshot_parts_warning(checkpoint) -> str | None:
  """Why checkpoint.snapshot_parts will not do what it is set for, or None."""
  parts, every = checkpoint.snapshot_parts, checkpoint.every
  if parts > 1 and not checkpoint.device_snapshot:
    return (f"checkpoint.snapshot_parts={parts} has no effect without "
            "checkpoint.device_snapshot=true: saves go directly.")
  if parts > 1 and 0 < every <= parts:
    return (f"checkpoint.snapshot_parts={parts} >= checkpoint.every={every}: each save comes "
            "before the last part of the one before, and sends what is left at once; use "
            "fewer parts than checkpoint.every.")
  return None
