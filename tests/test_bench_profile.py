"""`bench --what=profile`: a traced step, and where a device's time goes by line and class."""
import contextlib
import gzip
import importlib
import json
import os
import re
import types

import jax
import jax.numpy as jnp
import pytest

from glmjax.bench import profile
from test_bench_step import _Clock, _Step


def _trace(steps_of_work: int) -> dict:
  """A Perfetto trace shaped as jax writes one for a GPU: process and thread names as metadata,
  kernels on a stream, the same work again on the device's module line, host threads and the
  custom Megascale process beside them."""
  meta = [
      {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/device:CUSTOM:Megascale"}},
      {"ph": "M", "pid": 7, "name": "process_name", "args": {"name": "/device:GPU:0"}},
      {"ph": "M", "pid": 7, "tid": 13, "name": "thread_name", "args": {"name": "Stream #13"}},
      {"ph": "M", "pid": 7, "tid": 2, "name": "thread_name", "args": {"name": "XLA Modules"}},
      {"ph": "M", "pid": 701, "name": "process_name", "args": {"name": "/host:CPU"}},
      {"ph": "M", "pid": 701, "tid": 5, "name": "thread_name", "args": {"name": "python3"}},
  ]
  kernels = [("sm90_xmma_gemm_bf16bf16_bf16f32", 400.0), ("nvjet_hsh_128x256", 200.0),
             ("tokamax_mosaic_gpu_flash_attention", 150.0), ("loop_multiply_fusion_12", 60.0),
             ("input_reduce_fusion_3", 40.0), ("rng_bit_generator_threefry", 30.0),
             ("MemcpyD2D", 20.0), ("some_kernel", 10.0)]
  events = []
  for step in range(steps_of_work):
    start = step * 10_000.0
    events.append({"ph": "X", "pid": 7, "tid": 2, "ts": start, "dur": 950.0,
                   "name": "jit_train_step"})
    for index, (name, micros) in enumerate(kernels):
      events.append({"ph": "X", "pid": 7, "tid": 13, "ts": start + index * 1000, "dur": micros,
                     "name": name})
    events.append({"ph": "X", "pid": 701, "tid": 5, "ts": start, "dur": 5000.0,
                   "name": "PjitFunction(train_step)"})
    events.append({"ph": "X", "pid": 1, "tid": 0, "ts": start, "dur": 9000.0, "name": "Idle"})
  return {"traceEvents": meta + events}


def test_each_device_line_is_summed_on_its_own_per_step_by_class_and_costliest_op():
  lines = profile.device_lines(_trace(3), steps=3)
  # The host, and the custom process that is no device, are left out; the two device lines are
  # reported apart (the module line repeats the stream's work), the busiest first.
  assert [line["line"] for line in lines] == ["/device:GPU:0 XLA Modules",
                                               "/device:GPU:0 Stream #13"]
  modules, stream = lines
  assert modules["busy_s_per_step"] == pytest.approx(950e-6)
  assert stream["busy_s_per_step"] == pytest.approx(910e-6)
  assert stream["classes"] == pytest.approx({
      "matmul": 600e-6, "attention": 150e-6, "fusion": 60e-6, "reduce": 40e-6, "rng": 30e-6,
      "transfer": 20e-6, "other": 10e-6})
  assert list(stream["classes"]) == ["matmul", "attention", "fusion", "reduce", "rng",
                                     "transfer", "other"]
  top = stream["top"]
  assert [op["name"] for op in top[:3]] == ["sm90_xmma_gemm_bf16bf16_bf16f32",
                                            "nvjet_hsh_128x256",
                                            "tokamax_mosaic_gpu_flash_attention"]
  assert top[0]["s_per_step"] == pytest.approx(400e-6) and top[0]["calls_per_step"] == 1
  assert top[2]["class"] == "attention"


def test_a_trace_of_more_steps_gives_the_same_figures_per_step():
  four, two = profile.device_lines(_trace(4), steps=4), profile.device_lines(_trace(2), steps=2)
  assert [line["line"] for line in four] == [line["line"] for line in two]
  for one, other in zip(four, two):
    assert one["busy_s_per_step"] == pytest.approx(other["busy_s_per_step"])
    assert one["classes"] == pytest.approx(other["classes"])
    assert [op["calls_per_step"] for op in one["top"]] == [1.0] * len(one["top"])


def test_operation_classes_put_fused_attention_before_matmul():
  assert profile.op_class("cudnn_generated_fort_native_sdpa_sm90_knob_7_gemm") == "attention"
  assert profile.op_class("cutlass_80_tensorop_bf16_s16816gemm") == "matmul"
  assert profile.op_class("loop_add_fusion") == "fusion"
  assert profile.op_class("loop_dynamic_update_slice_fusion_13") == "stack_write"
  assert profile.op_class("loop_broadcast_fusion_4") == "fill"
  # A reduction fused with a write into a stack is a reduction.
  assert profile.op_class("input_reduce_dynamic_update_slice_fusion") == "reduce"
  assert profile.op_class("copy_transpose_3") == "transfer"
  assert profile.op_class("triangular_solve") == "other"


def test_the_profile_benchmark_traces_the_step_and_says_when_there_are_no_device_lines(
    tmp_path):
  config = importlib.import_module("configs.base").get_config("local")
  config.data.source = ""
  record = profile.measure(config, 2, str(tmp_path / "trace"))
  assert record["what"] == "profile" and record["steps"] == 2 and record["step_time_s"] > 0
  # The trace TensorBoard or Perfetto opens is there, and it is the one that was read.
  assert record["trace_file"].startswith(str(tmp_path / "trace"))
  with gzip.open(record["trace_file"], "rt") as stream:
    events = json.load(stream)["traceEvents"]
  assert any(event.get("name", "").startswith("PjitFunction") for event in events)
  # A CPU runs XLA on host threads: no device lines, and the record says why.
  assert record["device_lines"] == [] and "CPU" in record["note"]
  assert os.path.getsize(record["trace_file"]) > 0
  # The optimized program is written beside the trace: the train step's module.
  with gzip.open(record["compiled_hlo_file"], "rt") as stream:
    assert re.search(r"HloModule jit_train_step", stream.read())
  assert record["compiled_hlo_file"].startswith(str(tmp_path / "trace"))


def test_the_profile_benchmark_reads_the_trace_it_just_wrote(tmp_path):
  """A --profile_dir used before holds older traces: the figures come from this run's."""
  old = tmp_path / "plugins" / "profile" / "2020_01_01_00_00_00" / "perfetto_trace.json.gz"
  old.parent.mkdir(parents=True)
  with gzip.open(old, "wt") as stream:
    json.dump(_trace(2), stream)
  os.utime(old, (1.0e9, 1.0e9))
  config = importlib.import_module("configs.base").get_config("local")
  config.data.source = ""
  record = profile.measure(config, 1, str(tmp_path))
  assert record["trace_file"] != str(old) and record["device_lines"] == []


def test_the_compiled_program_s_library_calls_are_counted_by_target():
  # On a CPU a Cholesky factorization is a LAPACK call and a QR two more: a program with two
  # factorizations and a QR writes the factorization's call twice.
  program = jax.jit(lambda x: (jnp.linalg.cholesky(x), jnp.linalg.cholesky(x + 1.0),
                               jnp.linalg.qr(x)[0]))
  counts = profile.custom_call_counts(program.lower(jnp.eye(4)).compile().as_text())
  potrf = [target for target in counts if "potrf" in target]
  assert len(potrf) == 1 and counts[potrf[0]] == 2, counts
  assert sum(counts.values()) == 4, counts
  assert list(counts)[0] == potrf[0]  # the most written first


def test_the_profile_benchmark_starts_its_trace_and_clock_after_the_warm_up_step_has_finished(
    monkeypatch, tmp_path):
  clock = _Clock()
  step = _Step(clock, 0.5, first=4.0)  # the warm-up compiles and allocates: 4 s on the devices
  step.as_text = lambda: "HloModule jit_train_step"
  queued_at_start = []

  @contextlib.contextmanager
  def compiled_step(config):
    yield profile.step_bench.Setup(step, 0, {}, None, types.SimpleNamespace(attention="xla"),
                                   3.0, None, None)

  @contextlib.contextmanager
  def trace(folder, create_perfetto_trace):
    queued_at_start.append(clock.queued - clock.spent)  # device work the trace would catch
    yield
    written = os.path.join(folder, "plugins", "profile", "run", "perfetto_trace.json.gz")
    os.makedirs(os.path.dirname(written))
    with gzip.open(written, "wt") as stream:
      json.dump(_trace(3), stream)

  monkeypatch.setattr(profile, "time", clock)
  monkeypatch.setattr(profile.step_bench, "compiled_step", compiled_step)
  monkeypatch.setattr(jax.profiler, "trace", trace)
  config = importlib.import_module("configs.base").get_config("local")
  record = profile.measure(config, 3, str(tmp_path))
  assert len(step.batches) == 1 + 3 and queued_at_start == [0.0]
  assert record["step_time_s"] == pytest.approx(0.5)
  assert clock.busy and not any(clock.busy)  # no reading while device work was still queued


@pytest.mark.parametrize("given, steps", [(5, 5), (0, profile.DEFAULT_STEPS)])
def test_the_profile_benchmark_traces_the_steps_asked_for_into_the_folder_asked_for(
    monkeypatch, capsys, tmp_path, given, steps):
  asked = []
  monkeypatch.setattr(profile, "flags", types.SimpleNamespace(FLAGS=types.SimpleNamespace(
      steps=given, profile_dir=str(tmp_path))))
  monkeypatch.setattr(profile, "measure",
                      lambda config, n, folder: asked.append((n, folder)) or {"steps": n})
  profile.main(None, [])
  assert asked == [(steps, str(tmp_path))]
  assert json.loads(capsys.readouterr().out) == {"steps": steps}
