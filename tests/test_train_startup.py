"""What train refuses or skips at start-up, before it compiles or writes a checkpoint."""
import logging
import re

import numpy as np
import pytest

from glmjax import checkpoint as checkpoint_lib
from glmjax import config as config_lib
from glmjax import loop, train
from glmjax import workdir as workdir_lib
from glmjax.data import tokenizers
from test_train import _local_config


def _tokenizer_ids(config):
  return tokenizers.load_tokenizer(config.data).ids_used


def test_a_model_vocabulary_smaller_than_the_tokenizer_s_is_refused_naming_the_size_to_set(
    tmp_path):
  config = _local_config(steps=1)
  config.model.vocab_size = _tokenizer_ids(config) - 1  # one id would index past the embedding
  with pytest.raises(config_lib.ConfigError,
                     match=rf"model.vocab_size={config.model.vocab_size} is smaller .* set "
                           r"model.vocab_size=\d+"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


def test_a_model_vocabulary_exactly_the_tokenizer_s_ids_is_accepted():
  """Every id the tokenizer emits (0 .. ids_used - 1) has an embedding row: nothing is missing."""
  config = _local_config(steps=1)
  config.model.vocab_size = _tokenizer_ids(config)
  inputs = train._inputs(config)  # pylint: disable=protected-access  (start-up checks only)
  batch = inputs.train_pipeline.global_batch(0)
  assert int(batch["tokens"].max()) < config.model.vocab_size


def test_a_mesh_that_cannot_split_the_model_over_these_devices_is_refused_before_compiling(
    tmp_path):
  """On 8 devices a tensor axis of 8 cannot split the 4 attention heads: the run stops at once
  with a config error naming the field, not with a sharding error from the compiler."""
  config = _local_config(steps=1)
  config.mesh.update(data=1, tensor=8)
  config.data.batch_size = 8
  with pytest.raises(config_lib.ConfigError, match="model.num_heads"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


def test_a_finished_run_started_again_says_so_and_compiles_writes_and_saves_nothing(
    tmp_path, caplog):
  config = _local_config(steps=2)
  config.model.num_layers = 2
  train.train_and_evaluate(config, str(tmp_path))
  metrics = (tmp_path / "metrics.jsonl").read_text()
  saved = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints").iterdir()}
  caplog.clear()  # the first run's lines, where an earlier test left glmjax's level at INFO
  with caplog.at_level(logging.INFO, logger="glmjax"):
    result = train.train_and_evaluate(config, str(tmp_path))
  assert result == {"step": 2, "already_done": True}
  assert re.search(r"Nothing to train: the checkpoint at step 2 in .* already reaches "
                   r"train.steps=2; raise --config.train.steps", caplog.text)
  assert "Compiled the train step" not in caplog.text and "Finished" not in caplog.text
  assert (tmp_path / "metrics.jsonl").read_text() == metrics
  assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints").iterdir()} == saved


def test_the_run_s_seed_draws_its_batches_and_another_seed_other_batches():
  """A seed sweep trains on other data, not only from other initial weights."""
  config = _local_config(steps=1)

  def batch():
    return train._inputs(config).train_pipeline.global_batch(0)  # pylint: disable=protected-access
  first, again = batch(), batch()
  config.seed = 1
  other = batch()
  assert np.array_equal(first["tokens"], again["tokens"])
  assert not np.array_equal(first["tokens"], other["tokens"])


def test_a_micro_batch_that_cannot_split_over_the_fsdp_devices_is_refused_at_start_up():
  """Rows are split over data x fsdp: 16 rows in 8 micro-batches are 2 rows for 8 fsdp devices,
  refused before compiling (mesh.data alone, 1, would let every step reshard its rows)."""
  config = _local_config(steps=1)
  config.mesh.update(data=1, fsdp=8)
  config.data.batch_size, config.optim.grad_accum_steps = 16, 8
  with pytest.raises(config_lib.ConfigError, match=r"= 2 rows per micro-batch is not divisible "
                                                   r"by the data-parallel size 8"):
    train._inputs(config)  # pylint: disable=protected-access


def test_the_mesh_is_checked_against_every_device_of_the_job_not_this_host_s(monkeypatch):
  # Two hosts of 4 devices: fsdp=8 spans both, and is what the job has.
  config = _local_config(steps=1)
  config.mesh.update(data=1, fsdp=8)
  monkeypatch.setattr(train.jax, "local_device_count", lambda: 4)
  assert train._inputs(config).mesh.shape["fsdp"] == 8  # pylint: disable=protected-access


def test_a_missing_init_from_folder_is_refused_before_the_workdir_is_made(tmp_path):
  config = _local_config(steps=1)
  config.checkpoint.init_from = str(tmp_path / "missing")
  with pytest.raises(train.StartupError, match=r"checkpoint.init_from=.*missing.*no such"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_init_from_parameters_of_another_shape_is_refused_naming_the_model_fields_and_the_fix(
    tmp_path):
  """The arrays alone (17 of them for another width) left the user to guess which field."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from glmjax import model as model_lib  # pylint: disable=import-outside-toplevel
  from glmjax import pretrained  # pylint: disable=import-outside-toplevel
  from glmjax import step as step_lib  # pylint: disable=import-outside-toplevel
  source = _local_config(steps=1)
  model = model_lib.GLM(model_lib.ModelConfig.from_config(source.model))
  shapes = jax.eval_shape(lambda rng: nn.meta.unbox(
      model.init(rng, *step_lib.dummy_inputs(1, 8))["params"]), jax.random.key(0))
  pretrained.save(str(tmp_path / "first"), source,
                  jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype), shapes))
  config = _local_config(steps=1)
  config.model.num_layers = source.model.num_layers + 1
  config.optim.learning_rate = 1e-4  # a new optimizer is what init_from is for: not named
  config.model.hidden_dropout = 0.2  # nor a new dropout, which no array depends on
  config.checkpoint.init_from = str(tmp_path / "first")
  with pytest.raises(checkpoint_lib.IncompatibleCheckpointError) as raised:
    train.train_and_evaluate(config, str(tmp_path / "run"))
  message = str(raised.value)
  assert message.startswith("checkpoint.init_from: the parameters at step 0 in ")
  assert message.endswith(f" (the config differs in model.num_layers: "
                          f"{source.model.num_layers} -> {config.model.num_layers}). Set those "
                          "model fields to that run's (its config.json), or leave "
                          "checkpoint.init_from empty to start afresh.")


@pytest.mark.parametrize("error", [kind("the message to show") for kind in (
    config_lib.ConfigError, train.StartupError, loop.NonFiniteError,
    workdir_lib.ConfigChangedError, checkpoint_lib.IncompatibleCheckpointError,
    checkpoint_lib.UnusableCheckpointError, checkpoint_lib.NonFiniteStateError,
    checkpoint_lib.CheckpointWriteError)] + [KeyboardInterrupt()],
                         ids=lambda error: type(error).__name__)
def test_the_command_ends_a_user_s_error_in_one_line_and_ctrl_c_with_status_130(
    error, tmp_path, monkeypatch, capfd):
  # A full disk, a damaged checkpoint, a changed config...: each is its line alone, exit 1.
  def stopped(*_):
    raise error
  monkeypatch.setattr(train, "train_and_evaluate", stopped)
  with pytest.raises(SystemExit) as raised:
    train.run(_local_config(), str(tmp_path / "run"))
  lines = capfd.readouterr().err.strip().splitlines()
  if isinstance(error, KeyboardInterrupt):
    assert raised.value.code == 130 and "Interrupted by Ctrl-C" in lines[-1], lines
  else:
    assert raised.value.code == 1 and lines[-1].endswith("the message to show"), lines
    assert "Stopped by" not in lines[-1] and "Traceback" not in "\n".join(lines)
