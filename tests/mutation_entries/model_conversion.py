"""Planted bugs in the model's configuration, attention, positions and checkpoint conversion."""
from mutation_entries import Mutation

_C = "tests/test_convert.py::"
_EXPORT = "tests/test_convert_export.py::"
_R = "tests/test_convert_refusals.py::"
_T = "tests/test_convert_tokenizer.py::"
_V = "tests/test_config_validation.py::"
_A = "tests/test_attention.py::"
_M = "tests/test_remat_and_scan.py::"

_IMPORT_FLAGS = (_C + "test_the_convert_command_hands_the_import_the_tokenizer_heads_and_"
                 "pickle_flags",)
_REFUSED = (_C + "test_the_convert_command_refuses_a_command_line_missing_a_folder_or_with_"
            "extra_words",)
_ROUND_TRIP = (_EXPORT + "test_a_run_s_own_tokenizer_goes_out_with_its_export_and_comes_back_"
               "with_the_import",)

_NON_EMPTY_OUT = (_R + "test_an_out_folder_holding_other_files_is_refused_by_import_and_"
                  "export_and_kept",)
_OWN_FOLDER = (_R + "test_import_refuses_the_checkpoint_s_own_folder_as_out_and_leaves_it_as_it_"
               "was", _R + "test_export_refuses_the_workdir_itself_as_out_and_the_workdir_still_"
               "loads")
_EMPTY_OUT = (_EXPORT + "test_an_existing_empty_out_folder_is_written_by_export_and_by_import",)

ENTRIES: tuple[Mutation, ...] = (
    # --out is new or empty: a folder that holds files, the source's above all, is kept.
    Mutation("convert writes into an --out folder that holds files",
             "glmjax/convert/__init__.py", "  if not names:\n    return\n",
             "  if True:\n    return\n", _NON_EMPTY_OUT + _OWN_FOLDER),
    Mutation("import checks --out only for a file, not for a folder that holds files",
             "glmjax/convert/__init__.py",
             '  _require_new_folder(out, "the glmjax workdir", "--from", source_folder(source))\n',
             "  if os.path.isfile(out):\n    raise ValueError(out)\n",
             _NON_EMPTY_OUT + _OWN_FOLDER[:1]),
    Mutation("export checks --out only for a file, not for a folder that holds files",
             "glmjax/convert/__init__.py",
             '  _require_new_folder(out, "the Hugging Face files", "--workdir", workdir)\n',
             "  if os.path.isfile(out):\n    raise ValueError(out)\n",
             _NON_EMPTY_OUT + _OWN_FOLDER[1:]),
    Mutation("convert refuses an --out folder that exists but is empty",
             "glmjax/convert/__init__.py", "  if not names:\n    return\n",
             "  if not os.path.isdir(out):\n    return\n", _EMPTY_OUT),
    Mutation("the source folder given as --out is described as a folder of other files",
             "glmjax/convert/__init__.py",
             "  if os.path.isdir(source) and os.path.samefile(out, source):\n",
             "  if False:\n", _OWN_FOLDER),
    Mutation("export's --out is taken for the workdir itself when it holds files",
             "glmjax/convert/__init__.py",
             "  if os.path.isdir(source) and os.path.samefile(out, source):\n",
             "  if os.path.isdir(source):\n", _NON_EMPTY_OUT),
    # An import's parameters carry the tokenizer it stored, as a run's checkpoints do.
    Mutation("an import records no tokenizer with its parameters", "glmjax/convert/__init__.py",
             "tokenizer=stored_tokenizer_info(config.data, out) if tokenizer else None,",
             "tokenizer=None,", _ROUND_TRIP),
    Mutation("a saved workdir drops the tokenizer it is given", "glmjax/pretrained.py",
             '**({"tokenizer": tokenizer} if tokenizer else {})}', "}", _ROUND_TRIP),
    # A run's own tokenizer goes out with its export and comes back with the import.
    Mutation("export leaves the run's tokenizer behind", "glmjax/convert/__init__.py",
             "  described = export_tokenizer(loaded, out)\n", '  described = ""\n',
             _ROUND_TRIP),
    Mutation("import ignores the tokenizer an export recorded", "glmjax/convert/__init__.py",
             "  recorded = {} if tokenizer else recorded_tokenizer(source)\n",
             "  recorded = {}\n", _ROUND_TRIP),
    Mutation("an import of a byte-tokenizer export reads as one without a tokenizer",
             "glmjax/pretrained.py", '      and _imported_tokenizer(workdir) != "byte"):',
             "      ):", _ROUND_TRIP),
    Mutation("import takes a damaged tokenizer record for none",
             "glmjax/convert/tokenizer_files.py",
             "  except (ValueError, KeyError, TypeError, AttributeError) as error:\n"
             "    raise ValueError(",
             "  except (ValueError, KeyError, TypeError, AttributeError) as error:\n"
             "    return {}\n    raise ValueError(",
             (_EXPORT + "test_a_damaged_tokenizer_record_is_one_line_naming_it",)),
    # Reading the original layouts (glmjax/convert/original.py).
    Mutation("a glm.-prefixed checkpoint with an unprefixed head is read with its keys as stored",
             "glmjax/convert/original.py",
             "prefixed = any(key.startswith(PREFIX) for key in tensors)",
             "prefixed = all(key.startswith(PREFIX) for key in tensors)",
             (_C + "test_a_fine_tuned_classifier_imports_its_glm_network_and_leaves_its_head_"
              "out",)),
    Mutation("an import from a model.safetensors path looks for config.json inside the file",
             "glmjax/convert/original.py",
             '  folder = os.path.dirname(path) or "."\n  if os.path.isfile(',
             "  folder = path\n  if os.path.isfile(",
             (_C + "test_an_import_from_a_weights_file_reads_the_whole_checkpoint_of_its_folder",)),
    Mutation("an mp_rank_00_model_states.pt path is matched from its start (re.match)",
             "glmjax/convert/original.py",
             r'if re.search(r"mp_rank_\d+_model_states\.pt$", path):',
             r'if re.match(r"mp_rank_\d+_model_states\.pt$", path):',
             (_C + "test_an_import_from_a_weights_file_reads_the_whole_checkpoint_of_its_folder",)),
    Mutation("a sharded folder with both formats is read from the bin shards (torch, pickle)",
             "glmjax/convert/original.py",
             '((SAFETENSORS_INDEX, "safetensors"), (TORCH_BIN_INDEX, "bin"))',
             '((TORCH_BIN_INDEX, "bin"), (SAFETENSORS_INDEX, "safetensors"))',
             (_C + "test_a_folder_with_both_safetensors_and_bin_weights_is_read_from_the_"
              "safetensors",)),
    Mutation("a folder with both model.safetensors and pytorch_model.bin is read from the bin",
             "glmjax/convert/original.py",
             'for name, fmt in ((SAFETENSORS, "safetensors"), (TORCH_BIN, "bin")):',
             'for name, fmt in ((TORCH_BIN, "bin"), (SAFETENSORS, "safetensors")):',
             (_C + "test_a_folder_with_both_safetensors_and_bin_weights_is_read_from_the_"
              "safetensors",)),
    # The model config a checkpoint implies, and export (glmjax/convert/__init__.py).
    Mutation("a checkpoint missing layers its config.json counts imports as a shallower model",
             "glmjax/convert/__init__.py",
             'for key, field in (("num_layers", "num_layers"), ("hidden_size", "hidden_size"),',
             'for key, field in (("hidden_size", "hidden_size"),',
             (_R + "test_a_checkpoint_missing_the_last_layer_that_its_config_counts_is_refused",)),
    Mutation("block_position_encoding=false is refused as a missing tensor, not by its setting",
             "glmjax/convert/__init__.py",
             'if hf.get("relative_encoding") or hf.get("block_position_encoding") is False:',
             'if hf.get("relative_encoding"):',
             (_R + "test_a_checkpoint_trained_without_block_positions_is_refused_naming_the_"
              "setting",)),
    Mutation("export copies the imported config.json over the one it writes",
             "glmjax/convert/__init__.py",
             "    (epath.Path(out) / path.name).write_bytes(path.read_bytes())\n"
             "  written = original.write_hf(out, tensors, _hf_config(model_config, "
             'source.get("hf_config")),\n'
             '                              prefixed=bool(source.get("prefixed")))\n',
             "    pass\n"
             "  written = original.write_hf(out, tensors, _hf_config(model_config, "
             'source.get("hf_config")),\n'
             '                              prefixed=bool(source.get("prefixed")))\n'
             "  for path in kept.iterdir() if kept and kept.is_dir() else []:\n"
             "    (epath.Path(out) / path.name).write_bytes(path.read_bytes())\n",
             (_EXPORT + "test_a_run_continued_with_other_dropout_rates_exports_them_not_the_"
              "imported_ones",)),
    Mutation("a model trained from scratch exports block_position_encoding=false",
             "glmjax/convert/__init__.py",
             '"block_position_encoding": True, "relative_encoding": False,',
             '"block_position_encoding": False, "relative_encoding": False,',
             (_EXPORT + "test_a_model_trained_from_scratch_exports_a_config_json_that_imports_back_"
              "to_it",)),
    Mutation("export lets a GeGLU model through to a KeyError", "glmjax/convert/__init__.py",
             '"norm": ("pre",), "mlp": ("gelu",),', '"norm": ("pre",),',
             (_R + "test_export_refuses_a_model_with_other_parameters_than_the_hugging_face_"
              "glm_code_has",)),
    Mutation("export lets a rotary model through to a KeyError", "glmjax/convert/__init__.py",
             '{"position_encoding": ("learned_2d",), "norm"', '{"norm"',
             (_R + "test_export_refuses_a_model_with_other_parameters_than_the_hugging_face_"
              "glm_code_has",)),
    Mutation("a wrong --tokenizer is found only after the checkpoint is read and --out made",
             "glmjax/convert/__init__.py",
             "    released_tokenizers.tokenizer_fields(tokenizer)\n  log.info(",
             "    pass\n  log.info(",
             (_T + "test_an_import_given_a_tokenizer_path_that_holds_none_is_refused_before_it_"
              "writes_anything",)),
    # The model's configuration and attention.
    Mutation("ModelConfig accepts rope with an odd head dim", "glmjax/model/model_config.py",
             '{"rope_2d": 4, "rope": 2}', '{"rope_2d": 4, "rope": 1}',
             (_V + "test_rope_with_an_odd_head_dim_is_refused_when_built_directly",)),
    Mutation("the cuDNN row split's output is saved twice under remat (context tagged too)",
             "glmjax/model/model_config.py",
             '"cudnn": Kernel(named_residuals=True, sixteen_bit_only=True),',
             '"cudnn": Kernel(sixteen_bit_only=True),',
             (_M + "test_remat_minimal_keeps_the_cudnn_row_split_s_outputs_without_tagging_the_"
              "context",)),
    Mutation("a fused kernel refuses an rng that comes with a zero dropout rate",
             "glmjax/model/attention.py", "dropout_rate > 0.0\n", "dropout_rate >= 0.0\n",
             (_A + "test_a_fused_kernel_given_an_rng_and_a_zero_dropout_rate_attends_without_"
              "dropout",)),
    # Session 28's hunt: a weights file as --from, zero dropout, stale .bin, dtype, heads, bpe.
    Mutation("an import by weights file looks for the tokenizer in the file, not its folder",
             "glmjax/convert/__init__.py",
             "folder = source_folder(source)  # a weights file's folder holds its tokenizer",
             "folder = source  # a weights file's folder holds its tokenizer",
             (_T + "test_the_tokenizer_in_a_hugging_face_folder_is_stored_without_naming_it["
              "hf/model.safetensors]",)),
    Mutation("a zero dropout rate in config.json imports as the default",
             "glmjax/convert/__init__.py",
             "fields.update({k: float(v) for k, v in dropout.items() if v is not None})",
             "fields.update({k: float(v) for k, v in dropout.items() if v})",
             (_EXPORT + "test_zero_dropout_in_a_bin_folder_s_config_json_imports_as_zero_and_"
              "exports_no_bin",)),
    Mutation("export copies the imported .bin weights beside the new ones",
             "glmjax/convert/__init__.py",
             'and not name.endswith((".bin", ".safetensors", ".pt", ".index.json"))',
             'and not name.endswith((".safetensors", ".pt", ".index.json"))',
             (_EXPORT + "test_zero_dropout_in_a_bin_folder_s_config_json_imports_as_zero_and_"
              "exports_no_bin",)),
    Mutation("an import stores the source's float32 as the compute dtype",
             "glmjax/convert/__init__.py",
             'if hasattr(model_config, key) and key not in ("dtype", "param_dtype",',
             'if hasattr(model_config, key) and key not in ("param_dtype",',
             (_T + "test_the_tokenizer_in_a_hugging_face_folder_is_stored_without_naming_it[hf]",)),
    Mutation("a Megatron file's head count is not read", "glmjax/convert/__init__.py",
             'recorded = in_config or int(args.get("num_attention_heads", 0))',
             "recorded = in_config",
             (_C + "test_a_megatron_file_with_training_args_and_rng_states",)),
    Mutation("an export's record points the tokenizer at its last file (bpe: merges.txt)",
             "glmjax/convert/tokenizer_files.py",
             'path = os.path.join(TOKENIZER_DIR, record["files"][0])',
             'path = os.path.join(TOKENIZER_DIR, record["files"][-1])',
             (_ROUND_TRIP[0] + "[bpe]",)),
    Mutation("an import by weights file misses the export's tokenizer record",
             "glmjax/convert/tokenizer_files.py",
             "  path = os.path.join(source_folder(source), TOKENIZER_RECORD)",
             "  path = os.path.join(source, TOKENIZER_RECORD)",
             (_ROUND_TRIP[0] + "[wordpiece]",)),
    Mutation("--from=model.safetensors in the current folder lists the folder ''",
             "glmjax/convert/tokenizer_files.py",
             '(os.path.dirname(source) or ".")', "os.path.dirname(source)",
             (_T + "test_the_tokenizer_in_a_hugging_face_folder_is_stored_without_naming_it["
              "model.safetensors]",)),
    # The convert command's flags and failures.
    Mutation("convert import drops --tokenizer", "glmjax/convert/__main__.py",
             "tokenizer=_TOKENIZER.value,", 'tokenizer="",', _IMPORT_FLAGS),
    Mutation("convert import drops --num_heads", "glmjax/convert/__main__.py",
             "num_heads=_NUM_HEADS.value, allow_pickle", "num_heads=0, allow_pickle",
             _IMPORT_FLAGS),
    Mutation("convert import unpickles without --trust_pickle", "glmjax/convert/__main__.py",
             "allow_pickle=_TRUST_PICKLE.value)", "allow_pickle=True)", _IMPORT_FLAGS),
    Mutation("convert export runs without --out", "glmjax/convert/__main__.py",
             "  if not all(needed):", "  if not any(needed):", _REFUSED),
    Mutation("convert takes extra words after its command", "glmjax/convert/__main__.py",
             "if len(argv) != 2 or", "if len(argv) < 2 or", _REFUSED),
    Mutation("convert shows a traceback for an unusable checkpoint", "glmjax/convert/__main__.py",
             "mapping.CheckpointMismatchError,\n"
             "                checkpoint_lib.UnusableCheckpointError)",
             "mapping.CheckpointMismatchError)",
             (_C + "test_the_convert_command_reports_an_unusable_checkpoint_in_one_line",)),
    Mutation("convert's mistyped command is not named", "glmjax/convert/__main__.py",
             """             else f"{' '.join(argv[1:])!r} is not a command")""",
             """             else "not a command")""",
             (_C + "test_the_convert_command_refuses_a_command_line_missing_a_folder_or_"
              "with_extra_words",)),
    Mutation("load_pretrained leaves an original checkpoint's attention at 'auto'",
             "glmjax/convert/__init__.py",
             '  return dataclasses.replace(model_config, attention="xla"), params',
             "  return model_config, params",
             (_C + "test_each_original_layout_gives_the_original_logits",)),
    Mutation("an import of a model with few positions keeps GLM's 39-token spans, which its rows "
             "cannot hold", "glmjax/convert/__init__.py",
             "  config.data.max_span_length = min(config.data.max_span_length,\n"
             "                                    max(1, config.data.seq_len - 4))\n", "",
             (_C + "test_the_imported_workdir_is_what_train_continues_from",)),
)
