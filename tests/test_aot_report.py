"""aot's report, its advice and its reading of libtpu's messages, with nothing compiled."""
import importlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from glmjax import aot, memory as memory_lib, parallel


def _local():
  """The base config's local variant, whose advice these tests read (nothing is compiled)."""
  return importlib.import_module("configs.base").get_config("local")


@pytest.mark.parametrize("data, fsdp, advised", [
    (-1, 1, True),   # every chip a data replica with the whole state
    (2, -1, True),   # two replicas, each with half of the state
    (1, -1, False),  # already over every chip
    (1, 4, False)])  # the same, sized by hand
def test_the_advice_for_a_config_that_does_not_fit_shards_the_state_only_where_it_is_copied(
    data, fsdp, advised):
  config = _local()
  config.mesh.update(data=data, fsdp=fsdp)
  assert ("mesh.data=1 mesh.fsdp=-1" in memory_lib.fit_advice(config)) == advised


def test_a_chip_s_bytes_are_its_shard_of_each_leaf_at_the_leaf_s_dtype_width():
  mesh = Mesh(np.array(jax.devices()).reshape(8, 1, 1), parallel.MESH_AXES)
  tree = {"rows": jax.ShapeDtypeStruct((16, 6), jnp.bfloat16,
                                       sharding=parallel.batch_sharding(mesh, 2)),
          "table": jax.ShapeDtypeStruct((3, 5), jnp.float32, sharding=NamedSharding(mesh, P()))}
  # 2 of the 16 rows of 6 two-byte values, and the whole replicated table of 4-byte values.
  assert aot.per_chip_bytes(tree) == 2 * 6 * 2 + 3 * 5 * 4


def test_a_program_s_peak_counts_a_donated_buffer_once():
  memory = types.SimpleNamespace(argument_size_in_bytes=100, output_size_in_bytes=60,
                                 alias_size_in_bytes=40, temp_size_in_bytes=7)
  # The 40 donated bytes are an argument that comes back as an output: 100 + (60 - 40) + 7.
  assert memory_lib.program_bytes(memory) == 127


def test_a_host_s_row_runs_are_its_contiguous_blocks_of_rows():
  assert aot._row_runs(np.arange(8)) == 1
  assert aot._row_runs(np.array([0, 1, 4, 5, 8, 9])) == 3
  assert aot._row_runs(np.array([5])) == 1


@pytest.mark.parametrize("message", [
    "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
    "temporaries (20.50G) exceeds available HBM (15.75G).",
    "RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. "
    "Used 20.50G of 15.75G hbm. Exceeded hbm capacity by 4.75G.",
    "RESOURCE_EXHAUSTED: Aborting compilation early because it's unlikely to have enough device "
    "memory. Requires 20.50G, has 15.75G available."])
def test_both_ways_libtpu_reports_running_out_of_hbm_give_the_need_and_the_excess(message):
  assert aot._out_of_memory(RuntimeError(message)) == (
      "needs 20.50 GiB per chip, 4.75 GiB more than the 15.75 GiB of HBM a program may use")
  assert aot._out_of_memory(RuntimeError("INTERNAL: a compiler bug")) is None
  vmem = "RESOURCE_EXHAUSTED: Ran out of memory in memory space vmem. Used 17.0M of 16.0M vmem."
  assert aot._out_of_memory(RuntimeError(vmem)) is None  # a kernel's scratch, not the HBM


def test_the_advice_for_a_config_that_does_not_fit_names_the_knobs_not_yet_turned():
  config = _local()
  config.mesh.update(data=1, fsdp=-1)
  config.optim.grad_accum_steps = 2
  for remat, advised in (("none", True), ("minimal", True), ("full", False)):
    config.model.remat = remat
    assert ("model.remat=full" in memory_lib.fit_advice(config)) == advised, remat
  assert "optim.grad_accum_steps=4 " in memory_lib.fit_advice(config)  # twice the accumulation
  # Only where each micro-batch still splits over the data-parallel rows: 16 / 4 = 4 rows.
  assert "optim.grad_accum_steps=4 " in memory_lib.fit_advice(config, batch_parallelism=4)
  assert "grad_accum_steps" not in memory_lib.fit_advice(config, batch_parallelism=8)
  config.data.batch_size = 12  # one chip splits any count of rows: 3 a micro-batch is advised
  assert "optim.grad_accum_steps=4 " in memory_lib.fit_advice(config, batch_parallelism=1)
  assert "checkpoint.device_snapshot=false" in memory_lib.fit_advice(config, snapshot=True)
  assert "device_snapshot" not in memory_lib.fit_advice(config)
  # Kept dropout masks are memory remat can give back, where there are masks to keep.
  assert "save_dropout_masks" not in memory_lib.fit_advice(config)
  config.model.update(save_dropout_masks=True, hidden_dropout=0.1)
  assert "model.save_dropout_masks=false" in memory_lib.fit_advice(config)
  config.model.hidden_dropout = 0.0
  assert "save_dropout_masks" not in memory_lib.fit_advice(config)


def test_a_compiler_error_that_only_mentions_hbm_is_not_read_as_running_out_of_it():
  """Not RESOURCE_EXHAUSTED: a build error, which must surface, not exit 1 as 'does not fit'."""
  error = RuntimeError("INTERNAL: Mosaic failed to compile TPU kernel: unsupported HBM layout")
  assert aot._out_of_memory(error) is None


def _report(**changes) -> aot.Report:
  """A v5litepod-16's report, made by hand (nothing compiled), with `changes`."""
  gib = 2**30
  fields = dict(
      topology="v5e:4x4", accelerator_type="v5litepod-16", platform="tpu",
      device_kind="TPU v5 lite", chips=16, hosts=4, mesh={"data": 16, "fsdp": 1, "tensor": 1},
      attention="xla", mosaic_kernels=0, state_bytes=gib, temp_bytes=2 * gib, snapshot_bytes=0,
      eval_batch_bytes=gib // 4, prefetch_bytes=gib // 2, total_bytes=int(3.75 * gib),
      hbm_bytes=int(15.75 * gib), model_flops_per_step=1e15, step_time_at_target_mfu_s=1.0,
      rows_per_host=256, hosts_per_row=1, host_row_runs=4, compile_s=10.0, batch_size=1024,
      seq_len=512, remat="none")
  return aot.Report(**{**fields, **changes})


def test_the_report_shows_the_held_out_and_prefetched_batches_together():
  text = aot.describe(_report(), "v5litepod-16", "xla")
  assert "held-out and prefetched batches 0.75 GiB | peak 3.75 GiB of 15.75 GiB" in text
  assert f"fits ({100 * 3.75 / 15.75:.0f}%)" in text  # the peak's share of the HBM
  assert "host 0: 4 separate runs of rows); every row is built by one host" in text


def test_a_slice_s_peak_is_given_against_its_hbm_and_a_gpu_s_against_jax_s_share_of_it():
  tpu = aot.describe(_report(), "v5litepod-16", "xla")
  assert "per chip" in tpu and "peak 3.75 GiB of 15.75 GiB HBM: fits" in tpu
  gpu = aot.describe(_report(platform="gpu", device_kind="NVIDIA H100 80GB HBM3", chips=8,
                             hosts=1), "h100-8", "xla")
  assert "per GPU" in gpu
  assert "peak 3.75 GiB of 15.75 GiB (jax's share of the GPU's memory): fits" in gpu


def test_a_need_of_terabytes_in_libtpu_s_message_is_read_in_tib():
  # aot is where a config far too big for a chip is judged: libtpu then writes T.
  error = RuntimeError("RESOURCE_EXHAUSTED: Aborting compilation early because it's unlikely "
                       "to have enough device memory. Requires 1.50T, has 15.75G available.")
  assert aot._out_of_memory(error) == (
      "needs 1536.00 GiB per chip, 1520.25 GiB more than the 15.75 GiB of HBM a program may use")


def test_a_peak_that_fills_the_chip_to_the_byte_fits_and_one_byte_more_does_not():
  hbm = _report().hbm_bytes
  assert _report(total_bytes=hbm).fits
  assert not _report(total_bytes=hbm + 1).fits


def test_the_report_gives_the_step_s_model_flops_in_pflop_and_its_time_at_the_target_mfu():
  report = _report(model_flops_per_step=2.5e15, step_time_at_target_mfu_s=0.75)
  text = aot.describe(report, "v5litepod-16", "xla")
  assert (f"{2.5e15 / 10**15:.3f} PFLOP per step (model FLOPs); 0.750 s per step at "
          f"{aot.TARGET_MFU:.0%} MFU") in text
