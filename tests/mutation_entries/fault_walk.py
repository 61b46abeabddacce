"""Planted bugs in what a user meets trying to lose a run's records or checkpoints: kills, full
disks and damaged files, then a resume."""
from mutation_entries import Mutation

ENTRIES = (
    Mutation("a resume appends its first metrics record to a line a full disk cut off",
             "glmjax/metrics.py", "      cut = _ends_mid_line(self._jsonl_path)",
             "      cut = False",
             ("tests/test_metrics.py::test_a_record_cut_off_by_a_full_disk_does_not_swallow_the_"
              "resumed_run_s_first_record",)),
    Mutation("a log file on a full disk prints logging's traceback for every record",
             "glmjax/logs.py", "    if not isinstance(error, OSError):  # a malformed record",
             "    if True:  # a malformed record",
             ("tests/test_logs.py::test_a_log_file_on_a_full_disk_is_one_console_warning_not_a_"
              "traceback_per_record",)),
    Mutation("a last save failing as the checkpointer closes leaves the metric files open",
             "glmjax/train.py",
             "      try:\n        outputs.checkpointer.close()  # may raise the last save's error "
             "(a full disk)\n      finally:\n        outputs.writer.close()",
             "      outputs.checkpointer.close()\n      outputs.writer.close()",
             ("tests/test_faults.py::test_a_last_save_that_fails_as_the_checkpointer_closes_still_"
              "closes_the_metric_files",)),
    Mutation("a save into a workdir removed under the run goes on without a word",
             "glmjax/checkpoint.py",
             '    if "://" not in self.directory and not os.path.isdir(self.directory):',
             "    if False:",
             ("tests/test_checkpoint.py::test_a_save_after_the_workdir_was_removed_under_the_run_"
              "says_so_and_saves_anew",)),
)
