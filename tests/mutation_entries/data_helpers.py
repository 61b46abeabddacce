"""Planted bugs in documents, sentences, masking, checksums and the workdir's helpers."""
from mutation_entries import Mutation

_WINDOWS = "tests/test_sentence_windows.py::"
_INPUTS = "tests/test_data_inputs.py::"
_FAULTS = "tests/test_faults.py::"
_VERDICTS = "tests/test_fault_verdicts.py::"
_TOKENIZERS = "tests/test_tokenizers.py::"
_MOVE = (_WINDOWS + "test_a_moved_window_start_follows_the_original_move_within_half_a_row_and_"
         "its_document",)
_SORTED = (_VERDICTS + "test_a_failed_restore_is_sorted_by_what_its_chain_of_errors_says",)
_TRAINER = (_TOKENIZERS + "test_the_tokenizer_trainer_trains_the_model_type_on_the_lines_it_was_"
            "asked_for",)
_HINT = ("tests/test_tokenizer_trainer.py::test_the_trainer_s_hint_trains_from_the_shipped_base_"
         "config_as_it_is_copied",)
_FIRST_SPELLING = (_TOKENIZERS + "test_sentencepiece_trained_by_the_cli",)

ENTRIES: tuple[Mutation, ...] = (
    Mutation("a window start moved right runs past its document's end",
             "glmjax/data/alignment.py", "right_p, np.minimum(offset + reach, doc_len))",
             "right_p, offset + reach)", _MOVE),
    Mutation("a window start moves at most T // 2 - 1 tokens (the original moves T // 2)",
             "glmjax/data/alignment.py", "  reach = seq_len // 2", "  reach = (seq_len - 1) // 2",
             _MOVE),
    Mutation("a cut after a document's one-token first sentence moves to the document's start",
             "glmjax/data/alignment.py", "before = np.where(at >= 0, last_end",
             "before = np.where(at > 0, last_end", _MOVE),
    Mutation("sentence windows cut back past a document's eos to the sentence end before it",
             "glmjax/data/sentences.py",
             "np.where(is_end | (tokens == specials.eos), col + 1, 0), axis=1)",
             "np.where(is_end, col + 1, 0), axis=1)",
             ("tests/test_infilling.py::test_sentence_windows_cut_back_to_a_document_s_eos_after_"
              "the_last_sentence_end",)),
    Mutation("a prepared store reads before a document's start (the tail of the one before)",
             "glmjax/data/documents.py", "if np.any(starts < 0):", "if False:",
             (_INPUTS + "test_a_store_refuses_offsets_and_reads_that_reach_outside_its_"
              "documents",)),
    Mutation("in-memory document offsets that do not start at 0 are accepted",
             "glmjax/data/documents.py", "self.offsets.ndim != 1 or self.offsets[0] != 0 or ",
             "self.offsets.ndim != 1 or ",
             (_INPUTS + "test_a_store_refuses_offsets_and_reads_that_reach_outside_its_"
              "documents",)),
    Mutation("a state holding a typed random key cannot be checksummed", "glmjax/checksums.py",
             "    leaf = jax.random.key_data(leaf)\n", "    pass\n",
             ("tests/test_checkpoint_damage.py::test_a_random_key_in_a_state_gets_a_checksum_"
              "that_sees_another_key",)),
    Mutation("an unwritable workdir's line leaves out the file that could not be written",
             "glmjax/workdir.py", 'where = f" ({error.filename})" if error.filename else ""',
             'where = ""',
             ("tests/test_workdir.py::test_an_unwritable_workdir_line_names_the_file_that_could_"
              "not_be_written",)),
    Mutation("a barrier mismatch the reader wraps reads as an unknown failure (all hosts stop)",
             "glmjax/restore_agreement.py",
             "if any(_MISMATCH in str(each) for each in storage_errors.chain(error)):",
             "if _MISMATCH in str(error):",
             (_VERDICTS + "test_a_barrier_mismatch_that_the_reader_wraps_still_reads_as_another_"
              "host_s_failure",)),
    Mutation("a storage that answers UNAVAILABLE reads as an unknown failure, not unreadable",
             "glmjax/storage_errors.py",
             '"input/output error", "unavailable", "deadline_exceeded", "unauthenticated")',
             '"input/output error", "deadline_exceeded", "unauthenticated")', _SORTED),
    Mutation("a chunk that fails to decompress stops the run instead of being skipped",
             "glmjax/storage_errors.py",
             '"corrupt", "decompress", "unexpected end of", "truncated")',
             '"corrupt", "unexpected end of", "truncated")', _SORTED),
    Mutation("a DATA_LOSS chunk stops the run instead of being skipped",
             "glmjax/storage_errors.py",
             '_DAMAGED_WORDS = ("not_found", "not found", "no such file", "out_of_range", '
             '"data_loss",',
             '_DAMAGED_WORDS = ("not_found", "not found", "no such file", "out_of_range",',
             _SORTED),
    Mutation("a save refused for a full quota is named a full disk", "glmjax/storage_errors.py",
             'errno.EDQUOT: "disk quota exceeded", errno.EROFS:',
             'errno.EDQUOT: "no space left on device", errno.EROFS:',
             (_VERDICTS + "test_a_save_that_fails_for_the_user_to_fix_names_the_cause",)),
    Mutation("a failed restore is named by its error's last line (a stack frame)",
             "glmjax/storage_errors.py",
             "  text = error_text.typed_line(error, None)",
             "  text = f\"{type(error).__name__}: {str(error).strip().splitlines()[-1]}\"",
             (_VERDICTS + "test_a_failed_restore_is_named_by_its_error_s_type_and_first_line",)),
    Mutation("a device snapshot that exactly fills the device is warned about",
             "glmjax/memory.py", "  if needed <= limit:\n", "  if needed < limit:\n",
             (_FAULTS + "test_a_device_snapshot_that_exactly_fills_the_device_is_no_warning",)),
    Mutation("the tokenizer trainer ignores --max-lines", "glmjax/data/tokenizer_train.py",
             "args.txt_documents, args.max_lines)", "args.txt_documents)", _TRAINER),
    Mutation("the tokenizer trainer ignores --model-type", "glmjax/data/tokenizer_train.py",
             "args.out, args.model_type, args.text_field,", 'args.out, "unigram", args.text_field,',
             _TRAINER),
    Mutation("the tokenizer trainer cannot write its model into a folder not made yet",
             "glmjax/data/tokenizer_train.py",
             "  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)\n", "",
             _TRAINER),
    Mutation("the tokenizer trainer refuses a --vocab-size larger than a small text fills",
             "glmjax/data/tokenizer_train.py", "hard_vocab_limit=False,", "hard_vocab_limit=True,",
             (_TOKENIZERS + "test_a_vocabulary_larger_than_the_text_fills_is_an_upper_bound_not_"
              "a_refusal",)),
    # The trainer's last line trains from a shipped config as it is copied (base.py: 'bert').
    Mutation("the tokenizer trainer's hint leaves the config's tokenizer_vocab",
             "glmjax/data/tokenizer_train.py",
             "          f\" --config.data.tokenizer_vocab={shlex.quote('')}\"\n", "", _HINT),
    Mutation("the tokenizer trainer's hint leaves the config's model.vocab_size",
             "glmjax/data/tokenizer_train.py",
             "          f\" --config.model.vocab_size={tokenizer.vocab_size}\")",
             "          \"\")", _HINT),
    Mutation("the tokenizer trainer's hint names the model relative to the folder it ran in",
             "glmjax/data/tokenizer_train.py", "  path = os.path.abspath(out)  #",
             "  path = out  #", _HINT),
    # Flags spelled with underscores as in every glmjax command, the hyphenated ones kept.
    Mutation("the tokenizer trainer takes only --vocab-size, not --vocab_size",
             "glmjax/data/tokenizer_train.py", 'add_argument("--vocab_size", "--vocab-size",',
             'add_argument("--vocab-size",', _HINT),
    Mutation("the tokenizer trainer drops the first spelling --vocab-size",
             "glmjax/data/tokenizer_train.py", 'add_argument("--vocab_size", "--vocab-size",',
             'add_argument("--vocab_size",', _FIRST_SPELLING),
    Mutation("the tokenizer trainer takes only --model-type, not --model_type",
             "glmjax/data/tokenizer_train.py", 'add_argument("--model_type", "--model-type",',
             'add_argument("--model-type",', _HINT),
    Mutation("the tokenizer trainer drops the first spelling --model-type",
             "glmjax/data/tokenizer_train.py", 'add_argument("--model_type", "--model-type",',
             'add_argument("--model_type",', _TRAINER),
)
