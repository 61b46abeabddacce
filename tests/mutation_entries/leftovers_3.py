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

# Session 48's mutation hunt over the day's changes: the gaps it found, each closed by a test.
_SC = "tests/test_save_costs.py::"
_X64 = (_SC + "test_with_x64_on_a_chunked_8_byte_array_has_the_checksum_it_has_hashed_whole",)
_OWN = (_SC + "test_each_array_is_hashed_with_its_own_chunk_beside_host_arrays_and_in_a_"
        "snapshot",)
ENTRIES += (
    Mutation("a chunk of 8-byte elements starts its word indices at the element index",
             "glmjax/checksums.py",
             "  first = jnp.asarray(start, jnp.uint32) * jnp.uint32(words)",
             "  first = jnp.asarray(start, jnp.uint32)", _X64),
    Mutation("a chunk's non-finite count is summed in the default integer type",
             "glmjax/checksums.py", "jnp.sum(~jnp.isfinite(part), dtype=jnp.int32)",
             "jnp.sum(~jnp.isfinite(part))", _X64),
    Mutation("the chunks are given to the arrays in the wrong order", "glmjax/checksums.py",
             "for leaf, chunk in zip(leaves, chunks)]",
             "for leaf, chunk in zip(leaves, chunks[::-1])]", _OWN),
    Mutation("a snapshot's copy hashes every array whole", "glmjax/checksums.py",
             "  copies, summaries = _copies_and_summaries(leaves, _chunks(leaves))",
             "  copies, summaries = _copies_and_summaries(leaves, (0,) * len(leaves))", _OWN),
    Mutation("the device arrays' chunks are counted over the host arrays too",
             "glmjax/checksums.py", "_summaries(device_leaves, _chunks(device_leaves))",
             "_summaries(device_leaves, _chunks(leaves))", _OWN),
)

_CR = "tests/test_convert_refusals.py::"
ENTRIES += (
    Mutation("an empty tracker beside the parts is read without a word",
             "glmjax/convert/original.py",
             "    if tag and _holds_parts(os.path.join(folder, tag)):",
             "    if _holds_parts(os.path.join(folder, tag)):",
             (_CR + "test_a_stale_tracker_beside_the_parts_themselves_is_warned_of_and_the_parts_"
              "read",)),
    Mutation("the tracker's refusal names only the first of several iterations",
             "glmjax/convert/original.py", "if len(held) == 1 else", "if len(held) >= 1 else",
             (_CR + "test_a_tracker_naming_a_missing_iteration_among_several_lists_every_one_"
              "there",)),
    Mutation("a tracked iteration's folder is globbed unescaped", "glmjax/convert/original.py",
             "  return bool(glob.glob(os.path.join(glob.escape(folder), MEGATRON_PATTERN)))",
             "  return bool(glob.glob(os.path.join(folder, MEGATRON_PATTERN)))",
             (_CR + "test_a_megatron_folder_with_glob_characters_in_its_name_is_read_through_its_"
              "tracker",)),
    Mutation("the Megatron parts are globbed unescaped", "glmjax/convert/original.py",
             "  files = sorted(glob.glob(os.path.join(glob.escape(folder), MEGATRON_PATTERN)))",
             "  files = sorted(glob.glob(os.path.join(folder, MEGATRON_PATTERN)))",
             (_CR + "test_a_megatron_folder_with_glob_characters_in_its_name_is_read_through_its_"
              "tracker",)),
    Mutation("more parts than mp_world_size says are read", "glmjax/convert/original.py",
             "if isinstance(world, int) and world != len(files):",
             "if isinstance(world, int) and world > len(files):",
             (_CR + "test_a_part_of_another_checkpoint_copied_in_beside_the_parts_is_refused_"
              "naming_the_count",)),
)

_TF = "tests/test_convert_torch_files.py::"
_ONLY = (_TF + "test_only_a_chinese_glm_trained_with_task_mask_has_its_gmask_row_copied",)
ENTRIES += (
    Mutation("the [gMASK] row is copied without --task-mask", "glmjax/convert/original.py",
             ' and args.get("task_mask")\n', '\n', _ONLY),
    Mutation("the [gMASK] row is copied for a GPT-2 Megatron checkpoint",
             "glmjax/convert/original.py",
             '  if not (args.get("tokenizer_type") == "ChineseSPTokenizer" and args.get('
             '"task_mask")', '  if not (args.get("task_mask")', _ONLY),
    Mutation("a table without row 50009 is written past its end", "glmjax/convert/original.py",
             "and table.shape[0] > pieces + 9):", "and table.shape[0] >= pieces + 9):", _ONLY),
    Mutation("the [gMASK] row is copied into the table read", "glmjax/convert/original.py",
             "  table = table.copy()\n", "",
             (_TF + "test_the_gmask_row_is_copied_into_a_new_table_leaving_the_one_read_as_it_"
              "was",)),
    Mutation("files whose args lack the tokenizer are not warned of",
             "glmjax/convert/original.py", '  if "tokenizer_type" not in args and table.shape',
             '  if not args and table.shape',
             (_TF + "test_glm_10b_chinese_shaped_files_whose_args_do_not_name_the_tokenizer_are_"
              "warned_of",)),
)

ENTRIES += (
    Mutation("a frozen tree is moved to the host still frozen", "glmjax/pretrained.py",
             "  return jax.tree.map(move, flax.core.unfreeze(params))",
             "  return jax.tree.map(move, params)",
             (_TM + "test_parameters_moved_to_the_host_are_plain_dicts_that_an_export_can_take_"
              "apart",)),
    Mutation("the import's save hides Orbax's override warnings for good", "glmjax/pretrained.py",
             "    absl_log.removeFilter(_drop_handler_overrides)\n", "",
             (_TM + "test_after_an_import_s_save_orbax_s_own_handler_overrides_are_reported_"
              "again",)),
    Mutation("an export without source dtypes writes float32", "glmjax/convert/mapping.py",
             "if key in dtypes else np.asarray(value)",
             "if key in dtypes else np.asarray(value, np.float32)",
             (_TM + "test_a_tensor_without_a_source_dtype_is_exported_in_the_parameters_own_"
              "dtype",)),
)

_HF_ROBERTA = (_RT + "test_a_tokenizer_json_of_roberta_s_vocabulary_gets_the_roberta_ids",)
ENTRIES += (
    Mutation("the roberta layout does not check </s>", "glmjax/data/specials.py",
             '{0: "<s>", 2: "</s>", 50264: "<mask>"}', '{0: "<s>", 50264: "<mask>"}',
             (_RT + "test_a_bpe_vocabulary_starting_with_s_but_without_its_eos_at_2_is_refused_"
              "naming_it",)),
    Mutation("the roberta layout names [gMASK] and [sMASK] each other's",
             "glmjax/data/specials.py",
             '50267: "[gMASK]",\n                 50268: "[sMASK]"',
             '50267: "[sMASK]",\n                 50268: "[gMASK]"',
             (_RT + "test_the_roberta_layout_s_block_tokens_decode_by_their_glm_names",)),
    Mutation("a tokenizer.json of RoBERTa's vocabulary gets no layout",
             "glmjax/data/released_tokenizers.py", '"gpt2": 50257, "roberta": 50265}',
             '"gpt2": 50257}', _HF_ROBERTA),
    Mutation("RoBERTa's vocabulary is taken to end at <mask>",
             "glmjax/data/released_tokenizers.py",
             '"roberta": 50265}', '"roberta": 50264}', _HF_ROBERTA),
)

ENTRIES += (
    Mutation("a long export write is silent", "glmjax/convert/original.py",
             "    if time.monotonic() - last >= PROGRESS_EVERY_S:",
             "    if False:",
             ("tests/test_convert_export.py::test_a_long_export_write_says_how_far_it_got",)),
)

ENTRIES += (
    Mutation("a layout refusal never names the layout the tokens fit", "glmjax/data/specials.py",
             "                                  likely[0] if likely else \"\")",
             "                                  \"\")",
             ("tests/test_roberta_tokenizer.py::test_roberta_s_files_given_the_gpt2_layout_are_"
              "refused_naming_the_roberta_one",)),
)
