"""Planted bugs in session 47's work: what session 46 left (apt's lock on a new TPU VM, spans
that piled up at packed documents' starts), tokamax's lengths and GPUs, an import's memory and
tokenizer."""
from mutation_entries import Mutation

_PLACE = "glmjax/data/span_placement.py"
_TI = "tests/test_span_placement.py::"
_TOKENIZER_ROWS = ("tests/test_convert_tokenizer.py::test_an_import_warns_of_a_tokenizer_whose_"
                   "ids_are_not_the_checkpoint_s_rows",)
_HOST_SUM = ("tests/test_save_costs.py::test_a_host_array_s_checksum_is_the_device_one_computed_a_"
             "chunk_at_a_time",)
_ASSIGN = (_TI + "test_spans_go_to_documents_as_the_reference_assigns_them",)
_LEFT_OVER = (_TI + "test_spans_the_reference_s_rule_leaves_over_go_where_they_fit_and_a_row_"
              "keeps_one",)
_APT = ("tests/test_launch_tpu_setup.py::test_setup_on_a_new_vm_waits_while_its_first_upgrade_"
        "holds_apt_s_lock",)

ENTRIES = (
    Mutation("setup's apt-get is tried once", "launch/tpu_remote.py",
             "for try in $(seq {APT_TRIES}); do", "for try in $(seq 1); do", _APT),
    Mutation("apt_get tries again on any error, a package the sources lack too",
             "launch/tpu_remote.py",
             'APT_LOCK_ERRORS = "Could not get lock|Unable to lock|Unable to acquire"',
             'APT_LOCK_ERRORS = "Could not get lock|Unable to lock|Unable to acquire|Unable to"',
             ("tests/test_launch_tpu_setup.py::test_setup_stops_at_once_on_an_apt_error_that_is_"
              "not_a_held_lock",)),
    Mutation("apt_get hides apt's own error", "launch/tpu_remote.py",
             "f'rm -f \"$err\"; return 0; fi; cat \"$err\" >&2; if ! grep -qE '",
             "f'rm -f \"$err\"; return 0; fi; if ! grep -qE '",
             _APT + ("tests/test_launch_tpu_setup.py::test_setup_stops_at_once_on_an_apt_error_"
                     "that_is_not_a_held_lock",)),
    Mutation("setup installs Python with a bare apt-get again", "launch/tpu_remote.py",
             'f"if ! command -v {python} >/dev/null; then apt_get update -qq; "',
             'f"if ! command -v {python} >/dev/null; then sudo apt-get update -qq; "', _APT),
    Mutation("apt_get succeeds after its last failed try", "launch/tpu_remote.py",
             "stayed held\" >&2; return 1; }}')", "stayed held\" >&2; return 0; }}')",
             ("tests/test_launch_tpu_setup.py::test_setup_stops_with_the_apt_command_named_when_"
              "the_lock_is_never_released",)),
    Mutation("a shorter document's budget counts the separators too", _PLACE,
             "np.minimum(blank_budget(mask_ratio, size) + run_length,",
             "np.minimum(blank_budget(mask_ratio, size),", _ASSIGN),
    Mutation("a shorter document's budget rounds up", _PLACE,
             "blank_budget(mask_ratio, size)", "np.ceil(mask_ratio * size).astype(np.int64)",
             _ASSIGN),
    Mutation("leftover spans ignore what a document already holds", _PLACE,
             " + 1 - np.take_along_axis(held, order[:, rank:rank + 1], 1))", " + 1)",
             (_TI + "test_spans_the_reference_s_rule_leaves_over_go_where_they_fit_and_a_row_keeps_"
              "one",)),
    Mutation("a later document's spans start at its start plus all earlier spans' units", _PLACE,
             "            - np.take_along_axis(np.cumsum(held, axis=1) - held, segment, axis=1))",
             "            )",
             (_TI + "test_place_spans_multi_document_respects_barriers",
              _TI + "test_no_token_of_a_packed_row_starts_a_span_more_often_than_its_document_s_"
              "others")),
    Mutation("spans are placed along the joined documents again (one document's draws for all)",
             _PLACE, "  doc_key = np.where(valid, segment, count)\n",
             "  doc_key = np.where(valid, 0, count)\n",
             (_TI + "test_place_spans_multi_document_respects_barriers",)),
    Mutation("a shorter document's budget is not capped at its room", _PLACE,
             "give(rank, np.minimum(blank_budget(mask_ratio, size) + run_length, size + 1))",
             "give(rank, blank_budget(mask_ratio, size) + run_length)",
             (_TI + "test_a_shorter_document_never_takes_more_spans_than_it_holds_whatever_the_"
              "ratio",)),
    Mutation("the data benchmark counts the row's own first place as a document's first",
             "glmjax/bench/data.py", "  first[:, 2:] = tokens[:, 1:-1] == marks.cls",
             "  first[:, 1:] = tokens[:, :-1] == marks.cls",
             ("tests/test_bench_data.py::test_the_data_benchmark_counts_span_starts_at_a_later_"
              "document_s_first_place_and_elsewhere",)),
    Mutation("a leftover span's room in a document forgets its closing barrier", _PLACE,
             "    give(rank, sizes[:, rank:rank + 1] + 1 - np.take_along_axis(held",
             "    give(rank, sizes[:, rank:rank + 1] - np.take_along_axis(held", _LEFT_OVER),
    Mutation("an empty document offers room to a leftover span of 1", _PLACE,
             "    give(rank, sizes[:, rank:rank + 1] + 1 - np.take_along_axis(held",
             "    give(rank, sizes[:, rank:rank + 1] + 2 - np.take_along_axis(held",
             (_TI + "test_a_document_with_nothing_to_mask_takes_no_span_even_one_left_over",)),
    Mutation("the longest document's room forgets its closing barrier", _PLACE,
             "  give(count - 1, sizes[:, -1:] + 1)", "  give(count - 1, sizes[:, -1:])",
             (_TI + "test_spans_that_exactly_fill_a_segment_are_all_placed",)),
    Mutation("a row with no text to mask gets a span of 1", _PLACE,
             "active[:, 0] & (sizes[:, -1] > 0)", "active[:, 0] & (sizes[:, -1] >= 0)", _LEFT_OVER),
    Mutation("tokamax declared to take any sequence length", "glmjax/model/model_config.py",
             '    "tokamax": Kernel(seq_len_multiple=128, named_residuals=True',
             '    "tokamax": Kernel(seq_len_multiple=1, named_residuals=True',
             ("tests/test_gpu_kernels.py::test_tokamax_lowers_for_an_h100_at_every_sequence_length_"
              "its_declared_multiple_allows",
              "tests/test_config_attention.py::test_tokamax_needs_whole_chunks_of_128_rows_and_auto_"
              "for_a_gpu_takes_cudnn_off_them")),
    Mutation("tokamax counted usable on any GPU from sm90 on", "glmjax/attention_choice.py",
             "return 9.0 <= float(getattr(device, \"compute_capability\", \"0\")) < 11.0",
             "return 9.0 <= float(getattr(device, \"compute_capability\", \"0\"))",
             ("tests/test_config_attention.py::test_auto_for_a_gpu_target_takes_tokamax_on_sm90_"
              "and_sm100_and_cudnn_on_other_gpus[RTX 5090]",)),
    Mutation("a host without a GPU counts tokamax usable", "glmjax/attention_choice.py",
             "except RuntimeError:  # no GPU on this host: nothing to read the capability from\n"
             "      return False",
             "except RuntimeError:  # no GPU on this host: nothing to read the capability from\n"
             "      return True",
             ("tests/test_config_attention.py::test_a_gpu_program_asked_for_off_a_gpu_host_without_"
              "a_device_does_not_pick_tokamax",)),
    Mutation("an import holds the source's arrays through the save", "glmjax/convert/__init__.py",
             "num_heads=num_heads, consume=True)\n  checkpoint = dataclasses.replace(checkpoint, "
             "tensors={})\n", "num_heads=num_heads)\n",
             ("tests/test_import_memory.py::test_an_import_lets_go_of_the_source_s_arrays_before_"
              "it_writes_the_parameters",)),
    Mutation("a host array's checksum goes through the device program", "glmjax/checksums.py",
             "  on_device = [i for i, leaf in enumerate(leaves) if not _on_host(leaf)]",
             "  on_device = list(range(len(leaves)))", _HOST_SUM),
    Mutation("a host array's hash leaves out the element's index", "glmjax/checksums.py",
             "index * np.uint32(0x85EBCA77)", "index * np.uint32(0)", _HOST_SUM),
    Mutation("a host array's chunks hash their own index from 0", "glmjax/checksums.py",
             "index = np.arange(start, start + part.size, dtype=np.uint64)",
             "index = np.arange(0, part.size, dtype=np.uint64)", _HOST_SUM),
    Mutation("an import takes any tokenizer without a word", "glmjax/convert/__init__.py",
             "    _warn_of_another_model_s_tokenizer(tokenizer, model_config.vocab_size)\n",
             "    pass\n", _TOKENIZER_ROWS),
    Mutation("an import warns of every tokenizer", "glmjax/convert/__init__.py",
             '  elif found["vocab_size"] != rows:', "  else:", _TOKENIZER_ROWS),
    Mutation("a failed import leaves its half-written --out", "glmjax/convert/__init__.py",
             "    except BaseException:\n      if before is None:",
             "    except BaseException:\n      raise\n      if before is None:",
             ("tests/test_convert_refusals.py::test_a_failed_import_leaves_out_as_it_found_it_and_"
              "the_same_command_then_runs",)),
    Mutation("a refused --out that held files is emptied", "glmjax/convert/__init__.py",
             "      elif not before:", "      else:",
             ("tests/test_convert_refusals.py::test_an_out_folder_holding_other_files_is_refused_"
              "by_import_and_export_and_kept",)),
)
