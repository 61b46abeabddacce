"""Which released GLM tokenizer a file or folder holds, and the data config that loads it.

  vocab.txt                BERT WordPiece (glm-base, glm-large, ...): wordpiece, layout 'bert'
  vocab.json + merges.txt  GPT-2 byte-level BPE (glm-2b, glm-10b): bpe, layout 'gpt2'; RoBERTa's
                           (glm-roberta-large): bpe, layout 'roberta'
  cog-pretrain.model       the Chinese GLMs' SentencePiece: sentencepiece, layout 'chinese_sp'
  tokenizer.json           Hugging Face: hf, with the original layout when the vocabulary is it

`tokenizer_fields` is what `convert import --tokenizer=PATH` records; the tokenizers themselves
are in glmjax/data/tokenizers.py.
"""
from __future__ import annotations

import glob
import os

import ml_collections

from glmjax.data import specials as specials_lib
from glmjax.data import tokenizers as tk


# In a folder, the formats are looked for in this order: the original formats first, so a
# Hugging Face snapshot holding both vocab.json and tokenizer.json loads as the original did.
_FOLDER_ORDER = tuple((tk.FOLDER_FILES[kind], kind) for kind in ("wordpiece", "bpe",
                                                                 "sentencepiece", "hf"))
# A file is known by how its name ends (bert-large-uncased-vocab.txt, gpt2-vocab.json, ...).
_BY_NAME = ((".model", "sentencepiece"), ("merges.txt", "bpe"), (".txt", "wordpiece"),
            ("vocab.json", "bpe"), (".json", "hf"))
# The original vocabularies, before GLM's tokens.
_BASE_SIZES = {"bert": 30522, "gpt2": 50257, "roberta": 50265}


def _recognise(path: str) -> tuple[str | None, str]:
  """(data.tokenizer kind or None, the path to load it from)."""
  if os.path.isdir(path):
    for pattern, kind in _FOLDER_ORDER:
      if glob.glob(os.path.join(glob.escape(path), pattern)):
        return kind, path
    return None, path
  name = os.path.basename(path)
  for suffix, kind in _BY_NAME if os.path.isfile(path) else ():
    if name.endswith(suffix):
      if suffix == "merges.txt":  # load from the vocab.json beside it
        path = os.path.join(os.path.dirname(path), name[:-len("merges.txt")] + "vocab.json")
      return kind, path
  return None, path


def _found_layout(tokenizer, kind: str) -> str:
  """The GLM layout of a sentencepiece or hf tokenizer loaded with layout ''."""
  if kind == "sentencepiece":
    # cog-pretrain.model: the only released GLM SentencePiece model.
    return "chinese_sp" if tokenizer.base_vocab_size == specials_lib.CHINESE_SP_PIECES else ""
  for layout, size in _BASE_SIZES.items():  # the original BERT or GPT-2 vocabulary: GLM's ids
    required = specials_lib.FIXED_LAYOUTS[layout][1]
    if tokenizer.base_vocab_size == size and all(
        tokenizer._tokenizer.id_to_token(i) == name for i, name in required.items()):
      return layout
  return ""


def _bpe_layout(tokenizer) -> str:
  """BPE files are GPT-2's or RoBERTa's (which starts with <s>): checked, when loaded again, as
  the one they resemble, so that a refusal names the token that one lacks."""
  return "roberta" if tokenizer._tokenizer.id_to_token(0) == "<s>" else "gpt2"


def holds_tokenizer(path: str) -> bool:
  """Whether `path` (a file or a folder) holds tokenizer files that `tokenizer_fields` reads."""
  return _recognise(path)[0] is not None


def tokenizer_fields(path: str) -> dict:
  """The data config that loads the tokenizer files at `path` (a file or a folder), and the
  files to copy with it: what `convert import --tokenizer=PATH` records in a workdir.

  Recognised (in a folder, looked for in this order; a file by how its name ends):
    vocab.txt, *.txt         BERT WordPiece        -> tokenizer 'wordpiece', tokenizer_vocab 'bert'
    vocab.json + merges.txt  GPT-2 BPE (a merges.txt given: the *vocab.json beside it)
                                                   -> 'bpe', 'gpt2', or 'roberta' for exactly
                             RoBERTa's vocabulary (50265, <s> at 0, </s> at 2, <mask> at 50264)
    *.model                  SentencePiece         -> 'sentencepiece', 'chinese_sp' when it has
                             exactly 50000 pieces (cog-pretrain.model of the Chinese GLMs), else ''
    tokenizer.json, *.json   Hugging Face          -> 'hf', 'bert', 'gpt2' or 'roberta' when it
                             holds exactly that original vocabulary, else ''

  Returns {"tokenizer": str, "tokenizer_vocab": str, "tokenizer_path": the main file (absolute),
  "files": [absolute paths, the main file first (bpe: vocab.json, merges.txt)], "vocab_size":
  the padded vocabulary size (int)}. Copy the files into one folder under their own names and
  set data.tokenizer_path to the copy of the main file (or to the folder, when the main file has
  its standard name). The files are loaded once here, so the returned fields are known to load.
  Raises ValueError, one line naming the path, when nothing is recognised or the files do not
  load (a missing merges.txt, a vocab.txt without [CLS] at id 101, a damaged file).
  """
  kind, main = _recognise(path)
  if kind is None:
    state = "does not exist" if not os.path.exists(path) else "holds no tokenizer glmjax reads"
    raise ValueError(f"{path!r} {state}: expected a BERT vocab.txt, a GPT-2 vocab.json with its "
                     "merges.txt, a SentencePiece .model or a tokenizer.json (or their folder)")
  try:
    files = [os.path.abspath(f) for f in tk.tokenizer_files(kind, main)]
    layout = {"wordpiece": "bert"}.get(kind, "")
    fields = dict(tokenizer=kind, tokenizer_path=files[0], tokenizer_vocab=layout)
    tokenizer = tk.load_tokenizer(ml_collections.ConfigDict(fields))
    fields["tokenizer_vocab"] = layout or (_bpe_layout(tokenizer) if kind == "bpe"
                                           else _found_layout(tokenizer, kind))
    if fields["tokenizer_vocab"] != layout:  # load again: checked and padded for that layout
      tokenizer = tk.load_tokenizer(ml_collections.ConfigDict(fields))
  except OSError as error:  # a missing file: one contract, ValueError
    raise ValueError(str(error)) from error
  except ValueError as error:
    mismatch = specials_lib.LayoutMismatchError
    cause = error.__cause__ if isinstance(error.__cause__, mismatch) else error
    if not isinstance(cause, mismatch):
      raise
    # The layout was read from the files, so the config's fix (another layout) cannot apply.
    raise ValueError(f"{path!r} is not the {cause.layout} vocabulary of the released GLM "
                     f"checkpoints: it has {cause.present!r} at id {cause.token_id}, where "
                     f"{cause.name!r} belongs; give the tokenizer files this checkpoint was "
                     "trained with") from error
  return dict(tokenizer=kind, tokenizer_vocab=fields["tokenizer_vocab"], tokenizer_path=files[0],
              files=files, vocab_size=int(tokenizer.vocab_size))
