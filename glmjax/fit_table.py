"""python -m glmjax.fit_table [--readme=README.md] [--models=GLM-Base,...] [--generations=v5p,...]

Regenerates the table of the smallest TPU slices on which each shipped config trains at the
paper's batch (1024 rows of its sequence length), by compiling each candidate with
`glmjax.aot.compile_for_slice` on this machine. For every model and chip generation it walks
the slice sizes upward; at each size it tries the config as shipped, then `model.remat=full`,
then also `mesh.data=1 mesh.fsdp=-1` (parameters and optimizer state sharded over all chips),
and keeps the first that compiles within the chip's HBM. Out-of-memory compiles stop early, so
a size that is too small costs seconds; each fitting compile takes minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
import time

import jax

from glmjax import aot, config as config_lib, topology

MODELS = (("GLM-Base", "configs.base"), ("GLM-Large", "configs.large"),
          ("GLM-2B", "configs.glm_2b"), ("GLM-10B", "configs.glm_10b"))
# Slice sizes to try, in chips (a v5p-8 has 4 chips; v5e and v6e names count chips).
SIZES = {"v5p": (4, 8, 16, 32, 64, 128, 256), "v5e": (1, 4, 8, 16, 32, 64, 128, 256),
         "v6e": (1, 4, 8, 16, 32, 64, 128, 256)}
GENERATIONS = ("v5p", "v5e", "v6e")  # the table's order of chip generations
BEGIN, END = "<!-- fit-table:begin -->", "<!-- fit-table:end -->"


def _slice(generation: str, chips: int) -> topology.TpuSlice:
  shape = (topology.SHAPES_3D if generation == "v5p" else topology.SHAPES_2D)[chips]
  return topology.parse_slice(f"{generation}:{'x'.join(map(str, shape))}")


def _variants(config_module: str):
  """(label, config) to try at one slice size, cheapest in memory last."""
  shipped = importlib.import_module(config_module).get_config()
  yield "as shipped", shipped
  if shipped.model.remat != "full":
    remat = importlib.import_module(config_module).get_config()
    remat.model.remat = "full"
    yield "remat=full", remat
  if not (int(shipped.mesh.data) == 1 and int(shipped.mesh.fsdp) == -1):
    sharded = importlib.import_module(config_module).get_config()
    sharded.model.remat = "full"
    sharded.mesh.update(data=1, fsdp=-1, tensor=1)
    yield "remat=full, fsdp", sharded


def smallest_fit(config_module: str, generation: str, log) -> aot.Report | str:
  """The report of the smallest fitting slice, or a line saying why none was found."""
  too_big = False  # some slice compiled and did not fit
  for size in SIZES[generation]:
    spec = _slice(generation, size)
    name = spec.accelerator_type
    for label, config in _variants(config_module):
      if int(config.data.batch_size) % spec.chips:
        continue
      log(f"  {name} {label}: compiling...")  # a big model takes minutes per slice
      started = time.perf_counter()
      try:
        report = aot.compile_for_slice(config, spec)
      except aot.DoesNotFit:
        too_big = True  # a build error alone is not "does not fit"
        log(f"  {name} {label}: does not fit ({time.perf_counter() - started:.0f} s)")
        continue
      except (config_lib.ConfigError, aot.UnfeedableLayout, topology.TopologyError) as error:
        log(f"  {name} {label}: cannot be built ({error})")
        continue
      log(f"  {name} {label}: fits, {report.total_bytes / 2**30:.1f} GiB per chip "
          f"({report.compile_s:.0f} s)")
      return report
  largest = _slice(generation, SIZES[generation][-1]).accelerator_type
  return f"does not fit up to {largest}" if too_big else f"no slice up to {largest} could be built"


def table(rows: list[str]) -> str:
  """The table: its header, then `rows` (each from `report_row` or `reason_row`)."""
  return "\n".join([
      "| model | slice | hosts | mesh | remat | per chip (of HBM) | step at 50% MFU | tokens/s |",
      "|---|---|---|---|---|---|---|---|", *rows])


def report_row(model: str, report: aot.Report) -> str:
  """The row of `model`'s smallest fitting slice of a chip generation."""
  mesh = " ".join(f"{k}={v}" for k, v in report.mesh.items() if v != 1) or "1 chip"
  tokens = report.batch_size * report.seq_len / report.step_time_at_target_mfu_s
  return (f"| {model} | {report.accelerator_type} | {report.hosts} | {mesh} | {report.remat} | "
          f"{report.total_bytes / 2**30:.1f} of {report.hbm_bytes / 2**30:.1f} GiB | "
          f"{report.step_time_at_target_mfu_s:.2f} s | {tokens / 1e3:,.0f}k |")


def reason_row(model: str, reason: str) -> str:
  """The row of a chip generation where no slice fits `model`: why, in the slice cell."""
  return f"| {model} | {reason} | | | | | | |"


def _row_key(line: str) -> tuple[int, int]:
  """(model, generation) order of a table row, from its model and slice cells."""
  model, where = [cell.strip() for cell in line.strip("|").split("|")[:2]]
  found = re.search(r"v5p|v5litepod|v5e|v6e|v4", where)
  generation = {"v5litepod": "v5e"}.get(found.group(0), found.group(0)) if found else ""
  models = [name for name, _ in MODELS]
  return (models.index(model) if model in models else len(models),
          GENERATIONS.index(generation) if generation in GENERATIONS else len(GENERATIONS))


def check_readme(path: str) -> None:
  """Refuses a --readme that splice could not write into, before the compiles (21 minutes for
  the whole table) rather than after them."""
  try:
    with open(path, encoding="utf-8") as f:
      content = f.read()
  except OSError as error:
    raise SystemExit(f"--readme={path}: cannot be read ({error.strerror or error}); name the "
                     "README.md whose fit table the rows go into") from None
  if BEGIN not in content or END not in content:
    raise SystemExit(f"--readme={path} has no {BEGIN} ... {END} block to put the rows into; "
                     "name the repository's README.md")


def splice(path: str, text: str) -> None:
  """Puts the rows of `text` into the table between the markers of `path`: a row replaces the
  row of the same model and chip generation; the rows of a partial run join the others."""
  with open(path, encoding="utf-8") as f:
    content = f.read()
  if BEGIN not in content or END not in content:
    raise SystemExit(f"{path} has no {BEGIN} ... {END} block to replace.")
  pattern = re.compile(re.escape(BEGIN) + "(.*?)" + re.escape(END), re.S)
  rows = lambda block: {_row_key(line): line for line in block.strip().splitlines()[2:]
                        if line.startswith("| ")}
  merged = {**rows(pattern.search(content).group(1)), **rows(text)}
  table_text = "\n".join(text.strip().splitlines()[:2] + [merged[key] for key in sorted(merged)])
  with open(path, "w", encoding="utf-8") as f:
    f.write(pattern.sub(lambda _: f"{BEGIN}\n{table_text}\n{END}", content))


def _names(flag: str, text: str, known: tuple[str, ...]) -> list[str]:
  """The comma-separated names of `flag`, each one of `known` (a typo would otherwise leave an
  empty table and exit 0)."""
  names = [name.strip() for name in text.split(",") if name.strip()]
  unknown = [name for name in names if name not in known]
  if unknown or not names:
    raise SystemExit(f"{flag}={text!r}: {'unknown ' + ', '.join(unknown) if unknown else 'empty'}"
                     f"; choose from {','.join(known)}")
  return names


def _generations(text: str) -> list[str]:
  """--generations: the table's generations by their names or gcloud's (`v5litepod` is v5e),
  each once, in the order given."""
  names = {name: name for name in GENERATIONS} | {
      alias: generation.name for generation in topology.GENERATIONS
      if generation.name in GENERATIONS for alias in generation.aliases}
  known = tuple(dict.fromkeys((*GENERATIONS, *names)))
  return list(dict.fromkeys(names[name] for name in _names("--generations", text, known)))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  parser.add_argument("--models", default=",".join(name for name, _ in MODELS))
  parser.add_argument("--generations", default=",".join(GENERATIONS))
  parser.add_argument("--readme", default="", help="put the rows found into this file's table")
  args = parser.parse_args(argv)
  models = _names("--models", args.models, tuple(name for name, _ in MODELS))
  generations = _generations(args.generations)
  if args.readme:
    check_readme(args.readme)
  jax.config.update("jax_platforms", "cpu")
  log = lambda text: print(text, file=sys.stderr, flush=True)
  rows = []
  for model, module in MODELS:
    if model not in models:
      continue
    for generation in generations:
      log(f"{model} on {generation}:")
      found = smallest_fit(module, generation, log)
      rows.append(reason_row(model, found) if isinstance(found, str) else report_row(model, found))
  text = table(rows)
  print(text)
  if args.readme:
    splice(args.readme, text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
