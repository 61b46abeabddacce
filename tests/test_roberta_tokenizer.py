"""glm-roberta-large's tokenizer: RoBERTa's vocab.json + merges.txt, whose own <s>, </s> and
<mask> are GLM's [CLS], eos and [MASK] (the original's GPT2BPETokenizer given 'roberta'), with
only GLM's block tokens after its 50265 entries."""
import json
import logging
import os

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

import original_glm as og
from convert_sources import H, HEADS, L, MSL
from glmjax import convert, pretrained
from glmjax.data import released_tokenizers as rt
from glmjax.data import specials as specials_lib, tokenizers as tk
from test_released_tokenizers import MERGES, data_config

ROWS = 50304  # glm-roberta-large's embedding rows: 50265 + sop, eop, padded to 128


def write_roberta_files(folder, first="<s>", mask="<mask>", eos="</s>"):
  """RoBERTa's layout: <s>, <pad>, </s>, <unk>, the byte symbols, merged tokens, fillers and
  <mask>=50264; a merges.txt with the released file's #version header."""
  vocab = [first, "<pad>", eos, "<unk>"] + list(tk._bytes_to_unicode().values())
  vocab += ["".join(pair) for pair in MERGES]
  vocab += [f"tok{i}" for i in range(50264 - len(vocab))] + [mask]
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
    json.dump({token: i for i, token in enumerate(vocab)}, f, ensure_ascii=False)
  with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))
  return vocab


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("roberta")
  write_roberta_files(str(folder))
  return folder


@pytest.fixture(scope="module")
def roberta_vocab(roberta_dir):
  return write_roberta_files(str(roberta_dir))


def test_roberta_s_files_are_recognised_and_padded_to_glm_roberta_large_s_rows(roberta_dir):
  fields = rt.tokenizer_fields(str(roberta_dir))
  assert (fields["tokenizer"], fields["tokenizer_vocab"], fields["vocab_size"]) == (
      "bpe", "roberta", ROWS)
  assert [os.path.basename(f) for f in fields["files"]] == ["vocab.json", "merges.txt"]


def test_the_roberta_layout_gives_the_original_glm_special_ids(roberta_dir):
  tokenizer = tk.load_tokenizer(data_config("bpe", roberta_dir, "roberta"))
  specials = tokenizer.specials
  assert (specials.pad, specials.eos, specials.cls, specials.mask) == (2, 2, 0, 50264)
  assert (specials.sop, specials.eop, specials.gmask, specials.smask, specials.dblock) == (
      50265, 50266, 50267, 50268, 50269)
  assert tokenizer.decode([50265, 50266]) == "<|startofpiece|><|endofpiece|>"
  assert specials == specials_lib.ROBERTA_SPECIALS


def test_roberta_s_bpe_encodes_text_without_its_special_entries_and_decodes_back(roberta_dir,
                                                                                roberta_vocab):
  tokenizer = tk.load_tokenizer(data_config("bpe", roberta_dir, "roberta"))
  ids = tokenizer.encode("hello world </s> <mask>").tolist()
  assert ids[:2] == [roberta_vocab.index("hello"), roberta_vocab.index("Ġworld")]  # merged
  assert not {0, 1, 2, 3, 50264} & set(ids)  # typed names stay text, as GPT-2's do
  assert tokenizer.decode(ids) == "hello world </s> <mask>"


def test_a_bpe_vocabulary_starting_with_s_but_without_mask_is_refused_naming_mask(tmp_path):
  write_roberta_files(str(tmp_path / "broken"), mask="tokmask")
  with pytest.raises(ValueError, match=r"not the roberta vocabulary .*'tokmask' at id 50264, "
                                       r"where '<mask>' belongs"):
    rt.tokenizer_fields(str(tmp_path / "broken"))



def test_the_roberta_layout_s_block_tokens_decode_by_their_glm_names(roberta_dir):
  tokenizer = tk.load_tokenizer(data_config("bpe", roberta_dir, "roberta"))
  assert tokenizer.decode([50267, 50268, 50269]) == "[gMASK][sMASK][dBLOCK]"


def test_a_bpe_vocabulary_starting_with_s_but_without_its_eos_at_2_is_refused_naming_it(tmp_path):
  """</s> is GLM's pad and eos there: another token at 2 would end every document."""
  write_roberta_files(str(tmp_path / "broken"), eos="tokeos")
  with pytest.raises(ValueError, match=r"not the roberta vocabulary .*'tokeos' at id 2, "
                                       r"where '</s>' belongs"):
    rt.tokenizer_fields(str(tmp_path / "broken"))

def test_a_glm_roberta_large_import_keeps_its_tokenizer_and_says_nothing_of_its_rows(
    tmp_path, caplog):
  """The hub folder holds vocab.json and merges.txt beside config.json: the import takes them,
  and their padded size is the checkpoint's rows, so no other model's tokenizer is warned of."""
  weights = og.random_state_dict(ROWS, H, L, HEADS, MSL, seed=3)
  og.save_hf(str(tmp_path / "hf"), weights, og.hf_config(ROWS, H, L, HEADS, MSL), prefix=False,
             fmt="safetensors")
  write_roberta_files(str(tmp_path / "hf"))
  with caplog.at_level(logging.WARNING):
    convert.import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"))
  assert "tokenizer" not in caplog.text.lower(), caplog.text
  loaded = pretrained.load(str(tmp_path / "run"))
  assert loaded.config.data.tokenizer_vocab == "roberta"
  tokenizer = pretrained.load_tokenizer(loaded)
  assert (tokenizer.specials.eos, tokenizer.specials.cls, tokenizer.vocab_size) == (2, 0, ROWS)


def test_a_tokenizer_json_of_roberta_s_vocabulary_gets_the_roberta_ids(roberta_dir, tmp_path):
  """As the hub serves roberta-large's: its <s>, </s> and <mask> registered as special tokens."""
  tokenizer = Tokenizer(models.BPE.from_file(str(roberta_dir / "vocab.json"),
                                             str(roberta_dir / "merges.txt")))
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
  tokenizer.save(str(tmp_path / "tokenizer.json"))
  fields = rt.tokenizer_fields(str(tmp_path / "tokenizer.json"))
  assert (fields["tokenizer"], fields["tokenizer_vocab"], fields["vocab_size"]) == (
      "hf", "roberta", ROWS)


def test_roberta_s_files_given_the_gpt2_layout_are_refused_naming_the_roberta_one(roberta_dir):
  with pytest.raises(ValueError, match=r"needs '<\|endoftext\|>' at id 50256, .* Use the original "
                                       r"gpt2 vocabulary, data.tokenizer_vocab='roberta' \(its "
                                       r"tokens say so\), or set"):
    tk.load_tokenizer(data_config("bpe", roberta_dir, "gpt2"))
