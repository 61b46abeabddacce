"""The planted bugs of tests/mutations.py, by area: each replaces text its file holds once with
a realistic mistake, and names the tests that must fail. Add one when a claim gets a test."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutation:
  name: str
  path: str   # file the bug goes into
  old: str    # text replaced (must occur exactly once)
  new: str
  tests: tuple[str, ...]  # pytest node ids that must fail


# pylint: disable=wrong-import-position  (the areas' modules use Mutation)
from mutation_entries import checkpoints, commands, data, model, sharding, training  # noqa: E402
from mutation_entries import data_inputs, reporting, training_core  # noqa: E402
from mutation_entries import attention_kernels, benchmarks, data_helpers, tpu_layout  # noqa: E402
from mutation_entries import evaluation, generation, main_loop, pretrained_use  # noqa: E402
from mutation_entries import batch_building, prepared_data  # noqa: E402
from mutation_entries import model_conversion, run_records  # noqa: E402
from mutation_entries import bench_timing, gap_hunt, user_walk  # noqa: E402
from mutation_entries import cluster_walk, core_hunt, fault_walk, thin_modules  # noqa: E402
from mutation_entries import bench_hunt, claims_audit_3, prose_audit_run  # noqa: E402
from mutation_entries import model_draws, prose_audit_use, row_draws  # noqa: E402
from mutation_entries import mesh_hunt, save_hunt, thin_hunt, use_hunt  # noqa: E402
from mutation_entries import infra_hunt  # noqa: E402
from mutation_entries import input_hunt  # noqa: E402
from mutation_entries import convert_hunt  # noqa: E402
from mutation_entries import kernel_hunt  # noqa: E402
from mutation_entries import lever_hunt  # noqa: E402
from mutation_entries import slice_hunt  # noqa: E402
from mutation_entries import figures_hunt, loop_hunt, snapshot_hunt  # noqa: E402
from mutation_entries import operator_sweep, operator_sweep_2, operator_sweep_3  # noqa: E402
from mutation_entries import leftovers, leftovers_2, leftovers_3, operator_sweep_4  # noqa: E402

MUTATIONS = (model.ENTRIES + data.ENTRIES + training.ENTRIES + commands.ENTRIES
             + checkpoints.ENTRIES + sharding.ENTRIES + training_core.ENTRIES
             + data_inputs.ENTRIES + reporting.ENTRIES + attention_kernels.ENTRIES
             + benchmarks.ENTRIES + data_helpers.ENTRIES + tpu_layout.ENTRIES
             + main_loop.ENTRIES + evaluation.ENTRIES + pretrained_use.ENTRIES
             + generation.ENTRIES + batch_building.ENTRIES + prepared_data.ENTRIES
             + model_conversion.ENTRIES + run_records.ENTRIES + bench_timing.ENTRIES
             + gap_hunt.ENTRIES + user_walk.ENTRIES + cluster_walk.ENTRIES
             + thin_modules.ENTRIES + core_hunt.ENTRIES + fault_walk.ENTRIES
             + bench_hunt.ENTRIES + claims_audit_3.ENTRIES + prose_audit_run.ENTRIES
             + prose_audit_use.ENTRIES + thin_hunt.ENTRIES + row_draws.ENTRIES
             + save_hunt.ENTRIES + model_draws.ENTRIES + mesh_hunt.ENTRIES
             + use_hunt.ENTRIES + infra_hunt.ENTRIES + input_hunt.ENTRIES
             + convert_hunt.ENTRIES + kernel_hunt.ENTRIES + lever_hunt.ENTRIES
             + slice_hunt.ENTRIES + loop_hunt.ENTRIES + snapshot_hunt.ENTRIES
             + figures_hunt.ENTRIES + operator_sweep.ENTRIES + operator_sweep_2.ENTRIES
             + operator_sweep_3.ENTRIES + operator_sweep_4.ENTRIES + leftovers.ENTRIES
             + leftovers_2.ENTRIES + leftovers_3.ENTRIES)
