"""Cloze accuracy, LAMBADA style: does the model fill in the answer that follows a context?

A cloze file is JSON lines of {"text": ..., "answer": ...}; blank lines are skipped. "text" is the
context before the answer; a text that ends with its answer (trailing whitespace aside) is the
context plus the answer, and the context is the text minus that ending (and minus any whitespace
it starts with, as the original's LAMBADA rows strip it). The answer is scored as it
follows the context in running text, so that a byte-level BPE sees the word with its leading
space: whitespace at the end of the context moves to the start of the answer, and where the
context (not cut from a text ending with the answer) ends without any, one space is put there;
a context that is empty or whitespace alone puts nothing before the answer.

Each example is one GLM row, the answer as a [MASK] span at the end of the text, as the
original's LambadaDataset builds it (tasks/language_model/dataset.py, build_input_from_ids):
  Part A  [CLS] context [MASK] eos          position ids 0..len(A)-1, block position ids 0
  Part B  [sop] answer[:-1]                 position ids: the [MASK]'s, block ids 1, 2, ...
  targets answer on Part B                  sep = len(A)
It is correct when the argmax at every answer position is the answer token, with the answer fed
in (teacher forcing); [eop] is not asked for (no position predicts it, so the answer's last token
is never an input and takes no room from the context). Its log-likelihood is the sum of the
answer tokens' log-probabilities. A row's text is at most `row_limit` tokens (contexts too long
for that are cut from the left, and counted); rows are padded to a multiple of 64 tokens, at most
`row_limit` or one multiple where that is less (the padding sits at position 0, inside any
position table), and each padded length compiles once (splash attention: multiples of 128,
which its kernel needs).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from glmjax import model as model_lib
from glmjax import parallel

BUCKET = 64
ROW_KEYS = ("tokens", "targets", "position_ids", "block_position_ids", "sep", "answer_len")


class ClozeFileError(ValueError):
  """A cloze file that cannot be read; the message names the file and the line."""


@dataclasses.dataclass(frozen=True)
class Example:
  context: str
  answer: str  # with the whitespace that separates it from the context
  line: int


def split_text(text: str, answer: str) -> tuple[str, str]:
  """(context, answer as it follows the context): the rule in the module docstring. The
  context's leading whitespace goes, as the original's LAMBADA `.strip()` drops it: a BPE would
  read the first word with a space it never has after [CLS]."""
  answer = answer.strip()
  body = text.rstrip()
  if body.endswith(answer):
    context = body[:len(body) - len(answer)]
    kept = context.rstrip()
    return kept.lstrip(), (context[len(kept):] if kept else "") + answer
  kept = text.rstrip()
  return kept.lstrip(), ((text[len(kept):] or " ") if kept else "") + answer


def read_examples(path: str) -> list[Example]:
  def fail(line: int, what: str):
    raise ClozeFileError(f"--cloze={path} line {line}: {what}; each line must be a JSON object "
                         '{"text": "the context", "answer": "the word that follows"}.')
  try:
    with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark goes
      # Records end at "\n" only: splitlines() would also cut at U+2028 or U+0085 inside a
      # JSON string written with ensure_ascii=False (web text holds both).
      lines = f.read().split("\n")
  except (OSError, UnicodeDecodeError) as error:
    raise ClozeFileError(f"--cloze={path}: cannot be read ({error}).") from error
  examples = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError as error:
      fail(number, f"not JSON ({error})")
    if not isinstance(record, dict):
      fail(number, f"a JSON {type(record).__name__}, not an object")
    for key in ("text", "answer"):
      if not isinstance(record.get(key), str):
        fail(number, f'no "{key}" string' if key not in record else f'"{key}" is not a string')
    if not record["answer"].strip():
      fail(number, 'the "answer" is empty')
    examples.append(Example(*split_text(record["text"], record["answer"]), line=number))
  if not examples:
    raise ClozeFileError(f"--cloze={path} has no examples: the file is empty or blank.")
  return examples


def bucket_multiple(model_config) -> int:
  """Rows are padded to a multiple of 64 tokens, and of the kernel's block where it has one
  (128 for splash)."""
  return math.lcm(BUCKET, model_lib.model_config.seq_len_multiple(model_config.attention))


def row_limit(model_config, seq_len: int) -> int:
  """The most tokens of a row's text: the position table's size for learned positions; rotary
  positions have no table, so the longer of max_position and the training length. Whole kernel
  blocks where that holds one; a table shorter than a block stays the limit (never past it)."""
  limit = int(model_config.max_position)
  if not model_config.position_tables:
    limit = max(limit, int(seq_len))
  multiple = bucket_multiple(model_config)
  return limit if multiple == BUCKET or limit < multiple else limit // multiple * multiple


def bucket_length(length: int, limit: int, multiple: int = BUCKET) -> int:
  """A row's padded length: whole buckets, at most `limit` (or one bucket, when `limit` is
  shorter: the padding sits at position 0, inside any table)."""
  return min(multiple * math.ceil(length / multiple), max(limit, multiple))


def encode(examples, tokenizer, limit: int, path: str):
  """[(context ids, answer ids)] cut to fit `limit`, and how many contexts were cut."""
  encoded, cut = [], 0
  for example in examples:
    context = np.asarray(tokenizer.encode(example.context), np.int32)
    answer = np.asarray(tokenizer.encode(example.answer), np.int32)
    room = limit - 3 - len(answer)  # [CLS], [MASK], eos and [sop]; the answer's last token
    # is a target only, not an input (as in the original's rows)
    if room < 0:
      raise ClozeFileError(f"--cloze={path} line {example.line}: the answer is {len(answer)} "
                           f"tokens; a row of at most {limit} tokens cannot hold it.")
    if len(context) > room:
      context, cut = context[len(context) - room:], cut + 1
    encoded.append((context, answer))
  return encoded, cut


def build_row(specials, context, answer, length: int) -> dict[str, np.ndarray]:
  """One row of `length` tokens (the layout in the module docstring), padding after Part B."""
  part_a = [specials.cls, *context, specials.mask, specials.eos]
  sep, mask_at, n = len(part_a), len(part_a) - 2, len(answer)
  inputs = [*part_a, specials.sop, *answer[:-1]]  # a padding row (no answer): [sop] alone
  end = len(inputs)
  tokens = np.full(length, specials.pad, np.int32)
  tokens[:end] = inputs
  targets = np.zeros(length, np.int32)
  targets[sep:sep + n] = answer
  positions = np.zeros(length, np.int32)
  positions[:sep] = np.arange(sep)
  positions[sep:end] = mask_at
  blocks = np.zeros(length, np.int32)
  blocks[sep:end] = np.arange(1, end - sep + 1)
  return dict(tokens=tokens, targets=targets, position_ids=positions, block_position_ids=blocks,
              sep=np.int32(sep), answer_len=np.int32(n))


def row_scores(params, batch, *, model, width: int):
  """(answer log-likelihood, all answer tokens right) per row. Logits only at the first
  `width` Part B positions: the full [B, T, V] logits are never built."""
  hidden = model.apply({"params": params}, batch["tokens"], batch["position_ids"],
                       batch["block_position_ids"], batch["sep"], deterministic=True,
                       return_hidden=True)
  offsets = jnp.arange(width)[None, :]
  # Past the answer the index is clamped to the last position; those places are masked out.
  index = jnp.minimum(batch["sep"][:, None] + offsets, hidden.shape[1] - 1)
  logits = model_lib.tied_logits(params["word_embeddings"],
                                 jnp.take_along_axis(hidden, index[..., None], axis=1))
  targets = jnp.take_along_axis(batch["targets"], index, axis=1)
  scored = offsets < batch["answer_len"][:, None]
  token_ll = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
  right = (jnp.argmax(logits, axis=-1) == targets) | ~scored
  return jnp.sum(jnp.where(scored, token_ll, 0.0), axis=-1), jnp.all(right, axis=-1)


def score(params, model, mesh, rows, specials, *, limit: int, batch_size: int,
          progress: Callable[[int], None] | None = None, every_s: float = 10.0):
  """Per example (log-likelihood, correct), for [(context ids, answer ids)] already cut to fit.

  Rows are grouped by padded length and run `batch_size` at a time (fewer when there are fewer
  examples); a batch is split over the mesh's batch axes when its rows divide evenly, else
  replicated. Call with the mesh and rules active (`parallel.activate`)."""
  axis = parallel.batch_axis_size(mesh)
  per_batch = min(batch_size, axis * math.ceil(len(rows) / axis))
  split = per_batch % axis == 0
  width = max(len(answer) for _, answer in rows)
  scores_fn = jax.jit(functools.partial(row_scores, model=model, width=width),
                      out_shardings=NamedSharding(mesh, PartitionSpec()))
  multiple = bucket_multiple(model.config)
  lengths = np.array([bucket_length(len(c) + len(a) + 3, limit, multiple) for c, a in rows])
  log_likelihood, correct = np.zeros(len(rows)), np.zeros(len(rows), bool)
  pending, done, last = None, 0, time.monotonic()

  def collect(chunk, result):
    ll, right = jax.device_get(result)
    log_likelihood[chunk], correct[chunk] = ll[:len(chunk)], right[:len(chunk)]

  for length in np.unique(lengths):
    members = np.flatnonzero(lengths == length)
    for start in range(0, len(members), per_batch):
      chunk = members[start:start + per_batch]
      built = [build_row(specials, *rows[i], int(length)) for i in chunk]
      built += [build_row(specials, [], [], int(length))] * (per_batch - len(chunk))  # padding
      batch = {key: _global(np.stack([r[key] for r in built]), mesh, split) for key in ROW_KEYS}
      result = scores_fn(params, batch)  # dispatched; the previous batch is read meanwhile
      if pending is not None:
        collect(*pending)
      pending, done = (chunk, result), done + len(chunk)
      if progress is not None and time.monotonic() - last > every_s:
        progress(done)
        last = time.monotonic()
  collect(*pending)
  return log_likelihood, correct


def _global(value: np.ndarray, mesh, split: bool) -> jax.Array:
  """Every host holds the whole batch; each device takes its rows (or all of them)."""
  sharding = (parallel.batch_sharding(mesh, value.ndim) if split
              else NamedSharding(mesh, PartitionSpec()))
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
