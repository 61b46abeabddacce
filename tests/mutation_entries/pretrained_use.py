"""Planted bugs in using a trained or imported model: cloze scoring, pretrained loading, the
model config's derived sizes."""
from mutation_entries import Mutation

_EVALUATE = "tests/test_evaluate.py::"
_CLOZE = "tests/test_cloze.py::"

ENTRIES: tuple[Mutation, ...] = (
    # Cloze scoring (glmjax/cloze.py).
    Mutation("cloze rows under splash are padded to multiples of 64, not of its 128-token blocks",
             "glmjax/cloze.py", "bucket_length(len(c) + len(a) + 3, limit, multiple)",
             "bucket_length(len(c) + len(a) + 3, limit)",
             (_CLOZE + "test_under_a_kernel_of_128_token_blocks_cloze_rows_are_padded_to_a_"
              "multiple_of_128",)),
    Mutation("a rope_2d model's cloze rows are held to max_position, not the training length",
             "glmjax/cloze.py", 'if not model_config.position_tables:',
             'if model_config.position_encoding == "rope":',
             (_CLOZE + "test_rows_are_padded_to_lengths_the_attention_kernel_takes",)),
    Mutation("cloze progress counts the padding rows of the last batch as texts",
             "glmjax/cloze.py", "done + len(chunk)", "done + per_batch",
             (_CLOZE + "test_cloze_progress_reports_the_texts_sent_so_far_and_only_after_"
              "every_s",)),
    Mutation("cloze progress logs after every batch, not every every_s seconds",
             "glmjax/cloze.py", "time.monotonic() - last > every_s",
             "time.monotonic() - last < every_s",
             (_CLOZE + "test_cloze_progress_reports_the_texts_sent_so_far_and_only_after_"
              "every_s",)),
    Mutation("whitespace around a cloze answer field is scored as part of the answer",
             "glmjax/cloze.py", "  answer = answer.strip()\n", "",
             (_CLOZE + "test_the_answer_follows_the_context_as_in_running_text",)),
    Mutation("a context that exactly fills the cloze row is counted as cut",
             "glmjax/cloze.py", "if len(context) > room:", "if len(context) >= room:",
             (_CLOZE + "test_a_context_that_exactly_fills_the_row_is_not_counted_as_cut",)),
    Mutation("a cloze line of whitespace is refused as bad JSON, not skipped",
             "glmjax/cloze.py", "    if not line.strip():\n      continue\n",
             "    if not line:\n      continue\n",
             (_CLOZE + "test_lines_of_whitespace_are_skipped_and_the_lines_after_keep_their_"
              "numbers",)),
    Mutation("cloze examples are numbered by count, not by their line in the file",
             "glmjax/cloze.py", "record[\"answer\"]), line=number))",
             "record[\"answer\"]), line=len(examples) + 1))",
             (_CLOZE + "test_lines_of_whitespace_are_skipped_and_the_lines_after_keep_their_"
              "numbers",)),
    Mutation("a rotary model's cloze rows are held to the training length below max_position",
             "glmjax/cloze.py", "limit = max(limit, int(seq_len))", "limit = int(seq_len)",
             (_CLOZE + "test_rows_are_padded_to_lengths_the_attention_kernel_takes",)),
    Mutation("a cloze context's trailing newline becomes a space before the answer",
             "glmjax/cloze.py", '((text[len(kept):] or " ") if kept else "")',
             '(" " if kept else "")',
             (_CLOZE + "test_the_answer_follows_the_context_as_in_running_text",)),
    Mutation("cloze rows are padded only to the kernel's block, not to buckets of 64 tokens",
             "glmjax/cloze.py",
             "return math.lcm(BUCKET, model_lib.model_config.seq_len_multiple(model_config."
             "attention))",
             "return model_lib.model_config.seq_len_multiple(model_config.attention)",
             (_CLOZE + "test_under_a_kernel_of_128_token_blocks_cloze_rows_are_padded_to_a_"
              "multiple_of_128",)),
    # Loading a workdir (glmjax/pretrained.py).
    Mutation("pretrained.load ignores the mesh its caller gives", "glmjax/pretrained.py",
             "mesh = mesh or local_mesh(config)", "mesh = local_mesh(config)",
             ("tests/test_reporting.py::test_a_workdir_loads_onto_the_mesh_its_caller_gives",)),
    Mutation("a workdir whose config no longer fits its parameters is blamed on init_from",
             "glmjax/pretrained.py", ', field="--workdir",\n', ",\n",
             ("tests/test_reporting.py::test_a_workdir_whose_config_no_longer_fits_its_"
              "parameters_is_refused_naming_the_workdir",)),
    Mutation("a torn config.json is a bare JSON error, not named with how to restore it",
             "glmjax/pretrained.py",
             "  try:\n    saved = json.loads(path.read_text(encoding=\"utf-8\"))\n"
             "  except ValueError as error:\n",
             "  saved = json.loads(path.read_text(encoding=\"utf-8\"))\n  if False:\n",
             ("tests/test_reporting.py::test_a_torn_config_json_is_named_with_how_to_restore_it",)),
    # The model config's derived sizes (glmjax/model/model_config.py).
    Mutation("splash_dynamic takes sequence lengths in blocks of 64, not its 128",
             "glmjax/model/model_config.py", '"splash_dynamic": Kernel(seq_len_multiple=128,',
             '"splash_dynamic": Kernel(seq_len_multiple=64,',
             ("tests/test_config_attention.py::test_splash_needs_a_sequence_length_on_its_block_"
              "and_auto_picks_another_kernel_off_it",)),
    Mutation("a refused MLP split names 4 x hidden_size when ffn_size set the width",
             "glmjax/model/model_config.py",
             '"model.ffn_size" if self.ffn_size else "4 x model.hidden_size"',
             '"4 x model.hidden_size" if self.ffn_size else "model.ffn_size"',
             ("tests/test_config_validation.py::test_a_mesh_that_cannot_split_a_parameter_axis_"
              "is_refused_before_anything_runs",)),
)
