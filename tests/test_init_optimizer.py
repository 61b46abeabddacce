"""`checkpoint.init_from` with `checkpoint.init_optimizer`: the second stage also takes the first
run's optimizer state (GLM-10B's second stage loaded its Adam moments), and starts its own
schedule at step 0; without it, the moments start at zero."""
import importlib
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from glmjax import checkpoint as checkpoint_lib
from glmjax import pretrained, train

SMALL = {"model.hidden_size": 64, "model.max_position": 64, "data.seq_len": 64}


def _config(steps):
  config = importlib.import_module("configs.base").get_config("local")
  for field, value in SMALL.items():
    section, name = field.split(".")
    config[section][name] = value
  config.train.update(steps=steps, eval_every=0, log_every=1)
  return config


def _saved_optimizer(workdir):
  """The newest checkpoint's optimizer state, as numpy leaves by path."""
  manager = ocp.CheckpointManager(
      checkpoint_lib.in_workdir(str(workdir)), item_names=(checkpoint_lib.STATE_ITEM,),
      options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", UserWarning)  # no target shardings: read as saved
      state = manager.restore(manager.latest_step(), args=ocp.args.Composite(**{
          checkpoint_lib.STATE_ITEM: ocp.args.PyTreeRestore()}))[checkpoint_lib.STATE_ITEM]
  finally:
    manager.close()
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(state["opt_state"])}


def test_a_second_stage_takes_the_first_run_s_optimizer_state_only_when_asked(tmp_path, caplog):
  first = tmp_path / "first"
  train.train_and_evaluate(_config(steps=3), str(first))
  before = _saved_optimizer(first)
  counts = [name for name in before if name.endswith("count']")]
  assert counts and all(int(before[name]) == 3 for name in counts)
  runs = {}
  for moments in (True, False):
    config = _config(steps=1)
    config.checkpoint.update(init_from=str(first), init_optimizer=moments)
    runs[moments] = tmp_path / f"second_{moments}"
    with caplog.at_level("INFO", logger="glmjax"):
      assert train.train_and_evaluate(config, str(runs[moments]))["step"] == 1  # step 0 anew
  assert "(its optimizer state too, step 0)" in caplog.text
  assert "(new optimizer state, step 0)" in caplog.text
  kept, fresh = _saved_optimizer(runs[True]), _saved_optimizer(runs[False])
  assert all(int(kept[name]) == 4 and int(fresh[name]) == 1 for name in counts)
  # Both second stages take the same step from the same parameters (same gradient g): Adam's
  # second moment is then b2 · the first run's + (1 - b2) · g² when kept, (1 - b2) · g² alone
  # when started at zero.
  b2 = _config(steps=1).optim.b2
  nu = [name for name in before if "['nu']" in name]
  assert nu
  for name in nu:
    np.testing.assert_allclose(kept[name], b2 * before[name] + fresh[name], rtol=1e-4,
                               atol=1e-12, err_msg=name)


def test_an_optimizer_state_of_another_shape_is_refused_in_one_line_naming_the_fields(tmp_path):
  first = tmp_path / "first"
  train.train_and_evaluate(_config(steps=1), str(first))
  config = _config(steps=1)
  config.checkpoint.update(init_from=str(first), init_optimizer=True)
  config.optim.grad_clip = 0.0  # the first run's optimizer clipped: its state has one more part
  with pytest.raises(checkpoint_lib.IncompatibleCheckpointError) as refused:
    train.train_and_evaluate(config, str(tmp_path / "second"))
  message = str(refused.value)
  assert "\n" not in message and "does not fit this run's optimizer: opt_state/" in message
  assert message.endswith("set checkpoint.init_optimizer=false to take its parameters alone.")
  config.checkpoint.init_optimizer = False  # the parameters alone still read
  assert train.train_and_evaluate(config, str(tmp_path / "third"))["step"] == 1


def test_parameters_saved_alone_are_refused_with_init_optimizer_naming_the_flag(tmp_path):
  # An import (convert) or pretrained.save holds no optimizer state: say so, not "damaged".
  first = tmp_path / "first"
  train.train_and_evaluate(_config(steps=1), str(first))
  params = pretrained.load(str(first)).params
  pretrained.save(str(tmp_path / "imported"), _config(steps=1), params)
  config = _config(steps=1)
  config.checkpoint.update(init_from=str(tmp_path / "imported"), init_optimizer=True)
  with pytest.raises(checkpoint_lib.IncompatibleCheckpointError,
                     match=r"holds parameters only \(an import, or pretrained.save\), no "
                           r"optimizer state: set checkpoint.init_optimizer=false"):
    train.train_and_evaluate(config, str(tmp_path / "second"))
