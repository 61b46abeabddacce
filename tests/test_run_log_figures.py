"""The figures a run's log and TensorBoard give a user: the parameter count, the learning rate
at the last step, the step of each evaluation, the loop's time without the compiles, and the
config as it ran; checked across a run and its resume."""
import json
import logging
import os
import re
import time
import types

import ml_collections

from glmjax import step as step_lib, train
from glmjax.model import model_config
from test_loop import _small_run_config

COMPILE_S = 1000.0  # of train's clock, per compiled train step: far more than the loop takes


def test_a_run_and_its_resume_log_their_own_figures(tmp_path, monkeypatch, caplog):
  """Steps 1-2, then a resume to step 4, each evaluated every 2 steps with attention 'auto'.
  Compiling the train step takes COMPILE_S seconds of train's clock; the loop's take real time."""
  caplog.set_level(logging.INFO, logger="glmjax")
  offset = [0.0]
  # train's own `time`: the module's every function, its perf_counter shifted by the compiles.
  clock = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time)
                                   if not name.startswith("__")})
  clock.perf_counter = lambda: time.perf_counter() + offset[0]
  monkeypatch.setattr(train, "time", clock)
  compile_train = step_lib.Program.compile_train_step

  def slow_compile(self, *args):
    compiled = compile_train(self, *args)
    offset[0] += COMPILE_S
    return compiled
  monkeypatch.setattr(step_lib.Program, "compile_train_step", slow_compile)
  for steps in (2, 4):
    config = _small_run_config(steps=steps, eval_every=2, eval_batches=1)
    config.model.attention = "auto"
    train.train_and_evaluate(config, str(tmp_path))
  text = caplog.text
  # Each evaluation is named by the step whose parameters it scored (metrics.jsonl's eval/).
  said = re.findall(r"eval at step (\d+) \|", text)
  assert said == ["2", "4"], said
  # The rate line names each run's last step, the resume's included (not its 2 steps' count).
  said = re.findall(r"at this run's last step, (\d+),", text)
  assert said == ["2", "4"], said
  # "Finished" times the loop: the compile before it is logged on its own line.
  finished = re.findall(r"Finished (\d+) steps in ([\d.]+) s", text)
  assert [n for n, _ in finished] == ["2", "2"], finished
  assert all(float(seconds) < COMPILE_S for _, seconds in finished), finished
  # The parameter count is the model's, from its shape (the optimizer's moments left out).
  with open(tmp_path / "config.json", encoding="utf-8") as f:
    model = ml_collections.ConfigDict(json.load(f)["model"])
  count = model_config.param_count(model_config.ModelConfig.from_config(model))
  said = re.findall(r"Parameters: ([\d,]+) ", text)
  assert said == [f"{count:,}"] * 2, (said, count)
  # TensorBoard's config text is the resolved one: the kernel that ran (on CPU, xla).
  events = b"".join(entry.read_bytes() for entry in (tmp_path / "tensorboard").iterdir()
                    if entry.is_file())
  assert b'"attention": "xla"' in events and b'"attention": "auto"' not in events
  assert len([name for name in os.listdir(tmp_path / "tensorboard")
              if name.startswith("events")]) == 2  # one writer per run, both read above
