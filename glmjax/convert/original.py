"""Reading and writing the original GLM checkpoint layouts, as flat {original key: numpy array}.

Hugging Face layout (THUDM's hub folders): config.json and model.safetensors or
pytorch_model.bin, or shards listed by model.safetensors.index.json / pytorch_model.bin.index.json.
Keys are `word_embeddings.weight`, `transformer.layers.0.attention.query_key_value.weight`, ...,
or the same under `glm.` (a `GLMForConditionalGeneration.state_dict()`); both are read.

Megatron layout (the original training code): mp_rank_00_model_states.pt, a dict whose
'module' holds the same keys unprefixed. A model-parallel checkpoint has one file per rank
(mp_rank_00, mp_rank_01, ...); `merge_model_parallel` joins them the way the original code
split them. A folder with latest_checkpointed_iteration.txt (or DeepSpeed's `latest`) is read
at that iteration.

torch is needed only for .bin and .pt files and is imported only then.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import logging
import os
import re
import time
from typing import Any

import numpy as np

from glmjax import error_text
from glmjax.convert import safetensors_io
from glmjax.data import specials

HF_CONFIG = "config.json"
SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
TORCH_BIN, TORCH_BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
MEGATRON_PATTERN = "mp_rank_*_model_states.pt"
PREFIX = "glm."
PROGRESS_EVERY_S = 30  # a line at most this often while a long write runs
TORCH_MISSING = ("reading {path} needs PyTorch, which is not installed: pip install "
                 "torch --index-url https://download.pytorch.org/whl/cpu (a CPU build is enough), "
                 "or convert the file to safetensors")

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Checkpoint:
  """An original checkpoint in memory: unprefixed keys, arrays in their stored dtype."""
  tensors: dict[str, np.ndarray]
  layout: str                    # "hf" or "megatron"
  hf_config: dict | None         # the HF config.json, when the checkpoint has one
  megatron_args: dict            # what the Megatron file records of its training args
  prefixed: bool                 # the keys were under "glm."
  file_format: str               # "safetensors", "bin" or "pt"


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return torch


def _load_torch_file(path: str, *, allow_pickle: bool) -> dict:
  torch = _torch()
  if torch is None:
    raise ModuleNotFoundError(TORCH_MISSING.format(path=path))
  try:
    with torch.serialization.safe_globals([argparse.Namespace]):
      return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
  except Exception as error:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, ...
    hint = ""
    if _cut_off(error):  # pickle would not read it either: --trust_pickle must not be urged
      hint = (f"; the file is damaged or incomplete ({os.path.getsize(path):,} bytes): download "
              "it again")
    elif not allow_pickle:
      hint = ("; a training checkpoint that holds more than tensors (optimizer or rng states) "
              "needs --trust_pickle, which reads it with pickle: that runs code stored in the "
              "file, so use it for files from a source you trust")
    raise ValueError(f"{path} cannot be read by torch.load ({error_text.typed_line(error, 160)})"
                     f"{hint}.") from error


def _cut_off(error: Exception) -> bool:
  """Whether torch.load failed on a damaged or incomplete file rather than on contents that
  weights-only loading refuses. torch words a cut in many ways (an OSError, an IndexError,
  "unexpected EOF", even "Weights only load failed"), so the refusal is what is recognised: it
  names the object it will not build ("Unsupported global")."""
  return "Unsupported global" not in str(error)


def _to_numpy(value: Any, key: str, path: str) -> np.ndarray:
  if isinstance(value, np.ndarray):
    return value
  torch = _torch()
  if not isinstance(value, torch.Tensor):  # a state dict holds tensors; this is something else
    raise ValueError(f"{path}: the entry {key} is a {type(value).__name__}, not a tensor; a GLM "
                     "state dict holds tensors only: remove that entry from the file.")
  if value.dtype == torch.bfloat16:  # numpy has no bfloat16: go through its bits
    import ml_dtypes  # pylint: disable=import-outside-toplevel
    return value.detach().contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return value.detach().contiguous().numpy()


def _weights_files(folder: str) -> tuple[list[str], str]:
  for index_name, fmt in ((SAFETENSORS_INDEX, "safetensors"), (TORCH_BIN_INDEX, "bin")):
    index_path = os.path.join(folder, index_name)
    if os.path.isfile(index_path):
      with open(index_path, encoding="utf-8") as handle:
        weight_map = json.load(handle).get("weight_map", {})
      files = sorted(set(weight_map.values()))
      missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
      if not files or missing:
        raise FileNotFoundError(f"{index_path} lists {missing or 'no files'} that are not in "
                                f"{folder}; download every shard.")
      return [os.path.join(folder, f) for f in files], fmt
  for name, fmt in ((SAFETENSORS, "safetensors"), (TORCH_BIN, "bin")):
    if os.path.isfile(os.path.join(folder, name)):
      return [os.path.join(folder, name)], fmt
  raise FileNotFoundError(f"{folder} has {HF_CONFIG} but no weights: expected {SAFETENSORS}, "
                          f"{TORCH_BIN} or a sharded index ({SAFETENSORS_INDEX}).")


def _read_progress(done: int, files: list[str], started: float) -> None:
  """One line a file read: a 10B checkpoint takes minutes, and silence looks like a hang."""
  path = files[done - 1]
  log.info("Read %s (%d of %d, %.2f GB) after %.0f s", os.path.basename(path), done, len(files),
           os.path.getsize(path) / 1e9, time.monotonic() - started)


def _strip_prefix(tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], bool]:
  prefixed = any(key.startswith(PREFIX) for key in tensors)
  if not prefixed:
    return tensors, False
  return {key[len(PREFIX):]: value for key, value in tensors.items()
          if key.startswith(PREFIX)}, True


def read_hf(folder: str, *, allow_pickle: bool = False) -> Checkpoint:
  with open(os.path.join(folder, HF_CONFIG), encoding="utf-8") as handle:
    hf_config = json.load(handle)
  files, fmt = _weights_files(folder)
  tensors: dict[str, np.ndarray] = {}
  started = time.monotonic()
  for done, path in enumerate(files, 1):
    if fmt == "safetensors":
      part, _ = safetensors_io.read(path)
    else:
      part = {key: _to_numpy(value, key, path)
              for key, value in _load_torch_file(path, allow_pickle=allow_pickle).items()}
    tensors.update(part)
    _read_progress(done, files, started)
  tensors, prefixed = _strip_prefix(tensors)
  return Checkpoint(tensors, "hf", hf_config, {}, prefixed, fmt)


def _tracked_folder(folder: str) -> str:
  """The folder of the iteration that `folder`'s tracker file names (Megatron's
  latest_checkpointed_iteration.txt or DeepSpeed's latest, as the original's
  get_checkpoint_iteration reads them), or `folder` itself where it has none."""
  for name in ("latest_checkpointed_iteration.txt", "latest"):
    tracker = os.path.join(folder, name)
    if not os.path.isfile(tracker):
      continue
    with open(tracker, encoding="utf-8", errors="replace") as handle:
      tag = handle.read().strip()
    if tag and _holds_parts(os.path.join(folder, tag)):
      return os.path.join(folder, tag)
    named = (f"names iteration {tag!r}, but {os.path.join(folder, tag)} holds no "
             f"{MEGATRON_PATTERN}" if tag else "is empty")
    if _holds_parts(folder):  # a stale tracker beside the parts themselves
      log.warning("%s %s: reading the parts beside it.", tracker, named)
      return folder
    held = sorted({os.path.basename(os.path.dirname(f)) for f in glob.glob(
        os.path.join(glob.escape(folder), "*", MEGATRON_PATTERN))})
    fix = (f"give --from={os.path.join(folder, held[0])}" if len(held) == 1 else
           f"give --from={os.path.join(folder, 'ITERATION')}, one of {', '.join(held)}" if held
           else f"no folder here holds them: copy that iteration's folder here, or give the one "
                "that holds them")
    raise FileNotFoundError(f"{tracker} {named}; {fix}.")
  return folder


def _holds_parts(folder: str) -> bool:
  return bool(glob.glob(os.path.join(glob.escape(folder), MEGATRON_PATTERN)))


def _megatron_files(folder: str) -> list[str]:
  folder = _tracked_folder(folder)
  files = sorted(glob.glob(os.path.join(glob.escape(folder), MEGATRON_PATTERN)))
  ranks = [int(re.search(r"mp_rank_(\d+)_", os.path.basename(f)).group(1)) for f in files]
  if ranks != list(range(len(files))):
    raise FileNotFoundError(f"{folder}: model-parallel parts {ranks} are not 0..{len(files) - 1};"
                            " copy every mp_rank_XX_model_states.pt of the checkpoint.")
  return files


def read_megatron(folder: str, *, allow_pickle: bool = False) -> Checkpoint:
  parts, args = [], {}
  files = _megatron_files(folder)
  started = time.monotonic()
  for done, path in enumerate(files, 1):
    saved = _load_torch_file(path, allow_pickle=allow_pickle)
    if "module" not in saved:
      raise ValueError(f"{path} has no 'module' entry (keys: {sorted(saved)[:6]}); it is not a "
                       "GLM model-states file.")
    # DeepSpeed records the model-parallel size: with the last ranks missing, the merge would
    # otherwise fail later on a shape, naming no file.
    world = saved.get("mp_world_size")
    if isinstance(world, int) and world != len(files):
      raise FileNotFoundError(
          f"{path} is one of {world} model-parallel parts, but {os.path.dirname(path)} holds "
          f"{len(files)}; copy every mp_rank_XX_model_states.pt (00..{world - 1:02d}).")
    module, _ = _strip_prefix({k: _to_numpy(v, k, path) for k, v in saved["module"].items()})
    parts.append(module)
    if not args and saved.get("args") is not None:
      args = {k: v for k, v in vars(saved["args"]).items()
              if isinstance(v, (int, float, str, bool))}
    _read_progress(done, files, started)
  if len(parts) > 1:
    log.info("Joining %d model-parallel parts", len(parts))
  tensors = merge_model_parallel(parts) if len(parts) > 1 else parts[0]
  return Checkpoint(_gmask_on_its_own_row(tensors, args, folder), "megatron", None, args, False,
                    "pt")


def _gmask_on_its_own_row(tensors: dict[str, np.ndarray], args: dict, folder: str
                          ) -> dict[str, np.ndarray]:
  """A Chinese GLM trained with --task-mask but without --fix-command-token (GLM-10B-Chinese)
  gave [gMASK] the id of <|endofpiece|>, N+7 after the N SentencePiece pieces. The Hugging Face
  release gives [gMASK] its own id, N+9 ([dBLOCK]'s in training), by copying row N+7 over it
  (THUDM/GLM scripts/convert_glm_checkpoint_to_transformers.py); the same copy lets these files
  run with glmjax's chinese_sp ids, which are that release's. Only files that kept their
  training args say how they were trained (GLM's own saves keep none): without them, a
  GLM-10B-Chinese-shaped table is warned of."""
  table = tensors.get("word_embeddings.weight")
  if not isinstance(table, np.ndarray) or table.ndim != 2:
    return tensors  # model_fields names what is missing
  pieces = specials.CHINESE_SP_PIECES
  if "tokenizer_type" not in args and table.shape == (specials.pad_vocab(pieces + 11), 4096):
    log.warning("%s: a GLM-10B-Chinese-shaped checkpoint without its training args. If it was "
                "trained without --fix-command-token (the released GLM-10B-Chinese was), its "
                "[gMASK] is row %d, not %d as in glmjax's ids: import that model's Hugging Face "
                "files instead.", folder, pieces + 7, pieces + 9)
  if not (args.get("tokenizer_type") == "ChineseSPTokenizer" and args.get("task_mask")
          and not args.get("fix_command_token") and table.shape[0] > pieces + 9):
    return tensors
  table = table.copy()
  table[pieces + 9] = table[pieces + 7]
  log.info("Trained without --fix-command-token, [gMASK] shared <|endofpiece|>'s id %d: its row "
           "is copied to %d, [gMASK]'s id here, as the Hugging Face release of that model does.",
           pieces + 7, pieces + 9)
  return {**tensors, "word_embeddings.weight": table}


def read(path: str, *, allow_pickle: bool = False) -> Checkpoint:
  """An original checkpoint from a folder (HF or Megatron) or a single .pt/.bin/.safetensors."""
  if os.path.isdir(path):
    if os.path.isfile(os.path.join(path, HF_CONFIG)):
      return read_hf(path, allow_pickle=allow_pickle)
    if _megatron_files(path):
      return read_megatron(path, allow_pickle=allow_pickle)
    raise FileNotFoundError(f"--from={path}: neither a Hugging Face GLM folder ({HF_CONFIG} and "
                            f"weights) nor a Megatron one ({MEGATRON_PATTERN}).")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--from={path}: no such file or folder.")
  if re.search(r"mp_rank_\d+_model_states\.pt$", path):
    return read_megatron(os.path.dirname(path) or ".", allow_pickle=allow_pickle)
  folder = os.path.dirname(path) or "."
  if os.path.isfile(os.path.join(folder, HF_CONFIG)):
    return read_hf(folder, allow_pickle=allow_pickle)
  raise FileNotFoundError(f"--from={path}: a weights file needs its {HF_CONFIG} beside it; "
                          "give the folder of the checkpoint.")


# Model-parallel splits of the original code (mpu/layers.py): which axis of each parameter
# is split over ranks. The fused QKV is split with stride 3: each rank holds [Q_r | K_r | V_r].
_SPLIT_ROWS = re.compile(r"(^word_embeddings\.weight|mlp\.dense_h_to_4h\.(weight|bias))$")
_SPLIT_COLUMNS = re.compile(r"(attention\.dense|mlp\.dense_4h_to_h)\.weight$")
_SPLIT_QKV = re.compile(r"attention\.query_key_value\.(weight|bias)$")


def merge_model_parallel(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """The full model from the state dicts of ranks 0..n-1 of a model-parallel checkpoint."""
  merged = {}
  for key in parts[0]:
    pieces = [part[key] for part in parts]
    if _SPLIT_QKV.search(key):
      thirds = [np.split(piece, 3, axis=0) for piece in pieces]
      merged[key] = np.concatenate([third[i] for i in range(3) for third in thirds], axis=0)
    elif _SPLIT_ROWS.search(key):
      merged[key] = np.concatenate(pieces, axis=0)
    elif _SPLIT_COLUMNS.search(key):
      merged[key] = np.concatenate(pieces, axis=1)
    else:  # replicated: position tables, LayerNorms, row-parallel biases
      merged[key] = pieces[0]
  return merged


def write_hf(folder: str, tensors: dict[str, np.ndarray], hf_config: dict, *,
             prefixed: bool = False) -> list[str]:
  """config.json and model.safetensors (no torch needed); returns the written paths."""
  os.makedirs(folder, exist_ok=True)
  config_path = os.path.join(folder, HF_CONFIG)
  with open(config_path, "w", encoding="utf-8") as handle:
    json.dump(hf_config, handle, indent=2, sort_keys=True)
    handle.write("\n")
  weights_path = os.path.join(folder, SAFETENSORS)
  named = {(PREFIX + key if prefixed else key): value for key, value in tensors.items()}
  started = last = time.monotonic()

  def progress(done: int, total: int) -> None:  # GLM-10B's 20 GB take minutes to write
    nonlocal last
    if time.monotonic() - last >= PROGRESS_EVERY_S:
      last = time.monotonic()
      log.info("Writing %s: %.2f of %.2f GB after %.0f s", SAFETENSORS, done / 1e9, total / 1e9,
               last - started)
  safetensors_io.write(weights_path, named, {"format": "pt"}, progress)
  return [config_path, weights_path]
