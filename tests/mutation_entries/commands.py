"""Planted bugs in configs and their validation, the commands, aot, benches and launchers."""
from mutation_entries import Mutation

_SUGGESTING = ("tests/test_cli.py::test_an_unknown_flag_close_to_one_the_command_has_is_one_line_"
               "suggesting_it",)

_P = "tests/test_prompts_and_sampling.py::"

_CONVERT_REFUSALS = "tests/test_convert_refusals.py::"
_CONVERT_TOKENIZER = "tests/test_convert_tokenizer.py::"
_VALID = "tests/test_config_validation.py::"

ENTRIES = (
    Mutation("aot advises remat and micro-batches when the state alone does not fit",
             "glmjax/memory.py", "  if state_bytes and hbm and state_bytes >= hbm:",
             "  if False:",
             ("tests/test_aot.py::test_a_config_whose_state_alone_does_not_fit_is_told_only_to_"
              "shard_it_wider",)),
    Mutation("aot's compile-time refusal gives its advice without the state's size",
             "glmjax/aot.py", "    advice = memory_lib.fit_advice(config, **state)\n",
             "    advice = memory_lib.fit_advice(config)\n",
             ("tests/test_aot.py::test_a_config_whose_state_alone_does_not_fit_is_told_only_to_"
              "shard_it_wider",)),
    # Paths that cannot work, refused by their flag before any loading.
    Mutation("generate reads a missing --input only after loading the model", "glmjax/generate.py",
             "  if input_path and not os.path.isfile(input_path):", "  if False:",
             ("tests/test_generate_command.py::test_a_prompt_file_or_output_path_that_cannot_work_is_one_"
              "line_before_the_model_loads",)),
    Mutation("generate writes --output only after filling every prompt", "glmjax/generate.py",
             "    check_paths(args.input, args.output)  # before", "    pass  # before",
             ("tests/test_generate_command.py::test_a_prompt_file_or_output_path_that_cannot_work_is_one_"
              "line_before_the_model_loads",)),
    Mutation("convert takes an --out that is a file", "glmjax/convert/__init__.py",
             "  if os.path.exists(out) and not os.path.isdir(out):", "  if False:",
             ("tests/test_convert_refusals.py::test_an_out_that_is_a_file_or_a_bucket_is_one_line_"
              "before_anything_is_read",)),
    Mutation("prepare takes an --out that is a file", "glmjax/data/prepare.py",
             "  if os.path.exists(out_dir) and not os.path.isdir(out_dir):", "  if False:",
             ("tests/test_prepare.py::test_prepared_errors_name_the_fix",)),
    Mutation("the sweep's best on a tie in tokens/s is the trial needing more memory",
             "glmjax/bench/sweep.py",
             '-(t["compiled_memory_bytes"] or 0)', '(t["compiled_memory_bytes"] or 0)',
             ("tests/test_bench.py::test_the_sweep_s_best_is_the_fastest_trial_that_ran_and_on_"
              "a_tie_the_smaller_one",)),
    Mutation("generate may sample a [MASK] that lies inside the word pieces (BERT vocab)",
             "glmjax/generate.py",
             "allowed[[specials.cls, specials.mask, specials.smask",
             "allowed[[specials.cls, specials.smask",
             (_P + "test_the_sampler_may_give_the_vocabulary_s_tokens_eop_and_"
              "eos_and_no_other_special",)),
    Mutation("a full 4x4x4 cube (v5p-128, v4-128) is described without wraparound links",
             "glmjax/topology.py",
             "self.slice_chips >= 64", "self.slice_chips > 64",
             ("tests/test_topology.py::test_a_full_4x4x4_cube_and_larger_3d_slices_have_wraparound_"
              "links",)),
    Mutation("mesh.rules may split activation rows unlike the input batches", "glmjax/config.py",
             "pipeline.recipe_problem(data) or parallel.batch_rule_problem(rules)",
             "pipeline.recipe_problem(data) or None",
             ("tests/test_config_validation.py::test_a_rule_that_splits_activation_rows_unlike_"
              "the_input_batches_is_refused",)),
    Mutation("the objective recipe is checked only once the data is read", "glmjax/config.py",
             "  problem = pipeline.recipe_problem(data) or", "  problem = None or",
             ("tests/test_config_validation.py::test_bad_field_is_named",
              "tests/test_cli.py::test_aot_gives_status_2_to_every_mistake_in_its_command")),
    Mutation("generate leaves a mistyped flag to absl (two lines, FATAL)", "glmjax/generate.py",
             "  cli.run(main, user_errors=(ValueError, OSError))", "  app.run(main)",
             ("tests/test_cli.py::test_a_mistyped_flag_is_one_line_naming_it_in_every_command",)),
    Mutation("aot leaves the prefetched batches out of the peak", "glmjax/aot.py",
             "  ahead = (prefetch.DEPTH + 2) * batch_bytes", "  ahead = 0",
             ("tests/test_aot.py::test_the_batches_train_prefetches_count_in_the_peak",)),
    Mutation("aot writes TPU executables it cannot read back into the compilation cache",
             "glmjax/aot.py", '  jax.config.update("jax_enable_compilation_cache", False)\n', "",
             ("tests/test_aot.py::test_the_command_prints_a_json_report_for_a_slice_and_leaves_"
              "the_compilation_cache_alone",)),
    Mutation("create makes a standard slice for a torus shape it does not have", "launch/tpu_flags.py",
             "    if standard.shape != spec.shape:  # gcloud's type names one shape per size",
             "    if False:  # gcloud's type names one shape per size",
             ("tests/test_launch.py::test_a_usage_error_is_one_line_naming_the_flag_with_exit_"
              "status_2",)),
    Mutation("aot leaves a device-snapshot save's copy out of an evaluation's peak",
             "glmjax/aot.py",
             "  total = max(memory_lib.program_bytes(memory), eval_peak) + snapshot + resident",
             "  total = max(memory_lib.program_bytes(memory) + snapshot, eval_peak) + resident",
             ("tests/test_aot.py::test_a_device_snapshot_s_copy_counts_beside_an_evaluation_"
              "too",)),
    Mutation("aot leaves a device-snapshot save's copy out of the peak", "glmjax/aot.py",
             "  snapshot = state_bytes if deferred else 0",
             "  snapshot = 0",
             ("tests/test_aot.py::test_a_device_snapshot_save_s_copy_of_the_state_counts_in_the_"
              "peak",)),
    Mutation("a mesh that cannot split the heads passes validation", "glmjax/config.py",
             "    if problem:\n      raise ConfigError(problem)\n", "",
             ("tests/test_config_validation.py::test_a_mesh_that_cannot_split_a_parameter_axis_"
              "is_refused_before_anything_runs",)),
    Mutation("a config file's own KeyError is blamed on an override", "glmjax/cli.py",
             "line = None if _raised_in_config_file(error, argv) else _unknown_field(",
             "line = _unknown_field(",
             ("tests/test_cli.py::test_a_key_error_in_the_config_file_s_own_code_keeps_its_"
              "traceback",)),
    Mutation("bench and prepare drop the traceback of a ValueError", "glmjax/logs.py",
             "  path = _keep_traceback(error)", "  path = None",
             ("tests/test_cli.py::test_bench_reports_a_missing_tokenizer_file_in_one_line_and_"
              "keeps_its_traceback",)),
    Mutation("a rerun of train leaves the previous trainer running", "launch/tpu_remote.py",
             "      stop_previous_trainer(args.grace), stop_holders(args.grace),",
             "      stop_holders(args.grace),",
             ("tests/test_launch.py", "tests/test_launch_on_workers.py::test_rerunning_train_stops_"
                                      "the_trainer_it_started_before")),
    Mutation("a SLURM job is requeued after a normal end too", "launch/gpu_slurm.sh",
             "if ((warned && status == 0)); then", "if ((status == 0)); then",
             ("tests/test_launch_slurm.py",)),
    Mutation("setup remounts a bucket that is already mounted", "launch/tpu_remote.py",
             "f'if ! mountpoint -q {point}; then", "f'if true; then",
             ("tests/test_launch_tpu_setup.py",)),
    Mutation("generate lets top_k cut a greedy decode", "glmjax/generate.py",
             "(sampling.temperature == 0 and (sampling.top_k > 0 or sampling.top_p < 1),",
             "(False,", ("tests/test_generate.py",)),
    Mutation("a cut library line says train.log has the rest before any log file is open",
             "glmjax/logs.py",
             """(f" [...; in full in {files[0]}]" if files else " [...]")""",
             '" [...; in full in the run\'s train.log]"',
             ("tests/test_logs.py::test_a_library_record_longer_than_400_characters_is_cut_on_the_"
              "console_naming_the_log_file",)),
    Mutation("a bucket workdir's log is not copied at exit", "glmjax/run_log.py",
             "    self._copy_now()  # the last lines", "    pass  # the last lines",
             ("tests/test_logs.py",)),
    Mutation("a resume may switch the dropout generator", "glmjax/config.py",
             'TRAJECTORY_FIELDS = ("train.dropout_rng",)', "TRAJECTORY_FIELDS = ()",
             ("tests/test_faults.py::test_a_resume_that_switches_the_dropout_generator_is_"
              "refused_naming_it",)),
    Mutation("config mistakes reach absl's own parser (a traceback)", "glmjax/cli.py",
             "app.run(checked_main, flags_parser=lambda argv: parse_flags(argv, status))",
             "app.run(checked_main)",
             ("tests/test_cli.py",)),
    Mutation("the README names a config field that does not exist", "README.md",
             "then train with `--config.data.source=prepared --config.data.prepared_dir=",
             "then train with `--config.data.source=prepared --config.data.prepare_dir=",
             ("tests/test_docs.py",)),
    Mutation("a choice field's comment leaves out a choice", "glmjax/model/model_config.py",
             "# auto | xla | cudnn | tokamax | splash | splash_dynamic",
             "# auto | xla | cudnn | tokamax | splash", ("tests/test_code_shape.py",)),
    Mutation("a model field loses its one-line comment", "glmjax/model/model_config.py",
             "  remat: str = \"none\"                 # none | minimal | full",
             "  remat: str = \"none\"", ("tests/test_code_shape.py",)),
    Mutation("config.model leaves out one of ModelConfig's fields", "glmjax/model/model_config.py",
             '  fields.pop("target_platform")',
             '  fields.pop("target_platform")\n  fields.pop("scan_layers")',
             ("tests/test_code_shape.py::test_every_config_field_has_a_one_line_comment",)),
    Mutation("every batch of prompts after the first reuses the first one's keys",
             "glmjax/generate.py",
             "batch = _batch(group, rows, keys[first:first + rows])",
             "batch = _batch(group, rows, keys[:rows])",
             ("tests/test_generate.py",)),
    Mutation("a blank cannot end at eos", "glmjax/generate.py",
             "allowed[[specials.eop, specials.eos]] = True", "allowed[specials.eop] = True",
             ("tests/test_prompts_and_sampling.py::test_a_blank_may_end_at_eos_as_well_as_at_"
              "eop",)),
    Mutation("a line of the package runs past 100 characters", "glmjax/xla_options.py",
             "# platform -> {XLA DebugOptions field: value}\n",
             "# platform -> {XLA DebugOptions field: value}, the options glmjax sets on the programs "
             "it compiles for that platform\n",
             ("tests/test_code_shape.py::test_no_python_line_of_the_package_configs_or_launch_is_"
              "wider_than_100_characters",)),
    Mutation("a line of a config runs past 100 characters", "configs/large.py",
             "num_layers=24, num_heads=16)\n",
             "num_layers=24, num_heads=16)  # GLM-Large's shape, as THUDM/GLM's scripts give it\n",
             ("tests/test_code_shape.py::test_no_python_line_of_the_package_configs_or_launch_is_"
              "wider_than_100_characters",)),
    Mutation("a mistyped config argument ignored", "glmjax/recipes.py",
             "unknown = sorted(words - set(allowed))", "unknown = []",
             ("tests/test_config_validation.py", "tests/test_config_attention.py",)),
    Mutation("evaluate never joins the multi-host job", "glmjax/evaluate.py",
             "distributed.initialize(join_timeout_s(workdir))",
             "None", ("tests/test_evaluate_command.py",)),
    Mutation("generate picks and checks a kernel its decoding never calls", "glmjax/generate.py",
             'pretrained.load(args.workdir, attention="xla")', "pretrained.load(args.workdir)",
             ("tests/test_generate.py",)),
    Mutation("evaluate's hosts wait the default time, not the run's", "glmjax/evaluate.py",
             "return int(pretrained.read_config(workdir, warn=False).train.distributed_timeout_s)",
             "return int(config_lib.train_defaults().distributed_timeout_s)",
             ("tests/test_evaluate_command.py",)),
    # Using a model: import, export, pretrained workdirs, evaluate, cloze, generate, attention.
    Mutation("--num_heads loses to a config.json that states other heads",
             "glmjax/convert/__init__.py",
             "heads = num_heads or recorded", "heads = recorded or num_heads",
             ("tests/test_convert.py::test_num_heads_given_to_the_import_wins_over_a_config_json_"
              "that_misstates_them",)),
    Mutation("the imported hidden dropout is config.json's attention dropout",
             "glmjax/convert/__init__.py",
             'dropout = dict(hidden_dropout=hf.get("output_dropout_prob"),',
             'dropout = dict(hidden_dropout=hf.get("attention_dropout_prob"),',
             ("tests/test_convert_export.py::test_dropout_rates_come_from_config_json_and_go_back_"
              "into_the_exported_one",)),
    Mutation("an import whose heads do not divide the hidden size is not refused",
             "glmjax/convert/__init__.py", "if heads < 1 or hidden % heads:", "if heads < 1:",
             (_CONVERT_REFUSALS + "test_a_head_count_that_does_not_divide_the_hidden_size_is_"
              "refused_naming_the_flag",)),
    Mutation("the tokenizer inside a Hugging Face folder is not stored by the import",
             "glmjax/convert/__init__.py",
             'and released_tokenizers.holds_tokenizer(folder) else "")', 'and False else "")',
             (_CONVERT_TOKENIZER + "test_the_tokenizer_in_a_hugging_face_folder_is_stored_"
              "without_naming_it",)),
    Mutation("a sharded import's index is exported beside the single weights file",
             "glmjax/convert/__init__.py", '".pt", ".index.json"))]', '".pt"))]',
             ("tests/test_convert_export.py::test_a_sharded_import_exports_one_file_that_the_"
              "safetensors_library_and_glmjax_read",)),
    Mutation("a run continued from an import exports without the import's dtypes and names",
             "glmjax/convert/__init__.py", "    workdir = parent\n", '    return ""\n',
             ("tests/test_convert_export.py::test_a_run_continued_from_an_import_exports_in_the_"
              "import_s_dtypes_names_and_files",)),
    Mutation("export reads an unscanned workdir's layers as if stacked",
             "glmjax/convert/__init__.py", "  if not model_config.scan_layers:\n",
             "  if False:\n",
             ("tests/test_convert_export.py::test_a_workdir_with_unscanned_layers_exports_the_same_"
              "tensors",)),
    Mutation("export lets through a LayerNorm eps the HF GLM code does not compute",
             "glmjax/convert/__init__.py",
             '"ffn": (4 * model_config.hidden_size,), "layernorm_eps": (1e-5,),',
             '"ffn": (4 * model_config.hidden_size,),',
             (_CONVERT_REFUSALS + "test_export_refuses_a_model_that_the_hugging_face_glm_code_"
              "would_compute_differently",)),
    Mutation("export writes the hidden dropout as the attention dropout",
             "glmjax/convert/__init__.py",
             "attention_dropout_prob=model_config.attention_dropout)",
             "attention_dropout_prob=model_config.hidden_dropout)",
             ("tests/test_convert_export.py::test_dropout_rates_come_from_config_json_and_go_back_"
              "into_the_exported_one",)),
    Mutation("a model-parallel checkpoint missing rank 0 is read from the other ranks",
             "glmjax/convert/original.py", "if ranks != list(range(len(files))):", "if False:",
             (_CONVERT_REFUSALS + "test_a_model_parallel_checkpoint_missing_a_rank_is_refused_"
              "naming_the_parts",)),
    Mutation("a bfloat16 pytorch_model.bin cannot be imported", "glmjax/convert/original.py",
             "if value.dtype == torch.bfloat16:", "if False:",
             ("tests/test_convert.py::test_import_writes_a_workdir_that_loads_and_exports_bit_"
              "exactly[dtype2-bin]",)),
    Mutation("a missing shard is a bare file error, not named with the fix",
             "glmjax/convert/original.py", "if not files or missing:", "if not files:",
             (_CONVERT_REFUSALS + "test_a_sharded_checkpoint_missing_a_shard_names_the_file_"
              "to_download",)),
    Mutation("exported safetensors lack the format metadata transformers requires",
             "glmjax/convert/safetensors_io.py", '  if metadata:\n    header["__metadata__"]',
             '  if False:\n    header["__metadata__"]',
             ("tests/test_convert_export.py::test_a_sharded_import_exports_one_file_that_the_"
              "safetensors_library_and_glmjax_read",)),
    Mutation("a workdir saved on a larger slice loads only replicated on one host", "glmjax/pretrained.py",
             "fallback.update(data=count // fsdp, fsdp=fsdp, tensor=1)",
             "fallback.update(data=count, fsdp=1, tensor=1)",
             ("tests/test_convert.py::test_a_workdir_saved_on_a_larger_slice_loads_over_this_"
              "host_s_devices",)),
    Mutation("evaluate splits --data_source=files:PATH at a comma of a file's name",
             "glmjax/evaluate.py",
             'overrides[field] = (value,) if kind == "files" else value',
             'overrides[field] = tuple(value.split(",")) if kind == "files" else value',
             ("tests/test_evaluate_command.py::test_the_data_source_and_batch_size_flags_set_the_"
              "fields_they_name",)),
    Mutation("evaluate accepts a --data_source missing its path, or with one it takes none",
             "glmjax/evaluate.py",
             "if kind not in sources.SOURCES or (field is None) != (not value):",
             "if kind not in sources.SOURCES:",
             ("tests/test_evaluate_command.py::test_a_data_source_or_batch_size_flag_that_names_"
              "nothing_usable_is_refused",)),
    Mutation("evaluate accepts --batch_size=0", "glmjax/evaluate.py",
             "    if batch_size < 1:", "    if batch_size < 0:",
             ("tests/test_evaluate_command.py::test_a_data_source_or_batch_size_flag_that_names_"
              "nothing_usable_is_refused",)),
    Mutation("a cloze line with a blank answer is scored (always right)", "glmjax/cloze.py",
             "    if not record[\"answer\"].strip():\n"
             "      fail(number, 'the \"answer\" is empty')\n",
             "",
             ("tests/test_cloze.py::test_a_bad_cloze_file_is_named_with_the_line",)),
    Mutation("a cloze answer that fills the whole row is refused", "glmjax/cloze.py",
             "    if room < 0:", "    if room <= 0:",
             ("tests/test_cloze.py::test_an_answer_that_fills_the_whole_row_is_scored_with_no_"
              "context_and_a_longer_one_refused",)),
    Mutation("the cloze report sums the answer log-likelihoods instead of averaging them",
             "glmjax/evaluate.py", '"mean_log_likelihood": float(log_likelihood.mean())',
             '"mean_log_likelihood": float(log_likelihood.sum())',
             ("tests/test_cloze.py::test_the_cloze_report_gives_the_mean_answer_log_"
              "likelihood_and_the_count_right",)),
    Mutation("a blank at the start of the text keeps its leading space", "glmjax/generate.py",
             "if not text or text[-1].isspace():", "if text[-1:].isspace():",
             (_P + "test_a_filled_blank_drops_its_leading_space_only_at_the_"
              "start_or_after_whitespace",)),
    Mutation("a blank right after another blank loses its leading space", "glmjax/generate.py",
             "  text = prompt.pieces[0]\n  for filled, piece in zip(blanks, prompt.pieces[1:]):\n"
             "    # The text so far decides, not the piece before the blank (empty between two "
             "blanks).\n    if not text or text[-1].isspace():\n      filled = filled.lstrip()\n"
             "    text += filled + piece\n  return text\n",
             "  parts = [prompt.pieces[0]]\n  for filled, piece in zip(blanks, prompt.pieces[1:]):"
             "\n    if parts[-1][-1:].isspace() or not parts[-1]:\n      filled = filled.lstrip()\n"
             '    parts.extend([filled, piece])\n  return "".join(parts)\n',
             (_P + "test_a_filled_blank_drops_its_leading_space_only_at_the_"
              "start_or_after_whitespace",)),
    Mutation("generate refuses a prompt that uses every row of the position table",
             "glmjax/generate.py",
             "and len(prompt.part_a) > config.max_position + 1:",
             "and len(prompt.part_a) > config.max_position:",
             ("tests/test_generate.py::test_a_prompt_and_a_blank_may_use_every_row_of_the_"
              "position_table",)),
    Mutation("generate refuses a --max_tokens whose blank reaches the last block position",
             "glmjax/generate.py",
             "and sampling.max_blank_tokens > config.max_position):",
             "and sampling.max_blank_tokens >= config.max_position):",
             ("tests/test_generate.py::test_a_prompt_and_a_blank_may_use_every_row_of_the_"
              "position_table",)),
    Mutation("generate takes a tokenizer with more ids than the model's vocabulary",
             "glmjax/generate.py", "  if tokenizer.ids_used > config.vocab_size:\n",
             "  if False:\n",
             ("tests/test_generate.py::test_a_tokenizer_with_more_ids_than_the_model_s_"
              "vocabulary_is_refused",)),
    Mutation("a blank line in a prompt file is an error", "glmjax/generate.py",
             "      if not line.strip():\n        continue\n", "",
             (_P + "test_a_prompt_file_skips_blank_lines_and_names_a_line_"
              "without_text",)),
    Mutation("prompts with 3 and with 4 blanks compile two programs", "glmjax/generate.py",
             "blanks = 1 << (max(len(p.blanks) for p in prompts) - 1).bit_length()",
             "blanks = max(len(p.blanks) for p in prompts)",
             ("tests/test_generate.py::test_prompts_with_three_or_four_blanks_share_one_compiled_"
              "program",)),
    Mutation("each prompt length within a bucket compiles a program of its own",
             "glmjax/generate.py", "width = -(-longest // BUCKET) * BUCKET", "width = longest",
             ("tests/test_generate.py::test_prompts_of_other_lengths_within_a_bucket_compile_"
              "nothing_new",)),
    Mutation("a kernel under a mesh is split over rows or heads that the mesh does not divide",
             "glmjax/model/attention.py",
             "  if not names or size % math.prod(mesh.shape[name] for name in names):",
             "  if not names:",
             ("tests/test_dense_attention.py::test_a_fused_kernel_under_a_mesh_gives_the_"
              "reference_whether_rows_and_heads_split_or_not",)),
    Mutation("masked_attention ignores the scale it is given", "glmjax/model/attention.py",
             "scale = q.shape[-1] ** -0.5 if scale is None else scale",
             "scale = q.shape[-1] ** -0.5",
             ("tests/test_dense_attention.py::test_a_scale_given_to_masked_attention_is_the_one_"
              "applied",)),
    Mutation("fit_table takes any --models name (a typo leaves an empty table, exit 0)",
             "glmjax/fit_table.py", "  if unknown or not names:", "  if False:",
             ("tests/test_fit_table.py::test_a_model_or_chip_generation_the_table_does_not_know_"
              "is_refused_before_any_compile",)),
    Mutation("fit_table reads a prefix of a flag as the flag (--model for --models)",
             "glmjax/fit_table.py",
             "ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)",
             "ArgumentParser(description=__doc__.splitlines()[0])",
             ("tests/test_fit_table.py::test_a_prefix_of_a_flag_is_not_taken_for_the_flag",)),
    Mutation("the tokenizer trainer reads a prefix of a flag as the flag (--vocab)",
             "glmjax/data/tokenizer_train.py",
             "help=\"train a SentencePiece model from text files\",\n"
             "                              allow_abbrev=False)",
             "help=\"train a SentencePiece model from text files\")",
             ("tests/test_tokenizers.py::test_the_tokenizer_trainer_takes_no_prefix_of_a_flag_"
              "for_the_flag",)),
    Mutation("a Megatron checkpoint missing its last ranks is read as a whole model",
             "glmjax/convert/original.py", "if isinstance(world, int) and world != len(files):",
             "if False:",
             (_CONVERT_REFUSALS + "test_a_model_parallel_checkpoint_missing_its_last_rank_is_"
              "refused_naming_the_count",)),
    Mutation("compile_for_slice writes compile-only TPU programs to the persistent cache",
             "glmjax/aot.py",
             "with parallel.activate(mesh, rules), _no_persistent_cache(), on_target:",
             "with parallel.activate(mesh, rules), on_target:",
             ("tests/test_aot.py::test_a_compile_for_a_slice_neither_writes_nor_reads_the_"
              "persistent_cache",)),
    Mutation("a dropout of 1 (every activation zeroed) passes validation", "glmjax/config.py",
             "    if not 0.0 <= get_field(config, field) < 1.0:",
             "    if not 0.0 <= get_field(config, field) <= 1.0:",
             (_VALID + "test_bad_field_is_named",)),
    Mutation("warmup_ratio=1 or final_ratio=1 (the ends of [0, 1]) is refused", "glmjax/config.py",
             "    if not 0.0 <= get_field(config, field) <= 1.0:",
             "    if not 0.0 <= get_field(config, field) < 1.0:",
             (_VALID + "test_the_closed_ends_of_each_documented_range_are_accepted",)),
    Mutation("data.eval_fraction=1 (nothing left to train on) passes validation",
             "glmjax/config.py", "not 0.0 < data.eval_fraction < 1.0",
             "not 0.0 < data.eval_fraction <= 1.0",
             (_VALID + "test_bad_field_is_named",)),
    Mutation("evaluation on with train.eval_batches=0 passes validation", "glmjax/config.py",
             "train.eval_batches < 1 or", "train.eval_batches < 0 or",
             (_VALID + "test_bad_field_is_named",)),
    Mutation("the data-parallel check divides the whole batch, not a micro-batch",
             "glmjax/config.py", "    micro = data.batch_size // optim.grad_accum_steps",
             "    micro = data.batch_size",
             (_VALID + "test_the_rows_per_micro_batch_must_divide_over_the_data_parallel_"
              "devices",)),
    Mutation("optim.grad_accum_steps=0 is a ZeroDivisionError, not a named refusal",
             "glmjax/config.py", '"optim.grad_accum_steps", "train.steps"', '"train.steps"',
             (_VALID + "test_bad_field_is_named",)),
    Mutation("a zero size, step count or loss chunk passes as a positive integer",
             "glmjax/config.py", "    if int(get_field(config, field)) <= 0:",
             "    if int(get_field(config, field)) < 0:",
             (_VALID + "test_bad_field_is_named",)),
    Mutation("a device snapshot in zero parts passes validation", "glmjax/config.py",
             '"train.loss_chunk", "checkpoint.snapshot_parts"):', '"train.loss_chunk"):',
             (_VALID + "test_bad_field_is_named",)),
    Mutation("rotary positions are held to the learned table's max_position", "glmjax/config.py",
             '  if frozen_model.position_tables and model.max_position < data.seq_len:',
             "  if model.max_position < data.seq_len:",
             (_VALID + "test_rotary_positions_need_no_table_as_long_as_the_rows",)),
    Mutation("an attention_dropout out of range is blamed on model.hidden_dropout",
             "glmjax/config.py",
             '      raise ConfigError(f"{field}={get_field(config, field)}: must be in [0, 1).")',
             '      raise ConfigError(f"model.hidden_dropout={get_field(config, field)}: '
             'must be in [0, 1).")',
             (_VALID + "test_bad_field_is_named",)),
    Mutation("aot never advises giving back the kept dropout masks", "glmjax/memory.py",
             '    tips.append("model.save_dropout_masks=false (the backward pass draws the masks '
             'again)")\n', "    pass\n",
             ("tests/test_aot_report.py::test_the_advice_for_a_config_that_does_not_fit_names_"
              "the_knobs_not_yet_turned",)),
    Mutation("an unknown flag absl finds no match for gets no suggestion", "glmjax/cli.py",
             "  close = difflib.get_close_matches(error.flagname, ours, n=3, cutoff=0.6)",
             "  close = []", _SUGGESTING),
    Mutation("absl's own flags are offered as suggestions", "glmjax/cli.py",
             '          if "glmjax" in module for flag in defined]',
             "          for flag in defined]", _SUGGESTING),
    Mutation("a config field given bare gets no suggestion", "glmjax/cli.py",
             '  if "config" in ours:', "  if False:", _SUGGESTING),
    Mutation("an unset choice shows as a gap in the list of choices", "glmjax/config.py",
             "{', '.join(choice or repr(choice) for choice in choices)}", "{', '.join(choices)}",
             ("tests/test_config_validation.py::test_bad_field_is_named",)),
    Mutation("a bucket run's cut library line names the VM's temporary file",
             "glmjax/run_log.py", "    logs.attach_file(local, run_log.copy)",
             "    logs.attach_file(local)",
             ("tests/test_logs.py::test_a_cut_library_line_of_a_bucket_run_names_the_bucket_s_"
              "copy",)),
    Mutation("the data layer imports a command module through a relative import",
             "glmjax/data/masking.py", "import numpy as np\n",
             "import numpy as np\n\nfrom .. import parallel  # noqa: F401\n",
             ("tests/test_code_shape.py::test_the_model_and_data_layers_import_nothing_above_"
              "them",)),
    Mutation("a command's refusal of its arguments prints every flag's help",
             "glmjax/cli.py",
             "    except app.UsageError as error:  # main refusing its arguments",
             "    except ZeroDivisionError as error:  # main refusing its arguments",
             ("tests/test_cli.py::test_an_unquoted_value_is_one_line_saying_to_quote_it_not_the_"
              "whole_help",)),
    Mutation("asking a command for its help ends with absl's failure status",
             "glmjax/cli.py", "      raise SystemExit(0) from None", "      raise",
             ("tests/test_cli.py::test_asking_a_command_for_its_help_prints_its_flags_with_"
              "status_0",)),
)
