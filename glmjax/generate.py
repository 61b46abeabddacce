"""python -m glmjax.generate --workdir=DIR --text="Paris is the [MASK] of France."

Fills every [MASK], [sMASK] and [gMASK] of each prompt the GLM way (see decoding.py), on the
workdir's newest parameters and its tokenizer, sharded over a mesh of this host's devices.
Prompts come from --text (repeatable) or --input=FILE.jsonl ({"text": ...} per line); the filled
texts are printed and, with --output=FILE.jsonl, written with their blanks.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time

import jax
import numpy as np
from absl import app, flags

from glmjax import checkpoint as checkpoint_lib
from glmjax import cli, decoding, logs, memory, parallel, pretrained
from glmjax.model import ModelConfig

# Named, not __name__: run as `python -m glmjax.generate` that is "__main__", outside the
# glmjax logger whose console handler shows the progress lines (they were dropped).
log = logging.getLogger("glmjax.generate")

# Failures written for the user: their message is the line, exit status 1. A ValueError or
# OSError (a prompt file, a flag's value, a workdir) is one line too, its traceback kept in a
# file that the line names, since bugs raise those types as well.
_USER_ERRORS = (checkpoint_lib.UnusableCheckpointError, checkpoint_lib.IncompatibleCheckpointError)
BLANK = re.compile(r"\[(MASK|sMASK|gMASK)\]")
BUCKET = 64  # Part A lengths are rounded up to a multiple of this: one program per bucket


@dataclasses.dataclass
class Prompt:
  text: str
  pieces: list[str]       # the text around the blanks: len(pieces) == len(blanks) + 1
  blanks: list[str]       # "MASK", "sMASK" or "gMASK", in order
  part_a: np.ndarray      # [CLS] text-with-blank-ids [eos]
  positions: list[int]    # the blank tokens' positions in part_a


def encode_prompt(text: str, tokenizer) -> Prompt:
  """Part A as GLM's tokenizer builds it: [CLS], the text with each blank as its special id,
  then eos. Whitespace before a blank is dropped, as the original's mask tokens strip it: with
  word-piece, BPE and SentencePiece vocabularies a word carries its leading space, so the blank
  fills it. Byte tokens keep it: a space is a token of its own there."""
  specials = tokenizer.specials
  ids = {"MASK": specials.mask, "sMASK": specials.smask, "gMASK": specials.gmask}
  pieces, blanks = [], []
  last = 0
  for match in BLANK.finditer(text):
    pieces.append(text[last:match.start()])
    blanks.append(match.group(1))
    last = match.end()
  pieces.append(text[last:])
  if not blanks:
    raise ValueError(no_blank(text))
  part_a, positions = [specials.cls], []
  for piece, blank in zip(pieces, blanks):
    piece = piece if tokenizer.spaces_are_tokens else piece.rstrip()
    part_a.extend(tokenizer.encode(piece).tolist())
    positions.append(len(part_a))
    part_a.append(ids[blank])
  part_a.extend(tokenizer.encode(pieces[-1]).tolist())
  # A text ending in its blank has no eos, as the original's prompts (and as a [gMASK] suffix
  # row is trained); the original tests the raw text's last characters, so whitespace after
  # the blank is text and gets an eos there, and here.
  if pieces[-1]:
    part_a.append(specials.eos)
  return Prompt(text, pieces, blanks, np.asarray(part_a, np.int32), positions)


def no_blank(text: str) -> str:
  return (f"no blank in {text[:60]!r}: put [MASK] where a word or span is missing, or [gMASK] "
          "at the end to continue the text.")


def allowed_ids(tokenizer, vocab_size: int) -> np.ndarray:
  """The sampler's choices: the tokenizer's own tokens, [eop] and eos (which ends a [gMASK]
  suffix); no padding rows, no other GLM special token (none is a target in training)."""
  allowed = np.zeros(vocab_size, bool)
  allowed[:tokenizer.base_vocab_size] = True
  specials = tokenizer.specials
  allowed[[specials.cls, specials.mask, specials.smask, specials.gmask, specials.sop,
           specials.dblock]] = False
  allowed[[specials.eop, specials.eos]] = True
  return allowed


def check_sampling(sampling: decoding.Sampling) -> None:
  """One-line errors naming the flag, before anything is loaded onto the devices."""
  problems = [(sampling.max_blank_tokens < 1, "--max_tokens must be at least 1"),
              (sampling.temperature < 0, "--temperature must be >= 0 (0 is greedy)"),
              (sampling.top_k < 0, "--top_k must be >= 0 (0: no cut)"),
              (not 0 < sampling.top_p <= 1, "--top_p must be in (0, 1] (1: no cut)"),
              # Greedy decoding takes the argmax: a cut would be silently ignored.
              (sampling.temperature == 0 and (sampling.top_k > 0 or sampling.top_p < 1),
               "--top_k and --top_p cut the distribution a sample is drawn from, and "
               "--temperature=0 (the default) is greedy: give --temperature > 0 to sample")]
  for failed, message in problems:
    if failed:
      raise ValueError(message + ".")


def fill_text(prompt: Prompt, blanks: list[str]) -> str:
  text = prompt.pieces[0]
  for filled, piece in zip(blanks, prompt.pieces[1:]):
    # The text so far decides, not the piece before the blank (empty between two blanks).
    if not text or text[-1].isspace():
      filled = filled.lstrip()
    text += filled + piece
  return text


def _batch(prompts: list[Prompt], rows: int, keys) -> decoding.Prompts:
  """One batch of prompts encoded_prompts checked (each fits the model's positions)."""
  longest = max(len(p.part_a) for p in prompts)
  width = -(-longest // BUCKET) * BUCKET
  blanks = 1 << (max(len(p.blanks) for p in prompts) - 1).bit_length()  # powers of two
  tokens = np.zeros((rows, width), np.int32)
  length = np.zeros((rows,), np.int32)
  positions = np.zeros((rows, blanks), np.int32)
  count = np.zeros((rows,), np.int32)
  for row, prompt in enumerate(prompts):
    tokens[row, :len(prompt.part_a)] = prompt.part_a
    length[row] = len(prompt.part_a)
    positions[row, :len(prompt.positions)] = prompt.positions
    count[row] = len(prompt.blanks)
  return decoding.Prompts(tokens, length, positions, count, keys)


def encoded_prompts(texts: list[str], tokenizer, config: ModelConfig,
                    sampling: decoding.Sampling, batch_size: int,
                    sources: list[str] | None = None) -> list[Prompt]:
  """The prompts, each checked against the model and the flags before any is filled: a prompt
  too long, late in an --input file, ended the command after the others were filled, and
  they were lost with it. Needs only config.json's model and the tokenizer, so the command
  runs it before the parameters load too. `sources` names where each text came from (an
  --input file's line), for the errors; without it a prompt is named by its number."""
  check_sampling(sampling)
  # A blank's last token is not read, so its block positions run 1 ([sop]) .. max_tokens.
  if (config.position_tables
      and sampling.max_blank_tokens > config.max_position):
    raise ValueError(f"--max_tokens={sampling.max_blank_tokens}: this model's block positions "
                     f"go up to {config.max_position}; use at most {config.max_position}.")
  if tokenizer.ids_used > config.vocab_size:
    raise ValueError(f"The tokenizer has {tokenizer.ids_used} ids but the model "
                     f"model.vocab_size={config.vocab_size}: use the workdir's own tokenizer.")
  if batch_size < 1:
    raise ValueError(f"--batch_size={batch_size} must be at least 1.")
  if sampling.top_k > config.vocab_size:  # found now, not by lax.top_k after the load
    raise ValueError(f"--top_k={sampling.top_k} is more than the model's {config.vocab_size} "
                     "ids; give at most that (0: no cut).")
  prompts = [encode_prompt(text, tokenizer) for text in texts]
  sources = sources or [f"prompt {number} of {len(texts)}" for number in range(1, len(texts) + 1)]
  for source, prompt in zip(sources, prompts, strict=True):
    # Positions 0 .. max_position of a learned table; rotary positions have none to run past.
    if config.position_tables and len(prompt.part_a) > config.max_position + 1:
      raise ValueError(f"{source}: {prompt.text[:40]!r}... is "
                       f"{len(prompt.part_a)} tokens; this model has positions up to "
                       f"{config.max_position}: shorten it.")
  return prompts


def generate(loaded: pretrained.Pretrained, tokenizer, texts: list[str], *,
             sampling: decoding.Sampling, seed: int = 0, batch_size: int = 8) -> list[dict]:
  """Fills `texts`; returns {"text", "filled", "blanks"} per prompt, in order."""
  config = loaded.model_config
  prompts = encoded_prompts(texts, tokenizer, config, sampling, batch_size)
  specials = tokenizer.specials
  ends = decoding.Specials(np.int32(specials.sop), np.asarray([specials.eop, specials.eos],
                                                              np.int32),
                           allowed_ids(tokenizer, config.vocab_size))
  fill = decoding.make_fill(dataclasses.replace(config, remat="none"), sampling)
  rows = -(-batch_size // parallel.batch_axis_size(loaded.mesh)) * parallel.batch_axis_size(
      loaded.mesh)  # every device of the batch axes gets whole rows
  # Prompt i samples with fold_in(seed, i): its text does not depend on the batching.
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(
      np.arange(len(prompts) + rows, dtype=np.uint32))
  results, started = [], time.perf_counter()
  for first in range(0, len(prompts), rows):
    group = prompts[first:first + rows]
    batch = _batch(group, rows, keys[first:first + rows])
    with parallel.activate(loaded.mesh, loaded.rules):
      batch = jax.tree.map(lambda x: jax.device_put(
          x, parallel.batch_sharding(loaded.mesh, x.ndim)), batch)
      tokens, blank = fill(loaded.params, batch, ends)
    tokens, blank = np.asarray(tokens), np.asarray(blank)
    for row, prompt in enumerate(group):
      ids = decoding.split_blanks(tokens[row], blank[row], len(prompt.blanks))
      texts_out = [tokenizer.decode(np.asarray(i, np.int32)) for i in ids]
      results.append({"text": prompt.text, "filled": fill_text(prompt, texts_out),
                      "blanks": texts_out})
    log.info("Filled %d of %d prompts (%.1f s)", len(results), len(prompts),
             time.perf_counter() - started)
  return results


def check_paths(input_path: str, output_path: str) -> None:
  """--input must be a file and --output's folder must exist: said in one line each, before the
  model loads, not after the prompts are filled."""
  if input_path and not os.path.isfile(input_path):
    raise ValueError(f"--input={input_path!r}: no such file; give a JSONL file of prompts, one "
                     '{"text": ...} per line')
  if output_path:
    folder = os.path.dirname(os.path.abspath(output_path))
    if os.path.isdir(output_path) or not os.path.isdir(folder):
      problem = "is a folder" if os.path.isdir(output_path) else f"{folder} does not exist"
      raise ValueError(f"--output={output_path!r}: {problem}; give a file path in an existing "
                       "folder")


def _read_prompts(path: str) -> dict[str, str]:
  """{"PATH:LINE": text} for each prompt of a JSONL file, in order."""
  try:
    return _prompts_of(path)
  except UnicodeDecodeError as error:  # cp1252 from a spreadsheet, say: name the file
    raise ValueError(f"--input={path}: not UTF-8 text ({error.reason} at byte {error.start}); "
                     "save it as UTF-8.") from None


def _prompts_of(path: str) -> dict[str, str]:
  texts = {}
  with open(path, encoding="utf-8-sig") as handle:  # -sig: a byte-order mark goes
    for number, line in enumerate(handle, 1):
      if not line.strip():
        continue
      try:
        text = json.loads(line)["text"]
      except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}:{number}: expected a JSON object with a \"text\" field "
                         f"({type(error).__name__}).") from error
      if not isinstance(text, str):  # null or a number would fail later, in the tokenizer
        raise ValueError(f"{path}:{number}: the \"text\" field is {json.dumps(text)[:40]}, not "
                         "a string.")
      if not BLANK.search(text):  # said now, not after minutes of loading the model
        raise ValueError(f"{path}:{number}: {no_blank(text)}")
      texts[f"{path}:{number}"] = text
  if not texts:
    raise ValueError(f"{path} holds no prompt.")
  return texts


def define_flags() -> None:
  """The command's flags, defined only when it runs (tests import train and generate together)."""
  flags.DEFINE_string("workdir", "", "A training run's or an imported workdir.")
  flags.DEFINE_multi_string("text", [], "A prompt with [MASK], [sMASK] or [gMASK] blanks.")
  flags.DEFINE_string("input", "", "A JSONL file of prompts: {\"text\": ...} per line.")
  flags.DEFINE_string("output", "", "Write {\"text\", \"filled\", \"blanks\"} lines here.")
  flags.DEFINE_float("temperature", 0.0, "0 is greedy; else sample at this temperature.")
  flags.DEFINE_integer("top_k", 0, "Sample among the k likeliest tokens (0: all).")
  flags.DEFINE_float("top_p", 1.0, "Sample among the likeliest tokens, each kept while those "
                     "before it hold at most p (1.0: all).")
  flags.DEFINE_integer("max_tokens", 32, "At most this many tokens per blank.")
  flags.DEFINE_integer("seed", 0, "Sampling seed (same seed, same prompts: same text).")
  flags.DEFINE_integer("batch_size", 8, "Prompts filled together.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  args = flags.FLAGS
  if not args.workdir or not (args.text or args.input):
    raise app.UsageError("--workdir and --text (or --input=FILE.jsonl) are required.")
  logs.setup_console(0)
  try:
    check_paths(args.input, args.output)  # before minutes of loading and generating
    for text in args.text:  # before minutes of loading; --input's lines are read so too
      if not BLANK.search(text):
        raise ValueError(f"--text: {no_blank(text)}")
    named = {f"--text {number}": text for number, text in enumerate(args.text, 1)}
    named |= _read_prompts(args.input) if args.input else {}
    texts = list(named.values())
    sampling = decoding.Sampling(temperature=args.temperature, top_k=args.top_k,
                                 top_p=args.top_p, max_blank_tokens=args.max_tokens)
    check_sampling(sampling)  # the flags, before minutes of loading
    if args.seed and not args.temperature:
      log.warning("--seed=%d changes nothing: --temperature=0 is greedy", args.seed)
    # config.json and the tokenizer alone check the prompts in seconds; the parameters take
    # minutes to load (a tokenizer-less import is refused here too).
    config = pretrained.read_config(args.workdir, warn=False)
    tokenizer = pretrained.workdir_tokenizer(config, args.workdir)
    encoded_prompts(texts, tokenizer, ModelConfig.from_config(config.model), sampling,
                    args.batch_size, sources=list(named))
    loaded = pretrained.load(args.workdir, attention="xla")  # decoding calls no kernel
    pretrained.check_tokenizer(loaded, tokenizer)
    try:
      results = generate(loaded, tokenizer, texts, sampling=sampling, seed=args.seed,
                         batch_size=args.batch_size)
    except Exception as error:  # noqa: BLE001 - out of memory is the flags' to fix, not a bug
      if (line := memory.out_of_memory(error)) is None:
        raise
      raise ValueError(f"Out of device memory ({line}); lower --batch_size or "
                       "--max_tokens.") from error
    for result in results:
      print(result["filled"])
    if args.output:
      with open(args.output, "w", encoding="utf-8") as handle:
        for result in results:
          handle.write(json.dumps(result, ensure_ascii=False) + "\n")
  except _USER_ERRORS as error:
    logs.fail(error)


if __name__ == "__main__":
  define_flags()
  cli.run(main, user_errors=(ValueError, OSError))
