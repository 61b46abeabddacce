"""Compiling the real train step for NVIDIA GPUs on this CPU machine (jax's CUDA plugin describes
the GPU; XLA's GPU compiler runs without one)."""
import importlib
import os
import re
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from glmjax import aot, attention_choice, gpu_topology, memory, parallel, step as step_lib
from glmjax import xla_options
from glmjax.bench import save as save_bench
from glmjax.bench import traffic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H100_BYTES = 84_929_347_584  # what CUDA reports for an H100 SXM 80GB


def _tiny(**model):
  config = importlib.import_module("configs.base").get_config("local")
  config.model.update({"attention": "auto", "dtype": "bfloat16", "remat": "minimal", **model})
  return config


@pytest.fixture(scope="module")
def h100_device():
  return gpu_topology.gpu_devices(gpu_topology.parse_gpus("h100"))[0]


def test_a_tiny_config_compiles_for_an_h100_with_tokamax_s_kernels_each_called_once(monkeypatch):
  monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
  config = _tiny()
  report = aot.compile_for_slice(config, gpu_topology.parse_gpus("h100"))
  assert report.platform == "gpu" and report.device_kind == "NVIDIA H100 80GB HBM3"
  assert report.chips == 1 and report.hosts == 1 and report.topology == "1x1x1"
  assert report.attention == "tokamax"  # auto on an sm90 target, though this host is a CPU
  # The scanned layers hold one forward call and the two backward ones (dq, dkv): remat=minimal
  # keeps the forward's output. (That XLA's slice fusion would clone the forward is the next
  # test; this jaxlib leaves the fusion off unless asked.)
  assert report.mosaic_kernels == 3
  assert report.fits and report.hbm_bytes == int(0.75 * H100_BYTES)  # jax's default share
  assert report.step_time_at_target_mfu_s == pytest.approx(
      report.model_flops_per_step / (989e12 * 0.5), rel=1e-6)


def test_with_xla_s_dynamic_slice_fusion_on_the_step_runs_the_attention_forward_twice(
    monkeypatch):
  # Why xla_options.py turns the fusion off on GPUs: it clones the forward kernel into the
  # writes of its outputs to the scan's stacks (found in an H200 profile with jax 0.11). The
  # option is set here as glmjax sets its own; this jaxlib's default is already off, and the
  # CUDA plugin reads XLA_FLAGS only once, at its first compile.
  monkeypatch.setitem(xla_options._BY_PLATFORM, "gpu",
                      {"xla_gpu_enable_dynamic_slice_fusion": True})
  config = _tiny()
  config.train.eval_every = 0  # the kernels counted are the train step's: no eval step compiled
  report = aot.compile_for_slice(config, gpu_topology.parse_gpus("h100"))
  assert report.mosaic_kernels == 4


def test_two_hosts_of_eight_gpus_each_build_half_the_rows():
  config = _tiny(attention="xla")
  config.data.batch_size = 32
  config.train.eval_every = 0  # the rows are the train step's: no eval step compiled
  report = aot.compile_for_slice(config, gpu_topology.parse_gpus("h200-16"))
  assert report.chips == 16 and report.hosts == 2 and report.topology == "1x2x8"
  assert report.device_kind == "NVIDIA H200" and report.mesh["data"] == 16
  assert report.rows_per_host == 16 and report.hosts_per_row == 1


@pytest.mark.parametrize("name, hosts, per_host, model", [
    ("h100", 1, 1, "h100"), ("H100-4", 1, 4, "h100"), ("h100-8", 1, 8, "h100"),
    ("h200-16", 2, 8, "h200"), ("h100:4x8", 4, 8, "h100"), ("h200:2x2", 2, 2, "h200"),
    ("h100:1024x8", 1024, 8, "h100"), ("h100-8192", 1024, 8, "h100")])  # the most hosts
def test_gpu_names_give_hosts_and_gpus_per_host(name, hosts, per_host, model):
  spec = gpu_topology.parse_gpus(name)
  assert (spec.hosts, spec.gpus_per_host, spec.model.name) == (hosts, per_host, model)
  assert spec.chips == hosts * per_host and spec.platform == "gpu"
  assert spec.accelerator_type == f"{hosts}x{per_host} {model}"  # aot's report: hosts first


_COUNTS = r"a GPU count is 1 to 8 \(one host\) or a multiple of 8 \(at most 1024 hosts\)"
_SHAPES = r"hosts x GPUs per host needs 1 to 1024 hosts of 1 to 8 GPUs"


@pytest.mark.parametrize("name, rule", [
    ("h100-12", _COUNTS), ("h100:1x9", _SHAPES), ("h100-0", _COUNTS), ("h100:0x8", _SHAPES),
    ("h300-8", "is not a GPU machine name"), ("h100-8-2", "is not a GPU machine name"),
    ("h100:2x0", _SHAPES), ("h100-80000", _COUNTS), ("h100:1025x8", _SHAPES),
    ("h100-8200", _COUNTS)])
def test_impossible_gpu_names_say_what_is_accepted(name, rule):
  with pytest.raises(gpu_topology.GpuTopologyError, match=rule + r".*h100-8 \(one host of 8\)"):
    gpu_topology.parse_gpus(name)


def test_only_names_that_start_with_a_known_gpu_go_to_the_gpu_parser():
  assert gpu_topology.is_gpu_name("h100") and gpu_topology.is_gpu_name("H200:2x8")
  assert not gpu_topology.is_gpu_name("v5p-8") and not gpu_topology.is_gpu_name("h1000-8")


def test_a_gpu_s_usable_memory_is_the_share_jax_s_client_takes(monkeypatch):
  spec = gpu_topology.parse_gpus("h100-8")
  monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
  assert spec.hbm_bytes == int(0.9 * H100_BYTES)
  monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "1")  # all of it: allowed
  assert spec.hbm_bytes == H100_BYTES
  for wrong in ("ninety", "0", "1.5"):
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", wrong)
    with pytest.raises(gpu_topology.GpuTopologyError, match="XLA_PYTHON_CLIENT_MEM_FRACTION"):
      _ = spec.hbm_bytes


def test_without_a_memory_fraction_set_a_gpu_s_usable_memory_is_jax_s_default_three_quarters(
    monkeypatch):
  monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
  assert gpu_topology.parse_gpus("h100-8").hbm_bytes == int(0.75 * H100_BYTES)


def test_the_gpu_advice_offers_jax_a_memory_share_of_0_9_only_where_it_has_less(monkeypatch):
  config = importlib.import_module("configs.base").get_config("local")
  for fraction, offered in (("0.75", True), ("0.89", True), ("0.9", False), ("0.95", False)):
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", fraction)
    advice = memory.fit_advice(config, platform="gpu")
    assert ("XLA_PYTHON_CLIENT_MEM_FRACTION=0.9" in advice) == offered, fraction
    assert "more GPUs" in advice


def test_auto_on_a_gpu_target_takes_tokamax_for_16_bit_models_and_xla_for_float32(h100_device):
  assert attention_choice.unvalidated_default("gpu", 128, h100_device) == "tokamax"
  assert attention_choice.unvalidated_default("gpu", 128, h100_device, "float32") == "xla"
  # ... and so does the model config aot compiles, from the run's own dtype.
  config = importlib.import_module("configs.base").get_config("local")  # float32, attention xla
  config.model.attention = "auto"
  assert attention_choice.resolved_model_config(config, "gpu", device=h100_device).attention == (
      "xla")
  config.model.dtype = "bfloat16"
  assert attention_choice.resolved_model_config(config, "gpu", device=h100_device).attention == (
      "tokamax")


def test_without_jax_s_cuda_plugin_the_error_says_what_to_install(monkeypatch):
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel

  def missing(**_):
    raise NotImplementedError("topology not implemented for cuda")

  monkeypatch.setattr(topologies, "get_topology_desc", missing)
  with pytest.raises(gpu_topology.GpuTopologyError, match=r"pip install 'jax\[cuda12-local\]=="):
    gpu_topology.gpu_devices(gpu_topology.parse_gpus("h100"))


def test_the_command_exits_1_and_names_jax_s_memory_share_when_a_config_does_not_fit():
  result = subprocess.run(
      [sys.executable, "-m", "glmjax.aot", "--config=configs/base.py:local",
       "--config.model.dtype=bfloat16", "--topology=h100-2"], cwd=REPO, capture_output=True,
      text=True, timeout=600,
      env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.0001"})
  assert result.returncode == 1 and result.stdout == "", result.stderr[-2000:]
  assert "(2 GPUs, 1 host)" in result.stderr
  assert "does not fit: h100-2 (data=2 fsdp=1 tensor=1): training needs" in result.stderr
  assert " GiB per GPU at its peak, " in result.stderr  # a GPU's words, not a TPU chip's HBM
  assert "GiB of jax's share of GPU memory a program may use" in result.stderr
  assert "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 (jax's share of each GPU's memory, now 0.0001)" \
      in result.stderr and "more GPUs." in result.stderr
  assert "Traceback" not in result.stderr


def _compiled_gpu_step(config) -> str:
  """The optimized HLO text of config's train step compiled for one H100."""
  devices = gpu_topology.gpu_devices(gpu_topology.parse_gpus("h100"))
  mesh = parallel.make_mesh(config.mesh, devices)
  rules = parallel.logical_rules(config.mesh)
  model_config = attention_choice.resolved_model_config(config, platform="gpu",
                                                        device=devices[0])
  # Compile-only programs cannot come from jax's persistent cache, as aot knows.
  with parallel.activate(mesh, rules), jax.default_device(devices[0]), aot._no_persistent_cache():
    program = step_lib.build_program(config, mesh, rules, model_config)
    return program.compile_train_step(config, mesh).as_text()


def _fusions_reading(hlo: str, shape: str) -> list[str]:
  """Names of the fusions whose fused computation takes an array typed `shape`, other than
  those that only write into it (a stack update, rooted at a dynamic-update-slice)."""
  found = traffic.computations(hlo)
  readers = []
  for lines in found.values():
    for line in lines:
      fusion = re.match(r"\s+(?:ROOT )?%(\S+) = .+? fusion\(.*calls=%([^,\s]+)", line)
      body = found.get(fusion.group(2), []) if fusion else []
      takes = any(" parameter(" in part and part.split("=")[1].strip().startswith(shape)
                  for part in body)
      writes_into = any("ROOT" in part and " dynamic-update-slice(" in part for part in body)
      if takes and not writes_into:
        readers.append(fusion.group(1))
  return readers


@pytest.fixture(scope="module")
def at_glm_2b_s_widths() -> tuple[str, int, int]:
  """(the optimized program, layers, rows) of a 2-layer model at GLM-2B's widths (hidden
  2048, 16 rows of 1024), remat=minimal: XLA fuses differently at small widths. Compiled once
  for the tests that read it."""
  config = _tiny(attention="xla", hidden_size=2048, num_heads=16)
  config.data.seq_len = config.model.max_position = 1024
  return _compiled_gpu_step(config), config.model.num_layers, config.data.batch_size


def test_the_gelu_backward_reads_the_saved_pre_activation_once_at_glm_2b_s_widths(
    at_glm_2b_s_widths):
  # At these widths XLA split jax's own GeLU derivative into a pass that recomputed tanh(...)
  # and one that formed the gradient with the bias's; glm's gelu_tanh gives it one expression.
  # (At small widths both versions make one pass.)
  hlo, layers, rows = at_glm_2b_s_widths
  stack = f"bf16[{layers},{rows},1024,8192]"  # the pre-activations remat=minimal keeps
  readers = _fusions_reading(hlo, stack)
  assert len(readers) == 1, readers


def test_the_layer_loops_write_no_float32_hidden_states_at_glm_2b_s_widths(at_glm_2b_s_widths):
  # With each LayerNorm's statistics recomputed, XLA's backward wrote the scale's gradient
  # terms, a float32 [B, T, H] product, for a second pass to sum (jax 0.10 and 0.11 alike):
  # 27 GiB a step for GLM-2B. Kept (glm.NORM_STATS), the sum reads the bfloat16 input instead.
  # (The final LayerNorm and the loss, outside the layer loops, still write such arrays.)
  hlo, _, rows = at_glm_2b_s_widths
  found = traffic.computations(hlo)
  bodies = {body for lines in found.values() for line in lines
            for body in re.findall(r" while\(.*body=%([^,\s]+)", line)}
  layer_loops = [body for body in bodies if any("/layers/" in line for line in found[body])]
  # a fusion with an output (or one of its outputs) typed [B, T, H] or [B * T, H], float32
  written = re.compile(rf"\s+(?:ROOT )?%\S+ = [^=]*\bf32\[(?:{rows},1024|{rows * 1024}),2048\]"
                       r"[^=]* fusion\(")
  assert len(layer_loops) >= 2, bodies  # the forward's and the backward's
  writers = [line.split(" = ")[0].strip() for body in layer_loops for line in found[body]
             if written.match(line)]
  assert not writers, writers


def test_the_layers_backward_passes_over_the_mlp_s_wide_arrays_as_often_with_float32_bias_sums(
    at_glm_2b_s_widths):
  # glm.add_bias sums a bias's gradient in float32. Written as a convert and a reduce, XLA ran
  # the GeLU backward a second time for the MLP's input bias: 8 passes over [B, T, F] arrays
  # a layer instead of the 6 of jax's own bfloat16 sum (GLM-2B: 397 -> 436 GB a step). As a
  # dot with ones (glm._token_sum) it makes the same 6.
  hlo, _, rows = at_glm_2b_s_widths
  found = traffic.computations(hlo)
  wide = re.compile(rf"\b(?:bf16|f32)\[(?:{rows},1024|{rows * 1024}),8192\]")
  bodies = {body for lines in found.values() for line in lines
            for body in re.findall(r" while\(.*body=%([^,\s]+)", line)}
  backward = [body for body in bodies if any("transpose(" in line and "/layers/" in line
                                             for line in found[body])]
  assert len(backward) == 1, bodies
  passes = 0  # each wide array a fusion or a library call reads or writes
  for line in found[backward[0]]:
    op = re.search(r" = (.*?) (?:fusion|custom-call)\(", line)
    if op:
      called = re.search(r"calls=%([^,\s]+)", line)
      parameters = [p for p in found[called.group(1)] if " parameter(" in p] if called else []
      passes += sum(bool(wide.search(p.split(" parameter(")[0])) for p in parameters)
      passes += len(wide.findall(op.group(1)))
  assert passes == 6, passes


def _fusion_passes_of_shape(hlo: str, shape: str) -> tuple[int, int]:
  """(reads, writes): how many arrays typed `shape` (e.g. 'f32[2,128,512]') the top-level
  fusions of a compiled program take and give, each a pass over such an array in memory."""
  parameters = {match.group(1): match.group(2)
                for match in re.finditer(r"^%(\S+) \((.*)\) -> ", hlo, re.MULTILINE)}
  entry = hlo[hlo.index("\nENTRY"):]
  reads = writes = 0
  for match in re.finditer(r"^\s+(?:ROOT )?%\S+ = (.+?) fusion\(.*calls=%([^,\s]+)", entry,
                           re.MULTILINE):
    reads += parameters.get(match.group(2), "").count(shape)
    writes += match.group(1).count(shape + "{")
  return reads, writes


@pytest.fixture(scope="module")
def tiny_xla_step() -> tuple[str, int, int]:
  """(the optimized program, layers, hidden size) of the tiny config's step with XLA attention,
  compiled once for the tests that read it."""
  config = _tiny(attention="xla")
  return _compiled_gpu_step(config), config.model.num_layers, config.model.hidden_size


def test_the_update_s_finiteness_check_reads_the_state_instead_of_writing_the_moments_out(
    tiny_xla_step):
  # The check recomputes the update behind an optimization barrier (step.train_step): per
  # float32 parameter of a big leaf, the top-level passes read the gradient for its norm (4
  # bytes; 4 more when its stack was float32 and zeroed), read state and gradient to check (16)
  # and again to commit, writing parameter and moments (28), and read the new parameter for its
  # norm (4; XLA may fold that into the commit): 56 bytes at most. Merged with the update, the
  # check had the new moments written out, then read back to check and to commit: 72 when
  # written, 52 now (jax 0.10, the suite's settings), which the byte bound alone let through;
  # either way it writes such an array more than the commit's 3 times.
  hlo, layers, hidden = tiny_xla_step
  shape = f"f32[{layers},{hidden},{4 * hidden}]"  # the MLP's input kernel, stacked over layers
  reads, writes = _fusion_passes_of_shape(hlo, shape)
  assert (reads + writes) * 4 <= 56, (reads, writes)
  assert writes == 3, writes  # the new parameter and its two moments, each written once


def test_xla_schedules_most_of_the_in_step_host_copy_of_the_state_outside_the_layer_loops():
  # bench --what=save's in-step copy, compiled for an H100: every leaf of the state goes to
  # pinned host memory by an asynchronous copy, and XLA (0.10 here; 0.11, the GPU machine's,
  # was seen doing the same for GLM-2B) opens and closes almost all of them outside the layer
  # loops, where nothing but top-level ops can hide them. docs/performance.md says what that
  # means for a save's copy riding along a step.
  config = _tiny(attention="xla")
  devices = gpu_topology.gpu_devices(gpu_topology.parse_gpus("h100"))
  mesh = parallel.make_mesh(config.mesh, devices)
  rules = parallel.logical_rules(config.mesh)
  model_config = attention_choice.resolved_model_config(config, platform="gpu",
                                                        device=devices[0])
  # Compile-only programs cannot come from jax's persistent cache, as aot knows.
  with parallel.activate(mesh, rules), jax.default_device(devices[0]), aot._no_persistent_cache():
    program = step_lib.build_program(config, mesh, rules, model_config)
    setup = types.SimpleNamespace(program=program, mesh=mesh, batch=step_lib.abstract_batch(
        config.data.batch_size, config.data.seq_len, mesh))
    hlo = save_bench.with_host_copy(setup, program.abstract_state).as_text()
  leaves = [leaf for leaf in jax.tree.leaves(program.abstract_state)
            if not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)]
  copies = traffic.host_copies(hlo)
  entry = re.search(r"^ENTRY %(\S+) ", hlo, re.MULTILINE).group(1)
  # The layer loops sit in the entry itself, where host_copies looks for them.
  assert sum(" while(" in line for line in traffic.computations(hlo)[entry]) >= 2
  assert copies["copies"] == len(leaves)
  assert copies["bytes"] == sum(leaf.size * leaf.dtype.itemsize for leaf in leaves)
  # GLM-2B (jax 0.11, 23 GB): 1.2 MB of it beside the loops; this tiny model: 4.6% with jax
  # 0.10, 18% with 0.11.2 (1.0 of 5.7 MB): most, in both, waits for the top-level ops.
  assert copies["beside_loops_bytes"] < 0.5 * copies["bytes"]


def test_the_backward_loop_stacks_the_projections_gradients_in_bfloat16(tiny_xla_step):
  # Differentiated through model.in_compute_dtype, each layer's kernel gradient (a bfloat16
  # matmul output) goes into its stack as it is, not widened to float32 first: half the bytes
  # there and in the optimizer's reads of it (step.summed_gradients).
  hlo, layers, hidden = tiny_xla_step
  found = traffic.computations(hlo)
  stacked = [line.split(" = ")[1].split("{")[0] for lines in found.values() for line in lines
             if "ROOT" in line and " dynamic-update-slice(" in line
             and f"[{layers},{hidden},{4 * hidden}]" in line]
  assert stacked and set(stacked) == {f"bf16[{layers},{hidden},{4 * hidden}]"}, stacked


def test_no_reduction_in_the_step_adds_in_bfloat16(tiny_xla_step):
  # Differentiated by jax, a projection's bias gradient was a reduction in the compute dtype,
  # which XLA:GPU keeps: its reducer added bfloat16, rounding each partial sum of the tokens (5
  # such reductions in this step). glm.add_bias sums them in float32.
  hlo, _, _ = tiny_xla_step
  found = traffic.computations(hlo)
  reducer_dtype = {name: next(line.split(" = ")[1].split("[")[0] for line in lines
                              if "ROOT" in line) for name, lines in found.items() if lines}
  reducers = [re.search(r"to_apply=%([\w.\-]+)", line).group(1)
              for lines in found.values() for line in lines if " reduce(" in line]
  assert len(reducers) > 20 and "bf16" not in {reducer_dtype[name] for name in reducers}
