"""Planted bugs in what a user meets following the README with their own corpus and an original
checkpoint: corpus changes under a resume or an evaluation, data files of the wrong kind,
prompts refused before the model loads, import warnings, start-up silence and noise."""
from mutation_entries import Mutation

_SOURCES = "tests/test_sources.py::"
_GEN = "tests/test_generate_command.py::"
_REFUSE = "tests/test_convert_refusals.py::"

ENTRIES = (
    # A corpus that changed since the checkpoint.
    Mutation("a resume on a corpus edited in place goes on silently", "glmjax/workdir.py",
             "  if not recorded or recorded == current:", "  if True:",
             ("tests/test_workdir.py::test_a_resume_on_a_corpus_file_edited_in_place_is_refused_"
              "unless_allowed",)),
    Mutation("the corpus record counts only the training split", "glmjax/workdir.py",
             "  lengths = split.base.doc_lengths", "  lengths = split.doc_lengths",
             ("tests/test_evaluate.py::test_a_corpus_changed_since_the_run_is_said_to_give_other_"
              "figures_than_train_logged",)),
    Mutation("evaluate never learns the corpus the checkpoint was trained on",
             "glmjax/pretrained.py", ' corpus=saved.get("corpus"),', " corpus=None,",
             ("tests/test_evaluate.py::test_a_corpus_changed_since_the_run_is_said_to_give_other_"
              "figures_than_train_logged",)),
    Mutation("evaluate --batches=0 without --cloze loads the model for an empty report",
             "glmjax/evaluate.py", "  if flag.batches == 0 and not flag.cloze:", "  if False:",
             ("tests/test_evaluate_command.py::test_batches_0_without_a_cloze_file_is_refused_"
              "before_the_model_loads",)),
    # Data files of the wrong kind.
    Mutation("a folder given as data.files reads as a glob that matches nothing",
             "glmjax/data/text_files.py",
             "  if not matched and os.path.isdir(os.path.expanduser(pattern)):", "  if False:",
             (_SOURCES + "test_a_folder_given_as_data_files_is_refused_with_a_glob_of_its_files",)),
    Mutation("a .gz with damaged compressed data ends as an unforeseen error naming no file",
             "glmjax/data/text_files.py", "  except (OSError, EOFError, zlib.error) as e:",
             "  except (OSError, EOFError) as e:",
             (_SOURCES + "test_a_gz_file_whose_compressed_data_is_damaged_is_refused_naming_it",)),
    Mutation("a .json file holding one array is told to set data.text_field",
             "glmjax/data/text_files.py",
             "    if not isinstance(record, dict):  # a whole-file JSON array",
             "    if False:  # a whole-file JSON array",
             (_SOURCES + "test_a_json_file_holding_one_array_is_refused_as_not_json_lines",)),
    # Prompts checked before minutes of loading.
    Mutation("a --text without a blank is refused only after the model loads",
             "glmjax/generate.py", "    for text in args.text:  # before minutes of loading",
             "    for text in []:  # before minutes of loading",
             (_GEN + "test_a_prompt_without_a_blank_is_one_line_before_the_model_loads",)),
    Mutation("a prompt too long for the model is found only when its batch is filled",
             "glmjax/generate.py",
             "    if config.position_tables and len(prompt.part_a) > config.max_position + 1:",
             "    if False:",
             (_GEN + "test_a_prompt_too_long_for_the_model_is_refused_before_the_model_loads_or_"
              "any_is_filled",)),
    Mutation("generate's progress lines go to a logger the console never shows",
             "glmjax/generate.py", 'log = logging.getLogger("glmjax.generate")',
             "log = logging.getLogger(__name__)",
             ("tests/test_generate.py::test_the_command_shows_its_progress_and_warnings_as_glmjax_"
              "lines",)),
    # Importing an original checkpoint.
    Mutation("a --num_heads that contradicts the checkpoint's is taken without a word",
             "glmjax/convert/__init__.py", "  if num_heads and recorded and num_heads != recorded:",
             "  if False:",
             (_REFUSE + "test_a_num_heads_flag_that_contradicts_the_checkpoint_s_config_is_said_"
              "with_both_counts",)),
    Mutation("a cut-off .bin is sent to --trust_pickle", "glmjax/convert/original.py",
             "    if _cut_off(error):  # pickle would", "    if False:  # pickle would",
             (_REFUSE + "test_a_cut_off_bin_file_is_called_damaged_and_never_sent_to_trust_"
              "pickle",)),
    Mutation("an import's config.py fails on a word after the colon with Python's own error",
             "glmjax/convert/__init__.py", "  if arg:  # `--config=.../config.py:local`",
             "  if False:  # `--config=.../config.py:local`",
             ("tests/test_convert.py::test_a_word_after_the_colon_of_an_import_s_config_py_is_"
              "refused_saying_what_to_do",)),
    Mutation("init_from parameters of another shape name no config field",
             "glmjax/params_restore.py", "      differ = changes(saved) if changes else []",
             "      differ = []",
             ("tests/test_train_startup.py::test_init_from_parameters_of_another_shape_is_refused_"
              "naming_the_model_fields_and_the_fix",)),
    Mutation("init_from's sequence past its position tables is told to grow them",
             "glmjax/config.py", "           if config.checkpoint.init_from else",
             "           if False else",
             ("tests/test_config_validation.py::test_a_sequence_past_the_position_tables_of_init_"
              "from_is_not_told_to_grow_them",)),
    # Start-up silence and noise.
    Mutation("a run says nothing between its compile and step log_every", "glmjax/loop.py",
             "      if step_done == self.start + 1:", "      if False:",
             ("tests/test_loop.py::test_a_run_s_first_step_is_said_at_once_when_its_first_log_"
              "line_is_steps_away",)),
    Mutation("libtpu's lines about a missing TPU VM reach aot's console", "glmjax/topology.py",
             '  added = ([] if jax.config.jax_platforms != "cpu"', "  added = ([] if True",
             ("tests/test_topology.py::test_libtpu_s_lines_about_a_missing_tpu_vm_stay_out_of_the_"
              "command_s_output",)),
    Mutation("a refused command line reads '.;' before the pointer to the flags",
             "glmjax/cli.py", "ValueError(f\"{str(error).removesuffix('.')}{hint};",
             "ValueError(f\"{error}{hint};",
             ("tests/test_cli.py::test_a_refused_command_line_ending_in_a_full_stop_reads_without_"
              "a_stray_one",)),
    Mutation("evaluate reads the held-out split many times over without a word",
             "glmjax/evaluate.py", "  if passes >= 2:  # the rows draw documents again",
             "  if passes >= 2e9:  # the rows draw documents again",
             ("tests/test_evaluate.py::test_more_batches_than_the_held_out_split_holds_say_its_"
              "documents_come_back",)),
    Mutation("convert import tells a vocabulary that misses its fixed ids to change a config field",
             "glmjax/data/released_tokenizers.py",
             "    cause = error.__cause__ if isinstance(error.__cause__, mismatch) else error",
             "    cause = error",
             ("tests/test_released_tokenizers.py::test_a_vocab_txt_with_another_token_at_101_is_a_"
              "one_line_error",)),
    Mutation("a TFDS run starts with TensorFlow's oneDNN notice", "glmjax/data/tfds_source.py",
             '  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")', "  pass",
             ("tests/test_tfds_source.py::test_reading_tfds_prints_none_of_tensorflow_s_start_up_"
              "lines",)),
    Mutation("a cut-off file that torch reports oddly is sent to --trust_pickle",
             "glmjax/convert/original.py", '  return "Unsupported global" not in str(error)',
             "  return isinstance(error, EOFError)",
             (_REFUSE + "test_a_cut_off_bin_file_is_called_damaged_and_never_sent_to_trust_"
              "pickle",)),
    Mutation("an intact checkpoint holding Python objects is called damaged",
             "glmjax/convert/original.py", '  return "Unsupported global" not in str(error)',
             "  return True",
             (_REFUSE + "test_an_intact_checkpoint_holding_more_than_tensors_is_sent_to_trust_"
              "pickle",)),
    Mutation("evaluate checks no corpus given by --data_source", "glmjax/evaluate.py",
             "batches, corpus=p.corpus)", "batches,\n                                        "
             "corpus=None if data_source else p.corpus)",
             ("tests/test_evaluate.py::test_a_corpus_changed_since_the_run_is_said_to_give_other_"
              "figures_than_train_logged",)),
    Mutation("a check that refuses a checkpoint on one host lets the others go on",
             "glmjax/restore_agreement.py", "    if refused and refusal is None:", "    if False:",
             ("tests/test_fault_verdicts.py::test_a_read_that_fails_on_one_host_only_gives_every_"
              "host_one_verdict",)),
    Mutation("a folder of .txt files is given a .jsonl glob to try", "glmjax/data/text_files.py",
             '"*" + (suffixes[0] if suffixes else ".jsonl")', '"*.jsonl"',
             (_SOURCES + "test_a_folder_given_as_data_files_is_refused_with_a_glob_of_its_files",)),
    Mutation("a damaged .gz is named but not told what to do", "glmjax/data/text_files.py",
             "           if isinstance(e, (EOFError, zlib.error, gzip.BadGzipFile)) else",
             "           if False else",
             (_SOURCES + "test_a_gz_file_whose_compressed_data_is_damaged_is_refused_naming_it",)),
    Mutation("a null JSON line is called a NoneType", "glmjax/data/text_files.py",
             'else "null" if record is None', "else None if False",
             (_SOURCES + "test_a_json_file_holding_one_array_is_refused_as_not_json_lines",)),
    Mutation("init_from's refusal names model fields that shape no parameter",
             "glmjax/train.py",
             'if change.split(":")[0] in {f"model.{name}" for name in PARAMETER_FIELDS}]',
             'if change.startswith("model.")]',
             ("tests/test_train_startup.py::test_init_from_parameters_of_another_shape_is_refused_"
              "naming_the_model_fields_and_the_fix",)),
    Mutation("the head count is not listed among the fields that shape the parameters",
             "glmjax/model/model_config.py",
             '"hidden_size", "num_layers", "num_heads", "ffn_size",',
             '"hidden_size", "num_layers", "ffn_size",',
             ("tests/test_model.py::test_the_fields_said_to_shape_the_parameters_are_exactly_those_"
              "that_do",)),
    Mutation("the values given for libtpu's start stay in the environment after it",
             "glmjax/topology.py", "      os.environ.pop(name, None)", "      pass",
             ("tests/test_topology.py::test_libtpu_s_lines_about_a_missing_tpu_vm_stay_out_of_the_"
              "command_s_output",)),
    Mutation("a field misspelled in a config file is carried along unread", "glmjax/config.py",
             "  _refuse_unknown_fields(config)\n", "",
             ("tests/test_config_validation.py::test_a_field_misspelled_in_a_config_file_is_"
              "refused_naming_the_field_meant",)),
    Mutation("JAX_NUM_PROCESSES without a coordinator trains as one process alone",
             "glmjax/distributed.py",
             '    if explicit.get("num_processes", 1) > 1 or explicit.get("process_id", 0) > 0:',
             "    if False:",
             ("tests/test_host_input.py::test_jax_variables_that_describe_no_joinable_job_are_"
              "refused_in_one_line",)),
    Mutation("prepare writes its shards among the corpus files --out holds",
             "glmjax/data/prepare.py", '  _refuse_out_among_inputs(out_dir, plan["source"])\n', "",
             ("tests/test_prepare.py::test_an_out_folder_holding_the_corpus_files_is_refused_"
              "before_any_shard_is_written",)),
    Mutation("a --sweep_remat typo is recorded as each of its trials' error",
             "glmjax/bench/sweep.py", "    if name not in allowed:", "    if False:",
             ("tests/test_bench.py::test_a_sweep_flag_value_no_trial_could_take_is_one_line_"
              "naming_the_flag",)),
    Mutation("bench --steps=-1 compiles the step, then fails in the prefetcher's words",
             "glmjax/bench/__main__.py", "  if flags.FLAGS.steps < 0:", "  if False:",
             ("tests/test_cli.py::test_a_negative_bench_steps_is_one_line_before_the_step_"
              "compiles",)),
    # A contributor's walk-through of docs/architecture.md's "How to add".
    Mutation("the objective check sums the three original probabilities, not every objective's",
             "glmjax/data/pipeline.py",
             '  return tuple(float(data[f"{name}_prob"]) for name in OBJECTIVE_NAMES)',
             '  return tuple(float(data[f"{name}_prob"]) for name in ("blank", "sentence", '
             '"document"))',
             ("tests/test_pipeline_objectives.py::test_an_objective_added_to_the_names_is_"
              "validated_and_drawn_with_the_others",)),
    Mutation("bench --what=attention times only the kernels auto tries",
             "glmjax/bench/attention.py",
             '  for name in [model_config.REFERENCE, *kernels(platform)]:',
             '  for name in [model_config.REFERENCE, *attention_choice.auto_order(platform)[:-1]]:',
             ("tests/test_bench_attention.py::test_the_attention_benchmark_times_every_kernel_also_"
              "those_auto_does_not_try",)),
    Mutation("a variant accepted by the config computes another variant's function",
             "glmjax/model/glm.py", '    geglu = cfg.mlp == "geglu"', '    geglu = cfg.mlp == "GeGLU"',
             ("tests/test_model_semantics.py::test_every_value_of_a_variant_field_reaches_the_"
              "forward",)),
    Mutation("export takes any activation for a GeLU the Hugging Face code is slightly off from",
             "glmjax/convert/__init__.py",
             '             "activation": tuple(name for name, _ in ACTIVATIONS.values())}',
             "             }",
             (_REFUSE + "test_export_refuses_an_activation_that_neither_original_code_computes",)),
    # README's claims table, audited row by row against the tests it names.
    Mutation("training's prefetcher runs three batches ahead", "glmjax/prefetch.py",
             "DEPTH = 2\n", "DEPTH = 3\n",
             ("tests/test_prefetch.py::test_by_default_batches_are_built_two_ahead_on_a_thread_"
              "other_than_the_caller_s",)),
    Mutation("allow_config_change lets init_from read parameters of another tokenizer",
             "glmjax/train.py",
             "layout, check=lambda saved, step: workdir_lib.check_tokenizer(",
             "layout, check=lambda saved, step: config.train.allow_config_change or "
             "workdir_lib.check_tokenizer(",
             ("tests/test_same_tokenizer.py::test_init_from_a_run_trained_with_another_tokenizer_"
              "is_refused_naming_both",)),
    Mutation("a resume refused for its tokenizer says so in two lines", "glmjax/train.py",
             'fix="Point the data.tokenizer fields at the tokenizer that run used (config',
             'fix="Point the data.tokenizer fields at the tokenizer that run used\\n(config',
             ("tests/test_same_tokenizer.py::test_a_resume_after_the_tokenizer_file_changed_is_"
              "refused_and_keeps_the_checkpoint",)),
    Mutation("a corpus refusal gives the new token count as the one trained on",
             "glmjax/workdir.py", "documents, {recorded['tokens']:,} tokens\")",
             "documents, {current['tokens']:,} tokens\")",
             ("tests/test_workdir.py::test_a_resume_on_a_corpus_file_edited_in_place_is_refused_"
              "unless_allowed",)),
    Mutation("train makes its workdir before it checks the config's values", "glmjax/train.py",
             "    config_lib.validate(config)  # a mistyped value leaves no workdir behind\n",
             "",
             ("tests/test_cli.py::test_a_config_value_that_cannot_work_is_one_line_with_the_"
              "command_s_mistake_status",)),
    Mutation("a mistyped flag is never offered a command's flag of three letters or fewer",
             "glmjax/cli.py", 'if "glmjax" in module for flag in defined]',
             'if "glmjax" in module for flag in defined if len(flag.name) > 3]',
             ("tests/test_cli.py::test_an_unknown_flag_close_to_one_the_command_has_is_one_line_"
              "suggesting_it",)),
    Mutation("a tokenizer without its file exits with its message and keeps no traceback",
             "glmjax/data/tokenizers.py",
             "    raise ValueError(f\"data.tokenizer={kind!r} needs data.tokenizer_path:",
             "    raise SystemExit(f\"data.tokenizer={kind!r} needs data.tokenizer_path:",
             ("tests/test_prepare.py::test_the_command_refuses_a_config_without_its_tokenizer_"
              "file_in_one_line",)),
    Mutation("the float16 refusal offers bfloat16 alone", "glmjax/config.py",
             '"gradients underflow): use model.dtype=bfloat16 (TPU, A100, H100) or "\n'
             '                      "float32.")',
             '"gradients underflow): use model.dtype=bfloat16 (TPU, A100, H100).")',
             ("tests/test_config_attention.py::test_semantics_a_kernel_or_dtype_cannot_honour_"
              "are_refused_at_start_up",)),
    Mutation("the attention-dropout refusal forgets that auto keeps it", "glmjax/config.py",
             '"model.attention=xla (or auto) to keep it', '"model.attention=xla to keep it',
             ("tests/test_config_attention.py::test_semantics_a_kernel_or_dtype_cannot_honour_"
              "are_refused_at_start_up",)),
    Mutation("the start-up attention check runs in float32 whatever the run's dtype",
             "glmjax/attention_choice.py",
             "config.model.attention, dtype=config.model.dtype,",
             'config.model.attention, dtype="float32",',
             ("tests/test_config_attention.py::test_the_start_up_check_runs_at_the_run_s_dtype_"
              "sequence_length_and_head_size",)),
    Mutation("a service reaches up into a command", "glmjax/memory.py",
             "from glmjax import error_text, gpu_topology",
             "from glmjax import aot, error_text, gpu_topology",
             ("tests/test_code_shape.py::test_no_module_but_a_command_imports_a_command",)),
)
