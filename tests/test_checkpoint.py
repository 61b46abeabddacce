"""Orbax checkpoints: round trip into shardings, the last k kept, layouts and optimizers checked,
partial saves cleaned up (deferred, device-snapshot saves: test_device_snapshot.py)."""
import logging
import os
import re
import shutil

import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

import checkpoint_states as states
from glmjax import checkpoint, params_restore, step


@pytest.fixture()
def mesh():
  return states.fsdp_mesh()


def test_round_trip_restores_into_requested_shardings(tmp_path, mesh):
  state = states.state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  assert ckpt.save(5, state, states.metadata(state))
  ckpt.wait()
  restored = ckpt.restore_latest(states.abstract(state, mesh), states.metadata(state)["param_layout"])
  assert restored.step == 5
  kernel = restored.state.params["dense"]["kernel"]
  np.testing.assert_array_equal(kernel, state.params["dense"]["kernel"])
  assert kernel.sharding.spec == PartitionSpec("fsdp")
  ckpt.close()


def test_keeps_last_k_and_skips_a_damaged_newest_checkpoint(tmp_path, mesh):
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  for at, scale in ((1, 1.0), (2, 2.0), (3, 3.0)):
    state = states.state(scale)
    ckpt.save(at, state, states.metadata(state))
  ckpt.close()
  assert ckpt.steps() == [2, 3]
  # Damage the newest checkpoint as a crash mid-write would: its array data is gone.
  state_dir = os.path.join(str(tmp_path), "3", checkpoint.STATE_ITEM)
  for entry in os.listdir(state_dir):
    path = os.path.join(state_dir, entry)
    if os.path.isdir(path):
      shutil.rmtree(path)
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  restored = fresh.restore_latest(states.abstract(state, mesh), states.metadata(state)["param_layout"])
  assert restored.step == 2
  np.testing.assert_array_equal(restored.state.params["dense"]["kernel"],
                                states.state(2.0).params["dense"]["kernel"])
  # The damaged step stays until the resumed run saves that step again; then it is moved aside
  # (a verdict of "damaged" never deletes anything) and the new save takes its place.
  assert fresh.steps() == [2, 3]
  assert fresh.save(3, states.state(4.0), states.metadata(state))
  fresh.wait()
  (aside,) = tmp_path.parent.glob(f"{tmp_path.name}.damaged-*")
  assert os.listdir(aside) == ["3"]
  restored = fresh.restore_latest(states.abstract(state, mesh), states.metadata(state)["param_layout"])
  assert restored.step == 3
  np.testing.assert_array_equal(restored.state.params["dense"]["kernel"],
                                states.state(4.0).params["dense"]["kernel"])
  # The run's end saves its last step with force: the replaced step is good now, so it stays.
  assert not fresh.save(3, states.state(4.0), states.metadata(state), force=True)
  fresh.wait()
  assert [os.listdir(path) for path in tmp_path.parent.glob(f"{tmp_path.name}.damaged-*")] == [
      ["3"]]
  assert fresh.steps() == [2, 3]
  fresh.close()


def test_parameters_for_another_run_come_from_its_newest_checkpoint(tmp_path, mesh):
  # init_from, evaluate, generate and convert read parameters this way.
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), every=1, keep=3)
  for at, scale in ((1, 1.0), (2, 2.0), (3, 3.0)):
    state = states.state(scale)
    ckpt.save(at, state, states.metadata(state))
  ckpt.close()
  state = states.state()
  params, at = params_restore.restore_params(str(tmp_path), states.abstract(state, mesh).params,
                                         states.metadata(state)["param_layout"])
  assert at == 3
  np.testing.assert_array_equal(params["dense"]["kernel"], states.state(3.0).params["dense"]["kernel"])


def test_incompatible_layout_is_a_clear_error(tmp_path, mesh):
  state = states.state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(1, state, states.metadata(state))
  ckpt.close()
  other_layout = dict(states.metadata(state)["param_layout"])
  other_layout["dense/kernel"] = [[8, 8], "float32"]
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match="dense/kernel") as raised:
    ckpt.restore_latest(states.abstract(state, mesh), other_layout)
  assert "\n" not in str(raised.value)  # one console line, however many arrays differ
  many = {f"layer_{i}/kernel": [[i], "float32"] for i in range(10)}
  differences = checkpoint.layout_differences({}, many)
  assert len(differences) == 4 and differences[-1] == "... 7 more"


def test_a_layout_error_says_which_side_lacks_an_array_and_counts_only_what_is_past_three():
  saved = {"both": [[2], "float32"], "only_saved": [[1], "float32"]}
  current = {"both": [[3], "float32"], "only_model": [[4], "float32"]}
  assert checkpoint.layout_differences(saved, current) == [
      "both: checkpoint [[2], 'float32'] vs model [[3], 'float32']",
      "only_model: in the model, not in the checkpoint",
      "only_saved: in the checkpoint, not in the model"]
  fourth = {**current, "z": [[5], "float32"]}
  assert checkpoint.layout_differences(saved, fourth)[3:] == ["... 1 more"]


def test_another_optimizer_is_an_error_and_keeps_the_checkpoints(tmp_path, mesh):
  state = states.state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(1, state, states.metadata(state))
  ckpt.close()
  # The same parameters under another optimizer chain (as toggling optim.grad_clip gives).
  other = step.TrainState(step=state.step, params=state.params,
                          opt_state=optax.chain(optax.clip_by_global_norm(1.0),
                                                optax.adam(1e-3)).init(state.params))
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match="optimizer"):
    fresh.restore_latest(states.abstract(other, mesh), states.metadata(other)["param_layout"])
  assert fresh.steps() == [1]
  fresh.close()


def test_a_bucket_url_stays_a_url_and_a_local_path_becomes_absolute():
  """Orbax opens gs:// itself; made 'absolute' it would become a local folder named 'gs:'."""
  assert checkpoint.location("gs://bucket/run/checkpoints") == "gs://bucket/run/checkpoints"
  local = checkpoint.location("runs/a/checkpoints")
  assert local == os.path.join(os.getcwd(), "runs/a/checkpoints")


def test_the_resume_check_runs_before_the_state_is_read(tmp_path, mesh):
  state = states.state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(1, state, states.metadata(state))
  ckpt.close()
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  reads = []
  real_restore = fresh.manager.restore
  fresh.manager.restore = lambda at, args: reads.append(list(args.keys())) or real_restore(
      at, args=args)

  def refuse(metadata, at):
    raise ValueError(f"changed at {at}: seed {metadata['config']['seed']}")
  with pytest.raises(ValueError, match="changed at 1: seed 0"):
    fresh.restore_latest(states.abstract(state, mesh), states.metadata(state)["param_layout"], check=refuse)
  assert reads == [[checkpoint.METADATA_ITEM]]
  fresh.close()


def test_checkpoint_every_0_saves_no_periodic_checkpoint_only_the_forced_last_one(tmp_path):
  """checkpoint.every=0 turns periodic saves off; the run's last step is still saved."""
  state = states.state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=0, keep=2)
  assert not any(ckpt.should_save(at) for at in range(1, 10))
  assert not ckpt.save(4, state, states.metadata(state))
  assert ckpt.save(9, state, states.metadata(state), force=True)
  ckpt.close()
  assert ckpt.steps() == [9]


def test_a_save_after_the_workdir_was_removed_under_the_run_says_so_and_saves_anew(
    tmp_path, caplog):
  # A cleanup script or a mistaken rm: Orbax makes the folder again without a word.
  state = states.state()
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), every=1, keep=2)
  assert ckpt.save(1, state, states.metadata(state))
  ckpt.wait()
  shutil.rmtree(tmp_path / "checkpoints")
  with caplog.at_level(logging.WARNING, logger="glmjax"):
    assert ckpt.save(2, state, states.metadata(state))
  ckpt.close()
  assert f"The checkpoints folder {tmp_path}/checkpoints is gone" in caplog.text
  assert "Step 2 and later are saved into a new one there" in caplog.text
  assert 2 in ckpt.steps() and (tmp_path / "checkpoints").is_dir()


def test_parameters_for_another_run_can_be_read_from_its_checkpoints_folder(tmp_path, mesh):
  """checkpoint.init_from (and evaluate, generate, convert) take a workdir or its checkpoints/."""
  states.two_checkpoints(tmp_path / "checkpoints", keep=3, scaled=True)
  params, at = params_restore.restore_params(str(tmp_path / "checkpoints"),
                                         states.abstract(states.state(), mesh).params,
                                         states.metadata(states.state())["param_layout"])
  assert at == 2
  np.testing.assert_array_equal(params["dense"]["kernel"], states.state(2.0).params["dense"]["kernel"])


@pytest.mark.parametrize("field", ["checkpoint.init_from", "--workdir"])
def test_parameters_from_a_missing_folder_are_refused_naming_the_setting_that_gave_it(
    tmp_path, mesh, field):
  missing = str(tmp_path / "no_such_run")
  with pytest.raises(FileNotFoundError, match=f"^{re.escape(field)}='{re.escape(missing)}': "
                                              "no such directory; give the workdir"):
    params_restore.restore_params(missing, states.abstract(states.state(), mesh).params,
                                  states.metadata(states.state())["param_layout"], field=field)


def test_a_save_cut_off_by_a_kill_leaves_no_partial_folder_once_the_run_saves_again(tmp_path):
  """A kill mid-save leaves Orbax's temporary folder of that step (a state's size on disk); the
  resumed run removes it, and its own save of that step is whole."""
  state = states.state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=3)
  ckpt.save(6, state, states.metadata(state))
  ckpt.close()
  partial = tmp_path / "7.orbax-checkpoint-tmp-1733000000"  # Orbax's name while it writes
  shutil.copytree(tmp_path / "6", partial)
  os.remove(partial / "commit_success.txt")
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=3)
  assert fresh.steps() == [6]  # never taken for a checkpoint
  assert fresh.save(7, state, states.metadata(state))
  fresh.close()
  assert sorted(os.listdir(tmp_path)) == ["6", "7"]
