"""Planted bugs in reporting (mutation hunt of session 13)."""
from mutation_entries import Mutation

_METRICS = "tests/test_metrics.py::"
_REPORTING = "tests/test_reporting.py::"
_BENCH = "tests/test_bench.py::"
_ATT = "tests/test_bench_attention.py::"
_BENCH_DATA = "tests/test_bench_data.py::"
_LOGS = "tests/test_logs.py::"
_CLI = "tests/test_cli.py::"
_FIT = "tests/test_fit_table.py::"

ENTRIES = (
    # Figures: peaks, units, the console line, the step clock, memory sizes.
    Mutation("an A100's peak FLOP/s is its sparse figure (its MFU halved)", "glmjax/metrics.py",
             '("a100", 312e12)', '("a100", 624e12)',
             (_METRICS + "test_a_gpu_s_peak_is_its_dense_bf16_figure_not_the_sparse_one",)),
    Mutation("an L4's peak FLOP/s is its sparse figure (its MFU halved)", "glmjax/metrics.py",
             '("l4", 121e12)', '("l4", 242e12)',
             (_METRICS + "test_a_gpu_s_peak_is_its_dense_bf16_figure_not_the_sparse_one",)),
    Mutation("the console shows MFU as a bare fraction, not a percentage", "glmjax/metrics.py",
             "MFU {fmt('mfu', '.1%')}", "MFU {fmt('mfu', '.2f')}",
             (_METRICS + "test_the_console_line_gives_throughput_in_its_units_and_mfu_as_a_"
              "percentage",)),
    Mutation("a clock restarted at the step it just timed divides by zero steps",
             "glmjax/metrics.py",
             "if self._last_time is not None and step > self._last_step:",
             "if self._last_time is not None:",
             (_METRICS + "test_a_clock_restarted_at_the_step_it_just_timed_times_the_next_steps_"
              "from_there",)),
    Mutation("the compiled step's memory line says GiB of decimal GB", "glmjax/memory.py",
             'gib = lambda n: f"{n / 2**30:.2f} GiB"\n  return (f"per device',
             'gib = lambda n: f"{n / 1e9:.2f} GiB"\n  return (f"per device',
             (_REPORTING + "test_the_compiled_step_s_memory_line_is_in_gib",)),
    Mutation("the state's bytes per device count every shard of it", "glmjax/memory.py",
             "leaf.addressable_shards[0].data.nbytes", "leaf.nbytes",
             (_REPORTING + "test_the_state_s_bytes_per_device_count_one_device_s_shard_of_each_"
              "array",)),
    Mutation("the device's memory limit is read as the bytes in use now", "glmjax/memory.py",
             'stats.get("bytes_limit")', 'stats.get("bytes_in_use")',
             (_REPORTING + "test_the_device_s_memory_limit_is_what_it_may_allocate_not_what_it_"
              "holds_now",)),
    # Benchmarks: the sweep's settings, and each figure's unit.
    Mutation("the sweep times every trial at the config's batch size", "glmjax/bench/sweep.py",
             '      _set(trial_config, BASIC_FIELDS.get(key, (key,))[0], value)\n',
             '      key != "batch_size" and _set(trial_config, BASIC_FIELDS.get(key, (key,))[0], '
             'value)\n',
             (_BENCH + "test_the_sweep_times_each_setting_it_records_and_picks_the_one_with_"
              "most_tokens_per_s",)),
    Mutation("the sweep times every trial at the config's loss chunk", "glmjax/bench/sweep.py",
             '      _set(trial_config, BASIC_FIELDS.get(key, (key,))[0], value)\n',
             '      key != "loss_chunk" and _set(trial_config, BASIC_FIELDS.get(key, (key,))[0], '
             'value)\n',
             (_BENCH + "test_the_sweep_times_each_setting_it_records_and_picks_the_one_with_"
              "most_tokens_per_s",)),
    Mutation("the sweep's default batches leave out twice the config's",
             "glmjax/bench/sweep.py", "sorted({max(batch // 2, 1), batch, 2 * batch})",
             "sorted({max(batch // 2, 1), batch})",
             (_BENCH + "test_the_sweep_times_each_setting_it_records_and_picks_the_one_with_"
              "most_tokens_per_s",)),
    Mutation("the data benchmark's tokens/s counts one batch over all the timed ones",
             "glmjax/bench/data.py", "tokens = steps * p.batch_size * p.seq_len",
             "tokens = p.batch_size * p.seq_len",
             (_BENCH_DATA + "test_the_data_benchmark_s_tokens_per_s_are_every_timed_batch_s_tokens_"
              "over_the_time",)),
    Mutation("the attention benchmark's _ms figures are microseconds",
             "glmjax/bench/attention.py", '"forward_ms": 1e3 * forward_s',
             '"forward_ms": 1e6 * forward_s',
             (_ATT + "test_the_attention_benchmark_gives_milliseconds_and_the_tflop_s_of_the_"
              "visible_pairs",)),
    Mutation("the attention benchmark counts a backward pass as twice the forward",
             "glmjax/bench/attention.py", "3.5 * flops_forward / total_s",
             "3 * flops_forward / total_s",
             (_ATT + "test_the_attention_benchmark_gives_milliseconds_and_the_tflop_s_of_the_"
              "visible_pairs",)),
    Mutation("the prepare benchmark's read tokens/s is batches/s", "glmjax/bench/prepare.py",
             "read_tokens_per_s=round(tokens / elapsed)",
             "read_tokens_per_s=round(batches / elapsed)",
             ("tests/test_bench_prepare.py::test_the_prepare_benchmark_s_read_rate_is_the_tokens_"
              "of_its_windows_over_the_time",)),
    # The console and the log file.
    Mutation("every process's console shows progress lines", "glmjax/logs.py",
             "logging.INFO if process_index == 0 else logging.WARNING", "logging.INFO",
             (_LOGS + "test_only_process_0_s_console_shows_progress_the_other_processes_show_"
              "warnings",)),
    Mutation("a failure's traceback is printed on the console too", "glmjax/logs.py",
             'log.debug("Traceback of the failure above:", exc_info=error)',
             'log.error("Traceback of the failure above:", exc_info=error)',
             (_LOGS + "test_a_failure_is_one_console_line_and_its_traceback_goes_to_the_log_"
              "file_only",)),
    Mutation("a failure's console line holds the error's every line", "glmjax/logs.py",
             'f"Stopped by {error_text.typed_line(error, None)}{where}"',
             'f"Stopped by {type(error).__name__}: {error}{where}"',
             (_LOGS + "test_a_failure_is_one_console_line_and_its_traceback_goes_to_the_log_"
              "file_only",)),
    Mutation("an error with an empty message breaks the line that reports it",
             "glmjax/error_text.py", '(lines[0].rstrip() if lines else "")', "lines[0].rstrip()",
             ("tests/test_error_text.py::test_an_error_without_a_message_is_named_by_its_type",
              "tests/test_tfds_source.py::test_a_tfds_name_not_found_with_an_empty_message_is_"
              "still_one_line")),
    Mutation("a bug's traceback is lost when there is no log file", "glmjax/logs.py",
             "  elif not expected:  # no file", "  elif False:  # no file",
             (_LOGS + "test_a_bug_s_traceback_goes_to_the_console_when_there_is_no_log_file",)),
    Mutation("a long library line is not cut on the console", "glmjax/logs.py",
             "cut = len(lines) > 1 or len(lines[0]) > 400 or saved[0] is not None",
             "cut = len(lines) > 1 or saved[0] is not None",
             (_LOGS + "test_a_library_record_longer_than_400_characters_is_cut_on_the_console_"
              "naming_the_log_file",)),
    # Commands' one-line mistakes.
    Mutation("a mistyped --noconfig.FIELD override ends in a traceback", "glmjax/cli.py",
             'r"--?(?:no)?config\\.([^=]+)"', 'r"--?config\\.([^=]+)"',
             (_CLI + "test_an_override_of_a_boolean_or_below_a_value_that_names_no_field_is_"
              "one_line",)),
    Mutation("an override below a value that is not a section ends in a traceback",
             "glmjax/cli.py", "    if path in text:  # e.g.", "    if False:  # e.g.",
             (_CLI + "test_an_override_of_a_boolean_or_below_a_value_that_names_no_field_is_"
              "one_line",)),
    Mutation("a config file given as --config FILE has its own KeyError blamed on an override",
             "glmjax/cli.py",
             '  paths += [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config"]\n',
             "",
             (_CLI + "test_a_key_error_in_the_config_file_s_own_code_keeps_its_traceback",)),
    # Import and export: what a checkpoint holds that is left out, a cut-off file, its layout.
    Mutation("an import does not name the checkpoint tensors it leaves out",
             "glmjax/convert/mapping.py", "unused = sorted(set(tensors) - set(shapes))",
             "unused = []",
             (_REPORTING + "test_an_import_names_the_checkpoint_s_tensors_that_are_not_part_of_the_"
              "network",)),
    Mutation("a cut-off safetensors file fails as a bare reshape error",
             "glmjax/convert/safetensors_io.py", "if end > data.size or (end", "if (end",
             (_REPORTING + "test_a_cut_off_safetensors_file_is_named_as_cut_off",)),
    Mutation("an exported safetensors file's data is not 8-byte aligned",
             "glmjax/convert/safetensors_io.py", 'encoded += b" " * (-len(encoded) % 8)', "pass",
             (_REPORTING + "test_a_written_safetensors_file_s_data_starts_8_byte_aligned",)),
    Mutation("a workdir's unknown saved fields warn only when told not to",
             "glmjax/pretrained.py", "  if ignored and warn:", "  if ignored and not warn:",
             (_REPORTING + "test_a_workdir_s_saved_fields_this_version_lacks_are_named_in_one_"
              "warning",)),
    # The README's fit table.
    Mutation("fit_table says 'does not fit' of a config no slice could build",
             "glmjax/fit_table.py", 'if too_big else f"no slice', 'if True else f"no slice',
             (_FIT + "test_a_model_no_slice_could_be_built_for_is_not_said_not_to_fit",)),
    Mutation("fit_table keeps a partial run's rows in the order they were found",
             "glmjax/fit_table.py", "[merged[key] for key in sorted(merged)]",
             "[merged[key] for key in merged]",
             (_FIT + "test_a_partial_run_s_rows_join_the_table_in_model_then_chip_generation_"
              "order",)),
    # Reading a workdir back: the attention asked for, an empty checkpoints/, a larger mesh.
    Mutation("a loaded workdir keeps the run's attention kernel, not the one asked for",
             "glmjax/pretrained.py", "  config.model.attention = attention\n", "",
             (_REPORTING + "test_a_workdir_whose_run_picked_another_platform_s_kernel_loads_with_"
              "this_host_s",)),
    Mutation("an empty checkpoints folder is not refused as having no checkpoint yet",
             "glmjax/pretrained.py",
             "if not checkpoints.is_dir() or not any(p.name.isdigit() for p in "
             "checkpoints.iterdir()):", "if not checkpoints.is_dir():",
             (_REPORTING + "test_a_workdir_whose_checkpoints_folder_is_empty_is_refused_as_having_"
              "no_checkpoint_yet",)),
    Mutation("a workdir from a larger slice keeps the run's tensor axis when loaded here",
             "glmjax/pretrained.py",
             "fallback.update(data=count // fsdp, fsdp=fsdp, tensor=1)",
             "fallback.update(data=count // fsdp, fsdp=fsdp)",
             (_REPORTING + "test_a_workdir_from_a_slice_whose_mesh_this_host_cannot_build_loads_"
              "fsdp_over_all_devices",)),
    # Files that are not readable safetensors, and layer numbers of two digits.
    Mutation("an empty safetensors file fails as a struct error",
             "glmjax/convert/safetensors_io.py", "    if len(prefix) < 8:", "    if False:",
             (_REPORTING + "test_a_file_that_is_not_a_readable_safetensors_file_is_named_with_"
              "what_is_wrong",)),
    Mutation("a file that is not safetensors has its first 8 bytes read as a header length",
             "glmjax/convert/safetensors_io.py", "    if size > _MAX_HEADER:", "    if False:",
             (_REPORTING + "test_a_file_that_is_not_a_readable_safetensors_file_is_named_with_"
              "what_is_wrong",)),
    Mutation("a garbled safetensors header fails as a bare JSON error",
             "glmjax/convert/safetensors_io.py", "    except ValueError as error:",
             "    except KeyError as error:",
             (_REPORTING + "test_a_file_that_is_not_a_readable_safetensors_file_is_named_with_"
              "what_is_wrong",)),
    Mutation("a safetensors dtype glmjax cannot read fails as a KeyError",
             "glmjax/convert/safetensors_io.py", '    if info["dtype"] not in _DTYPES:',
             "    if False:",
             (_REPORTING + "test_a_file_that_is_not_a_readable_safetensors_file_is_named_with_"
              "what_is_wrong",)),
    Mutation("an import counts only the layers numbered 0 to 9", "glmjax/convert/mapping.py",
             'r"transformer\\.layers\\.(\\d+)\\."', 'r"transformer\\.layers\\.(\\d)\\."',
             (_REPORTING + "test_a_checkpoint_s_layer_count_counts_layers_numbered_past_9",)),
    Mutation("a gap in a checkpoint's layer numbers is not named as one",
             "glmjax/convert/mapping.py", "  if missing:\n    raise", "  if False:\n    raise",
             (_REPORTING + "test_a_checkpoint_s_layer_count_counts_layers_numbered_past_9",)),
    Mutation("a safetensors file is mapped writable, so an in-place update changes it on disk",
             "glmjax/convert/safetensors_io.py", 'mode="r", offset', 'mode="r+", offset',
             (_REPORTING + "test_tensors_read_from_a_safetensors_file_cannot_write_into_it",)),
    Mutation("a benchmark that runs out of device memory ends in pages of traceback",
             "glmjax/bench/__init__.py",
             "    first = memory.out_of_memory(error)\n    if first is None:",
             "    first = memory.out_of_memory(error)\n    if True:",
             (_BENCH + "test_a_config_too_big_for_the_device_is_one_line_saying_what_to_change",)),
    Mutation("TensorBoard gets every scalar at step 0", "glmjax/metrics.py",
             "self._tensorboard.add_scalar(key, value, step)", "self._tensorboard.add_scalar(key, value)",
             ("tests/test_metrics.py::test_tensorboard_gets_each_scalar_at_its_step",)),
    Mutation("a skipped step is recorded at the step before it", "glmjax/loop.py",
             'self.writer.write(step_done, {"nonfinite": 1.0,',
             'self.writer.write(step_done - 1, {"nonfinite": 1.0,',
             ("tests/test_loop.py::test_only_consecutive_non_finite_steps_stop_the_run",)),
    Mutation("fit_table's progress line gives GB for the table's GiB", "glmjax/fit_table.py",
             'fits, {report.total_bytes / 2**30:.1f} GiB per chip',
             'fits, {report.total_bytes / 1e9:.1f} GiB per chip',
             ("tests/test_fit_table.py::test_the_search_walks_sizes_up_and_tries_remat_then_fsdp_"
              "before_a_bigger_slice",)),
    Mutation("fit_table is silent while a slice compiles", "glmjax/fit_table.py",
             '      log(f"  {name} {label}: compiling...")  # a big model takes minutes per slice\n',
             "",
             ("tests/test_fit_table.py::test_a_model_no_slice_could_be_built_for_is_not_said_not_"
              "to_fit",)),
    Mutation("a run's TensorBoard writer loads PyTorch with tensorboardX", "glmjax/metrics.py",
             'if "tensorboardX" not in sys.modules and "torch" not in sys.modules:',
             'if False:',
             (_METRICS + "test_a_run_s_tensorboard_writer_loads_no_pytorch_even_where_it_is_"
              "installed",)),
    Mutation("the TensorBoard writer takes a loaded PyTorch out of sys.modules",
             "glmjax/metrics.py",
             'if "tensorboardX" not in sys.modules and "torch" not in sys.modules:',
             'if "tensorboardX" not in sys.modules:',
             (_METRICS + "test_a_run_s_tensorboard_writer_loads_no_pytorch_even_where_it_is_"
              "installed",)),
    Mutation("PyTorch stays refused after tensorboardX has loaded", "glmjax/metrics.py",
             '      del sys.modules["torch"]\n', "      pass\n",
             (_METRICS + "test_a_run_s_tensorboard_writer_loads_no_pytorch_even_where_it_is_"
              "installed",)),
)
