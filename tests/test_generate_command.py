"""python -m glmjax.generate as a command: its flags reach the generation, and a command line
or a path that cannot work is one line before the model loads (the filling itself:
test_generate.py)."""
import functools
import re
import types
from unittest import mock

import pytest
from absl import app
from absl import flags as absl_flags

from glmjax import decoding, generate, logs, pretrained
from glmjax.data import tokenizers


def generate_command(*args):
  """`python -m glmjax.generate ARGS` in this process: its flags are defined in a FlagValues of
  their own (other commands' modules define some of the same names in absl's global one)."""
  values = absl_flags.FlagValues()

  class Flags:  # absl.flags, with `values` as FLAGS and as every definition's home
    FLAGS = values

    def __getattr__(self, name):
      function = getattr(absl_flags, name)
      return functools.partial(function, flag_values=values) if name.startswith(
          "DEFINE") else function

  with mock.patch.object(generate, "flags", Flags()), \
      mock.patch.object(logs, "setup_console", lambda index: None):  # leave pytest's be
    generate.define_flags()
    generate.main(values(["generate", *args]))


def _config_json(folder, max_position=512):
  """A workdir's config.json alone: what the command reads to check prompts before loading."""
  from glmjax import config as config_lib  # pylint: disable=import-outside-toplevel
  config = config_lib.default_config()
  config.model.update(vocab_size=384, max_position=max_position)
  config.data.update(tokenizer="byte")
  (folder / "config.json").write_text(config.to_json())


def _unrecorded(workdir):
  """What pretrained.load gives, as far as the command reads it: a checkpoint older than the
  tokenizer record, which passes unchecked."""
  return types.SimpleNamespace(tokenizer=None, step=0, workdir=str(workdir))


def test_the_command_hands_every_sampling_flag_the_seed_and_the_batch_size_to_generate(
    capsys, tmp_path):
  _config_json(tmp_path)
  calls = []
  fake_generate = lambda loaded, tokenizer, texts, **kwargs: calls.append(kwargs) or [  # noqa
      {"filled": text} for text in texts]
  with mock.patch.object(generate, "generate", fake_generate), \
      mock.patch.object(pretrained, "load", lambda workdir, attention: _unrecorded(workdir)), \
      mock.patch.object(pretrained, "load_tokenizer", lambda loaded: None):
    generate_command(f"--workdir={tmp_path}", "--text=a [MASK]", "--temperature=1.5", "--top_k=3",
                      "--top_p=0.5", "--max_tokens=7", "--seed=7", "--batch_size=4")
  assert calls == [dict(sampling=decoding.Sampling(temperature=1.5, top_k=3, top_p=0.5,
                                                   max_blank_tokens=7), seed=7, batch_size=4)]
  assert capsys.readouterr().out == "a [MASK]\n"


@pytest.mark.parametrize("args", [["--workdir=run"], ["--text=a [MASK]"],
                                  ["--input=prompts.jsonl"]])
def test_the_command_refuses_a_command_line_without_a_workdir_or_a_prompt(args):
  with pytest.raises(app.UsageError, match="--workdir and --text"):
    generate_command(*args)


@pytest.mark.parametrize("flag, named", [
    ("--input={tmp}/missing.jsonl", "--input='{tmp}/missing.jsonl': no such file"),
    ("--output={tmp}/no/such/folder/out.jsonl", "{tmp}/no/such/folder does not exist"),
    ("--output={tmp}", "--output='{tmp}': is a folder"),
])
def test_a_prompt_file_or_output_path_that_cannot_work_is_one_line_before_the_model_loads(
    tmp_path, flag, named):
  # The workdir does not exist either: the path is checked first, before minutes of loading.
  with pytest.raises(ValueError, match=re.escape(named.format(tmp=tmp_path))):
    generate_command(f"--workdir={tmp_path}/no-run", "--text=a [MASK]",
                      flag.format(tmp=tmp_path))


@pytest.mark.parametrize("args, named", [
    (["--text="], "--text: no blank in ''"),
    (["--text=a [MASK] b", "--text=Paris is the capital"], "--text: no blank in 'Paris is"),
    (["--input={tmp}/prompts.jsonl"], "{tmp}/prompts.jsonl:2: no blank in 'no blank here'"),
])
def test_a_prompt_without_a_blank_is_one_line_before_the_model_loads(tmp_path, args, named):
  (tmp_path / "prompts.jsonl").write_text('{"text": "a [MASK]"}\n{"text": "no blank here"}\n')
  with mock.patch.object(pretrained, "load", mock.Mock(side_effect=AssertionError("loaded"))):
    with pytest.raises(ValueError, match=re.escape(named.format(tmp=tmp_path))):
      generate_command("--workdir=run", *[a.format(tmp=tmp_path) for a in args])


def test_a_prompt_too_long_for_the_model_is_refused_before_the_model_loads_or_any_is_filled(
    tmp_path):
  """Checked batch by batch, a long prompt late in an --input file ended the command after the
  earlier batches were filled, and their texts were lost; and only after minutes of loading."""
  _config_json(tmp_path, max_position=64)
  # Named by its --input line (a blank line not counted as a prompt), not among all prompts.
  (tmp_path / "prompts.jsonl").write_text('{"text": "a [MASK]"}\n' * 9 + "\n" * 2
                                          + '{"text": "%s[MASK]"}\n' % ("w " * 40))
  with mock.patch.object(pretrained, "load", mock.Mock(side_effect=AssertionError("loaded"))):
    with pytest.raises(ValueError, match=rf"^{tmp_path}/prompts.jsonl:12: 'w w .* is 82 tokens; "
                                         r"this model has positions up to 64: shorten it\.$"):
      generate_command(f"--workdir={tmp_path}", f"--input={tmp_path}/prompts.jsonl",
                       "--batch_size=2", "--text=b [MASK]")


def test_running_out_of_device_memory_says_to_lower_the_batch_size(tmp_path):
  """A user's error (cli.run makes a ValueError one line), not a traceback to report."""
  _config_json(tmp_path)
  full = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 2.00GiB.")
  with mock.patch.object(pretrained, "load", mock.Mock(return_value=_unrecorded(tmp_path))), \
      mock.patch.object(generate, "generate", mock.Mock(side_effect=full)):
    with pytest.raises(ValueError, match=r"^Out of device memory \(RESOURCE_EXHAUSTED: .*\); "
                                         r"lower --batch_size or --max_tokens\.$"):
      generate_command(f"--workdir={tmp_path}", "--text=a [MASK]")


def test_parameters_trained_with_another_tokenizer_are_refused_before_any_prompt_is_filled(
    tmp_path):
  _config_json(tmp_path)
  recorded = {**tokenizers.tokenizer_info(tokenizers.ByteTokenizer()), "fingerprint": "0123"}
  loaded = types.SimpleNamespace(tokenizer=recorded, step=7, workdir=str(tmp_path))
  with mock.patch.object(pretrained, "load", mock.Mock(return_value=loaded)), \
      mock.patch.object(generate, "generate", mock.Mock(side_effect=AssertionError("filled"))):
    with pytest.raises(ValueError, match=r"^The checkpoint of step 7 in .* differ in "
                                         r"fingerprint"):
      generate_command(f"--workdir={tmp_path}", "--text=a [MASK]")
