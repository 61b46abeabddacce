"""Tokenizers and the GLM special tokens.

The data pipeline needs from a tokenizer only `specials` (the GLM special ids), `vocab_size`
(padded to a multiple of 128) and `sentence_end` (a bool table over ids, used by [sMASK]).
"""
from __future__ import annotations

import dataclasses

import numpy as np

# A sentence ends at a token whose text contains one of these (reference GLM.md §1.3, §1.7).
SENTENCE_END_CHARS = ".?!;:\n。？！；…"
VOCAB_MULTIPLE = 128


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


def pad_vocab(size: int, multiple: int = VOCAB_MULTIPLE) -> int:
  return -(-size // multiple) * multiple


class ByteTokenizer:
  """UTF-8 bytes 0..255, then the GLM specials; no files needed.

  As in the original GLM, pad and eos share one id.
  """

  name = "byte"

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

  def decode(self, ids) -> str:
    ids = np.asarray(ids)
    return bytes(int(i) for i in ids if i < 256).decode("utf-8", errors="replace")
