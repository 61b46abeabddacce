"""Planted bugs in the benchmarks and the GPU loan's scripts."""
from mutation_entries import Mutation

_TRAFFIC = "tests/test_bench_traffic.py::"
_WHEELS = "tests/test_gpu_wheels.py::"
_BENCH = "tests/test_bench.py::"
_STEP = "tests/test_bench_step.py::"
_MEASURE = (_STEP + "test_the_step_benchmark_divides_its_timings_as_its_figures_say",)
_PIPELINE = (_STEP + "test_the_pipeline_fed_step_time_is_that_of_the_steps_after_the_first_batch",)
_SAVE = ("tests/test_bench_save.py::test_a_save_s_overhead_is_what_a_later_save_adds_to_the_"
         "steps_from_its_start",)
_HOST_COPIES = ("tests/test_bench_save.py::test_asynchronous_copies_to_host_memory_are_counted_"
                "by_the_op_and_placed_against_the_loops")
_SAVE_MEASURE = ("tests/test_bench_save.py::test_the_save_benchmark_divides_its_timings_as_its_"
                 "figures_say",)
_HIDDEN = ("tests/test_bench_save.py::test_the_hidden_share_of_a_transfer_is_what_running_it_"
           "beside_a_step_saved",)
_TRANSFER = ("tests/test_bench_save.py::test_the_transfer_to_the_host_is_timed_on_the_state_s_"
             "own_bytes_and_leaves_it_stepped",)
_SYNTHETIC = (_STEP + "test_the_step_benchmark_s_synthetic_rows_are_glm_rows_with_one_part_b_"
              "span",)
_PREPARE = ("tests/test_bench_prepare.py::test_the_prepare_benchmark_counts_the_shards_it_wrote_"
            "of_a_source_it_did_not_finish",)
_ATT = "tests/test_bench_attention.py::"
_ATTENTION = (_ATT + "test_the_attention_benchmark_times_the_config_s_dtype_and_skips_a_kernel_"
              "failing_its_check",)
_STEP_PY = "glmjax/bench/step.py"
_SAVE_PY = "glmjax/bench/save.py"
_ATT_PY = "glmjax/bench/attention.py"
_AUTOTUNE = (_ATT + "test_with_attention_autotune_tokamax_is_timed_again_under_the_"
             "configurations_it_picked",)
_PROFILE = "glmjax/bench/profile.py"
_CEILING = ("tests/test_bench_ceiling.py::test_the_ceiling_counts_a_matmul_s_flops_and_a_copy_s_"
            "bytes_read_and_written",)
_LINES = ("tests/test_bench_profile.py::test_each_device_line_is_summed_on_its_own_per_step_by_"
          "class_and_costliest_op",)
_SWEEP_SET = (_BENCH + "test_the_sweep_tries_every_value_sweep_set_names_each_as_its_field_s_type",)
_SWEEP_SET_ERRORS = (_BENCH + "test_a_sweep_set_item_that_cannot_apply_is_one_line_naming_it",)

ENTRIES: tuple[Mutation, ...] = (
    # The step benchmark: what each figure divides by.
    Mutation("the step benchmark's tokens/s counts rows, not tokens", _STEP_PY,
             "tokens_per_step=config.data.batch_size * config.data.seq_len",
             "tokens_per_step=config.data.batch_size", _MEASURE),
    Mutation("the step benchmark's pipeline_vs_prebuilt is inverted", _STEP_PY,
             "pipeline_time / step_time if pipeline_time",
             "step_time / pipeline_time if pipeline_time", _MEASURE),
    Mutation("the save benchmark's checkpoint_overhead is in seconds, not steps", _SAVE_PY,
             '"checkpoint_overhead": direct_s / step_s,', '"checkpoint_overhead": direct_s,',
             _SAVE_MEASURE),
    Mutation("the save benchmark's device-snapshot overhead is the direct save's", _SAVE_PY,
             '"checkpoint_overhead_device_snapshot": snapshot_s / step_s,',
             '"checkpoint_overhead_device_snapshot": direct_s / step_s,', _SAVE_MEASURE),
    Mutation("the save benchmark's noise is the direct save's only", _SAVE_PY,
             "max(direct_noise_s, snapshot_noise_s) / step_s", "direct_noise_s / step_s",
             _SAVE_MEASURE),
    Mutation("the save overhead's noise compares a round with itself", _SAVE_PY,
             "abs(plains[1] - plains[0])", "abs(plains[1] - plains[1])",
             ("tests/test_bench_save.py::test_the_save_overhead_s_noise_is_how_far_two_save_"
              "free_timings_of_its_steps_differ",)),
    Mutation("the save benchmark times a snapshot over two steps however long its transfer",
             _SAVE_PY, "min(MAX_STEPS, 2 + max(parts, math.ceil(alone_s / step_s)))", "2",
             _SAVE_MEASURE),
    Mutation("the save benchmark times a snapshot in parts over the transfer's steps alone",
             _SAVE_PY, "min(MAX_STEPS, 2 + max(parts, math.ceil(alone_s / step_s)))",
             "min(MAX_STEPS, 2 + math.ceil(alone_s / step_s))", _SAVE_MEASURE),
    Mutation("the save benchmark's snapshot goes in one part whatever the config says",
             _SAVE_PY, "defer=True, parts=parts)", "defer=True)", _SAVE_MEASURE),
    Mutation("the largest step overhead is timed over the parts alone", _SAVE_PY,
             "largest_step_overhead(compiled, state, batch, snapshot_steps, parts)",
             "largest_step_overhead(compiled, state, batch, parts + 2, parts)", _SAVE_MEASURE),
    Mutation("an in-step program text the reader cannot parse loses the step's timing",
             _SAVE_PY, "  except Exception:  # noqa: BLE001 - a reading of the program's text",
             "  except ZeroDivisionError:  # a reading of the program's text",
             ("tests/test_bench_save.py::test_the_in_step_transfer_reports_the_share_of_its_"
              "copies_that_xla_puts_beside_the_loops",)),
    Mutation("traffic takes a copy-done's last word for its operand", "glmjax/bench/traffic.py",
             'return re.findall(r"%([^\\s,()]+)", line[line.index(f" {op}("):])[0]',
             'return line.split()[-1].lstrip("%").rstrip(")")', (_HOST_COPIES,)),
    Mutation("the largest step overhead sums the steps' overheads", _SAVE_PY,
             "return max(with_save - without for", "return sum(with_save - without for",
             ("tests/test_bench_save.py::test_the_largest_step_overhead_is_the_most_a_save_adds_"
              "to_one_step",)),
    Mutation("the largest step overhead times the first save, which compiles", _SAVE_PY,
             "for step in (1, 2):  # as save_overhead", "for step in (1,):  # as save_overhead",
             ("tests/test_bench_save.py::test_the_largest_step_overhead_is_the_most_a_save_adds_"
              "to_one_step",)),
    Mutation("the save benchmark times a direct save over one step", _SAVE_PY,
             "save_overhead(compiled, state, batch, 2,\n",
             "save_overhead(compiled, state, batch, 1,\n", _SAVE_MEASURE),
    Mutation("the save benchmark's transfer rate divides by the step time", _SAVE_PY,
             '"host_transfer_gb_per_s": state_bytes / alone_s / 1e9,',
             '"host_transfer_gb_per_s": state_bytes / step_s / 1e9,', _SAVE_MEASURE),
    Mutation("the hidden share of a transfer is the share not hidden", _SAVE_PY,
             "(step_s + transfer_s - together_s) / hideable",
             "(together_s - max(step_s, transfer_s)) / hideable", _HIDDEN),
    Mutation("the hidden share of a transfer is not clipped at 1", _SAVE_PY,
             "return min(1.0, max(0.0, (step_s", "return max(0.0, ((step_s", _HIDDEN),
    Mutation("the save benchmark's state bytes count every replica", _SAVE_PY,
             "state_bytes = host_copy.nbytes(on_host)", "state_bytes = host_copy.nbytes(copy)",
             _TRANSFER),
    Mutation("the save benchmark's host time leaves out each step's look for the snapshot",
             _SAVE_PY, "      held += _held(checkpointer.write_deferred)\n",
             "      _held(checkpointer.write_deferred)\n", _SAVE),
    Mutation("a snapshot still on its way after the timed steps is waited for outside the timing",
             _SAVE_PY, "    held += _held(checkpointer.write_deferred, wait=True)\n", "", _SAVE),
    Mutation("the step benchmark's compiled FLOPs are one device's share", _STEP_PY,
             "float(flops) * jax.device_count()", "float(flops)", _MEASURE),
    Mutation("the step benchmark divides its timed steps by one more than it ran", _STEP_PY,
             "step_time = (time.perf_counter() - start) / steps",
             "step_time = (time.perf_counter() - start) / (steps + 1)", _MEASURE),
    Mutation("the pipeline-fed step time runs one step fewer than it divides by", _STEP_PY,
             "    for step in range(1, steps + 1):\n      state, out = compiled(state, batches.ge",
             "    for step in range(1, steps):\n      state, out = compiled(state, batches.ge",
             _PIPELINE),
    Mutation("the pipeline-fed step time includes the first batch's build", _STEP_PY,
             "    state, out = compiled(state, batches.get(0))  # the first batch has no step to "
             "hide behind\n    jax.block_until_ready(out)\n    start = time.perf_counter()\n",
             "    start = time.perf_counter()\n    state, out = compiled(state, batches.get(0))\n"
             "    jax.block_until_ready(out)\n", _PIPELINE),
    Mutation("the save overhead is the plain steps less the saving ones", _SAVE_PY,
             "return saving - plain, held,", "return plain - saving, held,", _SAVE),
    Mutation("the save overhead times the first save, which compiles", _SAVE_PY,
             "for step in (1, 2):  # the first save compiles",
             "for step in (1,):  # the first save compiles", _SAVE),
    Mutation("the device-snapshot overhead saves directly", _SAVE_PY,
             "force=True, defer=defer))", "force=True, defer=False))", _SAVE),
    Mutation("the deferred save's transfer is never started inside the timed steps", _SAVE_PY,
             "      held += _held(checkpointer.write_deferred)\n", "", _SAVE),
    Mutation("the synthetic rows' Part B block positions start at 0", _STEP_PY,
             "positions - sep[:, None] + 1, 0)", "positions - sep[:, None], 0)", _SYNTHETIC),
    Mutation("the synthetic rows' Part B sits at a position past Part A", _STEP_PY,
             "np.where(part_b, sep[:, None] - 1, positions)",
             "np.where(part_b, sep[:, None], positions)", _SYNTHETIC),
    # The prepare, attention and sweep benchmarks.
    Mutation("the prepare benchmark's prepare rate counts documents, not tokens",
             "glmjax/bench/prepare.py",
             "prepare_tokens_per_s_one_core=round(total_tokens / prepare_seconds)",
             "prepare_tokens_per_s_one_core=round(len(store) / prepare_seconds)", _PREPARE),
    Mutation("the prepare benchmark swaps its window length and windows per read",
             "glmjax/bench/prepare.py", "row_tokens=data.seq_len, rows_per_read=data.batch_size",
             "row_tokens=data.batch_size, rows_per_read=data.seq_len", _PREPARE),
    Mutation("the prepare benchmark reads back only the last shard of an unfinished source",
             "glmjax/bench/prepare.py", "          records.append(json.load(f))",
             "          records = [json.load(f)]", _PREPARE),
    Mutation("the attention benchmark times float32 whatever the config's dtype",
             "glmjax/bench/attention.py", "jnp.asarray(rng.standard_normal(shape), dtype)",
             "jnp.asarray(rng.standard_normal(shape), jnp.float32)", _ATTENTION),
    Mutation("the attention benchmark times a kernel that failed its check",
             "glmjax/bench/attention.py",
             '      records[name] = {"skipped": reason}\n      continue\n',
             '      records[name] = {"skipped": reason}\n', _ATTENTION),
    Mutation("the sweep's trials leave out the step's MFU", "glmjax/bench/sweep.py",
             '"step_time_s", "tokens_per_s", "mfu", ', '"step_time_s", "tokens_per_s", ',
             (_BENCH + "test_each_sweep_trial_keeps_the_step_s_speed_mfu_memory_and_compile_"
              "figures",)),
    Mutation("the sweep logs its trials only at the end", "glmjax/bench/sweep.py",
             '    log.info("sweep %d/%d: trial %s", index, len(settings), json.dumps(trials[-1]))\n'
             '    jax.clear_caches()\n',
             '    jax.clear_caches()\n  for trial in trials:\n    log.info("sweep: trial %s", '
             'json.dumps(trial))\n',
             (_BENCH + "test_each_sweep_trial_keeps_the_step_s_speed_mfu_memory_and_compile_"
              "figures",)),
    Mutation("the sweep's --sweep_set values stay strings", "glmjax/bench/sweep.py",
             "    value = kind(text)\n", "    value = text\n", _SWEEP_SET),
    Mutation("the sweep reads any bool word as true", "glmjax/bench/sweep.py",
             'return {"true": True, "false": False}[text.lower()]',
             'return text.lower() != "false"', _SWEEP_SET_ERRORS),
    Mutation("the sweep never applies --sweep_set's fields", "glmjax/bench/sweep.py",
             "      _set(trial_config, BASIC_FIELDS.get(key, (key,))[0], value)\n",
             "      key in BASIC_FIELDS and _set(trial_config, BASIC_FIELDS[key][0], value)\n",
             _SWEEP_SET),
    Mutation("the sweep times a trial the config refuses", "glmjax/bench/sweep.py",
             "      glm_config.validate(trial_config)", "      pass", _SWEEP_SET),
    Mutation("a --sweep_set word a choice field does not take is every trial's error",
             "glmjax/bench/sweep.py", '      _choices(text, f"--sweep_set={field}", field)',
             "      pass", _SWEEP_SET_ERRORS),
    Mutation("the sweep takes a section as a --sweep_set field", "glmjax/bench/sweep.py",
             "    if isinstance(current, ml_collections.ConfigDict):",
             "    if False:", _SWEEP_SET_ERRORS),
    Mutation("the sweep takes a field that has its own --sweep_* flag", "glmjax/bench/sweep.py",
             "    if field in _OWN_FLAGS:", "    if False:", _SWEEP_SET_ERRORS),
    Mutation("the sweep keeps only the last of a field named twice", "glmjax/bench/sweep.py",
             "    if any(field == named for named, _ in fields):", "    if False:",
             _SWEEP_SET_ERRORS),
    Mutation("the sweep sets a tuple field from a string", "glmjax/bench/sweep.py",
             "    if type(current) not in _KINDS:", "    if False:", _SWEEP_SET_ERRORS),
    Mutation("the sweep tries a NaN dropout", "glmjax/bench/sweep.py",
             "    if kind is float and not math.isfinite(value):", "    if False:",
             _SWEEP_SET_ERRORS),
    Mutation("the sweep applies --sweep_set only to its first value", "glmjax/bench/sweep.py",
             "for setting in settings for value in values]",
             "for setting in settings for value in values[:1]]", _SWEEP_SET),
    # The profile benchmark: which trace lines count, and per step.
    Mutation("the profile counts the host's threads as a device line", _PROFILE,
             'not process.startswith("/device:")', 'not process.startswith("/")', _LINES),
    Mutation("the profile counts the custom Megascale process as a device", _PROFILE,
             ' or "CUSTOM" in process:', ":", _LINES),
    Mutation("the profile's figures are per trace, not per step", _PROFILE,
             "per_op = {name: sum(times) / steps", "per_op = {name: sum(times)", _LINES),
    Mutation("the profile classes fused attention as matmul when both names match", _PROFILE,
             "    (\"attention\", re.compile(r\"mosaic|tokamax|flash|fmha|sdpa|splash|"
             "attention|cudnn\")),\n",
             "", ("tests/test_bench_profile.py::test_operation_classes_put_fused_attention_before_"
                  "matmul",)),
    Mutation("the profile lists the cheapest operations first", _PROFILE,
             "top = sorted(per_op, key=per_op.get, reverse=True)[:TOP]",
             "top = sorted(per_op, key=per_op.get)[:TOP]", _LINES),
    Mutation("the profile reads the first trace in its folder, not the newest", _PROFILE,
             "  with gzip.open(traces[-1], \"rt\") as stream:",
             "  with gzip.open(traces[0], \"rt\") as stream:",
             ("tests/test_bench_profile.py::test_the_profile_benchmark_reads_the_trace_it_just_"
              "wrote",)),
    Mutation("the sweep keeps the spaces around its flags' names", "glmjax/bench/sweep.py",
             '[part.strip() for part in (text or "").split(",") if part.strip()]',
             '[part for part in (text or "").split(",") if part.strip()]',
             (_BENCH + "test_the_sweep_reads_flag_lists_written_with_spaces",)),
    Mutation("the autotuned attention kernel is timed outside the autotuner's result", _ATT_PY,
             "    with result:\n      record = timings()\n", "    record = timings()\n",
             _AUTOTUNE),
    Mutation("the autotuning result is serialized only as tokamax 0.0.13 does it", _ATT_PY,
             "  except TypeError:\n    return result.dumps()\n", "  except KeyError:\n"
             "    return result.dumps()\n", _AUTOTUNE),
    Mutation("the attention benchmark autotunes without being asked", _ATT_PY,
             'if name == "tokamax" and flags.FLAGS.attention_autotune:',
             'if name == "tokamax":', _AUTOTUNE),
    Mutation("the GPU script's default run leaves out the save part",
             "launch/measure_gpu.sh",
             "ALL_PARTS=(core large save attention", "ALL_PARTS=(core large attention",
             (_BENCH + "test_the_gpu_measurement_script_runs_every_part_on_a_tiny_model",)),
    Mutation("the GPU script's default run leaves out the loss-chunk sweep",
             "launch/measure_gpu.sh",
             "ALL_PARTS=(core large save attention sweep chunk ceiling",
             "ALL_PARTS=(core large save attention sweep ceiling",
             (_BENCH + "test_the_gpu_measurement_script_runs_every_part_on_a_tiny_model",)),
    Mutation("the GPU script's figures do not name their part", "launch/measure_gpu.sh",
             '"part\\": \\"$tag\\", |" >> "$figures"', '|" >> "$figures"',
             (_BENCH + "test_the_gpu_measurement_script_runs_every_part_on_a_tiny_model",)),
    Mutation("the GPU script's unroll_large part runs GLM-2B's config", "launch/measure_gpu.sh",
             'bench --what=sweep "${GLM_LARGE[@]}" --config.data.batch_size=128 --sweep_batch=128'
             ' \\\n            --sweep_remat=minimal --sweep_attention=tokamax \\\n'
             '            --sweep_set=model.scan_layers=false ;;',
             'bench --what=sweep "${GLM_2B[@]}" --config.data.batch_size=128 --sweep_batch=128'
             ' \\\n            --sweep_remat=minimal --sweep_attention=tokamax \\\n'
             '            --sweep_set=model.scan_layers=false ;;',
             (_BENCH + "test_the_gpu_measurement_script_runs_every_part_on_a_tiny_model",)),
    Mutation("the sweep's figure names no config", "glmjax/bench/sweep.py",
             '"config": cli.config_name(), ', '',
             (_BENCH + "test_the_gpu_measurement_script_runs_every_part_on_a_tiny_model",)),
    Mutation("the ceiling reports a matmul of twice the FLOPs it ran", "glmjax/bench/ceiling.py",
             '"bf16_matmul_tflops": 2 * size ** 3 / matmul_s / 1e12',
             '"bf16_matmul_tflops": 4 * size ** 3 / matmul_s / 1e12', _CEILING),
    Mutation("the ceiling counts the bytes read but not those written", "glmjax/bench/ceiling.py",
             '"copy_tb_per_s": 2 * x.size * x.dtype.itemsize', '"copy_tb_per_s": x.size * '
             'x.dtype.itemsize', _CEILING),
    Mutation("the ceiling divides by more runs than it timed", "glmjax/bench/ceiling.py",
             "  for _ in range(RUNS):", "  for _ in range(RUNS - 1):",
             ("tests/test_bench_ceiling.py::test_the_ceiling_times_the_mean_of_its_runs_after_a_"
              "compiling_one",)),
    Mutation("the GPU script's profile part leaves the trace where a loan cannot return it",
             "launch/measure_gpu.sh", 'cp "$from" "$OUT/${kept##*:}"',
             'cp "$from" "$traces/${kept##*:}"',
             (_BENCH + "test_the_gpu_measurement_script_runs_every_part_on_a_tiny_model",)),
    Mutation("the profile counts no library call of the optimized program",
             "glmjax/bench/profile.py", "return dict(collections.Counter(targets).most_common())",
             "return dict(collections.Counter(targets[:1]).most_common())",
             ("tests/test_bench_profile.py::test_the_compiled_program_s_library_calls_are_counted_"
              "by_target",)),
    Mutation("the save benchmark fetches every replica of a shard",
             "glmjax/bench/save.py", "addressable_shards if shard.replica_id == 0]",
             "addressable_shards if shard.replica_id >= 0]",
             ("tests/test_bench_save.py::test_the_fetch_to_the_host_reads_one_replica_of_each_"
              "shard_and_leaves_the_state_stepped",)),
    Mutation("the save benchmark fetches the same copy twice (its host values cached)",
             "glmjax/bench/save.py", "    copy = fresh_copy()\n    start = time.perf_counter()",
             "    copy = globals().setdefault(\"_first_copy\", fresh_copy())\n    start = time.perf_counter()",
             ("tests/test_bench_save.py::test_each_timed_fetch_reads_a_new_copy_of_the_state",)),
    Mutation("the save benchmark's step with a host copy sends the new state, not the one it found",
             "glmjax/bench/save.py",
             "return new_state, out, jax.device_put(state, jax.memory.Space.Host)",
             "return new_state, out, jax.device_put(new_state, jax.memory.Space.Host)",
             ("tests/test_bench_save.py::test_the_step_with_a_host_copy_sends_the_state_it_found_"
              "and_steps_as_the_train_step",)),
    Mutation("the save benchmark's in-step transfer hides nothing in its figures",
             "glmjax/bench/save.py", "step_s, alone_s, in_step[\"in_step_transfer_step_s\"])",
             "step_s, alone_s, step_s + alone_s)",
             _SAVE_MEASURE),
    Mutation("measure_gpu.sh gives a part named twice one profile folder",
             "launch/measure_gpu.sh", '_${prefix}_$profiled_calls"', '_${prefix}"',
             ("tests/test_launch_measure_gpu.py::test_a_profiled_part_named_twice_copies_up_its_"
              "later_calls_trace",)),
    Mutation("the profile counts the layer loop's stack writes as plain fusions", _PROFILE,
             '    ("stack_write", re.compile(r"dynamic_update_slice")),\n', "",
             ("tests/test_bench_profile.py::test_operation_classes_put_fused_attention_before_"
              "matmul",)),
    Mutation("traffic skips the fusion-starts of a compiled program's as_text()",
             "glmjax/bench/traffic.py", 'not in ("fusion", "fusion-start")', 'not in ("fusion",)',
             ("tests/test_bench_traffic.py::test_an_asynchronous_fusion_as_a_compiled_program_"
              "prints_it_counts_once_per_trip",)),
    Mutation("traffic refuses no TPU slice for --traffic_topology", "glmjax/bench/traffic.py",
             "  if not gpu_topology.is_gpu_name(name):\n", "  if False:\n",
             ("tests/test_bench_traffic.py::test_the_command_prints_one_json_line_and_asks_for_"
              "the_file_in_one_line",)),
    Mutation("traffic counts every asynchronous copy, not those into host memory",
             "glmjax/bench/traffic.py",
             'elif op == "copy-start" and "S(5)" in _FIRST_ARRAY.match(shape).group(1):',
             'elif op == "copy-start":', (_HOST_COPIES,)),
    Mutation("traffic counts a copy as beside the loops whether or not a loop falls inside it",
             "glmjax/bench/traffic.py",
             'found["beside_loops_bytes"] += size if loops_seen > loops_then else 0',
             'found["beside_loops_bytes"] += size', (_HOST_COPIES,)),
    Mutation("traffic counts a copy by the whole tuple copy-start returns",
             "glmjax/bench/traffic.py",
             "started[name] = (array_bytes(_FIRST_ARRAY.match(shape).group(1)), loops_seen)",
             "started[name] = (array_bytes(shape), loops_seen)", (_HOST_COPIES,)),
    Mutation("the save benchmark's in-step copy stays in device memory",
             "glmjax/bench/save.py",
             "return new_state, out, jax.device_put(state, jax.memory.Space.Host)",
             "return new_state, out, jax.device_put(state, jax.memory.Space.Device)",
             ("tests/test_bench_save.py::test_the_step_with_a_host_copy_sends_the_state_it_found_"
              "and_steps_as_the_train_step",
              "tests/test_aot_gpu.py::test_xla_schedules_most_of_the_in_step_host_copy_of_the_"
              "state_outside_the_layer_loops")),
    Mutation("the save benchmark reports the copies beside the loops as none",
             "glmjax/bench/save.py",
             '"in_step_transfer_beside_loops": (copies["beside_loops_bytes"] / copies["bytes"]',
             '"in_step_transfer_beside_loops": (0 / copies["bytes"]',
             ("tests/test_bench_save.py::test_the_in_step_transfer_reports_the_share_of_its_"
              "copies_that_xla_puts_beside_the_loops",)),
    Mutation("the step benchmark reports no XLA options whatever the program had",
             "glmjax/bench/step.py", '"xla_options": program.compiler_options,',
             '"xla_options": {},', _MEASURE),
    Mutation("a sweep trial drops the XLA options its step reported", "glmjax/bench/sweep.py",
             '"compile_s", "xla_options", "loss")}})', '"compile_s", "loss")}})',
             ("tests/test_bench.py::test_each_sweep_trial_keeps_the_step_s_speed_mfu_memory_and_"
              "compile_figures",)),
    Mutation("a sweep trial drops its step's loss (a flag that changes the numbers goes unseen)",
             "glmjax/bench/sweep.py", '"compile_s", "xla_options", "loss")}})',
             '"compile_s", "xla_options")}})',
             ("tests/test_bench.py::test_each_sweep_trial_keeps_the_step_s_speed_mfu_memory_and_"
              "compile_figures",)),
    # bench --what=traffic (traffic.py).
    Mutation("traffic counts an array read through a dynamic slice whole",
             "glmjax/bench/traffic.py",
             'if uses and all(use[:2] == ("dynamic-slice", 0) for use in uses):', "if False:",
             ("tests/test_bench_traffic.py::test_a_loop_s_passes_count_once_per_trip_and_slices_"
              "at_their_own_size",)),
    Mutation("traffic counts a loop body once whatever its trip count", "glmjax/bench/traffic.py",
             "runs[loop.group(1)] = runs[caller] * (int(trips.group(1)) if trips else 1)",
             "runs[loop.group(1)] = runs[caller]",
             ("tests/test_bench_traffic.py::test_a_loop_s_passes_count_once_per_trip_and_slices_"
              "at_their_own_size",)),
    Mutation("traffic runs a loop inside a loop by its own trip count only",
             "glmjax/bench/traffic.py",
             "runs[loop.group(1)] = runs[caller] * (int(trips.group(1)) if trips else 1)",
             "runs[loop.group(1)] = int(trips.group(1)) if trips else 1",
             ("tests/test_bench_traffic.py::test_a_loop_inside_a_loop_runs_as_often_as_both_trip_"
              "counts_say",)),
    Mutation("traffic reads the whole stack a stack update writes into", "glmjax/bench/traffic.py",
             'elif not (uses and all(use[:2] == ("dynamic-update-slice", 0) for use in uses)):',
             "else:",
             ("tests/test_bench_traffic.py::test_a_loop_s_passes_count_once_per_trip_and_slices_"
              "at_their_own_size",)),
    Mutation("traffic counts the matmuls' operands and results too", "glmjax/bench/traffic.py",
             "      if _is_matmul_or_kernel(body):\n        continue\n", "",
             ("tests/test_bench_traffic.py::test_a_loop_s_passes_count_once_per_trip_and_slices_"
              "at_their_own_size",)),
    Mutation("traffic leaves out what XLA runs through an async-start", "glmjax/bench/traffic.py",
             'or re.search(r" async-start\\(.*calls=%([^,\\s]+)", line))', "or None)",
             ("tests/test_bench_traffic.py::test_a_stack_update_that_xla_runs_on_its_own_stream_"
              "counts_once_per_trip",)),
    Mutation("traffic's parts of the step count a loop body's fusions once, not per trip",
             "glmjax/bench/traffic.py", "by_part[part_of_step(line)] += count * (read + wrote)",
             "by_part[part_of_step(line)] += read + wrote",
             (_TRAFFIC + "test_each_fusion_s_bytes_go_to_the_pass_and_module_its_op_name_says",)),
    Mutation("traffic's parts of the step take jax's wrappers for modules",
             "glmjax/bench/traffic.py", "if _MODULE.fullmatch(name) and name not in _NOT_MODULES",
             "if name not in _NOT_MODULES",
             (_TRAFFIC + "test_each_fusion_s_bytes_go_to_the_pass_and_module_its_op_name_says",)),
    Mutation("traffic's parts of the step call the backward pass forward",
             "glmjax/bench/traffic.py", '("backward" if any(name.startswith("transpose(")',
             '("backward" if any(name.startswith("transpose(jvp(M")',
             (_TRAFFIC + "test_each_fusion_s_bytes_go_to_the_pass_and_module_its_op_name_says",)),
    Mutation("traffic's parts of the step split unrolled layers one by one",
             "glmjax/bench/traffic.py", 'modules = [re.sub(r"_\\d+$", "_*", name) for name',
             "modules = [name for name",
             (_TRAFFIC + "test_each_fusion_s_bytes_go_to_the_pass_and_module_its_op_name_says",)),
    Mutation("traffic's parts of the step file unrolled layers' recomputation as forward work",
             "glmjax/bench/traffic.py",
             'phase = ("backward" if any(name.startswith("transpose(") for name in path)',
             'phase = ("forward" if any(name.startswith("jvp(") for name in path)\n'
             '           else "backward" if any(name.startswith("transpose(") for name in path)',
             (_TRAFFIC + "test_each_fusion_s_bytes_go_to_the_pass_and_module_its_op_name_says",)),
    Mutation("traffic's parts of the step mix the model's work outside modules with the loss's",
             "glmjax/bench/traffic.py",
             'model = differentiated[-1] if differentiated else ""', 'model = ""',
             (_TRAFFIC + "test_each_fusion_s_bytes_go_to_the_pass_and_module_its_op_name_says",)),
    Mutation("the loan's wheels go beside those of an earlier pin", "launch/gpu_wheels.sh",
             "if [[ ${#old[@]} -gt 0 ]]; then", "if false; then",
             (_WHEELS + "test_it_refuses_a_folder_that_already_holds_wheels_and_a_source_that_is_"
              "no_folder",)),
    Mutation("a tokamax checkout is read from the repo root, not where the script started",
             "launch/gpu_wheels.sh", 'source=$(cd "$1" && pwd)', 'source=$1',
             (_WHEELS + "test_tokamax_is_built_from_the_commit_that_measure_gpu_names_or_from_a_"
              "given_checkout",)),
    Mutation("a tokamax checkout at another commit is built all the same", "launch/gpu_wheels.sh",
             '[[ "$head" != "$TOKAMAX_COMMIT" ]]', '[[ "$head" == "$TOKAMAX_COMMIT" ]]',
             (_WHEELS + "test_it_refuses_a_tokamax_checkout_at_another_commit",)),
    Mutation("the loan's wheels come with their dependencies", "launch/gpu_wheels.sh",
             "download -q --no-deps --only-binary", "download -q --only-binary",
             (_WHEELS + "test_the_loan_s_wheels_are_pinned_binaries_for_python_3_12_without_their_"
              "dependencies",)),
    Mutation("the loan's wheels are fetched for this machine's Python", "launch/gpu_wheels.sh",
             "--python-version 3.12", "--python-version 3.11",
             (_WHEELS + "test_the_loan_s_wheels_are_pinned_binaries_for_python_3_12_without_their_"
              "dependencies",)),
    Mutation("a loan's wheel is left unpinned", "launch/gpu_wheels.sh",
             "xprof==2.24.2 fire", "xprof fire",
             (_WHEELS + "test_the_loan_s_wheels_are_pinned_binaries_for_python_3_12_without_their_"
              "dependencies",)),
    Mutation("tokamax is built from whatever GitHub's default branch holds",
             "launch/gpu_wheels.sh", "tokamax@$TOKAMAX_COMMIT", "tokamax",
             (_WHEELS + "test_tokamax_is_built_from_the_commit_that_measure_gpu_names_or_from_a_"
              "given_checkout",)),
    Mutation("the prepare benchmark's line is keyed 'bench', not 'what'",
             "glmjax/bench/prepare.py", 'result = dict(what="prepare",',
             'result = dict(bench="prepare",', (_BENCH + "test_bench_prints_one_json_line",)),
    Mutation("bench's TFLOP/s per device divides by this host's devices", "glmjax/bench/step.py",
             'flops_per_step=float(out["model_flops"]), num_devices=jax.device_count(),',
             'flops_per_step=float(out["model_flops"]), num_devices=jax.local_device_count(),',
             ("tests/test_bench_step.py::test_the_step_benchmark_divides_its_timings_as_its_"
              "figures_say",)),
    Mutation("bench --what=step ignores --steps", "glmjax/bench/step.py",
             "print(json.dumps(measure(config, flags.FLAGS.steps or DEFAULT_STEPS)))",
             "print(json.dumps(measure(config, DEFAULT_STEPS)))",
             ("tests/test_bench_step.py::test_the_step_benchmark_times_the_steps_asked_for",)),
    Mutation("bench --what=sweep ignores --steps", "glmjax/bench/sweep.py",
             "  steps = flags.FLAGS.steps or DEFAULT_STEPS\n", "  steps = DEFAULT_STEPS\n",
             ("tests/test_bench.py::test_the_sweep_times_each_setting_it_records_and_picks_the_one_"
              "with_most_tokens_per_s",)),
    Mutation("the sweep tries a batch of 0 rows for a batch size of 1", "glmjax/bench/sweep.py",
             "sorted({max(batch // 2, 1), batch, 2 * batch})", "sorted({batch // 2, batch, 2 * batch})",
             ("tests/test_bench.py::test_the_sweep_s_batch_sizes_are_half_once_and_twice_the_config_"
              "s_and_never_0",)),
)
