"""Generation ends where its rows do: a row whose blanks have all ended writes no more tokens,
and the decoding loop stops once every row of the batch has (a batch of short answers costs a
few steps, not `max_blank_tokens` for every blank its prompts' bucket holds)."""
from unittest import mock

import jax
import numpy as np

from glmjax import decoding, generate
from test_generate import random_run  # noqa: F401  (the fixture: a workdir of random parameters)

TEXTS = ["Paris is the [MASK] of France.", "a [MASK] b [sMASK] c [gMASK]"]  # 1 and 3 blanks


def _fill_recorded(loaded, tokenizer, max_tokens):
  """generate's results, the fill's (tokens, blank) arrays, and how many decoding steps ran
  (a host callback beside each step's sampling)."""
  outputs, steps, make_fill, choose = [], [], decoding.make_fill, decoding._choose

  def recorded_make_fill(*args):
    fill = make_fill(*args)

    def recorded(*inputs):
      outputs.append(jax.device_get(fill(*inputs)))
      return outputs[-1]
    return recorded

  def counted_choose(*args):
    jax.debug.callback(lambda: steps.append(1))
    return choose(*args)

  with mock.patch.object(generate.decoding, "make_fill", recorded_make_fill), \
      mock.patch.object(decoding, "_choose", counted_choose):
    results = generate.generate(loaded, tokenizer, TEXTS,
                                sampling=decoding.Sampling(max_blank_tokens=max_tokens))
  jax.effects_barrier()  # every callback has run (an asynchronous backend may still hold some)
  assert [len(r["blanks"]) for r in results] == [1, 3]
  (tokens, blank), = outputs
  return tokens, blank, len(steps)


def test_a_row_that_has_filled_its_blanks_writes_nothing_more_while_longer_rows_go_on(
    random_run):  # noqa: F811
  tokens, blank, _ = _fill_recorded(*random_run, max_tokens=12)
  # The one-blank row is done after at most 12 steps: every token it wrote belongs to its
  # blank, and the rest of its steps are empty.
  written = tokens[0] >= 0
  assert written.sum() >= 1 and np.all(blank[0][written] == 0)
  assert not np.any(written[12:]), tokens[0]
  assert np.any(tokens[1, 12:] >= 0)  # the three-blank row goes on
  # The rows the batch was padded with (no prompt, no blank) write nothing at all.
  assert np.all(tokens[len(TEXTS):] < 0)


def test_the_decoding_loop_stops_when_every_row_has_filled_its_blanks(random_run):  # noqa: F811
  tokens, _, steps = _fill_recorded(*random_run, max_tokens=12)
  # The prompts' bucket holds room for more blanks than the longest prompt's 3: the loop has
  # more steps than 3 blanks of 12 tokens can use, and stops after those (having run at least
  # to the last step any row wrote: a callback that stopped counting fails too).
  last = np.flatnonzero((tokens >= 0).any(axis=0)).max()
  assert last < steps <= 3 * 12 < tokens.shape[1], (steps, last, tokens.shape)
