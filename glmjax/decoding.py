"""Blank filling with a key/value cache: Part A encoded once, then every blank's tokens, one call
per token, inside one compiled loop.

GLM generates as it was trained (reference: the original generate_samples.py): Part A is
attended bidirectionally; for each blank in order the model reads [sop] at the blank's position
(block position 1) and produces tokens (block positions 2, 3, ...) until [eop] or the length
limit; the next blank starts with its own [sop] and sees the blanks filled before it. As there,
the token that reaches the length limit ends its blank unread: it is in the text, but not in
the keys and values the later blanks see (the original's loop stops before feeding it).

Shapes are static per (batch, Part A bucket, number of blanks): the loop is a `lax.while_loop`
over a fixed cache, so no token and no prompt length within a bucket compiles anything new.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from glmjax.model import GLM, ModelConfig, tied_logits
from glmjax.model.attention import CacheMask


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How each token is chosen: greedy when temperature == 0."""
  temperature: float = 0.0
  top_k: int = 0            # 0: no top-k cut
  top_p: float = 1.0        # 1.0: no nucleus cut
  max_blank_tokens: int = 32  # a blank without [eop] ends after this many tokens


@flax.struct.dataclass
class Prompts:
  """A batch of encoded prompts (numpy or device arrays)."""
  tokens: Any           # [B, A] int32: Part A, padded after its length
  length: Any           # [B] int32: Part A lengths (0 for a padding row)
  blank_positions: Any  # [B, M] int32: the position of each blank token in Part A, in order
  num_blanks: Any       # [B] int32
  keys: Any             # [B] PRNG keys, one per prompt: its text does not depend on the batch


@flax.struct.dataclass
class Specials:
  sop: Any
  ends: Any             # [2] ids that end a blank: [eop] and eos (a [gMASK] suffix ends in eos)
  allowed: Any          # [V] bool: ids the sampler may produce


def _choose(logits: jax.Array, keys: jax.Array, sampling: Sampling) -> jax.Array:
  """[B, V] float32 logits (disallowed ids already at -inf), [B] keys -> [B] token ids."""
  if sampling.temperature <= 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / sampling.temperature
  if sampling.top_k > 0:
    kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if sampling.top_p < 1.0:
    ordered = jnp.sort(logits, axis=-1)[:, ::-1]
    cumulative = jnp.cumsum(jax.nn.softmax(ordered, axis=-1), axis=-1)
    # The original's rule (generate_samples.py top_k_logits): a token stays while the tokens
    # before it hold at most top_p, so a mass of exactly p before it keeps it.
    before = jnp.pad(cumulative[:, :-1], ((0, 0), (1, 0)))
    cut = jnp.sum(before <= sampling.top_p, axis=-1)
    threshold = jnp.take_along_axis(ordered, cut[:, None] - 1, axis=-1)
    logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return jax.vmap(jax.random.categorical)(keys, logits).astype(jnp.int32)


def max_steps(num_blanks: int, sampling: Sampling) -> int:
  """Calls after Part A: per blank, one reading [sop] and one reading each of its tokens but
  the last (which reads [eop] from the call after it, or, at max_blank_tokens, is not read)."""
  return num_blanks * sampling.max_blank_tokens


def fill_blanks(params: Any, prompts: Prompts, specials: Specials, *,
                model_config: ModelConfig, sampling: Sampling) -> tuple[jax.Array, jax.Array]:
  """-> (tokens [B, S], blank [B, S]): the token produced at each step (-1 where none: the end
  of a blank, a finished row) and the index of the blank it belongs to."""
  batch, part_a = prompts.tokens.shape
  steps = max_steps(prompts.blank_positions.shape[1], sampling)
  slots = part_a + steps
  model = GLM(model_config, decode=True)
  visible = jnp.arange(slots)[None, :] < prompts.length[:, None]
  # Padding slots get position 0: the position table may have fewer rows than the bucket.
  positions = jnp.where(visible[:, :part_a], jnp.arange(part_a, dtype=jnp.int32)[None, :], 0)
  hidden, variables = model.apply(
      {"params": params}, prompts.tokens, positions, jnp.zeros_like(positions),
      cache_mask=CacheMask(visible, jnp.int32(0)), return_hidden=True, mutable=["cache"])
  del hidden  # Part A predicts nothing: only its keys and values are needed

  def step(carry):
    s, cache, visible, token, blank, count, done, out, out_blank = carry
    active = ~done
    slot = part_a + s
    visible = visible.at[:, slot].set(active)
    index = jnp.minimum(blank, prompts.blank_positions.shape[1] - 1)
    position = jnp.take_along_axis(prompts.blank_positions, index[:, None], axis=1)
    hidden, updated = model.apply(
        {"params": params, "cache": cache}, token[:, None], position, (count + 1)[:, None],
        cache_mask=CacheMask(visible, slot.astype(jnp.int32)), return_hidden=True,
        mutable=["cache"])
    logits = tied_logits(params["word_embeddings"], hidden)[:, 0]
    logits = jnp.where(specials.allowed[None, :], logits, -jnp.inf)
    keys = jax.vmap(lambda key: jax.random.fold_in(key, s))(prompts.keys)
    chosen = _choose(logits, keys, sampling)
    stop = jnp.isin(chosen, specials.ends)
    # The token that fills a blank to its limit is kept and ends it unread, as in the original.
    ends = stop | (count + 1 >= sampling.max_blank_tokens)
    count = count + 1
    out = out.at[:, s].set(jnp.where(active & ~stop, chosen, -1))
    out_blank = out_blank.at[:, s].set(blank)
    blank = blank + (active & ends).astype(jnp.int32)
    done = done | (blank >= prompts.num_blanks)
    token = jnp.where(ends, specials.sop, chosen)
    count = jnp.where(ends, 0, count)
    return (s + 1, updated["cache"], visible, token, blank, count, done, out, out_blank)

  def running(carry):
    return (carry[0] < steps) & ~jnp.all(carry[6])

  start = (jnp.int32(0), variables["cache"], visible,
           jnp.full((batch,), specials.sop, jnp.int32), jnp.zeros((batch,), jnp.int32),
           jnp.zeros((batch,), jnp.int32), prompts.num_blanks <= 0,
           jnp.full((batch, steps), -1, jnp.int32), jnp.zeros((batch, steps), jnp.int32))
  final = jax.lax.while_loop(running, step, start)
  return final[7], final[8]


def make_fill(model_config: ModelConfig, sampling: Sampling):
  """`fill_blanks` jitted for one model and sampling; it compiles once per batch shape."""
  return jax.jit(functools.partial(fill_blanks, model_config=model_config, sampling=sampling))


def split_blanks(tokens: np.ndarray, blank: np.ndarray, num_blanks: int) -> list[list[int]]:
  """One row of fill_blanks' output -> the token ids of each of its blanks."""
  filled: list[list[int]] = [[] for _ in range(num_blanks)]
  for token, index in zip(tokens.tolist(), blank.tolist()):
    if token >= 0 and index < num_blanks:
      filled[index].append(token)
  return filled
