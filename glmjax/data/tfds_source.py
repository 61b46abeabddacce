"""Documents from TensorFlow Datasets (data.source='tfds').

This is the only module that imports tensorflow / tensorflow_datasets, and only when called.
data.tfds_name is anything tfds.builder accepts ('lm1b', 'c4/en:3.1.0', 'wikipedia/20230601.en');
data.tfds_data_dir is a local folder or gs:// bucket holding the prepared dataset (nothing is
downloaded here: build it once with `tfds build NAME --data_dir=DIR`); data.tfds_split may be
sliced ('train[:5%]'); data.text_field names the text feature. Files are read one after another
(interleave 1), so the document order is fixed and the split read in pieces (prepare) gives the
same documents in the same order as the split read whole.
"""
from __future__ import annotations

import math
import os
from typing import Iterator

from glmjax import error_text
from glmjax.data.text_files import TextStats, decode_utf8


def _tfds():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up chatter hides real messages
  # TensorFlow only reads TFDS records here, so oneDNN has no numerics to change; on, it prints
  # four lines at import that no log level silences (absl's C++ logging, before jax's set-up).
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  import tensorflow_datasets as tfds
  return tfds


def _where(data_config) -> str:
  data_dir = data_config.tfds_data_dir
  return f"data.tfds_name={data_config.tfds_name!r}" + (
      f" in data.tfds_data_dir={data_dir!r}" if data_dir else " (default TFDS data_dir)")


def open_builder(data_config):
  """The TFDS builder for the config, with its text field and split checked."""
  name = data_config.tfds_name
  if not name:
    raise ValueError("data.source='tfds' needs data.tfds_name, e.g. --config.data.tfds_name=lm1b "
                     "or c4/en:3.1.0")
  tfds = _tfds()
  try:
    builder = tfds.builder(name, data_dir=data_config.tfds_data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"{_where(data_config)}: TFDS has no such dataset "
                     f"({error_text.first_line(e, None)}). Check the name "
                     "(see the TFDS catalog) and data.tfds_data_dir") from e
  fields = sorted(builder.info.features.keys()) if hasattr(builder.info.features, "keys") else []
  if data_config.text_field not in fields:
    raise ValueError(f"{_where(data_config)} has no feature data.text_field="
                     f"{data_config.text_field!r}; its features are {fields}: set "
                     "--config.data.text_field to the one that holds the text")
  if builder.info.splits:
    try:
      builder.info.splits[data_config.tfds_split]
    except (KeyError, ValueError) as e:
      raise ValueError(f"{_where(data_config)}: data.tfds_split={data_config.tfds_split!r} is "
                       f"not valid ({e}); splits: {list(builder.info.splits.keys())}") from e
  return builder


def split_bytes(data_config) -> int:
  """About the stored bytes of data.tfds_split: TFDS records the size of whole splits only, so
  a slice ('train[:5%]') counts its share of its split's examples, and 'a+b' adds its parts.
  0 when unrecorded."""
  splits, total = open_builder(data_config).info.splits, 0
  for name in data_config.tfds_split.split("+"):
    base = name.split("[")[0].strip()
    if base in splits:
      whole, part = splits[base], splits[name.strip()]
      total += whole.num_bytes * part.num_examples // max(1, whole.num_examples)
  return total


def plan_tfds_pieces(data_config, target_bytes: int) -> list[dict]:
  """Even sub-splits of about target_bytes of stored data each."""
  count = max(1, math.ceil(split_bytes(data_config) / target_bytes))
  return [dict(tfds=[data_config.tfds_split, index, count]) for index in range(count)]


def iter_tfds_texts(data_config, stats: TextStats, piece: list | None = None) -> Iterator[str]:
  """Non-empty texts of the split, or of one piece [split, index, count] of it."""
  tfds = _tfds()
  builder = open_builder(data_config)
  split = data_config.tfds_split
  if piece is not None:
    split = tfds.even_splits(piece[0], piece[2])[piece[1]]
  field = data_config.text_field
  try:
    dataset = builder.as_dataset(split=split, shuffle_files=False,
                                 read_config=tfds.ReadConfig(interleave_cycle_length=1,
                                                             try_autocache=False))
  except AssertionError as e:  # TFDS asserts when the data files are missing
    raise FileNotFoundError(
        f"{_where(data_config)}: the dataset is not prepared there ({e}). Build it on a machine "
        f"with network access: `tfds build {data_config.tfds_name} --data_dir=DIR`, then set "
        "--config.data.tfds_data_dir=DIR (a local folder or gs:// bucket)") from e
  for example in dataset.as_numpy_iterator():
    value = example[field]
    if not isinstance(value, bytes):
      raise ValueError(f"{_where(data_config)}: feature {field!r} holds "
                       f"{type(value).__name__}, not text; set data.text_field to a Text feature")
    text = decode_utf8(value, stats)
    if text.strip():
      stats.docs += 1
      yield text
