"""python tests/mutations.py [--only=NAME,...] [--full] [--list]

A mutation check, run on demand (not by pytest: its name does not start with test_). Each entry
plants one realistic bug in a fresh copy of the project and runs the tests that should catch it
(`--full`: the whole suite); a bug that every one of those tests lets through is reported as
SURVIVED and the exit status is 1. Add an entry when a claim gets a test.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 3600  # per pytest run; a hang is reported, not waited on forever


@dataclasses.dataclass(frozen=True)
class Mutation:
  name: str
  path: str   # file the bug goes into
  old: str    # text replaced (must occur exactly once)
  new: str
  tests: tuple[str, ...]  # pytest node ids that must fail


MUTATIONS = (
    Mutation("an [sMASK] row scores no loss on a [CLS] its original sentence holds",
             "glmjax/data/infilling.py",
             "loss = loss & ~(suffix[:, None] & (targets == specials.cls))",
             "loss = loss & ~(targets == specials.cls)",
             ("tests/test_recipe.py::test_every_part_b_target_of_a_sentence_row_carries_loss_a_"
              "cls_its_sentence_holds_too",)),
    Mutation("spans that exactly fill their segment lose the last one",
             "glmjax/data/infilling.py",
             "valid = (units > 0) & (np.cumsum(units, axis=1) <= capacity[:, None])",
             "valid = (units > 0) & (np.cumsum(units, axis=1) < capacity[:, None])",
             ("tests/test_infilling.py::test_spans_that_exactly_fill_a_segment_are_all_placed",)),
    Mutation("a span that just fits in a later document is shortened to one token",
             "glmjax/data/infilling.py",
             "fits = begin + lengths[:, i:i + 1] + 1 <= seg_end",
             "fits = begin + lengths[:, i:i + 1] + 1 < seg_end",
             ("tests/test_infilling.py::test_a_span_is_placed_whole_in_the_later_document_where_"
              "it_just_fits",)),
    Mutation("a span that fits nowhere whole is dropped where one token just fits",
             "glmjax/data/infilling.py",
             "fits_one = begin + 2 <= seg_end", "fits_one = begin + 2 < seg_end",
             ("tests/test_infilling.py::test_a_span_that_fits_nowhere_whole_is_shortened_to_one_"
              "token_where_one_just_fits",)),
    Mutation("a per-batch [gMASK] length reaches F - 2 (the original's G stops at F - 3)",
             "glmjax/data/infilling.py",
             "    top = np.maximum(fetched - 3, 1)", "    top = np.maximum(fetched - 2, 1)",
             ("tests/test_infilling.py::test_a_batch_s_generation_length_is_uniform_from_int_"
              "ratio_times_f_minus_1_to_f_minus_3",)),
    Mutation("a per-batch [gMASK] length starts at int(ratio x F) instead of int(ratio x (F - 1))",
             "glmjax/data/infilling.py",
             "bottom = np.clip((gen_min_ratio * (fetched - 1)).astype(np.int64), 1, top)",
             "bottom = np.clip((gen_min_ratio * fetched).astype(np.int64), 1, top)",
             ("tests/test_infilling.py::test_a_batch_s_generation_length_is_uniform_from_int_"
              "ratio_times_f_minus_1_to_f_minus_3",)),
    Mutation("a sentence window that ends with its last document's eos is cut back anyway",
             "glmjax/data/alignment.py",
             "  return np.where((last_end >= 0) & ~whole, last_end + 1, window_len)",
             "  return np.where(last_end >= 0, last_end + 1, window_len)",
             ("tests/test_recipe.py::test_a_window_whose_last_document_ends_inside_it_keeps_that_"
              "document_and_its_eos",)),
    Mutation("a sentence-end cut that keeps exactly half the last document's room is not made",
             "glmjax/data/alignment.py",
             "  keep_from = last_piece + np.maximum(room // 2, 1) - 1",
             "  keep_from = last_piece + np.maximum(room // 2, 1)",
             ("tests/test_recipe.py::test_a_window_is_cut_back_to_a_sentence_end_only_when_that_"
              "keeps_half_its_last_room",)),
    Mutation("the last partial block of the held-out split may hold out no document",
             "glmjax/data/sources.py",
             "  block_size = np.minimum(block, num_docs - block_index * block)",
             "  block_size = np.full_like(block_index, block)",
             ("tests/test_sources.py::test_every_block_of_the_split_the_last_partial_one_too_"
              "holds_out_one_document",)),
    Mutation("a .txt paragraph's lines lose their indentation and trailing spaces",
             "glmjax/data/text_files.py",
             '    line = decode_utf8(raw, stats).rstrip("\\r\\n")',
             "    line = decode_utf8(raw, stats).strip()",
             ("tests/test_sources.py::test_a_paragraph_keeps_the_indentation_and_spacing_of_its_"
              "lines",)),
    Mutation("a TFDS split's files are read in a shuffled order",
             "glmjax/data/tfds_source.py",
             "builder.as_dataset(split=split, shuffle_files=False,",
             "builder.as_dataset(split=split, shuffle_files=True,",
             ("tests/test_sources.py::test_a_tfds_split_of_several_files_is_read_in_one_fixed_"
              "order",)),
    Mutation("a TFDS split's files are read interleaved (unlike prepare's pieces)",
             "glmjax/data/tfds_source.py",
             "tfds.ReadConfig(interleave_cycle_length=1,",
             "tfds.ReadConfig(interleave_cycle_length=4,",
             ("tests/test_sources.py::test_a_tfds_split_of_several_files_is_read_in_one_fixed_"
              "order",)),
    Mutation("a file that two globs match is read twice",
             "glmjax/data/text_files.py",
             "      if path not in paths:\n        paths.append(path)",
             "      paths.append(path)",
             ("tests/test_sources.py::test_a_file_that_several_globs_match_is_read_once_in_the_"
              "place_of_its_first_glob",)),
    Mutation("the files a glob matches are read in the file system's order",
             "glmjax/data/text_files.py",
             "    matched = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True)"
             "\n                     if os.path.isfile(p))",
             "    matched = [p for p in glob.glob(os.path.expanduser(pattern), recursive=True)"
             "\n               if os.path.isfile(p)]",
             ("tests/test_sources.py::test_the_files_a_glob_matches_are_read_in_the_order_of_"
              "their_names",)),
    Mutation("a hub tokenizer.json wraps every document of a batch in [CLS] ... [SEP]",
             "glmjax/data/tokenizers.py",
             "self._tokenizer.encode_batch(list(texts), add_special_tokens=False)",
             "self._tokenizer.encode_batch(list(texts))",
             ("tests/test_released_tokenizers.py::test_a_hub_tokenizer_json_encodes_a_document_"
              "without_its_cls_and_sep_template",
              "tests/test_released_tokenizers.py::test_a_literal_mask_in_text_is_not_encoded_as_"
              "a_special_id")),
    Mutation("a hub tokenizer.json wraps an encoded text in [CLS] ... [SEP]",
             "glmjax/data/tokenizers.py",
             "self._tokenizer.encode(text, add_special_tokens=False).ids",
             "self._tokenizer.encode(text).ids",
             ("tests/test_released_tokenizers.py::test_a_hub_tokenizer_json_encodes_a_document_"
              "without_its_cls_and_sep_template",
              "tests/test_released_tokenizers.py::test_a_literal_mask_in_text_is_not_encoded_as_"
              "a_special_id")),
    Mutation("';' does not end a sentence (the original's contains_sentence_end says it does)",
             "glmjax/data/tokenizers.py",
             'SENTENCE_END_CHARS = ".?!;:\\n', 'SENTENCE_END_CHARS = ".?!:\\n',
             ("tests/test_tokenizers.py::test_a_token_ends_a_sentence_when_its_text_holds_a_"
              "character_the_original_looks_for",)),
    Mutation("'…' does not end a sentence (the original's contains_sentence_end says it does)",
             "glmjax/data/tokenizers.py",
             '。？！；…"', '。？！；"',
             ("tests/test_tokenizers.py::test_a_token_ends_a_sentence_when_its_text_holds_a_"
              "character_the_original_looks_for",)),
    Mutation("the sweep's best on a tie in tokens/s is the trial needing more memory",
             "glmjax/bench/sweep.py",
             '-(t["compiled_memory_bytes"] or 0)', '(t["compiled_memory_bytes"] or 0)',
             ("tests/test_bench.py::test_the_sweep_s_best_is_the_fastest_trial_that_ran_and_on_"
              "a_tie_the_smaller_one",)),
    Mutation("the data benchmark's masked fraction counts each span's [eop] as text",
             "glmjax/bench/data.py",
             "  text = (sep + part_b - 2 * spans)[blank]",
             "  text = (sep + part_b - spans)[blank]",
             ("tests/test_bench.py::test_the_data_benchmark_s_blank_figures_are_those_of_the_"
              "batch_s_spans",)),
    Mutation("the data benchmark's mean span length divides by every objective's spans",
             "glmjax/bench/data.py",
             "float(masked.sum() / max(spans[blank].sum(), 1))",
             "float(masked.sum() / max(spans.sum(), 1))",
             ("tests/test_bench.py::test_the_data_benchmark_s_blank_figures_are_those_of_the_"
              "batch_s_spans",)),
    Mutation("a resumed run truncates the metrics history", "glmjax/metrics.py",
             'self._jsonl = self._jsonl_path.open("a", encoding="utf-8")',
             'self._jsonl = self._jsonl_path.open("w", encoding="utf-8")',
             ("tests/test_metrics.py::test_a_resumed_run_appends_to_the_metrics_history_of_the_"
              "runs_before_it",)),
    Mutation("past decay_steps the learning rate leaves final_ratio (cosine rises again)",
             "glmjax/optim.py",
             "progress = jnp.clip((step - warmup) / max(decay_steps - warmup, 1), 0.0, 1.0)",
             "progress = jnp.maximum((step - warmup) / max(decay_steps - warmup, 1), 0.0)",
             ("tests/test_optim.py::test_past_decay_steps_the_rate_stays_at_the_final_ratio",)),
    Mutation("AdamW ignores optim.eps (optax's default 1e-8)",
             "glmjax/optim.py",
             "b2=optim_config.b2, eps=optim_config.eps,", "b2=optim_config.b2,",
             ("tests/test_optim.py::test_adamw_divides_by_the_root_second_moment_plus_optim_eps",)),
    Mutation("the logged step time is the time between log lines (not per step)",
             "glmjax/metrics.py",
             "seconds = (now - self._last_time) / (step - self._last_step)",
             "seconds = now - self._last_time",
             ("tests/test_loop.py::test_a_log_line_s_throughput_is_that_of_the_steps_since_the_"
              "previous_log_line",)),
    Mutation("a log line's TFLOP/s and MFU use the last step's FLOPs (not its window's mean)",
             "glmjax/loop.py",
             "flops_per_step=np.mean(self.flops),", "flops_per_step=self.flops[-1],",
             ("tests/test_loop.py::test_a_log_line_s_throughput_is_that_of_the_steps_since_the_"
              "previous_log_line",)),
    Mutation("a log line's model FLOPs average every step since the start",
             "glmjax/loop.py",
             "    self.flops = []\n    self.writer.write", "    self.writer.write",
             ("tests/test_loop.py::test_a_log_line_s_throughput_is_that_of_the_steps_since_the_"
              "previous_log_line",)),
    Mutation("non-finite steps with good ones between them count as consecutive",
             "glmjax/loop.py",
             "    self.consecutive_nonfinite = 0\n    if step_done", "    if step_done",
             ("tests/test_loop.py::test_only_consecutive_non_finite_steps_stop_the_run",)),
    Mutation("param_norm logged for the parameters before the update",
             "glmjax/step.py",
             '"param_norm": optax.global_norm(new_state.params),',
             '"param_norm": optax.global_norm(state.params),',
             ("tests/test_train_step.py::test_the_logged_parameter_norm_is_that_of_the_updated_"
              "parameters",)),
    Mutation("the compiled train step draws dropout masks with seed 0 (not config.seed)",
             "glmjax/step.py",
             "                              seed=int(config.seed),\n",
             "                              seed=0,\n",
             ("tests/test_train_step.py::test_the_compiled_step_draws_dropout_masks_from_the_"
              "config_s_seed_and_generator",)),
    Mutation("the compiled train step ignores train.dropout_rng (always threefry)",
             "glmjax/step.py",
             "                              dropout_rng=str(config.train.dropout_rng),\n", "",
             ("tests/test_train_step.py::test_the_compiled_step_draws_dropout_masks_from_the_"
              "config_s_seed_and_generator",)),
    Mutation("another run's parameters are used without checking their checksums",
             "glmjax/checkpoint.py",
             '    problem = checksums.corruption(restored[STATE_ITEM], saved.get("checksums"))\n',
             "    problem = None\n",
             ("tests/test_checkpoint.py::test_parameters_for_another_run_whose_bytes_were_flipped_"
              "are_refused",)),
    Mutation("top_p leaves out the token whose probability reaches p",
             "glmjax/decoding.py",
             "cut = jnp.sum(cumulative - jax.nn.softmax(ordered, axis=-1) < sampling.top_p, "
             "axis=-1)",
             "cut = jnp.maximum(jnp.sum(cumulative < sampling.top_p, axis=-1), 1)",
             ("tests/test_generate.py::test_top_p_samples_from_the_smallest_set_of_likeliest_"
              "tokens_that_reaches_p",)),
    Mutation("generate may sample a [MASK] that lies inside the word pieces (BERT vocab)",
             "glmjax/generate.py",
             "allowed[[specials.cls, specials.mask, specials.smask",
             "allowed[[specials.cls, specials.smask",
             ("tests/test_generate.py::test_the_sampler_may_give_the_vocabulary_s_tokens_eop_and_"
              "eos_and_no_other_special",)),
    Mutation("a workdir's top-level config fields (seed) are not read back",
             "glmjax/pretrained.py",
             "    else:\n      config[section] = values", "    else:\n      pass",
             ("tests/test_evaluate.py::test_a_workdir_s_config_reads_back_as_its_run_wrote_it_"
              "the_seed_included",)),
    Mutation("the data benchmark counts a [gMASK] suffix (no [eop]) one token short",
             "glmjax/bench/data.py",
             '    open_end = ends & (batch["targets"][rows] != eop)', "    open_end = ends & False",
             ("tests/test_bench.py::test_the_data_benchmark_s_span_length_histogram_is_that_of_"
              "the_batch_s_spans",)),
    Mutation("data.context_mask_ratio is ignored (context masking reads block_mask_prob)",
             "glmjax/data/pipeline.py",
             "self.specials.mask, self.context_mask_ratio, self.specials.dblock",
             "self.specials.mask, self.block_mask_prob, self.specials.dblock",
             ("tests/test_recipe.py::test_context_masking_turns_its_ratio_of_each_blank_row_s_"
              "text_into_dblock_in_part_a",)),
    Mutation("[sMASK] rows cover a share of the fetched window, not of their own text",
             "glmjax/data/sentences.py",
             "covered >= blank_budget(mask_ratio, text_len)",
             "covered >= blank_budget(mask_ratio, window_len)",
             ("tests/test_pipeline.py::test_sentence_rows_stop_choosing_sentences_once_their_own_"
              "text_s_share_is_covered",)),
    Mutation("a sentence window's move direction reuses the offset's random number",
             "glmjax/data/alignment.py",
             "left = rng.uniform(infilling.STREAM_OFFSET, 2)[:, 1] < 0.5",
             "left = rng.uniform(infilling.STREAM_OFFSET, 2)[:, 0] < 0.5",
             ("tests/test_recipe.py::test_sentence_windows_move_a_cut_left_or_right_with_even_"
              "odds_wherever_it_falls",)),
    Mutation("a document subset reads the base store's documents by its own index",
             "glmjax/data/documents.py",
             "return self.base.read(self.ids[np.asarray(doc_ids, dtype=np.int64)], starts, "
             "lengths)",
             "return self.base.read(doc_ids, starts, lengths)",
             ("tests/test_sources.py::test_the_training_and_held_out_splits_read_the_documents_"
              "their_ids_name",)),
    Mutation("GeGLU's step FLOPs count two MLP projections, not three",
             "glmjax/model/model_config.py",
             'mlp_matmul = (3 if config.mlp == "geglu" else 2) * hidden * ffn',
             "mlp_matmul = 2 * hidden * ffn",
             ("tests/test_flops.py::test_geglu_step_flops_count_its_three_mlp_projections_by_hand",
              "tests/test_flops.py::test_per_token_layer_flops_are_six_per_weight_of_the_model_s_"
              "layer_matmuls")),
    Mutation("a full 4x4x4 cube (v5p-128, v4-128) is described without wraparound links",
             "glmjax/topology.py",
             "self.chips >= 64", "self.chips > 64",
             ("tests/test_aot.py::test_a_full_4x4x4_cube_and_larger_3d_slices_have_wraparound_"
              "links",)),
    Mutation("the data benchmark's span lengths count each span's [eop]",
             "glmjax/bench/data.py",
             "    lengths = b[ends] - 1 + open_end[ends]\n", "    lengths = b[ends] + open_end[ends]\n",
             ("tests/test_bench.py::test_the_data_benchmark_s_span_length_histogram_is_that_of_"
              "the_batch_s_spans",)),
    Mutation("TFLOP/s per device and MFU divide by this host's devices only",
             "glmjax/loop.py",
             "num_devices=jax.device_count(),", "num_devices=jax.local_device_count(),",
             ("tests/test_loop.py::test_throughput_per_device_divides_the_step_s_flops_by_every_"
              "device_of_the_run",)),
    Mutation("the warmup truncates warmup_ratio x decay_steps (0.29 x 100 -> 28 steps)",
             "glmjax/optim.py",
             "warmup = int(round(optim_config.warmup_ratio * decay_steps))",
             "warmup = int(optim_config.warmup_ratio * decay_steps)",
             ("tests/test_optim.py::test_warmup_lasts_warmup_ratio_times_decay_steps_steps_even_"
              "where_the_product_rounds_down",)),
    Mutation("attention dropout keeps p of the probabilities instead of 1 - p",
             "glmjax/model/dense.py",
             "jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)",
             "jax.random.bernoulli(dropout_rng, dropout_rate, probs.shape)",
             ("tests/test_attention.py::test_attention_dropout_drops_its_rate_of_probabilities_"
              "and_is_unbiased_on_average",)),
    Mutation("attention dropout keeps probabilities unscaled (biased)", "glmjax/model/dense.py",
             "probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)",
             "probs = jnp.where(keep, probs, 0.0)",
             ("tests/test_attention.py::test_attention_dropout_drops_its_rate_of_probabilities_"
              "and_is_unbiased_on_average",)),
    Mutation("every scanned layer draws the same dropout mask", "glmjax/model/glm.py",
             'split_rngs={"params": True, "dropout": True}',
             'split_rngs={"params": True, "dropout": False}',
             ("tests/test_model.py::test_each_layer_of_a_scanned_stack_draws_its_own_dropout_"
              "masks",)),
    Mutation("GLM's embedding dropout is off in training", "glmjax/model/glm.py",
             "x = nn.Dropout(cfg.hidden_dropout, deterministic=deterministic)(x)",
             "x = nn.Dropout(cfg.hidden_dropout, deterministic=True)(x)",
             ("tests/test_model.py::test_a_training_forward_drops_embedding_entries_as_glm_s_"
              "embedding_dropout_does",)),
    Mutation("DeepNorm's scaled init goes to the keys, not the values", "glmjax/model/glm.py",
             "stds = jnp.array([qk_std, qk_std, v_std], jnp.float32)",
             "stds = jnp.array([qk_std, v_std, qk_std], jnp.float32)",
             ("tests/test_model.py::test_initial_weights_have_glm_s_scaled_stds[deepnorm]",)),
    Mutation("output projections initialised with init_std / sqrt(L), not sqrt(2L)",
             "glmjax/model/glm.py", "return cfg.init_std / math.sqrt(2.0 * cfg.num_layers)",
             "return cfg.init_std / math.sqrt(cfg.num_layers)",
             ("tests/test_model.py::test_initial_weights_have_glm_s_scaled_stds[pre]",
              "tests/test_model.py::test_initial_weights_have_glm_s_scaled_stds[deepnorm]")),
    Mutation("bfloat16 rope rounds positions past 256 to the input's dtype",
             "glmjax/model/positions.py",
             "angles = positions.astype(jnp.float32)[..., None]",
             "angles = positions.astype(x.dtype)[..., None]",
             ("tests/test_positions.py::test_bfloat16_rope_rotates_by_the_exact_position_at_"
              "long_context",)),
    Mutation("the start-up check compares outputs only, not gradients",
             "glmjax/attention_choice.py", "for a, b in zip(got, expected)]",
             "for a, b in zip(got[:1], expected[:1])]",
             ("tests/test_attention.py::test_the_start_up_check_rejects_a_kernel_with_an_exact_"
              "forward_and_wrong_gradients",)),
    Mutation("mesh.rules may split activation rows unlike the input batches", "glmjax/config.py",
             "             or parallel.batch_rule_problem(parallel.logical_rules(config.mesh)))",
             "             or None)",
             ("tests/test_config_validation.py::test_a_rule_that_splits_activation_rows_unlike_"
              "the_input_batches_is_refused",)),
    Mutation("the objective recipe is checked only once the data is read", "glmjax/config.py",
             "  problem = (pipeline.recipe_problem(data)\n", "  problem = (None\n",
             ("tests/test_config_validation.py::test_bad_field_is_named",
              "tests/test_cli.py::test_aot_gives_status_2_to_every_mistake_in_its_command")),
    Mutation("generate leaves a mistyped flag to absl (two lines, FATAL)", "glmjax/generate.py",
             "  cli.run(main, user_errors=(ValueError, OSError))", "  app.run(main)",
             ("tests/test_cli.py::test_a_mistyped_flag_is_one_line_naming_it_in_every_command",)),
    Mutation("train's join line is left to absl's format (console not set up yet)",
             "glmjax/train.py",
             "  logs.setup_console(0)\n  parallel.initialize_distributed(int(",
             "  parallel.initialize_distributed(int(",
             ("tests/test_host_input.py::test_train_says_it_joins_jax_distributed_in_its_own_"
              "console_format",)),
    Mutation("aot leaves the prefetched batches out of the peak", "glmjax/aot.py",
             "  ahead = (prefetch.DEPTH + 2) * batch_bytes", "  ahead = 0",
             ("tests/test_aot.py::test_the_batches_train_prefetches_count_in_the_peak",)),
    Mutation("aot writes TPU executables it cannot read back into the compilation cache",
             "glmjax/aot.py", '  jax.config.update("jax_enable_compilation_cache", False)\n', "",
             ("tests/test_aot.py::test_the_command_prints_a_json_report_for_a_slice_and_leaves_"
              "the_compilation_cache_alone",)),
    Mutation("a SIGTERM heard before training's own handler is forgotten", "glmjax/loop.py",
             "      self.requested = isinstance(outer, TerminationFlag) and outer.requested\n",
             "",
             ("tests/test_train.py::test_a_sigterm_the_command_heard_before_training_installed_"
              "its_handler_still_counts",)),
    Mutation("create makes a standard slice for a torus shape it does not have", "launch/tpu.py",
             "    if standard.shape != spec.shape:  # gcloud's type names one shape per size",
             "    if False:  # gcloud's type names one shape per size",
             ("tests/test_launch.py::test_a_usage_error_is_one_line_naming_the_flag_with_exit_"
              "status_2",)),
    Mutation("aot leaves a device-snapshot save's copy out of the peak", "glmjax/aot.py",
             "  snapshot = state_bytes if deferred else 0",
             "  snapshot = 0",
             ("tests/test_aot.py::test_a_device_snapshot_save_s_copy_of_the_state_counts_in_the_"
              "peak",)),
    Mutation("a mesh that cannot split the heads passes validation", "glmjax/config.py",
             "    if problem:\n      raise ConfigError(problem)\n", "",
             ("tests/test_config_validation.py::test_a_mesh_that_cannot_split_a_parameter_axis_"
              "is_refused_before_anything_runs",)),
    Mutation("a blank row keeps a span the reference would not draw for its text",
             "glmjax/data/infilling.py",
             "  fewer = spans_for_budget(lengths, blank_budget(mask_ratio, text_len)) < n_spans",
             "  fewer = n_spans < 0",
             ("tests/test_infilling.py::test_span_lengths_follow_truncated_poisson",)),
    Mutation("a hub tokenizer.json turns a literal [PAD] in a document into eos",
             "glmjax/data/tokenizers.py", "    tokenizer.encode_special_tokens = True\n", "",
             ("tests/test_released_tokenizers.py::test_a_literal_mask_in_text_is_not_encoded_as_"
              "a_special_id",)),
    Mutation("a config file's own KeyError is blamed on an override", "glmjax/cli.py",
             "line = None if _raised_in_config_file(error, argv) else _unknown_field(",
             "line = _unknown_field(",
             ("tests/test_cli.py::test_a_key_error_in_the_config_file_s_own_code_keeps_its_"
              "traceback",)),
    Mutation("bench and prepare drop the traceback of a ValueError", "glmjax/cli.py",
             "  path = _keep_traceback(error)", "  path = None",
             ("tests/test_cli.py::test_bench_reports_a_missing_tokenizer_file_in_one_line_and_"
              "keeps_its_traceback",)),
    Mutation("a SIGTERM during a restore lets start-up go on to compile", "glmjax/train.py",
             "  state = _initial_state(config, program, metadata, outputs)\n"
             "  termination.stop_if_requested()\n",
             "  state = _initial_state(config, program, metadata, outputs)\n",
             ("tests/test_train.py::test_sigterm_during_a_restore_ends_start_up_before_the_compile_"
              "and_leaves_the_checkpoints",)),
    Mutation("a SIGTERM during start-up is left to the default action", "glmjax/train.py",
             "  termination = loop.TerminationFlag(enabled=jax.process_count() == 1)",
             "  termination = loop.TerminationFlag(enabled=False)",
             ("tests/test_train.py::test_sigterm_during_a_restore_ends_start_up_before_the_compile_"
              "and_leaves_the_checkpoints",)),
    Mutation("a rerun of train leaves the previous trainer running", "launch/tpu_remote.py",
             "      stop_previous_trainer(args.grace), stop_holders(args.grace),",
             "      stop_holders(args.grace),", ("tests/test_launch.py",)),
    Mutation("init_from's read failing on one host leaves the others waiting",
             "glmjax/checkpoint.py",
             "failure = agreement.agree(agreement.settle(failure, f\"{what} {step}\"))",
             "failure = failure",
             ("tests/test_faults.py::test_a_read_that_fails_on_one_host_only_gives_every_host_"
              "one_verdict",)),
    Mutation("a SLURM job is requeued after a normal end too", "launch/gpu_slurm.sh",
             "if ((warned && status == 0)); then", "if ((status == 0)); then",
             ("tests/test_launch_slurm.py",)),
    Mutation("setup remounts a bucket that is already mounted", "launch/tpu_remote.py",
             "f'if ! mountpoint -q {point}; then", "f'if true; then",
             ("tests/test_launch_tpu_setup.py",)),
    Mutation("generate lets top_k cut a greedy decode", "glmjax/generate.py",
             "(sampling.temperature == 0 and (sampling.top_k > 0 or sampling.top_p < 1),",
             "(False,", ("tests/test_generate.py",)),
    Mutation("the byte tokenizer ignores a tokenizer_path", "glmjax/data/tokenizers.py",
             "    if path:  # a path with the byte kind", "    if False:  # a path with the byte kind",
             ("tests/test_tokenizers.py",)),
    Mutation("a host whose checkpoint read failed skips the barrier the others wait in",
             "glmjax/restore_agreement.py",
             'if jax.process_count() == 1 or (failure and failure[0] == "peer"):', "if True:",
             ("tests/test_faults.py::test_a_read_that_fails_on_one_host_only_gives_every_host_"
              "one_verdict",)),
    Mutation("a bucket workdir's log is not copied at exit", "glmjax/logs.py",
             "    self._copy_now()  # the last lines", "    pass  # the last lines",
             ("tests/test_logs.py",)),
    Mutation("a resume may switch the dropout generator", "glmjax/config.py",
             'TRAJECTORY_FIELDS = ("train.dropout_rng",)', "TRAJECTORY_FIELDS = ()",
             ("tests/test_faults.py::test_a_resume_that_switches_the_dropout_generator_is_"
              "refused_naming_it",)),
    Mutation("an import without a tokenizer keeps the byte default", "glmjax/convert/__init__.py",
             "    config.data.tokenizer_path = pretrained.NO_TOKENIZER", "    pass",
             ("tests/test_convert.py",)),
    Mutation("config mistakes reach absl's own parser (a traceback)", "glmjax/cli.py",
             "app.run(checked_main, flags_parser=lambda argv: parse_flags(argv, status))",
             "app.run(checked_main)",
             ("tests/test_cli.py",)),
    Mutation("a corpus too big for memory is read on past the limit", "glmjax/data/sources.py",
             "    if limit and held > limit:", "    if limit and held > 100 * limit:",
             ("tests/test_sources.py",)),
    Mutation("the stored size is not checked before tokenizing", "glmjax/data/sources.py",
             "if limit and stored // 8 * dtype.itemsize > limit:", "if False:",
             ("tests/test_sources.py",)),
    Mutation("a sliced TFDS split counts the whole split's bytes", "glmjax/data/tfds_source.py",
             "whole, part = splits[base], splits[name.strip()]",
             "whole, part = splits[base], splits[base]", ("tests/test_sources.py",)),
    Mutation("a process's memory budget ignores the other tasks on its node",
             "glmjax/data/sources.py", "int(tasks.group()) if tasks else 1", "1",
             ("tests/test_sources.py",)),
    Mutation("the README names a config field that does not exist", "README.md",
             "then train with `--config.data.source=prepared --config.data.prepared_dir=",
             "then train with `--config.data.source=prepared --config.data.prepare_dir=",
             ("tests/test_docs.py",)),
    Mutation("a choice field's comment leaves out a choice", "glmjax/config.py",
             "# auto | xla | cudnn | tokamax | splash | splash_dynamic",
             "# auto | xla | cudnn | tokamax | splash", ("tests/test_code_shape.py",)),
    Mutation("loss scored on the inputs, not the targets", "glmjax/step.py",
             'scored = loss_lib.part_b_cross_entropy(hidden, embeddings, batch["targets"],',
             'scored = loss_lib.part_b_cross_entropy(hidden, embeddings, batch["tokens"],',
             ("tests/test_objective.py",)),
    Mutation("Part B loss drops the last, partial chunk", "glmjax/loss.py",
             "num_chunks = (count + chunk - 1) // chunk", "num_chunks = count // chunk",
             ("tests/test_loss.py",)),
    Mutation("target logit read from this vocabulary shard only", "glmjax/loss.py",
             "[jnp.sum(jnp.exp(logits - top[:, None]), axis=-1), jnp.where(owned, picked, 0.0)]))",
             "[jnp.sum(jnp.exp(logits - top[:, None]), axis=-1), jnp.where(owned, picked, 0.0)]))"
             "\n    target_logit = jnp.where(owned, picked, 0.0)", ("tests/test_loss.py",)),
    Mutation("loss averaged over rows, not Part B tokens", "glmjax/step.py",
             'weight = jnp.maximum(sums["weight"], 1.0)',
             'weight = jnp.maximum(jnp.float32(batch["sep"].shape[0]), 1.0)',
             ("tests/test_objective.py",)),
    Mutation("gradients x4 in the accumulation path", "glmjax/step.py",
             "return jax.tree.map(jnp.add, carry, (grads, sums)), None",
             "return jax.tree.map(jnp.add, carry, (jax.tree.map(lambda g: 4 * g, grads), sums)), "
             "None", ("tests/test_objective.py",)),
    Mutation("learning rate read one step late", "glmjax/step.py",
             "learning_rate = schedule(state.step)", "learning_rate = schedule(state.step + 1)",
             ("tests/test_objective.py",)),
    Mutation("weight decay on LayerNorm scales", "glmjax/optim.py",
             'return not (leaf_name == "scale" or leaf_name.endswith("bias"))',
             'return not leaf_name.endswith("bias")', ("tests/test_objective.py",)),
    Mutation("weight decay on biases", "glmjax/optim.py",
             'return not (leaf_name == "scale" or leaf_name.endswith("bias"))',
             'return leaf_name != "scale"', ("tests/test_objective.py",)),
    Mutation("dropout rng not folded with the step", "glmjax/step.py",
             "rng = jax.random.fold_in(jax.random.key(seed, impl=dropout_rng), state.step)",
             "rng = jax.random.key(seed, impl=dropout_rng)", ("tests/test_train_step.py",)),
    Mutation("micro-batches share one dropout rng", "glmjax/step.py",
             "grad_fn(params, micro_batch, jax.random.fold_in(rng, index))",
             "grad_fn(params, micro_batch, rng)", ("tests/test_train_step.py",)),
    Mutation("[dBLOCK] also replaces the [sop] of each span", "glmjax/data/masking.py",
             "span_token = np.asarray(block_position_ids) >= 2",
             "span_token = np.asarray(block_position_ids) >= 1", ("tests/test_recipe.py",)),
    Mutation("single-span rows keep every drawn span", "glmjax/data/pipeline.py",
             "blank_spans[single], blank_len[single] = 1, T - 2",
             "blank_len[single] = T - 2", ("tests/test_recipe.py",)),
    Mutation("spans left in order in Part B", "glmjax/data/pipeline.py",
             "infilling.random_order(rng, plan.n_spans, plan.width, self.shuffle_spans)",
             "infilling.random_order(rng, plan.n_spans, plan.width, False)",
             ("tests/test_pipeline.py", "tests/test_infilling.py")),
    Mutation("Part B sees one token ahead (mask off by one)", "glmjax/model/mask.py",
             "jnp.arange(seq_len, dtype=jnp.int32)[None, :] + 1,",
             "jnp.arange(seq_len, dtype=jnp.int32)[None, :] + 2,",
             ("tests/test_model.py", "tests/test_attention.py")),
    Mutation("block positions start at 0 (off by one)", "glmjax/data/infilling.py",
             "block = col - (packed & 0xFFFFFFFF).astype(np.int32) + 1",
             "block = col - (packed & 0xFFFFFFFF).astype(np.int32)",
             ("tests/test_infilling.py", "tests/test_pipeline.py")),
    Mutation("imported QKV split per head instead of in [Q | K | V] thirds",
             "glmjax/convert/mapping.py",
             "return value.T.reshape(hidden, 3, heads, hidden // heads)",
             "return value.T.reshape(hidden, heads, 3, hidden // heads).transpose(0, 2, 1, 3)",
             ("tests/test_convert.py",)),
    Mutation("model-parallel QKV parts joined whole instead of third by third",
             "glmjax/convert/original.py",
             "merged[key] = np.concatenate([third[i] for i in range(3) for third in thirds], "
             "axis=0)", "merged[key] = np.concatenate(pieces, axis=0)", ("tests/test_convert.py",)),
    Mutation("generated tokens' block positions start at 0", "glmjax/decoding.py",
             "token[:, None], position, (count + 1)[:, None],",
             "token[:, None], position, count[:, None],", ("tests/test_generate.py",)),
    Mutation("the padding after a shorter prompt is attended", "glmjax/decoding.py",
             "visible = jnp.arange(slots)[None, :] < prompts.length[:, None]",
             "visible = jnp.arange(slots)[None, :] < part_a", ("tests/test_generate.py",)),
    Mutation("cloze Part B positions one past the [MASK]", "glmjax/cloze.py",
             "positions[sep:sep + n + 1] = mask_at", "positions[sep:sep + n + 1] = mask_at + 1",
             ("tests/test_evaluate.py",)),
    Mutation("held-out batches drawn with the training seed", "glmjax/held_out.py",
             "seed=seed + 1)", "seed=seed)", ("tests/test_evaluate.py",)),
    Mutation("an explicitly named kernel is never checked on a GPU or TPU",
             "glmjax/attention_choice.py", 'check_explicit = platform in ("gpu", "tpu")',
             "check_explicit = False", ("tests/test_attention.py",)),
    Mutation("hosts check an explicitly named kernel each on their own",
             "glmjax/attention_choice.py",
             'if jax.process_count() == 1 or name == "xla":',
             'if jax.process_count() == 1 or name != "auto":', ("tests/test_host_input.py",)),
    Mutation("tokamax output left untagged (remat reruns the attention forward)",
             "glmjax/model/gpu_kernels.py",
             "out, statistics = checkpoint_name((out, statistics), NAME)",
             "statistics = checkpoint_name(statistics, NAME)",
             ("tests/test_gpu_kernels.py", "tests/test_model.py")),
    Mutation("cuDNN output left untagged (remat reruns its forward)",
             "glmjax/model/gpu_kernels.py", "return tag(out), jax.tree.map(tag, backward)",
             "return out, jax.tree.map(tag, backward)", ("tests/test_gpu_kernels.py",)),
    Mutation("cuDNN residuals tagged with copies of q, k and v", "glmjax/model/gpu_kernels.py",
             "if not floating or x.size == 0 or any(x is y for y in (q, k, v)):",
             "if not floating or x.size == 0:", ("tests/test_gpu_kernels.py",)),
    Mutation("a fused kernel's output saved twice (context tagged too)", "glmjax/model/glm.py",
             "if self.decode or self.implementation not in model_config.WITH_NAMED_RESIDUALS:",
             "if True:", ("tests/test_model.py",)),
    # Found by a mutation hunt (2026-12-02): each survived the suite until its test was added.
    Mutation("step and row keys added without mixing (rows repeat shifted by a step)",
             "glmjax/data/infilling.py",
             "base = mix64(base + np.array([step & _U64], np.uint64) * GAMMA)",
             "base = base + np.array([step & _U64], np.uint64) * GAMMA",
             ("tests/test_infilling.py",)),
    Mutation("blank budget rounded up instead of truncated as the original",
             "glmjax/data/infilling.py",
             "return (mask_ratio * np.asarray(text_len, dtype=np.float64)).astype(np.int64)",
             "return np.ceil(mask_ratio * np.asarray(text_len, dtype=np.float64)).astype(np.int64)",
             ("tests/test_infilling.py",)),
    Mutation("one sampling key for every generated token", "glmjax/decoding.py",
             "keys = jax.vmap(lambda key: jax.random.fold_in(key, s))(prompts.keys)",
             "keys = prompts.keys", ("tests/test_generate.py",)),
    Mutation("top_k keeps only the likeliest token", "glmjax/decoding.py",
             "kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]",
             "kth = jax.lax.top_k(logits, sampling.top_k)[0][:, :1]", ("tests/test_generate.py",)),
    Mutation("temperature multiplies the logits", "glmjax/decoding.py",
             "logits = logits / sampling.temperature", "logits = logits * sampling.temperature",
             ("tests/test_generate.py",)),
    Mutation("generated token written one cache slot early", "glmjax/decoding.py",
             "    slot = part_a + s\n", "    slot = part_a + s - 1\n",
             ("tests/test_generate.py",)),
    Mutation("every batch of prompts after the first reuses the first one's keys",
             "glmjax/generate.py",
             "batch = _batch(group, rows, config.max_position, keys[first:first + rows])",
             "batch = _batch(group, rows, config.max_position, keys[:rows])",
             ("tests/test_generate.py",)),
    Mutation("a blank cannot end at eos", "glmjax/generate.py",
             "allowed[[specials.eop, specials.eos]] = True", "allowed[specials.eop] = True",
             ("tests/test_generate.py",)),
    Mutation("another run's parameters read from its oldest checkpoint", "glmjax/checkpoint.py",
             "    step = steps[-1]\n", "    step = steps[0]\n", ("tests/test_checkpoint.py",)),
    Mutation("the last step not logged when it is off the log_every grid", "glmjax/loop.py",
             "if step_done % self.config.train.log_every and step_done != self.total_steps:",
             "if step_done % self.config.train.log_every:",
             ("tests/test_loop.py::test_the_last_step_is_logged_when_the_run_ends_off_the_log_"
              "every_grid",)),
    Mutation("the attention start-up check run at a fixed sequence length",
             "glmjax/attention_choice.py", "seq_len=int(config.data.seq_len),", "seq_len=256,",
             ("tests/test_config_validation.py",)),
    Mutation("a long run's start-up check at its full length (float32 reference O(T^2))",
             "glmjax/attention_choice.py", "seq_len=check_length(seq_len)", "seq_len=seq_len",
             ("tests/test_config_validation.py",)),
    Mutation("auto runs splash's check off its block instead of skipping it",
             "glmjax/attention_choice.py", "    if seq_len % multiple:\n      log.info(",
             "    if False:\n      log.info(", ("tests/test_config_validation.py",)),
    Mutation("a mistyped config argument ignored", "glmjax/config.py",
             "unknown = sorted(words - set(allowed))", "unknown = []",
             ("tests/test_config_validation.py",)),
    Mutation("evaluate never joins the multi-host job", "glmjax/evaluate.py",
             "parallel.initialize_distributed(join_timeout_s(workdir))",
             "None", ("tests/test_evaluate.py",)),
    Mutation("a deferred save keeps the state the next step donates, not a copy",
             "glmjax/checkpoint.py", "self._deferred = (step, copy, summary, metadata)",
             "self._deferred = (step, state, summary, metadata)", ("tests/test_checkpoint.py",)),
    Mutation("a deferred save left by a stopped loop is dropped", "glmjax/checkpoint.py",
             "          self.write_deferred()\n          self.wait()\n        except",
             "          pass\n        except",
             ("tests/test_checkpoint.py",)),
    Mutation("a preemption save is deferred, so the exiting run never writes it",
             "glmjax/checkpoint.py", "    if defer and not preempted:", "    if defer:",
             ("tests/test_checkpoint.py",)),
    Mutation("the loop leaves a device snapshot until the next save", "glmjax/train.py",
             "      checkpointer.write_deferred()  # the last step's", "      # the last step's",
             ("tests/test_faults.py",)),
    Mutation("generate picks and checks a kernel its decoding never calls", "glmjax/generate.py",
             'pretrained.load(args.workdir, attention="xla")', "pretrained.load(args.workdir)",
             ("tests/test_generate.py",)),
    Mutation("evaluate's hosts wait the default time, not the run's", "glmjax/evaluate.py",
             "return int(pretrained.read_config(workdir, warn=False).train.distributed_timeout_s)",
             "return int(config_lib.train_defaults().distributed_timeout_s)",
             ("tests/test_evaluate.py",)),
)


def _copy_project(destination: str) -> None:
  files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
  for name in files:
    if os.path.isfile(os.path.join(REPO, name)):
      os.makedirs(os.path.dirname(os.path.join(destination, name)), exist_ok=True)
      shutil.copy2(os.path.join(REPO, name), os.path.join(destination, name))


def plant(mutation: Mutation, root: str) -> None:
  path = os.path.join(root, mutation.path)
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if text.count(mutation.old) != 1:
    raise SystemExit(f"{mutation.name}: {mutation.path} has {text.count(mutation.old)} copies "
                     f"of the text to replace (need exactly 1); update tests/mutations.py.")
  with open(path, "w", encoding="utf-8") as f:
    f.write(text.replace(mutation.old, mutation.new))


def _pytest(root: str, targets: list[str]) -> int:
  """pytest's exit status: 0 passed, 1 some test failed; 2-5 (errors, no tests) are not a catch."""
  try:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           *targets], cwd=root, capture_output=True, text=True, check=False,
                          timeout=TIMEOUT_S).returncode
  except subprocess.TimeoutExpired:
    return -1


def caught(mutation: Mutation | None, targets: list[str]) -> tuple[int, float]:
  """(pytest's exit status, seconds) on a copy with `mutation` planted (None: unmutated)."""
  with tempfile.TemporaryDirectory(prefix="glmjax-mutant-") as root:
    _copy_project(root)
    if mutation is not None:
      plant(mutation, root)
    started = time.perf_counter()
    return _pytest(root, targets), time.perf_counter() - started


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", default="", help="comma-separated parts of mutation names")
  parser.add_argument("--full", action="store_true", help="run the whole suite per mutation")
  parser.add_argument("--list", action="store_true", help="list the mutations and stop")
  args = parser.parse_args(argv)
  chosen = [m for m in MUTATIONS
            if not args.only or any(part in m.name for part in args.only.split(","))]
  if args.list:
    for mutation in chosen:
      print(f"{mutation.name}  ({mutation.path}; caught by {', '.join(mutation.tests)})")
    return 0
  # The targets must pass as they are, or a failure would say nothing about a planted bug.
  targets = sorted({test for mutation in chosen for test in mutation.tests})
  status, seconds = caught(None, ["tests"] if args.full else targets)
  if status != 0:
    print(f"the tests fail (status {status}) with no bug planted: fix them first")
    return 2
  print(f"unmutated: the targets pass ({seconds:.0f} s)", flush=True)
  survived = []
  for mutation in chosen:
    status, seconds = caught(mutation, ["tests"] if args.full else list(mutation.tests))
    verdict = "caught  " if status == 1 else ("SURVIVED" if status == 0 else f"ERROR {status}")
    print(f"{verdict} {seconds:6.0f} s  {mutation.name}", flush=True)
    if status != 1:  # only a failing test counts; a crash or a timeout is not a catch
      survived.append(mutation.name)
  print(f"{len(chosen) - len(survived)} of {len(chosen)} planted bugs caught"
        + (f"; not caught: {', '.join(survived)}" if survived else ""))
  return 1 if survived else 0


if __name__ == "__main__":
  sys.exit(main())
