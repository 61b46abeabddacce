"""Planted bugs in topology, mesh and sharding rules, multi-host feeding, TPU compiles and the
TPU launcher."""
from mutation_entries import Mutation

_IMPOSSIBLE_NAME = ("tests/test_topology.py::test_impossible_slice_names_say_what_is_wrong_and_"
                    "what_is_accepted")

ENTRIES = (
    Mutation("an odd v5p core count is taken for the slice below it (v5p-9 as v5p-8)",
             "glmjax/topology.py",
             "if remainder or chips not in shapes:", "if chips not in shapes:",
             (_IMPOSSIBLE_NAME,)),
    Mutation("a torus axis of 0 chips gets past the slice name check", "glmjax/topology.py",
             "min(shape) < 1", "min(shape) < 0",
             (_IMPOSSIBLE_NAME,)),
    Mutation("two mesh axes left at -1 are accepted", "glmjax/parallel.py",
             "if len(fill) > 1:", "if len(fill) > 2:",
             ("tests/test_parallel.py::test_only_one_mesh_axis_may_be_left_to_fill_the_devices",)),
    Mutation("a mesh axis of size 0 is accepted", "glmjax/parallel.py",
             "if size == 0 or size < -1:", "if size < -1:",
             ("tests/test_parallel.py::test_a_mesh_axis_of_zero_or_below_minus_one_is_refused_"
              "naming_it",)),
    Mutation("fixed mesh axes that do not divide the devices leave the -1 axis floored",
             "glmjax/parallel.py",
             "    if num_devices % known:\n", "    if False:\n",
             ("tests/test_parallel.py::test_fixed_mesh_axes_that_do_not_divide_the_devices_are_"
              "refused_naming_them",)),
    Mutation("the activation_batch check reads the last such rule (flax applies the first)",
             "glmjax/parallel.py",
             "mapped = mesh_axes(found[0])", "mapped = mesh_axes(found[-1])",
             ("tests/test_parallel.py::test_the_batch_rule_checked_is_the_first_one_the_rules_"
              "give_as_flax_applies_the_first",)),
    Mutation("the batch parallelism counts the tensor axis too", "glmjax/parallel.py",
             "mesh.shape[axis] for axis in BATCH_AXES)", "mesh.shape[axis] for axis in MESH_AXES)",
             ("tests/test_parallel.py::test_batch_rows_are_split_over_data_and_fsdp_but_not_over_"
              "tensor_parallel_replicas",)),
    Mutation("a single-host TPU VM joins jax.distributed", "glmjax/distributed.py",
             'if "," in env.get("TPU_WORKER_HOSTNAMES", ""):',
             'if env.get("TPU_WORKER_HOSTNAMES"):',
             ("tests/test_parallel.py::test_a_process_joins_jax_distributed_exactly_when_its_"
              "environment_describes_several",)),
    Mutation("the tasks of a SLURM job each train alone (no jax.distributed)",
             "glmjax/distributed.py",
             'return int(env.get("SLURM_NTASKS", "1")) > 1 or ', "return ",
             ("tests/test_parallel.py::test_a_process_joins_jax_distributed_exactly_when_its_"
              "environment_describes_several",)),
    Mutation("aot counts one run of rows fewer on host 0", "glmjax/aot.py",
             "return int(1 + np.count_nonzero(", "return int(np.count_nonzero(",
             ("tests/test_aot_report.py::test_a_host_s_row_runs_are_its_contiguous_blocks_of_"
              "rows",)),
    Mutation("aot counts one held-out batch on the chips whatever train.eval_batches",
             "glmjax/aot.py",
             "resident = int(config.train.eval_batches) * batch_bytes if",
             "resident = batch_bytes if",
             ("tests/test_aot.py::test_a_device_snapshot_save_s_copy_of_the_state_counts_in_the_"
              "peak",)),
    Mutation("aot's step time at 50% MFU is one chip's, not the slice's", "glmjax/aot.py",
             "flops / (spec.chips * peak * TARGET_MFU)", "flops / (peak * TARGET_MFU)",
             ("tests/test_aot.py::test_a_tiny_config_compiles_for_v5p_with_the_mosaic_splash_"
              "kernel",)),
    Mutation("aot's advice leaves out fsdp when mesh.fsdp=-1 though mesh.data copies the state",
             "glmjax/memory.py",
             "  shardable = (data or int(config.mesh.data)) != slices",
             "  shardable = int(config.mesh.fsdp) != -1 and (data or int(config.mesh.data)) != slices",
             ("tests/test_aot_report.py::test_the_advice_for_a_config_that_does_not_fit_"
              "shards_the_state_only_where_it_is_copied",)),
    Mutation("aot counts every value of the state as 4 bytes", "glmjax/aot.py",
             "total += math.prod(shard) * np.dtype(leaf.dtype).itemsize",
             "total += math.prod(shard) * 4",
             ("tests/test_aot_report.py::test_a_chip_s_bytes_are_its_shard_of_each_leaf_at_"
              "the_leaf_s_dtype_width",)),
    Mutation("aot compiles a micro-batch that the slice's batch axes cannot split",
             "glmjax/aot.py",
             "  config_lib.validate(config, num_devices=len(devices),\n"
             "                      batch_parallelism=parallel.batch_axis_size(mesh))\n", "",
             ("tests/test_aot.py::test_a_micro_batch_the_slice_s_batch_axes_cannot_split_is_"
              "refused_before_compiling",)),
    Mutation("a donated buffer counts twice in a program's peak", "glmjax/memory.py",
             "- memory.alias_size_in_bytes", "+ memory.alias_size_in_bytes",
             ("tests/test_aot_report.py::test_a_program_s_peak_counts_a_donated_buffer_once",)),
    Mutation("every host builds rows 0..n-1, not the rows its devices hold", "glmjax/parallel.py",
             "  return global_batch(pipeline.build_rows(index, layout.rows), layout)",
             "  return global_batch(pipeline.build_rows(index, np.arange(len(layout.rows))), "
             "layout)",
             ("tests/test_host_input.py::test_the_training_and_held_out_batches_of_a_host_are_the_"
              "rows_its_devices_hold",)),
    Mutation("held-out progress reports the index of the batch just summed, one short",
             "glmjax/held_out.py", "progress(index + 1)", "progress(index)",
             ("tests/test_host_input.py::test_held_out_progress_counts_the_batches_done_and_the_"
              "total_sums_each_batch_once",)),
    Mutation("held-out sums keep only the last batch's", "glmjax/held_out.py",
             "total = sums if total is None else jax.tree.map(jax.numpy.add, total, sums)",
             "total = sums",
             ("tests/test_host_input.py::test_held_out_progress_counts_the_batches_done_and_the_"
              "total_sums_each_batch_once",)),
    Mutation("a slice name in capitals (V5P-128) is refused", "glmjax/topology.py",
             "text = name.strip().lower()", "text = name.strip()",
             ("tests/test_topology.py::test_slice_names_give_chips_and_hosts_as_cloud_tpu_provisions_"
              "them",)),
    Mutation("aot's eval peak counts the parameters twice", "glmjax/aot.py",
             "               - per_chip_bytes(program.abstract_state.params)) if evaluated",
             "               - 0) if evaluated",
             ("tests/test_aot.py::test_an_eval_step_peak_above_the_train_step_s_counts_the_"
              "parameters_once",)),
    Mutation("launch train refuses a --workdir given as two words", "launch/tpu_flags.py",
             'if word == "--workdir" and i + 1 < len(train_args):', "if False:",
             ("tests/test_launch.py::test_train_takes_the_trainer_s_workdir_as_one_word_or_two",)),
    Mutation("launch logs refuses a worker index of two digits", "launch/tpu_flags.py",
             're.fullmatch(r"all|\\d+", args.worker)', 're.fullmatch(r"all|\\d", args.worker)',
             ("tests/test_launch.py::test_logs_reaches_a_worker_past_the_ninth_of_a_large_"
              "slice",)),
    Mutation("launch setup accepts --workers=0", "launch/tpu_flags.py",
             "if args.workers < 1:", "if args.workers < 0:",
             ("tests/test_launch.py::test_a_usage_error_is_one_line_naming_the_flag_with_exit_"
              "status_2",)),
    Mutation("setup outside a git work tree ships bytecode that sits beside its source",
             "launch/tpu.py",
             'return None if unshipped or info.name.endswith(".pyc") else info',
             "return None if unshipped else info",
             ("tests/test_launch_tpu_setup.py::test_setup_outside_a_git_work_tree_ships_the_"
              "folder_without_caches_logs_or_a_venv",)),
    Mutation("mesh.rules that are not (name, axes) pairs end in a traceback",
             "glmjax/parallel.py",
             "[rule for rule in rules if not _is_rule(rule)]", "[]",
             ("tests/test_config_validation.py::test_mesh_rules_that_are_not_name_axes_pairs_are_"
              "refused_naming_the_field",)),
    Mutation("the embedding gradient is all-reduced over fsdp, not reduce-scattered",
             "glmjax/loss.py",
             "scatter_axes = tuple(a for a in embed_axes if a in batch_axes)",
             "scatter_axes = ()", ("tests/test_loss.py::test_under_a_mesh_the_embedding_gradient_leaves_split_as_the_parameter_is",)),
    Mutation("the loss computes logits for the whole vocabulary on every tensor device",
             "glmjax/config.py", '    ("activation_vocab", "tensor"),',
             '    ("activation_vocab", None),', ("tests/test_loss.py::test_under_a_mesh_the_embedding_gradient_leaves_split_as_the_parameter_is",)),
    Mutation("attention runs every head on every tensor device", "glmjax/config.py",
             '    ("activation_heads", "tensor"),', '    ("activation_heads", None),',
             ("tests/test_model_sharding.py::test_attention_heads_and_the_mlp_s_width_stay_split_over_the_tensor_axis",)),
    Mutation("the MLP's 4H activations are whole on every tensor device", "glmjax/config.py",
             '    ("activation_mlp", "tensor"),', '    ("activation_mlp", None),',
             ("tests/test_model_sharding.py::test_attention_heads_and_the_mlp_s_width_stay_split_over_the_tensor_axis",)),
)

ENTRIES += (
    Mutation("the lookup's output is split over the hidden size as it comes out of the table",
             "glmjax/model/glm.py",
             "    x = nn.with_logical_constraint(x, EMBED_AXES[:2] + (None,))\n", "",
             ("tests/test_model_sharding.py::test_under_fsdp_a_tpu_slice_gathers_the_embedding_"
              "tables_never_the_batch_s_token_ids[2]",)),
)
