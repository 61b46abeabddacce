"""Tokenizers and the GLM special tokens.

The data pipeline needs from a tokenizer only `specials` (the GLM special ids), `vocab_size`
(padded to a multiple of 128) and `sentence_end` (a bool table over ids, used by [sMASK]).
Kinds, chosen by `data.tokenizer`: `byte` (UTF-8 bytes, no files), `sentencepiece` (a .model
file), `hf` (a tokenizer.json read by the `tokenizers` package), and the files of the released
GLM checkpoints, `wordpiece` (BERT vocab.txt) and `bpe` (GPT-2's or RoBERTa's vocab.json +
merges.txt), built with the `tokenizers` package as the original GLM code builds them; which of
these a folder holds is told by glmjax/data/released_tokenizers.py. `load_tokenizer` builds one
from the data config. Train a SentencePiece model from text files with
`python -m glmjax.data.tokenizers train --input=GLOB --vocab_size=N --out=FILE`.

Special ids (`data.tokenizer_vocab`); the fixed ones are those of the original GLM code:
  bert  the original GLM BERT models: [PAD]=0 is pad and eos, [CLS]=101, [MASK]=103, then
        <|startofpiece|>=30522, <|endofpiece|>=30523, [gMASK]=30524, [sMASK]=30525.
  gpt2  the original GLM-2B/10B: <|endoftext|>=50256 is pad and eos, then sop=50257,
        eop=50258, [CLS]=50259, [MASK]=50260, [gMASK]=50263, [sMASK]=50264.
  roberta  glm-roberta-large (RoBERTa's vocab.json + merges.txt): </s>=2 is pad and eos, <s>=0
        is [CLS], <mask>=50264 is [MASK], then sop=50265, eop=50266, [gMASK]=50267, [sMASK]=50268.
  chinese_sp  the Chinese GLMs, after the N=50000 pieces of cog-pretrain.model: pad=eos=N,
        [CLS]=N+2, [MASK]=N+3, sop=N+6, eop=N+7, [sMASK]=N+8, [gMASK]=N+9 (_chinese_sp_layout).
  ""    each role reuses a token the vocabulary already has (eos: <|endoftext|>, </s>, <eos>, [PAD],
        <pad>; cls: [CLS], <s>, <bos>; mask: [MASK], <mask>; the GLM names for the rest), else gets
        a new id after the vocabulary, in the order eos, cls, mask, smask, gmask, sop, eop,
        [dBLOCK]. The fixed layouts' [dBLOCK] is the original's: 30526, 50265, 50269, N+10.
        pad always equals eos, as in GLM.
New ids exist only in the padded embedding table: `encode` never produces them from text, so a
literal "[MASK]" in a corpus stays text; `decode` shows them by name.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import sys
from typing import Iterable, Sequence

import ml_collections
import numpy as np

from glmjax import error_text
from glmjax.data.specials import VOCAB_LAYOUTS, SpecialTokens, assign_specials, pad_vocab

# A sentence ends at a token whose text contains one of these (the original's
# contains_sentence_end).
SENTENCE_END_CHARS = ".?!;:\n。？！；…"
# Each kind of tokenizer that reads files: what it reads (for messages), and that file's name
# (a glob) inside a folder given as data.tokenizer_path. `byte` reads none.
_FILE_KINDS = {
    "sentencepiece": ("a SentencePiece .model file", "*.model"),
    "hf": ("a tokenizer.json", "tokenizer.json"),
    "wordpiece": ("a BERT WordPiece vocab.txt", "vocab.txt"),
    "bpe": ("a GPT-2 BPE vocab.json with its merges.txt beside it", "vocab.json"),
}
TOKENIZERS = ("byte", *_FILE_KINDS)
_WANTED = {kind: wanted for kind, (wanted, _) in _FILE_KINDS.items()}
FOLDER_FILES = {kind: name for kind, (_, name) in _FILE_KINDS.items()}


def _bytes_to_unicode() -> dict[int, str]:
  """The byte <-> printable character map of byte-level BPE (GPT-2 style)."""
  printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
               + list(range(ord("®"), ord("ÿ") + 1)))
  table, extra = {}, 0
  for byte in range(256):
    if byte in printable:
      table[byte] = chr(byte)
    else:
      table[byte] = chr(256 + extra)
      extra += 1
  return table


_UNICODE_TO_BYTE = {char: byte for byte, char in _bytes_to_unicode().items()}
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_surface(token: str, byte_level: bool = False) -> str:
  """The text a vocabulary entry stands for: undoes byte-level BPE, ▁, ## and <0xNN> markers."""
  if byte_level and all(c in _UNICODE_TO_BYTE for c in token):
    # A lone piece of a multi-byte character decodes to nothing; it ends no sentence.
    return bytes(_UNICODE_TO_BYTE[c] for c in token).decode("utf-8", errors="ignore")
  match = _BYTE_PIECE.fullmatch(token)
  if match:
    value = int(match.group(1), 16)
    return chr(value) if value < 0x80 else ""
  if token.startswith("##"):
    token = token[2:]
  return token.replace("▁", " ")


def sentence_end_table(surfaces: Sequence[str], vocab_size: int,
                       specials: SpecialTokens) -> np.ndarray:
  table = np.zeros(vocab_size, dtype=bool)
  for token_id, text in enumerate(surfaces):
    table[token_id] = any(ch in text for ch in SENTENCE_END_CHARS)
  table[list(specials.as_dict().values())] = False
  return table


def file_fingerprint(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()[:16]


class ByteTokenizer:
  """UTF-8 bytes 0..255, then the GLM specials; no files needed.

  As in the original GLM, pad and eos share one id.
  """

  name = "byte"
  fingerprint = "byte"
  base_vocab_size = 256
  ids_used = 256 + 8          # the model's vocabulary must hold ids below this
  spaces_are_tokens = True    # a space is a token of its own (not part of the next word)

  def __init__(self):
    base = 256
    self.specials = SpecialTokens(pad=base, eos=base, cls=base + 1, mask=base + 2, smask=base + 3,
                                  gmask=base + 4, sop=base + 5, eop=base + 6, dblock=base + 7)
    self.vocab_size = pad_vocab(base + 8)
    table = np.zeros(self.vocab_size, dtype=bool)
    for ch in SENTENCE_END_CHARS:
      encoded = ch.encode("utf-8")
      if len(encoded) == 1:
        table[encoded[0]] = True
    self.sentence_end = table

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8", errors="replace"), dtype=np.uint8).astype(np.int32)

  def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
    return [self.encode(text) for text in texts]

  def decode(self, ids) -> str:
    ids = np.asarray(ids)
    return bytes(int(i) for i in ids if i < 256).decode("utf-8", errors="replace")


class _VocabTokenizer:
  """Shared by the file-based tokenizers: specials, padded size, sentence ends, decode."""

  spaces_are_tokens = False  # word pieces, BPE, SentencePiece: a word carries its space

  def _setup(self, base_tokens: Sequence[str], surfaces: Sequence[str], layout: str):
    self.base_vocab_size = len(base_tokens)
    self.specials, self.added_tokens = assign_specials(base_tokens, layout)
    largest = max([self.base_vocab_size - 1, *self.added_tokens, *self.specials.as_dict().values()])
    self.ids_used = largest + 1
    self.vocab_size = pad_vocab(largest + 1)
    self.sentence_end = sentence_end_table(surfaces, self.vocab_size, self.specials)

  def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
    return [self.encode(text) for text in texts]

  def decode(self, ids) -> str:
    """Runs of vocabulary ids through the tokenizer; added GLM ids by name; padding ids dropped."""
    parts, run = [], []
    for token_id in (int(i) for i in np.asarray(ids).reshape(-1)):
      if token_id < self.base_vocab_size:
        run.append(token_id)
        continue
      if run:
        parts.append(self._decode_base(run))
        run = []
      parts.append(self.added_tokens.get(token_id, ""))
    if run:
      parts.append(self._decode_base(run))
    return "".join(parts)


class SentencePieceTokenizer(_VocabTokenizer):
  def __init__(self, path: str, layout: str = ""):
    import sentencepiece
    self._model = sentencepiece.SentencePieceProcessor(model_file=path)
    self.name = f"sentencepiece:{os.path.basename(path)}"
    self.fingerprint = file_fingerprint(path)
    model = self._model
    pieces = [model.id_to_piece(i) for i in range(model.get_piece_size())]
    surfaces = ["" if model.is_control(i) or model.is_unknown(i) else token_surface(p)
                for i, p in enumerate(pieces)]
    self._setup(pieces, surfaces, layout)

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._model.encode(text), dtype=np.int32)

  def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
    # One thread: prepare runs one tokenizer per worker process.
    encoded = self._model.encode(list(texts), num_threads=1)
    return [np.asarray(ids, dtype=np.int32) for ids in encoded]

  def _decode_base(self, ids: list[int]) -> str:
    return self._model.decode(ids)


class HFTokenizer(_VocabTokenizer):
  """A tokenizer.json (Hugging Face `tokenizers`); its own [CLS]/[SEP] post-processing is off."""

  def __init__(self, path: str, layout: str = ""):
    import tokenizers
    self._wrap(tokenizers.Tokenizer.from_file(path), f"hf:{os.path.basename(path)}",
               file_fingerprint(path), layout)

  def _wrap(self, tokenizer, name: str, fingerprint: str, layout: str):
    """Shared with the released formats, which build a `tokenizers.Tokenizer` from their files."""
    # A tokenizer.json from the hub registers [MASK], [PAD], <|endoftext|>... as special added
    # tokens, which `tokenizers` would match in text even with add_special_tokens=False: a
    # literal "[PAD]" in a document would become eos mid-document, and the pipeline, which
    # finds documents by their lengths, would mask that eos into Part B. As GLM's own
    # tokenizers do, such names in text stay text.
    tokenizer.encode_special_tokens = True
    self._tokenizer, self.name, self.fingerprint = tokenizer, name, fingerprint
    size = self._tokenizer.get_vocab_size(with_added_tokens=True)
    base_tokens = [""] * size
    for text, token_id in self._tokenizer.get_vocab(with_added_tokens=True).items():
      if token_id < size:
        base_tokens[token_id] = text
    decoder = json.loads(self._tokenizer.to_str()).get("decoder") or {}
    byte_level = '"ByteLevel"' in json.dumps(decoder)
    self._setup(base_tokens, [token_surface(t, byte_level) for t in base_tokens], layout)

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int32)

  def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
    encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [np.asarray(e.ids, dtype=np.int32) for e in encodings]

  def _decode_base(self, ids: list[int]) -> str:
    return self._tokenizer.decode(ids, skip_special_tokens=False)


class WordPieceTokenizer(HFTokenizer):
  """A BERT vocab.txt, uncased like glm-base/large: BERT's basic tokenization (clean, split CJK
  characters and punctuation, lowercase, strip accents), then greedy longest-match word pieces."""

  def __init__(self, vocab_path: str, layout: str = "bert"):
    import tokenizers
    from tokenizers import decoders, models, normalizers, pre_tokenizers
    # 100 characters and [UNK] as the original GLM wordpiece.py.
    model = models.WordPiece.from_file(vocab_path, unk_token="[UNK]", max_input_chars_per_word=100)
    if model.token_to_id("[UNK]") is None:
      raise ValueError(f"data.tokenizer_path={vocab_path!r} has no [UNK] line; BERT WordPiece "
                       "needs it for unknown words: use the vocab.txt released with the model")
    tokenizer = tokenizers.Tokenizer(model)
    # No special tokens are registered, so "[MASK]" in a text is split like any other text.
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    self._wrap(tokenizer, f"wordpiece:{os.path.basename(vocab_path)}",
               file_fingerprint(vocab_path), layout)


class ByteLevelBPETokenizer(HFTokenizer):
  """A GPT-2 (or RoBERTa) vocab.json + merges.txt: GPT-2's regex split of bytes mapped to
  printable characters, then the merges; any text encodes without unknown tokens."""

  def __init__(self, vocab_path: str, merges_path: str, layout: str = "gpt2"):
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers
    tokenizer = tokenizers.Tokenizer(models.BPE.from_file(vocab_path, merges_path))
    # <|endoftext|> is not registered as special: typed in a text it stays text.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    both = file_fingerprint(vocab_path) + file_fingerprint(merges_path)
    self._wrap(tokenizer, f"bpe:{os.path.basename(vocab_path)}",
               hashlib.sha256(both.encode()).hexdigest()[:16], layout)


def tokenizer_files(kind: str, path: str) -> list[str]:
  """The files tokenizer `kind` reads for data.tokenizer_path=`path`, main file first.

  `path` is the main file or a folder holding it (tokenizer.json, vocab.txt, vocab.json, or its
  only .model file). `bpe` adds the merges file beside the vocab.json: X-merges.txt for an
  X-vocab.json, else merges.txt. Raises FileNotFoundError naming `path` when a file is missing,
  ValueError when a folder holds several .model files.
  """
  main = path
  if os.path.isdir(path):
    found = sorted(glob.glob(os.path.join(glob.escape(path), FOLDER_FILES[kind])))
    if len(found) > 1:
      raise ValueError(f"data.tokenizer_path={path!r} holds {len(found)} .model files; point it "
                       "at the one to use")
    if not found:
      raise FileNotFoundError(f"data.tokenizer_path={path!r} is a folder without "
                              f"{FOLDER_FILES[kind]}; it should be {_WANTED[kind]}, or its folder")
    main = found[0]
  if not os.path.isfile(main):
    hint = " (make one with python -m glmjax.data.tokenizers train)" * (kind == "sentencepiece")
    raise FileNotFoundError(f"data.tokenizer_path={path!r} does not exist; it should be "
                            f"{_WANTED[kind]}{hint}")
  if kind != "bpe":
    return [main]
  folder, name = os.path.split(main)
  names = [name[:-len("vocab.json")] + "merges.txt"] if name.endswith("vocab.json") else []
  for merges in dict.fromkeys(names + ["merges.txt"]):
    if os.path.isfile(os.path.join(folder, merges)):
      return [main, os.path.join(folder, merges)]
  raise FileNotFoundError(f"data.tokenizer_path={path!r}: no merges.txt beside {name}; put the "
                          "merges.txt released with this vocab.json in the same folder")


# data.tokenizer_path of a checkpoint imported without its tokenizer (`convert import`). Its
# data.tokenizer stays 'byte' (a valid config, which compile-only programs need), but byte ids fed
# to a model trained on a BERT or GPT-2 vocabulary give nonsense without any error: refused here.
NO_TOKENIZER = "<none: imported without a tokenizer>"


def load_tokenizer(data_config: ml_collections.ConfigDict):
  """The tokenizer named by data.tokenizer / tokenizer_path / tokenizer_vocab."""
  kind, path = data_config.tokenizer, data_config.tokenizer_path
  layout = data_config.tokenizer_vocab
  if kind not in TOKENIZERS:
    raise ValueError(f"data.tokenizer={kind!r}: expected one of {TOKENIZERS}")
  if layout not in VOCAB_LAYOUTS:
    raise ValueError(f"data.tokenizer_vocab={layout!r}: expected one of {VOCAB_LAYOUTS}")
  if kind == "byte":
    if path == NO_TOKENIZER:
      raise ValueError(
          "data.tokenizer_path: this config comes from a checkpoint imported without its "
          "tokenizer; set --config.data.tokenizer=KIND --config.data.tokenizer_path=PATH to the "
          "one it was trained with, or re-import it with `python -m glmjax.convert import "
          "--tokenizer=PATH ...`")
    if path:  # a path with the byte kind: the kind was forgotten, the file would be ignored
      raise ValueError(f"data.tokenizer='byte' reads no file, but data.tokenizer_path={path!r} "
                       f"names one: set data.tokenizer to its kind "
                       f"({', '.join(k for k in TOKENIZERS if k != 'byte')}),"
                       " or clear data.tokenizer_path")
    if layout:
      raise ValueError(f"data.tokenizer_vocab={layout!r} needs the {layout} vocabulary, but "
                       "data.tokenizer='byte' has its own; set data.tokenizer_vocab=''")
    return ByteTokenizer()
  if not path:
    raise ValueError(f"data.tokenizer={kind!r} needs data.tokenizer_path: {_WANTED[kind]} "
                     f"(e.g. --config.data.tokenizer_path=/path/to/file)")
  files = tokenizer_files(kind, path)
  shown = files[0] if len(files) == 1 else path
  try:
    if kind == "sentencepiece":
      return SentencePieceTokenizer(files[0], layout)
    if kind == "hf":
      return HFTokenizer(files[0], layout)
    cls = {"wordpiece": WordPieceTokenizer, "bpe": ByteLevelBPETokenizer}[kind]
    return cls(*files, layout=layout)
  except ValueError as error:  # ours: names the field and the fix; add the file if it does not
    if shown in str(error):
      raise
    raise ValueError(f"data.tokenizer_path={shown!r}: {error}") from error
  except Exception as error:  # noqa: BLE001 - the libraries raise bare Exception/RuntimeError
    raise ValueError(f"data.tokenizer_path={shown!r} cannot be read as {_WANTED[kind]} "
                     f"({error_text.typed_line(error, 200)}); the file is damaged or of another "
                     "kind: check data.tokenizer and the file.") from error


def tokenizer_info(tokenizer) -> dict:
  """What identifies a tokenizer's ids: recorded by prepare and with every checkpoint, checked
  when shards are read, a run resumes or another run's parameters are loaded."""
  return dict(name=tokenizer.name, fingerprint=tokenizer.fingerprint,
              vocab_size=int(tokenizer.vocab_size), specials=tokenizer.specials.as_dict())


def tokenizer_differences(recorded: dict, current: dict) -> list[str]:
  """The fields of tokenizer_info in which `current` gives other ids than `recorded`. Special
  roles added since `recorded` was written (dblock) never occur in what it tokenized, so only
  the roles it had are compared."""
  specials = {k: v for k, v in current["specials"].items() if k in recorded["specials"]}
  current = {**current, "specials": specials}
  return [k for k in ("fingerprint", "vocab_size", "specials") if recorded[k] != current[k]]


if __name__ == "__main__":
  from glmjax import logs
  from glmjax.data import tokenizer_train
  try:
    tokenizer_train.main(sys.argv[1:])
  except (ValueError, OSError) as failure:  # a glob that matches nothing, too few characters
    logs.fail_keeping_traceback(failure)
