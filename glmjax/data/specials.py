"""GLM's special tokens: their roles, the original's fixed ids per vocabulary layout, and the
rule that gives a new vocabulary its ids (see glmjax/data/tokenizers.py for the layouts)."""
from __future__ import annotations

import dataclasses
from typing import Sequence

VOCAB_MULTIPLE = 128
VOCAB_LAYOUTS = ("", "bert", "gpt2", "roberta", "chinese_sp")


class LayoutMismatchError(ValueError):
  """A vocabulary without a token where its layout's fixed ids need it. The message gives the
  fix for a config; a caller that read the layout from the files (convert import) words its own
  from the fields."""

  def __init__(self, layout: str, name: str, token_id: int, present: str | None, size: int,
               likely: str = ""):
    other = f"data.tokenizer_vocab={likely!r} (its tokens say so), " if likely else ""
    super().__init__(
        f"data.tokenizer_vocab={layout!r} needs {name!r} at id {token_id}, but this vocabulary "
        f"({size} tokens) has {present!r} there. Use the original {layout} vocabulary, "
        f"{other}or set data.tokenizer_vocab='' to append the GLM tokens.")
    self.layout, self.name, self.token_id, self.present = layout, name, token_id, present


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
  """Ids of the GLM special tokens."""
  pad: int
  eos: int
  cls: int
  mask: int
  smask: int
  gmask: int
  sop: int
  eop: int
  dblock: int  # [dBLOCK]: replaces masked-out inputs (data.block_mask_prob, context_mask_ratio)

  def as_dict(self) -> dict[str, int]:
    return dataclasses.asdict(self)


# The ids the original code gives (THUDM/GLM data_utils/tokenization.py: BertWordPieceTokenizer,
# GPT2BPETokenizer) with --block-lm --task-mask. GLM appends sop, eop, then gMASK, sMASK, then
# [dBLOCK] (--block-mask-prob > 0) after the base vocabulary. glm-base/large were trained without
# --task-mask: their [gMASK]/[sMASK] rows exist (30592 padded rows) but were never trained.
BERT_SPECIALS = SpecialTokens(pad=0, eos=0, cls=101, mask=103, smask=30525, gmask=30524,
                              sop=30522, eop=30523, dblock=30526)
GPT2_SPECIALS = SpecialTokens(pad=50256, eos=50256, cls=50259, mask=50260, smask=50264,
                              gmask=50263, sop=50257, eop=50258, dblock=50265)
# glm-roberta-large (GPT2BPETokenizer given 'roberta'): RoBERTa's own </s> is pad and eos, <s>
# is [CLS], <mask> is [MASK]; only sop, eop (and gMASK, sMASK, dBLOCK) come after its 50265.
ROBERTA_SPECIALS = SpecialTokens(pad=2, eos=2, cls=0, mask=50264, smask=50268, gmask=50267,
                                 sop=50265, eop=50266, dblock=50269)
CHINESE_SP_PIECES = 50000  # pieces of cog-pretrain.model, the Chinese GLMs' SentencePiece model

# Fixed layouts: tokens the base vocabulary must have, and the ids GLM added after it.
FIXED_LAYOUTS = {
    "bert": (BERT_SPECIALS, {0: "[PAD]", 101: "[CLS]", 103: "[MASK]"},
             {30522: "<|startofpiece|>", 30523: "<|endofpiece|>", 30524: "[gMASK]",
              30525: "[sMASK]", 30526: "[dBLOCK]"}),
    "gpt2": (GPT2_SPECIALS, {50256: "<|endoftext|>"},
             {50257: "<|startofpiece|>", 50258: "<|endofpiece|>", 50259: "[CLS]", 50260: "[MASK]",
              50261: "[SEP]", 50262: "[UNK]", 50263: "[gMASK]", 50264: "[sMASK]",
              50265: "[dBLOCK]"}),
    "roberta": (ROBERTA_SPECIALS, {0: "<s>", 2: "</s>", 50264: "<mask>"},
                {50265: "<|startofpiece|>", 50266: "<|endofpiece|>", 50267: "[gMASK]",
                 50268: "[sMASK]", 50269: "[dBLOCK]"}),
}


def _chinese_sp_layout(n: int) -> tuple[SpecialTokens, dict[int, str], dict[int, str]]:
  """ChineseSPTokenizer's ids after n pieces with --task-mask --fix-command-token (the ids of
  GLM-Large-Chinese and of both Hugging Face Chinese checkpoints); N+5 is never used.

  Without --fix-command-token the original gives [gMASK] the id of <|endofpiece|> (N+7) and
  [sMASK]=N+8, [dBLOCK]=N+9: GLM-10B-Chinese was trained so, with gMASK == eop. The Hugging Face
  conversion (THUDM/GLM scripts/convert_glm_checkpoint_to_transformers.py) copies its embedding
  row 50007 to 50009, so the released glm-10b-chinese has the distinct [gMASK]=N+9 used here.
  """
  names = {n: "<|endoftext|>", n + 1: "[SEP]", n + 2: "[CLS]", n + 3: "[MASK]", n + 4: "[UNK]",
           n + 6: "<|startofpiece|>", n + 7: "<|endofpiece|>", n + 8: "[sMASK]",
           n + 9: "[gMASK]", n + 10: "[dBLOCK]"}
  specials = SpecialTokens(pad=n, eos=n, cls=n + 2, mask=n + 3, smask=n + 8, gmask=n + 9,
                           sop=n + 6, eop=n + 7, dblock=n + 10)
  return specials, {}, names


CHINESE_SP_SPECIALS = _chinese_sp_layout(CHINESE_SP_PIECES)[0]

# For layout "": names reused from a vocabulary, per role; the first one names an appended token.
_ROLE_NAMES = {
    "eos": ("<|endoftext|>", "</s>", "<eos>", "[PAD]", "<pad>"),
    "cls": ("[CLS]", "<s>", "<bos>"),
    "mask": ("[MASK]", "<mask>"),
    "smask": ("[sMASK]",),
    "gmask": ("[gMASK]",),
    "sop": ("<|startofpiece|>",),
    "eop": ("<|endofpiece|>",),
    "dblock": ("[dBLOCK]",),
}


def pad_vocab(size: int, multiple: int = VOCAB_MULTIPLE) -> int:
  return -(-size // multiple) * multiple


def assign_specials(base_tokens: Sequence[str], layout: str
                    ) -> tuple[SpecialTokens, dict[int, str]]:
  """GLM special ids for a vocabulary (token text per id), and the names of ids past it."""
  fixed = (_chinese_sp_layout(len(base_tokens)) if layout == "chinese_sp"
           else FIXED_LAYOUTS.get(layout))
  if fixed:
    specials, required, added = fixed
    for token_id, name in {**required, **added}.items():
      present = base_tokens[token_id] if token_id < len(base_tokens) else None
      if (token_id in required or present is not None) and present != name:
        likely = [other for other, (_, needs, _) in FIXED_LAYOUTS.items() if other != layout
                  and all(i < len(base_tokens) and base_tokens[i] == n for i, n in needs.items())]
        raise LayoutMismatchError(layout, name, token_id, present, len(base_tokens),
                                  likely[0] if likely else "")
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
