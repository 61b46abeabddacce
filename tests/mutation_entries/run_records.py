"""Planted bugs in what a run records and measures: logs, checksums, prefetching, bench, fit."""
from mutation_entries import Mutation

_L = "tests/test_logs.py::"
_BENCH_DATA = "tests/test_bench_data.py::"
_STEP = "tests/test_bench_step.py::"
_FIT = "tests/test_fit_table.py::"
_TRAIN_STEP = "tests/test_train_step.py::"
_LOGS = "glmjax/logs.py"
_RUN_LOG = "glmjax/run_log.py"
_DATA = "glmjax/bench/data.py"
_BENCH_STEP = "glmjax/bench/step.py"
_PER_OBJECTIVE = (_BENCH_DATA + "test_the_data_benchmark_counts_each_objective_s_rows_spans_and_"
                  "padding_apart",)
_DATA_MAIN = (_BENCH_DATA + "test_the_data_benchmark_reports_the_config_the_glm_10b_mixture_and_it_"
              "with_every_option",)
_TIMED_SAVE = ("tests/test_bench_save.py::test_the_timed_save_is_of_a_new_step",)
_FIT_MAIN = (_FIT + "test_the_command_searches_the_chosen_models_and_generations_and_splices_"
             "their_rows",)

ENTRIES: tuple[Mutation, ...] = (
    # The run's log file and its copy in a bucket workdir.
    Mutation("a bucket workdir's log is first copied only after the copy interval", _RUN_LOG,
             "    self._copy_now()  # at once", "    pass  # at once",
             (_L + "test_a_copy_destination_that_cannot_be_written_is_reported_as_the_run_"
              "starts",)),
    Mutation("a hung last log copy holds up the exit without a limit", _RUN_LOG,
             "    self._thread.join(LAST_COPY_WAIT_S)", "    self._thread.join()",
             (_L + "test_a_last_copy_that_hangs_ends_the_wait_after_its_limit_and_says_so",)),
    Mutation("a log file emptied during the run is copied from past its end", _RUN_LOG,
             "f.seek(self._start if size >= self._start else 0)", "f.seek(self._start)",
             (_L + "test_a_copy_holds_the_lines_written_after_the_local_file_was_emptied",)),
    Mutation("a failed log copy leaves the failure line naming the stale copy", _RUN_LOG,
             "    self._last_ok = False\n    if not self._warned",
             "    if not self._warned",
             (_L + "test_once_a_copy_fails_the_failure_line_names_the_vms_file_not_the_stale_"
              "copy",)),
    Mutation("a third run in the same second overwrites the second run's log copy", _RUN_LOG,
             "    while path.exists():", "    if path.exists():",
             (_L + "test_runs_started_in_the_same_second_each_get_a_copy_of_their_own",)),
    Mutation("a new log file leaves library records going to the earlier one", _LOGS,
             "  for logger in (_ours(), logging.getLogger()):", "  for logger in (_ours(),):",
             (_L + "test_a_new_log_file_takes_the_library_records_and_the_earlier_one_gets_no_"
              "more",)),
    # The data benchmark's figures and what it measures.
    Mutation("the data benchmark's per-objective padding is a share of every row", _DATA,
             "(sep[rows] + part_b).sum() / b.size), 4)",
             "(sep[rows] + part_b).sum() / blocks.size), 4)", _PER_OBJECTIVE),
    Mutation("the data benchmark's spans per row count Part B tokens", _DATA,
             '"spans_per_row": round(float(spans.mean()), 3)',
             '"spans_per_row": round(float(part_b.mean()), 3)', _PER_OBJECTIVE),
    Mutation("the data benchmark's objective shares leave out the last objective", _DATA,
             "for o in range(len(pipeline.OBJECTIVE_NAMES))]",
             "for o in range(len(pipeline.OBJECTIVE_NAMES) - 1)]", _PER_OBJECTIVE),
    Mutation("the data benchmark's every-option run drops the GLM-10B mixture", _DATA,
             "  every_option = mixture_config.copy_and_resolve_references()",
             "  every_option = data.copy_and_resolve_references()", _DATA_MAIN),
    Mutation("the data benchmark's every-option padding is the config's", _DATA,
             'round(all_on["padding_fraction"], 4)', 'round(own["padding_fraction"], 4)',
             _DATA_MAIN),
    Mutation("the data benchmark lists its objective probabilities out of order", _DATA,
             "list(pipeline.objective_probs(data))",
             "list(pipeline.objective_probs(data))[::-1]", _DATA_MAIN),
    # The save benchmark's timed save; the step benchmark's memory.
    Mutation("the save benchmark's timed save is of a step already saved", "glmjax/bench/save.py",
             "      for step in (1, 2):  # the first save",
             "      for step in (2, 2):  # the first save", _TIMED_SAVE),
    Mutation("the step benchmark's peak memory is the bytes in use now", _BENCH_STEP,
             'return stats.get("peak_bytes_in_use")', 'return stats.get("bytes_in_use")',
             (_STEP + "test_the_peak_memory_figure_is_the_device_s_peak_not_what_it_holds_"
              "now",)),
    # fit_table's command.
    Mutation("fit_table searches every chip generation whatever --generations says",
             "glmjax/fit_table.py", "    for generation in generations:",
             "    for generation in GENERATIONS:", _FIT_MAIN),
    Mutation("fit_table leaves the --readme file untouched", "glmjax/fit_table.py",
             "  if args.readme:\n    splice(args.readme, text)",
             "  if False:\n    splice(args.readme, text)", _FIT_MAIN),
    # The evaluation step.
    Mutation("held-out sums are scored with dropout on", "glmjax/step.py",
             "sums_fn = lambda b: loss_sums(params, b, None, model=model, deterministic=True,",
             "sums_fn = lambda b: loss_sums(params, b, jax.random.key(0), model=model, "
             "deterministic=False,",
             (_TRAIN_STEP + "test_held_out_sums_are_those_of_the_model_without_dropout",)),
)
