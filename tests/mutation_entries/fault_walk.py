"""Planted bugs in what a user meets trying to lose a run's records or checkpoints: kills, full
disks and damaged files, then a resume."""
from mutation_entries import Mutation

ENTRIES = (
    Mutation("a resume appends its first metrics record to a line a full disk cut off",
             "glmjax/metrics.py", "      cut = _ends_mid_line(self._jsonl_path)",
             "      cut = False",
             ("tests/test_metrics.py::test_a_record_cut_off_by_a_full_disk_does_not_swallow_the_"
              "resumed_run_s_first_record",)),
)
