"""The tokenizer files of the released GLM checkpoints: GLM's special ids where the original code
puts them, text round trips, detection of the format, and one-line errors."""
import io
import json
import os
import types

import pytest
import sentencepiece as spm
import tokenizers as hf
from tokenizers import decoders, models, pre_tokenizers

from glmjax import config as config_lib
from glmjax import recipes
from glmjax.data import builtin_corpus
from glmjax.data import released_tokenizers as rt
from glmjax.data import specials as specials_lib, tokenizers as tk

# BERT-uncased layout: [PAD]=0, [unused*], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103, words.
WORDS = ["the", "cat", "sat", "on", "a", "mat", "it", "was", "warm", "hello", ".", "!", "[", "]",
         "mask", "##s"]
WORD_ID = {w: 104 + i for i, w in enumerate(WORDS)}
# GPT-2 merges that build "hello" and "Ġworld" (Ġ is the byte-level space).
MERGES = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("Ġ", "w"), ("o", "r"),
          ("Ġw", "or"), ("l", "d"), ("Ġwor", "ld")]
CHINESE = ["你好，世界。", "今天天气很好。", "我们在学习语言模型。", "Hello world, 你好!"] * 20
SENTENCES = CHINESE + list(builtin_corpus.documents(0, 40))


def data_config(kind, path, layout):
  config = config_lib.data_defaults()
  config.update(tokenizer=kind, tokenizer_path=str(path), tokenizer_vocab=layout)
  return config


def write_bert_vocab(folder, name="vocab.txt", cls="[CLS]"):
  vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", cls, "[SEP]", "[MASK]"]
  vocab += WORDS + [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in WORDS]
  vocab += [f"w{i}" for i in range(30522 - len(vocab))]
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, name)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(vocab) + "\n")
  return path


def write_gpt2_files(folder, prefix=""):
  """50257 entries: the 256 byte symbols at their byte values, the merged tokens, fillers, and
  <|endoftext|>=50256; a merges.txt with the #version header of the released file."""
  vocab = list(tk._bytes_to_unicode().values()) + ["".join(pair) for pair in MERGES]
  vocab += [f"tok{i}" for i in range(50256 - len(vocab))] + ["<|endoftext|>"]
  os.makedirs(folder, exist_ok=True)
  vocab_path = os.path.join(folder, f"{prefix}vocab.json")
  with open(vocab_path, "w", encoding="utf-8") as f:
    json.dump({token: i for i, token in enumerate(vocab)}, f, ensure_ascii=False)
  with open(os.path.join(folder, f"{prefix}merges.txt"), "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))
  return vocab, vocab_path


def write_sentencepiece(path, **options):
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(options.pop("sentences", SENTENCES)),
                                 model_writer=model, minloglevel=2, **options)
  path.write_bytes(model.getvalue())
  return path


@pytest.fixture(scope="module")
def small_sp(tmp_path_factory):
  """A SentencePiece model of 200 pieces, to check the chinese_sp ids relative to N."""
  path = tmp_path_factory.mktemp("sp") / "small.model"
  return write_sentencepiece(path, vocab_size=200, model_type="bpe", character_coverage=1.0)


@pytest.fixture(scope="module")
def released(tmp_path_factory, small_sp):
  """Tokenizer files as they are downloaded: in their folders, or under the original GLM names."""
  root = tmp_path_factory.mktemp("released")
  write_bert_vocab(str(root / "bert"))
  write_bert_vocab(str(root / "named"), name="bert-large-uncased-vocab.txt")
  write_gpt2_files(str(root / "gpt2"))
  write_gpt2_files(str(root / "named"), prefix="gpt2-")
  (root / "sp").mkdir()
  (root / "sp" / "small.model").write_bytes(small_sp.read_bytes())
  (root / "hf").mkdir()
  hf.Tokenizer(models.WordLevel({"a": 0, "b": 1, "<unk>": 2}, unk_token="<unk>")).save(
      str(root / "hf" / "tokenizer.json"))
  return root


@pytest.fixture(scope="module")
def bert_dir(released):
  return released / "bert"


@pytest.fixture(scope="module")
def hub_bert_json(bert_dir, tmp_path_factory):
  """A tokenizer.json as the hub serves bert-base-uncased's: its special tokens registered as
  added tokens, which a `tokenizers.Tokenizer` matches in text unless told not to, and its
  post-processor, which wraps every encoded text in [CLS] ... [SEP] unless told not to."""
  model = models.WordPiece.from_file(str(bert_dir / "vocab.txt"), unk_token="[UNK]")
  tokenizer = hf.Tokenizer(model)
  tokenizer.normalizer = hf.normalizers.BertNormalizer(lowercase=True)
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tokenizer.decoder = decoders.WordPiece(prefix="##")
  tokenizer.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
  tokenizer.post_processor = hf.processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", 101), ("[SEP]", 102)])
  path = tmp_path_factory.mktemp("hub_bert") / "tokenizer.json"
  tokenizer.save(str(path))
  return path


def test_a_hub_tokenizer_json_encodes_a_document_without_its_cls_and_sep_template(hub_bert_json):
  """The pipeline puts a document between its own [CLS] and eos: the tokenizer gives only the
  document's word pieces, one by one and in batches (as sources and prepare encode)."""
  tok = tk.load_tokenizer(data_config("hf", hub_bert_json, "bert"))
  words = "the cat ##s sat on a mat . it was warm !".split()
  expected = [WORD_ID[w] for w in words]
  text = "The cats sat on a mat. It was warm!"
  assert tok.encode(text).tolist() == expected
  assert [ids.tolist() for ids in tok.encode_batch([text, "hello"])] == [expected,
                                                                         [WORD_ID["hello"]]]
  assert tok._tokenizer.encode(text).ids == [101, *expected, 102]  # the template is there


@pytest.fixture(scope="module")
def gpt2_dir(released):
  return released / "gpt2"


def test_a_bert_vocab_txt_gives_the_original_glm_special_ids(bert_dir):
  tok = tk.load_tokenizer(data_config("wordpiece", bert_dir, "bert"))
  assert tok.specials.as_dict() == dict(pad=0, eos=0, cls=101, mask=103, sop=30522, eop=30523,
                                        gmask=30524, smask=30525, dblock=30526)
  assert tok.vocab_size == 30592  # 30522 + 5 GLM tokens, padded to 128 as the original
  assert tok.decode([30522, 30523, 30524, 30525, 30526]) == (
      "<|startofpiece|><|endofpiece|>[gMASK][sMASK][dBLOCK]")


def test_a_bert_vocab_txt_encodes_uncased_word_pieces_and_decodes_back(bert_dir):
  tok = tk.load_tokenizer(data_config("wordpiece", bert_dir / "vocab.txt", "bert"))
  ids = tok.encode("The CATS sat on a mat. It was warm! Héllo")
  words = "the cat ##s sat on a mat . it was warm ! hello".split()
  assert ids.tolist() == [WORD_ID[w] for w in words]  # no [CLS]/[SEP] around the text
  assert tok.decode(ids) == "the cats sat on a mat. it was warm! hello"
  assert tok.sentence_end[WORD_ID["."]] and not tok.sentence_end[WORD_ID["cat"]]


def test_a_bert_vocab_txt_splits_text_as_bert_s_basic_tokenizer_does(bert_dir, tmp_path):
  """Each CJK character and each punctuation mark is a word of its own; control characters
  and U+FFFD (the readers' mark of an invalid byte) are dropped, not glued to a word."""
  lines = (bert_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
  lines[-3:] = ["中", "文", "##文"]  # in place of three fillers
  (tmp_path / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
  tok = tk.load_tokenizer(data_config("wordpiece", tmp_path / "vocab.txt", "bert"))
  ids = {word: i for i, word in enumerate(lines)}
  assert tok.encode("中文").tolist() == [ids["中"], ids["文"]]
  assert tok.encode("a... a!!").tolist() == [ids[w] for w in "a . . . a ! !".split()]
  assert tok.encode("a\ufffd\x00 a").tolist() == [ids["a"], ids["a"]]


def test_a_gpt2_vocab_and_merges_give_the_original_glm_special_ids(gpt2_dir):
  tok = tk.load_tokenizer(data_config("bpe", gpt2_dir, "gpt2"))
  assert tok.specials.as_dict() == dict(pad=50256, eos=50256, sop=50257, eop=50258, cls=50259,
                                        mask=50260, gmask=50263, smask=50264, dblock=50265)
  assert tok.vocab_size == 50304
  assert tok.decode([50261, 50262, 50265]) == "[SEP][UNK][dBLOCK]"


def test_a_gpt2_vocab_and_merges_encode_byte_level_bpe_and_decode_back(gpt2_dir):
  vocab = json.loads((gpt2_dir / "vocab.json").read_text(encoding="utf-8"))
  tok = tk.load_tokenizer(data_config("bpe", gpt2_dir / "vocab.json", "gpt2"))
  assert tok.encode("hello world.").tolist() == [vocab["hello"], vocab["Ġworld"], ord(".")]
  text = "hello world. Grüße, 世界!\n\nend"
  assert tok.decode(tok.encode(text)) == text
  assert tok.sentence_end[ord(".")] and not tok.sentence_end[vocab["hello"]]


def test_the_chinese_layout_puts_the_specials_after_the_pieces_as_the_original(small_sp):
  tok = tk.load_tokenizer(data_config("sentencepiece", small_sp, "chinese_sp"))
  n = tok.base_vocab_size
  assert n == 200
  # ChineseSPTokenizer with --task-mask --fix-command-token; gMASK distinct from eop.
  assert tok.specials.as_dict() == dict(pad=n, eos=n, cls=n + 2, mask=n + 3, sop=n + 6,
                                        eop=n + 7, smask=n + 8, gmask=n + 9, dblock=n + 10)
  assert tok.vocab_size == 256  # n + 11 tokens ([dBLOCK]=n+10), padded to 128
  assert tok.decode([n + 1, n + 4, n + 10]) == "[SEP][UNK][dBLOCK]"
  text = "你好世界。今天天气很好。Hello world."  # NFKC-stable: SentencePiece normalizes
  ids = tok.encode(text)  # the model's own ids, as the original ChineseSPTokenizer encodes
  assert ids.tolist() == spm.SentencePieceProcessor(model_file=str(small_sp)).encode(text)
  assert len(ids) < len(text) and tok.decode(ids) == text


def test_the_chinese_layout_of_cog_pretrain_has_the_hugging_face_ids(tmp_path):
  # cog-pretrain.model has 50000 pieces; a word model of 50000 words trains in a moment.
  words = [f"w{i:05d}" for i in range(50000)]
  path = write_sentencepiece(tmp_path / "cog-pretrain.model", model_type="word",
                             vocab_size=50000,
                             sentences=[" ".join(words[i:i + 100]) for i in range(0, 50000, 100)])
  fields = rt.tokenizer_fields(str(tmp_path))
  assert fields == dict(tokenizer="sentencepiece", tokenizer_vocab="chinese_sp",
                        tokenizer_path=str(path), files=[str(path)], vocab_size=50048)
  tok = tk.load_tokenizer(data_config("sentencepiece", tmp_path, "chinese_sp"))
  assert tok.specials == specials_lib.CHINESE_SP_SPECIALS
  assert tok.specials.as_dict() == dict(pad=50000, eos=50000, cls=50002, mask=50003, sop=50006,
                                        eop=50007, smask=50008, gmask=50009, dblock=50010)
  assert tok.decode(tok.encode("w00007 w00042")) == "w00007 w00042"


@pytest.fixture(scope="module")
def hub_gpt2_json(gpt2_dir, tmp_path_factory):
  """A tokenizer.json as the hub serves gpt2's: <|endoftext|> registered as a special token."""
  tokenizer = hf.Tokenizer(models.BPE.from_file(str(gpt2_dir / "vocab.json"),
                                                str(gpt2_dir / "merges.txt")))
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.add_special_tokens(["<|endoftext|>"])
  path = tmp_path_factory.mktemp("hub_gpt2") / "tokenizer.json"
  tokenizer.save(str(path))
  return path


@pytest.mark.parametrize("kind", ["byte", "wordpiece", "bpe", "sentencepiece", "hf", "hf_gpt2"])
def test_a_literal_mask_in_text_is_not_encoded_as_a_special_id(kind, bert_dir, gpt2_dir,
                                                              small_sp, hub_bert_json,
                                                              hub_gpt2_json):
  path, layout = {"byte": ("", ""), "wordpiece": (bert_dir, "bert"), "bpe": (gpt2_dir, "gpt2"),
                  "sentencepiece": (small_sp, "chinese_sp"), "hf": (hub_bert_json, "bert"),
                  "hf_gpt2": (hub_gpt2_json, "gpt2")}[kind]
  tok = tk.load_tokenizer(data_config(kind.split("_")[0], path, layout))
  text = "a [MASK] b [CLS] <|endoftext|> [gMASK] <|startofpiece|> [PAD]"
  for ids in (tok.encode(text), tok.encode_batch([text])[0]):
    assert not set(ids.tolist()) & set(tok.specials.as_dict().values())
    assert len(ids) > 7  # the names were split as text, not dropped
    if kind in ("wordpiece", "hf"):
      assert ids.tolist()[1:4] == [WORD_ID["["], WORD_ID["mask"], WORD_ID["]"]]


@pytest.mark.parametrize("given, kind, layout, main, vocab_size", [
    ("bert", "wordpiece", "bert", "vocab.txt", 30592),
    ("bert/vocab.txt", "wordpiece", "bert", "vocab.txt", 30592),
    ("named/bert-large-uncased-vocab.txt", "wordpiece", "bert", "bert-large-uncased-vocab.txt",
     30592),
    ("gpt2", "bpe", "gpt2", "vocab.json", 50304),
    ("gpt2/merges.txt", "bpe", "gpt2", "vocab.json", 50304),
    ("named/gpt2-vocab.json", "bpe", "gpt2", "gpt2-vocab.json", 50304),
    ("named/gpt2-merges.txt", "bpe", "gpt2", "gpt2-vocab.json", 50304),  # its own vocab.json
    ("sp", "sentencepiece", "", "small.model", 256),  # not 50000 pieces: GLM tokens appended
    ("hf/tokenizer.json", "hf", "", "tokenizer.json", 128),
])
def test_released_files_are_recognised_from_a_folder_or_a_file(released, given, kind, layout,
                                                                main, vocab_size):
  fields = rt.tokenizer_fields(str(released / given))
  folder = str(released / given.split("/")[0])
  files = [os.path.join(folder, main)]
  if kind == "bpe":
    files.append(os.path.join(folder, main.replace("vocab.json", "merges.txt")))
  assert fields == dict(tokenizer=kind, tokenizer_vocab=layout, tokenizer_path=files[0],
                        files=files, vocab_size=vocab_size)


def test_a_tokenizer_json_of_the_original_bert_vocabulary_gets_the_bert_ids(tmp_path):
  vocab = (tmp_path / "vocab.txt")
  write_bert_vocab(str(tmp_path))
  tokenizer = hf.Tokenizer(models.WordPiece.from_file(str(vocab), unk_token="[UNK]"))
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tokenizer.decoder = decoders.WordPiece()
  tokenizer.save(str(tmp_path / "tokenizer.json"))
  vocab.unlink()
  assert rt.tokenizer_fields(str(tmp_path))["tokenizer_vocab"] == "bert"


def test_a_missing_merges_txt_is_a_one_line_error_naming_the_file(tmp_path):
  _, vocab_path = write_gpt2_files(str(tmp_path))
  os.remove(os.path.join(str(tmp_path), "merges.txt"))
  with pytest.raises(FileNotFoundError, match=r"tokenizer_path=.*vocab\.json.*merges\.txt"
                     ) as error:
    tk.load_tokenizer(data_config("bpe", vocab_path, "gpt2"))
  assert "\n" not in str(error.value)
  with pytest.raises(ValueError, match=rf"{tmp_path}.*no merges\.txt beside vocab\.json") as error:
    rt.tokenizer_fields(str(tmp_path))
  assert "\n" not in str(error.value)


def test_a_vocab_txt_with_another_token_at_101_is_a_one_line_error(tmp_path):
  path = write_bert_vocab(str(tmp_path), cls="[NOTCLS]")
  with pytest.raises(ValueError, match=rf"tokenizer_path='{path}'.*'\[CLS\]' at id 101.*"
                                       r"'\[NOTCLS\]'") as error:
    tk.load_tokenizer(data_config("wordpiece", path, "bert"))
  assert "\n" not in str(error.value)
  # convert import reads the layout from the files: the config's fix (another layout) is not
  # given, but what the files lack and what to give instead.
  with pytest.raises(ValueError) as error:
    rt.tokenizer_fields(path)
  assert str(error.value) == (
      f"{path!r} is not the bert vocabulary of the released GLM checkpoints: it has '[NOTCLS]' "
      "at id 101, where '[CLS]' belongs; give the tokenizer files this checkpoint was trained "
      "with")


def test_a_path_holding_no_tokenizer_is_a_one_line_error_naming_it(tmp_path):
  (tmp_path / "README").write_text("not a tokenizer")
  for path in (tmp_path, tmp_path / "README", tmp_path / "missing"):
    with pytest.raises(ValueError, match=rf"'{path}' .*expected a BERT vocab\.txt") as error:
      rt.tokenizer_fields(str(path))
    assert "\n" not in str(error.value)
  with pytest.raises(FileNotFoundError, match=r"folder without vocab\.txt"):
    tk.load_tokenizer(data_config("wordpiece", tmp_path, "bert"))


def test_a_tokenizer_file_that_does_not_exist_is_said_to_be_missing_whatever_its_name(tmp_path):
  # Named like a BERT vocabulary, it is still no tokenizer: not one the loader fails to read.
  path = tmp_path / "nope" / "vocab.txt"
  with pytest.raises(ValueError, match=rf"^'{path}' does not exist: expected a BERT vocab\.txt"):
    rt.tokenizer_fields(str(path))
  assert not rt.holds_tokenizer(str(path))


def test_a_tokenizer_folder_with_glob_characters_in_its_name_is_recognised(tmp_path):
  folder = tmp_path / "glm[large]"
  write_bert_vocab(folder)
  assert rt.holds_tokenizer(str(folder))
  assert rt.tokenizer_fields(str(folder))["tokenizer"] == "wordpiece"


def test_the_config_accepts_the_released_kinds_and_names_a_wrong_layout():
  assert {"wordpiece", "bpe"} <= set(config_lib.CHOICES["data.tokenizer"])
  config = recipes.shrink_to_local(config_lib.default_config())
  config.data.update(tokenizer="wordpiece", tokenizer_vocab="chinese_sp")
  config_lib.validate(config)
  config.data.tokenizer_vocab = "chinese"
  with pytest.raises(config_lib.ConfigError, match="data.tokenizer_vocab='chinese'"):
    config_lib.validate(config)


def save_wordpiece_json(vocab_txt, path):
  tokenizer = hf.Tokenizer(models.WordPiece.from_file(str(vocab_txt), unk_token="[UNK]"))
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tokenizer.decoder = decoders.WordPiece()
  tokenizer.save(str(path))
  return str(path)


def test_a_tokenizer_json_of_the_original_gpt2_vocabulary_gets_the_gpt2_ids(hub_gpt2_json):
  fields = rt.tokenizer_fields(str(hub_gpt2_json))
  assert (fields["tokenizer"], fields["tokenizer_vocab"]) == ("hf", "gpt2")
  assert fields["vocab_size"] == 50304  # sop=50257 ... [dBLOCK]=50265, padded to 128


def test_a_tokenizer_json_of_a_grown_bert_vocabulary_appends_the_glm_tokens(tmp_path):
  # bert-base plus 78 tokens of its own: GLM's fixed ids 30522.. are its words, so the bert
  # layout does not fit; the append rule reuses [PAD]/[CLS]/[MASK] and adds the 5 others after.
  vocab_txt = write_bert_vocab(str(tmp_path / "src"))
  with open(vocab_txt, "a", encoding="utf-8") as f:
    f.write("".join(f"new{i}\n" for i in range(78)))
  fields = rt.tokenizer_fields(save_wordpiece_json(vocab_txt, tmp_path / "tokenizer.json"))
  assert (fields["tokenizer_vocab"], fields["vocab_size"]) == ("", 30720)  # 30605 ids
  tok = tk.load_tokenizer(data_config("hf", tmp_path / "tokenizer.json", ""))
  assert (tok.specials.cls, tok.specials.mask, tok.specials.sop) == (101, 103, 30600 + 2)


def test_a_tokenizer_json_of_bert_size_without_cls_at_101_is_not_given_the_bert_ids(tmp_path):
  vocab_txt = write_bert_vocab(str(tmp_path / "src"), cls="[NOTCLS]")
  fields = rt.tokenizer_fields(save_wordpiece_json(vocab_txt, tmp_path / "tokenizer.json"))
  assert fields["tokenizer_vocab"] == ""


def test_a_folder_with_gpt2_files_and_a_tokenizer_json_loads_the_gpt2_files(tmp_path,
                                                                           hub_gpt2_json):
  # A hub snapshot of a GPT-2 GLM holds both: the original's files come first, as documented.
  write_gpt2_files(str(tmp_path))
  (tmp_path / "tokenizer.json").write_bytes(hub_gpt2_json.read_bytes())
  fields = rt.tokenizer_fields(str(tmp_path))
  assert (fields["tokenizer"], fields["tokenizer_vocab"]) == ("bpe", "gpt2")
  assert fields["files"] == [str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")]


def test_byte_level_bpe_merges_only_inside_the_words_of_gpt2s_split(tmp_path):
  # GPT-2 splits "ho w" into "ho" and " w" before merging: a merge of "o" with the space after
  # it never applies, though the vocabulary has it.
  vocab = list(tk._bytes_to_unicode().values()) + ["oĠ"]
  (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}),
                                       encoding="utf-8")
  (tmp_path / "merges.txt").write_text("#version: 0.2\no Ġ\n", encoding="utf-8")
  tok = tk.load_tokenizer(data_config("bpe", tmp_path, ""))
  assert tok.encode("ho w").tolist() == [ord("h"), ord("o"), ord(" "), ord("w")]
  assert tok.decode(tok.encode("ho w")) == "ho w"


def test_a_prefixed_vocab_json_finds_a_plain_merges_txt_beside_it(tmp_path):
  write_gpt2_files(str(tmp_path))
  os.rename(tmp_path / "vocab.json", tmp_path / "gpt2-vocab.json")
  fields = rt.tokenizer_fields(str(tmp_path / "gpt2-vocab.json"))
  assert fields["files"] == [str(tmp_path / "gpt2-vocab.json"), str(tmp_path / "merges.txt")]
  # Its own X-merges.txt beside it wins over another vocabulary's merges.txt.
  write_gpt2_files(str(tmp_path), prefix="gpt2-")
  assert rt.tokenizer_fields(str(tmp_path / "gpt2-vocab.json"))["files"][1] == str(
      tmp_path / "gpt2-merges.txt")


def test_only_a_sentencepiece_model_of_exactly_cog_pretrain_s_size_is_taken_for_its_layout():
  # GLM-10B-Chinese's model is the only released GLM SentencePiece one; a 64k-piece model of
  # one's own keeps its own </s> as eos, not the Chinese layout's appended ids.
  sized = lambda pieces: types.SimpleNamespace(base_vocab_size=pieces)  # noqa: E731
  assert [rt._found_layout(sized(n), "sentencepiece")  # pylint: disable=protected-access
          for n in (specials_lib.CHINESE_SP_PIECES - 1, specials_lib.CHINESE_SP_PIECES, specials_lib.CHINESE_SP_PIECES + 1)
          ] == ["", "chinese_sp", ""]


def test_a_hub_tokenizer_json_decodes_its_registered_special_tokens_by_name(hub_bert_json):
  # A prompt shown back to the user keeps its [MASK] and [CLS], though the hub registers them.
  tok = tk.load_tokenizer(data_config("hf", hub_bert_json, "bert"))
  assert tok.decode([101, WORD_ID["the"], 103, WORD_ID["cat"]]) == "[CLS] the [MASK] cat"


def test_a_sentencepiece_batch_encodes_each_text_as_encoding_it_alone(small_sp):
  # prepare encodes documents in batches: each must come back, in order, with its own ids.
  tok = tk.load_tokenizer(data_config("sentencepiece", small_sp, ""))
  texts = ["你好，世界。", "", "Hello world.", "今天天气很好。"]
  assert [ids.tolist() for ids in tok.encode_batch(texts)] == [tok.encode(t).tolist()
                                                               for t in texts]


def test_a_resume_sees_a_gpt2_tokenizer_whose_merges_txt_changed(tmp_path):
  write_gpt2_files(str(tmp_path))
  before = tk.load_tokenizer(data_config("bpe", tmp_path, "gpt2"))
  merges = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines(keepends=True)
  (tmp_path / "merges.txt").write_text("".join(merges[:-1]), encoding="utf-8")  # no "Ġwor ld"
  after = tk.load_tokenizer(data_config("bpe", tmp_path, "gpt2"))
  assert after.encode(" world").tolist() != before.encode(" world").tolist()
  # The same vocab.json, other ids: recorded with the shards and checkpoints, so told apart.
  assert tk.tokenizer_differences(tk.tokenizer_info(before), tk.tokenizer_info(after)) == [
      "fingerprint"]
