"""Prompts of different lengths share a batch: its Part A is as wide as the bucket of its
longest prompt, and each prompt is filled as it is when it is alone."""
from glmjax import decoding, generate
from test_generate import random_run  # noqa: F401  (the fixture: a workdir of random parameters)


def test_a_short_prompt_and_one_longer_than_a_bucket_share_a_batch_and_fill_as_alone(
    random_run):  # noqa: F811
  loaded, tokenizer = random_run
  texts = ["x [MASK] y", "q" * (generate.BUCKET + 10) + " [MASK] end"]  # Part A: 7 and 82 tokens
  greedy = decoding.Sampling(max_blank_tokens=3)
  together = generate.generate(loaded, tokenizer, texts, sampling=greedy)
  alone = [generate.generate(loaded, tokenizer, [text], sampling=greedy)[0] for text in texts]
  assert [r["blanks"] for r in together] == [r["blanks"] for r in alone]
  assert [r["filled"] for r in together] == [r["filled"] for r in alone]
