"""python -m glmjax.evaluate as a command: its flags, how it joins a multi-host job, its console
report and its one-line errors (the report's figures: test_evaluate.py)."""
import functools
import re
import types

import jax
import jax.numpy as jnp
import pytest
from absl import app
from absl import flags as absl_flags

from glmjax import config as config_lib
from glmjax import distributed, evaluate, held_out, logs
from glmjax.data import text_files


def test_the_command_hands_its_flags_to_the_evaluation_and_refuses_extra_words(monkeypatch):
  calls = []
  monkeypatch.setattr(evaluate, "run", lambda workdir, **kw: calls.append((workdir, kw)))
  given = dict(cloze="c.jsonl", batches=3, batch_size=16, data_source="builtin", out="r.json")
  monkeypatch.setattr(evaluate, "flags", types.SimpleNamespace(
      FLAGS=types.SimpleNamespace(workdir="/w", **given)))
  evaluate.main(["evaluate"])
  assert calls == [("/w", given)]
  with pytest.raises(app.UsageError, match="Unexpected arguments: extra"):
    evaluate.main(["evaluate", "extra"])
  assert len(calls) == 1


def test_batches_0_without_a_cloze_file_is_refused_before_the_model_loads(monkeypatch):
  """Nothing would be scored: the model would load only to write an empty report."""
  calls = []
  monkeypatch.setattr(evaluate, "run", lambda workdir, **kw: calls.append((workdir, kw)))
  given = dict(cloze=None, batches=0, batch_size=None, data_source=None, out=None)
  monkeypatch.setattr(evaluate, "flags", types.SimpleNamespace(
      FLAGS=types.SimpleNamespace(workdir="/w", **given)))
  with pytest.raises(app.UsageError, match="--batches=0 .* no --cloze .* nothing to evaluate"):
    evaluate.main(["evaluate"])
  assert not calls


def test_flags_left_out_leave_the_run_s_own_settings(monkeypatch):
  """Every flag but --workdir defaults to None, which `run` reads as "the run's": --batches
  left out must not skip the held-out report (0 would)."""
  calls, values = [], absl_flags.FlagValues()
  monkeypatch.setattr(evaluate, "run", lambda workdir, **kw: calls.append((workdir, kw)))
  monkeypatch.setattr(evaluate, "flags", types.SimpleNamespace(FLAGS=values, **{
      name: functools.partial(getattr(absl_flags, name), flag_values=values)
      for name in ("DEFINE_string", "DEFINE_integer")}))
  evaluate.define_flags()
  evaluate.main(values(["evaluate", "--workdir=/w"]))
  assert calls == [("/w", dict(cloze=None, batches=None, batch_size=None, data_source=None,
                               out=None))]


def test_the_command_reports_a_user_error_in_one_line(tmp_path, capsys):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"text": "a b", "answer": "c"}\nnot json\n')
  for workdir, cloze, message in ((str(tmp_path / "missing"), None, "no config.json there"),
                                  (str(tmp_path), str(path), f"{path} line 2: not JSON")):
    with pytest.raises(SystemExit) as raised:
      evaluate.run(workdir, cloze=cloze)
    assert raised.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_running_out_of_device_memory_is_one_line_that_says_to_lower_the_batch_size(
    tmp_path, monkeypatch, capsys):
  def out_of_memory(workdir, **kwargs):
    raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8.00GiB.")
  monkeypatch.setattr(evaluate, "evaluate", out_of_memory)
  with pytest.raises(SystemExit) as raised:
    evaluate.run(str(tmp_path))
  lines = capsys.readouterr().err.strip().splitlines()
  assert raised.value.code == 1 and len(lines) == 1, lines
  assert "Out of device memory (RESOURCE_EXHAUSTED" in lines[0] and "--batch_size" in lines[0]


def test_the_command_joins_the_multi_host_job_before_it_touches_a_device(tmp_path, monkeypatch,
                                                                       capsys):
  order = []
  monkeypatch.setattr(distributed, "initialize",
                      lambda timeout_s, env=None: order.append(("join", timeout_s)))
  monkeypatch.setattr(logs, "setup_console", lambda index: order.append(("console", index)))
  with pytest.raises(SystemExit):
    evaluate.run(str(tmp_path / "missing"))
  # A console for every process's join line first, then process 0's after the join.
  assert order == [("console", 0), ("join", config_lib.train_defaults().distributed_timeout_s),
                   ("console", 0)]
  # A run's workdir: hosts wait as long as that run's training waited for them.
  (tmp_path / "config.json").write_text('{"train": {"distributed_timeout_s": 77}}')
  order.clear()
  with pytest.raises(SystemExit):
    evaluate.run(str(tmp_path))  # no checkpoint yet: a one-line error after the join
  assert order == [("console", 0), ("join", 77), ("console", 0)]
  # A torn config.json: the default wait, and the one-line error after the join, not a traceback.
  (tmp_path / "config.json").write_text('{"train": {')
  order.clear()
  with pytest.raises(SystemExit):
    evaluate.run(str(tmp_path))
  assert order == [("console", 0), ("join", config_lib.train_defaults().distributed_timeout_s),
                   ("console", 0)]


def test_a_job_that_cannot_be_joined_is_one_line_and_exit_status_1(tmp_path, monkeypatch,
                                                                    capsys):
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  for name, value in (("JAX_COORDINATOR_ADDRESS", "n1:1234"), ("JAX_NUM_PROCESSES", "4")):
    monkeypatch.setenv(name, value)
  for name in ("JAX_PROCESS_ID", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"):
    monkeypatch.delenv(name, raising=False)
  with pytest.raises(SystemExit) as raised:
    evaluate.run(str(tmp_path))
  lines = capsys.readouterr().err.strip().splitlines()
  assert raised.value.code == 1 and len(lines) == 1 and "JAX_PROCESS_ID" in lines[0], lines


def test_only_process_0_prints_the_report_of_a_multi_host_evaluation(tmp_path, monkeypatch,
                                                                      capsys):
  # Every host computes the same report: one copy on the console, not one per host.
  monkeypatch.setattr(distributed, "initialize", lambda timeout_s, env=None: None)
  monkeypatch.setattr(logs, "setup_console", lambda index: None)
  report = {"workdir": str(tmp_path), "step": 3, "out": "r.json"}
  monkeypatch.setattr(evaluate, "evaluate", lambda workdir, **kw: report)
  for process, printed in ((1, ""), (0, f"Evaluation of {tmp_path} at step 3\nwritten to "
                                        "r.json\n")):
    monkeypatch.setattr(jax, "process_index", lambda process=process: process)
    assert evaluate.run(str(tmp_path)) == report
    assert capsys.readouterr().out == printed, process


def test_the_report_keeps_its_columns_apart_for_an_untrained_model_s_perplexity():
  held_out = {"batches": 1, "batch_size": 2, "seq_len": 8, "data": "builtin"}
  for name in ("", "_blank", "_sentence", "_document"):
    held_out.update({f"loss{name}": 30.0782, f"accuracy{name}": 0.0421,
                     f"perplexity{name}": 1.1556e13, f"tokens{name}": 393})
  text = evaluate.format_report({"workdir": "/w", "step": 0, "held_out": held_out,
                                 "out": "/w/eval/step_0.json"})
  row = next(line for line in text.splitlines() if line.strip().startswith("all"))
  assert row.split() == ["all", "30.0782", "0.042", "1.156e+13", "393"]


def test_the_console_report_counts_batches_and_cut_contexts_as_they_were():
  scores = {"batches": 1, "batch_size": 2, "seq_len": 8, "data": "builtin"}
  for name in ("", "_blank", "_sentence", "_document"):
    scores.update({f"loss{name}": 2.0, f"accuracy{name}": 0.5, f"perplexity{name}": 7.389,
                     f"tokens{name}": 4})
  cloze = {"file": "c.jsonl", "count": 3, "correct": 2, "accuracy": 2 / 3,
           "mean_log_likelihood": -1.5, "contexts_cut": 0, "max_row_tokens": 64}
  report = {"workdir": "/w", "step": 0, "held_out": scores, "cloze": cloze, "out": "/w/r.json"}
  lines = evaluate.format_report(report).splitlines()
  assert lines[1] == "held-out: 1 batch of 2 x 8 tokens, builtin"
  assert "cloze: c.jsonl, 3 texts" in lines and not any("cut" in line for line in lines)
  scores["batches"], cloze["contexts_cut"] = 2, 1
  lines = evaluate.format_report(report).splitlines()
  assert lines[1] == "held-out: 2 batches of 2 x 8 tokens, builtin"
  assert ("cloze: c.jsonl, 3 texts (1 contexts cut from the left to fit rows of 64 tokens)"
          in lines)


def test_the_data_source_and_batch_size_flags_set_the_fields_they_name(tmp_path):
  # files: a comma list read as data.files reads it: split at commas (spaces and a last comma
  # allowed) unless the whole names a file, such as one with a comma in its name.
  for name in ("a.txt", "b.jsonl", "d,e.txt"):
    (tmp_path / name).write_text("a document\n")
  def files(given):
    overrides = evaluate.data_overrides(f"files:{given}", 16)
    assert (overrides["batch_size"], overrides["source"]) == (16, "files")
    return text_files.expand_globs(list(overrides["files"]))
  path = lambda *names: [str(tmp_path / name) for name in names]  # noqa: E731
  assert files(f"{tmp_path}/*.txt,{tmp_path}/*.jsonl") == path("a.txt", "d,e.txt", "b.jsonl")
  assert files(f"{tmp_path}/a.txt, {tmp_path}/b.jsonl,") == path("a.txt", "b.jsonl")
  assert files(f"{tmp_path}/d,e.txt") == path("d,e.txt")
  assert evaluate.data_overrides("prepared:/data/run", None) == {
      "source": "prepared", "prepared_dir": "/data/run"}
  assert evaluate.data_overrides("tfds:wiki", None) == {"source": "tfds", "tfds_name": "wiki"}
  assert evaluate.data_overrides("builtin", None) == {"source": "builtin"}
  assert evaluate.data_overrides(None, None) == {}


@pytest.mark.parametrize("data_source, batch_size, message", [
    ("files:", None, "--data_source='files:'"),
    ("prepared", None, "--data_source='prepared'"),
    ("builtin:x", None, "--data_source='builtin:x'"),
    ("hdfs:/x", None, "--data_source='hdfs:/x'"),
    (None, 0, "--batch_size=0: must be a positive number of rows"),
], ids=["files without globs", "prepared without a folder", "builtin with a path",
        "unknown source", "no rows"])
def test_a_data_source_or_batch_size_flag_that_names_nothing_usable_is_refused(
    data_source, batch_size, message):
  with pytest.raises(evaluate.EvaluateError, match=re.escape(message)):
    evaluate.data_overrides(data_source, batch_size)


def test_held_out_progress_counts_the_batches_done_and_only_after_every_s(monkeypatch):
  # The pipeline and mesh are stand-ins: what is checked is the count progress(done) is given.
  monkeypatch.setattr(held_out.parallel, "host_rows", lambda mesh, batch_size: None)
  monkeypatch.setattr(held_out.parallel, "pipeline_batch", lambda pipeline, index, host: index)
  eval_fn = lambda params, index: {"loss": jnp.float32(index)}  # noqa: E731
  pipeline = types.SimpleNamespace(batch_size=8)
  reported = []
  sums = held_out.summed(eval_fn, None, pipeline, None, 3, progress=reported.append,
                         every_s=-1.0)
  assert reported == [1, 2, 3] and float(sums["loss"]) == 0 + 1 + 2
  reported.clear()
  held_out.summed(eval_fn, None, pipeline, None, 3, progress=reported.append, every_s=3600.0)
  assert reported == []  # a quick evaluation logs no progress line
