"""Tokenizers: round trips, GLM special ids (BERT / GPT-2 / appended), sentence-end tables."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tokenizers as hf
from tokenizers import decoders, models, pre_tokenizers

from glmjax import config as glm_config
from glmjax.data import builtin_corpus
from glmjax.data import tokenizers as tk

TEXT = "Grüße aus Köln! 世界, ok.\n\nNew paragraph; with:  spaces\tand tabs?"


def data_config(**overrides):
  config = glm_config.data_defaults()
  config.source = "builtin"
  config.update(overrides)
  return config


def bert_vocab() -> list[str]:
  """30522 entries with the BERT-uncased special tokens at their real ids."""
  words = "the cat sat on a mat it was warm . , ! ? ##s ##ed".split()
  vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  vocab += words + list("abcdefghijklmnopqrstuvwxyz")
  vocab += [f"w{i}" for i in range(30522 - len(vocab))]
  return vocab


def gpt2_vocab() -> list[str]:
  """Byte-level BPE layout: 256 byte symbols, merged tokens, <|endoftext|> at 50256."""
  byte_symbols = list(tk._bytes_to_unicode().values())
  merged = ["Ġ.", "ĊĊ", "ãĢĤ", "Ġhello"]
  fillers = [f"tok{i}" for i in range(50256 - len(byte_symbols) - len(merged))]
  return byte_symbols + merged + fillers + ["<|endoftext|>"]


def test_byte_tokenizer_round_trip_and_layout():
  tok = tk.load_tokenizer(data_config(tokenizer="byte"))
  assert tok.decode(tok.encode(TEXT)) == TEXT
  # The byte layout is the append rule applied to 256 unnamed byte entries.
  specials, added = tk.assign_specials([chr(b) for b in range(256)], "")
  assert specials == tok.specials and tok.vocab_size == 384
  ends = tok.sentence_end
  assert ends[ord(".")] and ends[ord("\n")] and not ends[ord("a")]
  assert [len(ids) for ids in tok.encode_batch(["ab", "é"])] == [2, 2]


def test_bert_layout_uses_original_ids():
  specials, added = tk.assign_specials(bert_vocab(), "bert")
  assert specials == tk.BERT_SPECIALS
  assert added[30522] == "<|startofpiece|>" and added[30525] == "[sMASK]"


def test_gpt2_layout_uses_original_ids():
  specials, added = tk.assign_specials(gpt2_vocab(), "gpt2")
  assert specials == tk.GPT2_SPECIALS
  assert added[50263] == "[gMASK]" and added[50264] == "[sMASK]"


def test_fixed_layout_rejects_another_vocabulary():
  vocab = bert_vocab()
  vocab[101], vocab[102] = vocab[102], vocab[101]
  with pytest.raises(ValueError, match=r"tokenizer_vocab='bert'.*\[CLS\].*101"):
    tk.assign_specials(vocab, "bert")
  with pytest.raises(ValueError, match="tokenizer_vocab='gpt2'"):
    tk.assign_specials(bert_vocab(), "gpt2")


def test_append_rule_reuses_existing_tokens_then_appends_in_order():
  vocab = ["<pad>", "</s>", "<s>", "<unk>", "<mask>", "a", "b"]
  specials, added = tk.assign_specials(vocab, "")
  assert (specials.eos, specials.pad, specials.cls, specials.mask) == (1, 1, 2, 4)
  assert (specials.smask, specials.gmask, specials.sop, specials.eop) == (7, 8, 9, 10)
  assert added == {7: "[sMASK]", 8: "[gMASK]", 9: "<|startofpiece|>", 10: "<|endofpiece|>",
                   11: "[dBLOCK]"}
  specials, _ = tk.assign_specials(["[PAD]", "[CLS]", "[MASK]", "x"], "")
  assert (specials.eos, specials.cls, specials.mask, specials.smask) == (0, 1, 2, 4)


def test_hf_wordpiece_with_bert_ids(tmp_path):
  vocab = bert_vocab()
  tokenizer = hf.Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tokenizer.decoder = decoders.WordPiece()
  path = tmp_path / "tokenizer.json"
  tokenizer.save(str(path))
  tok = tk.load_tokenizer(data_config(tokenizer="hf", tokenizer_path=str(tmp_path),
                                      tokenizer_vocab="bert"))
  assert tok.specials == tk.BERT_SPECIALS and tok.vocab_size == 30592
  text = "the cat sat on a mat. it was warm!"
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and tok.decode(ids) == text
  assert tok.sentence_end[vocab.index(".")] and tok.sentence_end[vocab.index("!")]
  assert not tok.sentence_end[vocab.index("cat")] and not tok.sentence_end[101]
  assert tok.decode([tok.specials.sop]) == "<|startofpiece|>"
  assert tok.decode(list(ids) + [30590]) == text  # padding ids decode to nothing


def test_hf_byte_level_bpe_with_gpt2_ids(tmp_path):
  vocab = gpt2_vocab()
  tokenizer = hf.Tokenizer(models.BPE({t: i for i, t in enumerate(vocab)}, merges=[]))
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  path = tmp_path / "gpt2.json"
  tokenizer.save(str(path))
  tok = tk.load_tokenizer(data_config(tokenizer="hf", tokenizer_path=str(path),
                                      tokenizer_vocab="gpt2"))
  assert tok.specials == tk.GPT2_SPECIALS and tok.vocab_size == 50304
  assert tok.decode(tok.encode(TEXT)) == TEXT
  table, index = tok.sentence_end, vocab.index
  assert table[index("Ġ.")] and table[index("ĊĊ")] and table[index("Ċ")] and table[index("ãĢĤ")]
  assert not table[index("Ġhello")] and not table[index("ã")]  # a lone byte of "。" ends nothing
  assert not table[50256] and not table[tok.specials.smask]


def test_sentencepiece_trained_by_the_cli(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n\n".join(builtin_corpus.documents(0, 200)), encoding="utf-8")
  model = tmp_path / "spm.model"
  subprocess.run([sys.executable, "-m", "glmjax.data.tokenizers", "train",
                  f"--input={tmp_path}/*.txt", "--vocab-size=500", f"--out={model}"],
                 check=True, capture_output=True)
  tok = tk.load_tokenizer(data_config(tokenizer="sentencepiece", tokenizer_path=str(model)))
  assert tok.decode(tok.encode(TEXT)) == TEXT
  assert len(tok.encode("Marel Elven was born in Rosham.")) < 20  # pieces, not bytes
  # </s> and <s> exist in the model and are reused; the other roles come after its pieces.
  assert tok.specials.eos == tok.specials.pad == 2 and tok.specials.cls == 1
  assert tok.specials.mask == tok.base_vocab_size and tok.vocab_size % 128 == 0
  ends = {tok._model.id_to_piece(int(i)) for i in np.flatnonzero(tok.sentence_end)}
  assert "." in ends and "\n" in ends and all(any(c in p or p.startswith("<0x") for c in ".?!;:\n")
                                              for p in ends)


@pytest.mark.parametrize("args, message", [
    (["--input={tmp}/nothing/*.jsonl.gz", "--vocab-size=500"],
     r"^--input: '.*nothing/\*.jsonl.gz' matches no file"),
    (["--input={tmp}/*.txt", "--vocab-size=20"],
     r"^--vocab-size=20 is smaller than the \d+ characters and pieces this text needs; "
     r"raise --vocab-size \(traceback in "),
])
def test_the_tokenizer_trainer_reports_a_mistake_in_one_line(tmp_path, args, message):
  (tmp_path / "corpus.txt").write_text("\n\n".join(builtin_corpus.documents(0, 20)),
                                       encoding="utf-8")
  result = subprocess.run([sys.executable, "-m", "glmjax.data.tokenizers", "train",
                           *(a.format(tmp=tmp_path) for a in args), f"--out={tmp_path}/m.model"],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "TMPDIR": str(tmp_path)})  # the traceback file
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
  assert re.search(message, lines[0].split(" ", 1)[1]), lines[0]
  assert not (tmp_path / "m.model").exists()


def test_the_tokenizer_trainer_takes_no_prefix_of_a_flag_for_the_flag(tmp_path):
  result = subprocess.run([sys.executable, "-m", "glmjax.data.tokenizers", "train",
                           f"--input={tmp_path}/*.txt", "--vocab=500", f"--out={tmp_path}/m.model"],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1].endswith(
      "error: the following arguments are required: --vocab-size")


def test_token_surface_turns_tokenizer_markers_into_text():
  assert tk.token_surface("Ġ.", byte_level=True) == " ."
  assert tk.token_surface("Ċ", byte_level=True) == "\n"
  assert tk.token_surface("<0x0A>") == "\n" and tk.token_surface("<0xE3>") == ""
  assert tk.token_surface("▁end.") == " end." and tk.token_surface("##!") == "!"


def test_the_byte_tokenizer_refuses_a_path_and_an_imports_placeholder():
  # Either would otherwise feed byte ids to a model trained on another vocabulary.
  with pytest.raises(ValueError, match=r"data.tokenizer='byte' reads no file.*vocab.json"):
    tk.load_tokenizer(data_config(tokenizer="byte", tokenizer_path="vocab.json"))
  with pytest.raises(ValueError, match=r"imported without its tokenizer.*--tokenizer=PATH"):
    tk.load_tokenizer(data_config(tokenizer="byte", tokenizer_path=tk.NO_TOKENIZER))
  assert tk.load_tokenizer(data_config(tokenizer="byte", tokenizer_path="")).vocab_size > 256


def test_load_tokenizer_errors_name_the_field(tmp_path):
  with pytest.raises(ValueError, match="data.tokenizer_path"):
    tk.load_tokenizer(data_config(tokenizer="hf"))
  with pytest.raises(FileNotFoundError, match="data.tokenizer_path"):
    tk.load_tokenizer(data_config(tokenizer="sentencepiece", tokenizer_path=str(tmp_path / "x")))
  with pytest.raises(ValueError, match="data.tokenizer="):
    tk.load_tokenizer(data_config(tokenizer="wordpiece"))
  with pytest.raises(ValueError, match="tokenizer_vocab"):
    tk.load_tokenizer(data_config(tokenizer="byte", tokenizer_vocab="bert"))


@pytest.mark.parametrize("kind, name", [("hf", "tokenizer.json"), ("sentencepiece", "sp.model")])
def test_a_damaged_tokenizer_file_is_one_line_naming_it(tmp_path, kind, name):
  path = tmp_path / name
  path.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 8)
  with pytest.raises(ValueError, match=rf"data.tokenizer_path='{path}' cannot be read as .*"
                                       r"damaged or of another kind") as error:
    tk.load_tokenizer(data_config(tokenizer=kind, tokenizer_path=str(path)))
  assert "\n" not in str(error.value)


# The characters the original's contains_sentence_end looks for in a token's text (THUDM/GLM
# blocklm_utils.py): '.', '?', '!', ';', ':', '。', '？', '！', '；', '…' and '\n'.
ORIGINAL_SENTENCE_ENDS = [".", "?", "!", ";", ":", "。", "？", "！", "；", "…", "\n"]


def test_a_token_ends_a_sentence_when_its_text_holds_a_character_the_original_looks_for(tmp_path):
  others = [",", "a", "-", "、", "，", "：", ")", "'", "word"]
  tokens = (ORIGINAL_SENTENCE_ENDS + [f"x{c}y" for c in ORIGINAL_SENTENCE_ENDS] + others
            + ["<unk>"])
  tokenizer = hf.Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)},
                                            unk_token="<unk>"))
  tokenizer.save(str(tmp_path / "tokenizer.json"))
  tok = tk.load_tokenizer(data_config(tokenizer="hf", tokenizer_path=str(tmp_path)))
  table = tok.sentence_end
  assert [t for i, t in enumerate(tokens) if table[i]] == tokens[:2 * len(ORIGINAL_SENTENCE_ENDS)]
  # The byte tokenizer: every one-byte character of the list, and no other byte.
  byte_ends = tk.ByteTokenizer().sentence_end
  assert {chr(b) for b in np.flatnonzero(byte_ends[:256])} == {
      c for c in ORIGINAL_SENTENCE_ENDS if len(c.encode()) == 1}
