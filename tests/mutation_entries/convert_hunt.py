"""Planted bugs in checkpoint conversion, the run's log copy and the traffic count that passed
the suite (session 38's convert hunt): --trust_pickle lost on the way to a .bin or a named
mp_rank file, training args or GPU storages refused, a config.json's width unchecked, the hub's
.json files left behind, every process's log copy under process 0's name, a failed copy counted
as made, a kernel's fusion counted as memory traffic; and the two bugs the hunt found: a
non-tensor entry's bare error, a bucket workdir's tokenizer looked for in the current folder."""
from mutation_entries import Mutation

_ORIGINAL, _CONVERT, _RUN_LOG = ("glmjax/convert/original.py", "glmjax/convert/__init__.py",
                                 "glmjax/run_log.py")
_TORCH = "tests/test_convert_torch_files.py::"
_LOGS = "tests/test_logs.py::"
_GPU = _TORCH + "test_a_checkpoint_saved_from_a_gpu_imports_on_a_machine_without_one"

ENTRIES = (
    Mutation("every process of a bucket run copies its log under process 0's name",
             _RUN_LOG, "_copy_path(workdir, process_index) if is_remote(workdir)",
             "_copy_path(workdir, 0) if is_remote(workdir)",
             (_LOGS + "test_each_process_of_a_bucket_run_copies_its_log_to_a_file_of_its_own",)),
    Mutation("a Megatron file's training args (argparse.Namespace) need --trust_pickle",
             _ORIGINAL, "with torch.serialization.safe_globals([argparse.Namespace]):",
             "with torch.serialization.safe_globals([]):",
             (_TORCH + "test_a_megatron_file_holding_its_training_args_but_no_rng_states_needs_"
              "no_trust_pickle",)),
    Mutation("--trust_pickle is dropped when --from names the mp_rank file itself", _ORIGINAL,
             "return read_megatron(os.path.dirname(path) or \".\", allow_pickle=allow_pickle)",
             "return read_megatron(os.path.dirname(path) or \".\")",
             (_TORCH + "test_trust_pickle_reaches_a_megatron_file_named_by_itself",)),
    Mutation("--trust_pickle is ignored for Hugging Face .bin files", _ORIGINAL,
             "_load_torch_file(path, allow_pickle=allow_pickle).items()}",
             "_load_torch_file(path, allow_pickle=False).items()}",
             (_TORCH + "test_trust_pickle_reaches_a_hugging_face_bin_file",)),
    Mutation("torch files are loaded onto the devices they were saved from (GPU saves fail)",
             _ORIGINAL, "map_location=\"cpu\", weights_only=not allow_pickle",
             "weights_only=not allow_pickle", (_GPU + "[hf-bin]", _GPU + "[megatron]")),
    Mutation("a config.json whose hidden_size contradicts the tensors imports silently",
             _CONVERT, "((\"num_layers\", \"num_layers\"), (\"hidden_size\", \"hidden_size\"),\n"
             "                       (\"vocab_size\", \"vocab_size\"))",
             "((\"num_layers\", \"num_layers\"),\n                       "
             "(\"vocab_size\", \"vocab_size\"))",
             ("tests/test_convert_refusals.py::test_a_config_that_does_not_match_the_tensors_is_"
              "named",)),
    Mutation("import keeps none of the hub folder's .json files (tokenizer_config.json)",
             _CONVERT, "\".pt\", \".index.json\"))]", "\".pt\", \".json\"))]",
             ("tests/test_convert_export.py::test_a_run_continued_from_an_import_exports_in_the_"
              "import_s_dtypes_names_and_files",)),
    Mutation("a failed log copy records the size copied so the copy at exit is skipped",
             _RUN_LOG, "      destination.write_bytes(data)  # whole: an object in a bucket "
             "cannot be appended to\n      self._copied_size, self._last_ok = size, True\n",
             "      self._copied_size = size\n      destination.write_bytes(data)  # whole: an "
             "object in a bucket cannot be appended to\n      self._last_ok = True\n",
             (_LOGS + "test_lines_whose_copy_failed_reach_the_bucket_once_it_takes_copies_"
              "again",)),
    Mutation("a fusion wrapping a custom call (a kernel) counts as memory traffic",
             "glmjax/bench/traffic.py", "r\" (dot|convolution|custom-call)\\(\"",
             "r\" (dot|convolution)\\(\"",
             ("tests/test_bench_traffic.py::test_a_fusion_around_a_kernel_s_custom_call_is_left_"
              "out_as_a_matmul_is",)),
    Mutation("a state-dict entry that is not a tensor fails with a bare AttributeError",
             _ORIGINAL, "  if not isinstance(value, torch.Tensor):  # a state dict holds "
             "tensors; this is something else\n", "  if False:\n",
             (_TORCH + "test_an_entry_that_is_not_a_tensor_is_refused_in_one_line_naming_it_"
              "and_its_file[hf-bin]",
              _TORCH + "test_an_entry_that_is_not_a_tensor_is_refused_in_one_line_naming_it_"
              "and_its_file[megatron]")),
    Mutation("a bucket workdir's stored tokenizer is looked for in the current folder",
             "glmjax/pretrained.py", "  elif path and not os.path.isabs(path) and "
             "(epath.Path(workdir) / path).exists():\n", "  elif False:\n",
             ("tests/test_convert_tokenizer.py::test_an_imported_workdir_in_a_bucket_reads_the_"
              "tokenizer_stored_in_it_not_the_current_folder_s",)),
    Mutation("a bucket workdir's top-level tokenizer file brings the run's other files along",
             "glmjax/pretrained.py",
             '    if file.is_file() and (not top_level or file.name in (inside.name, "merges.txt")):',
             "    if file.is_file():",
             ("tests/test_convert_tokenizer.py::test_an_imported_workdir_in_a_bucket_reads_the_"
              "tokenizer_stored_in_it_not_the_current_folder_s",)),
)
