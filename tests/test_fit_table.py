"""The README's TPU fit table: rows from aot reports, spliced between its markers."""
import dataclasses

import pytest

from glmjax import aot, config as config_lib, fit_table


def _report(**changes):
  report = aot.Report(
      topology="v5p:2x2x1", accelerator_type="v5p-8", platform="tpu", device_kind="TPU v5",
      chips=4, hosts=1,
      mesh={"data": 4, "fsdp": 1, "tensor": 1}, attention="splash", mosaic_kernels=4,
      state_bytes=2**30, temp_bytes=20 * 2**30, snapshot_bytes=0, eval_batch_bytes=0, prefetch_bytes=0,
      total_bytes=int(26.6 * 2**30),
      hbm_bytes=int(95.74 * 2**30), model_flops_per_step=3.67e14,
      step_time_at_target_mfu_s=0.4, rows_per_host=1024, hosts_per_row=1, host_row_runs=1,
      compile_s=100.0, batch_size=1024, seq_len=512, remat="full")
  return dataclasses.replace(report, **changes)


def test_a_row_shows_slice_mesh_memory_and_the_throughput_at_half_mfu():
  text = fit_table.table([fit_table.report_row("GLM-Base", _report()),
                          fit_table.reason_row("GLM-10B", "does not fit up to v5litepod-256")])
  lines = text.splitlines()
  assert lines[2] == ("| GLM-Base | v5p-8 | 1 | data=4 | full | 26.6 of 95.7 GiB | 0.40 s | "
                      "1,311k |")  # 1024 * 512 tokens / 0.4 s
  assert lines[3].startswith("| GLM-10B | does not fit up to v5litepod-256 |")


def test_the_search_walks_sizes_up_and_tries_remat_then_fsdp_before_a_bigger_slice(monkeypatch):
  attempts = []

  def fake_compile(config, spec):
    attempts.append((spec.accelerator_type, config.model.remat, int(config.mesh.fsdp)))
    if spec.chips < 8 or int(config.mesh.fsdp) != -1:
      raise aot.DoesNotFit("too big")
    return _report(accelerator_type=spec.accelerator_type, chips=spec.chips)

  monkeypatch.setattr(aot, "compile_for_slice", fake_compile)
  lines = []
  report = fit_table.smallest_fit("configs.base", "v5p", log=lines.append)
  assert report.accelerator_type == "v5p-16"
  assert lines[-1].endswith(": fits, 26.6 GiB per chip (100 s)")  # the table's unit, 2**30 bytes
  assert attempts == [("v5p-8", "none", 1), ("v5p-8", "full", 1), ("v5p-8", "full", -1),
                      ("v5p-16", "none", 1), ("v5p-16", "full", 1), ("v5p-16", "full", -1)]
  monkeypatch.setattr(aot, "compile_for_slice",
                      lambda config, spec: (_ for _ in ()).throw(aot.DoesNotFit("too big")))
  assert fit_table.smallest_fit("configs.base", "v6e", log=lambda line: None) == (
      "does not fit up to v6e-256")


def test_the_rows_found_replace_their_own_rows_between_the_markers_and_keep_the_others(
    tmp_path):
  readme = tmp_path / "README.md"
  old = fit_table.table([fit_table.report_row("GLM-Base", _report()),
                         fit_table.reason_row("GLM-Base", "v5e: not compiled yet"),
                         fit_table.report_row("GLM-Large", _report(accelerator_type="v6e-4"))])
  readme.write_text(f"before\n{fit_table.BEGIN}\n{old}\n{fit_table.END}\nafter\n")
  new = fit_table.table([fit_table.report_row("GLM-Base", _report(accelerator_type="v5litepod-16",
                                                                  hosts=4)),
                         fit_table.reason_row("GLM-10B", "does not fit up to v6e-256")])
  fit_table.splice(str(readme), new)
  text = readme.read_text()
  assert text.startswith(f"before\n{fit_table.BEGIN}\n| model |") and text.endswith(
      f"{fit_table.END}\nafter\n")
  assert [line.split(" | ")[:2] for line in text.splitlines() if line.startswith("| GLM")] == [
      ["| GLM-Base", "v5p-8"], ["| GLM-Base", "v5litepod-16"], ["| GLM-Large", "v6e-4"],
      ["| GLM-10B", "does not fit up to v6e-256"]]
  readme.write_text("no markers here\n")
  with pytest.raises(SystemExit, match="no <!-- fit-table:begin -->"):
    fit_table.splice(str(readme), "| new |")


@pytest.mark.parametrize("argv, message", [
    (["--models=GLM-base"], r"^--models='GLM-base': unknown GLM-base; choose from GLM-Base,"),
    (["--generations=v5p,v4"],
     r"^--generations='v5p,v4': unknown v4; choose from v5p,v5e,v6e,v5litepod$"),
    (["--models="], r"^--models='': empty; choose from "),
])
def test_a_model_or_chip_generation_the_table_does_not_know_is_refused_before_any_compile(
    monkeypatch, argv, message):
  # A typo would otherwise match nothing: an empty table and exit status 0.
  monkeypatch.setattr(aot, "compile_for_slice", lambda config, spec: pytest.fail("compiled"))
  with pytest.raises(SystemExit, match=message):
    fit_table.main(argv)


def test_a_prefix_of_a_flag_is_not_taken_for_the_flag(monkeypatch, capsys):
  monkeypatch.setattr(aot, "compile_for_slice", lambda config, spec: pytest.fail("compiled"))
  with pytest.raises(SystemExit) as stopped:
    fit_table.main(["--model=GLM-Base"])  # argparse would read it as --models
  assert stopped.value.code == 2 and "unrecognized arguments: --model=GLM-Base" in (
      capsys.readouterr().err)


def test_a_model_no_slice_could_be_built_for_is_not_said_not_to_fit(monkeypatch):
  """A config that cannot be built at any size (a mesh the heads do not split over) says so;
  "does not fit" would send its reader after more HBM."""
  def cannot_build(config, spec):
    raise config_lib.ConfigError("model.num_heads = 12 cannot be split over mesh.tensor=8")

  monkeypatch.setattr(aot, "compile_for_slice", cannot_build)
  lines = []
  assert fit_table.smallest_fit("configs.base", "v5e", log=lines.append) == (
      "no slice up to v5litepod-256 could be built")
  tried = [line for line in lines if not line.endswith(": compiling...")]
  assert all("cannot be built" in line for line in tried) and tried
  assert len(lines) == 2 * len(tried)  # each slice says it is compiling before its verdict


def test_a_partial_run_s_rows_join_the_table_in_model_then_chip_generation_order(tmp_path):
  readme = tmp_path / "README.md"
  old = fit_table.table([fit_table.report_row("GLM-Large", _report(accelerator_type="v5p-16")),
                         fit_table.report_row("GLM-10B", _report(accelerator_type="v6e-64"))])
  readme.write_text(f"{fit_table.BEGIN}\n{old}\n{fit_table.END}\n")
  fit_table.splice(str(readme), fit_table.table([
      fit_table.report_row("GLM-10B", _report(accelerator_type="v5p-128")),
      fit_table.report_row("GLM-Base", _report(accelerator_type="v6e-4")),
      fit_table.report_row("GLM-Base", _report(accelerator_type="v5litepod-8"))]))
  rows = [line.split(" | ")[:2] for line in readme.read_text().splitlines()
          if line.startswith("| GLM")]
  # Models smallest first; within a model v5p, v5e, v6e (the table's order).
  assert rows == [["| GLM-Base", "v5litepod-8"], ["| GLM-Base", "v6e-4"],
                  ["| GLM-Large", "v5p-16"], ["| GLM-10B", "v5p-128"], ["| GLM-10B", "v6e-64"]]


def test_a_config_shipped_with_full_remat_is_not_compiled_twice_at_a_size(monkeypatch):
  """GLM-10B ships remat=full with its state sharded over every chip (mesh.data=1,
  mesh.fsdp=-1): nothing is left to turn, so one compile per size (each takes minutes)."""
  attempts = []

  def fake_compile(config, spec):
    attempts.append((spec.accelerator_type, config.model.remat, int(config.mesh.data),
                     int(config.mesh.fsdp)))
    raise aot.DoesNotFit("too big")

  monkeypatch.setattr(aot, "compile_for_slice", fake_compile)
  fit_table.smallest_fit("configs.glm_10b", "v5p", log=lambda line: None)
  assert attempts == [(f"v5p-{2 * chips}", "full", 1, -1) for chips in fit_table.SIZES["v5p"]]


def test_a_layout_that_cannot_be_fed_is_logged_and_the_search_goes_on(monkeypatch):
  def compile_or_refuse(config, spec):
    if spec.chips < 8:
      raise aot.UnfeedableLayout("rows 0-3 are built by no host")
    return _report(accelerator_type=spec.accelerator_type, chips=spec.chips)

  monkeypatch.setattr(aot, "compile_for_slice", compile_or_refuse)
  lines = []
  report = fit_table.smallest_fit("configs.base", "v6e", log=lines.append)
  assert report.accelerator_type == "v6e-8"  # v6e-1 and v6e-4 could not be fed
  assert any("v6e-4" in line and "cannot be built (rows 0-3" in line for line in lines), lines


def test_a_one_chip_slice_s_mesh_cell_says_one_chip():
  text = fit_table.table([fit_table.report_row("GLM-Base", _report(
      accelerator_type="v6e-1", chips=1, mesh={"data": 1, "fsdp": 1, "tensor": 1}))])
  assert text.splitlines()[2].startswith("| GLM-Base | v6e-1 | 1 | 1 chip | full |")


def test_the_command_searches_the_chosen_models_and_generations_and_splices_their_rows(
    tmp_path, monkeypatch, capsys):
  searched = []

  def smallest_fit(module, generation, log):  # nothing compiles: one slice per generation
    searched.append((module, generation))
    return _report(accelerator_type={"v5p": "v5p-8", "v5e": "v5litepod-4",
                                     "v6e": "v6e-4"}[generation])

  monkeypatch.setattr(fit_table, "smallest_fit", smallest_fit)
  readme = tmp_path / "README.md"
  old = fit_table.table([fit_table.report_row("GLM-Base", _report()),
                         fit_table.report_row("GLM-10B", _report(accelerator_type="v6e-64"))])
  readme.write_text(f"{fit_table.BEGIN}\n{old}\n{fit_table.END}\n")
  assert fit_table.main(["--models=GLM-10B,GLM-Base", "--generations=v6e",
                         f"--readme={readme}"]) == 0
  assert searched == [("configs.base", "v6e"), ("configs.glm_10b", "v6e")]
  cells = lambda text: [line.split(" | ")[:2] for line in text.splitlines()  # noqa: E731
                        if line.startswith("| GLM")]
  assert cells(capsys.readouterr().out) == [["| GLM-Base", "v6e-4"], ["| GLM-10B", "v6e-4"]]
  # GLM-10B's v6e row is replaced; GLM-Base's v5p row, not searched, is kept.
  assert cells(readme.read_text()) == [["| GLM-Base", "v5p-8"], ["| GLM-Base", "v6e-4"],
                                       ["| GLM-10B", "v6e-4"]]
  # gcloud's name for v5e, as the slice names in the table read, is the same generation.
  searched.clear()
  assert fit_table.main(["--models=GLM-Base", "--generations=v5litepod,v5e"]) == 0
  assert searched == [("configs.base", "v5e")]
  # A list written with spaces after its commas, as a shell user quotes it.
  searched.clear()
  assert fit_table.main(["--models=GLM-Base, GLM-10B", "--generations=v5p, v6e"]) == 0
  assert searched == [(m, g) for m in ("configs.base", "configs.glm_10b") for g in ("v5p", "v6e")]


def test_the_command_prints_why_a_generation_has_no_slice_in_its_row(monkeypatch, capsys):
  monkeypatch.setattr(fit_table, "smallest_fit", lambda module, generation, log: (
      "does not fit up to v6e-256" if generation == "v6e" else _report()))
  assert fit_table.main(["--models=GLM-Base", "--generations=v5p,v6e"]) == 0
  assert capsys.readouterr().out.splitlines()[2:] == [
      fit_table.report_row("GLM-Base", _report()),
      "| GLM-Base | does not fit up to v6e-256 | | | | | | |"]


@pytest.mark.parametrize("content, message", [
    (None, r"^--readme=.*README\.MD: cannot be read \(No such file or directory\)"),
    ("a README without the table\n", r"^--readme=.*README\.MD has no <!-- fit-table:begin -->"),
])
def test_a_readme_the_rows_cannot_go_into_is_refused_before_any_compile(
    tmp_path, monkeypatch, content, message):
  # Found only when the rows are spliced in, it would come after the whole search (21 minutes).
  monkeypatch.setattr(aot, "compile_for_slice", lambda config, spec: pytest.fail("compiled"))
  readme = tmp_path / "README.MD"
  if content is not None:
    readme.write_text(content)
  with pytest.raises(SystemExit, match=message):
    fit_table.main(["--models=GLM-Base", "--generations=v5p", f"--readme={readme}"])
