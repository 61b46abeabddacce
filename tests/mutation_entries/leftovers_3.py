"""Planted bugs in session 48's work: an import that holds its float32 parameters once."""
from mutation_entries import Mutation

_TM = "tests/test_import_memory.py::"
_ONCE = (_TM + "test_converting_holds_the_float32_parameters_about_once_beside_the_source",)
_SAVE = (_TM + "test_saving_imported_parameters_makes_no_second_copy_of_them_and_later_saves_"
         "still_copy",)

ENTRIES = (
    Mutation("a consuming conversion keeps the source's arrays", "glmjax/convert/mapping.py",
             "take = tensors.pop if consume else tensors.__getitem__",
             "take = tensors.__getitem__",
             _ONCE + (_TM + "test_a_consuming_conversion_gives_the_same_parameters_and_empties_"
                      "the_source",)),
    Mutation("each layer is cast to float32 in a list that is then stacked",
             "glmjax/convert/mapping.py",
             "      if value is None:\n        value = np.empty((count, *layer.shape), dtype)\n"
             "      value[index] = layer\n    _set(stacked, path, value)",
             "      value = [] if value is None else value\n"
             "      value.append(layer.astype(dtype))\n    _set(stacked, path, np.stack(value))",
             _ONCE),
    Mutation("the import's save lets Orbax copy its numpy arrays", "glmjax/pretrained.py",
             "    with _numpy_leaves_written_in_place(), _write_progress(",
             "    with contextlib.nullcontext(), _write_progress(",
             _SAVE),
    Mutation("the import's save leaves the uncopying handler for every later save",
             "glmjax/pretrained.py",
             "    handlers.register_type_handler(np.ndarray, before, override=True)\n", "", _SAVE),
    Mutation("the handler swap is reported to the user as Orbax's warning", "glmjax/pretrained.py",
             '  return not str(record.msg).startswith("Type handler registry type")',
             "  return True", _SAVE),
)

_RT = "tests/test_roberta_tokenizer.py::"
ENTRIES += (
    Mutation("RoBERTa's BPE files are taken for GPT-2's", "glmjax/data/released_tokenizers.py",
             'return "roberta" if tokenizer._tokenizer.id_to_token(0) == "<s>" else "gpt2"',
             'return "gpt2"',
             (_RT + "test_roberta_s_files_are_recognised_and_padded_to_glm_roberta_large_s_rows",)),
    Mutation("the roberta layout's [CLS] is <pad>", "glmjax/data/specials.py",
             "ROBERTA_SPECIALS = SpecialTokens(pad=2, eos=2, cls=0,",
             "ROBERTA_SPECIALS = SpecialTokens(pad=2, eos=2, cls=1,",
             (_RT + "test_the_roberta_layout_gives_the_original_glm_special_ids",)),
    Mutation("the roberta layout does not check <mask>", "glmjax/data/specials.py",
             '{0: "<s>", 2: "</s>", 50264: "<mask>"}', '{0: "<s>", 2: "</s>"}',
             (_RT + "test_a_bpe_vocabulary_starting_with_s_but_without_mask_is_refused_naming_"
                    "mask",)),
)

_TRACKER = ("tests/test_convert_refusals.py::test_a_tracker_file_naming_an_iteration_not_there_is_"
            "refused_naming_the_one_that_is",)
ENTRIES += (
    Mutation("a tracker naming a missing iteration falls through to the generic refusal",
             "glmjax/convert/original.py",
             "    if tag and _holds_parts(os.path.join(folder, tag)):\n"
             "      return os.path.join(folder, tag)\n",
             "    return os.path.join(folder, tag)\n", _TRACKER),
    Mutation("the tracker's refusal names no folder to give", "glmjax/convert/original.py",
             'fix = (f"give --from={os.path.join(folder, held[0])}" if len(held) == 1 else',
             'fix = ("" if len(held) == 1 else', _TRACKER),
    Mutation("a stale tracker beside the parts refuses them", "glmjax/convert/original.py",
             "    if _holds_parts(folder):  # a stale tracker beside the parts themselves",
             "    if False:",
             ("tests/test_convert_refusals.py::test_a_stale_tracker_beside_the_parts_themselves_is_"
              "warned_of_and_the_parts_read",)),
)

ENTRIES += (
    Mutation("an export whose import moved away says nothing", "glmjax/convert/__init__.py",
             "    if parent and not epath.Path(parent).is_dir():\n      log.warning(",
             "    if False:\n      log.warning(",
             ("tests/test_convert_export.py::test_a_run_whose_import_was_moved_away_exports_plain_"
              "float32_and_says_why",)),
)

_GMASK = ("tests/test_convert_torch_files.py::test_a_chinese_glm_trained_without_fix_command_"
          "token_gets_the_hub_release_s_gmask_row",)
ENTRIES += (
    Mutation("GLM-10B-Chinese's [gMASK] row is left where its training put it",
             "glmjax/convert/original.py", "  table[pieces + 9] = table[pieces + 7]\n", "",
             _GMASK),
    Mutation("the [gMASK] row is copied even with --fix-command-token",
             "glmjax/convert/original.py", "          and not args.get(\"fix_command_token\")",
             "          and True", _GMASK),
    Mutation("Chinese Megatron files without args are imported without a word",
             "glmjax/convert/original.py",
             "  if \"tokenizer_type\" not in args and table.shape == (specials.pad_vocab("
             "pieces + 11), 4096):", "  if False:",
             ("tests/test_convert_torch_files.py::test_glm_10b_chinese_shaped_files_without_args_"
              "are_warned_of_and_kept_as_they_are",)),
    Mutation("a Megatron file without a word table fails on a bare KeyError",
             "glmjax/convert/original.py",
             '  table = tensors.get("word_embeddings.weight")\n',
             '  table = tensors["word_embeddings.weight"]\n',
             ("tests/test_convert_torch_files.py::test_a_megatron_file_without_the_word_table_is_"
              "refused_naming_it",)),
)

ENTRIES += (
    Mutation("every TPU description sets and removes libtpu's variables",
             "glmjax/topology.py",
             '  added = ([] if jax.config.jax_platforms != "cpu" or started.is_set()',
             '  added = ([] if jax.config.jax_platforms != "cpu"',
             ("tests/test_topology.py::test_a_description_after_libtpu_s_first_start_changes_no_"
              "environment_variable",)),
)

_LARGE_CPU = ("tests/test_save_costs.py::test_a_large_array_on_cpu_devices_is_checksummed_a_chunk_"
              "at_a_time_to_the_same_values",)
ENTRIES += (
    Mutation("a consuming export keeps every parameter", "glmjax/convert/mapping.py",
             "  take = _pop if consume else _get\n", "  take = _get\n",
             (_TM + "test_a_consuming_export_gives_the_same_tensors_and_empties_the_parameters",)),
    Mutation("parameters moved to the host stay on the devices too", "glmjax/pretrained.py",
             "    host = np.array(leaf)\n    leaf.delete()\n", "    host = np.array(leaf)\n",
             (_TM + "test_parameters_moved_to_the_host_free_each_device_array_as_it_is_copied",)),
    Mutation("a large array on CPU devices is hashed whole", "glmjax/checksums.py",
             "  return tuple(HOST_CHUNK if getattr(leaf, \"size\", 0) > HOST_CHUNK and all(",
             "  return tuple(0 if getattr(leaf, \"size\", 0) > HOST_CHUNK and all(", _LARGE_CPU),
    Mutation("each chunk hashes its elements' indices from 0", "glmjax/checksums.py",
             "_part_summary(part, i * chunk)", "_part_summary(part, 0)", _LARGE_CPU),
    Mutation("the short last chunk is left out of the sums", "glmjax/checksums.py",
             "  if flat.size % chunk:\n", "  if False:\n", _LARGE_CPU),
)

ENTRIES += (
    Mutation("an export's parameters are read onto the devices", "glmjax/params_restore.py",
             "                if on_host else ocp.checkpoint_utils.construct_restore_args(item)),",
             "                if False else ocp.checkpoint_utils.construct_restore_args(item)),",
             (_TM + "test_an_export_reads_the_parameters_into_host_memory_checked_as_a_device_"
                    "load_is",)),
)

ENTRIES += (
    Mutation("a long parameter write is silent", "glmjax/pretrained.py",
             "  if every_s <= 0:\n    yield\n    return\n  done, started",
             "  if True:\n    yield\n    return\n  done, started",
             (_TM + "test_a_long_parameter_write_says_how_far_it_got_until_it_ends",)),
)
