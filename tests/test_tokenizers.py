"""Tokenizers: round trips, GLM special ids (BERT / GPT-2 / appended), sentence-end tables."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tokenizers as hf
from sentencepiece import sentencepiece_model_pb2
from tokenizers import decoders, models, pre_tokenizers

from glmjax import config as glm_config
from glmjax.data import builtin_corpus
from glmjax.data import tokenizer_train
from glmjax.data import specials as specials_lib, tokenizers as tk

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
  specials, added = specials_lib.assign_specials([chr(b) for b in range(256)], "")
  assert specials == tok.specials and tok.vocab_size == 384
  ends = tok.sentence_end
  assert ends[ord(".")] and ends[ord("\n")] and not ends[ord("a")]
  assert [len(ids) for ids in tok.encode_batch(["ab", "é"])] == [2, 2]


def test_a_token_text_listed_twice_gives_its_role_the_first_id():
  # A merged vocabulary can list a text twice: the role keeps the first id, not the last.
  specials, _ = specials_lib.assign_specials(["[PAD]", "[CLS]", "x", "[CLS]", "[PAD]"], "")
  assert (specials.cls, specials.pad) == (1, 0)


def test_bert_layout_uses_original_ids():
  specials, added = specials_lib.assign_specials(bert_vocab(), "bert")
  assert specials == specials_lib.BERT_SPECIALS
  assert added[30522] == "<|startofpiece|>" and added[30525] == "[sMASK]"


def test_gpt2_layout_uses_original_ids():
  specials, added = specials_lib.assign_specials(gpt2_vocab(), "gpt2")
  assert specials == specials_lib.GPT2_SPECIALS
  assert added[50263] == "[gMASK]" and added[50264] == "[sMASK]"


def test_fixed_layout_rejects_another_vocabulary():
  vocab = bert_vocab()
  vocab[101], vocab[102] = vocab[102], vocab[101]
  with pytest.raises(ValueError, match=r"tokenizer_vocab='bert'.*\[CLS\].*101"):
    specials_lib.assign_specials(vocab, "bert")
  with pytest.raises(ValueError, match="tokenizer_vocab='gpt2'"):
    specials_lib.assign_specials(bert_vocab(), "gpt2")
  # Each of the layout's own tokens is checked: a word at 103 would make every blank a word.
  for index, name in ((103, r"\[MASK\]"), (0, r"\[PAD\]")):
    vocab = bert_vocab()
    vocab[index] = "foo"
    with pytest.raises(ValueError, match=rf"tokenizer_vocab='bert'.*{name}.*{index}"):
      specials_lib.assign_specials(vocab, "bert")


def test_append_rule_reuses_existing_tokens_then_appends_in_order():
  vocab = ["<pad>", "</s>", "<s>", "<unk>", "<mask>", "a", "b"]
  specials, added = specials_lib.assign_specials(vocab, "")
  assert (specials.eos, specials.pad, specials.cls, specials.mask) == (1, 1, 2, 4)
  assert (specials.smask, specials.gmask, specials.sop, specials.eop) == (7, 8, 9, 10)
  assert added == {7: "[sMASK]", 8: "[gMASK]", 9: "<|startofpiece|>", 10: "<|endofpiece|>",
                   11: "[dBLOCK]"}
  specials, _ = specials_lib.assign_specials(["[PAD]", "[CLS]", "[MASK]", "x"], "")
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
  assert tok.specials == specials_lib.BERT_SPECIALS and tok.vocab_size == 30592
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
  assert tok.specials == specials_lib.GPT2_SPECIALS and tok.vocab_size == 50304
  assert tok.decode(tok.encode(TEXT)) == TEXT
  table, index = tok.sentence_end, vocab.index
  assert table[index("Ġ.")] and table[index("ĊĊ")] and table[index("Ċ")] and table[index("ãĢĤ")]
  assert not table[index("Ġhello")] and not table[index("ã")]  # a lone byte of "。" ends nothing
  assert not table[50256] and not table[tok.specials.smask]


def test_sentencepiece_trained_by_the_cli(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n\n".join(builtin_corpus.documents(0, 200)), encoding="utf-8")
  model = tmp_path / "spm.model"
  # --vocab-size: the first spelling of --vocab_size, kept for the command lines that have it.
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
    (["--input={tmp}/nothing/*.jsonl.gz", "--vocab_size=500"],
     r"^--input: '.*nothing/\*.jsonl.gz' matches no file"),
    (["--input={tmp}/*.txt", "--vocab_size=20"],
     r"^--vocab_size=20 is smaller than the \d+ characters and pieces this text needs; "
     r"raise --vocab_size \(traceback in "),
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
      "error: the following arguments are required: --vocab_size/--vocab-size")


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


# The names the original gives GLM's tokens (THUDM/GLM data_utils/tokenization.py), per role.
GLM_NAMES = dict(sop="<|startofpiece|>", eop="<|endofpiece|>", gmask="[gMASK]", smask="[sMASK]",
                 dblock="[dBLOCK]")


@pytest.mark.parametrize("layout", ["bert", "gpt2", "chinese_sp"])
def test_every_special_id_holds_the_token_named_for_its_role(layout):
  # A [gMASK] id shown as "[sMASK]" would mislabel every generation prompt that decode prints.
  vocab = {"bert": bert_vocab, "gpt2": gpt2_vocab,
           "chinese_sp": lambda: [f"p{i}" for i in range(200)]}[layout]()
  specials, added = specials_lib.assign_specials(vocab, layout)
  names = {**dict(enumerate(vocab)), **added}
  eos = "[PAD]" if layout == "bert" else "<|endoftext|>"
  assert {role: names[getattr(specials, role)] for role in [*GLM_NAMES, "cls", "mask", "eos"]
          } == {**GLM_NAMES, "cls": "[CLS]", "mask": "[MASK]", "eos": eos}


@pytest.mark.parametrize("layout, vocab, slot", [
    ("bert", lambda: bert_vocab() + ["w_extra"], 30522),
    ("gpt2", lambda: gpt2_vocab() + ["tok_extra"], 50257),
], ids=["bert", "gpt2"])
def test_a_fixed_layout_refuses_a_vocabulary_with_its_own_token_where_glm_puts_one(layout, vocab,
                                                                                   slot):
  # A vocabulary one token longer than the original's would have GLM's sop share a word's id.
  with pytest.raises(ValueError, match=rf"needs '<\|startofpiece\|>' at id {slot}.*'\w+_extra'"):
    specials_lib.assign_specials(vocab(), layout)
  # The same vocabulary already holding GLM's tokens at GLM's ids is the original's: accepted.
  specials, added = specials_lib.assign_specials(vocab()[:-1] + ["<|startofpiece|>"], layout)
  assert specials.sop == slot and slot not in added


def test_the_vocabulary_is_padded_to_the_next_multiple_of_128_and_no_further(tmp_path):
  assert [specials_lib.pad_vocab(n) for n in (1, 127, 128, 129, 256, 30527)] == [128, 128, 128, 256, 256,
                                                                        30592]
  # 120 words without any GLM name: the 8 GLM tokens are appended at 120..127, exactly 128 ids.
  words = [f"word{i}" for i in range(119)] + ["<unk>"]
  tokenizer = hf.Tokenizer(models.WordLevel({t: i for i, t in enumerate(words)},
                                            unk_token="<unk>"))
  tokenizer.save(str(tmp_path / "tokenizer.json"))
  tok = tk.load_tokenizer(data_config(tokenizer="hf", tokenizer_path=str(tmp_path)))
  assert tok.specials.eos == 120 and tok.specials.dblock == 127
  assert (tok.ids_used, tok.vocab_size) == (128, 128)
  # 128 words (as 32000 would be): the GLM tokens go to 128..135, so the table is 256 rows.
  words = [f"word{i}" for i in range(127)] + ["<unk>"]
  tokenizer = hf.Tokenizer(models.WordLevel({t: i for i, t in enumerate(words)},
                                            unk_token="<unk>"))
  tokenizer.save(str(tmp_path / "tokenizer.json"))
  tok = tk.load_tokenizer(data_config(tokenizer="hf", tokenizer_path=str(tmp_path)))
  assert (tok.ids_used, tok.vocab_size) == (136, 256)
  assert max(tok.specials.as_dict().values()) == 135


def test_glm_s_tokens_go_after_a_tokenizer_json_s_added_tokens_never_onto_them(tmp_path):
  # Ids 0-3 are words, 4 a token added to the file (as a code model adds "<code>"): GLM's
  # tokens start at 5, and "<code>" in text stays that word, never an eos.
  words = ["<unk>", "hello", "world", "x"]
  tokenizer = hf.Tokenizer(models.WordLevel({t: i for i, t in enumerate(words)},
                                            unk_token="<unk>"))
  tokenizer.pre_tokenizer = hf.pre_tokenizers.WhitespaceSplit()
  tokenizer.add_tokens(["<code>"])
  tokenizer.save(str(tmp_path / "tokenizer.json"))
  tok = tk.load_tokenizer(data_config(tokenizer="hf", tokenizer_path=str(tmp_path)))
  assert min(tok.specials.as_dict().values()) == 5
  assert tok.encode("hello <code> world").tolist() == [1, 4, 2]
  # A GLM name the file holds as an added token is that role's id, as in its vocabulary.
  tokenizer.add_special_tokens(["[MASK]"])  # id 5
  tokenizer.save(str(tmp_path / "tokenizer.json"))
  tok = tk.load_tokenizer(data_config(tokenizer="hf", tokenizer_path=str(tmp_path)))
  assert tok.specials.mask == 5


def test_a_folder_holding_two_sentencepiece_models_is_refused_rather_than_one_picked(tmp_path):
  (tmp_path / "a.model").write_bytes(b"x")
  (tmp_path / "b.model").write_bytes(b"x")
  with pytest.raises(ValueError, match=r"holds 2 \.model files; point it at the one to use"):
    tk.load_tokenizer(data_config(tokenizer="sentencepiece", tokenizer_path=str(tmp_path)))


def test_a_vocab_txt_without_unk_is_refused_naming_the_line(tmp_path):
  (tmp_path / "vocab.txt").write_text("[PAD]\nthe\ncat\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"vocab\.txt.* has no \[UNK\] line"):
    tk.load_tokenizer(data_config(tokenizer="wordpiece", tokenizer_path=str(tmp_path),
                                  tokenizer_vocab=""))


def test_a_word_longer_than_100_characters_is_one_unk_as_in_bert(tmp_path):
  # BERT's (and the original GLM's) WordpieceTokenizer: max_input_chars_per_word=100.
  (tmp_path / "vocab.txt").write_text("[UNK]\na\n##a\n", encoding="utf-8")
  tok = tk.load_tokenizer(data_config(tokenizer="wordpiece", tokenizer_path=str(tmp_path),
                                      tokenizer_vocab=""))
  assert tok.encode("a" * 100).tolist() == [1] + [2] * 99
  assert tok.encode("a" * 101).tolist() == [0]


def test_the_byte_tokenizer_decodes_text_among_its_special_and_padding_ids():
  # Generated ids hold eos (256, the first id past the bytes) and any other GLM id: not text.
  tok = tk.ByteTokenizer()
  ids = tok.encode(TEXT).tolist()
  ids = [*tok.specials.as_dict().values(), *ids[:5], 256, *ids[5:], tok.vocab_size - 1]
  assert tok.decode(ids) == TEXT


def test_the_tokenizer_trainer_cuts_a_long_line_into_pieces_that_keep_every_character(tmp_path):
  line = "".join(chr(ord("a") + i % 26) for i in range(9001))
  (tmp_path / "long.txt").write_text(f"{line}\nshort\n", encoding="utf-8")
  pieces = list(tokenizer_train.training_lines([str(tmp_path / "long.txt")], "text",
                                               "paragraphs"))
  assert [len(p) for p in pieces] == [4000, 4000, 1001, 5]  # SentencePiece skips longer lines
  assert "".join(pieces) == line + "short"
  # Indentation and trailing spaces are text too (code, verse): the lines keep them.
  (tmp_path / "code.txt").write_text("def f():\n    x = 1  \n", encoding="utf-8")
  assert list(tokenizer_train.training_lines([str(tmp_path / "code.txt")], "text",
                                             "paragraphs")) == ["def f():", "    x = 1  "]


def _trained(tmp_path, *flags):
  """The ModelProto that `python -m glmjax.data.tokenizers train` writes for 20 documents."""
  (tmp_path / "corpus.txt").write_text("\n\n".join(builtin_corpus.documents(0, 20)),
                                       encoding="utf-8")
  out = tmp_path / "new" / "folder" / "m.model"  # folders the trainer must make
  tokenizer_train.main(["train", f"--input={tmp_path}/corpus.txt", *flags, f"--out={out}"])
  model = sentencepiece_model_pb2.ModelProto()
  model.ParseFromString(out.read_bytes())
  return model


def test_the_tokenizer_trainer_trains_the_model_type_on_the_lines_it_was_asked_for(tmp_path):
  model = _trained(tmp_path, "--vocab-size=500", "--model-type=bpe", "--max-lines=150")
  assert model.trainer_spec.model_type == model.trainer_spec.BPE
  assert model.trainer_spec.input_sentence_size == 150
  assert model.trainer_spec.shuffle_input_sentence  # 150 lines drawn from all, not the first
  assert len(model.pieces) == 500


def test_a_vocabulary_larger_than_the_text_fills_is_an_upper_bound_not_a_refusal(tmp_path):
  # --vocab-size is documented as an upper bound: a small corpus gets the pieces it has.
  model = _trained(tmp_path, "--vocab-size=5000")
  assert model.trainer_spec.model_type == model.trainer_spec.UNIGRAM
  assert 300 < len(model.pieces) < 5000


def test_a_vocabulary_without_glm_s_tokens_gets_them_appended_under_glm_s_names():
  # What decode shows for each appended id: the names the original GLM tokenizers give them.
  _, added = specials_lib.assign_specials(["a", "b"], "")
  assert added == {2: "<|endoftext|>", 3: "[CLS]", 4: "[MASK]", 5: "[sMASK]", 6: "[gMASK]",
                   7: "<|startofpiece|>", 8: "<|endofpiece|>", 9: "[dBLOCK]"}


def test_a_tokenizer_file_s_fingerprint_reads_the_whole_file(tmp_path):
  # GPT-2's vocab.json and hub tokenizer.json files run to megabytes: a change past the first
  # read block must change the fingerprint that resume, init_from and prepared shards compare.
  body = b"x" * (1 << 20)
  (tmp_path / "a.json").write_bytes(body + b"a")
  (tmp_path / "b.json").write_bytes(body + b"b")
  assert tk.file_fingerprint(str(tmp_path / "a.json")) != tk.file_fingerprint(
      str(tmp_path / "b.json"))
