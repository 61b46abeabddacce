"""A small grid of settings for one config: `python -m glmjax.bench --what=sweep --config=...`.

Tries every combination of batch size, remat policy, attention kernel and Part B loss chunk (the
`--sweep_*` flags; by default half, once and twice the config's batch, the three remat policies,
the kernels `attention=auto` would try on this platform, and the config's `train.loss_chunk`),
and of any other config field named by `--sweep_set=FIELD=V1,V2` (repeatable; e.g.
`--sweep_set=train.dropout_rng=threefry2x32,rbg`),
timing each with the step benchmark on pre-built
batches. A setting that does not fit or does not compile is recorded with its error's first
line, not fatal. Progress goes to the log, with each trial's figures as one JSON line as soon as
it ends (a sweep cut short by a GPU loan's time limit keeps what it measured); stdout gets one
JSON line at the end: every trial, and the best by tokens/s (ties: less compiled memory).
"""
import json
import logging
import math
import traceback

import jax
import ml_collections
from absl import flags

from glmjax import attention_choice, cli, error_text
from glmjax import config as glm_config
from glmjax.bench import step as step_bench
from glmjax.model import model_config

log = logging.getLogger(__name__)
DEFAULT_STEPS = 5
# The kinds of field --sweep_set tries, as its errors name them.
_KINDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
# A trial's own keys: the config field each sets and the --sweep_* flag that lists its values.
BASIC_FIELDS = {"batch_size": ("data.batch_size", "--sweep_batch"),
                "remat": ("model.remat", "--sweep_remat"),
                "attention": ("model.attention", "--sweep_attention"),
                "loss_chunk": ("train.loss_chunk", "--sweep_loss_chunk")}
_OWN_FLAGS = dict(BASIC_FIELDS.values())  # config field -> its flag, refused in --sweep_set
REMATS = model_config.REMATS


def grid(config) -> list[dict]:
  """The settings to try, from the --sweep_* flags or the defaults."""
  batch = int(config.data.batch_size)
  batches = (_ints(flags.FLAGS.sweep_batch, "--sweep_batch")
             or sorted({max(batch // 2, 1), batch, 2 * batch}))
  remats = _choices(flags.FLAGS.sweep_remat, "--sweep_remat", "model.remat") or list(REMATS)
  kernels = (_choices(flags.FLAGS.sweep_attention, "--sweep_attention", "model.attention")
             or list(attention_choice.auto_order(jax.default_backend())))
  chunks = (_ints(flags.FLAGS.sweep_loss_chunk, "--sweep_loss_chunk")
            or [int(config.train.loss_chunk)])
  settings = [dict(batch_size=b, remat=r, attention=a, loss_chunk=c) for b in batches
              for r in remats for a in kernels for c in chunks]
  for field, values in _extra_fields(config, flags.FLAGS.sweep_set):
    settings = [{**setting, field: value} for setting in settings for value in values]
  return settings


def _extra_fields(config, specs: list[str]) -> list[tuple[str, list]]:
  """--sweep_set's FIELD=V1,V2 items as (field, values), each value of the field's own type."""
  fields = []
  for spec in specs or []:
    field, _, text = spec.partition("=")
    field = field.strip()
    where = f"--sweep_set={spec!r}: "
    try:
      current = glm_config.get_field(config, field)
    except (AttributeError, KeyError, TypeError):  # TypeError: a name past a value (a.b.c)
      raise ValueError(f"{where}the config has no field {field!r}; write FIELD=V1,V2 with a "
                       "dotted name, e.g. train.dropout_rng=rbg,unsafe_rbg") from None
    if field in _OWN_FLAGS:  # the trial's record would name the flag's value, not this one
      raise ValueError(f"{where}{field} has its own flag: use {_OWN_FLAGS[field]}=V1,V2")
    if any(field == named for named, _ in fields):
      raise ValueError(f"{where}{field} is named twice: give all its values once, "
                       f"{field}=V1,V2")
    if isinstance(current, ml_collections.ConfigDict):
      raise ValueError(f"{where}{field!r} is a section; name one of its fields")
    if type(current) not in _KINDS:  # a tuple (data.files, mesh.rules) or an unset field
      raise ValueError(f"{where}{field} holds {type(current).__name__} values, which the sweep "
                       f"does not try; set it with --config.{field}")
    if not _names(text):
      raise ValueError(f"{where}give {field!r} one or more values to try, "
                       "e.g. train.dropout_rng=rbg,unsafe_rbg")
    if field in glm_config.CHOICES:  # a typo said now, not as each of its trials' error
      _choices(text, f"--sweep_set={field}", field)
    fields.append((field, [_typed(field, current, value) for value in _names(text)]))
  return fields


def _typed(field: str, current, text: str):
  """`text` as a value of the type `field` holds now (bool from true/false); a number must be
  finite, as config validation wants, before any trial runs."""
  kind = type(current)
  try:
    if kind is bool:
      return {"true": True, "false": False}[text.lower()]
    value = kind(text)
    if kind is float and not math.isfinite(value):
      raise ValueError(text)
    return value
  except (KeyError, ValueError):
    raise ValueError(f"--sweep_set: {field} takes {_KINDS[kind]}, not {text!r}") from None


def _set(config, field: str, value) -> None:
  parent, _, name = field.rpartition(".")
  setattr(glm_config.get_field(config, parent) if parent else config, name, value)


def main(config, argv):
  del argv
  steps = flags.FLAGS.steps or DEFAULT_STEPS
  settings = grid(config)
  trials = []
  for index, setting in enumerate(settings, 1):
    trial_config = config.copy_and_resolve_references()
    for key, value in setting.items():  # a --sweep_set key is its field's dotted name
      _set(trial_config, BASIC_FIELDS.get(key, (key,))[0], value)
    log.info("sweep %d/%d: %s", index, len(settings), setting)
    try:
      glm_config.validate(trial_config)  # a --sweep_set value the config refuses: its one line
      result = step_bench.measure(trial_config, steps, with_pipeline=False)
      trials.append({**setting, **{key: result[key] for key in (
          "step_time_s", "tokens_per_s", "mfu", "tflops_per_device", "compiled_memory_bytes",
          "compile_s", "xla_options", "loss")}})
    except Exception as error:  # noqa: BLE001 - out of memory or a kernel that cannot compile
      first_line = error_text.first_line(error)
      log.info("sweep %d/%d failed: %s", index, len(settings), first_line)
      log.debug("%s", traceback.format_exc())
      trials.append({**setting, "error": first_line})
    log.info("sweep %d/%d: trial %s", index, len(settings), json.dumps(trials[-1]))
    jax.clear_caches()
  print(json.dumps({"what": "sweep", "device_kind": jax.devices()[0].device_kind,
                    "config": cli.config_name(), "seq_len": config.data.seq_len,
                    "trials": trials, "best": best(trials)}))


def best(trials: list[dict]) -> dict | None:
  """The fastest trial that ran (most tokens/s; on a tie the smaller compiled memory)."""
  ran = [t for t in trials if "error" not in t]
  if not ran:
    return None
  return max(ran, key=lambda t: (t["tokens_per_s"], -(t["compiled_memory_bytes"] or 0)))


def _ints(text: str, flag: str) -> list[int]:
  try:
    values = [int(part) for part in _names(text)]
  except ValueError:
    values = [0]
  if any(value < 1 for value in values):
    raise ValueError(f"{flag}={text}: give positive whole numbers separated by commas, "
                     "e.g. 8,16")
  return values


def _choices(text: str, flag: str, field: str) -> list[str]:
  """A --sweep_* flag's words, each one the config field takes: a typo is refused before the
  first trial compiles, not recorded as every one of its trials' error."""
  allowed = glm_config.CHOICES[field]
  for name in _names(text):
    if name not in allowed:
      raise ValueError(f"{flag}={text}: {name!r} is not a {field}; choose from "
                       f"{', '.join(choice for choice in allowed if choice)}")
  return _names(text)


def _names(text: str) -> list[str]:
  return [part.strip() for part in (text or "").split(",") if part.strip()]
