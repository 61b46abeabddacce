"""Planted bugs of the third claims audit: the tokenizer trainer's flags, errors and long
lines, logs' library level, device snapshots' parts, the data benchmark's every-option figures
and [sMASK] rows' budget and room."""
from mutation_entries import Mutation

_TRAINER = "tests/test_tokenizer_trainer.py::"
_TEXT_FIELD = (_TRAINER + "test_the_trainer_reads_the_json_field_text_field_names_and_says_that_"
               "flag_when_missing",)
_T = "glmjax/data/tokenizer_train.py"

ENTRIES: tuple[Mutation, ...] = (
    # The tokenizer trainer: --text_field (and --text-field) read, its errors in its own flags.
    Mutation("the tokenizer trainer reads the 'text' field whatever --text_field says", _T,
             "args.out, args.model_type, args.text_field,", 'args.out, args.model_type, "text",',
             _TEXT_FIELD),
    Mutation("the tokenizer trainer drops the first spelling --text-field", _T,
             '"--text_field", "--text-field",', '"--text_field",', _TEXT_FIELD),
    Mutation("the tokenizer trainer's errors name train's config fields, not its flags", _T,
             "      message = message.replace(field, flag)\n", "      pass\n", _TEXT_FIELD),
    Mutation("the tokenizer trainer's errors rewrite train's field names inside a path", _T,
             "      message = message.replace(field, flag)\n",
             "      message = message.replace(field, flag).replace(\"data.files\", \"--input\")\n",
             _TEXT_FIELD),
    Mutation("the tokenizer trainer feeds a line past SentencePiece's limit whole", _T,
             "for start in range(0, len(line), _MAX_LINE_CHARS):\n"
             "            piece = line[start:start + _MAX_LINE_CHARS]",
             "for start in range(0, 1 if line else 0):\n"
             "            piece = line",
             (_TRAINER + "test_the_trainer_cuts_a_line_sentencepiece_would_skip_into_lines_it_"
              "reads",)),
    # logs.py: library records reach the console from warnings up.
    Mutation("a library's INFO records reach the console", "glmjax/logs.py",
             "  absl_logging.set_verbosity(absl_logging.WARNING)",
             "  absl_logging.set_verbosity(absl_logging.INFO)",
             ("tests/test_logs.py::test_a_library_s_info_records_stay_off_the_console_and_its_"
              "warnings_show",)),
    # host_copy.py: a device snapshot's parts are cut by the arrays' bytes.
    Mutation("a device snapshot's parts are cut by the count of arrays, not their bytes",
             "glmjax/host_copy.py",
             "split_by_bytes([key_free(leaf).nbytes for leaf in self._leaves], parts)",
             "split_by_bytes([1 for leaf in self._leaves], parts)",
             ("tests/test_device_snapshot.py::test_a_snapshot_s_parts_are_cut_by_the_arrays_"
              "global_bytes_the_same_on_every_process",)),
    # bench/data.py: the every-option figures have every recipe option on.
    Mutation("the data benchmark's every-option figures leave the per-batch draws off",
             "glmjax/bench/data.py", "                    draw_per_batch=True)",
             "                    draw_per_batch=False)",
             ("tests/test_bench_data.py::test_the_every_option_figures_turn_on_every_recipe_"
              "option_the_defaults_leave_off",)),
    Mutation("a sentence row's count of [sMASK] is raised once, not until it holds still",
             "glmjax/data/sentences.py", "max_rounds: int = 8", "max_rounds: int = 1",
             ("tests/test_infilling.py::test_a_sentence_row_covers_its_budget_whenever_its_whole_"
              "sentences_can",)),
    Mutation("a sentence row short of room takes every sentence it needs, past its room",
             "glmjax/data/sentences.py",
             "np.cumsum(candidate, axis=1) <= np.minimum(need, k)[:, None]",
             "np.cumsum(candidate, axis=1) <= need[:, None]",
             ("tests/test_infilling.py::test_a_row_whose_sentences_outgrow_its_room_takes_only_"
              "what_the_room_holds",)),
    Mutation("[sMASK] caps the sentence count at a third of the row, not half",
             "glmjax/data/sentences.py",
             "k_cap = (seq_len - 3) // 2", "k_cap = (seq_len - 3) // 3",
             ("tests/test_infilling.py::test_a_sentence_row_covers_its_budget_whenever_its_whole_"
              "sentences_can",)),
)
