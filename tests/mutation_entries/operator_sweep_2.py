"""Planted bugs from session 41's two operator sweeps (one token changed at a time in the
commands' modules, the start-up and restore paths, the tokenizers' tools and the configs) that
passed the tests of their module: an import that caps every span at one token or records the
wrong MLP width, a warning about unknown fields when there are none, file pieces sized by the
wrong byte counts or never cut at a text file's blank lines, a clean file refused for the stray
bytes of the one before it, a generation batch as wide as its shortest prompt, a GLM-10B
position table one row longer than the release's, bench's sweep refusing a 1-row batch,
held-out progress miscounted or printed after every batch, and the out-of-memory advice
withholding micro-batches on one chip."""
from mutation_entries import Mutation

_CONVERT = "tests/test_convert.py::"
_TEXT_FILES = "glmjax/data/text_files.py"
_HELD_OUT_PROGRESS = ("tests/test_evaluate_command.py::test_held_out_progress_counts_the_"
                      "batches_done_and_only_after_every_s",)
_PIECES = ("tests/test_sources.py::test_big_files_are_cut_at_document_boundaries",)

ENTRIES = (
    Mutation("an import caps its longest span at one token", "glmjax/convert/__init__.py",
             "                                    max(1, config.data.seq_len - 4))",
             "                                    min(1, config.data.seq_len - 4))",
             (_CONVERT + "test_the_imported_workdir_is_what_train_continues_from",
              _CONVERT + "test_an_import_with_more_positions_than_the_default_row_keeps_the_"
              "default_row_length")),
    Mutation("an import records the default MLP width for every other width",
             "glmjax/convert/__init__.py",
             '  if fields["ffn_size"] == 4 * hidden:', '  if fields["ffn_size"] != 4 * hidden:',
             (_CONVERT + "test_a_checkpoint_whose_mlp_is_not_four_times_the_hidden_size_imports_"
              "its_own_size",)),
    Mutation("reading a workdir's config warns of unknown fields when there are none",
             "glmjax/pretrained.py", "  if ignored and warn:", "  if ignored or warn:",
             ("tests/test_reporting.py::test_a_workdir_s_saved_fields_this_version_lacks_are_"
              "named_in_one_warning",)),
    Mutation("a file range's size is its end plus its start", _TEXT_FILES,
             "(size if e < 0 else e) - s) for s, e in zip(cuts, ends))",
             "(size if e < 0 else e) + s) for s, e in zip(cuts, ends))", _PIECES),
    Mutation("a text file of blank-line documents is never cut into pieces", _TEXT_FILES,
             '(path.endswith(".txt") and txt_documents == "file"):',
             '(path.endswith(".txt") or txt_documents == "file"):', _PIECES),
    Mutation("a clean file is judged with the stray bytes of the files before it", _TEXT_FILES,
             "    yield text\n  _refuse_binary(path, stats.invalid_utf8 - invalid_before,",
             "    yield text\n  _refuse_binary(path, stats.invalid_utf8 + invalid_before,",
             ("tests/test_sources.py::test_a_clean_file_read_after_one_with_stray_bytes_is_"
              "judged_by_its_own_bytes",)),
    Mutation("a generation batch is as wide as the bucket of its shortest prompt",
             "glmjax/generate.py", "  longest = max(len(p.part_a) for p in prompts)",
             "  longest = min(len(p.part_a) for p in prompts)",
             ("tests/test_generation_batches.py::test_a_short_prompt_and_one_longer_than_a_"
              "bucket_share_a_batch_and_fill_as_alone",)),
    Mutation("the GLM-10B recipe gives the model a position table of 1026 rows",
             "glmjax/recipes.py",
             '  config.model.update(vocab_size=50304, max_position=1024, remat="full")',
             '  config.model.update(vocab_size=50304, max_position=1025, remat="full")',
             ("tests/test_config.py::test_each_shipped_config_has_its_released_model_s_shape_"
              "and_position_table",)),
    Mutation("bench's sweep refuses a batch of one row", "glmjax/bench/sweep.py",
             "  if any(value < 1 for value in values):",
             "  if any(value <= 1 for value in values):",
             ("tests/test_bench.py::test_the_sweep_tries_a_batch_of_one_row_like_any_other_"
              "size",)),
    Mutation("held-out progress counts the batch being done as not yet done",
             "glmjax/held_out.py", "      progress(index + 1)", "      progress(index + 0)",
             _HELD_OUT_PROGRESS),
    Mutation("held-out progress is reported after every batch", "glmjax/held_out.py",
             "    if progress is not None and time.monotonic() - last > every_s:",
             "    if progress is not None or time.monotonic() - last > every_s:",
             _HELD_OUT_PROGRESS),
    Mutation("the advice withholds more micro-batches on one chip for an odd row count",
             "glmjax/memory.py",
             "(batch // accum) % max(batch_parallelism, 1) == 0:",
             "(batch // accum) % max(batch_parallelism, 2) == 0:",
             ("tests/test_aot_report.py::test_the_advice_for_a_config_that_does_not_fit_names_"
              "the_knobs_not_yet_turned",)),
    Mutation("bench's fetch to the host reads replica 1 of each shard", "glmjax/bench/save.py",
             "addressable_shards if shard.replica_id == 0]",
             "addressable_shards if shard.replica_id == 1]",
             ("tests/test_bench_save.py::test_the_fetch_to_the_host_reads_one_replica_of_each_"
              "shard_and_leaves_the_state_stepped",)),
)
