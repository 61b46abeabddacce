"""Planted bugs in using a model and in reading text that passed the suite (session 37's hunts
of generation, conversion, cloze and tokenizers), and the two cloze bugs that hunt found in the
code, put back; and session 45's review of the commands (a report lost, out of memory)."""
from mutation_entries import Mutation

_TOKENIZERS, _CLOZE = "glmjax/data/tokenizers.py", "glmjax/cloze.py"
_BASIC = ("tests/test_released_tokenizers.py::test_a_bert_vocab_txt_splits_text_as_bert_s_basic_"
          "tokenizer_does",)
_NO_CONTEXT = ("tests/test_cloze.py::test_an_answer_with_no_context_before_it_gets_no_space_"
               "before_it",)

ENTRIES = (
    Mutation("every prompt samples with the same key (a repeated prompt repeats its sample)",
             "glmjax/generate.py", "jax.random.fold_in(jax.random.key(seed), i))(",
             "jax.random.fold_in(jax.random.key(seed), 0 * i))(",
             ("tests/test_generate.py::test_each_prompt_samples_with_its_own_key",)),
    Mutation("text between two blanks loses its leading space with a BPE vocabulary",
             "glmjax/generate.py",
             "    piece = piece if tokenizer.spaces_are_tokens else piece.rstrip()",
             "    piece = piece if tokenizer.spaces_are_tokens else piece.strip()",
             ("tests/test_prompts_and_sampling.py::test_whitespace_before_a_blank_goes_to_the_"
              "blank_with_word_piece_vocabularies",)),
    Mutation("an import ignores --tokenizer when the source is a glmjax export",
             "glmjax/convert/__init__.py",
             "  recorded = {} if tokenizer else recorded_tokenizer(source)",
             "  recorded = recorded_tokenizer(source)",
             ("tests/test_convert_export.py::test_a_tokenizer_named_to_the_import_wins_over_the_"
              "export_s_record",)),
    Mutation("GLM's tokens are numbered over a tokenizer.json's added tokens", _TOKENIZERS,
             "    size = self._tokenizer.get_vocab_size(with_added_tokens=True)",
             "    size = self._tokenizer.get_vocab_size(with_added_tokens=False)",
             ("tests/test_tokenizers.py::test_glm_s_tokens_go_after_a_tokenizer_json_s_added_"
              "tokens_never_onto_them",)),
    Mutation("the BERT tokenizer keeps CJK characters together", _TOKENIZERS,
             "normalizers.BertNormalizer(lowercase=True)",
             "normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=False)", _BASIC),
    Mutation("the BERT tokenizer keeps control characters and U+FFFD", _TOKENIZERS,
             "normalizers.BertNormalizer(lowercase=True)",
             "normalizers.BertNormalizer(lowercase=True, clean_text=False)", _BASIC),
    Mutation("the BERT tokenizer splits at whitespace only, keeping runs of punctuation",
             _TOKENIZERS, "tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()",
             "tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()", _BASIC),
    Mutation("a cloze file is cut at every Unicode line break, inside JSON strings too", _CLOZE,
             'lines = f.read().split("\\n")', "lines = f.read().splitlines()",
             ("tests/test_cloze.py::test_a_cloze_file_s_records_end_at_newlines_only_not_at_"
              "unicode_line_separators",)),
    Mutation("an answer after a context of whitespace alone keeps that whitespace", _CLOZE,
             '(context[len(kept):] if kept else "") + answer', "context[len(kept):] + answer",
             _NO_CONTEXT),
    Mutation("an answer after whitespace alone, not cut from the text, keeps that whitespace",
             _CLOZE, '((text[len(kept):] or " ") if kept else "") + answer',
             '(text[len(kept):] or (" " if kept else "")) + answer', _NO_CONTEXT),
    Mutation("export follows init_from one step only: a run continued twice exports as new",
             "glmjax/convert/__init__.py", "  for _ in range(16):  # a chain",
             "  for _ in range(2):  # a chain",
             ("tests/test_convert_export.py::test_a_run_continued_from_an_import_exports_in_the_"
              "import_s_dtypes_names_and_files",)),
    Mutation("a resumed prepare does not compare how .txt files are cut into documents",
             "glmjax/data/sources.py",
             "txt_documents=data_config.txt_documents, text_field=data_config.text_field)",
             "text_field=data_config.text_field)",
             ("tests/test_prepare_resume.py::test_a_resume_that_cuts_txt_files_another_way_is_"
              "refused",)),
    Mutation("a GLM name a tokenizer.json holds as an added token gets a new id", _TOKENIZERS,
             "for text, token_id in self._tokenizer.get_vocab(with_added_tokens=True).items():",
             "for text, token_id in self._tokenizer.get_vocab(with_added_tokens=False).items():",
             ("tests/test_tokenizers.py::test_glm_s_tokens_go_after_a_tokenizer_json_s_added_"
              "tokens_never_onto_them",)),
    Mutation("evaluate finds --out is a folder only once every batch is scored",
             "glmjax/evaluate.py", "  if out and epath.Path(out).is_dir():", "  if False:",
             ("tests/test_evaluate.py::test_an_out_folder_is_refused_first_and_a_report_it_cannot_"
              "write_is_printed",)),
    Mutation("a report evaluate cannot write is lost", "glmjax/evaluate.py",
             '    print(text, end="", flush=True)\n', "",
             ("tests/test_evaluate.py::test_an_out_folder_is_refused_first_and_a_report_it_cannot_"
              "write_is_printed",)),
    Mutation("evaluate out of device memory is a traceback", "glmjax/evaluate.py",
             "    if (line := memory.out_of_memory(error)) is not None:",
             "    if (line := None) is not None:",
             ("tests/test_evaluate_command.py::test_running_out_of_device_memory_is_one_line_that_"
              "says_to_lower_the_batch_size",)),
    Mutation("generate out of device memory is a traceback", "glmjax/generate.py",
             "      if (line := memory.out_of_memory(error)) is None:", "      if True:",
             ("tests/test_generate_command.py::test_running_out_of_device_memory_says_to_lower_"
              "the_batch_size",)),
    Mutation("prepare --out=gs:// writes a local folder named gs:", "glmjax/data/prepare.py",
             "  if paths.is_remote(out_dir):", "  if False:",
             ("tests/test_prepare.py::test_prepared_errors_name_the_fix",)),
    Mutation("convert --out=gs:// writes a local folder named gs:", "glmjax/convert/__init__.py",
             "  if paths.is_remote(out):", "  if False:",
             ("tests/test_convert_refusals.py::test_an_out_that_is_a_file_or_a_bucket_is_one_line_"
              "before_anything_is_read",)),
    Mutation("evaluate reads parameters under any tokenizer", "glmjax/evaluate.py",
             "    pretrained.check_tokenizer(p, tokenizer)\n", "",
             ("tests/test_evaluate.py::test_parameters_are_refused_under_a_tokenizer_other_than_"
              "the_one_they_were_trained_with",)),
    Mutation("load_tokenizer (export's) reads parameters under any tokenizer",
             "glmjax/pretrained.py", "  check_tokenizer(pretrained, tokenizer)\n  return tokenizer",
             "  return tokenizer",
             ("tests/test_convert_tokenizer.py::test_import_stores_the_tokenizer_with_the_workdir_"
              "and_it_moves_with_it",)),
    Mutation("generate fills prompts under any tokenizer", "glmjax/generate.py",
             "    pretrained.check_tokenizer(loaded, tokenizer)\n", "",
             ("tests/test_generate_command.py::test_parameters_trained_with_another_tokenizer_are_"
              "refused_before_any_prompt_is_filled",)),
    Mutation("a prompt file that is not UTF-8 is a bare codec error", "glmjax/generate.py",
             "  except UnicodeDecodeError as error:  # cp1252",
             "  except KeyError as error:  # cp1252",
             ("tests/test_prompts_and_sampling.py::test_a_prompt_file_skips_blank_lines_and_names_"
              "a_line_without_text",)),
    Mutation("a --top_k above the vocabulary fails in lax.top_k after the load",
             "glmjax/generate.py", "  if sampling.top_k > config.vocab_size:", "  if False:",
             ("tests/test_generate.py::test_generate_itself_refuses_sampling_settings_that_would_"
              "be_ignored",)),
    Mutation("export follows an init_from of a checkpoints/ folder into a missing config",
             "glmjax/convert/__init__.py",
             '    if (parent and epath.Path(parent).name == "checkpoints"',
             "    if (False",
             ("tests/test_convert_export.py::test_a_run_continued_from_an_import_exports_in_the_"
              "import_s_dtypes_names_and_files",)),
    Mutation("export writes a tokenizer other than the model's", "glmjax/convert/__init__.py",
             "    pretrained.load_tokenizer(loaded)  # the one exported", "    pass  # the one exported",
             ("tests/test_convert_tokenizer.py::test_import_stores_the_tokenizer_with_the_workdir_"
              "and_it_moves_with_it",)),
    Mutation("evaluate loads the parameters before it reads the tokenizer", "glmjax/evaluate.py",
             "    tokenizer = pretrained.workdir_tokenizer(pretrained.read_config(workdir, "
             "warn=False),\n                                             workdir)\n"
             "    p = pretrained.load(workdir)\n",
             "    p = pretrained.load(workdir)\n"
             "    tokenizer = pretrained.workdir_tokenizer(pretrained.read_config(workdir, "
             "warn=False),\n                                             workdir)\n",
             ("tests/test_convert_tokenizer.py::test_an_import_without_a_tokenizer_is_refused_by_"
              "generate_and_evaluate_naming_the_flag",)),
)
