"""Planted bugs in the data input modules that passed the suite (session 38's input hunt): a
store read as uint16 whatever it was written as, a split of unrecorded size planned as no
pieces, SLURM task counts read one digit, the TFDS stored size unchecked, an empty corpus taken
for one document, a tokenizer folder's name read as a glob, a shard without its lengths taken as
done, a feature that is not text decoded anyway, the TFDS split and data_dir left out of the
source, a missing file taken for a tokenizer by its name, a builtin plan of step 0."""
from mutation_entries import Mutation

_SOURCES, _TFDS = "glmjax/data/sources.py", "glmjax/data/tfds_source.py"
_RELEASED = "glmjax/data/released_tokenizers.py"
_T = "tests/test_tfds_source.py::"
_S = "tests/test_sources.py::"
_I = "tests/test_data_inputs.py::"
_R = "tests/test_released_tokenizers.py::"

ENTRIES = (
    Mutation("a prepared store's tokens are read as uint16 whatever the manifest's token_dtype",
             "glmjax/data/documents.py", '    dtype = np.dtype(manifest["token_dtype"])',
             "    dtype = np.dtype(np.uint16)",
             (_I + "test_a_vocabulary_over_65536_ids_is_prepared_as_int32_tokens_and_read_back_"
              "whole",)),
    Mutation("a TFDS split of unrecorded size is planned as no pieces", _TFDS,
             "count = max(1, math.ceil(split_bytes(data_config) / target_bytes))",
             "count = math.ceil(split_bytes(data_config) / target_bytes)",
             (_T + "test_a_split_of_unrecorded_size_is_planned_as_one_piece_and_prepared_whole",)),
    Mutation("the SLURM tasks per node are read as their first digit", _SOURCES,
             're.match(r"\\d+", env.get', 're.match(r"\\d", env.get',
             (_S + "test_the_memory_budget_is_shared_by_the_slurm_tasks_of_a_node",)),
    Mutation("a TFDS split's stored size is not checked before tokenizing", _SOURCES,
             '  if data_config.source == "tfds":\n    return tfds_source.split_bytes(data_config)\n'
             "  return 0", "  return 0",
             (_T + "test_a_tfds_split_too_big_for_memory_by_its_stored_size_is_refused_before_"
              "tokenizing",)),
    Mutation("a corpus of no documents is refused as one of one document", _SOURCES,
             "if eval_fraction == 0 or num_docs == 0:", "if eval_fraction == 0:",
             (_I + "test_a_corpus_of_no_documents_is_refused_as_empty_not_as_one_document",)),
    Mutation("a tokenizer folder's name is read as a glob pattern", _RELEASED,
             "glob.glob(os.path.join(glob.escape(path), pattern))",
             "glob.glob(os.path.join(path, pattern))",
             (_R + "test_a_tokenizer_folder_with_glob_characters_in_its_name_is_recognised",)),
    Mutation("a finished shard whose lengths file is gone counts as done on resume",
             "glmjax/data/prepare.py", 'for k in ("tokens", "lengths"))', 'for k in ("tokens",))',
             ("tests/test_prepare.py::test_a_finished_shard_whose_token_or_lengths_file_is_gone_"
              "is_written_again_on_resume[lengths.npy]",)),
    Mutation("a TFDS feature that is not text is decoded as if it were", _TFDS,
             "    if not isinstance(value, bytes):\n", "    if False:\n",
             (_T + "test_a_text_field_naming_a_feature_that_is_not_text_is_a_one_line_error",)),
    Mutation("the TFDS split is left out of the source's description", _SOURCES,
             "return dict(source=source, tfds_name=data_config.tfds_name, "
             "tfds_split=data_config.tfds_split,\n",
             "return dict(source=source, tfds_name=data_config.tfds_name,\n",
             (_T + "test_the_source_s_description_names_its_split",)),
    Mutation("the TFDS data_dir is left out of the source's description (a resume mixes)",
             _SOURCES,
             "                tfds_data_dir=data_config.tfds_data_dir, "
             "text_field=data_config.text_field)",
             "                text_field=data_config.text_field)",
             (_T + "test_a_resume_that_reads_the_dataset_from_another_data_dir_is_refused",)),
    Mutation("a tokenizer file that does not exist is recognised by its name", _RELEASED,
             "for suffix, kind in _BY_NAME if os.path.isfile(path) else ():",
             "for suffix, kind in _BY_NAME:",
             (_R + "test_a_tokenizer_file_that_does_not_exist_is_said_to_be_missing_whatever_its_"
              "name",)),
    Mutation("a shard size below one builtin document plans pieces of step 0", _SOURCES,
             "max(1, target_bytes // _BUILTIN_DOC_BYTES)", "target_bytes // _BUILTIN_DOC_BYTES",
             (_S + "test_a_shard_size_below_one_builtin_document_plans_one_document_per_piece",)),
)
