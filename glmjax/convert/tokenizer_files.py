"""The tokenizer files that travel with a converted checkpoint: copied under an import's
WORKDIR/tokenizer/ (config.data pointed at them), written beside an export with a record of the
run's data.tokenizer fields, and read back from that record by the next import.
"""
from __future__ import annotations

import json
import os
import shutil

import ml_collections

from glmjax import pretrained
from glmjax.data import released_tokenizers, tokenizers

TOKENIZER_DIR = "tokenizer"
# Written by export beside the model: the data.tokenizer fields of the run and the tokenizer
# files copied with it, which import reads back (the byte tokenizer has no files to find).
TOKENIZER_RECORD = "glmjax_tokenizer.json"


def source_folder(source: str) -> str:
  """The checkpoint's folder: --from may name it or one of its weights files."""
  return source if os.path.isdir(source) else (os.path.dirname(source) or ".")


def store_tokenizer(path: str, out: str, data_config) -> str:
  """Copies the tokenizer's files under WORKDIR/tokenizer/ and points config.data at them."""
  found = released_tokenizers.tokenizer_fields(path)
  folder = os.path.join(out, TOKENIZER_DIR)
  os.makedirs(folder, exist_ok=True)
  for file in found["files"]:
    shutil.copy2(file, os.path.join(folder, os.path.basename(file)))
  data_config.update(tokenizer=found["tokenizer"], tokenizer_vocab=found["tokenizer_vocab"],
                     tokenizer_path=os.path.join(TOKENIZER_DIR,
                                                 os.path.basename(found["tokenizer_path"])))
  return f"{found['tokenizer']} tokenizer ({found['tokenizer_vocab'] or 'own'} special ids)"


def recorded_tokenizer(source: str) -> dict:
  """The TOKENIZER_RECORD a glmjax export wrote in `source`'s folder; {} when there is none."""
  path = os.path.join(source_folder(source), TOKENIZER_RECORD)
  if not os.path.isfile(path):
    return {}
  try:
    with open(path, encoding="utf-8") as handle:
      record = json.load(handle)
    return {"tokenizer": str(record["tokenizer"]),
            "tokenizer_vocab": str(record.get("tokenizer_vocab", "")),
            "files": [str(name) for name in record.get("files", [])]}
  except (ValueError, KeyError, TypeError, AttributeError) as error:
    raise ValueError(f"{path}: not a tokenizer record glmjax's export writes ({error}); "
                     "delete it and give --tokenizer=PATH") from None


def restore_tokenizer(source: str, record: dict, out: str, data_config) -> str:
  """Points config.data at the tokenizer an export recorded, its files copied under
  WORKDIR/tokenizer/, and checks that it loads."""
  folder = source_folder(source)
  path = ""
  if record["files"]:
    os.makedirs(os.path.join(out, TOKENIZER_DIR), exist_ok=True)
    for name in record["files"]:
      shutil.copy2(os.path.join(folder, name), os.path.join(out, TOKENIZER_DIR, name))
    path = os.path.join(TOKENIZER_DIR, record["files"][0])
  data_config.update(tokenizer=record["tokenizer"], tokenizer_vocab=record["tokenizer_vocab"],
                     tokenizer_path=path)
  stored_tokenizer_info(data_config, out)  # a damaged copy fails here, naming its path
  return (f"{record['tokenizer']} tokenizer ({record['tokenizer_vocab'] or 'own'} special ids, "
          f"as the export recorded)")


def stored_tokenizer_info(data_config, out: str) -> dict:
  """tokenizer_info of the tokenizer stored under `out` (config.data's path is relative to it),
  recorded with the parameters so that training from them under another tokenizer is
  refused."""
  loads = ml_collections.ConfigDict(data_config.to_dict())
  loads.tokenizer_path = (os.path.join(out, data_config.tokenizer_path)
                          if data_config.tokenizer_path else "")
  return tokenizers.tokenizer_info(tokenizers.load_tokenizer(loads))


def export_tokenizer(loaded: pretrained.Pretrained, out: str) -> str:
  """Writes the run's tokenizer beside the exported model: its files and TOKENIZER_RECORD, which
  import reads back. Nothing for a workdir that knows no tokenizer."""
  data = pretrained.tokenizer_config(loaded.config, loaded.workdir)
  if data.tokenizer_path == pretrained.NO_TOKENIZER:
    return "no tokenizer (the workdir knows none)"
  files = (tokenizers.tokenizer_files(data.tokenizer, data.tokenizer_path)
           if data.tokenizer_path else [])
  for file in files:  # --out was empty, so no file there is the tokenizer itself
    shutil.copy2(file, os.path.join(out, os.path.basename(file)))
  with open(os.path.join(out, TOKENIZER_RECORD), "w", encoding="utf-8") as handle:
    json.dump({"tokenizer": data.tokenizer, "tokenizer_vocab": data.tokenizer_vocab,
               "files": [os.path.basename(file) for file in files]}, handle, indent=2)
  return f"the {data.tokenizer} tokenizer"
