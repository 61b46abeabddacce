"""Train a SentencePiece model from text files.

  python -m glmjax.data.tokenizers train --input='corpus/*.jsonl.gz' --vocab_size=32000 \
      --out=spm.model

Reads documents as data.source='files' does (.txt paragraphs or whole files, .jsonl text field),
feeds their lines to SentencePiece, and writes FILE; its last line gives the --config flags that
train with it (data.tokenizer='sentencepiece', its path, data.tokenizer_vocab='' and the padded
model.vocab_size). The model keeps text exactly: no normalization, whitespace
kept, a newline piece, and byte fallback so any UTF-8 round-trips through encode/decode.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import shlex
from typing import Iterator

import ml_collections

from glmjax.data import text_files, tokenizers

_MAX_LINE_CHARS = 4000  # SentencePiece skips longer sentences; long lines are cut instead
# The readers' errors name train's config fields; this command's flags say the same things.
# The reader's advice in train's words, in the trainer's: only these phrases, so that a path
# holding one of the names is reported as it is.
_FLAG_NAMES = (("set --config.data.text_field to", "set --text_field to"),
               ("set data.text_field to", "set --text_field to"),
               ("remove it from data.files", "remove it from --input"))


def training_lines(paths, text_field: str, txt_documents: str) -> Iterator[str]:
  stats = text_files.TextStats()
  try:
    for path in paths:
      for text in text_files.iter_range_texts(path, 0, -1, text_field, txt_documents, stats):
        for line in text.split("\n"):
          for start in range(0, len(line), _MAX_LINE_CHARS):
            piece = line[start:start + _MAX_LINE_CHARS]
            if piece.strip():
              yield piece
  except ValueError as error:
    message = str(error)
    if message.startswith("data.files: "):
      message = "--input: " + message[len("data.files: "):]
    for field, flag in _FLAG_NAMES:
      message = message.replace(field, flag)
    raise ValueError(message) from error


def train_sentencepiece(paths, vocab_size: int, out: str, model_type: str = "unigram",
                        text_field: str = "text", txt_documents: str = "paragraphs",
                        max_lines: int = 2_000_000, threads: int = 0) -> str:
  import sentencepiece
  model = io.BytesIO()
  try:
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=training_lines(paths, text_field, txt_documents), model_writer=model,
        vocab_size=vocab_size, model_type=model_type, byte_fallback=True,
        character_coverage=0.9995, normalization_rule_name="identity",
        remove_extra_whitespaces=False, user_defined_symbols=["\n"],
        input_sentence_size=max_lines, shuffle_input_sentence=True, hard_vocab_limit=False,
        num_threads=threads or os.cpu_count() or 1, minloglevel=1)
  except RuntimeError as error:  # SentencePiece's refusal, e.g. fewer pieces than characters
    chars = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(error))
    if chars:
      raise ValueError(f"--vocab_size={vocab_size} is smaller than the {chars.group(1)} "
                       "characters and pieces this text needs; raise --vocab_size") from error
    last = ([line.strip() for line in str(error).splitlines() if line.strip()] or [""])[-1]
    raise ValueError(f"SentencePiece cannot train --vocab_size={vocab_size} on this text: "
                     f"{last}; check the --input files and --vocab_size") from error
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "wb") as f:
    f.write(model.getvalue())
  return out


def config_flags(out: str) -> str:
  """The --config flags that train with the model at `out`, from any shipped config: those set
  tokenizer_vocab to a released layout (bert, gpt2), which a new model's pieces do not have, and
  a model.vocab_size that may be too small for them, or far larger than they need."""
  path = os.path.abspath(out)  # train may run from another folder
  tokenizer = tokenizers.load_tokenizer(ml_collections.ConfigDict(dict(
      tokenizer="sentencepiece", tokenizer_path=path, tokenizer_vocab="")))
  return (f"--config.data.tokenizer=sentencepiece --config.data.tokenizer_path={shlex.quote(path)}"
          f" --config.data.tokenizer_vocab={shlex.quote('')}"
          f" --config.model.vocab_size={tokenizer.vocab_size}")


def main(argv: list[str]):
  # No prefixes of flags: --vocab for --vocab_size would hide a typo in a longer run. Flags are
  # spelled with underscores as in every glmjax command; the hyphenated first spellings stay.
  parser = argparse.ArgumentParser(prog="python -m glmjax.data.tokenizers",
                                   description="Tokenizer tools.", allow_abbrev=False)
  commands = parser.add_subparsers(dest="command", required=True)
  train = commands.add_parser("train", help="train a SentencePiece model from text files",
                              allow_abbrev=False)
  train.add_argument("--input", action="append", required=True,
                     help="glob of .txt/.jsonl/.json files, optionally .gz (repeatable)")
  train.add_argument("--vocab_size", "--vocab-size", type=int, required=True,
                     help="pieces (an upper bound when the text is too small to fill it)")
  train.add_argument("--out", required=True, help="the .model file to write")
  train.add_argument("--model_type", "--model-type", default="unigram", choices=("unigram", "bpe"))
  train.add_argument("--text_field", "--text-field", default="text",
                     help="JSON field holding the text")
  train.add_argument("--txt_documents", "--txt-documents", default="paragraphs",
                     choices=text_files.TXT_DOCUMENTS)
  train.add_argument("--max_lines", "--max-lines", type=int, default=2_000_000,
                     help="lines sampled for training")
  args = parser.parse_args(argv)
  paths = text_files.expand_globs(args.input, field="--input")
  train_sentencepiece(paths, args.vocab_size, args.out, args.model_type, args.text_field,
                      args.txt_documents, args.max_lines)
  print(f"wrote {args.out}; use {config_flags(args.out)}")


if __name__ == "__main__":  # this module is the command's body: say which command to run
  raise SystemExit("The tokenizer trainer runs as `python -m glmjax.data.tokenizers train "
                   "--input=GLOB --vocab_size=N --out=FILE`.")
