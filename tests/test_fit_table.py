"""The README's TPU fit table: rows from aot reports, spliced between its markers."""
import dataclasses

import pytest

from glmjax import aot, fit_table


def _report(**changes):
  report = aot.Report(
      topology="v5p:2x2x1", accelerator_type="v5p-8", device_kind="TPU v5", chips=4, hosts=1,
      mesh={"data": 4, "fsdp": 1, "tensor": 1}, attention="splash", mosaic_kernels=4,
      state_bytes=2**30, temp_bytes=20 * 2**30, total_bytes=int(26.6 * 2**30),
      hbm_bytes=int(95.74 * 2**30), model_flops_per_step=3.67e14,
      step_time_at_target_mfu_s=0.4, rows_per_host=1024, hosts_per_row=1, host_row_runs=1,
      compile_s=100.0, batch_size=1024, seq_len=512, remat="full")
  return dataclasses.replace(report, **changes)


def test_a_row_shows_slice_mesh_memory_and_the_throughput_at_half_mfu():
  text = fit_table.table([("GLM-Base", _report()),
                          ("GLM-10B", "does not fit up to v5litepod-256")])
  lines = text.splitlines()
  assert lines[2] == ("| GLM-Base | v5p-8 | 1 | data=4 | full | 26.6 of 95.7 GiB | 0.40 s | "
                      "1,311k |")  # 1024 * 512 tokens / 0.4 s
  assert lines[3].startswith("| GLM-10B | does not fit up to v5litepod-256 |")


def test_the_table_replaces_only_the_block_between_the_markers(tmp_path):
  readme = tmp_path / "README.md"
  readme.write_text(f"before\n{fit_table.BEGIN}\nold table\n{fit_table.END}\nafter\n")
  fit_table.splice(str(readme), "| new |")
  assert readme.read_text() == f"before\n{fit_table.BEGIN}\n| new |\n{fit_table.END}\nafter\n"
  readme.write_text("no markers here\n")
  with pytest.raises(SystemExit, match="no <!-- fit-table:begin -->"):
    fit_table.splice(str(readme), "| new |")
