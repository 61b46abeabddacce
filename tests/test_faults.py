"""Faults a long run meets: a changed config on resume, lost metrics, a full disk, an unwritable
workdir, a bug; each ends in one readable line and leaves the good checkpoints alone."""
import errno
import importlib
import json
import logging
import os
import types

import numpy as np
import pytest

from checkpoint_states import rewrite_metadata
from glmjax import checkpoint, config as config_lib, loop, memory, train
from glmjax import workdir as workdir_lib
from test_save_errors import _failing_writes
from test_train import _poison


def _config(**train_overrides):
  config = importlib.import_module("configs.base").get_config("local")
  # A narrower model on shorter sequences than :local (as in test_train.py): the faults here
  # do not depend on its size, and its steps and first save cost a fraction.
  config.model.update(hidden_size=64, max_position=64)
  config.data.seq_len = 64
  config.train.update(**{"eval_every": 0, "log_every": 1, "steps": 2, **train_overrides})
  config.checkpoint.update(every=2, keep=3, async_save=False)
  return config


def test_resuming_with_another_model_shape_names_the_config_fields_that_changed(tmp_path):
  """The layouts differ, so no flag can allow it; the line still names the config's change,
  the reason the layouts differ, beside the arrays that do not fit."""
  train.train_and_evaluate(_config(), str(tmp_path))
  wider = _config()
  wider.model.ffn_size = 320
  with pytest.raises(checkpoint.IncompatibleCheckpointError,
                     match=r"does not fit this model: .*wi_kernel.* \(the config differs in "
                           r"model\.ffn_size: 0 -> 320\)\. Use the config it was saved with"):
    train.train_and_evaluate(wider, str(tmp_path))
  # A field a resume may change while the layouts agree is named when they do not: float32
  # moments of bfloat16 parameters, then moments in the parameters' dtype.
  bfloat16 = _config()
  bfloat16.model.param_dtype = "bfloat16"
  train.train_and_evaluate(bfloat16, str(tmp_path / "bfloat16"))
  bfloat16.optim.moments_dtype = "param"
  with pytest.raises(checkpoint.IncompatibleCheckpointError,
                     match=r"does not fit this optimizer .*\(the config differs in "
                           r"optim\.moments_dtype: 'float32' -> 'param'\)"):
    train.train_and_evaluate(bfloat16, str(tmp_path / "bfloat16"))


def _listing(workdir):
  return sorted(os.listdir(workdir / "checkpoints")), (workdir / "config.json").read_text()


def test_resuming_with_another_seed_is_refused_and_allowed_with_the_flag(tmp_path, caplog,
                                                                         monkeypatch):
  starts, reporter = [], loop.StepReporter  # the step a run's timings count from
  monkeypatch.setattr(loop, "StepReporter",
                      lambda *args, **kwargs: starts.append(kwargs["start"]) or reporter(
                          *args, **kwargs))
  train.train_and_evaluate(_config(), str(tmp_path))
  os.remove(tmp_path / "metrics.jsonl")  # and the history goes missing
  before = _listing(tmp_path)
  changed = _config(steps=4, log_every=2)  # more steps, other logging: not a change
  changed.mesh.update(data=2, fsdp=4)  # another mesh: not a change either
  changed.seed = 1
  changed.data.batch_size = 32
  with pytest.raises(workdir_lib.ConfigChangedError,
                     match=r"step 2 .* another config: data.batch_size: 16 -> 32; seed: 0 -> 1\. "
                           r".*allow_config_change=true"):
    train.train_and_evaluate(changed, str(tmp_path))
  assert _listing(tmp_path) == before  # nothing written, nothing deleted
  assert not (tmp_path / "metrics.jsonl").exists()  # a refused start writes no empty history
  changed.train.allow_config_change = True
  assert train.train_and_evaluate(changed, str(tmp_path))["step"] == 4
  assert starts == [0, 2]  # resumed: step times and tokens/s over the 2 steps this run made
  assert "Resuming step 2 with a changed config (allowed): data.batch_size" in caplog.text
  assert "metrics.jsonl is missing" in caplog.text and "before step 2 are lost" in caplog.text
  assert [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")] == [4]
  assert json.loads((tmp_path / "config.json").read_text())["seed"] == 1
  assert json.loads((tmp_path / "config.until-step-2.json").read_text())["seed"] == 0


@pytest.mark.parametrize("parts, every", [(1, 2), (2, 2), (2, 3)])
def test_a_device_snapshot_is_written_while_the_next_step_runs(tmp_path, monkeypatch, caplog,
                                                                parts, every):
  """checkpoint.device_snapshot: the copy of step k goes to Orbax in iteration k+1, right
  after step k+1 is dispatched, when it has reached the host by then (not at the next save, a
  checkpoint period late); sent in two parts, after steps k+1 and k+2, it goes in k+3."""
  monkeypatch.setattr(checkpoint.host_copy, "arrived", lambda tree: True)
  events = []
  push, write = loop.StepReporter.push, checkpoint.Checkpointer._write
  monkeypatch.setattr(loop.StepReporter, "push", lambda self, done, metrics: (
      events.append(("step", done)), push(self, done, metrics))[1])
  monkeypatch.setattr(checkpoint.Checkpointer, "_write", lambda self, step, *a, **k: (
      events.append(("write", step)), write(self, step, *a, **k))[1])
  # Start-up's memory check counts the copy: the whole state, AdamW's moments included.
  real_bytes, real_report = memory.state_bytes_per_device, memory.device_snapshot_report
  counted = []
  monkeypatch.setattr(memory, "state_bytes_per_device", lambda tree: counted.append(
      (real_bytes(tree), real_bytes(getattr(tree, "params", tree)))) or real_bytes(tree))
  monkeypatch.setattr(memory, "device_snapshot_report", lambda analysis, copy_bytes, limit: (
      counted.append(copy_bytes) or real_report(analysis, copy_bytes, limit)))
  config = _config(steps=5 if every == 2 else 7)
  config.checkpoint.update(device_snapshot=True, snapshot_parts=parts, every=every)
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(config, str(tmp_path))
  at = next(i for i, value in enumerate(counted) if isinstance(value, int))
  (state_bytes, params_bytes), copy_bytes = counted[at - 1], counted[at]
  assert copy_bytes == state_bytes > 2 * params_bytes  # the parameters and two moments
  # Two parts with a save every 2 steps: start-up says the parts cannot all go one per step.
  assert ("checkpoint.snapshot_parts=2 >= checkpoint.every=2" in caplog.text) == (
      (parts, every) == (2, 2))
  # Each write comes before the push of the step whose dispatch it follows (metrics are read a
  # step late). Every 2 steps in two parts, step 2's copy is still on its way when the save of
  # 4 is due, which sends the rest and writes it first; a last step's direct save does the
  # same for the copy before it.
  expected = {
      (1, 2): [("step", 1), ("step", 2), ("write", 2), ("step", 3), ("step", 4), ("write", 4),
               ("step", 5), ("write", 5)],
      (2, 2): [("step", 1), ("step", 2), ("step", 3), ("step", 4), ("write", 2), ("step", 5),
               ("write", 4), ("write", 5)],
      (2, 3): [("step", 1), ("step", 2), ("step", 3), ("step", 4), ("step", 5), ("write", 3),
               ("step", 6), ("step", 7), ("write", 6), ("write", 7)]}[parts, every]
  assert events == expected, events
  saved = {2: ["2", "4", "5"], 3: ["3", "6", "7"]}[every]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == saved


@pytest.mark.parametrize("snapshot, every, parts, warned", [
    (False, 100, 4, "has no effect without checkpoint.device_snapshot=true"),
    (True, 4, 4, "checkpoint.snapshot_parts=4 >= checkpoint.every=4"),
    (True, 5, 4, None), (True, 0, 4, None), (False, 2, 1, None), (True, 1, 1, None)])
def test_snapshot_parts_that_cannot_work_as_set_are_a_start_up_warning(snapshot, every, parts,
                                                                          warned):
  checkpoint_config = types.SimpleNamespace(device_snapshot=snapshot, every=every,
                                            snapshot_parts=parts)
  warning = config_lib.snapshot_parts_warning(checkpoint_config)
  assert warning == warned if warned is None else warned in warning


def test_a_device_snapshot_that_would_not_fit_beside_the_step_is_a_start_up_warning():
  gib = 2**30
  # The step's peak: 6 GiB of arguments, 3 of temporaries, outputs that are the donated
  # arguments (counted once) and half a GiB more of new outputs.
  analysis = types.SimpleNamespace(argument_size_in_bytes=6 * gib, temp_size_in_bytes=3 * gib,
                                   output_size_in_bytes=5.5 * gib, alias_size_in_bytes=5 * gib)
  level, line = memory.device_snapshot_report(analysis, 1.5 * gib, 16 * gib)
  assert level == logging.INFO and "1.50 GiB per device (11.00 GiB of 16.00 GiB" in line
  level, line = memory.device_snapshot_report(analysis, 7.5 * gib, 16 * gib)
  assert level == logging.WARNING, line
  assert "17.00 GiB, more than the device's 16.00 GiB" in line
  assert "set checkpoint.device_snapshot=false" in line
  assert memory.device_snapshot_report(None, gib, None)[0] == logging.INFO  # CPU: nothing to compare


def test_a_device_snapshot_that_exactly_fills_the_device_is_no_warning():
  # 6 + 3 GiB for the step and a 7 GiB copy: 16 GiB, all the device may allocate, and no more.
  gib = 2**30
  analysis = types.SimpleNamespace(argument_size_in_bytes=6 * gib, temp_size_in_bytes=3 * gib,
                                   output_size_in_bytes=6 * gib, alias_size_in_bytes=6 * gib)
  level, line = memory.device_snapshot_report(analysis, 7 * gib, 16 * gib)
  assert level == logging.INFO and "(16.00 GiB of 16.00 GiB with the step)" in line, line
  assert memory.device_snapshot_report(analysis, 7 * gib + 1, 16 * gib)[0] == logging.WARNING


def test_only_fields_that_change_what_is_computed_count_as_a_change():
  saved = _config().to_dict()
  later = _config(steps=99, log_every=7).to_dict()
  later["mesh"]["fsdp"], later["model"]["remat"], later["checkpoint"]["every"] = 8, "full", 5
  later["model"]["save_dropout_masks"] = True  # the same masks, kept or drawn again
  # A checkpoint records the kernel start-up resolved ('auto' on an H100: tokamax): another
  # kernel computes the same model.
  saved["model"]["attention"], later["model"]["attention"] = "tokamax", "cudnn"
  assert config_lib.trajectory_changes(saved, later) == []
  del saved["optim"]["grad_clip"]  # a field added since: reads as its default
  assert config_lib.trajectory_changes(saved, later) == []
  later["optim"]["learning_rate"], later["data"]["files"] = 1.0, ["a.txt"]
  assert config_lib.trajectory_changes(saved, later) == [
      "data.files: [] -> ['a.txt']", "optim.learning_rate: 0.002 -> 1.0"]


def test_a_resume_that_switches_the_dropout_generator_is_refused_naming_it():
  # rbg draws other masks from the same key: every step after the resume would differ.
  saved, later = _config().to_dict(), _config().to_dict()
  later["train"]["dropout_rng"] = "rbg"
  with pytest.raises(workdir_lib.ConfigChangedError,
                     match=r"step 2 .* another config: train.dropout_rng: 'threefry2x32' -> "
                           r"'rbg'\. .*allow_config_change=true"):
    workdir_lib.check_resume(saved, later, step=2, workdir="/run", allow=False)


def test_the_fields_a_resume_treats_apart_are_fields_of_the_config():
  fields = set(config_lib._flat(config_lib.default_config().to_dict()))
  named = set(config_lib.TRAJECTORY_FIELDS) | set(config_lib.FREE_FIELDS)
  assert named <= fields, sorted(named - fields)


def test_a_full_disk_ends_the_run_in_one_line_and_keeps_the_newest_good_checkpoint(
    tmp_path, monkeypatch):
  real_save = checkpoint._LoopDecidesPreemption.save

  def save(self, step, *args, **kwargs):
    if step == 4:  # as a full disk fails deep inside the writer, wrapped by its callers
      try:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))
      except OSError as error:
        raise ValueError("RESOURCE_EXHAUSTED: Error writing to OCDBT database") from error
    return real_save(self, step, *args, **kwargs)
  monkeypatch.setattr(checkpoint._LoopDecidesPreemption, "save", save)
  with pytest.raises(checkpoint.CheckpointWriteError,
                     match=r"Saving the checkpoint at step 4 to .*checkpoints failed: no space "
                           r"left on device \(\d+\.\d\d GiB free there\)\. Newest good "
                           r"checkpoint: step 2, intact\.") as error:
    train.train_and_evaluate(_config(steps=6), str(tmp_path))
  assert "\n" not in str(error.value)
  monkeypatch.setattr(checkpoint._LoopDecidesPreemption, "save", real_save)
  assert train.train_and_evaluate(_config(steps=6), str(tmp_path))["step"] == 6


def test_a_last_save_that_fails_as_the_checkpointer_closes_still_closes_the_metric_files(
    tmp_path, monkeypatch):
  # The last save's error comes out of close(): the metrics' files must be closed all the same.
  closed = []
  monkeypatch.setattr(train.metrics_lib.MetricsWriter, "close",
                      lambda self: closed.append("metrics"))

  def close(self):
    raise checkpoint.CheckpointWriteError("Saving the checkpoint at step 2 failed: no space")
  monkeypatch.setattr(checkpoint.Checkpointer, "close", close)
  with pytest.raises(checkpoint.CheckpointWriteError, match="no space"):
    train.train_and_evaluate(_config(steps=2), str(tmp_path))
  assert closed == ["metrics"]


def test_a_write_that_fails_in_the_background_is_named_by_its_own_step_at_the_next_save(
    tmp_path, monkeypatch):
  """Orbax lists step 4 while its write is in flight, failed or not: the error that the next
  save surfaces names step 4 as the one that failed, and step 2 as the newest good one."""
  saver = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), every=1, keep=3)
  state = {"w": np.arange(4.0, dtype=np.float32)}
  metadata = {"param_layout": checkpoint.parameter_layout(state)}
  try:
    saver.save(2, state, metadata)
    saver.wait()
    with monkeypatch.context() as patch:  # step 4's write runs out of disk
      _failing_writes(patch, OSError(errno.ENOSPC, "No space left on device"))
      saver.save(4, state, metadata)
    assert 4 in saver.steps()  # in flight: why the newest good one must leave it out
    with pytest.raises(checkpoint.CheckpointWriteError,
                       match=r"at step 4 to .* failed: no space left on device .*Newest good "
                             r"checkpoint: step 2, intact\."):
      saver.save(6, state, metadata)
  finally:
    saver.close()
  assert saver.steps() == [2]


def test_a_run_keeps_its_newest_checkpoint_keep_checkpoints(tmp_path):
  config = _config()
  config.checkpoint.update(every=1, keep=2)
  outputs = train._outputs(config, str(tmp_path))  # pylint: disable=protected-access
  state = {"w": np.arange(4.0, dtype=np.float32)}
  layout = checkpoint.parameter_layout(state)
  try:
    for at in (1, 2, 3, 4):
      outputs.checkpointer.save(at, state, {"param_layout": layout, "state_layout": layout})
  finally:
    outputs.checkpointer.close()
    outputs.writer.close()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "4"]


def test_start_over_moves_a_workdir_s_damaged_checkpoints_aside_and_trains_from_step_0(tmp_path):
  """checkpoint.start_over=true: a workdir whose every checkpoint is damaged (here one cut off
  mid-write) trains from step 0; the damaged ones are kept beside the folder, not deleted."""
  old = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), every=1, keep=3)
  state = {"w": np.arange(4.0, dtype=np.float32)}
  old.save(5, state, {"param_layout": checkpoint.parameter_layout(state)})
  old.close()
  rewrite_metadata(tmp_path / "checkpoints" / "5", lambda text: text[:len(text) // 2])
  config = _config(steps=2)
  with pytest.raises(checkpoint.UnusableCheckpointError, match="start_over=true"):
    train.train_and_evaluate(config, str(tmp_path))
  config.checkpoint.start_over = True
  assert train.train_and_evaluate(config, str(tmp_path))["step"] == 2
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  (aside,) = tmp_path.glob("checkpoints.damaged-*")
  assert sorted(os.listdir(aside)) == ["5"]


def _run(workdir, **data):
  """The command line's run, in this process."""
  config = _config()
  config.data.update(data)
  with pytest.raises(SystemExit) as stop:
    train.run(config, str(workdir))
  return stop.value.code


def test_a_failure_is_one_console_line_and_its_traceback_goes_to_the_workdir_log(tmp_path,
                                                                                  monkeypatch,
                                                                                  capfd):
  def broken(*args, **kwargs):
    raise KeyError("a bug deep in the loop")
  monkeypatch.setattr(train, "_train", broken)
  assert _run(tmp_path) == 1
  console = capfd.readouterr().err
  assert f"Stopped by KeyError: 'a bug deep in the loop' (traceback in {tmp_path}/train.log)" in (
      console)
  assert "Traceback" not in console
  log = (tmp_path / "train.log").read_text()
  assert "Traceback (most recent call last)" in log and "def broken" not in console
  assert "raise KeyError" in log


def test_a_run_out_of_device_memory_is_one_line_with_what_to_change_not_a_bug_report(
    tmp_path, monkeypatch, capfd):
  """XLA's RESOURCE_EXHAUSTED at the first step (a GPU's allocation, a CPU's) comes from the
  config's size: the line says what to change, as aot and bench do; the traceback stays in the
  log."""
  def too_big(*args, **kwargs):
    raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 93764892696 bytes.\n"
                       + "\n".join(f"  frame {i}" for i in range(30)))
  monkeypatch.setattr(train, "_train", too_big)
  assert _run(tmp_path) == 1
  console = capfd.readouterr().err
  last = console.strip().splitlines()[-1]
  assert ("The run does not fit in device memory (RESOURCE_EXHAUSTED: Out of memory allocating "
          "93764892696 bytes.); try ") in last
  assert "model.remat=full" in last and "optim.grad_accum_steps=2" in last
  assert "Stopped by" not in console and "frame" not in console
  assert "frame 29" in (tmp_path / "train.log").read_text()


def test_only_xla_running_out_of_device_memory_is_read_as_the_config_s_size():
  first = "RESOURCE_EXHAUSTED: Out of memory allocating 5 bytes."
  assert memory.out_of_memory(RuntimeError(first + "\n  frame 0")) == first
  hbm = "RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm. Used 20G of 16G hbm."
  assert memory.out_of_memory(RuntimeError(hbm)) == hbm
  early = ("RESOURCE_EXHAUSTED: Aborting compilation early because it's unlikely to have enough "
           "device memory. Requires 20.50G, has 15.75G available.")  # libtpu, before compiling
  assert memory.out_of_memory(RuntimeError(early)) == early
  for other in ("RESOURCE_EXHAUSTED: Quota exceeded for requests to the bucket",
                "RESOURCE_EXHAUSTED: Ran out of memory in memory space vmem (a kernel's scratch)",
                "INTERNAL: out of memory in a test double"):
    assert memory.out_of_memory(RuntimeError(other)) is None, other


def test_a_run_stopped_by_non_finite_steps_ends_in_its_message_not_as_a_bug(tmp_path,
                                                                           monkeypatch, capfd):
  """Non-finite steps come from the data or the config (a learning rate too high), not from a
  bug in glmjax: the console's last line is the error's own advice, exit status 1, with no
  "Stopped by" naming its type and no traceback."""
  _poison(monkeypatch, bad_steps=set(range(1, 100)))  # every step from the first is NaN
  config = _config(steps=6, max_nonfinite_steps=2)
  with pytest.raises(SystemExit) as stop:
    train.run(config, str(tmp_path))
  assert stop.value.code == 1
  err = capfd.readouterr().err
  last = err.strip().splitlines()[-1]
  assert "2 consecutive steps" in last and "Stopped by" not in last
  assert "Traceback" not in err


def test_an_unwritable_workdir_is_one_line_naming_it(tmp_path, capfd):
  (tmp_path / "file").write_text("not a folder")
  assert _run(tmp_path / "file" / "run") == 1
  console = capfd.readouterr().err.strip().splitlines()
  assert len(console) == 1 and f"--workdir={tmp_path}/file/run cannot be written" in console[0]


def test_a_train_started_in_a_workdir_another_train_holds_is_one_line_and_writes_nothing(
    tmp_path, capfd):
  run = tmp_path / "run"
  run.mkdir()
  held = workdir_lib.lock(str(run), 0)
  try:
    assert _run(run) == 1
  finally:
    held.close()
  console = capfd.readouterr().err.strip().splitlines()
  assert len(console) == 1 and f"--workdir={run} is in use by another train (pid" in console[0]
  assert os.listdir(run) == [workdir_lib.LOCK_FILE]  # no log, config or checkpoint written


def test_a_damaged_tokenizer_is_one_line_without_a_traceback(tmp_path, capfd):
  (tmp_path / "tokenizer.json").write_bytes(b"\x7fELF\x02\x01" + bytes(range(256)))
  assert _run(tmp_path / "run", tokenizer="hf",
              tokenizer_path=str(tmp_path / "tokenizer.json")) == 1
  console = capfd.readouterr().err
  assert "cannot be read as a tokenizer.json" in console and "Traceback" not in console
