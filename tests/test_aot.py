"""Compiling the real train step for TPU slices on this CPU machine (libtpu topologies)."""
import importlib
import json
import os
import re
import subprocess
import sys
import types
import warnings

import jax
import numpy as np
import pytest
from absl import app

from glmjax import aot, config as config_lib, memory as memory_lib, parallel, prefetch
from glmjax import model as model_lib, step as step_lib, topology, xla_options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(**model):
  config = importlib.import_module("configs.base").get_config("local")
  config.model.update({"attention": "auto", **model})
  return config


def test_a_tiny_config_compiles_for_v5p_with_the_mosaic_splash_kernel():
  config = _tiny()
  report = aot.compile_for_slice(config, topology.parse_slice("v5p-8"))
  assert report.fits and report.chips == 4 and report.hosts == 1
  assert report.attention == "splash"  # auto on a TPU target, though this host is a CPU
  assert report.mosaic_kernels >= 3    # forward, dq and dkv kernels, not the interpreter
  assert report.mesh == {"data": 4, "fsdp": 1, "tensor": 1}
  assert 0 < report.state_bytes < report.total_bytes <= report.hbm_bytes
  tokens = config.data.batch_size * config.data.seq_len
  model_config = model_lib.ModelConfig.from_config(config.model)
  assert report.model_flops_per_step == pytest.approx(
      model_lib.flops_per_token(model_config, config.data.seq_len, part_b_fraction=0.1975)
      * tokens, rel=1e-3)  # the base config's blank share: 15% masked, one [sop] per span
  # Those FLOPs over the slice's 4 chips at half of a v5p chip's 459 TFLOP/s (bf16 peak).
  assert report.step_time_at_target_mfu_s == pytest.approx(
      report.model_flops_per_step / (4 * 459e12 * 0.5), rel=1e-6)


def test_two_slices_compile_with_mesh_data_across_them_and_the_rest_inside_each():
  """Multi-slice: the slices' network (DCN) is far slower than their own links, so data
  parallelism alone crosses it; fsdp's gathers stay inside a slice."""
  spec = topology.parse_slice("2xv5e-16")
  assert (spec.chips, spec.hosts, spec.accelerator_type) == (32, 8, "v5litepod-16")
  config = _tiny()
  config.mesh.update(data=2, fsdp=-1, tensor=1)
  config.data.batch_size = 32
  report = aot.compile_for_slice(config, spec)
  assert report.fits and report.mesh == {"data": 2, "fsdp": 16, "tensor": 1}
  assert report.attention == "splash" and (report.chips, report.hosts, report.slices) == (32, 8, 2)
  assert aot.describe(report, spec.name, "auto").startswith(
      "2xv5e-16: TPU v5 lite, 32 chips on 8 hosts, torus v5e:4x4, 2 such slices (compiled")
  mesh = parallel.make_mesh(config.mesh, topology.slice_devices(spec))
  assert [{d.slice_index for d in mesh.devices[i].ravel()} for i in range(2)] == [{0}, {1}]
  # A per-slice shape jax's hybrid mesh cannot map (4 x 8 on a 4x4 torus: 8 spans its axes)
  # keeps the slices whole along mesh.data, each in plain order.
  config.mesh.update(data=4, fsdp=8)
  mesh = parallel.make_mesh(config.mesh, topology.slice_devices(spec))
  assert [{d.slice_index for d in mesh.devices[i].ravel()} for i in range(4)] == [{0}, {0}, {1},
                                                                                  {1}]
  config.mesh.update(data=1, fsdp=-1)  # a single slice's recipe, fsdp over every chip
  with pytest.raises(parallel.SliceMeshError,
                     match=r"^mesh.data=1 on 2 slices: .* mesh.data=2 mesh.fsdp=-1"):
    parallel.make_mesh(config.mesh, topology.slice_devices(spec))


def test_a_compile_for_a_slice_neither_writes_nor_reads_the_persistent_cache():
  # The suite's cache is on (conftest). A compile-only TPU executable cannot be loaded back:
  # an entry written by the first compile would make the second warn as it fails to read it.
  assert jax.config.jax_enable_compilation_cache
  jax.jit(lambda x: x + 1)(1.0)  # jax decides once, at a first compile, that the cache is used
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    reports = [aot.compile_for_slice(_tiny(attention="xla"), topology.parse_slice("v4-8"))
               for _ in range(2)]
  assert not [w for w in caught if "compilation cache" in str(w.message)], caught
  assert jax.config.jax_enable_compilation_cache  # as it was, for the programs that follow
  assert all(r.attention == "xla" and r.mosaic_kernels == 0 for r in reports)


@pytest.fixture(scope="module")
def programs():
  return {}  # (program text, compiler options, devices) -> executable, for compiled_once


@pytest.fixture
def compiled_once(monkeypatch, programs):
  """XLA compiles each program once for the tests of aot's accounting, which compile one tiny
  step many times past the persistent cache; the rest of compile_for_slice runs every time."""
  compile_afresh = xla_options.compiled
  def once(lowered, options):  # the same text, options and devices (in order: the assignment)
    devices = tuple((d.id, d.device_kind) for d in jax.sharding.get_mesh().devices.flat)
    assert devices, "aot compiles under the target's mesh (parallel.activate), or says why not"
    key = (lowered.as_text(), tuple(sorted(options.items())), devices)
    programs[key] = programs.get(key) or compile_afresh(lowered, options)
    return programs[key]
  monkeypatch.setattr(xla_options, "compiled", once)


@pytest.fixture
def xla_on_v5e_4(compiled_once):  # pylint: disable=unused-argument
  """The tiny config with XLA attention compiled for a v5e-4 (several tests compare with it)."""
  return aot.compile_for_slice(_tiny(attention="xla"), topology.parse_slice("v5e-4"))


def test_parameters_and_optimizer_bytes_shrink_with_fsdp(xla_on_v5e_4):
  sharded = _tiny(attention="xla")
  sharded.mesh.update(data=1, fsdp=-1)
  quarter = aot.compile_for_slice(sharded, topology.parse_slice("v5e-4")).state_bytes
  assert quarter < 0.4 * xla_on_v5e_4.state_bytes


def test_a_device_snapshot_save_s_copy_of_the_state_counts_in_the_peak(xla_on_v5e_4):
  """checkpoint.device_snapshot keeps a copy of the state on the chips beside the next step."""
  spec = topology.parse_slice("v5e-4")
  off = xla_on_v5e_4
  config = _tiny(attention="xla")
  config.checkpoint.device_snapshot = True
  on = aot.compile_for_slice(config, spec)
  assert off.snapshot_bytes == 0 and on.snapshot_bytes == on.state_bytes > 0
  # train.eval_batches=2 held-out batches stay on the chips: a chip's 16 / 4 rows of five
  # [row, 128] and two [row] keys, 4 bytes a value.
  assert off.eval_batch_bytes == 2 * 4 * (5 * 128 + 2) * 4
  assert on.total_bytes - off.total_bytes == on.state_bytes
  assert "a save's copy of the state" in aot.describe(on, "v5e-4", "xla")
  config.checkpoint.every = 0  # no periodic saves: nothing is ever deferred
  assert aot.compile_for_slice(config, spec).total_bytes == off.total_bytes


def test_a_device_snapshot_s_copy_counts_beside_an_evaluation_too(monkeypatch, compiled_once):
  """An evaluation can fall while a save's copy waits to be handed over (the longer with
  checkpoint.snapshot_parts): where evaluation is the larger program, the copy adds to it."""
  spec = topology.parse_slice("v5e-4")
  real, calls = aot.memory_lib.program_bytes, []

  def eval_first_and_large(analysis):  # compile_for_slice sizes the eval program first
    calls.append(analysis)
    return 64 * 2**20 if len(calls) % 2 == 1 else real(analysis)

  monkeypatch.setattr(aot.memory_lib, "program_bytes", eval_first_and_large)
  config = _tiny(attention="xla")
  off = aot.compile_for_slice(config, spec)
  config.checkpoint.device_snapshot = True
  on = aot.compile_for_slice(config, spec)
  assert off.temp_bytes < 64 * 2**20  # the evaluation is the peak
  assert on.total_bytes - off.total_bytes == on.state_bytes > 0


def test_the_batches_train_prefetches_count_in_the_peak(monkeypatch, compiled_once):
  """Beside the running step's batch, train holds the next step's (dispatched: metrics are
  read one step late), DEPTH built batches and one in transfer."""
  spec = topology.parse_slice("v5e-4")
  config = _tiny(attention="xla")
  config.train.eval_every = 0  # no eval batches: the prefetched ones are the only resident input
  double = aot.compile_for_slice(config, spec)
  monkeypatch.setattr(prefetch, "DEPTH", 4)
  quadruple = aot.compile_for_slice(config, spec)
  batch = aot.per_chip_bytes(step_lib.abstract_batch(
      config.data.batch_size, config.data.seq_len, parallel.make_mesh(
          config.mesh, topology.slice_devices(spec))))
  assert double.prefetch_bytes == 4 * batch > 0  # DEPTH queued, 1 in transfer, 1 dispatched
  assert quadruple.total_bytes - double.total_bytes == 2 * batch
  assert double.eval_batch_bytes == 0  # eval_every=0: train keeps no held-out batches


def test_a_slice_whose_chips_would_wait_for_rows_another_host_builds_is_refused(
    monkeypatch, compiled_once):
  # Each host's plan handed to the next: every chip's rows are then built elsewhere.
  plan = aot.plan_host_input
  monkeypatch.setattr(aot, "plan_host_input", lambda mesh, batch: (
      lambda layouts: {p: layouts[(p + 1) % len(layouts)] for p in layouts})(plan(mesh, batch)))
  config = _tiny(attention="xla")
  config.train.eval_every = 0
  with pytest.raises(aot.UnfeedableLayout, match="does not build"):
    aot.compile_for_slice(config, topology.parse_slice("v5e-16"))


def test_an_eval_step_peak_above_the_train_step_s_counts_the_parameters_once(
    monkeypatch, compiled_once):
  """Evaluation runs beside the optimizer state: its peak is the eval program (which holds the
  parameters as an argument) plus the state less the parameters. The eval program's analysis
  is made 1 GiB larger here so that it, not the train step, sets the peak."""
  spec = topology.parse_slice("v5e-4")
  programs, evals = [], []
  build = step_lib.build_program
  monkeypatch.setattr(step_lib, "build_program",
                      lambda *args: programs.append(build(*args)) or programs[-1])
  compile_or_explain = aot._compile_or_explain  # pylint: disable=protected-access

  def inflated(compile_fn, config, mesh, where, what, **sizes):
    compiled = compile_or_explain(compile_fn, config, mesh, where, what, **sizes)
    if what != "eval step":
      return compiled
    memory = compiled.memory_analysis()
    evals.append(types.SimpleNamespace(argument_size_in_bytes=memory.argument_size_in_bytes,
                                       output_size_in_bytes=memory.output_size_in_bytes,
                                       alias_size_in_bytes=memory.alias_size_in_bytes,
                                       temp_size_in_bytes=memory.temp_size_in_bytes + 2**30))
    return types.SimpleNamespace(memory_analysis=lambda: evals[-1])

  monkeypatch.setattr(aot, "_compile_or_explain", inflated)
  report = aot.compile_for_slice(_tiny(attention="xla"), spec)
  params = aot.per_chip_bytes(programs[-1].abstract_state.params)
  assert 0 < params < report.state_bytes
  assert report.total_bytes == (memory_lib.program_bytes(evals[-1]) + report.state_bytes - params
                                + report.eval_batch_bytes + report.prefetch_bytes)


def test_a_config_whose_activations_do_not_fit_is_told_to_remat_or_accumulate():
  config = _tiny(attention="xla", hidden_size=1024, num_heads=8)
  config.data.update(batch_size=16384)
  config.model.remat = "none"
  with pytest.raises(aot.DoesNotFit,
                     match=r"v5e-4 \(data=4 fsdp=1 tensor=1\): (the train step|training) "
                     r"needs .* GiB per chip.*, .* GiB more than the 15.75 GiB .*; try "
                     r"model.remat=full .*optim.grad_accum_steps=2 ") as refused:
    aot.compile_for_slice(config, topology.parse_slice("v5e-4"))
  assert "alone take" not in str(refused.value)


def test_a_config_whose_state_alone_does_not_fit_is_told_only_to_shard_it_wider():
  """Parameters and Adam moments do not shrink with remat or micro-batches: advising those
  would send the user round a loop of compiles."""
  config = _tiny(attention="xla", hidden_size=8192, num_heads=64, vocab_size=50304)
  config.data.update(batch_size=64)
  with pytest.raises(aot.DoesNotFit,
                     match=r"v5e-4 \(data=4 fsdp=1 tensor=1\): (the train step|training) "
                     r"needs .* GiB per chip.*, .* GiB more than the 15.75 GiB .*; the "
                     r"parameters and optimizer state alone take [0-9.]+ GiB per chip, .*; try "
                     r"mesh.data=1 mesh.fsdp=-1 .*, a bigger slice\.$") as refused:
    aot.compile_for_slice(config, topology.parse_slice("v5e-4"))
  assert "remat" not in str(refused.value).split("; try ")[-1]
  assert "grad_accum_steps=" not in str(refused.value)
  config.mesh.update(data=1, fsdp=-1)  # already over every chip: a bigger slice is what is left
  assert memory_lib.fit_advice(config, state_bytes=20 << 30, hbm=16 << 30).endswith(
      "do not shrink; try a bigger slice.")


def test_a_micro_batch_the_slice_s_batch_axes_cannot_split_is_refused_before_compiling():
  config = _tiny(attention="xla")
  config.optim.grad_accum_steps = 8  # 16 rows / 8 = 2 rows a micro-batch, for 4 chips
  with pytest.raises(config_lib.ConfigError, match="2 rows per micro-batch is not divisible by "
                                                   "the data-parallel size 4"):
    aot.compile_for_slice(config, topology.parse_slice("v5e-4"))


def _aot(*args, **env):
  return subprocess.run([sys.executable, "-m", "glmjax.aot", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        env={**os.environ, "JAX_PLATFORMS": "cpu", **env})


def test_the_command_prints_a_json_report_for_a_slice_and_leaves_the_compilation_cache_alone(
    tmp_path):
  # A TPU executable compiled here cannot be read back from the cache (a rerun would warn).
  cache = tmp_path / "xla_cache"
  result = _aot("--config=configs/base.py:local", "--config.model.attention=splash",
                "--topology=v6e-16", "--json", JAX_COMPILATION_CACHE_DIR=str(cache))
  assert result.returncode == 0, result.stderr[-2000:]
  assert not cache.exists() or not list(cache.iterdir())
  report = json.loads(result.stdout)
  assert report["fits"] and report["chips"] == 16 and report["hosts"] == 4
  assert report["device_kind"] == "TPU v6 lite" and report["mosaic_kernels"] >= 3
  assert report["rows_per_host"] == 4  # 16 rows over 4 hosts
  # stderr: the command's own lines, not jax's INFO records (its cache resets, say).
  assert not re.search(r"^I\d{4} ", result.stderr, re.MULTILINE), result.stderr[-2000:]
  assert "(16 chips, 4 hosts)" in result.stderr


def test_the_command_exits_1_with_the_numbers_when_the_config_does_not_fit():
  result = _aot("--config=configs/base.py:local", "--topology=v5e-4",
                "--config.model.hidden_size=8192", "--config.model.num_heads=64",
                "--config.model.vocab_size=50304", "--config.data.batch_size=64")
  assert result.returncode == 1 and result.stdout == "", result.stderr[-2000:]
  assert re.search(r"does not fit: v5e-4 \(data=4 fsdp=1 tensor=1\): (the train step|training) "
                   r"needs [\d.]+ GiB per chip", result.stderr)
  assert "Traceback" not in result.stderr


def test_an_unknown_topology_and_an_impossible_mesh_are_one_line_errors():
  unknown = _aot("--config=configs/base.py:local", "--topology=v5x-8")
  assert unknown.returncode == 2
  assert "--topology='v5x-8' is not a TPU slice name" in unknown.stderr
  mesh = _aot("--config=configs/base.py:local", "--topology=v5p-8", "--config.mesh.tensor=3")
  assert mesh.returncode == 2 and "error: mesh" in mesh.stderr and "Traceback" not in mesh.stderr
  assert "Compiling" not in mesh.stderr  # refused before the line that promises minutes


def test_a_tensor_group_wider_than_a_host_has_each_row_built_by_every_host_of_the_group():
  """On a v5e-16 (hosts of 4 chips) a mesh.tensor group of 8 chips spans two hosts, and both
  build the rows that group holds: the report counts the hosts per row from the devices."""
  config = _tiny(attention="xla", num_heads=8)
  config.mesh.update(data=1, fsdp=2, tensor=-1)
  config.train.eval_every = 0
  spec = topology.parse_slice("v5e-16")
  report = aot.compile_for_slice(config, spec)
  mesh = parallel.make_mesh(config.mesh, topology.slice_devices(spec))
  holders = {}  # row -> the processes whose devices hold it, counted device by device
  index_map = parallel.batch_sharding(mesh, 1).devices_indices_map((16,))
  for device, index in index_map.items():
    for row in range(16)[index[0]]:
      holders.setdefault(row, set()).add(device.process_index)
  assert report.hosts_per_row == max(len(hosts) for hosts in holders.values()) == 2
  assert report.rows_per_host == 8  # a host's 4 chips sit in one group of 16 / 2 rows
  assert "each row is built by 2 hosts" in aot.describe(report, "v5e-16", "xla")


def test_the_report_s_hosts_per_row_are_the_most_hosts_that_build_any_one_row(
    monkeypatch, compiled_once):
  plan = aot.plan_host_input

  def host_1_builds_host_0_s_rows_too(mesh, batch):
    layouts = plan(mesh, batch)
    rows = np.unique(np.concatenate([layouts[1].rows, layouts[0].rows]))
    shards = {run: np.searchsorted(rows, np.arange(*run))
              for run in (*layouts[1].shards, *layouts[0].shards)}
    layouts[1] = parallel.HostRows(mesh, batch, rows, shards)
    return layouts

  monkeypatch.setattr(aot, "plan_host_input", host_1_builds_host_0_s_rows_too)
  config = _tiny(attention="xla")
  config.train.eval_every = 0
  report = aot.compile_for_slice(config, topology.parse_slice("v5e-16"))
  assert report.hosts_per_row == 2  # host 0's rows; each of the others has one builder


def test_even_one_stray_argument_is_a_mistake_in_the_command_before_anything_compiles():
  # A word the shell split off a flag's value would otherwise be dropped without a word.
  with pytest.raises(app.UsageError, match="^Unexpected arguments: extra$") as refused:
    aot.main(["aot", "extra"])
  assert refused.value.exitcode == 2


def test_a_layout_no_host_can_feed_is_a_mistake_in_the_command_exit_status_2():
  """Exit status 1 means "does not fit" (more HBM); a layout that cannot be fed is not that."""
  script = ("import sys\n"
            "from glmjax import aot, cli\n"
            "def unfeedable(config, spec):\n"
            "  raise aot.UnfeedableLayout('rows 0-3 reach no chip that holds them')\n"
            "aot.compile_for_slice = unfeedable\n"
            "aot.define_flags()\n"
            "cli.run(aot.main, status=2)\n")
  result = subprocess.run([sys.executable, "-c", script, "--config=configs/base.py:local",
                           "--topology=v5e-4"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 2, result.stderr[-2000:]
  assert "error: rows 0-3 reach no chip that holds them" in result.stderr
  assert "Traceback" not in result.stderr


def test_a_mesh_data_two_slices_cannot_take_is_a_mistake_in_the_command_exit_status_2():
  result = subprocess.run(
      [sys.executable, "-m", "glmjax.aot", "--config=configs/base.py:local",
       "--topology=2xv5e-16", "--config.mesh.data=1", "--config.mesh.fsdp=-1",
       "--config.data.batch_size=32"], cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 2, result.stderr[-2000:]
  assert "error: mesh.data=1 on 2 slices: " in result.stderr
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize("given, used", [(None, "cpu"), ("tpu", "tpu")])
def test_the_command_probes_no_attached_accelerator_unless_jax_platforms_names_one(given, used):
  """Compile-only devices need no backend: unset, jax_platforms becomes cpu before anything
  starts one (no TPU or CUDA probe on a laptop); a value the user set is theirs."""
  script = ("import jax\n"
            "from glmjax import aot, cli\n"
            "def report_platforms(config, spec):\n"
            "  raise aot.UnfeedableLayout(f'platforms={jax.config.jax_platforms}')\n"
            "aot.compile_for_slice = report_platforms\n"
            "aot.define_flags()\n"
            "cli.run(aot.main, status=2)\n")
  env = {key: value for key, value in os.environ.items() if key != "JAX_PLATFORMS"}
  result = subprocess.run([sys.executable, "-c", script, "--config=configs/base.py:local",
                           "--topology=v5e-4"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**env, **({"JAX_PLATFORMS": given} if given else {})})
  assert result.returncode == 2, result.stderr[-2000:]
  assert f"error: platforms={used}" in result.stderr
