"""The main job end to end: learning, exact resume after SIGKILL, resharded restore, NaN policy."""
import importlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from glmjax import checkpoint as checkpoint_lib
from glmjax import config as config_lib
from glmjax import loop, train
from glmjax import run_log as run_log_lib
from glmjax.data import pipeline as pipeline_lib

import cpu_devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The runs here are the :local config with a narrower model on shorter sequences: on 2 CPU cores
# with 8 simulated devices a step then costs a quarter as much, and every claim below (learning,
# exact resume, resharding, processes, signals) holds for it as for the :local model.
SMALL = {"model.hidden_size": 64, "model.max_position": 64, "data.seq_len": 64}


def _local_config(**train_overrides):
  config = importlib.import_module("configs.base").get_config("local")
  for field, value in SMALL.items():
    section, name = field.split(".")
    config[section][name] = value
  config.train.update(**{"eval_every": 0, **train_overrides})
  return config


def _losses(workdir):
  """step -> loss from metrics.jsonl; a later line for the same step (after a resume) wins."""
  losses = {}
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      if not line.endswith("\n"):
        break  # a line still being written by a running trainer
      record = json.loads(line)
      if "loss" in record and "nonfinite" not in record:
        losses[record["step"]] = record["loss"]
  return losses


def _wait_for_step(workdir, step, timeout_s=300):
  """Until a running trainer has logged `step` in workdir/metrics.jsonl."""
  deadline = time.time() + timeout_s
  while time.time() < deadline:
    if (workdir / "metrics.jsonl").exists() and max(_losses(workdir) or [0]) >= step:
      return
    time.sleep(0.2)
  raise TimeoutError(f"step {step} not logged in {workdir} within {timeout_s} s")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(workdir, result) of one 100-step run in this process: the learning test checks it and
  the init_from test starts a second stage from it."""
  workdir = tmp_path_factory.mktemp("trained")
  config = _local_config(steps=100, log_every=10, eval_every=50, eval_batches=1)
  # XLA's optimisations (off in conftest for the many short runs) halve 100 steps' time.
  disabled = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  try:
    return workdir, train.train_and_evaluate(config, str(workdir))
  finally:
    jax.config.update("jax_disable_most_optimizations", disabled)


def test_local_config_learns_and_writes_outputs(trained):
  tmp_path, result = trained
  losses = _losses(str(tmp_path))
  assert result["step"] == 100
  assert losses[100] < losses[10] - 1.0, losses
  assert os.path.isdir(tmp_path / "checkpoints" / "100")
  assert os.listdir(tmp_path / "tensorboard")
  assert json.load(open(tmp_path / "config.json"))["model"]["hidden_size"] == (
      SMALL["model.hidden_size"])
  with open(tmp_path / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert any("eval/loss" in r for r in records)
  last_train = [r for r in records if "grad_norm" in r][-1]
  for key in ("param_norm", "learning_rate", "accuracy", "loss_blank", "step_time_s",
              "tokens_per_s", "tflops_per_device", "mfu"):
    assert key in last_train, key


def _train_command(workdir, steps, *extra):
  """The :local run with the paper's dropout rates: what resumes, reshards and spreads over
  processes bit for bit is then the dropout rng plumbing too, not a deterministic model."""
  return [sys.executable, "-m", "glmjax.train", "--config=configs/base.py:local",
          f"--workdir={workdir}", f"--config.train.steps={steps}", "--config.train.log_every=1",
          "--config.train.eval_every=0", "--config.checkpoint.every=4",
          "--config.checkpoint.keep=3", "--config.model.hidden_dropout=0.1",
          "--config.model.attention_dropout=0.1",
          *(f"--config.{field}={value}" for field, value in SMALL.items()), *extra]


def _env(devices=8):
  return {**os.environ, "XLA_FLAGS": cpu_devices.xla_flags(devices),
          "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}


def _host_env(index, port):
  """Host `index` of two with 4 CPU devices each. Process 1 compiles every program afresh each
  run (its cache key holds its own devices and only process 0 writes the cache); without XLA's
  optimisations, as in this process (conftest), that takes half as long. The losses differ from
  the optimised programs' by ~1e-7 relative, far inside the tolerance of the comparison below."""
  return {**_env(4), "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
          "JAX_PROCESS_ID": str(index), "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
          "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}


REFERENCE_STEPS = 40  # long enough that the kill after step 9 lands mid-run on a loaded machine


@pytest.fixture(scope="module")
def reference_losses(tmp_path_factory):
  """step -> loss of one uninterrupted _train_command run on 8 devices (the default mesh, data=8):
  what a killed and resumed run, a resharded one and two processes must reproduce. The schedule
  and the batches do not depend on train.steps, so its first steps are those of a shorter run."""
  workdir = tmp_path_factory.mktemp("reference")
  subprocess.run(_train_command(workdir, REFERENCE_STEPS), cwd=REPO, env=_env(8), check=True,
                 capture_output=True)
  losses = _losses(workdir)
  assert sorted(losses) == list(range(1, REFERENCE_STEPS + 1))
  return losses


def test_kill_and_resume_gives_identical_losses(tmp_path, reference_losses):
  steps = REFERENCE_STEPS
  interrupted = tmp_path / "interrupted"
  # Its saves copy the state on the devices and write the copy once it is on the host, sent in
  # two parts over two steps; the reference saves directly: the same losses show that the copy
  # changes nothing.
  snapshot = ("--config.checkpoint.device_snapshot=true", "--config.checkpoint.snapshot_parts=2")
  # Kill the second run with SIGKILL once it has logged step 9 (checkpoint 4 is on disk by
  # then, and 8 most likely).
  process = subprocess.Popen(_train_command(interrupted, steps, *snapshot), cwd=REPO, env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _wait_for_step(interrupted, 9)
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed_at = max(_losses(interrupted))
  assert killed_at < steps
  restart = subprocess.run(_train_command(interrupted, steps, *snapshot), cwd=REPO, env=_env(),
                           check=True, capture_output=True, text=True)
  resumed_at = int(re.search(r"Resumed from the checkpoint at step (\d+)", restart.stderr)[1])
  assert 4 <= resumed_at <= killed_at  # a restart from scratch would log the same losses
  expected, resumed = reference_losses, _losses(interrupted)
  assert sorted(expected) == sorted(resumed) == list(range(1, steps + 1))
  assert [resumed[s] for s in sorted(resumed)] == [expected[s] for s in sorted(expected)]


def test_checkpoint_from_8_devices_restores_on_4(tmp_path, reference_losses):
  resumed = tmp_path / "resumed"
  # Saved as a device snapshot: one replica of each shard (data=2) goes to the host.
  on_8 = ("--config.mesh.data=2", "--config.mesh.fsdp=4",
          "--config.checkpoint.device_snapshot=true")
  subprocess.run(_train_command(resumed, 4, *on_8), cwd=REPO, env=_env(8), check=True,
                 capture_output=True)
  result = subprocess.run(
      _train_command(resumed, 6, "--config.mesh.data=1", "--config.mesh.fsdp=4"), cwd=REPO,
      env=_env(4), check=True, capture_output=True, text=True)
  assert "Resumed from the checkpoint at step 4" in result.stderr
  assert "Finished 2 steps" in result.stderr  # this run's steps, 5 and 6
  expected, got = reference_losses, _losses(resumed)
  assert sorted(got) == list(range(1, 7))
  # Other meshes (the reference ran on data=8) sum in another order: equal up to float rounding,
  # not bit for bit. Steps 1-4 ran on 8 devices (data=2, fsdp=4), 5 and 6 on 4 after the restore.
  np.testing.assert_allclose([got[s] for s in range(1, 7)], [expected[s] for s in range(1, 7)],
                             rtol=1e-4)


def _poison(monkeypatch, bad_steps):
  original = pipeline_lib.BatchPipeline.build_rows

  def build_rows(self, step, rows):
    batch = original(self, step, rows)
    if step in bad_steps:
      batch = {**batch, "loss_mask": np.full_like(batch["loss_mask"], np.nan)}
    return batch
  monkeypatch.setattr(pipeline_lib.BatchPipeline, "build_rows", build_rows)


def test_nan_batch_is_skipped_and_logged(tmp_path, monkeypatch, caplog):
  _poison(monkeypatch, bad_steps={2})
  caplog.set_level(logging.INFO, logger="glmjax")
  result = train.train_and_evaluate(_local_config(steps=5, log_every=1), str(tmp_path))
  # Start-up says where the schedule leaves a run shortened to 5 of :local's 300 steps.
  assert "at this run's last step, 5, it is" in caplog.text
  assert result["step"] == 5
  with open(tmp_path / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if r.get("nonfinite")] == [3]
  assert "non-finite loss, gradient or update" in caplog.text
  # The start-up line's rate for the last step is the one that step's log line shows.
  said = re.search(r"at this run's last step, 5, it is (\S+)", caplog.text).group(1)
  assert said == f"{records[-1]['learning_rate']:.2e}"


def test_repeated_nans_stop_the_run(tmp_path, monkeypatch):
  _poison(monkeypatch, bad_steps=set(range(2, 100)))
  config = _local_config(steps=20, log_every=1, max_nonfinite_steps=3)
  with pytest.raises(loop.NonFiniteError, match="3 consecutive steps"):
    train.train_and_evaluate(config, str(tmp_path))


def test_a_run_stopped_by_non_finite_steps_keeps_no_checkpoint_of_them(tmp_path, monkeypatch):
  """Steps 6-8 are non-finite and the run stops at 8 (3 in a row): step 8 is on the save grid,
  but its checkpoint would hold the skipped steps, so only step 4's is there to resume from."""
  _poison(monkeypatch, bad_steps=set(range(5, 100)))  # batch k feeds step k + 1
  config = _local_config(steps=20, log_every=1, max_nonfinite_steps=3)
  config.checkpoint.update(every=4, keep=3)
  with pytest.raises(loop.NonFiniteError, match="last at step 8"):
    train.train_and_evaluate(config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4"]


def test_bad_config_fails_before_compilation(tmp_path):
  config = _local_config()
  config.model.num_heads = 5
  start = time.perf_counter()
  with pytest.raises(config_lib.ConfigError, match="model.num_heads=5"):
    train.train_and_evaluate(config, str(tmp_path))
  assert time.perf_counter() - start < 5
  assert not (tmp_path / "checkpoints").exists()


def test_command_line_reports_unknown_and_bad_fields(tmp_path):
  unknown = subprocess.run(_train_command(tmp_path, 2, "--config.model.hiden_size=3"), cwd=REPO,
                           env=_env(), capture_output=True, text=True)
  assert unknown.returncode == 1 and "hiden_size" in unknown.stderr
  assert "Traceback" not in unknown.stderr
  bad = subprocess.run(_train_command(tmp_path, 2, "--config.mesh.data=3"), cwd=REPO,
                       env=_env(), capture_output=True, text=True)
  assert bad.returncode == 1 and "mesh" in bad.stderr and "Traceback" not in bad.stderr


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
  process = subprocess.Popen(_train_command(tmp_path, 500), cwd=REPO, env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  _wait_for_step(tmp_path, 5)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr[-2000:]
  stopped_at = max(_losses(tmp_path))
  assert 5 <= stopped_at < 500
  assert "on SIGTERM; checkpoint saved" in stderr
  assert (tmp_path / "checkpoints" / str(stopped_at)).is_dir()


def test_sigterm_during_a_restore_ends_start_up_before_the_compile_and_leaves_the_checkpoints(
    tmp_path, trained, monkeypatch, caplog):
  """A preemption notice while a resume reads its checkpoint: start-up ends there (no compile,
  no step), the run returns normally (exit 0, so SLURM's requeue still happens), the checkpoint
  being read is not taken for a damaged one, and the caller's SIGTERM handler is back."""
  workdir = tmp_path / "run"
  shutil.copytree(trained[0], workdir)
  before = sorted(os.listdir(workdir / "checkpoints"))
  heard = []
  recorder = lambda *_: heard.append("SIGTERM")  # noqa: E731 - not the default: without a handler of
  previous = signal.signal(signal.SIGTERM, recorder)  # train's, this test fails, pytest lives on
  read = checkpoint_lib.Checkpointer.read_metadata

  def read_after_a_sigterm(self, step):
    os.kill(os.getpid(), signal.SIGTERM)
    return read(self, step)
  monkeypatch.setattr(checkpoint_lib.Checkpointer, "read_metadata", read_after_a_sigterm)
  caplog.set_level(logging.INFO, logger="glmjax")  # "Compiled the train step ..." is INFO
  try:
    config = _local_config(steps=200, log_every=10, eval_every=50, eval_batches=1)
    result = train.train_and_evaluate(config, str(workdir))
    after = signal.getsignal(signal.SIGTERM)
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert result == {"stopped": "sigterm"} and heard == []
  assert "SIGTERM during start-up" in caplog.text
  assert "Resumed from the checkpoint at step 100" in caplog.text  # the phase ran to its end
  assert "Compiled the train step" not in caplog.text and "skipp" not in caplog.text
  assert sorted(os.listdir(workdir / "checkpoints")) == before
  assert after is recorder


def test_sigterm_while_the_step_compiles_ends_start_up_after_the_compile_with_exit_0(tmp_path):
  """Start-up stops once the compile returns (the handler only sets a flag: raising into jax's
  wait for a native compile was seen to crash the process at exit), no step runs, exit 0."""
  env = {**_env(), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache")}  # a real compile
  process = subprocess.Popen(_train_command(tmp_path / "run", 50), cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  lines = []
  for line in process.stderr:  # "Parameters: ..." comes after the restore, before the compile
    lines.append(line)
    if "Parameters:" in line:
      time.sleep(2)  # into the compile, which takes about 6 s on 2 cores
      process.send_signal(signal.SIGTERM)
      break
  stderr = "".join(lines) + process.communicate(timeout=300)[1]
  assert process.returncode == 0, stderr[-3000:]
  assert "SIGTERM during start-up" in stderr and "step 1/" not in stderr
  assert not (tmp_path / "run" / "checkpoints").exists() or not os.listdir(
      tmp_path / "run" / "checkpoints")


def test_a_sigterm_the_command_heard_before_train_and_evaluate_began_ends_start_up(
    tmp_path, monkeypatch, caplog):
  """train's command listens from before its log is set up and hands that one flag to
  train_and_evaluate: a SIGTERM in between ends start-up, and nothing is trained or saved."""
  enter = run_log_lib.RunLog.__enter__

  def enter_then_sigterm(run_log):
    os.kill(os.getpid(), signal.SIGTERM)  # the command's flag is listening by now
    return enter(run_log)

  monkeypatch.setattr(run_log_lib.RunLog, "__enter__", enter_then_sigterm)
  # The command's console and log-file set-up would change logging for the tests after this one.
  monkeypatch.setattr(train.logs, "setup_console", lambda process_index: None)
  monkeypatch.setattr(train.logs, "attach_file", lambda path, shown=None: None)
  config = _local_config(steps=2)
  config.train.compilation_cache_dir = "none"  # the tests' shared cache stays theirs
  previous = signal.getsignal(signal.SIGTERM)
  with caplog.at_level(logging.INFO):
    train.run(config, str(tmp_path))
  assert "Stopped on SIGTERM during start-up" in caplog.text
  assert not (tmp_path / "checkpoints").exists() or not os.listdir(tmp_path / "checkpoints")
  assert signal.getsignal(signal.SIGTERM) is previous


def test_a_sigterm_after_training_returned_is_not_taken_for_one_in_the_loop(tmp_path, caplog):
  """The command's flag outlives train_and_evaluate (the log's last copy): a signal then is
  not answered with a save that will never come."""
  with loop.TerminationFlag() as flag:
    assert train.train_and_evaluate(_local_config(steps=2), str(tmp_path), flag)["step"] == 2
    caplog.clear()
    os.kill(os.getpid(), signal.SIGTERM)
  assert caplog.records[-1].getMessage() == (
      "SIGTERM received: training has ended (nothing new to save).")


def test_profiler_trace_on_request_without_an_eval_split(tmp_path):
  # The trace window runs past the last step: the trace is still written at the end.
  config = _local_config(steps=4, log_every=2, profile_start=2, profile_steps=10)
  config.data.eval_fraction = 0.0  # no held-out split is needed when evaluation is off
  train.train_and_evaluate(config, str(tmp_path))
  traces = [name for _, _, names in os.walk(tmp_path / "tensorboard" / "plugins" / "profile")
            for name in names if name.endswith(".xplane.pb")]
  assert traces


def test_two_processes_train_like_one(tmp_path, reference_losses, coordinator_port):
  """Two hosts of 4 CPU devices each (jax.distributed, gloo) log the losses of one 8-device run.
  Their device-snapshot save of step 4, sent in two parts, restores (a data=8 state's one
  replica would be sent by one host alone, which Orbax refuses: it stays on the devices for
  Orbax to transfer)."""
  steps = 5
  multi = tmp_path / "multi"
  snapshot = ("--config.checkpoint.device_snapshot=true", "--config.checkpoint.snapshot_parts=2")
  processes = [subprocess.Popen(
      _train_command(multi, steps, *snapshot), cwd=REPO, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True, env=_host_env(index, coordinator_port))
      for index in range(2)]
  outputs = [process.communicate(timeout=600)[1] for process in processes]
  for process, stderr in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
  assert "over 2 process(es)" in outputs[0]
  assert "step 1/" not in outputs[1]  # only process 0 writes progress
  # Process 0 alone writes the metrics and train.log; process 1 keeps its own log file.
  with open(multi / "metrics.jsonl", encoding="utf-8") as f:
    assert [json.loads(line)["step"] for line in f] == list(range(1, steps + 1))
  assert (multi / "train.process-1.log").is_file()
  expected, got = reference_losses, _losses(multi)
  assert sorted(got) == list(range(1, steps + 1))
  np.testing.assert_allclose([got[s] for s in sorted(got)], [expected[s] for s in sorted(got)],
                             rtol=1e-5)
  assert sorted(os.listdir(multi / "checkpoints")) == ["4", "5"]
  shutil.rmtree(multi / "checkpoints" / "5")
  resumed = subprocess.run(_train_command(multi, steps), cwd=REPO, env=_env(), check=True,
                           capture_output=True, text=True)
  assert "Resumed from the checkpoint at step 4" in resumed.stderr
  np.testing.assert_allclose(_losses(multi)[5], expected[5], rtol=1e-5)


def test_sigterm_to_one_host_stops_all_hosts_at_one_step(tmp_path, coordinator_port):
  """jax's preemption service spreads the notice; every host saves the same step and exits."""
  processes = [subprocess.Popen(
      _train_command(tmp_path, 500), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      text=True, env=_host_env(index, coordinator_port)) for index in range(2)]
  _wait_for_step(tmp_path, 4)
  processes[1].send_signal(signal.SIGTERM)
  stops = []
  for process in processes:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    stops.append(stderr)
  stopped_at = [int(re.search(r"Stopped at step (\d+) on SIGTERM", text).group(1))
                for text in stops]
  assert stopped_at[0] == stopped_at[1]
  saved = sorted(int(name) for name in os.listdir(tmp_path / "checkpoints") if name.isdigit())
  assert saved[-1] == stopped_at[0] and 4 <= saved[-1] < 500


def test_init_from_another_run_starts_from_its_parameters(tmp_path, trained, caplog):
  first, second, fresh = trained[0], tmp_path / "second", tmp_path / "fresh"  # 100 steps
  # Stage 2 with another schedule, as GLM-10B continued its 512-token run at 1024 tokens.
  config = _local_config(steps=1, log_every=1)
  config.optim.learning_rate = 1e-4
  config.mesh.update(data=2, fsdp=4)  # read into another mesh than the first run's (8, 1)
  config.checkpoint.init_from = str(first)
  train.train_and_evaluate(config, str(second))
  config.checkpoint.init_from = ""
  train.train_and_evaluate(config, str(fresh))
  before, continued, scratch = _losses(first), _losses(second), _losses(fresh)
  assert continued[1] < scratch[1] - 1.0
  assert abs(continued[1] - before[100]) < 0.5
  # Stopped and started again with more steps, stage 2 resumes from its own checkpoint:
  # its step 1 is not trained again from init_from's parameters.
  config.checkpoint.init_from, config.train.steps = str(first), 2
  assert train.train_and_evaluate(config, str(second))["step"] == 2
  with open(second / "metrics.jsonl", encoding="utf-8") as f:
    assert [r["step"] for r in map(json.loads, f) if "loss" in r] == [1, 2]
  assert "No checksum was saved" not in caplog.text  # both restores verified every array
