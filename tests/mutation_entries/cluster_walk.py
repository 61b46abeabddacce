"""Planted bugs in what a user meets planning and launching a run on a TPU slice or a GPU
cluster: the fit table's README, the TPU launcher's zone and grace flags, tensor groups that span
hosts, a workdir read back on a device count its sizes do not divide, and an override given
without its config file."""
from mutation_entries import Mutation

_LAUNCH = ("tests/test_launch.py::test_a_usage_error_is_one_line_naming_the_flag_with_exit_"
           "status_2",)

ENTRIES = (
    Mutation("fit_table finds a --readme it cannot write into only after every compile",
             "glmjax/fit_table.py", "  if args.readme:\n    check_readme(args.readme)\n",
             "  if False:\n    check_readme(args.readme)\n",
             ("tests/test_fit_table.py::test_a_readme_the_rows_cannot_go_into_is_refused_before_"
              "any_compile",)),
    Mutation("launch/tpu.py hands gcloud a region as --zone", "launch/tpu_flags.py",
             '  if re.fullmatch(r"[a-z]+-[a-z]+[0-9]+", args.zone):', "  if False:", _LAUNCH),
    Mutation("launch/tpu.py takes a --grace under 1 s and KILLs the trainer before its save",
             "launch/tpu_flags.py", '  if args.command in ("train", "stop") and args.grace < 1:',
             "  if False:", _LAUNCH),
    Mutation("a tensor group spanning hosts is warned of only when jax's mapping failed",
             "glmjax/parallel.py",
             '  report = (log.warning if spread > 1 and devices[0].platform != "cpu" else',
             '  report = (log.warning if spread > 1 and devices[0].platform != "cpu"\n'
             '            and "failed" in layout else',
             ("tests/test_host_input.py::test_a_topology_mapped_mesh_warns_too_when_a_tensor_"
              "group_spans_hosts",)),
    Mutation("a workdir is read onto the run's mesh whatever sizes this host's devices split",
             "glmjax/pretrained.py",
             "        axes, dict(zip(parallel.MESH_AXES, shape)), rules) is None",
             "        axes, dict(zip(parallel.MESH_AXES, shape)), rules) is None or True",
             ("tests/test_reporting.py::test_a_workdir_whose_hidden_size_this_host_s_device_count_"
              "does_not_divide_still_loads",)),
    Mutation("a --config.* override without --config is only an unknown flag",
             "glmjax/cli.py",
             '  if error.flagname.startswith("config.") and "config" in flags.FLAGS:',
             "  if False:",
             ("tests/test_cli.py::test_a_config_override_without_a_config_file_is_one_line_asking_"
              "for_the_file",)),
    Mutation("a misspelt model field is sent to glmjax/config.py for the list of fields",
             "glmjax/config.py", '  return ("glmjax/model/model_config.py (ModelConfig)" if '
             'field.startswith("model.")',
             '  return ("glmjax/model/model_config.py (ModelConfig)" if field.startswith("mdl.")',
             ("tests/test_config_validation.py::test_a_field_misspelled_in_a_config_file_is_"
              "refused_naming_the_field_meant",)),
    Mutation("configs/glm_10b.py:stage2,local trains stage 1's objectives", "configs/glm_10b.py",
             "    recipes.shrink_to_local(config)\n",
             "    recipes.shrink_to_local(config)\n"
             "    config.data.update(blank_prob=0.5, sentence_prob=0.3, document_prob=0.2)\n",
             ("tests/test_config.py::test_glm_10b_carries_the_original_data_recipe_and_its_second_"
              "stage",)),
    Mutation("aot promises minutes of compiling before refusing an impossible mesh",
             "glmjax/aot.py", "    config_lib.validate(config, num_devices=spec.chips)\n", "",
             ("tests/test_aot.py::test_an_unknown_topology_and_an_impossible_mesh_are_one_line_"
              "errors",)),
    Mutation("aot tells a GPU user their model does not fit a chip's HBM", "glmjax/aot.py",
             '("GPU", "jax\'s share of GPU memory") if gpu else', '("chip", "HBM") if gpu else',
             ("tests/test_aot_gpu.py::test_the_command_exits_1_and_names_jax_s_memory_share_when_a_"
              "config_does_not_fit",)),
    Mutation("the fit advice offers micro-batches that no longer split over the mesh",
             "glmjax/memory.py",
             "  if batch % accum == 0 and (batch // accum) % max(batch_parallelism, 1) == 0:",
             "  if batch % accum == 0:",
             ("tests/test_aot_report.py::test_the_advice_for_a_config_that_does_not_fit_names_"
              "the_knobs_not_yet_turned",)),
    Mutation("fit_table's --generations refuses gcloud's name v5litepod", "glmjax/fit_table.py",
             "  known = tuple(dict.fromkeys((*GENERATIONS, *names)))", "  known = GENERATIONS",
             ("tests/test_fit_table.py",)),
)
