"""bench --what=traffic: the memory traffic of a compiled program, read from its HLO text."""
import importlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from glmjax.bench import traffic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A program of XLA's optimized-HLO form: a loop known to run 3 times whose body reads one row of
# a stacked array (a dynamic slice) and writes one row of another (a stack update), a matmul
# fusion in the body, and a top-level fusion with two results.
HLO = """HloModule jit_step, is_scheduled=true

%fused_slice (p0: f32[4,8], p1: s32[]) -> f32[1,8] {
  %p0 = f32[4,8]{1,0} parameter(0)
  %p1 = s32[] parameter(1)
  %zero = s32[] constant(0)
  ROOT %row = f32[1,8]{1,0} dynamic-slice(%p0, %p1, %zero), dynamic_slice_sizes={1,8}
}

%fused_update (q0: f32[4,8], q1: f32[1,8], q2: s32[]) -> f32[4,8] {
  %q0 = f32[4,8]{1,0} parameter(0)
  %q1 = f32[1,8]{1,0} parameter(1)
  %q2 = s32[] parameter(2)
  %zero.1 = s32[] constant(0)
  ROOT %stacked = f32[4,8]{1,0} dynamic-update-slice(%q0, %q1, %q2, %zero.1)
}

%gemm_computation (g0: bf16[64,64], g1: bf16[64,64]) -> bf16[64,64] {
  %g0 = bf16[64,64]{1,0} parameter(0)
  %g1 = bf16[64,64]{1,0} parameter(1)
  ROOT %dot = bf16[64,64]{1,0} dot(%g0, %g1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_add (a0: f32[16], a1: f32[16]) -> (f32[16], bf16[16]) {
  %a0 = f32[16]{0} parameter(0)
  %a1 = f32[16]{0} parameter(1)
  %sum = f32[16]{0} add(%a0, %a1)
  %half = bf16[16]{0} convert(%sum)
  ROOT %both = (f32[16]{0}, bf16[16]{0}) tuple(%sum, %half)
}

%body (state: (s32[], f32[4,8], f32[4,8], bf16[64,64])) -> (s32[], f32[4,8], f32[4,8], bf16[64,64]) {
  %state = (s32[], f32[4,8]{1,0}, f32[4,8]{1,0}, bf16[64,64]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%state), index=0
  %source = f32[4,8]{1,0} get-tuple-element(%state), index=1
  %stack = f32[4,8]{1,0} get-tuple-element(%state), index=2
  %w = bf16[64,64]{1,0} get-tuple-element(%state), index=3
  %loop_dynamic_slice_fusion = f32[1,8]{1,0} fusion(%source, %i), kind=kLoop, calls=%fused_slice
  %loop_dynamic_update_slice_fusion = f32[4,8]{1,0} fusion(%stack, %loop_dynamic_slice_fusion, %i), kind=kLoop, calls=%fused_update
  %gemm_fusion_dot = bf16[64,64]{1,0} fusion(%w, %w), kind=kCustom, calls=%gemm_computation
  ROOT %next = (s32[], f32[4,8]{1,0}, f32[4,8]{1,0}, bf16[64,64]{1,0}) tuple(%i, %source, %loop_dynamic_update_slice_fusion, %gemm_fusion_dot)
}

ENTRY %main.1 (x: f32[16], y: f32[16], start: (s32[], f32[4,8], f32[4,8], bf16[64,64])) -> (f32[16], bf16[16]) {
  %x = f32[16]{0} parameter(0)
  %y = f32[16]{0} parameter(1)
  %start = (s32[], f32[4,8]{1,0}, f32[4,8]{1,0}, bf16[64,64]{1,0}) parameter(2)
  %loop = (s32[], f32[4,8]{1,0}, f32[4,8]{1,0}, bf16[64,64]{1,0}) while(%start), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
  ROOT %loop_add_fusion = (f32[16]{0}, bf16[16]{0}) fusion(%x, %y), kind=kLoop, calls=%fused_add
}
"""


def test_a_loop_s_passes_count_once_per_trip_and_slices_at_their_own_size():
  report = traffic.program_traffic(HLO)
  passes = {entry["computation"]: entry for entry in report["passes"]}
  # The body: a row read with its index (32 + 4 bytes) and written out (32); that row read with
  # the index again (36) and written into the stack (32), the stack itself neither read nor
  # written whole. No matmul.
  assert passes["body"]["runs"] == 3 and passes["body"]["bytes_per_run"] == 68 + 68
  assert "gemm_fusion_dot" not in passes["body"]["largest"]
  # The top level: two float32 inputs (128 bytes), a float32 and a bfloat16 result (96).
  assert passes["main.1"]["runs"] == 1 and passes["main.1"]["bytes_per_run"] == 224
  assert report["total_bytes"] == 3 * 136 + 224


def test_each_fusion_s_bytes_go_to_the_pass_and_module_its_op_name_says():
  hlo = HLO
  for fusion, op_name in (
      ("fused_slice", "jit(step)/transpose(jvp(GLM))/while/body/eval_jaxpr/checkpoint/"
                      "rematted_computation/layers/mlp/mul"),
      ("fused_update", "jit(step)/jvp(GLM)/while/body/jit(dynamic_update_index_in_dim)/"
                       "dynamic_update_slice"),
      ("fused_add", "jit(step)/add")):
    hlo = hlo.replace(f"calls=%{fusion}", f'calls=%{fusion}, metadata={{op_name="{op_name}"}}')
  report = traffic.program_traffic(hlo)
  assert report["by_part"] == {"backward layers/mlp": 3 * 68,
                               "forward GLM (dynamic_update_slice)": 3 * 68,
                               "update (add)": 224}
  assert sum(report["by_part"].values()) == report["total_bytes"]
  assert traffic.program_traffic(HLO)["by_part"] == {"unnamed": 632}
  part = lambda op_name: traffic.part_of_step(f'x, metadata={{op_name="{op_name}"}}')
  assert part("jit(f)/jvp(M)/encoder/ln/mul") == "forward encoder/ln"
  # unrolled layers are one part, not one per layer; what remat recomputes in the backward
  # pass of unrolled layers runs under both wrappers, and is backward work
  assert part("jit(f)/jvp(M)/layers_11/mlp/mul") == part("jit(f)/jvp(M)/layers_2/mlp/mul") == (
      "forward layers_*/mlp")
  assert part("jit(f)/transpose(jvp(M))/jvp(M)/checkpoint/rematted_computation/layers_3/mlp/"
              "mul") == "backward layers_*/mlp"
  # the loss's own work (differentiated, outside the model), and the model's outside modules
  assert part("jit(f)/jvp()/log") == "forward (log)"
  assert part("jit(f)/transpose(jvp())/jvp(M)/broadcast_in_dim") == "backward M (broadcast_in_dim)"
  # a module's work that XLA moved out of the differentiated loop is still the forward pass's;
  # control flow, remat and einsum specs are no modules
  assert part("jit(f)/layers/attention/jit(_where)/select_n") == "forward layers/attention"
  assert part("jit(f)/jvp(M)/closed_call/while/cond/layers/bth,hd->btd/dot_general") == (
      "forward layers")


def test_a_fusion_around_a_kernel_s_custom_call_is_left_out_as_a_matmul_is():
  # An attention kernel XLA wrapped in a fusion of its own: its traffic is the kernel's.
  kernel = """
%kernel_computation (k0: f32[16], k1: f32[16]) -> f32[16] {
  %k0 = f32[16]{0} parameter(0)
  %k1 = f32[16]{0} parameter(1)
  ROOT %kernel = f32[16]{0} custom-call(%k0, %k1), custom_call_target="__cudnn$fmhaSoftmax"
}
"""
  hlo = HLO.replace("\nENTRY ", kernel + "\nENTRY ").replace(
      "  ROOT %loop_add_fusion", "  %kernel_fusion = f32[16]{0} fusion(%x, %y), kind=kCustom, "
      "calls=%kernel_computation\n  ROOT %loop_add_fusion")
  assert hlo.count("calls=%kernel_computation") == 1
  report = traffic.program_traffic(hlo)
  passes = {entry["computation"]: entry for entry in report["passes"]}
  assert passes["main.1"]["bytes_per_run"] == 224  # the add fusion's alone
  assert "kernel_fusion" not in passes["main.1"]["largest"]
  assert report["total_bytes"] == traffic.program_traffic(HLO)["total_bytes"] == 3 * 136 + 224


def test_array_bytes_counts_every_array_of_a_tuple_at_its_type_s_width():
  assert traffic.array_bytes("(f32[2,3]{1,0}, bf16[4]{0}, pred[], s32[5])") == 24 + 8 + 1 + 20
  # A complex type's bits are both parts': c64 is two f32, c128 two f64.
  assert traffic.array_bytes("(c64[3]{0}, c128[2]{0})") == 3 * 2 * 4 + 2 * 2 * 8


def test_a_fusion_input_read_whole_by_one_op_counts_whole_though_another_slices_it():
  body = ["  %p0 = f32[4,8]{1,0} parameter(0)",
          "  %p1 = s32[] parameter(1)",
          "  %zero = s32[] constant(0)",
          "  %row = f32[1,8]{1,0} dynamic-slice(%p0, %p1, %zero), dynamic_slice_sizes={1,8}",
          "  %neg = f32[4,8]{1,0} negate(%p0)",
          "  ROOT %out = (f32[1,8]{1,0}, f32[4,8]{1,0}) tuple(%row, %neg)"]
  read, written = traffic.fusion_bytes(body)
  assert read == 4 * 8 * 4 + 4  # all of %p0 (the negate reads every row) and the index
  assert written == 1 * 8 * 4 + 4 * 8 * 4


def test_the_command_prints_one_json_line_and_asks_for_the_file_in_one_line(tmp_path):
  path = tmp_path / "module_0001.jit_step.after_optimizations.txt"
  path.write_text(HLO)
  run = lambda *flags: subprocess.run(
      [sys.executable, "-m", "glmjax.bench", "--what=traffic", *flags], cwd=REPO,
      capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO})
  result = run(f"--traffic_hlo={path}")
  assert result.returncode == 0, result.stderr[-2000:]
  record = json.loads(result.stdout)
  assert record["total_bytes"] == 632 and record["what"] == "traffic"
  missing = run()
  assert missing.returncode != 0 and "--traffic_hlo=FILE" in missing.stderr
  assert "Traceback" not in missing.stderr
  both = run(f"--traffic_hlo={path}", "--traffic_topology=h100")
  assert both.returncode != 0 and "one of --traffic_topology" in both.stderr
  tpu = run("--traffic_topology=v5p-8")
  assert tpu.returncode != 0 and "--traffic_topology=v5p-8: name NVIDIA GPUs" in tpu.stderr
  assert "Traceback" not in both.stderr + tpu.stderr


@pytest.mark.parametrize("given, used", [(None, "cpu"), ("tpu", "tpu")])
def test_the_compile_runs_on_the_cpu_backend_unless_jax_platforms_names_another(given, used):
  """As aot: compile-only GPU devices need no backend, so an unset jax_platforms becomes cpu
  before anything starts one (no CUDA probe on a laptop, no claim on a TPU VM's chips that a
  run is using); a value the user set is theirs."""
  script = ("import importlib, jax\n"
            "from glmjax import aot\n"
            "from glmjax.bench import traffic\n"
            "def report_platforms(config, spec, on_compiled):\n"
            "  print(f'platforms={jax.config.jax_platforms}')\n"
            "  raise SystemExit(0)\n"
            "aot.compile_for_slice = report_platforms\n"
            "traffic.compiled_train_step(\n"
            "    importlib.import_module('configs.base').get_config('local'), 'h100')\n")
  env = {key: value for key, value in os.environ.items() if key != "JAX_PLATFORMS"}
  env.update(PYTHONPATH=REPO, **({"JAX_PLATFORMS": given} if given else {}))
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == f"platforms={used}"


def test_the_command_compiles_the_config_s_train_step_for_named_gpus_and_counts_that_program(
    tmp_path):
  # Compiled as aot compiles it, without a GPU: the forward and backward layer loops are found,
  # each run once per layer, and the count is the one of the program XLA dumps when aot
  # compiles the same config (jax prints asynchronous fusions in another form than XLA's dump).
  # Without evaluation both commands compile the train step alone, the program counted.
  config = ["--config=configs/base.py:local", "--config.model.attention=xla",
            "--config.model.dtype=bfloat16", "--config.model.remat=minimal",
            "--config.train.eval_every=0"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
  result = subprocess.run(
      [sys.executable, "-m", "glmjax.bench", "--what=traffic", "--traffic_topology=h100",
       *config], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
  assert result.returncode == 0, result.stderr[-2000:]
  dumped = subprocess.run(
      [sys.executable, "-m", "glmjax.aot", "--topology=h100", *config], cwd=REPO,
      capture_output=True, text=True, timeout=600,
      env={**env, "XLA_FLAGS": f"--xla_dump_to={tmp_path} --xla_dump_hlo_as_text "
                               "--xla_dump_hlo_module_re=.*train_step.*"})
  assert dumped.returncode == 0, dumped.stderr[-2000:]
  [program] = [path for path in tmp_path.iterdir()
               if path.name.endswith("after_optimizations.txt") and "train_step" in path.name]
  report = json.loads(result.stdout)
  assert report["total_bytes"] == traffic.program_traffic(program.read_text())["total_bytes"]
  assert (report["topology"], report["fits"]) == ("h100", True)
  layers = importlib.import_module("configs.base").get_config("local").model.num_layers
  loops = [p for p in report["passes"] if p["runs"] == layers and p["bytes_per_run"] > 0]
  assert len(loops) >= 2, report["passes"]
  assert report["total_bytes"] == sum(p["runs"] * p["bytes_per_run"] for p in report["passes"])
  # The same bytes by where they come from: the layers' MLP in both passes, the optimizer step
  assert sum(report["by_part"].values()) == report["total_bytes"]
  assert {"forward layers/mlp", "backward layers/mlp"} <= set(report["by_part"])
  assert any(part.startswith("update ") for part in report["by_part"]), report["by_part"]


def test_a_loop_inside_a_loop_runs_as_often_as_both_trip_counts_say():
  def inner(carry, x):
    return jnp.tanh(carry * 2.0 + x), None

  def outer(carry, xs):
    return jax.lax.scan(inner, carry, xs)[0], None

  step = jax.jit(lambda carry, xss: jax.lax.scan(outer, carry, xss)[0])
  hlo = step.lower(jnp.ones(64), jnp.ones((3, 5, 64))).compile().as_text()
  runs = {entry["runs"] for entry in traffic.program_traffic(hlo)["passes"]}
  assert {1, 3, 15} <= runs, runs


_STACK_UPDATE = ("%loop_dynamic_update_slice_fusion = f32[4,8]{1,0} fusion(%stack, "
                 "%loop_dynamic_slice_fusion, %i), kind=kLoop, calls=%fused_update")


def _with_an_asynchronous_stack_update(start: str, done: str) -> str:
  """HLO with its loop's stack update made an asynchronous pair: `start` is the starting op
  and what follows its operands, `done` the op that ends it."""
  body = HLO.split("%body (")[1].split("\n}\n")[0]
  asynchronous = body.replace(
      _STACK_UPDATE,
      "%fusion-start = ((f32[4,8]{1,0}, f32[1,8]{1,0}, s32[]), f32[4,8]{1,0}, u32[]) "
      f"{start}\n  %loop_dynamic_update_slice_fusion = f32[4,8]{{1,0}} {done}(%fusion-start)")
  assert asynchronous != body
  return HLO.replace(body, asynchronous)


def test_a_stack_update_that_xla_runs_on_its_own_stream_counts_once_per_trip():
  # XLA's GPU pipeline wraps some stack updates in an async-start / async-done pair whose
  # computation holds the fusion: it is memory traffic of the loop all the same.
  wrapper = """
%async_computation (r0: f32[4,8], r1: f32[1,8], r2: s32[]) -> f32[4,8] {
  %r0 = f32[4,8]{1,0} parameter(0)
  %r1 = f32[1,8]{1,0} parameter(1)
  %r2 = s32[] parameter(2)
  ROOT %update = f32[4,8]{1,0} fusion(%r0, %r1, %r2), kind=kLoop, calls=%fused_update
}
"""
  hlo = _with_an_asynchronous_stack_update(
      "async-start(%stack, %loop_dynamic_slice_fusion, %i), calls=%async_computation",
      "async-done").replace("\n%body (", wrapper + "\n%body (")
  passes = {entry["computation"]: entry for entry in traffic.program_traffic(hlo)["passes"]}
  assert passes["async_computation"]["runs"] == 3
  assert passes["async_computation"]["bytes_per_run"] == 68
  assert passes["body"]["bytes_per_run"] == 68
  assert traffic.program_traffic(hlo)["total_bytes"] == 3 * 136 + 224


def test_an_asynchronous_fusion_as_a_compiled_program_prints_it_counts_once_per_trip():
  # jax's compiled.as_text() writes the same asynchronous stack update as one fusion-start that
  # calls the fused computation itself (bench --what=traffic --traffic_topology reads that form).
  hlo = _with_an_asynchronous_stack_update(
      "fusion-start(%stack, %loop_dynamic_slice_fusion, %i), kind=kLoop, calls=%fused_update",
      "fusion-done")
  passes = {entry["computation"]: entry for entry in traffic.program_traffic(hlo)["passes"]}
  assert passes["body"]["bytes_per_run"] == 136
  assert traffic.program_traffic(hlo)["total_bytes"] == 3 * 136 + 224


def test_a_config_too_big_for_the_gpus_is_still_counted_with_fits_false_and_the_reason():
  # Without evaluation the train step, the program counted, is the only one compiled.
  result = subprocess.run(
      [sys.executable, "-m", "glmjax.bench", "--what=traffic", "--traffic_topology=h100",
       "--config=configs/base.py:local", "--config.model.attention=xla",
       "--config.data.batch_size=32768", "--config.train.eval_every=0"], cwd=REPO,
      capture_output=True, text=True, timeout=600,
      env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO})
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(result.stdout)
  assert report["fits"] is False and report["total_bytes"] > 0
  assert "does not fit: h100" in result.stderr and "model.remat=full" in result.stderr
