"""Planted bugs in saving, restoring, retaining and checking checkpoints, and in surviving
faults."""
from mutation_entries import Mutation

_CK = "tests/test_checkpoint.py::"
_SNAP = "tests/test_device_snapshot.py::"
_DAMAGE = "tests/test_checkpoint_damage.py::"
_FAULTS = "tests/test_faults.py::"
_VERDICTS = "tests/test_fault_verdicts.py::"
_WORKDIR = "tests/test_workdir.py::"
_METRICS = "tests/test_metrics.py::"
_SAME = "tests/test_same_tokenizer.py::"

_SNAPSHOT = (_SNAP + "test_a_device_snapshot_goes_to_pinned_host_memory_at_once_with_the_original_"
             "values",)
_ARRIVED = (_SNAP + "test_a_device_snapshot_is_written_only_once_it_is_on_the_host_unless_the_"
            "caller_waits",)
_PROCESSES = (_SNAP + "test_with_several_processes_a_device_snapshot_is_written_after_the_next_"
              "step_arrived_or_not",)
_PARTS = (_SNAP + "test_a_snapshot_in_parts_reaches_pinned_host_memory_a_part_per_send",)
_PART_FAILS = (_SNAP + "test_a_snapshot_whose_second_part_fails_goes_whole_from_the_devices_at_"
               "the_usual_call",)
_PARTS_WARNING = (_FAULTS + "test_snapshot_parts_that_cannot_work_as_set_are_a_start_up_"
                  "warning",)
_PARTS_WRITTEN = (_SNAP + "test_a_snapshot_in_parts_is_written_after_its_last_part_and_restores_"
                  "whole",)

ENTRIES = (
    # checkpoint.device_snapshot's copy on its way to the host.
    Mutation("a device snapshot stays on the devices until Orbax takes it", "glmjax/host_copy.py",
             "sent = None if self.failed else start([self._leaves[index] for index in indices])",
             "sent = None if self.failed else [self._leaves[index] for index in indices]",
             _ARRIVED + _PARTS),
    Mutation("a process whose snapshot part failed hands its copy over ahead of the others",
             "glmjax/host_copy.py", "    return self._sent == len(self._parts)",
             "    return self.failed or self._sent == len(self._parts)", _PART_FAILS),
    Mutation("a snapshot goes on sending parts after one failed", "glmjax/host_copy.py",
             "sent = None if self.failed else start([self._leaves[index] for index in indices])",
             "sent = start([self._leaves[index] for index in indices])", _PART_FAILS),
    Mutation("start-up says nothing of snapshot parts as many as the save interval",
             "glmjax/config.py", "  if parts > 1 and 0 < every <= parts:",
             "  if parts > 1 and 0 < every < parts:", _PARTS_WARNING),
    Mutation("start-up says nothing of snapshot parts set without a device snapshot",
             "glmjax/config.py", "  if parts > 1 and not checkpoint.device_snapshot:",
             "  if False:", _PARTS_WARNING),
    Mutation("start-up never logs the snapshot parts' warning", "glmjax/train.py",
             "    log.warning(parts_warning)", "    pass",
             (_FAULTS + "test_a_device_snapshot_is_written_while_the_next_step_runs",)),
    Mutation("a snapshot's parts are cut where their bytes first pass the cap",
             "glmjax/host_copy.py", "      if current and held + size > cap:",
             "      if current and held > cap:",
             (_SNAP + "test_a_snapshot_s_parts_keep_the_arrays_order_and_make_the_largest_part_as_"
              "small_as_it_can",)),
    Mutation("a snapshot in parts sends its first part again and again", "glmjax/host_copy.py",
             "    indices = self._parts[self._sent]\n", "    indices = self._parts[0]\n", _PARTS),
    Mutation("a snapshot in parts sends no part after a step, only when waited for",
             "glmjax/checkpoint.py", "    if not transfer.all_sent:\n      transfer.send()\n",
             "    if not transfer.all_sent:\n", _PARTS_WRITTEN),
    Mutation("a snapshot in parts sends its first part with the save's own step",
             "glmjax/checkpoint.py", "      if self.snapshot_parts == 1:  # in parts,",
             "      if True:  # in parts,", _PARTS_WRITTEN),
    Mutation("a snapshot in parts is cut by each host's own bytes", "glmjax/host_copy.py",
             "split_by_bytes([key_free(leaf).nbytes for leaf in self._leaves], parts)",
             "split_by_bytes([nbytes(leaf) for leaf in self._leaves], parts)",
             (_SNAP + "test_a_snapshot_s_parts_are_cut_by_the_arrays_global_bytes_the_same_on_"
              "every_process",)),
    Mutation("train sends every device snapshot in one part whatever the config says",
             "glmjax/train.py", "        snapshot_parts=config.checkpoint.snapshot_parts)", ")",
             (_FAULTS + "test_a_device_snapshot_is_written_while_the_next_step_runs",)),
    Mutation("a device snapshot sends every replica of a replicated array to the host",
             "glmjax/host_copy.py", "slice(None) if name in used else slice(0, 1)",
             "slice(None)", _SNAPSHOT),
    Mutation("a device snapshot is handed to Orbax before it is on the host",
             "glmjax/checkpoint.py",
             "if not (wait or jax.process_count() > 1 or transfer.arrived()):",
             "if not (wait or jax.process_count() > 1 or True):", _ARRIVED),
    Mutation("a device snapshot still on its way is never written by a new save",
             "glmjax/checkpoint.py",
             "      self._deferred = None\n    self.write_deferred(wait=True)\n",
             "      self._deferred = None\n    self.write_deferred()\n", _ARRIVED),
    Mutation("with several processes each hands its device snapshot over when its own arrives",
             "glmjax/checkpoint.py",
             "if not (wait or jax.process_count() > 1 or transfer.arrived()):",
             "if not (wait or transfer.arrived()):", _PROCESSES),
    Mutation("with several processes a device snapshot of a replicated array is one host's",
             "glmjax/host_copy.py",
             "  if process_count > 1 and len({device.process_index for device in senders",
             "  if False and len({device.process_index for device in senders",
             ("tests/test_train.py::test_two_processes_train_like_one",)),
    Mutation("with several processes a device snapshot may leave a process without a shard",
             "glmjax/host_copy.py", "for device in senders.flat}) < process_count:",
             "for device in senders.flat}) == 1:",
             (_SNAP + "test_the_devices_that_send_a_snapshot_hold_one_replica_and_leave_no_"
              "process_without_one",)),
    Mutation("a device snapshot that cannot be sent to host memory stops the run",
             "glmjax/host_copy.py", "    return None\n\n\ndef split_by_bytes",
             "    raise\n\n\ndef split_by_bytes",
             (_SNAP + "test_a_device_snapshot_that_cannot_reach_host_memory_is_saved_from_the_"
              "devices",)),
    Mutation("a device snapshot lost on its way to host memory is handed to Orbax anyway",
             "glmjax/host_copy.py", "      ok = False\n", "",
             (_SNAP + "test_a_device_snapshot_that_cannot_reach_host_memory_is_saved_from_the_"
              "devices",)),
    Mutation("with several processes each saves its own kind of copy",
             "glmjax/host_copy.py",
             "    ok = bool(np.min(multihost_utils.process_allgather(np.int32(ok))))\n",
             "    ok = bool(ok)\n",
             (_SNAP + "test_with_several_processes_all_save_from_the_devices_if_one_host_copy_"
              "failed",)),
    Mutation("a device snapshot counts as arrived when its first array has", "glmjax/host_copy.py",
             "return all(key_free(leaf).is_ready() for leaf in jax.tree.leaves(tree))",
             "return key_free(jax.tree.leaves(tree)[0]).is_ready()",
             (_SNAP + "test_a_device_snapshot_counts_as_on_the_host_only_when_every_array_is",)),
    Mutation("checkpoint.every=0 saves every step instead of none", "glmjax/checkpoint.py",
             "return self.every > 0 and step % self.every == 0",
             "return step % max(self.every, 1) == 0",
             (_CK + "test_checkpoint_every_0_saves_no_periodic_checkpoint_only_the_forced_last_"
              "one",)),
    Mutation("a refused save names the oldest good checkpoint as the newest",
             "glmjax/checkpoint.py", 'return f"step {good[-1]}, intact"',
             'return f"step {good[0]}, intact"',
             (_DAMAGE + "test_a_single_inf_is_refused_like_a_nan_naming_the_newest_good_"
              "checkpoint",)),
    Mutation("a state with a single non-finite value is saved", "glmjax/checkpoint.py",
             "nonfinite = {name: count for name, (_, count) in summary.items() if count}",
             "nonfinite = {name: count for name, (_, count) in summary.items() if count > 1}",
             (_DAMAGE + "test_a_single_inf_is_refused_like_a_nan_naming_the_newest_good_"
              "checkpoint",)),
    Mutation("Inf is not counted as non-finite, so a state holding it is saved",
             "glmjax/checksums.py", "jnp.sum(~jnp.isfinite(part)", "jnp.sum(jnp.isnan(part)",
             (_DAMAGE + "test_a_single_inf_is_refused_like_a_nan_naming_the_newest_good_"
              "checkpoint",)),
    Mutation("a checkpoint saved before state layouts were recorded is refused",
             "glmjax/checkpoint.py",
             "problems = layout_differences(metadata.get(key, layout), layout)",
             "problems = layout_differences(metadata.get(key, {}), layout)",
             (_DAMAGE + "test_a_checkpoint_saved_before_state_layouts_and_checksums_were_recorded_"
              "still_restores",)),
    Mutation("a checkpoint saved before checksums were recorded fails to restore",
             "glmjax/checkpoint.py",
             'problem = checksums.corruption(restored, metadata.get("checksums"))',
             'problem = checksums.corruption(restored, metadata["checksums"])',
             (_DAMAGE + "test_a_checkpoint_saved_before_state_layouts_and_checksums_were_recorded_"
              "still_restores",)),
    Mutation("a checkpoint whose metadata was cut off stops the run instead of being skipped",
             "glmjax/storage_errors.py", "(FileNotFoundError, json.JSONDecodeError, EOFError)",
             "(FileNotFoundError, EOFError)",
             (_DAMAGE + "test_a_checkpoint_whose_metadata_was_cut_off_mid_write_is_skipped_for_the_"
              "older_one",)),
    Mutation("another run's checkpoints/ folder given directly is not found",
             "glmjax/params_restore.py",
             "  directory = directory if epath.Path(directory).is_dir() else source\n", "",
             (_CK + "test_parameters_for_another_run_can_be_read_from_its_checkpoints_folder",)),
    Mutation("a corruption line miscounts the arrays past the first three",
             "glmjax/checksums.py",
             'more = f" (and {len(problems) - 3} more arrays)" if len(problems) > 3 else ""',
             'more = f" (and {len(problems)} more arrays)" if len(problems) > 3 else ""',
             (_DAMAGE + "test_a_corruption_line_names_three_arrays_and_counts_the_others",)),
    Mutation("the final save writes a last step already queued as a device snapshot again",
             "glmjax/checkpoint.py",
             "    self.write_deferred(wait=True)\n    self.wait()  # surfaces",
             "    self.wait()  # surfaces",
             (_SNAP + "test_a_run_s_last_step_saved_as_a_device_snapshot_is_written_once_without_"
              "an_error",)),
    Mutation("a storage error chained as the context (no `from`) is not seen",
             "glmjax/storage_errors.py", "error = error.__cause__ or error.__context__",
             "error = error.__cause__",
             (_DAMAGE + "test_a_storage_error_met_while_handling_another_error_still_stops_the_"
              "run",)),
    Mutation("a save cut off by a kill leaves its partial folder for ever",
             "glmjax/checkpoint.py", "cleanup_tmp_directories=True",
             "cleanup_tmp_directories=False",
             (_CK + "test_a_save_cut_off_by_a_kill_leaves_no_partial_folder_once_the_run_saves_"
              "again",)),
    Mutation("the free space after a failed save is in GB but labelled GiB",
             "glmjax/storage_errors.py", "free / 2**30:.2f", "free / 1e9:.2f",
             (_VERDICTS + "test_the_free_space_after_a_failed_save_is_that_of_the_nearest_existing_"
              "folder_in_gib",)),
    Mutation("the free space is asked of a folder a failed save never created",
             "glmjax/storage_errors.py", "while path and not os.path.isdir(path):",
             "if path and not os.path.isdir(path):",
             (_VERDICTS + "test_the_free_space_after_a_failed_save_is_that_of_the_nearest_existing_"
              "folder_in_gib",)),
    Mutation("one host's damaged verdict outranks another's unknown failure (all skip)",
             "glmjax/restore_agreement.py",
             'VERDICTS = (None, "peer", "damaged", "unknown", "unreadable")',
             'VERDICTS = (None, "peer", "unknown", "damaged", "unreadable")',
             (_VERDICTS + "test_the_worst_verdict_of_any_host_holds_for_every_host",)),
    Mutation("checkpoint.keep is ignored by the trainer (always 3)", "glmjax/train.py",
             "keep=config.checkpoint.keep,", "keep=3,",
             (_FAULTS + "test_a_run_keeps_its_newest_checkpoint_keep_checkpoints",)),
    Mutation("checkpoint.start_over is ignored by the trainer", "glmjax/train.py",
             "start_over=bool(config.checkpoint.start_over),", "start_over=False,",
             (_FAULTS + "test_start_over_moves_a_workdir_s_damaged_checkpoints_aside_and_trains_"
              "from_step_0",)),
    Mutation("a checkpoint is saved before its step's metrics are checked", "glmjax/train.py",
             "        reporter.flush()  # never checkpoint", "        # never checkpoint",
             ("tests/test_train.py::test_a_run_stopped_by_non_finite_steps_keeps_no_checkpoint_"
              "of_them",)),
    Mutation("a resume with the same config keeps a copy of it", "glmjax/workdir.py",
             'if path.exists() and path.read_text(encoding="utf-8") != text:',
             "if path.exists():",
             (_WORKDIR + "test_a_resume_with_the_same_config_keeps_no_copy_of_it",)),
    Mutation("a second config change at the same step overwrites the kept config",
             "glmjax/workdir.py", "    while kept.exists():\n", "    while False:\n",
             (_WORKDIR + "test_every_replaced_config_is_kept_when_two_resumes_start_at_the_same_"
              "step",)),
    Mutation("metrics records stay in a buffer until the writer closes", "glmjax/metrics.py",
             "    self._jsonl.flush()\n", "",
             (_METRICS + "test_each_metrics_record_is_on_disk_as_soon_as_it_is_written",)),
    Mutation("Inf is written to metrics.jsonl as non-standard JSON", "glmjax/metrics.py",
             "finite = {k: v if v is not None and math.isfinite(v) else None for k, v in "
             "clean.items()}",
             "finite = {k: v if v is not None and not math.isnan(v) else None for k, v in "
             "clean.items()}",
             (_METRICS + "test_jsonl_writes_non_finite_values_as_null",)),
    # Parameters are read only under the tokenizer they were trained with.
    Mutation("a checkpoint's recorded tokenizer is never compared", "glmjax/workdir.py",
             "  if not recorded:\n    return\n", "  if True:\n    return\n",
             (_SAME + "test_init_from_a_run_trained_with_another_tokenizer_is_refused_naming_"
              "both",)),
    Mutation("init_from reads another run's parameters without its check", "glmjax/params_restore.py",
             "    if check is not None:\n      agreement.refuse_together(", "    if False:\n"
             "      agreement.refuse_together(",
             (_SAME + "test_init_from_a_run_trained_with_another_tokenizer_is_refused_naming_"
              "both",)),
    Mutation("a resume ignores the tokenizer its checkpoint records", "glmjax/train.py",
             '        saved.get("tokenizer"), metadata["tokenizer"],\n'
             '        what=f"The checkpoint',
             '        None, metadata["tokenizer"],\n        what=f"The checkpoint',
             (_SAME + "test_a_resume_after_the_tokenizer_file_changed_is_refused_and_keeps_the_"
              "checkpoint",)),
    Mutation("special roles added since a checkpoint count as another tokenizer",
             "glmjax/data/tokenizers.py",
             'specials = {k: v for k, v in current["specials"].items() '
             'if k in recorded["specials"]}',
             'specials = dict(current["specials"])',
             (_SAME + "test_checkpoints_from_before_the_tokenizer_record_pass_and_added_special_"
              "roles_do_not_count",)),
    Mutation("a damaged step saved again stays marked damaged", "glmjax/checkpoint.py",
             "    self._damaged.difference_update(steps)\n", "",
             ("tests/test_checkpoint.py::test_keeps_last_k_and_skips_a_damaged_newest_checkpoint",)),
    Mutation("start_over on a workdir without checkpoints leaves an empty folder aside",
             "glmjax/checkpoint.py", "    if self.steps() and start_over:", "    if start_over:",
             ("tests/test_checkpoint_damage.py::test_start_over_on_a_workdir_without_checkpoints_"
              "moves_nothing_aside",)),
    # Session 28's hunt.
    Mutation("a denied read that a reader calls 'not found' skips the step as damaged",
             "glmjax/storage_errors.py",
             "  reason = _unreadable_reason(error)\n  if reason is not None:\n"
             "    return \"unreadable\", reason\n  for each in chain(error):\n"
             "    if isinstance(each, (FileNotFoundError, json.JSONDecodeError, EOFError)) or any(\n"
             "        word in str(each).lower() for word in _DAMAGED_WORDS):\n"
             "      return \"damaged\", f\"cut off, files missing or unreadable data ({short(each)})\"\n",
             "  for each in chain(error):\n"
             "    if isinstance(each, (FileNotFoundError, json.JSONDecodeError, EOFError)) or any(\n"
             "        word in str(each).lower() for word in _DAMAGED_WORDS):\n"
             "      return \"damaged\", f\"cut off, files missing or unreadable data ({short(each)})\"\n"
             "  reason = _unreadable_reason(error)\n  if reason is not None:\n"
             "    return \"unreadable\", reason\n",
             (_VERDICTS + "test_a_chain_that_says_both_unreadable_and_missing_is_unreadable",)),
    Mutation("a host copy whose transfer failed is never handed to the save", "glmjax/host_copy.py",
             "settled by `landed`, which falls back to the device copy\n    return True",
             "settled by `landed`, which falls back to the device copy\n    return False",
             (_SNAP + "test_a_device_snapshot_counts_as_on_the_host_only_when_every_array_is",)),
    Mutation("train.compilation_cache_dir='none' wins over JAX_COMPILATION_CACHE_DIR",
             "glmjax/workdir.py",
             '  if env.get("JAX_COMPILATION_CACHE_DIR"):\n    return env["JAX_COMPILATION_CACHE_DIR"]\n'
             '  if configured == "none":\n    return ""\n',
             '  if configured == "none":\n    return ""\n'
             '  if env.get("JAX_COMPILATION_CACHE_DIR"):\n    return env["JAX_COMPILATION_CACHE_DIR"]\n',
             ("tests/test_compilation_cache.py::test_the_cache_folder_is_the_environments_then_the_"
              "configured_then_the_workdirs",)),
    Mutation("a process looks up another process's devices for the snapshot's host copy",
             "glmjax/host_copy.py",
             "devices = list(target.addressable_devices_indices_map(leaf.shape))",
             "devices = list(target.devices_indices_map(leaf.shape))",
             ("tests/test_snapshot_across_processes.py::test_each_process_sends_only_the_"
              "snapshot_parts_its_own_devices_hold",)),
    Mutation("a parameter restore's refusal says checkpoint for model and model for checkpoint",
             "glmjax/params_restore.py",
             'problems = layout_differences(saved.get("param_layout", {}), current_layout)',
             'problems = layout_differences(current_layout, saved.get("param_layout", {}))',
             ("tests/test_reporting.py::test_a_workdir_whose_config_no_longer_fits_its_parameters_"
              "is_refused_naming_the_workdir",)),
    Mutation("close and the next save send one more part and drop a snapshot still in parts",
             "glmjax/checkpoint.py", "    while wait and not transfer.all_sent:",
             "    if wait and not transfer.all_sent:",
             ("tests/test_device_snapshot.py::test_a_snapshot_whose_parts_are_still_unsent_is_"
              "written_by_close_and_by_the_next_save",)),
    Mutation("a save refused with EPERM is a traceback, not the user's one line",
             "glmjax/storage_errors.py",
             'errno.EACCES: "permission denied", errno.EPERM: "permission denied"}',
             'errno.EACCES: "permission denied"}',
             ("tests/test_fault_verdicts.py::test_a_save_that_fails_for_the_user_to_fix_names_the_"
              "cause",)),
    Mutation("a background write's failure, surfaced by the next save, is named by the new step",
             "glmjax/checkpoint.py",
             "    self.wait()  # surfaces an error of the previous asynchronous save here rather "
             "than never\n", "",
             (_FAULTS + "test_a_write_that_fails_in_the_background_is_named_by_its_own_step_at_"
              "the_next_save",)),
    Mutation("a missing parameters folder is named by checkpoint.init_from whatever gave it",
             "glmjax/params_restore.py", "  directory = checkpoints_directory(source, field)\n",
             "  directory = checkpoints_directory(source)\n",
             (_CK + "test_parameters_from_a_missing_folder_are_refused_naming_the_setting_that_"
              "gave_it",)),
    Mutation("train's device-snapshot check leaves the step's new outputs out of its peak",
             "glmjax/memory.py", "  needed = program_bytes(memory) + copy_bytes",
             "  needed = memory.argument_size_in_bytes + memory.temp_size_in_bytes + copy_bytes",
             (_FAULTS + "test_a_device_snapshot_that_would_not_fit_beside_the_step_is_a_start_up_"
              "warning",)),
    Mutation("train does not lock its workdir: two runs write the same checkpoints",
             "glmjax/train.py",
             "    held = workdir_lib.lock(workdir, jax.process_index())  # refuses a second train",
             "    held = None  # refuses a second train",
             (_FAULTS + "test_a_train_started_in_a_workdir_another_train_holds_is_one_line_and_"
              "writes_nothing",)),
    Mutation("the workdir lock is shared, so a second train takes it too", "glmjax/workdir.py",
             "fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)",
             "fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)",
             (_WORKDIR + "test_a_second_train_in_a_held_workdir_is_refused_naming_the_one_that_"
              "holds_it", _WORKDIR + "test_the_lock_of_a_run_killed_with_sigkill_does_not_block_"
              "its_resume")),
    Mutation("the workdir lock does not say which process holds it", "glmjax/workdir.py",
             "  handle.write(f\"pid {os.getpid()} on {socket.gethostname()}, since \"",
             "  handle.write(f\"since \"",
             (_WORKDIR + "test_a_second_train_in_a_held_workdir_is_refused_naming_the_one_that_"
              "holds_it",)),
    Mutation("every process of a job locks the workdir (the second host is refused)",
             "glmjax/workdir.py", "if paths.is_remote(workdir) or process_index != 0:",
             "if paths.is_remote(workdir):",
             (_WORKDIR + "test_only_process_0_locks_and_a_bucket_is_not_locked",)),
    Mutation("a resume whose layouts differ says nothing of the config fields that changed",
             "glmjax/checkpoint.py",
             "            changes = config_changes(metadata) if config_changes else []\n",
             "            changes = []\n",
             (_FAULTS + "test_resuming_with_another_model_shape_names_the_config_fields_that_"
              "changed",)),
    Mutation("a resume whose optimizer state no longer fits leaves out a free field's change",
             "glmjax/train.py", 'saved.get("config", {}), metadata["config"], free_too=True))',
             'saved.get("config", {}), metadata["config"], free_too=False))',
             (_FAULTS + "test_resuming_with_another_model_shape_names_the_config_fields_that_"
              "changed",)),
    Mutation("resume tries the oldest checkpoint first", "glmjax/checkpoint.py",
             "for step in reversed(self.steps()):", "for step in self.steps():",
             (_CK + "test_keeps_last_k_and_skips_a_damaged_newest_checkpoint",)),
)
