"""Each benchmark runs on a tiny config and prints one JSON line with its documented fields."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FIELDS = {
    "data": ("tokens_per_s", "padding_fraction", "masked_fraction", "mean_span_length",
             "mixture_tokens_per_s", "every_option_tokens_per_s", "sentence_start_share"),
    "prepare": ("prepare_tokens_per_s_one_core", "read_tokens_per_s"),
    "step": ("step_time_s", "tokens_per_s", "tflops_per_device", "mfu", "compile_s",
             "step_time_s_pipeline", "pipeline_vs_prebuilt", "checkpoint_overhead",
             "formula_flops_per_step", "compiled_flops_per_step"),
    "attention": ("implementations",),
    "sweep": ("trials", "best"),
}
# The sweep's grid, kept small: two remat policies, and a kernel name that cannot run.
EXTRA_ARGS = {"sweep": ["--sweep_batch=4", "--sweep_remat=none,full",
                        "--sweep_attention=xla,bogus"]}


@pytest.mark.parametrize("what", sorted(FIELDS))
def test_bench_prints_one_json_line(what):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
         "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
  result = subprocess.run(
      [sys.executable, "-m", "glmjax.bench", f"--what={what}", "--config=configs/base.py:local",
       "--steps=2", *EXTRA_ARGS.get(what, [])],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=True)
  lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
  assert len(lines) == 1, result.stdout
  record = json.loads(lines[0])
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
    assert all("bogus" in t["error"] for t in failed)
    assert record["best"] == max(ran, key=lambda t: t["tokens_per_s"])
    return
  numbers = [record[f] for f in FIELDS[what] if record[f] is not None]
  assert all(value >= 0 for value in numbers if value is not record.get("checkpoint_overhead"))
  if what == "step":  # :local names the built-in corpus: the pipeline-fed figure is measured
    assert record["step_time_s_pipeline"] > 0 and record["pipeline_vs_prebuilt"] > 0
