"""Orbax checkpoints: round trip into shardings, broken checkpoints skipped, layout checked."""
import json
import logging
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from glmjax import checkpoint, checksums, step


def _state(scale=1.0):
  params = {"dense": {"kernel": jnp.arange(32.0).reshape(8, 4) * scale, "bias": jnp.ones(4)}}
  return step.TrainState(step=jnp.array(3, jnp.int32), params=params,
                         opt_state=optax.adam(1e-3).init(params))


def _abstract(state, mesh):
  def target(x):
    spec = PartitionSpec("fsdp") if x.ndim == 2 else PartitionSpec()
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec))
  return jax.tree.map(target, state)


def _metadata(state):
  return {"config": {"seed": 0}, "param_layout": checkpoint.parameter_layout(state.params),
          "state_layout": checkpoint.parameter_layout(state)}


def _two_checkpoints(directory, keep=2, scaled=False):
  """Saves steps 1 and 2 (states scaled 1 and 2 with `scaled`, else equal) and closes."""
  ckpt = checkpoint.Checkpointer(str(directory), every=1, keep=keep)
  for at in (1, 2):
    ckpt.save(at, _state(float(at) if scaled else 1.0), _metadata(_state()))
  ckpt.close()


@pytest.fixture()
def mesh():
  return Mesh(np.array(jax.devices()[:4]).reshape(4), ("fsdp",))


def test_round_trip_restores_into_requested_shardings(tmp_path, mesh):
  state = _state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  assert ckpt.save(5, state, _metadata(state))
  ckpt.wait()
  restored = ckpt.restore_latest(_abstract(state, mesh), _metadata(state)["param_layout"])
  assert restored.step == 5
  kernel = restored.state.params["dense"]["kernel"]
  np.testing.assert_array_equal(kernel, state.params["dense"]["kernel"])
  assert kernel.sharding.spec == PartitionSpec("fsdp")
  ckpt.close()


def test_keeps_last_k_and_skips_a_damaged_newest_checkpoint(tmp_path, mesh):
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  for at, scale in ((1, 1.0), (2, 2.0), (3, 3.0)):
    state = _state(scale)
    ckpt.save(at, state, _metadata(state))
  ckpt.close()
  assert ckpt.steps() == [2, 3]
  # Damage the newest checkpoint as a crash mid-write would: its array data is gone.
  state_dir = os.path.join(str(tmp_path), "3", checkpoint.STATE_ITEM)
  for entry in os.listdir(state_dir):
    path = os.path.join(state_dir, entry)
    if os.path.isdir(path):
      shutil.rmtree(path)
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  restored = fresh.restore_latest(_abstract(state, mesh), _metadata(state)["param_layout"])
  assert restored.step == 2
  np.testing.assert_array_equal(restored.state.params["dense"]["kernel"],
                                _state(2.0).params["dense"]["kernel"])
  # The damaged step stays until the resumed run saves that step again; then it is moved aside
  # (a verdict of "damaged" never deletes anything) and the new save takes its place.
  assert fresh.steps() == [2, 3]
  assert fresh.save(3, _state(4.0), _metadata(state))
  fresh.wait()
  (aside,) = tmp_path.parent.glob(f"{tmp_path.name}.damaged-*")
  assert os.listdir(aside) == ["3"]
  restored = fresh.restore_latest(_abstract(state, mesh), _metadata(state)["param_layout"])
  assert restored.step == 3
  np.testing.assert_array_equal(restored.state.params["dense"]["kernel"],
                                _state(4.0).params["dense"]["kernel"])
  fresh.close()


def test_parameters_for_another_run_come_from_its_newest_checkpoint(tmp_path, mesh):
  # init_from, evaluate, generate and convert read parameters this way.
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), every=1, keep=3)
  for at, scale in ((1, 1.0), (2, 2.0), (3, 3.0)):
    state = _state(scale)
    ckpt.save(at, state, _metadata(state))
  ckpt.close()
  state = _state()
  params, at = checkpoint.restore_params(str(tmp_path), _abstract(state, mesh).params,
                                         _metadata(state)["param_layout"])
  assert at == 3
  np.testing.assert_array_equal(params["dense"]["kernel"], _state(3.0).params["dense"]["kernel"])


def test_incompatible_layout_is_a_clear_error(tmp_path, mesh):
  state = _state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(1, state, _metadata(state))
  ckpt.close()
  other_layout = dict(_metadata(state)["param_layout"])
  other_layout["dense/kernel"] = [[8, 8], "float32"]
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match="dense/kernel") as raised:
    ckpt.restore_latest(_abstract(state, mesh), other_layout)
  assert "\n" not in str(raised.value)  # one console line, however many arrays differ
  many = {f"layer_{i}/kernel": [[i], "float32"] for i in range(10)}
  differences = checkpoint.layout_differences({}, many)
  assert len(differences) == 4 and differences[-1] == "... 7 more"


def test_another_optimizer_is_an_error_and_keeps_the_checkpoints(tmp_path, mesh):
  state = _state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(1, state, _metadata(state))
  ckpt.close()
  # The same parameters under another optimizer chain (as toggling optim.grad_clip gives).
  other = step.TrainState(step=state.step, params=state.params,
                          opt_state=optax.chain(optax.clip_by_global_norm(1.0),
                                                optax.adam(1e-3)).init(state.params))
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match="optimizer"):
    fresh.restore_latest(_abstract(other, mesh), _metadata(other)["param_layout"])
  assert fresh.steps() == [1]
  fresh.close()


def test_a_bucket_url_stays_a_url_and_a_local_path_becomes_absolute():
  """Orbax opens gs:// itself; made 'absolute' it would become a local folder named 'gs:'."""
  assert checkpoint.location("gs://bucket/run/checkpoints") == "gs://bucket/run/checkpoints"
  local = checkpoint.location("runs/a/checkpoints")
  assert local == os.path.join(os.getcwd(), "runs/a/checkpoints")


@pytest.mark.parametrize("error", [
    PermissionError(13, "Permission denied", "/run/checkpoints/2/state/d/abc"),
    ValueError("Error opening \"zarr\" driver:\nPERMISSION_DENIED: Error reading local file"),
    OSError(5, "Input/output error")])
def test_an_unreadable_checkpoint_stops_the_run_and_deletes_nothing(tmp_path, mesh, error):
  state = _state()
  _two_checkpoints(tmp_path)
  before = sorted(os.listdir(tmp_path))
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)

  def refuse(*args, **kwargs):
    raise RuntimeError("restore failed") from error  # storage errors arrive wrapped
  fresh.manager.restore = refuse
  with pytest.raises(checkpoint.UnusableCheckpointError,
                     match=r"step 2 .* cannot be read: .*(ermission|PERMISSION|Input/output)"):
    fresh.restore_latest(_abstract(state, mesh), _metadata(state)["param_layout"])
  fresh.close()
  assert sorted(os.listdir(tmp_path)) == before and fresh.steps() == [1, 2]


def test_a_workdir_whose_checkpoints_are_all_damaged_does_not_start_over_silently(tmp_path,
                                                                                   mesh):
  state = _state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(1, state, _metadata(state))
  ckpt.close()
  for entry in os.listdir(tmp_path / "1" / checkpoint.STATE_ITEM):
    if (tmp_path / "1" / checkpoint.STATE_ITEM / entry).is_dir():
      shutil.rmtree(tmp_path / "1" / checkpoint.STATE_ITEM / entry)
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  with pytest.raises(checkpoint.UnusableCheckpointError,
                     match=r"Every checkpoint .*steps \[1\].*checkpoint.start_over=true"):
    fresh.restore_latest(_abstract(state, mesh), _metadata(state)["param_layout"])
  assert fresh.steps() == [1]
  # Asked to start over, they are moved aside (kept) and the run starts from step 0.
  assert fresh.restore_latest(_abstract(state, mesh), _metadata(state)["param_layout"],
                              start_over=True) is None
  assert fresh.steps() == []
  (aside,) = [p for p in tmp_path.parent.iterdir() if p.name.startswith(
      f"{tmp_path.name}.damaged-")]
  assert sorted(os.listdir(aside)) == ["1"]
  assert fresh.save(1, state, _metadata(state))
  fresh.close()
  assert fresh.steps() == [1]


def test_the_checksum_does_not_depend_on_the_sharding_and_sees_one_changed_element(mesh):
  state = _state()
  moved = jax.device_put(state, jax.tree.map(lambda x: x.sharding, _abstract(state, mesh)))
  assert checksums.state_summary(moved) == checksums.state_summary(state)
  kernel = state.params["dense"]["kernel"]
  for changed in (kernel.at[5, 1].add(1.0),            # another value
                  kernel.at[5, 1].set(-kernel[5, 1]),  # one sign bit
                  kernel.reshape(4, 8).T.reshape(8, 4)):  # the same values, moved around
    other = state.replace(params={**state.params, "dense": {**state.params["dense"],
                                                            "kernel": changed}})
    assert (checksums.state_summary(other)["params/dense/kernel"][0]
            != checksums.state_summary(state)["params/dense/kernel"][0])


def _flip_bytes(directory, count=50):
  """Flips `count` bytes in the middle of the largest file of a saved state."""
  files = [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names]
  largest = max(files, key=os.path.getsize)
  data = bytearray(open(largest, "rb").read())
  middle = len(data) // 2
  for offset in range(middle, middle + count):
    data[offset] ^= 0xFF
  open(largest, "wb").write(bytes(data))


def test_flipped_bytes_in_the_newest_checkpoint_are_caught_and_the_older_one_restored(
    tmp_path, mesh, caplog):
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=3)
  big = lambda scale: step.TrainState(  # noqa: E731 - large enough that the flips hit values
      step=jnp.array(3, jnp.int32), params={"w": jnp.linspace(0, scale, 64 * 1024)},
      opt_state=())
  for at in (1, 2):
    ckpt.save(at, big(float(at)), _metadata(big(1.0)))
  ckpt.close()
  _flip_bytes(tmp_path / "2" / checkpoint.STATE_ITEM)
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=3)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=NamedSharding(mesh, PartitionSpec())), big(1.0))
  restored = fresh.restore_latest(abstract, _metadata(big(1.0))["param_layout"])
  assert restored.step == 1
  np.testing.assert_array_equal(restored.state.params["w"], big(1.0).params["w"])
  # Which check sees it depends on what the flips hit (Orbax's file layout varies from run to
  # run): a changed value fails the checksum, a flipped exponent the finiteness check first.
  assert "checkpoint 2 in" in caplog.text
  assert re.search(r"corrupted: (the checksum of|\d+ non-finite values in) params/w", caplog.text)
  assert fresh.steps() == [1, 2]  # kept until the resumed run saves step 2 again
  fresh.close()


def test_parameters_for_another_run_whose_bytes_were_flipped_are_refused(tmp_path, mesh):
  # init_from, evaluate, generate and convert read parameters this way: none may use a state
  # that differs from what was saved.
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), every=1, keep=2)
  big = step.TrainState(step=jnp.array(3, jnp.int32),
                        params={"w": jnp.linspace(0, 1.0, 64 * 1024)}, opt_state=())
  ckpt.save(1, big, _metadata(big))
  ckpt.close()
  _flip_bytes(tmp_path / "checkpoints" / "1" / checkpoint.STATE_ITEM)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=NamedSharding(mesh, PartitionSpec())), big.params)
  with pytest.raises(checkpoint.UnusableCheckpointError,
                     match=r"parameters at step 1 .* are corrupted: the checksum of params/w"):
    checkpoint.restore_params(str(tmp_path), abstract, _metadata(big)["param_layout"])


@pytest.mark.parametrize("tamper, reason", [
    (lambda kernel: kernel.at[0, 0].set(jnp.nan), "1 non-finite values in params/dense/kernel"),
    (lambda kernel: kernel.at[0, 0].add(0.5), "the checksum of params/dense/kernel differs")])
def test_a_restored_state_that_is_not_what_was_saved_counts_as_corrupted(tmp_path, mesh, caplog,
                                                                         tamper, reason):
  _two_checkpoints(tmp_path, keep=2, scaled=True)
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  real_restore = fresh.manager.restore

  def restore_with_damage(at, args):  # what a storage fault below Orbax would hand back
    restored = real_restore(at, args=args)
    if at == 2 and checkpoint.STATE_ITEM in restored:
      state = restored[checkpoint.STATE_ITEM]
      kernel = tamper(state.params["dense"]["kernel"])
      restored = {checkpoint.STATE_ITEM: state.replace(params={**state.params, "dense": {
          **state.params["dense"], "kernel": kernel}})}
    return restored
  fresh.manager.restore = restore_with_damage
  restored = fresh.restore_latest(_abstract(_state(), mesh), _metadata(_state())["param_layout"])
  assert restored.step == 1
  assert f"Skipping damaged checkpoint 2 in {tmp_path}: corrupted: {reason}" in caplog.text
  fresh.close()


def test_a_state_with_nan_is_never_saved(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(1, _state(), _metadata(_state()))
  ckpt.wait()
  bad = _state(float("nan"))
  with pytest.raises(checkpoint.NonFiniteStateError,
                     match=r"Not saving step 2 .*params/dense/kernel .*Newest good checkpoint: "
                           r"step 1, intact"):
    ckpt.save(2, bad, _metadata(bad))
  ckpt.close()
  assert ckpt.steps() == [1]


def test_a_deferred_save_writes_its_step_s_state_after_that_state_was_donated(tmp_path, mesh):
  """checkpoint.device_snapshot: the save copies the state on its devices; the loop then donates
  the state to the next step, and the copy is what gets written."""
  # `expected` from a second state: on CPU a host view of `state` would keep it from donation.
  state, expected = _state(), jax.device_get(_state())
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  assert ckpt.save(5, state, _metadata(state), defer=True)
  assert ckpt.steps() == []  # nothing written before the next step is dispatched
  next_step = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)
  after = next_step(state)
  assert state.params["dense"]["kernel"].is_deleted()
  assert ckpt.write_deferred() and not ckpt.write_deferred()  # written once
  ckpt.wait()
  restored = ckpt.restore_latest(_abstract(after, mesh), _metadata(after)["param_layout"])
  assert restored.step == 5
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.state), expected)
  # A NaN found in the copy is refused when it is written, as an undeferred save refuses it.
  ckpt.save(6, _state(float("nan")), _metadata(after), defer=True)
  with pytest.raises(checkpoint.NonFiniteStateError, match="Not saving step 6"):
    ckpt.write_deferred()
  ckpt.close()
  assert ckpt.steps() == [5]


def test_a_preemption_save_is_never_deferred(tmp_path):
  """The run exits right after it: a copy waiting for the next step would never be written."""
  state = _state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=4, keep=2)
  assert ckpt.save(7, state, _metadata(state), preempted=True, defer=True)
  assert not ckpt.write_deferred()  # nothing queued: handed to Orbax at once
  ckpt.wait()
  assert ckpt.steps() == [7]
  ckpt.close()


def test_a_deferred_save_left_by_a_loop_that_stopped_is_written_on_close(tmp_path):
  state = _state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=4, keep=2)
  assert not ckpt.save(3, state, _metadata(state), defer=True)  # not due
  assert ckpt.save(4, state, _metadata(state), defer=True)
  ckpt.close()  # the next step raised before write_deferred: the state of step 4 is kept
  assert checkpoint.Checkpointer(str(tmp_path), every=4, keep=2).steps() == [4]


@pytest.mark.parametrize("error", [
    RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8.00GiB"),
    TimeoutError("connection reset by peer")])
def test_a_restore_failure_that_does_not_say_damaged_stops_and_deletes_nothing(tmp_path, mesh,
                                                                               error):
  state = _state()
  _two_checkpoints(tmp_path)
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  real_restore = fresh.manager.restore

  def fail_on_state(at, args):
    if checkpoint.STATE_ITEM in args.keys():
      raise error
    return real_restore(at, args=args)
  fresh.manager.restore = fail_on_state
  with pytest.raises(checkpoint.UnusableCheckpointError,
                     match=r"step 2 .* could not be restored: .*does not say the checkpoint is "
                           r"damaged"):
    fresh.restore_latest(_abstract(state, mesh), _metadata(state)["param_layout"])
  fresh.close()
  assert fresh.steps() == [1, 2] and sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_the_resume_check_runs_before_the_state_is_read(tmp_path, mesh):
  state = _state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(1, state, _metadata(state))
  ckpt.close()
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  reads = []
  real_restore = fresh.manager.restore
  fresh.manager.restore = lambda at, args: reads.append(list(args.keys())) or real_restore(
      at, args=args)

  def refuse(metadata, at):
    raise ValueError(f"changed at {at}: seed {metadata['config']['seed']}")
  with pytest.raises(ValueError, match="changed at 1: seed 0"):
    fresh.restore_latest(_abstract(state, mesh), _metadata(state)["param_layout"], check=refuse)
  assert reads == [[checkpoint.METADATA_ITEM]]
  fresh.close()


def test_checkpoint_every_0_saves_no_periodic_checkpoint_only_the_forced_last_one(tmp_path):
  """checkpoint.every=0 turns periodic saves off; the run's last step is still saved."""
  state = _state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=0, keep=2)
  assert not any(ckpt.should_save(at) for at in range(1, 10))
  assert not ckpt.save(4, state, _metadata(state))
  assert ckpt.save(9, state, _metadata(state), force=True)
  ckpt.close()
  assert ckpt.steps() == [9]


def test_a_single_inf_is_refused_like_a_nan_naming_the_newest_good_checkpoint(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=3)
  for at in (1, 2):
    ckpt.save(at, _state(float(at)), _metadata(_state()))
  ckpt.wait()
  good = _state()
  bad = good.replace(params={**good.params, "dense": {
      **good.params["dense"], "kernel": good.params["dense"]["kernel"].at[2, 3].set(jnp.inf)}})
  with pytest.raises(checkpoint.NonFiniteStateError,
                     match=r"Not saving step 3 .*params/dense/kernel \(1\).*Newest good "
                           r"checkpoint: step 2, intact"):
    ckpt.save(3, bad, _metadata(bad))
  ckpt.close()
  assert ckpt.steps() == [1, 2]


def _rewrite_metadata(step_dir, change):
  """Rewrites the JSON metadata saved with a checkpoint (the JSON file of its folder)."""
  def is_json(path):
    try:
      return isinstance(json.loads(path.read_text()), dict)
    except ValueError:
      return False
  (path,) = [p for p in (step_dir / checkpoint.METADATA_ITEM).rglob("*")
             if p.is_file() and is_json(p)]
  path.write_text(change(path.read_text()))


def test_a_checkpoint_saved_before_state_layouts_and_checksums_were_recorded_still_restores(
    tmp_path, mesh):
  """Earlier glmjax versions saved only the config and the parameter layout: their workdirs
  resume (nothing to compare the optimizer's layout or the arrays' checksums with)."""
  state = _state(2.0)
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(4, state, _metadata(state))
  ckpt.close()

  def as_before(text):
    saved = json.loads(text)
    assert {"state_layout", "checksums"} <= set(saved)  # what the old version lacked
    return json.dumps({key: saved[key] for key in ("config", "param_layout")})
  _rewrite_metadata(tmp_path / "4", as_before)
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  restored = fresh.restore_latest(_abstract(state, mesh), _metadata(state)["param_layout"])
  fresh.close()
  assert restored.step == 4
  np.testing.assert_array_equal(restored.state.params["dense"]["kernel"],
                                state.params["dense"]["kernel"])


def test_a_checkpoint_whose_metadata_was_cut_off_mid_write_is_skipped_for_the_older_one(
    tmp_path, mesh, caplog):
  _two_checkpoints(tmp_path, keep=3, scaled=True)
  _rewrite_metadata(tmp_path / "2", lambda text: text[:len(text) // 2])
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=3)
  restored = fresh.restore_latest(_abstract(_state(), mesh), _metadata(_state())["param_layout"])
  fresh.close()
  assert restored.step == 1
  np.testing.assert_array_equal(restored.state.params["dense"]["kernel"],
                                _state(1.0).params["dense"]["kernel"])
  assert f"Skipping damaged checkpoint 2 in {tmp_path}: cut off" in caplog.text
  assert fresh.steps() == [1, 2]  # kept until the resumed run saves step 2 again


def test_parameters_for_another_run_can_be_read_from_its_checkpoints_folder(tmp_path, mesh):
  """checkpoint.init_from (and evaluate, generate, convert) take a workdir or its checkpoints/."""
  _two_checkpoints(tmp_path / "checkpoints", keep=3, scaled=True)
  params, at = checkpoint.restore_params(str(tmp_path / "checkpoints"),
                                         _abstract(_state(), mesh).params,
                                         _metadata(_state())["param_layout"])
  assert at == 2
  np.testing.assert_array_equal(params["dense"]["kernel"], _state(2.0).params["dense"]["kernel"])


def test_a_corruption_line_names_three_arrays_and_counts_the_others():
  restored = {f"w{index}": jnp.full(2, jnp.nan) for index in range(5)}
  line = checksums.corruption(restored, None)
  assert line.count("2 non-finite values in w") == 3 and line.endswith("(and 2 more arrays)")


def test_a_run_s_last_step_saved_as_a_device_snapshot_is_written_once_without_an_error(
    tmp_path, mesh, caplog):
  """With checkpoint.device_snapshot a last step on the save grid is first queued as a copy;
  the run's final save of that step then writes the copy, and closing has nothing left."""
  state = _state(5.0)
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=2, keep=3)
  assert ckpt.save(4, state, _metadata(state), defer=True)
  ckpt.save(4, state, _metadata(state), force=True)  # train's save at the end of the loop
  ckpt.close()
  assert not [record.getMessage() for record in caplog.records
              if record.levelno >= logging.ERROR]
  assert ckpt.steps() == [4]
  fresh = checkpoint.Checkpointer(str(tmp_path), every=2, keep=3)
  restored = fresh.restore_latest(_abstract(state, mesh), _metadata(state)["param_layout"])
  fresh.close()
  np.testing.assert_array_equal(restored.state.params["dense"]["kernel"],
                                state.params["dense"]["kernel"])


def test_a_storage_error_met_while_handling_another_error_still_stops_the_run(tmp_path, mesh):
  """A reader that raises its own error while handling the storage error (no `from`) chains it
  as the context: the permission problem is still what decides."""
  state = _state()
  _two_checkpoints(tmp_path)
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)

  def refuse(*args, **kwargs):
    try:
      raise PermissionError(13, "Permission denied", "/run/checkpoints/2/state/d/abc")
    except PermissionError:
      raise RuntimeError("restore failed")  # pylint: disable=raise-missing-from
  fresh.manager.restore = refuse
  with pytest.raises(checkpoint.UnusableCheckpointError,
                     match=r"step 2 .* cannot be read: Permission denied"):
    fresh.restore_latest(_abstract(state, mesh), _metadata(state)["param_layout"])
  fresh.close()
  assert fresh.steps() == [1, 2]


def test_a_save_cut_off_by_a_kill_leaves_no_partial_folder_once_the_run_saves_again(tmp_path):
  """A kill mid-save leaves Orbax's temporary folder of that step (a state's size on disk); the
  resumed run removes it, and its own save of that step is whole."""
  state = _state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=3)
  ckpt.save(6, state, _metadata(state))
  ckpt.close()
  partial = tmp_path / "7.orbax-checkpoint-tmp-1733000000"  # Orbax's name while it writes
  shutil.copytree(tmp_path / "6", partial)
  os.remove(partial / "commit_success.txt")
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=3)
  assert fresh.steps() == [6]  # never taken for a checkpoint
  assert fresh.save(7, state, _metadata(state))
  fresh.close()
  assert sorted(os.listdir(tmp_path)) == ["6", "7"]
