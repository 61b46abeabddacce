"""Each benchmark runs on a tiny config and prints one JSON line with its documented fields."""
import gzip
import importlib
import json
import logging
import os
import re
import subprocess
import sys
import types

import jax
import pytest

from glmjax import attention_choice
from glmjax.bench import sweep

import cpu_devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FIELDS = {
    "data": ("tokens_per_s", "padding_fraction", "masked_fraction", "mean_span_length",
             "mixture_tokens_per_s", "every_option_tokens_per_s", "sentence_start_share"),
    "prepare": ("prepare_tokens_per_s_one_core", "read_tokens_per_s"),
    "step": ("step_time_s", "tokens_per_s", "tflops_per_device", "mfu", "compile_s",
             "step_time_s_pipeline", "pipeline_vs_prebuilt", "formula_flops_per_step",
             "compiled_flops_per_step"),
    "save": ("state_bytes", "host_transfer_s", "host_transfer_gb_per_s", "host_transfer_hidden",
             "host_fetch_s", "host_fetch_hidden", "checkpoint_overhead",
             "checkpoint_overhead_device_snapshot", "snapshot_steps", "snapshot_parts",
             "checkpoint_step_overhead_device_snapshot", "in_step_transfer_step_s",
             "in_step_transfer_hidden", "in_step_transfer_async_copies",
             "in_step_transfer_beside_loops"),
    "attention": ("implementations",),
    "sweep": ("trials", "best"),
}
# The sweep's grid, kept small: two remat policies, and a kernel that cannot run on a CPU (a
# name that is no kernel is refused before the first trial).
EXTRA_ARGS = {"sweep": ["--sweep_batch=4", "--sweep_remat=none,full",
                        "--sweep_attention=xla,cudnn"]}


@pytest.mark.parametrize("what", sorted(FIELDS))
def test_bench_prints_one_json_line(what):
  env = {**os.environ, "XLA_FLAGS": cpu_devices.xla_flags(1),
         "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
  result = subprocess.run(
      [sys.executable, "-m", "glmjax.bench", f"--what={what}", "--config=configs/base.py:local",
       "--steps=2", *EXTRA_ARGS.get(what, [])],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=True)
  lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
  assert len(lines) == 1, result.stdout
  # stderr holds glmjax's progress lines, not libraries' INFO records (Orbax logs every save).
  assert not re.search(r"^I\d{4} ", result.stderr, re.MULTILINE), result.stderr[:2000]
  record = json.loads(lines[0])
  assert record["what"] == what  # a log of several benchmarks' lines says which is which
  for field in FIELDS[what]:
    assert field in record, field
  if what == "attention":
    assert record["implementations"]["xla"]["forward_backward_ms"] > 0
    return
  if what == "data":
    per_objective = record["mixture_per_objective"]
    assert set(per_objective) == {"blank", "sentence", "document"}
    assert abs(sum(per_objective["blank"]["span_length_histogram"]) - 1) < 1e-3
    assert 0 < record["sentence_start_share"] < 0.2  # data.sentence_windows off: the base rate
  if what == "sweep":
    ran = [t for t in record["trials"] if "error" not in t]
    failed = [t for t in record["trials"] if "error" in t]
    assert sorted(t["remat"] for t in ran) == ["full", "none"] and len(failed) == 2
    assert all(t["attention"] == "cudnn" and t["error"] for t in failed)
    assert record["best"] == max(ran, key=lambda t: t["tokens_per_s"])
    return
  # A save's overhead, and the most it adds to one step, are differences of two timings: they
  # may come out below zero (the second one failed this way once, with a full suite beside it).
  numbers = [record[f] for f in FIELDS[what] if record[f] is not None
             and not f.startswith(("checkpoint_overhead", "checkpoint_step_overhead"))]
  assert all(value >= 0 for value in numbers)
  if what == "step":  # :local names the built-in corpus: the pipeline-fed figure is measured
    assert record["step_time_s_pipeline"] > 0 and record["pipeline_vs_prebuilt"] > 0


def test_the_gpu_measurement_script_runs_every_part_on_a_tiny_model(tmp_path):
  """launch/measure_gpu.sh is run on rare, short GPU loans: rehearse it here on a CPU, with a
  tiny model (MEASURE_OVERRIDES), so a broken flag or part is found before a loan is spent."""
  tiny = ("--config.model.num_layers=1 --config.model.hidden_size=64 --config.model.num_heads=2 "
          "--config.model.vocab_size=512 --config.data.seq_len=128 "
          "--config.model.max_position=128 --config.model.dtype=float32 "
          "--config.data.batch_size=2 --sweep_batch=2 --steps=2")
  # Its 23 processes compile tiny programs and time 2 steps: without XLA's costlier passes,
  # as in this suite's own process (conftest), the rehearsal took 175 s, not 232 s (2 cores,
  # an empty compilation cache).
  env = {**os.environ, "XLA_FLAGS": cpu_devices.xla_flags(1),
         "JAX_PLATFORMS": "cpu", "OUT": str(tmp_path), "MEASURE_OVERRIDES": tiny,
         "MEASURE_MATMUL_N": "256", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
  result = subprocess.run(["bash", "launch/measure_gpu.sh"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  figures = [json.loads(line)
             for line in (tmp_path / "measure_gpu.jsonl").read_text().splitlines()]
  # The MFU targets first (GLM-2B, then GLM-Large), so a loan cut short still has them; then
  # the experiments. Each figure names its part.
  assert [(f.get("part"), f.get("what")) for f in figures] == [
      ("core", "step"), ("large", "step"), ("save", "save"), ("save", "save"),
      ("attention", "attention"), ("sweep", "sweep"), ("chunk", "sweep"), ("ceiling", "ceiling"),
      ("profile", "profile"), ("profile_large", "profile"), ("tune", "sweep"), ("tune", "sweep"),
      ("tune_large", "sweep"), ("flags (glmjax options)", "sweep"),
      ("flags --xla_gpu_enable_dynamic_slice_fusion=true", "sweep"),
      ("flags --xla_gpu_enable_dus_accumulator_zero_init_elimination=true", "sweep"),
      ("flags --xla_gpu_experimental_enable_fusion_block_level_rewriter=true", "sweep"),
      ("flags --xla_gpu_cudnn_gemm_fusion_level=2", "sweep"), ("unroll", "sweep"),
      ("unroll_large", "sweep"), ("large_sweep", "sweep"), ("batch_2b", "sweep"),
      ("autotune", "attention")], figures
  # The tiny overrides give every part the same shapes: the config each figure names is what
  # tells a GLM-Large part that ran GLM-2B's config.
  large_parts = {"large", "tune_large", "unroll_large", "large_sweep"}
  assert {(f["part"], f["config"]) for f in figures if f["what"] in ("step", "sweep")} == {
      (f["part"], "configs/large.py" if f["part"] in large_parts else "configs/glm_2b.py")
      for f in figures if f["what"] in ("step", "sweep")}
  core, step, saves, sweep, chunk = figures[0], figures[1], figures[2:4], figures[5], figures[6]
  ceiling, profiled, profiled_large = figures[7], figures[8], figures[9]
  tunes, unrolled, large_sweep = figures[10:13], figures[18:20], figures[20]
  assert ceiling["n"] == 256 and ceiling["bf16_matmul_tflops"] > 0 < ceiling["copy_tb_per_s"]
  assert profiled["remat"] == "minimal" and profiled["attention"] == "tokamax"
  assert (tmp_path / "profile_trace.json.gz").stat().st_size > 0  # copied up for a GPU loan
  with gzip.open(tmp_path / "profile_hlo.txt.gz", "rt") as stream:  # the program, copied up
    assert "HloModule" in stream.read()
  assert isinstance(profiled["compiled_custom_calls"], dict)
  assert profiled_large["remat"] == "minimal"
  assert (tmp_path / "profile_large_trace.json.gz").stat().st_size > 0
  assert (tmp_path / "profile_large_hlo.txt.gz").stat().st_size > 0
  # Masks drawn again, then kept: GLM-2B's best setting, then as shipped, then GLM-Large's
  # best setting; the same losses both ways.
  assert [[(t["remat"], t["model.save_dropout_masks"]) for t in tune["trials"]]
          for tune in tunes] == [[("minimal", False), ("minimal", True)],
                                 [("full", False), ("full", True)],
                                 [("minimal", False), ("minimal", True)]]
  for tune in tunes:
    drawn_again, kept = (t["loss"] for t in tune["trials"])
    assert abs(kept - drawn_again) <= 1e-5 * abs(drawn_again), tune["trials"]
  assert {t["remat"] for t in large_sweep["trials"]} == {"none", "minimal"}
  assert [(t["remat"], t["attention"]) for t in figures[21]["trials"]] == [("minimal", "tokamax")]
  assert [[t["model.scan_layers"] for t in unroll["trials"]] for unroll in unrolled] == [
      [False], [False]]
  assert [t["remat"] for t in unrolled[1]["trials"]] == ["minimal"]
  assert all("error" not in t for f in figures[10:22] for t in f["trials"]), figures[10:22]
  assert core["step_time_s_pipeline"] is None  # GLM-2B's part times the step alone
  assert {(t["remat"], t["attention"]) for t in sweep["trials"]} == {
      (remat, kernel) for remat in ("none", "minimal") for kernel in ("tokamax", "cudnn")}
  # cuDNN cannot run on a CPU; tokamax's XLA op can.
  assert sweep["best"]["attention"] == "tokamax"
  # The last part: GLM-2B's loss chunk, the one setting the sweep above holds at the config's.
  assert [t["loss_chunk"] for t in chunk["trials"]] == [512, 1024, 2048]
  # GLM-Large's part: the pipeline-fed step is measured next to pre-built batches, at the
  # overrides' shape.
  assert (step["seq_len"], step["batch_size"], step["hidden_size"]) == (128, 2, 64)
  assert step["pipeline_vs_prebuilt"] > 0
  # The save part: both models' states, sent to the host, saved both ways.
  assert all(f["state_bytes"] > 0 and f["host_transfer_s"] > 0 for f in saves)
  assert all(f["checkpoint_overhead"] is not None for f in saves)
  assert all(f["snapshot_parts"] == 16 and f["snapshot_steps"] >= 18 for f in saves)
  assert all(f["in_step_transfer_step_s"] > 0 for f in saves), saves  # the program ran


def test_the_sweep_s_best_is_the_fastest_trial_that_ran_and_on_a_tie_the_smaller_one():
  trials = [dict(batch_size=8, tokens_per_s=90.0, compiled_memory_bytes=1 << 20),
            dict(batch_size=16, tokens_per_s=120.0, compiled_memory_bytes=3 << 30),
            dict(batch_size=32, error="RESOURCE_EXHAUSTED: out of memory"),
            dict(batch_size=16, tokens_per_s=120.0, compiled_memory_bytes=2 << 30),
            dict(batch_size=4, tokens_per_s=60.0, compiled_memory_bytes=None)]
  assert sweep.best(trials) == trials[3]
  assert sweep.best(trials[2:3]) is None  # nothing ran


def _flags(monkeypatch, module, **values):
  """The benchmark flags `module` reads, as the command line would set them (the bench's own
  flags are defined only by `python -m glmjax.bench`)."""
  defaults = dict(steps=0, sweep_batch="", sweep_remat="", sweep_attention="",
                  sweep_loss_chunk="", sweep_set=[], attention_autotune=False)
  monkeypatch.setattr(module, "flags", types.SimpleNamespace(
      FLAGS=types.SimpleNamespace(**{**defaults, **values})))


def test_the_sweep_s_batch_sizes_are_half_once_and_twice_the_config_s_and_never_0(monkeypatch):
  _flags(monkeypatch, sweep, sweep_remat="none", sweep_attention="xla")
  config = importlib.import_module("configs.base").get_config("local")
  for batch, expected in ((16, [8, 16, 32]), (1, [1, 2])):
    config.data.batch_size = batch
    assert [setting["batch_size"] for setting in sweep.grid(config)] == expected


def test_the_sweep_s_default_grid_tries_the_three_remat_policies_and_the_kernels_auto_tries(
    monkeypatch):
  _flags(monkeypatch, sweep)  # no --sweep_* flag given
  config = importlib.import_module("configs.base").get_config("local")
  settings = sweep.grid(config)
  kernels = attention_choice.auto_order(jax.default_backend())
  assert {s["remat"] for s in settings} == {"none", "minimal", "full"}
  assert {s["attention"] for s in settings} == set(kernels)
  assert {s["loss_chunk"] for s in settings} == {config.train.loss_chunk}
  assert len(settings) == 3 * 3 * len(kernels)  # with the three batch sizes: every combination


def test_the_sweep_times_each_setting_it_records_and_picks_the_one_with_most_tokens_per_s(
    monkeypatch, capsys):
  config = importlib.import_module("configs.base").get_config("local")
  batch = config.data.batch_size
  _flags(monkeypatch, sweep, sweep_remat="none,full", sweep_attention="xla",
         sweep_loss_chunk="256,512", steps=7)
  measured, events = [], []

  def measure(trial, steps, *, with_pipeline):  # no step runs: figures by formula
    setting = (trial.data.batch_size, trial.model.remat, trial.model.attention,
               trial.train.loss_chunk)
    measured.append(setting)
    events.append("trial")
    assert steps == 7 and not with_pipeline  # --steps, not the default
    if trial.data.batch_size == 2 * batch and trial.model.remat == "none":
      raise RuntimeError("RESOURCE_EXHAUSTED: out of memory\nwhile allocating")
    # Larger batches and chunks go faster per token; full remat costs a third more time.
    step_time_s = (0.1 + 0.01 * trial.data.batch_size - 1e-5 * trial.train.loss_chunk) * (
        4 / 3 if trial.model.remat == "full" else 1)
    tokens = trial.data.batch_size * trial.data.seq_len
    return dict(step_time_s=step_time_s, tokens_per_s=tokens / step_time_s, mfu=0.5,
                tflops_per_device=1.0, compiled_memory_bytes=trial.data.batch_size << 20,
                compile_s=2.0, loss=7.0, xla_options={})

  monkeypatch.setattr(sweep.step_bench, "measure", measure)
  monkeypatch.setattr(jax, "clear_caches", lambda: events.append("clear_caches"))
  sweep.main(config, [])
  record = json.loads(capsys.readouterr().out)
  # Each trial's programs are dropped before the next compiles, a failed one's too: a sweep
  # keeping all of them would grow to every trial's compiled code and the caches' buffers.
  assert events == ["trial", "clear_caches"] * len(measured)
  # Half, once and twice the config's batch by default, with every other choice.
  grid = [(b, r, "xla", c) for b in (batch // 2, batch, 2 * batch) for r in ("none", "full")
          for c in (256, 512)]
  assert measured == grid
  assert [(t["batch_size"], t["remat"], t["attention"], t["loss_chunk"])
          for t in record["trials"]] == grid
  assert config.data.batch_size == batch and config.model.remat == "none"  # left as it was
  failed = [t for t in record["trials"] if "error" in t]
  assert [(t["batch_size"], t["remat"]) for t in failed] == [(2 * batch, "none")] * 2
  assert failed[0]["error"] == "RESOURCE_EXHAUSTED: out of memory"
  # Rows per second: 16 rows in 0.26 - 0.00512 s (62.8) beat 32 rows with full remat in
  # (0.42 - 0.00512) * 4 / 3 s (57.8) and every smaller batch or chunk.
  best = record["best"]
  assert (best["batch_size"], best["remat"], best["loss_chunk"]) == (batch, "none", 512)
  assert best["step_time_s"] == pytest.approx(0.1 + 0.01 * batch - 512e-5)
  assert best["tokens_per_s"] == pytest.approx(batch * config.data.seq_len / best["step_time_s"])


def test_the_sweep_reads_flag_lists_written_with_spaces(monkeypatch):
  config = importlib.import_module("configs.base").get_config("local")
  _flags(monkeypatch, sweep, sweep_batch="4, 8", sweep_remat="none, full",
         sweep_attention=" xla ")
  assert sweep.grid(config) == [
      dict(batch_size=b, remat=r, attention="xla", loss_chunk=config.train.loss_chunk)
      for b in (4, 8) for r in ("none", "full")]


def test_the_sweep_tries_a_batch_of_one_row_like_any_other_size(monkeypatch):
  config = importlib.import_module("configs.base").get_config("local")
  _flags(monkeypatch, sweep, sweep_batch="1,2", sweep_remat="full", sweep_attention="xla")
  assert [trial["batch_size"] for trial in sweep.grid(config)] == [1, 2]


def test_the_sweep_tries_every_value_sweep_set_names_each_as_its_field_s_type(monkeypatch,
                                                                            capsys):
  config = importlib.import_module("configs.base").get_config("local")
  _flags(monkeypatch, sweep, sweep_batch="4", sweep_remat="full", sweep_attention="xla",
         sweep_set=["train.dropout_rng=threefry2x32,rbg", "model.hidden_dropout=0.1, 1",
                    "model.scan_layers=False"])
  seen = []

  def measure(trial, *args, **kwargs):
    seen.append((trial.train.dropout_rng, trial.model.hidden_dropout, trial.model.scan_layers))
    return dict(step_time_s=0.2, tokens_per_s=1.0, mfu=None, tflops_per_device=1.0,
                compiled_memory_bytes=1, compile_s=1.0, xla_options={}, loss=7.0)
  monkeypatch.setattr(sweep.step_bench, "measure", measure)
  sweep.main(config, [])
  trials = json.loads(capsys.readouterr().out)["trials"]
  assert [(t["train.dropout_rng"], t["model.hidden_dropout"]) for t in trials] == [
      ("threefry2x32", 0.1), ("threefry2x32", 1.0), ("rbg", 0.1), ("rbg", 1.0)]
  assert all(t["model.scan_layers"] is False for t in trials)
  assert isinstance(trials[1]["model.hidden_dropout"], float)
  # Each value reaches its trial's config; one the config refuses is that trial's error line.
  assert seen == [("threefry2x32", 0.1, False), ("rbg", 0.1, False)]
  assert all("model.hidden_dropout=1.0" in t["error"] for t in trials[1::2])
  assert config.train.dropout_rng == "threefry2x32" and config.model.scan_layers  # left as it was


@pytest.mark.parametrize("spec, named", [
    ("train.dropout_rngs=rbg", "no field 'train.dropout_rngs'"),
    ("model.hidden_dropout=high", "model.hidden_dropout takes a finite number, not 'high'"),
    ("model.hidden_dropout=0.1,nan", "model.hidden_dropout takes a finite number, not 'nan'"),
    ("train.steps.x=1", "no field 'train.steps.x'"),
    ("data.batch_size=8,16", "data.batch_size has its own flag: use --sweep_batch=V1,V2"),
    ("model.remat=none", "use --sweep_remat=V1,V2"),
    ("train.dropout_rng=rbg,unsafe_rb", "--sweep_set=train.dropout_rng=rbg,unsafe_rb: "
                                        "'unsafe_rb' is not a train.dropout_rng; choose from"),
    ("data.files=a.txt", "data.files holds tuple values"),
    ("model.num_layers=8.5", "model.num_layers takes an integer, not '8.5'"),
    ("model.scan_layers=yes", "model.scan_layers takes true or false, not 'yes'"),
    ("model=none", "'model' is a section; name one of its fields"),
    ("twice", "train.log_every is named twice: give all its values once"),
    ("train.dropout_rng=", "give 'train.dropout_rng' one or more values"),
])
def test_a_sweep_set_item_that_cannot_apply_is_one_line_naming_it(monkeypatch, spec, named):
  config = importlib.import_module("configs.base").get_config("local")
  _flags(monkeypatch, sweep, sweep_batch="4", sweep_remat="full", sweep_attention="xla",
         sweep_set=[spec] if spec != "twice" else ["train.log_every=1", "train.log_every=2"])
  with pytest.raises(ValueError, match=re.escape(named)) as raised:
    sweep.grid(config)
  assert "\n" not in str(raised.value)


@pytest.mark.parametrize("values, named", [
    (dict(sweep_batch="8,x"), "--sweep_batch=8,x: give positive whole numbers"),
    (dict(sweep_loss_chunk="0"), "--sweep_loss_chunk=0: give positive whole numbers"),
    (dict(sweep_remat="full,ful"), "--sweep_remat=full,ful: 'ful' is not a model.remat; "
                                   "choose from none, minimal, full"),
    (dict(sweep_attention="splsh"), "--sweep_attention=splsh: 'splsh' is not a model.attention"),
])
def test_a_sweep_flag_value_no_trial_could_take_is_one_line_naming_the_flag(monkeypatch, values,
                                                                            named):
  # Before the first compile: not int()'s message naming no flag, nor a typo recorded as the
  # error of each of its trials at the end of a sweep of minutes.
  config = importlib.import_module("configs.base").get_config("local")
  _flags(monkeypatch, sweep, **{**dict(sweep_batch="4", sweep_remat="full",
                                       sweep_attention="xla"), **values})
  with pytest.raises(ValueError, match=re.escape(named)) as raised:
    sweep.grid(config)
  assert "\n" not in str(raised.value)

def test_each_sweep_trial_keeps_the_step_s_speed_mfu_memory_and_compile_figures(monkeypatch,
                                                                              capsys, caplog):
  config = importlib.import_module("configs.base").get_config("local")
  _flags(monkeypatch, sweep, sweep_batch="4", sweep_remat="full,none", sweep_attention="xla")
  figures = dict(step_time_s=0.2, tokens_per_s=2560.0, mfu=0.41, tflops_per_device=0.9,
                 compiled_memory_bytes=5 << 20, compile_s=1.5,
                 xla_options={"xla_gpu_enable_dynamic_slice_fusion": False}, loss=7.0)
  logged_before_the_next = []

  def measure(trial, *args, **kwargs):
    logged_before_the_next.append(caplog.text.count("trial {"))
    if trial.model.remat == "none":
      raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")
    return {**figures, "what": "step"}
  monkeypatch.setattr(sweep.step_bench, "measure", measure)
  with caplog.at_level(logging.INFO, logger=sweep.log.name):
    sweep.main(config, [])
  record = json.loads(capsys.readouterr().out)
  trial = dict(batch_size=4, remat="full", attention="xla",
               loss_chunk=config.train.loss_chunk, **figures)
  assert record["trials"][0] == trial and record["best"] == trial
  # Each trial's figures (or its error) reach the log as it ends, before the next one starts: a
  # sweep killed at a GPU loan's time limit keeps them although its final line never prints.
  assert logged_before_the_next == [0, 1]
  logged = [json.loads(line.split(" trial ", 1)[1]) for line in caplog.text.splitlines()
            if " trial {" in line]
  assert logged == record["trials"] and "error" in logged[1]


def test_a_config_too_big_for_the_device_is_one_line_saying_what_to_change(monkeypatch):
  import glmjax.bench  # pylint: disable=import-outside-toplevel
  from glmjax.bench import step as bench_step  # pylint: disable=import-outside-toplevel

  def out_of_memory(config, argv):
    raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 2828373137976 bytes.\n"
                       + "\n".join(f"  frame {i}" for i in range(30)))
  monkeypatch.setattr(bench_step, "main", out_of_memory)
  with pytest.raises(ValueError) as raised:
    glmjax.bench.run("step", None, [])
  line = str(raised.value)
  assert "\n" not in line and line.startswith("--what=step: the config does not fit")
  assert "allocating 2828373137976 bytes" in line and "--config.data.batch_size" in line

  def a_bug(config, argv):
    raise RuntimeError("INTERNAL: something else")
  monkeypatch.setattr(bench_step, "main", a_bug)
  with pytest.raises(RuntimeError, match="INTERNAL"):  # not a memory problem: left as it is
    glmjax.bench.run("step", None, [])
