"""Planted bugs in TPU slices, GPU hosts, device meshes, host feeding and the ahead-of-time
compile."""
from mutation_entries import Mutation

_TOPO = "tests/test_topology.py::"
_AOT = "tests/test_aot.py::"
_AOT_REPORT = "tests/test_aot_report.py::"
_PAR = "tests/test_parallel.py::"
_FIT = "tests/test_fit_table.py::"
_GPU = "tests/test_aot_gpu.py::"

ENTRIES: tuple[Mutation, ...] = (
    # Slices by name (topology.py).
    Mutation("every 2-D slice axis of 8 chips or more is described with wraparound links",
             "glmjax/topology.py", "return tuple(size == 16 for size in self.shape)",
             "return tuple(size >= 8 for size in self.shape)",
             (_TOPO + "test_only_the_16_chip_axes_of_a_2d_slice_wrap_around",)),
    Mutation("a 3-D slice of 64 chips that is not whole cubes (2x4x8) gets wraparound links",
             "glmjax/topology.py",
             "return (all(size % 4 == 0 for size in self.shape) and self.slice_chips >= 64,) * 3",
             "return (self.slice_chips >= 64,) * 3",
             (_TOPO + "test_a_full_4x4x4_cube_and_larger_3d_slices_have_wraparound_links",)),
    Mutation("a v5litepod-8 / v6e-8 is compiled for a 4x2 torus, not Cloud TPU's 2x4",
             "glmjax/topology.py", "SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4),",
             "SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (4, 2),",
             (_TOPO + "test_standard_slice_names_have_the_torus_shapes_cloud_tpu_provisions",)),
    Mutation("a v5p-256 is compiled for a 4x8x4 torus, not Cloud TPU's 4x4x8",
             "glmjax/topology.py", "128: (4, 4, 8)", "128: (4, 8, 4)",
             (_TOPO + "test_standard_slice_names_have_the_torus_shapes_cloud_tpu_provisions",)),
    # Meshes, rules and joining a multi-host job (parallel.py).
    Mutation("a plain-order mesh takes the devices in the order the runtime lists them",
             "glmjax/parallel.py",
             "grid = np.asarray(sorted(devices, key=lambda device: device.process_index))",
             "grid = np.asarray(devices)",
             ("tests/test_host_input.py::test_a_plain_order_mesh_keeps_tensor_groups_on_one_host_"
              "when_hosts_are_listed_interleaved",)),
    Mutation("a parameter axis mapped to two mesh axes is checked against the first one only",
             "glmjax/parallel.py", "parts = math.prod(mesh_sizes[axis] for axis in mapped_axes)",
             "parts = mesh_sizes[mapped_axes[0]] if mapped_axes else 1",
             (_PAR + "test_a_parameter_axis_mapped_to_two_mesh_axes_must_divide_by_their_"
              "product",)),
    Mutation("a batch rule over ('fsdp', 'data') passes though the rows are placed over "
             "('data', 'fsdp')", "glmjax/parallel.py", "if mapped != BATCH_AXES:",
             "if set(mapped) != set(BATCH_AXES):",
             (_PAR + "test_a_batch_rule_over_the_same_axes_in_the_other_order_is_refused",)),
    Mutation("JAX_PROCESS_ID is not passed on: every process asks jax for its rank",
             "glmjax/distributed.py",
             '                    ("JAX_PROCESS_ID", "process_id", int))',
             "                    )",
             (_PAR + "test_a_process_given_the_coordinator_by_its_environment_joins_with_that_"
              "address_and_rank",)),
    Mutation("a process given JAX_COORDINATOR_ADDRESS trains alone", "glmjax/distributed.py",
             'if env.get("GLMJAX_DISTRIBUTED") == "1" or env.get("JAX_COORDINATOR_ADDRESS"):',
             'if env.get("GLMJAX_DISTRIBUTED") == "1":',
             (_PAR + "test_a_process_given_the_coordinator_by_its_environment_joins_with_that_"
              "address_and_rank",)),
    Mutation("the plain-order mesh sorts devices by id, spreading a host's tensor group",
             "glmjax/parallel.py", "key=lambda device: device.process_index",
             "key=lambda device: device.id",
             ("tests/test_host_input.py::test_a_mesh_in_plain_device_order_warns_only_when_a_"
              "tensor_group_spans_hosts",)),
    # The ahead-of-time compile (aot.py).
    Mutation("aot's advice leaves out remat=full for remat=minimal", "glmjax/memory.py",
             'if config.model.remat != "full":', 'if config.model.remat == "none":',
             (_AOT_REPORT + "test_the_advice_for_a_config_that_does_not_fit_names_the_knobs_"
                            "not_yet_turned",)),
    Mutation("aot advises grad_accum_steps=2 whatever the config already accumulates",
             "glmjax/memory.py",
             "  accum, batch = 2 * int(config.optim.grad_accum_steps), int(config.data.batch_size)",
             "  accum, batch = 2, int(config.data.batch_size)",
             (_AOT_REPORT + "test_the_advice_for_a_config_that_does_not_fit_names_the_knobs_"
                            "not_yet_turned",)),
    Mutation("aot exits 1 ('does not fit') with a traceback for a layout no host can feed",
             "glmjax/aot.py",
             "parallel.SliceMeshError,\n          UnfeedableLayout) as error:",
             "parallel.SliceMeshError) as error:",
             (_AOT + "test_a_layout_no_host_can_feed_is_a_mistake_in_the_command_exit_status_2",)),
    Mutation("any compiler error mentioning HBM is reported as not fitting", "glmjax/memory.py",
             'if "RESOURCE_EXHAUSTED" not in text or "vmem" in text.lower():',
             'if "vmem" in text.lower():',
             (_AOT_REPORT + "test_a_compiler_error_that_only_mentions_hbm_is_not_read_as_"
                            "running_out_of_it",)),
    Mutation("aot's report leaves the prefetched batches out of the batches it shows",
             "glmjax/aot.py",
             'f"held-out and prefetched batches {gib(report.eval_batch_bytes + '
             'report.prefetch_bytes)} | "',
             'f"held-out and prefetched batches {gib(report.eval_batch_bytes)} | "',
             (_AOT_REPORT + "test_the_report_shows_the_held_out_and_prefetched_batches_"
                            "together",)),
    Mutation("aot says every row is built by one host when mesh.tensor spans hosts",
             "glmjax/aot.py",
             "holders = np.bincount(np.concatenate([layout.rows for layout in layouts.values()]),",
             "holders = np.bincount(np.unique(np.concatenate([layout.rows for layout in "
             "layouts.values()])),",
             (_AOT + "test_a_tensor_group_wider_than_a_host_has_each_row_built_by_every_host_of_"
              "the_group",)),
    Mutation("aot's rows per host assume the batch is split evenly over the hosts",
             "glmjax/aot.py",
             "rows_per_host=max(len(layout.rows) for layout in layouts.values()),",
             "rows_per_host=batch_size // spec.hosts,",
             (_AOT + "test_a_tensor_group_wider_than_a_host_has_each_row_built_by_every_host_of_"
              "the_group",)),
    # GPU hosts and their compile (gpu_topology.py, aot.py).
    Mutation("a GPU's usable memory is all of it, not jax's share", "glmjax/gpu_topology.py",
             "return int(model.device_memory_bytes * memory_fraction())",
             "return int(model.device_memory_bytes)",
             (_GPU + "test_a_gpu_s_usable_memory_is_the_share_jax_s_client_takes",
              _GPU + "test_a_tiny_config_compiles_for_an_h100_with_tokamax_s_kernels_each_called_"
              "once")),
    Mutation("a memory fraction of 0 or above 1 is taken as given", "glmjax/gpu_topology.py",
             "if not 0 < fraction <= 1:", "if False:",
             (_GPU + "test_a_gpu_s_usable_memory_is_the_share_jax_s_client_takes",)),
    Mutation("h100-12 is taken as one host of 8", "glmjax/gpu_topology.py",
             "per_host = 0 if remainder else GPUS_PER_HOST", "per_host = GPUS_PER_HOST",
             (_GPU + "test_impossible_gpu_names_say_what_is_accepted",)),
    Mutation("XLA's GPU topology lists GPUs per host before hosts", "glmjax/gpu_topology.py",
             'return f"1x{self.hosts}x{self.gpus_per_host}"',
             'return f"1x{self.gpus_per_host}x{self.hosts}"',
             (_GPU + "test_two_hosts_of_eight_gpus_each_build_half_the_rows",)),
    Mutation("a GPU program is lowered with this CPU as jax's default device", "glmjax/aot.py",
             "on_target = jax.default_device(devices[0]) if gpu else contextlib.nullcontext()",
             "on_target = contextlib.nullcontext()",
             (_GPU + "test_a_tiny_config_compiles_for_an_h100_with_tokamax_s_kernels_each_called_"
              "once",)),
    Mutation("aot counts TPU Mosaic calls in a GPU program", "glmjax/aot.py",
             "mosaic_kernels=compiled.as_text().count(MOSAIC_CALLS[spec.platform]),",
             'mosaic_kernels=compiled.as_text().count(MOSAIC_CALLS["tpu"]),',
             (_GPU + "test_a_tiny_config_compiles_for_an_h100_with_tokamax_s_kernels_each_called_"
              "once",)),
    Mutation("auto takes (or tries) tokamax and cuDNN for a float32 model",
             "glmjax/attention_choice.py",
             "if candidate in model_lib.model_config.SIXTEEN_BIT_ONLY and jnp.dtype(dtype).itemsize",
             "if False and jnp.dtype(dtype).itemsize",
             (_GPU + "test_auto_on_a_gpu_target_takes_tokamax_for_16_bit_models_and_xla_for_"
              "float32", "tests/test_attention_choice.py::test_auto_passes_over_a_16_bit_only_"
              "kernel_for_a_float32_run_without_trying_it")),
    Mutation("the advice for GPUs never names jax's memory share", "glmjax/memory.py",
             "if fraction < 0.9 else [])", "if False else [])",
             (_GPU + "test_the_command_exits_1_and_names_jax_s_memory_share_when_a_config_does_"
              "not_fit",)),
    Mutation("a missing CUDA plugin is reported without what to install",
             "glmjax/gpu_topology.py",
             "missing = isinstance(error, (ImportError, NotImplementedError))",
             "missing = isinstance(error, ImportError)",
             (_GPU + "test_without_jax_s_cuda_plugin_the_error_says_what_to_install",)),
    # The README's fit table (fit_table.py).
    Mutation("fit_table compiles a config shipped with remat=full twice at every size",
             "glmjax/fit_table.py", '  if shipped.model.remat != "full":\n', "  if True:\n",
             (_FIT + "test_a_config_shipped_with_full_remat_is_not_compiled_twice_at_a_size",)),
    Mutation("fit_table stops at a layout no host can feed", "glmjax/fit_table.py",
             "except (config_lib.ConfigError, aot.UnfeedableLayout, topology.TopologyError) as "
             "error:", "except (config_lib.ConfigError, topology.TopologyError) as error:",
             (_FIT + "test_a_layout_that_cannot_be_fed_is_logged_and_the_search_goes_on",)),
    Mutation("fit_table leaves a one-chip slice's mesh cell empty", "glmjax/fit_table.py",
             'if v != 1) or "1 chip"', "if v != 1)",
             (_FIT + "test_a_one_chip_slice_s_mesh_cell_says_one_chip",)),
    # Session 28's hunt: joining once, the rank, slices, launch flags.
    Mutation("a missing JAX_PROCESS_ID makes every process rank 0", "glmjax/distributed.py",
             "  explicit = _explicit(env)\n",
             "  explicit = _explicit(env)\n  if explicit:\n"
             "    explicit.setdefault(\"process_id\", 0)\n",
             (_PAR + "test_a_process_given_the_coordinator_by_its_environment_joins_with_that_"
              "address_and_rank",)),
    Mutation("a second join is not found, and jax refuses it", "glmjax/distributed.py",
             "  if jax.distributed.is_initialized():\n    return True\n", "",
             (_PAR + "test_a_process_that_has_joined_does_not_join_again",)),
    Mutation("GLMJAX_DISTRIBUTED=0 joins", "glmjax/distributed.py",
             'if env.get("GLMJAX_DISTRIBUTED") == "1" or', 'if env.get("GLMJAX_DISTRIBUTED") or',
             (_PAR + "test_a_process_joins_jax_distributed_exactly_when_its_environment_describes_"
              "several",)),
    Mutation("a v4 host is taken to hold 8 chips", "glmjax/topology.py",
             'Generation("v4", ("v4",), 3, 2, True, int(30.75 * GIB), 4),',
             'Generation("v4", ("v4",), 3, 2, True, int(30.75 * GIB), 8),',
             ("tests/test_topology.py::test_slice_names_give_chips_and_hosts_as_cloud_tpu_provisions_"
              "them",)),
    Mutation("a 16-chip 3-D slice is 2x4x2", "glmjax/topology.py", "16: (2, 2, 4)",
             "16: (2, 4, 2)",
             ("tests/test_topology.py::test_standard_slice_names_have_the_torus_shapes_cloud_tpu_"
              "provisions",)),
    Mutation("a 4-chip 2-D slice is 1x4", "glmjax/topology.py",
             "SHAPES_2D = {1: (1, 1), 4: (2, 2),", "SHAPES_2D = {1: (1, 1), 4: (1, 4),",
             ("tests/test_topology.py::test_standard_slice_names_have_the_torus_shapes_cloud_tpu_"
              "provisions",)),
    Mutation("v5p-2048 is 8x16x8", "glmjax/topology.py", "1024: (8, 8, 16)", "1024: (8, 16, 8)",
             ("tests/test_topology.py::test_standard_slice_names_have_the_torus_shapes_cloud_tpu_"
              "provisions",)),
    Mutation("setup copies the code to the default project's VM", "launch/tpu.py",
             '             f"--zone={args.zone}"]\n  if args.project:\n'
             '    command.append(f"--project={args.project}")\n  return command + '
             '[f"--worker={worker}"]',
             '             f"--zone={args.zone}"]\n  return command + [f"--worker={worker}"]',
             ("tests/test_launch.py::test_setup_reaches_the_project_s_vm_with_scp_as_with_ssh",)),
    Mutation("--jax-version= pins the local jax", "launch/tpu_flags.py",
             "    if args.jax_version is None:", "    if not args.jax_version:",
             ("tests/test_launch.py::test_an_empty_jax_version_leaves_jax_unpinned",)),
    Mutation("v6e gets v5e's default runtime", "launch/tpu_flags.py", '"v6e": "v2-alpha-tpuv6e"}',
             '"v6e": "v2-alpha-tpuv5-lite"}',
             ("tests/test_launch.py::test_v6e_gets_its_own_default_runtime",)),
    Mutation("--check-s=0 is refused", "launch/tpu_flags.py", "    if args.check_s < 0:",
             "    if args.check_s < 1:",
             ("tests/test_launch.py::test_train_with_a_check_of_0_s_starts_the_trainers_and_waits_"
              "for_none",)),
    Mutation("a PROCS=gpu task may take the GPU id one past the last", "launch/gpu_slurm.sh",
             "elif ((local_id < count)); then", "elif ((local_id <= count)); then",
             ("tests/test_launch_slurm.py::test_a_slurm_layout_mismatch_stops_with_one_line",)),
    Mutation("nvidia-smi's MIG lines are counted as GPUs", "launch/gpu_slurm.sh",
             "count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)",
             "count=$(nvidia-smi -L 2>/dev/null | wc -l || true)",
             ("tests/test_launch_slurm.py::test_without_cuda_visible_devices_the_gpus_are_counted_"
              "from_nvidia_smi_s_gpu_lines",)),
    Mutation("aot counts held-out batches with evaluation off", "glmjax/aot.py",
             "resident = int(config.train.eval_batches) * batch_bytes if evaluated is not None "
             "else 0", "resident = int(config.train.eval_batches) * batch_bytes",
             ("tests/test_aot.py::test_the_batches_train_prefetches_count_in_the_peak",)),
    Mutation("aot compiles the eval step with evaluation off", "glmjax/aot.py",
             "**sizes) if config.train.eval_every else None)",
             "**sizes) if config.train.eval_batches else None)",
             ("tests/test_aot.py::test_the_batches_train_prefetches_count_in_the_peak",)),
    Mutation("aot does not check that every chip's rows are built by its host", "glmjax/aot.py",
             "  check_host_feeding(compiled, layouts)\n", "",
             ("tests/test_aot.py::test_a_slice_whose_chips_would_wait_for_rows_another_host_builds_"
              "is_refused",)),
    Mutation("aot for GPUs picks tokamax for a float32 model", "glmjax/attention_choice.py",
             "int(config.data.seq_len), device,\n"
             "                                                 dtype=config.model.dtype)",
             "int(config.data.seq_len), device)",
             ("tests/test_aot_gpu.py::test_auto_on_a_gpu_target_takes_tokamax_for_16_bit_models_and_"
              "xla_for_float32",)),
    Mutation("setup's parallel gcloud processes share the terminal's stdin", "launch/tpu.py",
             "                              stdin=subprocess.DEVNULL, check=False).returncode",
             "                              check=False).returncode",
             ("tests/test_launch_tpu_setup.py::test_setup_runs_every_worker_at_once_with_a_log_"
              "each_and_a_summary",)),
    Mutation("several processes that nothing numbers join as rank 0", "glmjax/distributed.py",
             "  if num_processes == 1:\n    return 0\n", "  return 0\n",
             (_PAR + "test_a_process_given_the_coordinator_by_its_environment_joins_with_that_"
              "address_and_rank",)),
    Mutation("a job that cannot be joined is a traceback in evaluate", "glmjax/evaluate.py",
             "  try:\n    distributed.initialize(join_timeout_s(workdir))\n"
             "  except distributed.JoinError as error:\n    logs.fail(error)\n",
             "  distributed.initialize(join_timeout_s(workdir))\n",
             ("tests/test_evaluate_command.py::test_a_job_that_cannot_be_joined_is_one_line_and_"
              "exit_status_1",)),
    Mutation("a job that cannot be joined is a traceback in train", "glmjax/train.py",
             "  try:\n    distributed.initialize(int(config.train.distributed_timeout_s), "
             "preemption_notice=True)\n  except distributed.JoinError as error:\n"
             "    logs.fail(error)\n",
             "  distributed.initialize(int(config.train.distributed_timeout_s), "
             "preemption_notice=True)\n",
             ("tests/test_host_input.py::test_train_refuses_a_job_it_cannot_join_in_one_line",)),
    Mutation("aot leaves jax_platforms unset, so jax probes for an attached TPU or GPU",
             "glmjax/aot.py",
             '  jax.config.update("jax_platforms", jax.config.jax_platforms or "cpu")\n', "",
             ("tests/test_aot.py::test_the_command_probes_no_attached_accelerator_unless_jax_"
              "platforms_names_one",)),
    Mutation("XLA_PYTHON_CLIENT_MEM_FRACTION=1 is refused", "glmjax/gpu_topology.py",
             "  if not 0 < fraction <= 1:", "  if not 0 < fraction < 1:",
             ("tests/test_aot_gpu.py::test_a_gpu_s_usable_memory_is_the_share_jax_s_client_"
              "takes",)),
    Mutation("a wrong GPU shape's message swaps the host and GPU limits", "glmjax/gpu_topology.py",
             "{rule.format(MAX_HOSTS, GPUS_PER_HOST)}", "{rule.format(GPUS_PER_HOST, MAX_HOSTS)}",
             ("tests/test_aot_gpu.py::test_impossible_gpu_names_say_what_is_accepted",)),
    Mutation("aot's report names GPU machines GPUs per host first", "glmjax/gpu_topology.py",
             'return f"{self.hosts}x{self.gpus_per_host} {self.model.name}"',
             'return f"{self.gpus_per_host}x{self.hosts} {self.model.name}"',
             ("tests/test_aot_gpu.py::test_gpu_names_give_hosts_and_gpus_per_host",)),
    Mutation("the word-embedding lookup leaves its FSDP gather to XLA", "glmjax/model/glm.py",
             'jnp.take(_gathered_over_embed(word_embeddings, "vocab"), tokens, axis=0)',
             "jnp.take(word_embeddings, tokens, axis=0)",
             ("tests/test_model_sharding.py::test_under_fsdp_a_tpu_slice_gathers_the_embedding_"
              "tables_never_the_batch_s_token_ids",)),
    # Session 45's review: several slices (multi-slice).
    Mutation("several slices get a single slice's mesh (fsdp across the slow network)",
             "glmjax/parallel.py", "  if slices > 1:\n    grid = _across_slices(",
             "  if slices > 99:\n    grid = _across_slices(",
             ("tests/test_aot.py::test_two_slices_compile_with_mesh_data_across_them_and_the_rest_"
              "inside_each",)),
    Mutation("a mesh.data that does not divide the slices is taken", "glmjax/parallel.py",
             "  if data % slices:\n", "  if False:\n",
             ("tests/test_aot.py::test_two_slices_compile_with_mesh_data_across_them_and_the_rest_"
              "inside_each",)),
    Mutation("a slice count is described as one slice", "glmjax/topology.py",
             "num_slices=spec.slices,", "num_slices=1,",
             ("tests/test_topology.py::test_slice_names_give_chips_and_hosts_as_cloud_tpu_"
              "provisions_them",)),
    Mutation("aot ends a mesh.data the slices cannot take in a traceback", "glmjax/aot.py",
             "config_lib.ConfigError, parallel.SliceMeshError,",
             "config_lib.ConfigError,", (_AOT + "test_a_mesh_data_two_slices_cannot_take_is_a_"
                                                "mistake_in_the_command_exit_status_2",)),
    Mutation("a per-slice shape the hybrid mesh cannot map is a traceback", "glmjax/parallel.py",
             "  except Exception as error:  # noqa: BLE001 - a per-slice shape",
             "  except KeyError as error:  # noqa: BLE001 - a per-slice shape",
             ("tests/test_aot.py::test_two_slices_compile_with_mesh_data_across_them_and_the_rest_"
              "inside_each",)),
)
