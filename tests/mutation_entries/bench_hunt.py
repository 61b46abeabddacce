"""Planted bugs in the figures the benchmarks and the compile-ahead tools publish: step times,
tokens/s, MFU and FLOPs, a sweep's best, a profile's classes, traffic bytes, fit verdicts and
the memory and topology facts behind them (a bench-and-aot hunt, session 33)."""
from mutation_entries import Mutation

_STEP_PY = "glmjax/bench/step.py"
_SWEEP_PY = "glmjax/bench/sweep.py"
_ATTN_PY = "glmjax/bench/attention.py"
_CEIL_PY = "glmjax/bench/ceiling.py"
_PREP_PY = "glmjax/bench/prepare.py"
_PROF_PY = "glmjax/bench/profile.py"
_SAVE_PY = "glmjax/bench/save.py"
_TRAF_PY = "glmjax/bench/traffic.py"
_DATA_PY = "glmjax/bench/data.py"
_AOT_PY = "glmjax/aot.py"
_FIT_PY = "glmjax/fit_table.py"
_MEM_PY = "glmjax/memory.py"
_GPU_PY = "glmjax/gpu_topology.py"
_TPU_PY = "glmjax/topology.py"
_SUM_PY = "glmjax/checksums.py"
_DOCS_PY = "glmjax/data/documents.py"
_MODEL_PY = "glmjax/model/model_config.py"

_STEP = ("tests/test_bench_step.py",)
_SWEEP = ("tests/test_bench.py::test_the_sweep_s_best_is_the_fastest_trial_that_ran_and_on_a_tie_"
          "the_smaller_one",
          "tests/test_bench.py::test_the_sweep_s_batch_sizes_are_half_once_and_twice_the_config_s_"
          "and_never_0",
          "tests/test_bench.py::test_the_sweep_times_each_setting_it_records_and_picks_the_one_"
          "with_most_tokens_per_s",
          "tests/test_bench.py::test_each_sweep_trial_keeps_the_step_s_speed_mfu_memory_and_"
          "compile_figures")
_ATTN = ("tests/test_bench_attention.py",)
_CEIL = ("tests/test_bench_ceiling.py",)
_PREP = ("tests/test_bench_prepare.py::test_the_prepare_benchmark_s_read_rate_is_the_tokens_of_"
         "its_windows_over_the_time",
         "tests/test_bench_prepare.py::test_the_prepare_benchmark_counts_the_shards_it_wrote_of_a_"
         "source_it_did_not_finish")
_PROF = ("tests/test_bench_profile.py",)
_SAVE = ("tests/test_bench_save.py", "tests/test_bench_save_waits.py")
_TRAF = ("tests/test_bench_traffic.py::test_a_loop_s_passes_count_once_per_trip_and_slices_at_"
         "their_own_size",
         "tests/test_bench_traffic.py::test_each_fusion_s_bytes_go_to_the_pass_and_module_its_op_"
         "name_says",
         "tests/test_bench_traffic.py::test_array_bytes_counts_every_array_of_a_tuple_at_its_type_"
         "s_width",
         "tests/test_bench_traffic.py::test_a_loop_inside_a_loop_runs_as_often_as_both_trip_"
         "counts_say",
         "tests/test_bench_traffic.py::test_a_stack_update_that_xla_runs_on_its_own_stream_counts_"
         "once_per_trip",
         "tests/test_bench_traffic.py::test_an_asynchronous_fusion_as_a_compiled_program_prints_it_"
         "counts_once_per_trip")
_DATA = ("tests/test_bench_data.py",)
_AOT_TINY = ("tests/test_aot.py::test_a_tiny_config_compiles_for_v5p_with_the_mosaic_splash_"
             "kernel",)
_AOT_FAST = ("tests/test_aot_report.py::test_a_chip_s_bytes_are_its_shard_of_each_leaf_at_the_"
             "leaf_s_dtype_width",
             "tests/test_aot_report.py::test_a_program_s_peak_counts_a_donated_buffer_once",
             "tests/test_aot_report.py::test_a_host_s_row_runs_are_its_contiguous_blocks_of_"
             "rows",
             "tests/test_aot_report.py::test_the_report_shows_the_held_out_and_prefetched_"
             "batches_together")
_FIT = ("tests/test_fit_table.py",)
_MEM = ("tests/test_reporting.py::test_the_compiled_step_s_memory_line_is_in_gib",
        "tests/test_aot_report.py::test_a_program_s_peak_counts_a_donated_buffer_once",
        "tests/test_aot_report.py::test_the_advice_for_a_config_that_does_not_fit_names_the_"
        "knobs_not_yet_turned",
        "tests/test_device_snapshot.py")
_GPU = ("tests/test_aot_gpu.py::test_gpu_names_give_hosts_and_gpus_per_host",
        "tests/test_aot_gpu.py::test_impossible_gpu_names_say_what_is_accepted",
        "tests/test_aot_gpu.py::test_a_gpu_s_usable_memory_is_the_share_jax_s_client_takes")
_TPU = ("tests/test_topology.py",)
_SUM = ("tests/test_checkpoint_damage.py::test_the_checksum_does_not_depend_on_the_sharding_and_"
        "sees_one_changed_element",
        "tests/test_checkpoint_damage.py::test_a_corruption_line_names_three_arrays_and_counts_the_"
        "others",
        "tests/test_checkpoint_damage.py::test_a_state_with_nan_is_never_saved")
_DOCS = ("tests/test_data_inputs.py", "tests/test_prepare.py::test_prepared_store_reads_what_on_"
         "the_fly_tokenization_gives")
_FLOPS = ("tests/test_flops.py::test_step_flops_equal_a_hand_count_for_a_tiny_config",
          "tests/test_flops.py::test_geglu_step_flops_count_its_three_mlp_projections_by_hand",
          "tests/test_flops.py::test_per_token_layer_flops_are_six_per_weight_of_the_model_s_"
          "layer_matmuls",
          "tests/test_flops.py::test_planning_flops_per_token_use_the_config_s_part_b_share")

_MFU = ("tests/test_bench_step.py::test_the_step_benchmark_s_mfu_is_over_the_peak_of_the_device_"
        "kind_it_ran_on",)
_SWEEP_DEFAULTS = ("tests/test_bench.py::test_the_sweep_s_default_grid_tries_the_three_remat_"
                   "policies_and_the_kernels_auto_tries",)
_REPORT = ("tests/test_aot_report.py::test_a_peak_that_fills_the_chip_to_the_byte_fits_and_"
           "one_byte_more_does_not",
           "tests/test_aot_report.py::test_the_report_gives_the_step_s_model_flops_in_pflop_"
           "and_its_time_at_the_target_mfu")
_GPU_SHARE = ("tests/test_aot_gpu.py::test_without_a_memory_fraction_set_a_gpu_s_usable_memory_is_"
              "jax_s_default_three_quarters",
              "tests/test_aot_gpu.py::test_the_gpu_advice_offers_jax_a_memory_share_of_0_9_only_"
              "where_it_has_less")

ENTRIES: tuple[Mutation, ...] = (
    # The step benchmark.
    Mutation("the step benchmark's MFU looks up the peak of the platform, not the device kind",
             _STEP_PY, "device_kind=jax.devices()[0].device_kind)",
             "device_kind=jax.devices()[0].platform)", _STEP + _MFU),
    Mutation("the step benchmark's TFLOP/s count the scored positions, not the model FLOPs",
             _STEP_PY, "flops_per_step=float(out[\"model_flops\"])",
             "flops_per_step=float(out[\"logit_positions\"])", _STEP),
    Mutation("the step benchmark reads its clock before the timed steps have finished",
             _STEP_PY,
             "    jax.block_until_ready(out)\n"
             "    step_time = (time.perf_counter() - start) / steps\n",
             "    step_time = (time.perf_counter() - start) / steps\n"
             "    jax.block_until_ready(out)\n",
             _STEP),
    Mutation("the pipeline-fed step time stops its clock with the last step still running",
             _STEP_PY,
             "    jax.block_until_ready(out)\n"
             "  return (time.perf_counter() - start) / steps, state",
             "  return (time.perf_counter() - start) / steps, state", _STEP),
    Mutation("the step benchmark's tokens per step leave out each row's last token", _STEP_PY,
             "tokens_per_step=config.data.batch_size * config.data.seq_len",
             "tokens_per_step=config.data.batch_size * (config.data.seq_len - 1)", _STEP),
    # The sweep.
    Mutation("the sweep's best is the trial with the fewest tokens/s", _SWEEP_PY,
             "  return max(ran, key=lambda t:", "  return min(ran, key=lambda t:", _SWEEP),
    Mutation("the sweep's best is the slowest step", _SWEEP_PY,
             "key=lambda t: (t[\"tokens_per_s\"],", "key=lambda t: (t[\"step_time_s\"],", _SWEEP),
    Mutation("the sweep drops its last trial", _SWEEP_PY,
             "for index, setting in enumerate(settings, 1):",
             "for index, setting in enumerate(settings[:-1], 1):", _SWEEP),
    Mutation("the sweep's default remat policies leave out full", _SWEEP_PY,
             "or list(REMATS)", "or list(REMATS[:-1])", _SWEEP + _SWEEP_DEFAULTS),
    Mutation("the sweep's best may be a trial that failed", _SWEEP_PY,
             "ran = [t for t in trials if \"error\" not in t]",
             "ran = [t for t in trials if \"tokens_per_s\" in t or \"error\" in t]", _SWEEP),
    # The attention benchmark.
    Mutation("an attention timing divides by one more call than it timed", _ATTN_PY,
             "  return (time.perf_counter() - start) / steps",
             "  return (time.perf_counter() - start) / (steps + 1)", _ATTN),
    Mutation("an attention timing stops its clock with the calls still running", _ATTN_PY,
             "  jax.block_until_ready(out)\n  return (time.perf_counter() - start) / steps",
             "  return (time.perf_counter() - start) / steps", _ATTN),
    Mutation("the attention benchmark's fwd+bwd TFLOP/s divide by the forward's time", _ATTN_PY,
             "3.5 * flops_forward / total_s / 1e12", "3.5 * flops_forward / forward_s / 1e12",
             _ATTN),
    Mutation("the attention benchmark counts the visible pairs of one row of its batch", _ATTN_PY,
             "jnp.sum(mask_lib.key_ends(sep, seq_len))",
             "jnp.sum(mask_lib.key_ends(sep[:1], seq_len))", _ATTN),
    Mutation("the attention benchmark counts QK^T's FLOPs and not PV's", _ATTN_PY,
             "flops_forward = 4.0 * visible", "flops_forward = 2.0 * visible", _ATTN),
    # The ceiling.
    Mutation("the ceiling's clock starts before its compiling run", _CEIL_PY,
             "  jax.block_until_ready(fn(*args))\n  start = time.perf_counter()\n",
             "  start = time.perf_counter()\n  jax.block_until_ready(fn(*args))\n", _CEIL),
    Mutation("the ceiling's matmul rate is in 2^40 FLOP/s", _CEIL_PY,
             "2 * size ** 3 / matmul_s / 1e12", "2 * size ** 3 / matmul_s / 2**40", _CEIL),
    # The prepare benchmark.
    Mutation("the prepare benchmark's windows are the longer of the document and the row",
             _PREP_PY, "np.minimum(store.doc_lengths[docs], row_tokens)",
             "np.maximum(store.doc_lengths[docs], row_tokens)", _PREP),
    Mutation("the prepare benchmark's prepare rate divides by the read time", _PREP_PY,
             "round(total_tokens / prepare_seconds)", "round(total_tokens / _READ_SECONDS)",
             _PREP),
    # The profile.
    Mutation("the profile's calls per step are the trace's calls", _PROF_PY,
             "\"calls_per_step\": len(ops[name]) / steps", "\"calls_per_step\": len(ops[name])",
             _PROF),
    Mutation("a profile line's busy time is its costliest operation's", _PROF_PY,
             "busy = sum(per_op.values())", "busy = max(per_op.values())", _PROF),
    Mutation("the profile keeps the idlest device lines", _PROF_PY,
             "key=lambda line: line[\"busy_s_per_step\"], reverse=True)",
             "key=lambda line: line[\"busy_s_per_step\"])", _PROF),
    Mutation("the profile reads the trace's microseconds as milliseconds", _PROF_PY,
             "float(event.get(\"dur\", 0)) * 1e-6", "float(event.get(\"dur\", 0)) * 1e-3", _PROF),
    Mutation("the profile reads its clock before the traced steps have finished", _PROF_PY,
             "      jax.block_until_ready(out)\n      step_time = (time.perf_counter() - start) / "
             "steps\n",
             "      step_time = (time.perf_counter() - start) / steps\n      "
             "jax.block_until_ready(out)\n", _PROF),
    # The save benchmark.
    Mutation("the save benchmark's transfer rate is in GiB/s, named GB/s", _SAVE_PY,
             "state_bytes / alone_s / 1e9", "state_bytes / alone_s / 2**30", _SAVE),
    Mutation("the fetch's hidden share is computed with the transfer's time alone", _SAVE_PY,
             "hidden_fraction(step_s, fetch_s, fetch_beside_s)",
             "hidden_fraction(step_s, alone_s, fetch_beside_s)", _SAVE),
    Mutation("the snapshot's steps round the transfer's steps down", _SAVE_PY,
             "math.ceil(alone_s / step_s)", "math.floor(alone_s / step_s)", _SAVE),
    Mutation("the hidden share of a transfer is over the longer of step and transfer", _SAVE_PY,
             "hideable = min(step_s, transfer_s)", "hideable = max(step_s, transfer_s)", _SAVE),
    Mutation("the largest step overhead is the smallest", _SAVE_PY,
             "return max(with_save - without for", "return min(with_save - without for", _SAVE),
    Mutation("the largest step overhead is a fraction of the snapshot's steps, not of a step",
             _SAVE_PY, "most_s / step_s", "most_s / snapshot_steps", _SAVE),
    Mutation("the share of copies beside the loops divides bytes by copies", _SAVE_PY,
             "(copies[\"beside_loops_bytes\"] / copies[\"bytes\"]",
             "(copies[\"beside_loops_bytes\"] / copies[\"copies\"]", _SAVE),
    Mutation("the in-step transfer's hidden share compares it with the fetch", _SAVE_PY,
             "        step_s, alone_s, in_step[\"in_step_transfer_step_s\"])",
             "        step_s, fetch_s, in_step[\"in_step_transfer_step_s\"])", _SAVE),
    Mutation("the save benchmark's step time runs one step fewer than it divides by", _SAVE_PY,
             "  start = time.perf_counter()\n  for _ in range(steps):\n    state, out = "
             "compiled(state, batch)\n  jax.block_until_ready(out)\n",
             "  start = time.perf_counter()\n  for _ in range(steps - 1):\n    state, out = "
             "compiled(state, batch)\n  jax.block_until_ready(out)\n", _SAVE),
    # Traffic.
    Mutation("traffic writes the whole stack a stack update writes into", _TRAF_PY,
             "      return array_bytes(shapes[operands[1]])",
             "      return array_bytes(shapes[name])", _TRAF),
    Mutation("traffic counts a parameter at a slice's size when any use slices it", _TRAF_PY,
             "if uses and all(use[:2] == (\"dynamic-slice\", 0) for use in uses):",
             "if uses and any(use[:2] == (\"dynamic-slice\", 0) for use in uses):",
             _TRAF + ("tests/test_bench_traffic.py::test_a_fusion_input_read_whole_by_one_op_"
                      "counts_whole_though_another_slices_it",)),
    Mutation("traffic counts only the first output of a multi-output fusion", _TRAF_PY,
             "      return sum(written(operand) for operand in operands)",
             "      return written(operands[0])", _TRAF),
    Mutation("traffic's total counts each computation once whatever its runs", _TRAF_PY,
             "    total += count * per_run", "    total += per_run", _TRAF),
    Mutation("traffic runs a called computation once whatever its caller's runs", _TRAF_PY,
             "        runs[called.group(1)] = runs[caller]",
             "        runs[called.group(1)] = 1", _TRAF),
    Mutation("traffic takes a complex64 value for 16 bytes", _TRAF_PY,
             "\"c64\": 8,", "\"c64\": 16,", _TRAF),
    # The data benchmark.
    Mutation("the data benchmark's batch time divides by the warm-up batch too", _DATA_PY,
             "\"batch_s\": elapsed / steps", "\"batch_s\": elapsed / (steps + 1)", _DATA),
    Mutation("the data benchmark's spans per blank row count every row's spans", _DATA_PY,
             "float(spans[blank].mean()) if blank.any()", "float(spans.mean()) if blank.any()",
             _DATA),
    Mutation("the data benchmark's every-option tokens/s is the mixture's", _DATA_PY,
             "round(all_on[\"tokens_per_s\"])", "round(mixture[\"tokens_per_s\"])", _DATA),
    # aot.
    Mutation("aot's step time is at 100% MFU though it says 50%", _AOT_PY,
             "flops / (spec.chips * peak * TARGET_MFU)", "flops / (spec.chips * peak)",
             _AOT_TINY),
    Mutation("aot counts one prefetched batch fewer than train holds", _AOT_PY,
             "ahead = (prefetch.DEPTH + 2) * batch_bytes",
             "ahead = (prefetch.DEPTH + 1) * batch_bytes",
             ("tests/test_aot.py::test_the_batches_train_prefetches_count_in_the_peak",)),
    Mutation("aot says a config that exactly fills the chip does not fit", _AOT_PY,
             "return self.total_bytes <= self.hbm_bytes",
             "return self.total_bytes < self.hbm_bytes",
             _AOT_FAST + _REPORT),
    Mutation("aot counts a chip's bytes of each leaf at the whole leaf's size", _AOT_PY,
             "    shard = leaf.sharding.shard_shape(leaf.shape)\n", "    shard = leaf.shape\n",
             _AOT_FAST),
    Mutation("aot's hosts per row are those of the row built by the fewest", _AOT_PY,
             "hosts_per_row=int(holders.max())", "hosts_per_row=int(holders.min())",
             ("tests/test_aot.py::test_a_tensor_group_wider_than_a_host_has_each_row_built_by_every"
              "_host_of_the_group",
              "tests/test_aot.py::test_the_report_s_hosts_per_row_are_the_most_hosts_that_build_"
              "any_one_row")),
    Mutation("aot's report gives its PFLOP in 2^50 FLOP", _AOT_PY,
             "report.model_flops_per_step / 1e15:.3f", "report.model_flops_per_step / 2**50:.3f",
             _AOT_FAST + _REPORT),
    # fit_table.
    Mutation("fit_table's tokens/s count rows, not tokens", _FIT_PY,
             "tokens = report.batch_size * report.seq_len / report.step_time_at_target_mfu_s",
             "tokens = report.batch_size / report.step_time_at_target_mfu_s", _FIT),
    Mutation("fit_table's memory cell gives decimal GB of a GiB chip", _FIT_PY,
             "f\"{report.total_bytes / 2**30:.1f} of", "f\"{report.total_bytes / 1e9:.1f} of",
             _FIT),
    Mutation("fit_table walks the slice sizes down", _FIT_PY,
             "  for size in SIZES[generation]:", "  for size in reversed(SIZES[generation]):",
             _FIT),
    Mutation("fit_table's verdict names the second-largest slice it tried", _FIT_PY,
             "largest = _slice(generation, SIZES[generation][-1])",
             "largest = _slice(generation, SIZES[generation][-2])", _FIT),
    # memory.
    Mutation("the compiled step's memory line gives the arguments' size for the outputs'",
             _MEM_PY, "f\"{gib(memory.output_size_in_bytes)}, temporaries",
             "f\"{gib(memory.argument_size_in_bytes)}, temporaries", _MEM),
    Mutation("a program's peak leaves out its temporaries", _MEM_PY,
             "- memory.alias_size_in_bytes + memory.temp_size_in_bytes)",
             "- memory.alias_size_in_bytes)", _MEM),
    Mutation("the GPU advice offers a memory share of 0.9 when jax already has 0.9", _MEM_PY,
             "if fraction < 0.9 else []", "if fraction <= 0.9 else []", _MEM + _GPU_SHARE),
    # gpu_topology and topology.
    Mutation("jax's default share of a GPU's memory is taken as 0.8", _GPU_PY,
             "os.environ.get(\"XLA_PYTHON_CLIENT_MEM_FRACTION\", \"0.75\")",
             "os.environ.get(\"XLA_PYTHON_CLIENT_MEM_FRACTION\", \"0.8\")", _GPU + _GPU_SHARE),
    Mutation("a slice's accelerator type counts chips for v4 and v5p", _TPU_PY,
             "return f\"{prefix}-{self.slice_chips * self.generation.cores_per_chip_in_name}\"",
             "return f\"{prefix}-{self.slice_chips}\"", _TPU + _FIT),
    Mutation("an 8-chip v5e is taken to need two hosts", _TPU_PY,
             "if self.slice_chips <= self.generation.single_host_chips:",
             "if self.slice_chips < self.generation.single_host_chips:", _TPU),
    # checksums and documents.
    Mutation("a state summary reads the non-finite count as the checksum", _SUM_PY,
             "{name: (int(pair[0]), int(pair[1]))", "{name: (int(pair[1]), int(pair[0]))", _SUM),
    Mutation("gather_indices starts each piece at the end of its own", _DOCS_PY,
             "piece_starts = np.cumsum(lengths) - lengths", "piece_starts = np.cumsum(lengths)",
             _DOCS),
    Mutation("a prepared store refuses a read that ends at its document's end", _DOCS_PY,
             "if np.any(starts + lengths > self.doc_lengths[doc_ids]):",
             "if np.any(starts + lengths >= self.doc_lengths[doc_ids]):", _DOCS),
    # The FLOPs formula.
    Mutation("Part B's visible pairs leave out each query's own key", _MODEL_PY,
             "(seq_len * (seq_len + 1) - sep * (sep + 1)) // 2",
             "(seq_len * seq_len - sep * sep) // 2", _FLOPS),
    Mutation("the vocabulary projection's FLOPs count the forward only", _MODEL_PY,
             "6.0 * config.vocab_size * hidden * logit_positions",
             "2.0 * config.vocab_size * hidden * logit_positions", _FLOPS),
    Mutation("a layer's FLOPs leave out the attention output projection", _MODEL_PY,
             "config.num_layers * (4 * hidden * hidden + mlp_matmul)",
             "config.num_layers * (3 * hidden * hidden + mlp_matmul)", _FLOPS),
    Mutation("planning FLOPs score every position, not Part B's", _MODEL_PY,
             "logit_positions=part_b_fraction * seq_len) / seq_len",
             "logit_positions=seq_len) / seq_len", _FLOPS),
    # A second round.
    Mutation("a transfer no step can hide reads as not hidden at all", _SAVE_PY,
             "  if hideable <= 0:\n    return 1.0", "  if hideable <= 0:\n    return 0.0", _SAVE),
    Mutation("the profile adds up a device's lines (streams, ops, modules) into one", _PROF_PY,
             "durations[f\"{process} {thread}\"]", "durations[process]", _PROF),
    Mutation("aot's fits percentage is the state's share of HBM, not the peak's", _AOT_PY,
             "{100 * report.total_bytes / report.hbm_bytes:.0f}%",
             "{100 * report.state_bytes / report.hbm_bytes:.0f}%", _AOT_FAST + _REPORT),
    Mutation("a GPU machine of exactly the most hosts is refused", _GPU_PY,
             "if not 1 <= hosts <= MAX_HOSTS or", "if not 1 <= hosts < MAX_HOSTS or", _GPU),
    Mutation("an H100 PCIe card's MFU is counted against the SXM card's peak", "glmjax/metrics.py",
             '("h100 pcie", 756e12), ', "",
             ("tests/test_metrics.py::test_a_gpu_s_peak_is_its_dense_bf16_figure_not_the_sparse_"
              "one",)),
    Mutation("the attention benchmark runs a 16-bit-only kernel's check at float32", _ATTN_PY,
             "reason = (attention_choice.passed_over(name, seq_len, dtype)\n              or ",
             "reason = (", _ATTN),
)
