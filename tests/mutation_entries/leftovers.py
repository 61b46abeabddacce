"""Planted bugs in session 46's work: what session 45's reviews left (forwarded secrets on a
command line, convert's progress, hosts counted by process, the fallback mesh of several
slices), GPU hosts as network groups, the rows-alike loss, the SLURM and TPU launchers, the rank
order, the planned Part B share, window starts, fit advice and init_optimizer."""
from mutation_entries import Mutation

_SECRET = ("tests/test_launch_on_workers.py::test_a_forwarded_variable_reaches_the_trainer_in_a_"
           "private_file_never_on_a_command_line",)

ENTRIES = (
    Mutation("train --env puts the value in the remote command line again", "launch/tpu_remote.py",
             '      "export PYTHONUNBUFFERED=1 GLMJAX_DISTRIBUTED=1",',
             '      "export PYTHONUNBUFFERED=1 GLMJAX_DISTRIBUTED=1 " + " ".join(\n'
             '          f"{n}={shlex.quote(os.environ[n])}" for n in args.env),',
             _SECRET),
    Mutation("the forwarded variables' local file is left behind", "launch/tpu.py",
             "  finally:\n    os.remove(path)", "  finally:\n    pass",
             _SECRET),
    Mutation("the forwarded variables' file is world-readable", "launch/tpu.py",
             '    with os.fdopen(fd, "w", encoding="utf-8") as f:',
             '    os.chmod(path, 0o644)\n    with os.fdopen(fd, "w", encoding="utf-8") as f:',
             _SECRET),
    Mutation("the worker keeps the forwarded variables' file", "launch/tpu_remote.py",
             '  return (f"status=0; . {SECRETS} || status=$?; rm -f {SECRETS}; "',
             '  return (f"status=0; . {SECRETS} || status=$?; "',
             _SECRET),
    Mutation("a start that fails before reading them leaves the forwarded variables",
             "launch/tpu_remote.py",
             "      *([load_secrets()] if args.env else []),",
             "      *([] if args.env else []),",
             ("tests/test_launch_on_workers.py::test_a_start_that_fails_still_deletes_the_"
              "forwarded_variables",)),
)
ENTRIES += (
    Mutation("convert import reads its files without a word", "glmjax/convert/original.py",
             "    tensors.update(part)\n    _read_progress(done, files, started)\n",
             "    tensors.update(part)\n",
             ("tests/test_convert_torch_files.py::test_an_import_says_each_file_it_has_read_of_how_"
              "many_then_the_join_and_the_write",)),
    Mutation("convert import's progress counts files from 0", "glmjax/convert/original.py",
             "  for done, path in enumerate(files, 1):\n    if fmt",
             "  for done, path in enumerate(files):\n    if fmt",
             ("tests/test_convert_torch_files.py::test_an_import_says_each_file_it_has_read_of_how_"
              "many_then_the_join_and_the_write",)),
)
_GPU_HOSTS = "tests/test_gpu_hosts.py::"
ENTRIES += (
    Mutation("aot's compile-only GPUs count as one host", "glmjax/parallel.py",
             '  if device.platform == "gpu" and _compile_only(device):\n    return device.process_index',
             '  if False:\n    return device.process_index',
             (_GPU_HOSTS + "test_aot_s_compile_only_gpus_count_hosts_as_the_runtime_does",)),
    Mutation("a tensor group's hosts are counted by its processes", "glmjax/parallel.py",
             '  return network_group(device) if device.platform == "gpu" else device.process_index',
             "  return device.process_index",
             (_GPU_HOSTS + "test_a_tensor_group_of_one_host_s_processes_is_not_said_to_span_hosts",)),
    Mutation("the refusal calls GPU hosts slices", "glmjax/parallel.py",
             '  return "GPU hosts" if devices[0].platform == "gpu" else "slices"',
             '  return "slices"',
             (_GPU_HOSTS + "test_fsdp_across_gpu_hosts_is_refused_in_one_line_naming_hosts_not_slices",)),
    Mutation("compile-only GPUs are grouped by their slice 0", "glmjax/parallel.py",
             '        process_is_granule=devices[0].platform == "gpu" and _compile_only(devices[0]))',
             "        process_is_granule=False)",
             (_GPU_HOSTS + "test_aot_s_compile_only_gpus_count_hosts_as_the_runtime_does",)),
)
ENTRIES += (
    Mutation("the flags part hands XLA a blank XLA_FLAGS again", "launch/measure_gpu.sh",
             '        flags_now="${XLA_FLAGS:-}${XLA_FLAGS:+${flag:+ }}$flag"',
             '        flags_now="${XLA_FLAGS:-} $flag"',
             ("tests/test_launch_measure_gpu.py::test_the_flags_part_never_hands_xla_a_blank_xla_"
              "flags",)),
)
_WEIGHTS = "tests/test_objective_weights.py::"
ENTRIES += (
    Mutation("the train step averages the tokens of a mixed batch again", "glmjax/step.py",
             "      hidden, embeddings, batch[\"targets\"], mask * per_token[:, None] if rows_alike else mask,",
             "      hidden, embeddings, batch[\"targets\"], mask,",
             (_WEIGHTS + "test_the_step_s_loss_is_the_mean_of_the_rows_means_and_its_metrics_stay_"
              "per_token",)),
    Mutation("the rows' means are divided by the tokens", "glmjax/step.py",
             "  grads = jax.tree.map(lambda g: g / rows, grads)\n  loss = sums[\"loss_sum\"] / rows",
             "  grads = jax.tree.map(lambda g: g / weight, grads)\n  loss = sums[\"loss_sum\"] / weight",
             (_WEIGHTS + "test_the_step_s_loss_is_the_mean_of_the_rows_means_and_its_metrics_stay_"
              "per_token",)),
    Mutation("the per-objective metrics keep the rows' weights", "glmjax/step.py",
             "  if rows_alike:  # the metrics over tokens again",
             "  if False:  # the metrics over tokens again",
             (_WEIGHTS + "test_the_step_s_loss_is_the_mean_of_the_rows_means_and_its_metrics_stay_"
              "per_token",)),
    Mutation("rows without Part B count in the mean", "glmjax/step.py",
             '      "rows": jnp.sum(row_weight > 0, dtype=jnp.float32),',
             '      "rows": jnp.sum(row_weight >= 0, dtype=jnp.float32),',
             (_WEIGHTS + "test_rows_without_part_b_are_left_out_of_the_mean",)),
)
ENTRIES += (
    Mutation("PROCS=gpu trains with fewer tasks than GPUs", "launch/gpu_slurm.sh",
             '  if [[ -n "$tasks" && -n "$gpus" && "$tasks" != "$gpus" ]]; then',
             '  if [[ -n "$tasks" && -n "$gpus" && "$tasks" -gt "$gpus" ]]; then',
             ("tests/test_launch_slurm.py::test_one_process_per_gpu_refuses_a_node_whose_tasks_"
              "are_not_its_gpus",)),
    Mutation("a node's share of an uneven task list is read from the first node's",
             "launch/gpu_slurm.sh", '    if ((node < reps)); then echo "$n"; return 0; fi',
             '    echo "$n"; return 0',
             ("tests/test_launch_slurm.py::test_one_process_per_gpu_refuses_a_node_whose_tasks_"
              "are_not_its_gpus",)),
    Mutation("srun passes the sbatch default environment", "launch/gpu_slurm.sh",
             '  command=(srun --export=ALL --kill-on-bad-exit=1',
             '  command=(srun --kill-on-bad-exit=1',
             ("tests/test_launch_slurm.py::test_slurm_one_process_per_node_dry_run",)),
)
ENTRIES += (
    Mutation("train takes a relative workdir that setup will delete", "launch/tpu_flags.py",
             '    if not workdir.startswith(("gs://", "/")):',
             '    if not workdir.startswith(("gs://", "/", "")):',
             ("tests/test_launch.py::test_a_usage_error_is_one_line_naming_the_flag_with_exit_"
              "status_2",)),
    Mutation("setup calls a worker killed by a signal a success", "launch/tpu.py",
             "  return next((codes[w] if codes[w] > 0 else 1 for w in failed), 0)",
             "  return max(codes.values(), default=0)",
             ("tests/test_launch_tpu_setup.py::test_setup_fails_when_a_worker_s_gcloud_is_killed_"
              "by_a_signal",)),
)
ENTRIES += (
    Mutation("mpirun's ranks inside SLURM all take the step's SLURM_PROCID", "glmjax/distributed.py",
             '  for name in ("OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):',
             '  for name in ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK"):',
             ("tests/test_parallel.py::test_a_process_given_the_coordinator_by_its_environment_joins_"
              "with_that_address_and_rank",)),
)
ENTRIES += (
    Mutation("the planned [MASK] Part B share leaves the row's [MASK]s out", "glmjax/data/pipeline.py",
             "  blank = masked / (1.0 + 2.0 * data.mask_ratio / mean_span)",
             "  blank = masked",
             ("tests/test_flops.py::test_the_expected_part_b_share_matches_built_rows",
              "tests/test_pipeline_objectives.py::test_the_planned_part_b_share_of_mask_rows_is_the_"
              "masked_share_plus_one_sop_per_span")),
)
ENTRIES += (
    Mutation("a window cut at a document's start never moves right", "glmjax/data/alignment.py",
             "  return np.where(left, left_stop, right_stop)",
             "  return np.where(left | (offset == 0), left_stop, right_stop)",
             ("tests/test_sentence_windows.py::test_a_moved_window_start_follows_the_original_move_"
              "within_half_a_row_and_its_document",)),
)
ENTRIES += (
    Mutation("status trusts any process with the pid file's number", "launch/tpu_remote.py",
             """    f'p=$(cat {PID_FILE} 2>/dev/null || true); if [ -n "$p" ] && {TRAINER_ALIVE}; then '""",
             """    f'p=$(cat {PID_FILE} 2>/dev/null || true); if [ -n "$p" ] && kill -0 "$p"; then '""",
             ("tests/test_launch_on_workers.py::test_status_calls_a_stale_pid_file_s_other_process_"
              "not_running",)),
)
ENTRIES += (
    Mutation("a workdir is read onto several slices with the run's data=1", "glmjax/pretrained.py",
             "    return shape[0] % slices == 0 and parallel.unsplittable_axis(",
             "    return parallel.unsplittable_axis(",
             ("tests/test_gpu_hosts.py::test_reading_a_workdir_on_several_slices_keeps_mesh_data_"
              "across_them",)),
)
ENTRIES += (
    Mutation("out-of-memory advice on several hosts says mesh.data=1", "glmjax/memory.py",
             '            f"{\'GPU hosts\' if platform == \'gpu\' else \'slices\'})" if slices > 1 else',
             '            f"{\'GPU hosts\' if platform == \'gpu\' else \'slices\'})" if False else',
             ("tests/test_gpu_hosts.py::test_out_of_memory_advice_on_several_hosts_shards_inside_"
              "each_not_over_all",)),
)
_INIT_OPT = "tests/test_init_optimizer.py::"
ENTRIES += (
    Mutation("init_from ignores checkpoint.init_optimizer", "glmjax/train.py",
             "  source, moments = config.checkpoint.init_from, bool(config.checkpoint.init_optimizer)",
             "  source, moments = config.checkpoint.init_from, False",
             (_INIT_OPT + "test_a_second_stage_takes_the_first_run_s_optimizer_state_only_when_"
              "asked",)),
    Mutation("init_from's parts come back as the parameters alone", "glmjax/params_restore.py",
             "    return {name: restored[STATE_ITEM][name] for name in item}, step",
             '    return {"params": restored[STATE_ITEM]["params"]}, step',
             (_INIT_OPT + "test_a_second_stage_takes_the_first_run_s_optimizer_state_only_when_"
              "asked",)),
    Mutation("an optimizer state of another shape reads as a damaged checkpoint",
             "glmjax/params_restore.py", '    if "opt_state" in item:\n      _check_optimizer_state(',
             '    if False:\n      _check_optimizer_state(',
             (_INIT_OPT + "test_an_optimizer_state_of_another_shape_is_refused_in_one_line_naming_"
              "the_fields",)),
    Mutation("parameters saved alone are called another optimizer's state",
             "glmjax/params_restore.py", "  if not saved_layout:", "  if False:",
             (_INIT_OPT + "test_parameters_saved_alone_are_refused_with_init_optimizer_naming_the_"
              "flag",)),
    Mutation("GLM-10B's second stage starts its Adam moments at zero", "glmjax/recipes.py",
             "  config.checkpoint.init_optimizer = True",
             "  config.checkpoint.init_optimizer = False",
             ("tests/test_config.py::test_glm_10b_carries_the_original_data_recipe_and_its_second_"
              "stage",)),
)
ENTRIES += (
    Mutation("train on a slice never set up shows only scp's error", "launch/tpu.py",
             "    if code:  # ~/glmjax is missing on a slice that was never set up",
             "    if False:  # ~/glmjax is missing on a slice that was never set up",
             ("tests/test_launch_on_workers.py::test_train_on_a_slice_never_set_up_says_so_when_"
              "the_variables_cannot_be_copied",)),
)
ENTRIES += (
    Mutation("fit advice reads mesh.data=-1 as not yet sharded", "glmjax/memory.py",
             "  shardable = (data or int(config.mesh.data)) != slices",
             "  shardable = int(config.mesh.data) != slices",
             ("tests/test_gpu_hosts.py::test_out_of_memory_advice_on_several_hosts_shards_inside_"
              "each_not_over_all",)),
)
ENTRIES += (
    Mutation("the logged per-token loss is the rows-alike loss", "glmjax/loop.py",
             '  scalars["loss_per_token"] = (float(np.sum(metrics["objective_loss_sum"])) / tokens if tokens',
             '  scalars["loss_per_token"] = (scalars["loss"] if tokens',
             ("tests/test_objective_weights.py::test_the_step_s_loss_is_the_mean_of_the_rows_means_"
              "and_its_metrics_stay_per_token",)),
)
