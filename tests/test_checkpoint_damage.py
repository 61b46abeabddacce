"""Damaged checkpoints: flipped bytes, cut-off metadata, unreadable storage and non-finite
states are caught; a damaged checkpoint is skipped for an older one or stops the run, and none
is ever deleted."""
import json
import logging
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec

import checkpoint_states as states
from glmjax import checkpoint, checksums, params_restore, step


@pytest.fixture()
def mesh():
  return states.fsdp_mesh()


@pytest.mark.parametrize("error", [
    PermissionError(13, "Permission denied", "/run/checkpoints/2/state/d/abc"),
    ValueError("Error opening \"zarr\" driver:\nPERMISSION_DENIED: Error reading local file"),
    OSError(5, "Input/output error")])
def test_an_unreadable_checkpoint_stops_the_run_and_deletes_nothing(tmp_path, mesh, error):
  state = states.state()
  states.two_checkpoints(tmp_path)
  before = sorted(os.listdir(tmp_path))
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)

  def refuse(*args, **kwargs):
    raise RuntimeError("restore failed") from error  # storage errors arrive wrapped
  fresh.manager.restore = refuse
  with pytest.raises(checkpoint.UnusableCheckpointError,
                     match=r"step 2 .* cannot be read: .*(ermission|PERMISSION|Input/output)"):
    fresh.restore_latest(states.abstract(state, mesh), states.metadata(state)["param_layout"])
  fresh.close()
  assert sorted(os.listdir(tmp_path)) == before and fresh.steps() == [1, 2]


def test_a_workdir_whose_checkpoints_are_all_damaged_does_not_start_over_silently(tmp_path,
                                                                                   mesh):
  state = states.state()
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(1, state, states.metadata(state))
  ckpt.close()
  for entry in os.listdir(tmp_path / "1" / checkpoint.STATE_ITEM):
    if (tmp_path / "1" / checkpoint.STATE_ITEM / entry).is_dir():
      shutil.rmtree(tmp_path / "1" / checkpoint.STATE_ITEM / entry)
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  with pytest.raises(checkpoint.UnusableCheckpointError,
                     match=r"Every checkpoint .*steps \[1\].*checkpoint.start_over=true"):
    fresh.restore_latest(states.abstract(state, mesh), states.metadata(state)["param_layout"])
  assert fresh.steps() == [1]
  # Asked to start over, they are moved aside (kept) and the run starts from step 0.
  assert fresh.restore_latest(states.abstract(state, mesh), states.metadata(state)["param_layout"],
                              start_over=True) is None
  assert fresh.steps() == []
  (aside,) = [p for p in tmp_path.parent.iterdir() if p.name.startswith(
      f"{tmp_path.name}.damaged-")]
  assert sorted(os.listdir(aside)) == ["1"]
  assert fresh.save(1, state, states.metadata(state))
  fresh.close()
  assert fresh.steps() == [1]


def test_a_damaged_step_moved_aside_takes_its_orbax_temporary_folder_with_it(tmp_path, mesh):
  """Orbax names a step's unfinished save `<step>.orbax-checkpoint-tmp-<n>`: it is the step's
  too, and goes aside with it rather than stay among the run's checkpoints."""
  state = states.state()
  run = tmp_path / "run"
  ckpt = checkpoint.Checkpointer(str(run), every=1, keep=2)
  ckpt.save(1, state, states.metadata(state))
  ckpt.close()
  fresh = checkpoint.Checkpointer(str(run), every=1, keep=2)
  (run / "1.orbax-checkpoint-tmp-7").mkdir()
  fresh._move_aside([1], "a test")  # pylint: disable=protected-access
  fresh.close()
  assert sorted(os.listdir(run)) == []
  (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.damaged-")]
  assert sorted(os.listdir(aside)) == ["1", "1.orbax-checkpoint-tmp-7"]


def test_start_over_on_a_workdir_without_checkpoints_moves_nothing_aside(tmp_path, mesh):
  """A first run with checkpoint.start_over set (a launcher that always passes it) has nothing
  to keep aside: no empty `.damaged-` folder appears beside its checkpoints."""
  state = states.state()
  fresh = checkpoint.Checkpointer(str(tmp_path / "run"), every=1, keep=2)
  assert fresh.restore_latest(states.abstract(state, mesh), states.metadata(state)["param_layout"],
                              start_over=True) is None
  fresh.close()
  assert [path.name for path in tmp_path.iterdir()] == ["run"]


def test_the_checksum_does_not_depend_on_the_sharding_and_sees_one_changed_element(mesh):
  state = states.state()
  moved = jax.device_put(state, jax.tree.map(lambda x: x.sharding, states.abstract(state, mesh)))
  assert checksums.state_summary(moved) == checksums.state_summary(state)
  kernel = state.params["dense"]["kernel"]
  for changed in (kernel.at[5, 1].add(1.0),            # another value
                  kernel.at[5, 1].set(-kernel[5, 1]),  # one sign bit
                  kernel.reshape(4, 8).T.reshape(8, 4)):  # the same values, moved around
    other = state.replace(params={**state.params, "dense": {**state.params["dense"],
                                                            "kernel": changed}})
    assert (checksums.state_summary(other)["params/dense/kernel"][0]
            != checksums.state_summary(state)["params/dense/kernel"][0])


def test_a_random_key_in_a_state_gets_a_checksum_that_sees_another_key():
  # An optimizer that adds noise keeps a typed key in its state: it is saved and checked too.
  state = {"w": jnp.ones(3), "noise": {"key": jax.random.key(0)}}
  summary = checksums.state_summary(state)
  other = checksums.state_summary({**state, "noise": {"key": jax.random.key(1)}})
  assert summary["noise/key"][1] == 0 and summary["w"] == other["w"]
  assert summary["noise/key"][0] != other["noise/key"][0]


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.int8, jnp.uint8, jnp.bool_])
def test_parameters_of_one_or_two_bytes_get_a_checksum_that_sees_one_changed_element(dtype):
  # model.param_dtype=bfloat16 saves bfloat16 parameters (and moments_dtype=param, moments).
  values = jnp.arange(12).reshape(3, 4) % 2 == 1 if dtype == jnp.bool_ else (
      jnp.arange(12, dtype=jnp.float32).reshape(3, 4).astype(dtype))
  changed = values.at[1, 2].set(~values[1, 2] if dtype == jnp.bool_ else values[1, 2] + 1)
  summary = checksums.state_summary({"w": values})
  assert summary["w"][1] == 0 and summary == checksums.state_summary({"w": values})
  assert summary["w"][0] != checksums.state_summary({"w": changed})["w"][0]


def test_with_x64_on_a_change_in_the_high_word_of_an_8_byte_element_changes_its_checksum():
  """int64 and float64 arrays (jax_enable_x64) are hashed as two 32-bit words per element: a
  change above the low 32 bits is a change too."""
  with jax.enable_x64(True):
    counts = jnp.arange(6, dtype=jnp.int64)
    summary = checksums.state_summary({"counts": counts})
    other = checksums.state_summary({"counts": counts.at[2].add(2**32)})
  assert summary["counts"][1] == 0
  assert summary["counts"][0] != other["counts"][0]


def _reference_checksum(values: np.ndarray) -> int:
  """checksums.py's hash, written again in numpy: each element's bits as a uint32 mixed with
  its flat index, the mixes summed modulo 2**32."""
  unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32}[values.dtype.itemsize]
  bits = values.view(unsigned).astype(np.uint32).ravel()
  mixed = (bits * np.uint32(0x9E3779B1) + np.arange(bits.size, dtype=np.uint32)
           * np.uint32(0x85EBCA77) + np.uint32(1))
  mixed = (mixed ^ (mixed >> np.uint32(15))) * np.uint32(0x2C1B3C6D)
  mixed = mixed ^ (mixed >> np.uint32(12))
  return int(mixed.sum(dtype=np.uint64) % 2**32)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.int8, jnp.bool_])
def test_the_checksum_is_the_same_hash_in_every_version_so_old_checkpoints_still_verify(dtype):
  """A checkpoint is checked against the checksums saved beside it: a hash changed between two
  versions of glmjax would judge every checkpoint of the older one corrupted, and an upgraded
  run would refuse to resume."""
  values = np.asarray(jax.random.normal(jax.random.key(3), (5, 7))).astype(dtype)
  if dtype == jnp.bool_:
    values = values > 0
  assert checksums.state_summary({"w": jnp.asarray(values)})["w"] == (
      _reference_checksum(values), 0)


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
    ckpt.save(at, big(float(at)), states.metadata(big(1.0)))
  ckpt.close()
  _flip_bytes(tmp_path / "2" / checkpoint.STATE_ITEM)
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=3)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=NamedSharding(mesh, PartitionSpec())), big(1.0))
  restored = fresh.restore_latest(abstract, states.metadata(big(1.0))["param_layout"])
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
  ckpt.save(1, big, states.metadata(big))
  ckpt.close()
  _flip_bytes(tmp_path / "checkpoints" / "1" / checkpoint.STATE_ITEM)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
      x.shape, x.dtype, sharding=NamedSharding(mesh, PartitionSpec())), big.params)
  # As above, what the flips hit varies with Orbax's layout: about 1 save in 40 puts a garbled
  # exponent there, and the finiteness check, which comes first, names it.
  with pytest.raises(checkpoint.UnusableCheckpointError,
                     match=r"parameters at step 1 .* are corrupted: (the checksum of|\d+ "
                           r"non-finite values in) params/w"):
    params_restore.restore_params(str(tmp_path), abstract, states.metadata(big)["param_layout"])


def _in_kernel(tamper):
  return lambda state: state.replace(params={**state.params, "dense": {
      **state.params["dense"], "kernel": tamper(state.params["dense"]["kernel"])}})


@pytest.mark.parametrize("tamper, reason", [
    (_in_kernel(lambda kernel: kernel.at[0, 0].set(jnp.nan)),
     "1 non-finite values in params/dense/kernel"),
    (_in_kernel(lambda kernel: kernel.at[0, 0].add(0.5)),
     "the checksum of params/dense/kernel differs"),
    # Not the parameters alone: Adam's moments and the step count are resumed from too.
    (lambda state: state.replace(opt_state=(state.opt_state[0]._replace(
        mu=jax.tree.map(lambda x: x + 0.5, state.opt_state[0].mu)), *state.opt_state[1:])),
     "the checksum of opt_state/0/mu/dense/bias differs"),
    (lambda state: state.replace(step=state.step + 1), "the checksum of step differs")],
    ids=["nan in a kernel", "a kernel", "adam's moments", "the step"])
def test_a_restored_state_that_is_not_what_was_saved_counts_as_corrupted(tmp_path, mesh, caplog,
                                                                         tamper, reason):
  states.two_checkpoints(tmp_path, keep=2, scaled=True)
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  real_restore = fresh.manager.restore

  def restore_with_damage(at, args):  # what a storage fault below Orbax would hand back
    restored = real_restore(at, args=args)
    if at == 2 and checkpoint.STATE_ITEM in restored:
      restored = {checkpoint.STATE_ITEM: tamper(restored[checkpoint.STATE_ITEM])}
    return restored
  fresh.manager.restore = restore_with_damage
  restored = fresh.restore_latest(states.abstract(states.state(), mesh), states.metadata(states.state())["param_layout"])
  assert restored.step == 1
  assert f"Skipping damaged checkpoint 2 in {tmp_path}: corrupted: {reason}" in caplog.text
  fresh.close()


def test_a_state_with_nan_is_never_saved(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(1, states.state(), states.metadata(states.state()))
  ckpt.wait()
  bad = states.state(float("nan"))
  with pytest.raises(checkpoint.NonFiniteStateError,
                     match=r"Not saving step 2 .*params/dense/kernel .*Newest good checkpoint: "
                           r"step 1, intact"):
    ckpt.save(2, bad, states.metadata(bad))
  ckpt.close()
  assert ckpt.steps() == [1]


@pytest.mark.parametrize("error", [
    RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8.00GiB"),
    TimeoutError("connection reset by peer")])
def test_a_restore_failure_that_does_not_say_damaged_stops_and_deletes_nothing(tmp_path, mesh,
                                                                               error):
  state = states.state()
  states.two_checkpoints(tmp_path)
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
    fresh.restore_latest(states.abstract(state, mesh), states.metadata(state)["param_layout"])
  fresh.close()
  assert fresh.steps() == [1, 2] and sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_a_single_inf_is_refused_like_a_nan_naming_the_newest_good_checkpoint(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=3)
  for at in (1, 2):
    ckpt.save(at, states.state(float(at)), states.metadata(states.state()))
  ckpt.wait()
  good = states.state()
  bad = good.replace(params={**good.params, "dense": {
      **good.params["dense"], "kernel": good.params["dense"]["kernel"].at[2, 3].set(jnp.inf)}})
  with pytest.raises(checkpoint.NonFiniteStateError,
                     match=r"Not saving step 3 .*params/dense/kernel \(1\).*Newest good "
                           r"checkpoint: step 2, intact"):
    ckpt.save(3, bad, states.metadata(bad))
  ckpt.close()
  assert ckpt.steps() == [1, 2]


def test_a_checkpoint_saved_before_state_layouts_and_checksums_were_recorded_still_restores(
    tmp_path, mesh):
  """Earlier glmjax versions saved only the config and the parameter layout: their workdirs
  resume (nothing to compare the optimizer's layout or the arrays' checksums with)."""
  state = states.state(2.0)
  ckpt = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(4, state, states.metadata(state))
  ckpt.close()

  def as_before(text):
    saved = json.loads(text)
    assert {"state_layout", "checksums"} <= set(saved)  # what the old version lacked
    return json.dumps({key: saved[key] for key in ("config", "param_layout")})
  states.rewrite_metadata(tmp_path / "4", as_before)
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)
  restored = fresh.restore_latest(states.abstract(state, mesh), states.metadata(state)["param_layout"])
  fresh.close()
  assert restored.step == 4
  np.testing.assert_array_equal(restored.state.params["dense"]["kernel"],
                                state.params["dense"]["kernel"])


def test_a_checkpoint_whose_metadata_was_cut_off_mid_write_is_skipped_for_the_older_one(
    tmp_path, mesh, caplog):
  states.two_checkpoints(tmp_path, keep=3, scaled=True)
  states.rewrite_metadata(tmp_path / "2", lambda text: text[:len(text) // 2])
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=3)
  restored = fresh.restore_latest(states.abstract(states.state(), mesh), states.metadata(states.state())["param_layout"])
  fresh.close()
  assert restored.step == 1
  np.testing.assert_array_equal(restored.state.params["dense"]["kernel"],
                                states.state(1.0).params["dense"]["kernel"])
  assert f"Skipping damaged checkpoint 2 in {tmp_path}: cut off" in caplog.text
  assert fresh.steps() == [1, 2]  # kept until the resumed run saves step 2 again


def test_a_checkpoint_whose_tree_file_is_missing_is_skipped_for_the_older_one(tmp_path, mesh,
                                                                             caplog):
  # Without state/_METADATA Orbax fails with a "pytree structure error", as a wrong restore
  # target would; the missing file makes it damaged, not a reason to stop.
  states.two_checkpoints(tmp_path, keep=3, scaled=True)
  os.remove(tmp_path / "2" / checkpoint.STATE_ITEM / checkpoint.TREE_FILE)
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=3)
  restored = fresh.restore_latest(states.abstract(states.state(), mesh),
                                  states.metadata(states.state())["param_layout"])
  fresh.close()
  assert restored.step == 1
  assert "Skipping damaged checkpoint 2" in caplog.text
  assert f"{checkpoint.STATE_ITEM}/{checkpoint.TREE_FILE} missing" in caplog.text


def test_a_state_folder_that_cannot_be_listed_stops_the_run_and_is_not_called_damaged(
    tmp_path, mesh, monkeypatch):
  # Looking for the tree file must not turn "cannot read" into "missing": a good checkpoint
  # behind a permission problem would be skipped, and the keep policy could delete it.
  states.two_checkpoints(tmp_path, keep=3, scaled=True)
  local = type(epath.Path(str(tmp_path)))
  listing, exists = local.iterdir, local.exists
  unlistable = lambda path: path.name == checkpoint.STATE_ITEM and path.parent.name == "2"

  def iterdir(path):
    if unlistable(path):
      raise PermissionError(13, "Permission denied", str(path))
    return listing(path)
  monkeypatch.setattr(local, "iterdir", iterdir)
  # As os.path.exists answers for a file in a folder it may not search: False, not an error.
  monkeypatch.setattr(local, "exists", lambda path: not unlistable(path.parent) and exists(path))
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=3)
  with pytest.raises(checkpoint.UnusableCheckpointError,
                     match=r"step 2 .* cannot be read: Permission denied"):
    fresh.restore_latest(states.abstract(states.state(), mesh),
                         states.metadata(states.state())["param_layout"])
  fresh.close()
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_a_corruption_line_names_three_arrays_and_counts_the_others():
  restored = {f"w{index}": jnp.full(2, jnp.nan) for index in range(5)}
  line = checksums.corruption(restored, None)
  assert line.count("2 non-finite values in w") == 3 and line.endswith("(and 2 more arrays)")


def test_restored_arrays_that_no_saved_checksum_names_are_warned_of_not_passed_silently(caplog):
  restored = {f"w{index}": jnp.full(2, float(index)) for index in range(5)}
  saved = checksums.state_summary(restored)
  with caplog.at_level(logging.WARNING, logger="glmjax.checksums"):
    assert checksums.corruption(restored, {name: saved[name][0] for name in ("w0", "w1")}) is None
  assert "No checksum was saved for 3 restored array(s) (w2, w3, w4): they are not verified" in (
      caplog.text)
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="glmjax.checksums"):  # all named: no warning
    assert checksums.corruption(restored, {name: saved[name][0] for name in saved}) is None
  assert "No checksum" not in caplog.text


def test_the_checksummed_copy_of_a_state_outlives_the_state_being_donated_to_the_next_step():
  state = {"w": jnp.arange(8.0), "step": jnp.int32(3)}
  copy, summary = checksums.copy_with_summary(state)
  after = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)(state)
  assert state["w"].is_deleted()  # the loop's next step took the state's buffers
  assert jax.device_get(copy["w"]).tolist() == list(range(8)) and int(copy["step"]) == 3
  assert summary() == checksums.state_summary({"w": jnp.arange(8.0), "step": jnp.int32(3)})
  assert summary() != checksums.state_summary(after)


def test_a_storage_error_met_while_handling_another_error_still_stops_the_run(tmp_path, mesh):
  """A reader that raises its own error while handling the storage error (no `from`) chains it
  as the context: the permission problem is still what decides."""
  state = states.state()
  states.two_checkpoints(tmp_path)
  fresh = checkpoint.Checkpointer(str(tmp_path), every=1, keep=2)

  def refuse(*args, **kwargs):
    try:
      raise PermissionError(13, "Permission denied", "/run/checkpoints/2/state/d/abc")
    except PermissionError:
      raise RuntimeError("restore failed")  # pylint: disable=raise-missing-from
  fresh.manager.restore = refuse
  with pytest.raises(checkpoint.UnusableCheckpointError,
                     match=r"step 2 .* cannot be read: Permission denied"):
    fresh.restore_latest(states.abstract(state, mesh), states.metadata(state)["param_layout"])
  fresh.close()
  assert fresh.steps() == [1, 2]
