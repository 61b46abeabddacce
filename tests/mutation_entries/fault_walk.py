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
             "    if not paths.is_remote(self.directory) and not os.path.isdir(self.directory):",
             "    if False:",
             ("tests/test_checkpoint.py::test_a_save_after_the_workdir_was_removed_under_the_run_"
              "says_so_and_saves_anew",)),
    Mutation("a step missing its tree file stops the run instead of being skipped",
             "glmjax/checkpoint.py",
             "    if TREE_FILE not in {path.name for path in folder.iterdir()}:", "    if False:",
             ("tests/test_checkpoint_damage.py::test_a_checkpoint_whose_tree_file_is_missing_is_"
              "skipped_for_the_older_one",)),
    Mutation("reads finishing after a failed restore print a traceback each", "glmjax/logs.py",
             "    if _late_read_on_a_closed_loop(unraisable):", "    if False:",
             ("tests/test_logs.py::test_reads_finishing_after_a_failed_restore_print_no_"
              "tracebacks_and_other_errors_still_do",)),
    Mutation("other unraisable errors are quieted with the late reads", "glmjax/logs.py",
             "      and str(unraisable.exc_value) == \"Event loop is closed\"):",
             "      or True):",
             ("tests/test_logs.py::test_reads_finishing_after_a_failed_restore_print_no_"
              "tracebacks_and_other_errors_still_do",)),
    Mutation("Orbax's note of a missing commit record reaches the console", "glmjax/logs.py",
             ', "Metadata file does not exist")', ")",
             ("tests/test_logs.py::test_a_library_record_is_one_line_on_the_console_and_orbax_"
              "errors_and_notices_stay_off",)),
    Mutation("asyncio's records of Orbax's abandoned reads reach the console", "glmjax/logs.py",
             '    return not ((orbax in message and "async_deserialize" in message)',
             '    return True or ((orbax in message and "async_deserialize" in message)',
             ("tests/test_logs.py::test_a_library_record_is_one_line_on_the_console_and_orbax_"
              "errors_and_notices_stay_off",)),
    Mutation("every asyncio record is kept off the console", "glmjax/logs.py",
             '    return not ((orbax in message and "async_deserialize" in message)',
             '    return False and ((orbax in message and "async_deserialize" in message)',
             ("tests/test_logs.py::test_a_library_record_is_one_line_on_the_console_and_orbax_"
              "errors_and_notices_stay_off",)),
    Mutation("a state folder that cannot be listed has its tree file called missing",
             "glmjax/checkpoint.py",
             "    if TREE_FILE not in {path.name for path in folder.iterdir()}:",
             "    if not (folder / TREE_FILE).exists():",
             ("tests/test_checkpoint_damage.py::test_a_state_folder_that_cannot_be_listed_stops_"
              "the_run_and_is_not_called_damaged",)),
    Mutation("a finalizer's closed-loop refusal is quieted with the late reads",
             "glmjax/logs.py", "  if unraisable.object is not None or not (", "  if not (",
             ("tests/test_logs.py::test_reads_finishing_after_a_failed_restore_print_no_"
              "tracebacks_and_other_errors_still_do",)),
    Mutation("an Orbax save task's never-retrieved failure is kept off the console",
             "glmjax/logs.py", 'orbax in message and "async_deserialize" in message)',
             "orbax in message)",
             ("tests/test_logs.py::test_a_library_record_is_one_line_on_the_console_and_orbax_"
              "errors_and_notices_stay_off",)),
    Mutation("asyncio's bare futures of TensorStore's abandoned reads reach the console",
             "glmjax/logs.py", 'and "Error reading" in message and "OCDBT" in message))',
             "and False))",
             ("tests/test_logs.py::test_a_library_record_is_one_line_on_the_console_and_orbax_"
              "errors_and_notices_stay_off",)),
)
