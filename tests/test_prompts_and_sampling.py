"""Prompts and sampling, without a model: how a prompt's text becomes Part A and its blanks, how
filled blanks go back into the text, prompt files, and the sampler's temperature, top-k and
top-p cuts and the ids it may give."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glmjax import config as config_lib
from glmjax import decoding, generate
from glmjax.data import tokenizers


def test_part_a_is_cls_the_text_with_blank_ids_and_eos():
  tokenizer = tokenizers.ByteTokenizer()
  prompt = generate.encode_prompt("ab [MASK] c[gMASK]", tokenizer)
  s = tokenizer.specials
  # A text that ends in its blank gets no eos (the original's prompts, our [gMASK] suffix rows).
  assert prompt.part_a.tolist() == [s.cls, ord("a"), ord("b"), ord(" "), s.mask, ord(" "),
                                    ord("c"), s.gmask]
  assert prompt.positions == [4, 7]
  assert generate.encode_prompt("[MASK] x.", tokenizer).part_a.tolist()[-1] == s.eos
  assert prompt.blanks == ["MASK", "gMASK"]
  assert generate.fill_text(prompt, ["xy", "z"]) == "ab xy cz"
  with pytest.raises(ValueError, match="no blank in 'no blank here'"):
    generate.encode_prompt("no blank here", tokenizer)


def test_whitespace_after_the_last_blank_is_text_and_gets_an_eos_as_in_the_original():
  # generate_samples.py appends eos unless the raw text ends with "MASK]" itself.
  tokenizer = tokenizers.ByteTokenizer()
  s = tokenizer.specials
  assert generate.encode_prompt("ab [MASK] ", tokenizer).part_a.tolist()[-3:] == [
      s.mask, ord(" "), s.eos]
  assert generate.encode_prompt("ab [gMASK]", tokenizer).part_a.tolist()[-1] == s.gmask


def test_whitespace_before_a_blank_goes_to_the_blank_with_word_piece_vocabularies(tmp_path):
  # GPT-2 BPE: " capital" is one token with its space, so "the [MASK]" must not end in a space.
  from test_released_tokenizers import write_gpt2_files  # pylint: disable=import-outside-toplevel
  write_gpt2_files(str(tmp_path))
  config = config_lib.data_defaults()
  config.update(tokenizer="bpe", tokenizer_path=str(tmp_path), tokenizer_vocab="gpt2")
  tokenizer = tokenizers.load_tokenizer(config)
  prompt = generate.encode_prompt("the [MASK] of", tokenizer)
  assert prompt.part_a.tolist()[:-1] == [tokenizer.specials.cls, *tokenizer.encode("the"),
                                         tokenizer.specials.mask, *tokenizer.encode(" of")]
  assert generate.fill_text(prompt, [" capital"]) == "the capital of"
  # Text between two blanks keeps its leading space (" of" is its own token) and drops its
  # trailing one; the text after the last blank is encoded as it is.
  prompt = generate.encode_prompt("the [MASK] of b [MASK] c", tokenizer)
  assert prompt.part_a.tolist()[:-1] == [tokenizer.specials.cls, *tokenizer.encode("the"),
                                         tokenizer.specials.mask, *tokenizer.encode(" of b"),
                                         tokenizer.specials.mask, *tokenizer.encode(" c")]


@pytest.mark.parametrize("flags, message", [
    (dict(max_blank_tokens=0), "--max_tokens must be at least 1"),
    (dict(temperature=-1.0), "--temperature must be >= 0"),
    (dict(top_k=-2), "--top_k must be >= 0"),
    (dict(top_p=0.0), "--top_p must be in (0, 1]"),
    (dict(top_k=5), "--temperature=0 (the default) is greedy"),
    (dict(top_p=0.9), "--temperature=0 (the default) is greedy"),
])
def test_bad_sampling_flags_are_named(flags, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    generate.check_sampling(decoding.Sampling(**flags))


def _sampled(logits, sampling, rows):
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(rows))
  return np.asarray(decoding._choose(jnp.tile(jnp.array([logits]), (rows, 1)), keys, sampling))


def test_temperature_divides_the_logits_and_top_k_keeps_the_k_likeliest():
  # At temperature 2, logits (0, 2 ln 3) give probabilities 1/4 and 3/4.
  chosen = _sampled([0.0, 2 * np.log(3.0)], decoding.Sampling(temperature=2.0), 4000)
  assert abs(chosen.mean() - 0.75) < 0.03
  # top_k=2 keeps logits 3 and 1.5 and draws them in their own proportion, 1 : e^-1.5.
  chosen = _sampled([0.0, 3.0, 1.5, 1.0], decoding.Sampling(temperature=1.0, top_k=2), 4000)
  assert set(chosen.tolist()) == {1, 2}
  assert abs(np.mean(chosen == 1) - 1 / (1 + np.exp(-1.5))) < 0.03


def test_top_p_samples_from_the_likeliest_tokens_until_those_before_one_pass_p():
  """Probabilities (0.5, 0.3, 0.2): p = 0.6 keeps the first two (0.5 before the second, 0.8
  before the third), drawn in proportion 5 : 3; p = 0.85 keeps all three."""
  logits = np.log([0.5, 0.3, 0.2])
  chosen = _sampled(logits, decoding.Sampling(temperature=1.0, top_p=0.6), 4000)
  assert set(chosen.tolist()) == {0, 1}
  assert abs(np.mean(chosen == 1) - 0.3 / 0.8) < 0.03
  chosen = _sampled(logits, decoding.Sampling(temperature=1.0, top_p=0.85), 4000)
  assert set(chosen.tolist()) == {0, 1, 2}
  assert abs(np.mean(chosen == 2) - 0.2) < 0.03
  # The mass is summed from the likeliest token down, not in vocabulary order: the same
  # probabilities as (0.3, 0.2, 0.5) keep the 0.5 and the 0.3 (4000 draws: std 0.008).
  chosen = _sampled(np.log([0.3, 0.2, 0.5]), decoding.Sampling(temperature=1.0, top_p=0.6), 4000)
  assert set(chosen.tolist()) == {0, 2}
  assert abs(np.mean(chosen == 0) - 0.3 / 0.8) < 0.03


def test_top_p_keeps_a_token_when_the_tokens_before_it_hold_exactly_p_as_the_original_does():
  """generate_samples.py removes a token when the cumulative probability before it is above
  top_p, so (0.5, 0.25, 0.125, 0.125) at p = 0.5 keeps the first two, drawn 2 : 1 (these
  probabilities and their sums are exact in float32)."""
  logits = np.log([0.5, 0.25, 0.125, 0.125])
  chosen = _sampled(logits, decoding.Sampling(temperature=1.0, top_p=0.5), 3000)
  assert set(chosen.tolist()) == {0, 1}
  assert abs(np.mean(chosen == 1) - 1 / 3) < 0.03


def test_top_k_and_top_p_together_cut_top_p_from_what_top_k_keeps():
  """Probabilities (0.4, 0.3, 0.2, 0.1): top_k=2 leaves 0.57 and 0.43, so top_p=0.55 keeps the
  first alone (top_p alone, or top_k alone, would keep two)."""
  logits = np.log([0.4, 0.3, 0.2, 0.1])
  both = _sampled(logits, decoding.Sampling(temperature=1.0, top_k=2, top_p=0.55), 1000)
  assert set(both.tolist()) == {0}
  only_p = _sampled(logits, decoding.Sampling(temperature=1.0, top_p=0.55), 1000)
  assert set(only_p.tolist()) == {0, 1}


def test_the_sampler_may_give_the_vocabulary_s_tokens_eop_and_eos_and_no_other_special(
    tmp_path):
  """A BERT vocab.txt holds [CLS] and [MASK] among its word pieces; the GLM specials and the
  padding rows come after it. Only word pieces, [eop] and eos (pad's id) may be generated."""
  import test_released_tokenizers as released  # pylint: disable=import-outside-toplevel
  tokenizer = tokenizers.load_tokenizer(released.data_config(
      "wordpiece", released.write_bert_vocab(str(tmp_path)), "bert"))
  s = tokenizer.specials
  allowed = generate.allowed_ids(tokenizer, tokenizer.vocab_size)
  forbidden = {s.cls, s.mask, s.smask, s.gmask, s.sop, s.dblock}
  assert {s.cls, s.mask} < set(range(tokenizer.base_vocab_size))  # inside the word pieces
  expected = np.zeros(tokenizer.vocab_size, bool)
  for token in set(range(tokenizer.base_vocab_size)) - forbidden | {s.eop, s.eos}:
    expected[token] = True
  np.testing.assert_array_equal(allowed, expected)
  assert not allowed[tokenizer.ids_used:].any()  # the padding rows


def test_a_blank_may_end_at_eos_as_well_as_at_eop():
  tokenizer = tokenizers.ByteTokenizer()
  allowed = generate.allowed_ids(tokenizer, 384)
  assert allowed[tokenizer.specials.eos] and allowed[tokenizer.specials.eop]


def test_a_filled_blank_drops_its_leading_space_only_at_the_start_or_after_whitespace():
  tokenizer = tokenizers.ByteTokenizer()
  fill = lambda text, blanks: generate.fill_text(  # noqa: E731
      generate.encode_prompt(text, tokenizer), blanks)
  assert fill("[MASK] starts it", [" It"]) == "It starts it"
  assert fill("the [MASK] of", [" capital"]) == "the capital of"
  assert fill("un[MASK] word", [" able"]) == "un able word"
  # Side by side, the second blank follows the first one's text, not the empty piece between.
  assert fill("a[MASK][MASK].", ["b", " c"]) == "ab c."
  assert fill("a [MASK][MASK].", [" b", " c"]) == "a b c."


def test_a_prompt_file_skips_blank_lines_and_names_a_line_without_text(tmp_path):
  # pylint: disable=protected-access
  path = tmp_path / "prompts.jsonl"
  path.write_text('{"text": "a [MASK]"}\n\n  \n{"text": "b [MASK]"}\n')
  assert generate._read_prompts(str(path)) == {f"{path}:1": "a [MASK]", f"{path}:4": "b [MASK]"}
  path.write_text('{"text": "a [MASK]"}\n\n{"prompt": "b [MASK]"}\n')
  with pytest.raises(ValueError, match=re.escape(f'{path}:3: expected a JSON object with a '
                                                 '"text" field')):
    generate._read_prompts(str(path))
  path.write_bytes('{"text": "caf\u00e9 [MASK]"}\n'.encode("cp1252"))  # from a spreadsheet
  with pytest.raises(ValueError, match=re.escape(f"--input={path}: not UTF-8 text (invalid "
                                                 "continuation byte at byte 13); save it as "
                                                 "UTF-8.")):
    generate._read_prompts(str(path))


def test_each_blank_kind_is_encoded_as_its_own_special_id():
  tokenizer = tokenizers.ByteTokenizer()
  s = tokenizer.specials
  prompt = generate.encode_prompt("[sMASK]a[gMASK]b[MASK]", tokenizer)
  assert prompt.part_a.tolist() == [s.cls, s.smask, ord("a"), s.gmask, ord("b"), s.mask]
  assert prompt.blanks == ["sMASK", "gMASK", "MASK"] and prompt.positions == [1, 3, 5]


def test_a_filled_blank_keeps_the_whitespace_at_its_end():
  # Only the leading space of a blank may go (the text before it has one); the space a blank
  # ends in separates it from the next word.
  prompt = generate.encode_prompt("a [MASK]b [MASK]", tokenizers.ByteTokenizer())
  assert generate.fill_text(prompt, [" big ", "end\n"]) == "a big b end\n"


def test_the_tokens_of_each_blank_are_split_out_of_a_decoded_row_token_0_included():
  # Id 0 is a word ("!" in GPT-2, [PAD] only in BERT); -1 marks a blank's end or no token, and
  # tokens of a blank past the prompt's own (a padded blank slot) are not its text.
  tokens = np.array([0, 5, -1, 7, 0, -1, 9, -1, -1])
  blank = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
  assert decoding.split_blanks(tokens, blank, 2) == [[0, 5], [7, 0]]
  assert decoding.split_blanks(tokens, blank, 3) == [[0, 5], [7, 0], [9]]


def test_the_sampler_never_gives_the_sep_and_unk_that_glm_appended_to_the_gpt2_vocabulary(
    tmp_path):
  # GLM's GPT-2 layout adds [SEP] and [UNK] after <|endofpiece|>: never a target in training.
  from test_released_tokenizers import write_gpt2_files  # pylint: disable=import-outside-toplevel
  write_gpt2_files(str(tmp_path))
  config = config_lib.data_defaults()
  config.update(tokenizer="bpe", tokenizer_path=str(tmp_path), tokenizer_vocab="gpt2")
  tokenizer = tokenizers.load_tokenizer(config)
  allowed = generate.allowed_ids(tokenizer, tokenizer.vocab_size)
  # The 50257 tokens (<|endoftext|> = eos among them) and <|endofpiece|> = 50258, nothing else.
  assert np.flatnonzero(allowed).tolist() == list(range(50257)) + [50258]


def test_glm_specials_that_a_vocabulary_holds_among_its_words_are_never_sampled(tmp_path):
  """A vocabulary that already holds GLM's tokens (layout '') keeps them below base_vocab_size:
  [sop], the blanks and [dBLOCK] must still be cut from the sampler, [eop] and eos not."""
  import test_released_tokenizers as released  # pylint: disable=import-outside-toplevel
  path = released.write_bert_vocab(str(tmp_path))
  words = open(path, encoding="utf-8").read().splitlines()
  names = ["<|endoftext|>", "<|startofpiece|>", "<|endofpiece|>", "[sMASK]", "[gMASK]",
           "[dBLOCK]"]
  words[-len(names):] = names
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(words) + "\n")
  tokenizer = tokenizers.load_tokenizer(released.data_config("wordpiece", path, ""))
  s = tokenizer.specials
  forbidden = [s.cls, s.mask, s.smask, s.gmask, s.sop, s.dblock]
  assert max(forbidden + [s.eop, s.eos]) < tokenizer.base_vocab_size  # all among the words
  allowed = generate.allowed_ids(tokenizer, tokenizer.vocab_size)
  assert not allowed[forbidden].any()
  assert allowed[[s.eop, s.eos]].all()


def test_top_p_cuts_the_distribution_at_the_temperature_it_is_sampled_at():
  """Probabilities (0.5, 0.3, 0.2); at temperature 2 they are proportional to their square
  roots: (0.415, 0.322, 0.263). top_p=0.45 keeps the first two there, drawn 0.707 : 0.548 (at
  temperature 1, 0.5 alone would reach 0.45)."""
  chosen = _sampled(np.log([0.5, 0.3, 0.2]), decoding.Sampling(temperature=2.0, top_p=0.45), 4000)
  assert set(chosen.tolist()) == {0, 1}
  assert abs(np.mean(chosen == 1) - np.sqrt(0.3) / (np.sqrt(0.5) + np.sqrt(0.3))) < 0.03


def test_a_prompt_file_of_blank_lines_or_of_json_that_is_not_an_object_is_named(tmp_path):
  # pylint: disable=protected-access
  path = tmp_path / "prompts.jsonl"
  path.write_text("\n  \n")
  with pytest.raises(ValueError, match=re.escape(f"{path} holds no prompt.")):
    generate._read_prompts(str(path))
  for line in ('"a [MASK]"', '["a [MASK]"]'):  # a JSON string or list, not {"text": ...}
    path.write_text('{"text": "b [MASK]"}\n' + line + "\n")
    with pytest.raises(ValueError, match=re.escape(f'{path}:2: expected a JSON object with a '
                                                   '"text" field (TypeError)')):
      generate._read_prompts(str(path))
  for value in ("null", "3", '["a [MASK]"]'):  # JSON, an object, a "text" field: not a string
    path.write_text('{"text": %s}\n' % value)
    with pytest.raises(ValueError, match=re.escape(f'{path}:1: the "text" field is {value}, '
                                                   'not a string.')):
      generate._read_prompts(str(path))
