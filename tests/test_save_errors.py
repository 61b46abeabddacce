"""A checkpoint save that fails is never passed over: a cause the user must fix (a full disk,
no permission) ends the run in one line naming the step and the newest good checkpoint, at the
save or, for the run's last save, as the checkpointer closes; any other error is raised as it
is, for its traceback, and the run does not go on without that checkpoint."""
import errno

import numpy as np
import orbax.checkpoint as ocp
import pytest

from glmjax import checkpoint


class _FailedWrite:  # a commit future whose background write failed
  def __init__(self, error):
    self.error = error

  def result(self, timeout=None):
    raise self.error


def _failing_writes(monkeypatch, error):
  """From now on every asynchronous write's commit fails with `error`."""
  real_async_save = ocp.StandardCheckpointHandler.async_save

  async def failing_async_save(self, *args, **kwargs):
    return list(await real_async_save(self, *args, **kwargs) or []) + [_FailedWrite(error)]
  monkeypatch.setattr(ocp.StandardCheckpointHandler, "async_save", failing_async_save)


def _state():
  state = {"w": np.arange(4.0, dtype=np.float32)}
  return state, {"param_layout": checkpoint.parameter_layout(state)}


def test_a_save_that_fails_for_another_reason_than_the_storage_s_raises_that_error(tmp_path):
  saver = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), every=1, keep=3)
  state, metadata = _state()

  def save(*args, **kwargs):
    raise RuntimeError("UNAVAILABLE: the coordination service did not answer")
  saver.manager.save = save
  try:
    with pytest.raises(RuntimeError, match="coordination service did not answer"):
      saver.save(2, state, metadata)
  finally:
    saver.close()


def test_a_background_write_that_fails_for_another_reason_raises_that_error_at_the_wait(
    tmp_path, monkeypatch):
  saver = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), every=1, keep=3)
  state, metadata = _state()
  _failing_writes(monkeypatch, KeyError("a shard's index went missing"))
  try:
    saver.save(2, state, metadata)
    with pytest.raises(KeyError, match="index went missing"):
      saver.wait()
  finally:
    saver.close()


# keep=1: Orbax drops the one good step from its list as the new save starts (it deletes it
# from disk only once the new one is committed), so the list alone would say "none yet".
@pytest.mark.parametrize("keep", [1, 3])
def test_the_last_save_failing_on_a_full_disk_as_the_checkpointer_closes_is_named_in_one_line(
    tmp_path, monkeypatch, keep):
  saver = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), every=1, keep=keep)
  state, metadata = _state()
  saver.save(2, state, metadata)
  saver.wait()
  _failing_writes(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
  saver.save(4, state, metadata)  # the run's last save: nothing after it waits for it but close
  with pytest.raises(checkpoint.CheckpointWriteError,
                     match=r"at step 4 to .* failed: no space left on device .*Newest good "
                           r"checkpoint: step 2, intact\.") as error:
    saver.close()
  assert "\n" not in str(error.value)
  assert saver.steps() == [2]
