"""Planted bugs in held-out evaluation: the evaluator, its report and the evaluate command."""
from mutation_entries import Mutation

_EVAL = "tests/test_evaluate.py::"
_EVAL_COMMAND = "tests/test_evaluate_command.py::"
_CLOZE = "tests/test_cloze.py::"
_HOST = "tests/test_host_input.py::"
_H, _E = "glmjax/held_out.py", "glmjax/evaluate.py"
_MICRO = _EVAL + "test_a_run_trained_in_micro_batches_is_evaluated_in_them_when_the_batch_splits_so"
_VOCAB = _EVAL + "test_a_model_whose_vocabulary_cannot_hold_the_tokenizer_s_ids_is_refused"
_HELD_DATA = (_EVAL + "test_held_out_data_that_is_missing_or_smaller_than_a_batch_is_refused_in_"
              "words")
_CONSOLE = _EVAL_COMMAND + "test_the_console_report_counts_batches_and_cut_contexts_as_they_were"
_COMMAND = (_EVAL_COMMAND
            + "test_the_command_hands_its_flags_to_the_evaluation_and_refuses_extra_words")

ENTRIES: tuple[Mutation, ...] = (
    Mutation("two evaluations of a step at once write one report over the other", _E,
             '      with open(path, "x", encoding="utf-8") as handle:',
             '      with open(path, "w", encoding="utf-8") as handle:',
             (_EVAL + "test_a_default_report_path_taken_between_its_check_and_its_write_is_not_"
              "overwritten",)),
    Mutation("a second evaluation of a step overwrites the first report", _E,
             "  while epath.Path(path).exists():", "  while False:",
             (_EVAL + "test_a_second_evaluation_of_a_step_keeps_the_first_report_and_writes_"
              "beside_it",)),
    # The figures of held_out.py: train's eval/ records and evaluate's report share them.
    Mutation("an objective with no held-out tokens reads a loss of 0 (a perplexity of 1)",
             "glmjax/metrics.py",
             "/ count if count else None", "/ count if count else 0.0",
             (_EVAL + "test_an_objective_with_no_held_out_tokens_has_no_figures_rather_than_a_"
              "zero_loss",)),
    Mutation("a diverged model's perplexity overflows to inf (no JSON number)", _H,
             "float(np.exp(min(loss, _MAX_LOG_PERPLEXITY)))", "float(np.exp(loss))",
             (_EVAL + "test_a_diverged_model_s_perplexity_is_a_finite_number_a_json_report_can_"
              "hold",)),
    Mutation("held-out progress is logged at every batch after the first interval", _H,
             "      progress(index + 1)\n      last = time.monotonic()\n",
             "      progress(index + 1)\n",
             (_HOST + "test_held_out_progress_is_reported_once_every_interval_not_at_every_batch_"
              "after_the_first",)),
    # The evaluate command: micro-batches, checks, flags, the report and its file.
    Mutation("evaluate keeps training's micro-batches for a batch that does not split into them",
             _E, "micro = micro if data.batch_size % (micro * parallel.batch_axis_size(p.mesh)) "
             "== 0 else 1", "micro = micro", (_MICRO,)),
    Mutation("evaluate splits into micro-batches that do not spread over the devices", _E,
             "data.batch_size % (micro * parallel.batch_axis_size(p.mesh)) == 0",
             "data.batch_size % micro == 0", (_MICRO,)),
    Mutation("evaluate ignores training's micro-batches (a higher peak memory)", _E,
             "micro = int(config.optim.grad_accum_steps)", "micro = 1", (_MICRO,)),
    Mutation("evaluate lets a held-out batch that does not split over the devices through", _E,
             "  if data.batch_size % parallel.batch_axis_size(p.mesh):", "  if False:",
             (_EVAL + "test_a_batch_that_does_not_split_over_the_devices_is_refused_for_the_held_"
              "out_report",)),
    Mutation("a run that held out no documents has its corpus read and a misleading fix", _E,
             "  if not 0 < float(data.eval_fraction) < 1:", "  if False:",
             (_EVAL + "test_a_run_that_held_out_no_documents_is_told_to_skip_the_report_before_"
              "its_corpus_is_read",)),
    Mutation("a held-out split smaller than one batch is scored over and over", _E,
             "    sources.check_held_out(data, eval_docs, fix=advice)\n", "", (_HELD_DATA,)),
    Mutation("a missing prepared folder is a traceback, not a one-line error", _E,
             "  except (ValueError, FileNotFoundError) as error:\n    raise EvaluateError(f\"held-"
             "out data:",
             "  except ValueError as error:\n    raise EvaluateError(f\"held-out data:",
             (_HELD_DATA,)),
    Mutation("cloze batches take the run's data.batch_size, not --batch_size", _E,
             "cloze_report(p, tokenizer, cloze, examples, int(data.batch_size))",
             "cloze_report(p, tokenizer, cloze, examples, int(p.config.data.batch_size))",
             (_CLOZE + "test_the_batch_size_flag_sets_the_rows_of_each_cloze_batch",)),
    Mutation("evaluate runs a model whose vocabulary cannot hold the tokenizer's ids", _E,
             "  if tokenizer.ids_used > p.model_config.vocab_size:", "  if False:", (_VOCAB,)),
    Mutation("evaluate refuses a vocabulary exactly the tokenizer's size", _E,
             "if tokenizer.ids_used > p.model_config.vocab_size:",
             "if tokenizer.ids_used >= p.model_config.vocab_size:", (_VOCAB,)),
    Mutation("a negative --batches is not refused (a crash after loading)", _E,
             "if batches is not None and batches < 0:", "if batches is not None and batches < -1:",
             (_EVAL + "test_a_negative_number_of_batches_is_refused",)),
    Mutation("the held-out report gives the run's batch size, not the one scored", _E,
             '"batch_size": data.batch_size,', '"batch_size": config.data.batch_size,',
             (_EVAL + "test_the_batch_size_flag_sets_the_rows_of_each_held_out_batch",)),
    Mutation("--out is ignored: the report goes to the workdir", _E,
             "    path = out or unused_report_path(workdir, step)\n",
             "    path = unused_report_path(workdir, step)\n",
             (_EVAL + "test_the_report_is_written_where_out_says_in_folders_made_for_it",)),
    Mutation("--out in a folder not there yet fails after the whole evaluation", _E,
             "epath.Path(path).parent.mkdir(parents=True, exist_ok=True)",
             "epath.Path(path).parent.mkdir(exist_ok=True)",
             (_EVAL + "test_the_report_is_written_where_out_says_in_folders_made_for_it",)),
    Mutation("the cloze report counts the contexts not cut as cut", _E,
             '"contexts_cut": cut,', '"contexts_cut": len(rows) - cut,',
             (_CLOZE + "test_the_cloze_report_gives_the_mean_answer_log_likelihood_and_the_count_"
              "right",)),
    Mutation("the cloze report gives the training length as the row length", _E,
             '"max_row_tokens": limit}', '"max_row_tokens": int(p.config.data.seq_len)}',
             (_CLOZE + "test_the_cloze_report_gives_the_mean_answer_log_likelihood_and_the_count_"
              "right",)),
    Mutation("the console says 1 batches", _E, "{'es' if h['batches'] > 1 else ''}",
             "{'es' if h['batches'] else ''}", (_CONSOLE,)),
    Mutation("the console says 0 contexts were cut", _E, 'if c["contexts_cut"] else ""',
             'if c["contexts_cut"] is not None else ""', (_CONSOLE,)),
    Mutation("every host prints the report", _E, "  if jax.process_index() == 0:\n    print(",
             "  if True:\n    print(",
             (_EVAL_COMMAND + "test_only_process_0_prints_the_report_of_a_multi_host_evaluation",)),
    Mutation("--batches and --batch_size swap on their way from the command line", _E,
             "batches=flag.batches, batch_size=flag.batch_size",
             "batches=flag.batch_size, batch_size=flag.batches", (_COMMAND,)),
    Mutation("the command takes a stray word on its command line", _E, "if len(argv) > 1:",
             "if len(argv) > 2:", (_COMMAND,)),
    Mutation("evaluate gives train's advice for a held-out split smaller than a batch", _E,
             "sources.check_held_out(data, eval_docs, fix=advice)",
             "sources.check_held_out(data, eval_docs)",
             (_HELD_DATA,)),
    # Session 28's hunt: flag defaults, bucket reports, torn configs, cloze buckets.
    Mutation("evaluate's --batches defaults to 0 (no held-out report)", _E,
             'flags.DEFINE_integer("batches", None,', 'flags.DEFINE_integer("batches", 0,',
             (_EVAL_COMMAND + "test_flags_left_out_leave_the_run_s_own_settings",)),
    Mutation("a bucket workdir's report is opened locally", _E,
             "    if out or paths.is_remote(path):  # given", "    if out:  # given",
             (_EVAL + "test_a_bucket_workdir_s_report_is_written_through_its_file_system",)),
    Mutation("a torn config.json is a traceback before the join", _E,
             "  except (OSError, ValueError, TypeError):\n    return int(config_lib",
             "  except OSError:\n    return int(config_lib",
             (_EVAL_COMMAND + "test_the_command_joins_the_multi_host_job_before_it_touches_a_"
              "device",)),
    Mutation("a cloze row reads its answer's last token (the context loses a token of room)",
             "glmjax/cloze.py", "room = limit - 3 - len(answer)", "room = limit - 4 - len(answer)",
             (_CLOZE + "test_a_cloze_row_reads_the_answer_but_its_last_token_as_the_original_s_"
              "lambada_rows",)),
    Mutation("a cloze row feeds the whole answer in, its last token included", "glmjax/cloze.py",
             "inputs = [*part_a, specials.sop, *answer[:-1]]",
             "inputs = [*part_a, specials.sop, *answer]",
             (_CLOZE + "test_a_cloze_row_reads_the_answer_but_its_last_token_as_the_original_s_"
              "lambada_rows",)),
    Mutation("a cloze context keeps the whitespace it starts with (the original strips it)",
             "glmjax/cloze.py",
             '    return kept.lstrip(), (context[len(kept):] if kept else "") + answer',
             '    return kept, (context[len(kept):] if kept else "") + answer',
             (_CLOZE + "test_a_cloze_context_loses_the_whitespace_it_starts_with_as_the_original_"
              "strips_it",)),
    Mutation("a cloze row one past a bucket is put in that bucket", "glmjax/cloze.py",
             "bucket_length(len(c) + len(a) + 3, limit, multiple)",
             "bucket_length(len(c) + len(a) + 2, limit, multiple)",
             (_CLOZE + "test_under_a_kernel_of_128_token_blocks_cloze_rows_are_padded_to_a_"
              "multiple_of_128",)),
    Mutation("cloze rows under splash reach past a position table shorter than a block",
             "glmjax/cloze.py",
             "return limit if multiple == BUCKET or limit < multiple else",
             "return limit if multiple == BUCKET else",
             (_CLOZE + "test_rows_are_padded_to_lengths_the_attention_kernel_takes",)),
)
