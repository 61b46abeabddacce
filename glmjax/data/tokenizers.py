"""Tokenizers and the GLM special tokens.

The data pipeline needs from a tokenizer only `specials` (the GLM special ids), `vocab_size`
(padded to a multiple of 128) and `sentence_end` (a bool table over ids, used by [sMASK]).
Three kinds, chosen by `data.tokenizer`: `byte` (UTF-8 bytes, no files), `sentencepiece` (a .model
file) and `hf` (a tokenizer.json read by the `tokenizers` package). `load_tokenizer` builds one
from the data config. Train a SentencePiece model from text files with
`python -m glmjax.data.tokenizers train --input=GLOB --vocab-size=N --out=FILE`.

Special ids (`data.tokenizer_vocab`):
  bert  the ids of the original GLM BERT models: [PAD]=0 is pad and eos, [CLS]=101, [MASK]=103,
        then <|startofpiece|>=30522, <|endofpiece|>=30523, [gMASK]=30524, [sMASK]=30525.
  gpt2  the ids of the original GLM-2B/10B: <|endoftext|>=50256 is pad and eos, then 50257.. as
        in reference GLM.md §1.2.
  ""    each role reuses a token the vocabulary already has (eos: <|endoftext|>, </s>, <eos>, [PAD],
        <pad>; cls: [CLS], <s>, <bos>; mask: [MASK], <mask>; the GLM names for the rest), else gets
        a new id after the vocabulary, in the order eos, cls, mask, smask, gmask, sop, eop.
        pad always equals eos, as in GLM.
New ids exist only in the padded embedding table: `encode` never produces them from text, so a
literal "[MASK]" in a corpus stays text; `decode` shows them by name.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from typing import Iterable, Sequence

import numpy as np

# A sentence ends at a token whose text contains one of these (reference GLM.md §1.3, §1.7).
SENTENCE_END_CHARS = ".?!;:\n。？！；…"
VOCAB_MULTIPLE = 128
TOKENIZERS = ("byte", "sentencepiece", "hf")
VOCAB_LAYOUTS = ("", "bert", "gpt2")


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
  """Ids of the GLM special tokens (reference GLM.md §1.2)."""
  pad: int
  eos: int
  cls: int
  mask: int
  smask: int
  gmask: int
  sop: int
  eop: int

  def as_dict(self) -> dict[str, int]:
    return dataclasses.asdict(self)


# The ids the original checkpoints were trained with (reference GLM.md §1.2, --task-mask).
BERT_SPECIALS = SpecialTokens(pad=0, eos=0, cls=101, mask=103, smask=30525, gmask=30524,
                              sop=30522, eop=30523)
GPT2_SPECIALS = SpecialTokens(pad=50256, eos=50256, cls=50259, mask=50260, smask=50264,
                              gmask=50263, sop=50257, eop=50258)

# Fixed layouts: tokens the base vocabulary must have, and the ids GLM added after it.
_FIXED_LAYOUTS = {
    "bert": (BERT_SPECIALS, {0: "[PAD]", 101: "[CLS]", 103: "[MASK]"},
             {30522: "<|startofpiece|>", 30523: "<|endofpiece|>", 30524: "[gMASK]",
              30525: "[sMASK]", 30526: "[dBLOCK]"}),
    "gpt2": (GPT2_SPECIALS, {50256: "<|endoftext|>"},
             {50257: "<|startofpiece|>", 50258: "<|endofpiece|>", 50259: "[CLS]", 50260: "[MASK]",
              50261: "[SEP]", 50262: "[UNK]", 50263: "[gMASK]", 50264: "[sMASK]",
              50265: "[dBLOCK]"}),
}
# For layout "": names reused from a vocabulary, per role; the first one names an appended token.
_ROLE_NAMES = {
    "eos": ("<|endoftext|>", "</s>", "<eos>", "[PAD]", "<pad>"),
    "cls": ("[CLS]", "<s>", "<bos>"),
    "mask": ("[MASK]", "<mask>"),
    "smask": ("[sMASK]",),
    "gmask": ("[gMASK]",),
    "sop": ("<|startofpiece|>",),
    "eop": ("<|endofpiece|>",),
}


def pad_vocab(size: int, multiple: int = VOCAB_MULTIPLE) -> int:
  return -(-size // multiple) * multiple


def assign_specials(base_tokens: Sequence[str], layout: str
                    ) -> tuple[SpecialTokens, dict[int, str]]:
  """GLM special ids for a vocabulary (token text per id), and the names of ids past it."""
  if layout in _FIXED_LAYOUTS:
    specials, required, added = _FIXED_LAYOUTS[layout]
    for token_id, name in {**required, **added}.items():
      present = base_tokens[token_id] if token_id < len(base_tokens) else None
      if (token_id in required or present is not None) and present != name:
        raise ValueError(
            f"data.tokenizer_vocab={layout!r} needs {name!r} at id {token_id}, but this "
            f"vocabulary ({len(base_tokens)} tokens) has {present!r} there. Use the original "
            f"{layout} vocabulary, or set data.tokenizer_vocab='' to append the GLM tokens.")
    return specials, {i: n for i, n in added.items() if i >= len(base_tokens)}
  if layout != "":
    raise ValueError(f"data.tokenizer_vocab={layout!r}: expected one of {VOCAB_LAYOUTS}")
  first_id = {}
  for token_id, text in enumerate(base_tokens):
    first_id.setdefault(text, token_id)
  ids, added, next_id = {}, {}, len(base_tokens)
  for role, names in _ROLE_NAMES.items():
    found = [first_id[n] for n in names if n in first_id]
    if found:
      ids[role] = found[0]
    else:
      ids[role], added[next_id] = next_id, names[0]
      next_id += 1
  return SpecialTokens(pad=ids["eos"], **ids), added


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

  def __init__(self):
    base = 256
    self.specials = SpecialTokens(pad=base, eos=base, cls=base + 1, mask=base + 2, smask=base + 3,
                                  gmask=base + 4, sop=base + 5, eop=base + 6)
    self.vocab_size = pad_vocab(base + 7)
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

  def _setup(self, base_tokens: Sequence[str], surfaces: Sequence[str], layout: str):
    self.base_vocab_size = len(base_tokens)
    self.specials, self.added_tokens = assign_specials(base_tokens, layout)
    largest = max([self.base_vocab_size - 1, *self.added_tokens, *self.specials.as_dict().values()])
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
    self._tokenizer = tokenizers.Tokenizer.from_file(path)
    self.name = f"hf:{os.path.basename(path)}"
    self.fingerprint = file_fingerprint(path)
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


def load_tokenizer(data_config):
  """The tokenizer named by data.tokenizer / tokenizer_path / tokenizer_vocab."""
  kind, path = data_config.tokenizer, data_config.tokenizer_path
  layout = data_config.tokenizer_vocab
  if kind not in TOKENIZERS:
    raise ValueError(f"data.tokenizer={kind!r}: expected one of {TOKENIZERS}")
  if layout not in VOCAB_LAYOUTS:
    raise ValueError(f"data.tokenizer_vocab={layout!r}: expected one of {VOCAB_LAYOUTS}")
  if kind == "byte":
    if layout:
      raise ValueError(f"data.tokenizer_vocab={layout!r} needs the {layout} vocabulary, but "
                       "data.tokenizer='byte' has its own; set data.tokenizer_vocab=''")
    return ByteTokenizer()
  wanted = "a SentencePiece .model file" if kind == "sentencepiece" else "a tokenizer.json"
  if not path:
    raise ValueError(f"data.tokenizer={kind!r} needs data.tokenizer_path: {wanted} "
                     f"(e.g. --config.data.tokenizer_path=/path/to/file)")
  if kind == "hf" and os.path.isdir(path):
    path = os.path.join(path, "tokenizer.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"data.tokenizer_path={path!r} does not exist; it should be {wanted}"
                            + (" (make one with python -m glmjax.data.tokenizers train)"
                               if kind == "sentencepiece" else ""))
  cls = SentencePieceTokenizer if kind == "sentencepiece" else HFTokenizer
  try:
    return cls(path, layout)
  except ValueError:
    raise  # ours: already names the field and the fix
  except Exception as error:  # noqa: BLE001 - the libraries raise bare Exception/RuntimeError
    first = (str(error).strip().splitlines() or [""])[0][:200]
    raise ValueError(f"data.tokenizer_path={path!r} cannot be read as {wanted} "
                     f"({type(error).__name__}: {first}); the file is damaged or of another "
                     "kind: check data.tokenizer and the file.") from error


def tokenizer_info(tokenizer) -> dict:
  """What identifies a tokenizer's ids: recorded by prepare, checked when shards are read."""
  return dict(name=tokenizer.name, fingerprint=tokenizer.fingerprint,
              vocab_size=int(tokenizer.vocab_size), specials=tokenizer.specials.as_dict())


if __name__ == "__main__":
  from glmjax.data import tokenizer_train
  tokenizer_train.main(sys.argv[1:])
