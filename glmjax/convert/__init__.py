"""Original GLM checkpoints in and out of glmjax.

    python -m glmjax.convert import --from=PATH --out=WORKDIR [--tokenizer=PATH]
    python -m glmjax.convert export --workdir=WORKDIR --out=FOLDER

`import_checkpoint` reads the Hugging Face or the Megatron layout (original.py), takes the model
config from the checkpoint, maps the tensors (mapping.py) and writes a workdir that `train`
continues from (WORKDIR/config.py sets checkpoint.init_from), and that `generate`, `evaluate`
and `export` read. `load_pretrained(PATH)` gives (ModelConfig, params) from any of them.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath

from glmjax import checkpoint as checkpoint_lib
from glmjax import config as config_lib
from glmjax import paths, pretrained
from glmjax import workdir as workdir_lib
from glmjax.convert import mapping, original
from glmjax.convert.tokenizer_files import (export_tokenizer, recorded_tokenizer,
                                            restore_tokenizer, source_folder, store_tokenizer,
                                            stored_tokenizer_info)
from glmjax.data import released_tokenizers, tokenizers
from glmjax.model import ModelConfig, stack_layers

log = logging.getLogger(__name__)

SOURCE_FILE = pretrained.SOURCE_FILE  # what export needs to write the checkpoint back as it came
HF_FILES_DIR = "hf_files"        # the source folder's code and tokenizer files, kept for export
ACTIVATIONS = {  # the GeLU each original code computes
    "hf": ("gelu_exact", "the exact (erf) GeLU of the Hugging Face GLM code"),
    "megatron": ("gelu_tanh", "the tanh GeLU of the original Megatron training code"),
}
CONTINUE_CONFIG = '''"""Continue pretraining from the checkpoint imported into this folder:

  python -m glmjax.train --config={path} --workdir=RUN --config.data.source=...

The model is the imported one; optimizer, schedule and data are glmjax's defaults (override
them with --config.FIELD=VALUE). Training starts at step 0 with a new optimizer state. An import
without a tokenizer is refused until --config.data.tokenizer and --config.data.tokenizer_path
name the one the checkpoint was trained with.
"""
import os

from glmjax import pretrained


def get_config(arg=None):
  if arg:  # `--config=.../config.py:local`: the model is the imported one, there is no other
    raise ValueError(f"this import's config.py takes no word after the colon (got {{arg!r}}); "
                     "change fields with --config.SECTION.FIELD=VALUE instead")
  here = os.path.dirname(os.path.abspath(__file__))
  config = pretrained.read_config(here)
  config.data = pretrained.tokenizer_config(config, here)  # the tokenizer kept in this folder
  config.checkpoint.init_from = here
  return config
'''


def model_fields(checkpoint: original.Checkpoint, *, num_heads: int = 0) -> dict[str, Any]:
  """config.model fields of the checkpoint's network: from config.json where there is one,
  else from the tensors' shapes (and the Megatron args, when the file kept them)."""
  tensors = checkpoint.tensors
  if "word_embeddings.weight" not in tensors:
    raise mapping.CheckpointMismatchError("word_embeddings.weight is missing from the checkpoint.")
  if "transformer.position_embeddings.weight" not in tensors:
    raise mapping.CheckpointMismatchError(
        "transformer.position_embeddings.weight is missing: glmjax imports GLM checkpoints with "
        "learned 2-D positions (block_position_encoding=true).")
  vocab, hidden = tensors["word_embeddings.weight"].shape
  rows = tensors["transformer.position_embeddings.weight"].shape[0]
  ffn_key = "transformer.layers.0.mlp.dense_h_to_4h.weight"
  fields = dict(vocab_size=int(vocab), hidden_size=int(hidden),
                num_layers=mapping.count_layers(tensors), max_position=int(rows) - 1,
                ffn_size=int(tensors[ffn_key].shape[0]) if ffn_key in tensors else 0,
                position_encoding="learned_2d", norm="pre", mlp="gelu",
                activation=ACTIVATIONS[checkpoint.layout][0])
  if fields["ffn_size"] == 4 * hidden:
    fields["ffn_size"] = 0
  args, hf = checkpoint.megatron_args, checkpoint.hf_config
  in_config = int((hf or {}).get("num_attention_heads", 0))  # config.json first, then the args
  recorded = in_config or int(args.get("num_attention_heads", 0))
  heads = num_heads or recorded
  dropout = dict(hidden_dropout=args.get("hidden_dropout"),
                 attention_dropout=args.get("attention_dropout"))
  if hf is not None:
    if hf.get("relative_encoding") or hf.get("block_position_encoding") is False:
      raise mapping.CheckpointMismatchError(
          "config.json: relative_encoding or block_position_encoding=false; glmjax imports GLM "
          "with 2-D (block) positions only.")
    for key, field in (("num_layers", "num_layers"), ("hidden_size", "hidden_size"),
                       ("vocab_size", "vocab_size")):
      if key in hf and int(hf[key]) != fields[field]:
        raise mapping.CheckpointMismatchError(
            f"config.json has {key}={hf[key]}, but the tensors have {fields[field]} "
            f"({'word_embeddings.weight' if key != 'num_layers' else 'transformer.layers.*'}).")
    dropout = dict(hidden_dropout=hf.get("output_dropout_prob"),
                   attention_dropout=hf.get("attention_dropout_prob"))
  if not heads:
    heads = max(hidden // mapping.HEAD_DIM, 1)
    log.warning("The checkpoint does not record the number of heads; using %d (head dim %d, as "
                "in every released GLM). Pass --num_heads if yours differs.", heads,
                mapping.HEAD_DIM)
  if num_heads and recorded and num_heads != recorded:
    # Allowed (a config.json can be wrong), but the heads cannot be read from the tensors: a
    # mistyped flag would give a model that computes other logits, so it is said.
    log.warning("--num_heads=%d replaces the %d heads the checkpoint's %s records: the "
                "imported model computes other logits than the original; leave --num_heads "
                "out to keep %d.", num_heads, recorded,
                "config.json" if in_config else "training args", recorded)
  if heads < 1 or hidden % heads:
    raise mapping.CheckpointMismatchError(f"num_attention_heads={heads} does not divide "
                                          f"hidden_size={hidden}; pass --num_heads with a "
                                          "divisor of it.")
  fields["num_heads"] = heads
  fields.update({k: float(v) for k, v in dropout.items() if v is not None})
  return fields


def from_checkpoint(checkpoint: original.Checkpoint, *, num_heads: int = 0,
                    dtype: str = "float32", consume: bool = False) -> tuple[ModelConfig, dict]:
  """(ModelConfig, params as numpy arrays) of an original checkpoint; consume=True empties
  `checkpoint.tensors` as they are converted (mapping.to_params)."""
  fields = model_fields(checkpoint, num_heads=num_heads)
  model_config = ModelConfig(**fields, dtype=dtype, param_dtype="float32")
  params, unused = mapping.to_params(checkpoint.tensors, model_config, consume=consume)
  if unused:
    log.warning("Not imported (not part of the GLM network): %s%s", ", ".join(unused[:6]),
                " ..." if len(unused) > 6 else "")
  return model_config, params


def _is_workdir(path: str) -> bool:  # a local folder or a bucket's
  return ((epath.Path(path) / workdir_lib.CONFIG_FILE).is_file()
          and epath.Path(checkpoint_lib.in_workdir(path)).is_dir())


def load_pretrained(path: str, *, num_heads: int = 0, allow_pickle: bool = False
                    ) -> tuple[ModelConfig, Any]:
  """(ModelConfig, params) from an original checkpoint (either layout) or a glmjax workdir
  (imported or trained). Params are in the layout that `GLM(config)` applies, and the config
  runs as given. An original checkpoint gives float32 compute with the dense xla attention (the
  fused GPU kernels take 16-bit inputs only; its logits within 1e-3 of the original code's); a
  workdir its config's model.dtype and the attention checked on this host."""
  if _is_workdir(path):
    loaded = pretrained.load(path)
    return loaded.model_config, loaded.params
  checkpoint = original.read(path, allow_pickle=allow_pickle)
  model_config, params = from_checkpoint(checkpoint, num_heads=num_heads, consume=True)
  # An import's config keeps 'auto' (resolved when a run starts); a model applied here is not.
  return dataclasses.replace(model_config, attention="xla"), params


def _source_dtypes(checkpoint: original.Checkpoint) -> dict[str, str]:
  """Each tensor's stored dtype, so export writes every one back as it came."""
  return {key: str(value.dtype) for key, value in checkpoint.tensors.items()}


def _keep_source_files(source: str, out: str) -> None:
  """The HF folder's code, config and tokenizer files, so export can write the folder back."""
  folder = source_folder(source)
  keep = [name for name in sorted(os.listdir(folder))
          if os.path.isfile(os.path.join(folder, name))
          and not name.endswith((".bin", ".safetensors", ".pt", ".index.json"))]
  os.makedirs(os.path.join(out, HF_FILES_DIR), exist_ok=True)
  for name in keep:
    shutil.copy2(os.path.join(folder, name), os.path.join(out, HF_FILES_DIR, name))


def _require_new_folder(out: str, holds: str, source_flag: str, source: str) -> None:
  """--out must be new or an empty folder, checked before anything is read or written: the
  files written there (config.json above all) would replace ones of the same name, and a
  workdir or checkpoint folder given as --out would lose its own."""
  if paths.is_remote(out):  # os.makedirs would make a local folder named "gs:"
    raise ValueError(f"--out={out}: convert writes {holds} to a local folder; write it there "
                     "and copy it to the bucket (gcloud storage cp -r)")
  if os.path.exists(out) and not os.path.isdir(out):
    raise ValueError(f"--out={out}: a file is there; give a folder for {holds} (new or "
                     "empty)")
  names = sorted(os.listdir(out)) if os.path.isdir(out) else []
  if not names:
    return
  if os.path.isdir(source) and os.path.samefile(out, source):
    what = f"is the {source_flag} folder itself"
  else:
    what = f"holds files ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
  raise FileExistsError(f"--out={out} {what}: give a new or empty folder for {holds}; "
                        "nothing was written.")


def _out_left_as_found_on_failure(write):
  """A failed import or export (a file missing from a recorded tokenizer, a full disk, Ctrl-C)
  leaves --out as it found it, absent or empty, so the same command runs again once the cause
  is fixed; a retry used to be refused for the half-written folder. A folder that already held
  files is refused before anything is written, and never touched."""
  @functools.wraps(write)
  def wrapped(*args, **kwargs):
    out = kwargs["out"] if "out" in kwargs else args[1]
    before = os.listdir(out) if os.path.isdir(out) else None
    try:
      return write(*args, **kwargs)
    except BaseException:
      if before is None:
        shutil.rmtree(out, ignore_errors=True)
      elif not before:
        for name in os.listdir(out):
          path = os.path.join(out, name)
          shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
      raise
  return wrapped


def _warn_of_another_model_s_tokenizer(path: str, rows: int) -> None:
  """Every released GLM's tokenizer pads to exactly its model's vocabulary rows (30592, 50304,
  50048): one with other ids is likely another model's, which generate and evaluate would
  only refuse later (ids past the rows), or not at all (fewer: wrong text, unseen)."""
  found = released_tokenizers.tokenizer_fields(path)
  found["ids_used"] = tokenizers.load_tokenizer(ml_collections.ConfigDict(
      {key: found[key] for key in ("tokenizer", "tokenizer_path", "tokenizer_vocab")})).ids_used
  if found["ids_used"] > rows:
    log.warning("The tokenizer at %r has ids up to %d, past the checkpoint's %d vocabulary rows: "
                "it is another model's, and generate and evaluate will refuse it. Import again "
                "with --tokenizer=PATH to the files this checkpoint was trained with.", path,
                found["ids_used"] - 1, rows)
  elif found["vocab_size"] != rows:
    log.warning("The tokenizer at %r pads to %d ids, not the checkpoint's %d vocabulary rows (a "
                "released GLM's tokenizer pads to exactly its rows): check that it is this "
                "model's.", path, found["vocab_size"], rows)


@_out_left_as_found_on_failure
def import_checkpoint(source: str, out: str, *, tokenizer: str = "", num_heads: int = 0,
                      allow_pickle: bool = False) -> ModelConfig:
  """Writes the glmjax workdir `out` from the original checkpoint at `source`."""
  _require_new_folder(out, "the glmjax workdir", "--from", source_folder(source))
  if tokenizer:  # a wrong path fails now, not after minutes of reading a large checkpoint
    released_tokenizers.tokenizer_fields(tokenizer)
  log.info("Reading %s", source)
  checkpoint = original.read(source, allow_pickle=allow_pickle)
  dtypes = _source_dtypes(checkpoint)
  # Each source array is let go once converted, and the unused ones after: a 16-bit GLM-10B's
  # are 20 GB of the host's memory that the conversion and the save would otherwise run beside.
  model_config, params = from_checkpoint(checkpoint, num_heads=num_heads, consume=True)
  checkpoint = dataclasses.replace(checkpoint, tensors={})
  config = config_lib.default_config()
  config.model.update({key: getattr(model_config, key) for key in config.model
                       if hasattr(model_config, key) and key not in ("dtype", "param_dtype",
                                                                     "attention")})
  config.data.seq_len = min(config.data.seq_len, model_config.max_position)
  # A model with few positions still gets a config that validates: its longest span fits a row.
  config.data.max_span_length = min(config.data.max_span_length,
                                    max(1, config.data.seq_len - 4))
  if model_config.vocab_size % 128:
    log.warning("The vocabulary has %d rows, not a multiple of 128: kept as it is (the function "
                "must not change); a padded table would run faster.", model_config.vocab_size)
  recorded = {} if tokenizer else recorded_tokenizer(source)
  folder = source_folder(source)  # a weights file's folder holds its tokenizer, as a folder does
  tokenizer = tokenizer or (folder if checkpoint.layout == "hf"
                            and released_tokenizers.holds_tokenizer(folder) else "")
  if tokenizer and not recorded:  # an export's record is the run's own tokenizer
    _warn_of_another_model_s_tokenizer(tokenizer, model_config.vocab_size)
  os.makedirs(out, exist_ok=True)
  if recorded:  # a glmjax export: the run's own tokenizer fields, not a guess from the files
    described = restore_tokenizer(source, recorded, out, config.data)
    tokenizer = tokenizer or recorded["tokenizer"]
  elif tokenizer:
    described = store_tokenizer(tokenizer, out, config.data)
  else:  # glmjax's byte default is not this model's vocabulary: record that none is known
    described = "no tokenizer"
    config.data.tokenizer_path = pretrained.NO_TOKENIZER
  log.info("Writing the parameters to %s", out)
  pretrained.save(out, config, params, source=os.path.abspath(source),
                  tokenizer=stored_tokenizer_info(config.data, out) if tokenizer else None,
                  progress_every_s=30)
  if checkpoint.layout == "hf":
    _keep_source_files(source, out)
  with open(os.path.join(out, SOURCE_FILE), "w", encoding="utf-8") as handle:
    json.dump({"path": os.path.abspath(source), "layout": checkpoint.layout,
               "file_format": checkpoint.file_format, "prefixed": checkpoint.prefixed,
               "dtypes": dtypes, "hf_config": checkpoint.hf_config,
               "tokenizer": recorded.get("tokenizer", "")}, handle, indent=2)
  with open(os.path.join(out, "config.py"), "w", encoding="utf-8") as handle:
    handle.write(CONTINUE_CONFIG.format(path=os.path.join(out, "config.py")))
  activation = ACTIVATIONS[checkpoint.layout]
  log.info("Imported %s layout (%s%s): %d layers, hidden %d, %d heads, vocabulary %d, %d "
           "position rows, %s parameters; %s", checkpoint.layout, checkpoint.file_format,
           ", keys under glm." if checkpoint.prefixed else "", model_config.num_layers,
           model_config.hidden_size, model_config.num_heads, model_config.vocab_size,
           model_config.max_position + 1, f"{sum(np.size(x) for x in jax.tree.leaves(params)):,}",
           described)
  log.info("Activation: model.activation=%s, %s.", activation[0], activation[1])
  if not tokenizer:
    log.warning("No tokenizer stored: generate and evaluate will refuse %s, and so will training "
                "from its config.py unless --config.data.tokenizer and "
                "--config.data.tokenizer_path are given; export and the parameters work. Re-import "
                "with --tokenizer=PATH to keep the tokenizer with the model.", out)
  log.info("Wrote %s. Continue pretraining: python -m glmjax.train --config=%s --workdir=RUN "
           "--config.data.source=...%s", out, os.path.join(out, "config.py"),
           "" if tokenizer else " --config.data.tokenizer=... --config.data.tokenizer_path=...")
  return model_config


def _hf_config(model_config: ModelConfig, source: dict | None) -> dict:
  """config.json for the HF GLM code: the imported one with the shapes updated, or a new one."""
  hf = dict(source or {"architectures": ["GLMModel"], "model_type": "glm",
                       "block_position_encoding": True, "relative_encoding": False,
                       "attention_scale": 1.0, "initializer_range": 0.02,
                       "output_predict": True, "torch_dtype": "float32"})
  hf.update(num_layers=model_config.num_layers, hidden_size=model_config.hidden_size,
            num_attention_heads=model_config.num_heads, vocab_size=model_config.vocab_size,
            max_sequence_length=model_config.max_position,
            embedding_dropout_prob=model_config.hidden_dropout,
            output_dropout_prob=model_config.hidden_dropout,
            attention_dropout_prob=model_config.attention_dropout)
  return hf


def _imported_origin(workdir: str) -> str:
  """The imported workdir this one descends from (itself, or through checkpoint.init_from), or
  '' for a model trained from scratch: its source.json and kept files shape the export."""
  for _ in range(16):  # a chain of continued runs; a cycle is not followed forever
    if (epath.Path(workdir) / SOURCE_FILE).is_file():
      return workdir
    parent = pretrained.read_config(workdir).checkpoint.init_from
    if (parent and epath.Path(parent).name == "checkpoints"  # init_from takes a run's folder
        and not (epath.Path(parent) / workdir_lib.CONFIG_FILE).is_file()):  # of checkpoints
      parent = str(epath.Path(parent).parent)
    if parent and not epath.Path(parent).is_dir():
      log.warning("%s continues from %s (checkpoint.init_from), which is not found (moved, "
                  "removed, or a relative path not under the current folder): "
                  "if that was an import, its dtypes, key names and hub files are unknown, so "
                  "the export writes float32 tensors under plain names, without those files. "
                  "Move it back, or set checkpoint.init_from in %s to where it went, to export "
                  "as it was imported.", workdir, parent,
                  os.path.join(workdir, workdir_lib.CONFIG_FILE))
    if not parent or not epath.Path(parent).is_dir():
      return ""
    workdir = parent
  return ""


@_out_left_as_found_on_failure
def export_workdir(workdir: str, out: str) -> list[str]:
  """Writes the Hugging Face layout of `workdir`'s newest parameters into `out`."""
  _require_new_folder(out, "the Hugging Face files", "--workdir", workdir)
  # The parameters only, into host memory: no kernel runs, and no device holds a copy.
  loaded = pretrained.load(workdir, attention="xla", on_host=True)
  if pretrained.tokenizer_config(loaded.config, workdir).tokenizer_path != pretrained.NO_TOKENIZER:
    pretrained.load_tokenizer(loaded)  # the one exported must be the one the model knows
  model_config = loaded.model_config
  # What the Hugging Face code computes (a GeLU of the other original code is only warned of).
  allowed = {"position_encoding": ("learned_2d",), "norm": ("pre",), "mlp": ("gelu",),
             "ffn": (4 * model_config.hidden_size,), "layernorm_eps": (1e-5,),
             "activation": tuple(name for name, _ in ACTIVATIONS.values())}
  unsupported = {field: getattr(model_config, field) for field, values in allowed.items()
                 if getattr(model_config, field) not in values}
  if unsupported:
    raise ValueError(f"--workdir={workdir}: the Hugging Face GLM code has learned 2-D "
                     "positions, pre-LayerNorm (eps 1e-5) and a 4H GeLU MLP; this model has "
                     f"{unsupported}, so it cannot be exported to that layout.")
  origin = _imported_origin(workdir)
  source = {}
  if origin:
    source = json.loads((epath.Path(origin) / SOURCE_FILE).read_text(encoding="utf-8"))
  if model_config.activation != "gelu_exact":
    log.warning("This model computes model.activation=%s; the Hugging Face GLM code computes the "
                "exact GeLU, so its logits will differ slightly (about 5e-3).",
                model_config.activation)
  params = pretrained.params_to_host(loaded.params)
  loaded = dataclasses.replace(loaded, params=None)
  if not model_config.scan_layers:
    params = pretrained.params_to_host(stack_layers(params, model_config.num_layers))
  tensors = mapping.from_params(params, model_config, dtypes=source.get("dtypes", {}),
                                consume=True)
  del params  # the tensors hold what is left of it
  kept = epath.Path(origin) / HF_FILES_DIR if origin else None
  epath.Path(out).mkdir(parents=True, exist_ok=True)
  for path in kept.iterdir() if kept and kept.is_dir() else []:  # flat: import copies files
    (epath.Path(out) / path.name).write_bytes(path.read_bytes())
  written = original.write_hf(out, tensors, _hf_config(model_config, source.get("hf_config")),
                              prefixed=bool(source.get("prefixed")))
  described = export_tokenizer(loaded, out)
  log.info("Wrote %s with %s (step %d of %s)", ", ".join(written), described, loaded.step,
           workdir)
  return written
