"""Planted bugs in the run's infrastructure that passed the suite (session 38): a TPU chip's
usable HBM that is not libtpu's figure, slice names and TPU variables, commands' one-line
errors, the launcher's checks."""
from mutation_entries import Mutation

_T = "tests/test_topology.py::"
_IMPOSSIBLE = _T + "test_impossible_slice_names_say_what_is_wrong_and_what_is_accepted"
_CLI = "tests/test_cli.py::"
_LAUNCH = "tests/test_launch.py::"
_USABLE_HBM = ("tests/test_topology.py::test_a_chip_s_usable_hbm_is_what_libtpu_s_compiler_lets_"
               "one_program_take")

ENTRIES = (
    Mutation("a v6e chip is said to give a program all of its 32 GiB", "glmjax/topology.py",
             "int(31.24 * GIB), 8),", "int(32 * GIB), 8),", (_USABLE_HBM + "[v6e-1]",)),
    Mutation("a 3-D generation given two torus axes is taken for a slice", "glmjax/topology.py",
             "    if len(shape) != generation.dims or min(shape) < 1:",
             "    if len(shape) > generation.dims or min(shape) < 1:",
             (_IMPOSSIBLE + "[v5p:4x4-v5p slices have 3 torus axes]",)),
    Mutation("a torus axis that splits a host's chips is accepted when it is long enough",
             "glmjax/topology.py",
             "    if any(size % bound for size, bound in zip((*shape, 1, 1)[:3], bounds)):",
             "    if any(size < bound for size, bound in zip((*shape, 1, 1)[:3], bounds)):",
             (_IMPOSSIBLE + "[v6e:3x4-every torus axis must be a multiple of that]",)),
    Mutation("describing a slice replaces the user's TPU variables, then removes them",
             "glmjax/topology.py",
             "           else [name for name in values if name not in os.environ])",
             "           else list(values))",
             (_T + "test_describing_a_slice_keeps_the_tpu_variables_the_user_had_set",)),
    Mutation("jax's missing TPU support is not told to install libtpu", "glmjax/topology.py",
             'missing = isinstance(error, ImportError) or "TPU support not installed" in '
             'first_line',
             "missing = isinstance(error, ImportError)",
             (_T + "test_without_libtpu_the_error_says_what_to_install",)),
    Mutation("a config file given with its argument has its own KeyError blamed on an override",
             "glmjax/cli.py",
             '  files = {os.path.realpath(path.split(":", 1)[0]) for path in paths}',
             "  files = {os.path.realpath(path) for path in paths}",
             (_CLI + "test_a_key_error_in_the_config_file_s_own_code_keeps_its_traceback"
              "[with its argument]",)),
    Mutation("a validating command run without --config crashes validating nothing",
             "glmjax/cli.py",
             "      if validate and flags.FLAGS.config is not None:",
             "      if validate:",
             (_CLI + "test_a_command_run_without_its_config_file_is_one_line_asking_for_it"
              "[prepare]",)),
    Mutation("absl's own flag suggestion is given twice", "glmjax/cli.py",
             '  if "Did you mean" in line:\n    return ""\n', "",
             (_CLI + "test_an_unknown_flag_close_to_one_the_command_has_is_one_line_suggesting_it"
              "[glmjax.train---workdri=run-workdir]",)),
    Mutation("the launcher's gcloud check runs for dry runs instead of real ones", "launch/tpu.py",
             '    if not args.dry_run and shutil.which("gcloud") is None:',
             '    if args.dry_run and shutil.which("gcloud") is None:',
             (_LAUNCH + "test_without_gcloud_a_command_says_to_install_it_and_a_dry_run_still_"
              "prints",)),
    Mutation("a missing --name reaches the name check as None", "launch/tpu_flags.py",
             '  if not args.name:\n    raise UsageError("--name is required: the TPU slice name, '
             'e.g. --name=glm10b")\n', "",
             (_LAUNCH + "test_a_usage_error_is_one_line_naming_the_flag_with_exit_status_2"
              "[argv6---name is required]",)),
    Mutation("a worker's setup log gets each command's line after the command's output",
             "launch/tpu.py", '        log.write(f"+ {shlex.join(command)}\\n")\n        '
             "log.flush()\n", '        log.write(f"+ {shlex.join(command)}\\n")\n',
             ("tests/test_launch_tpu_setup.py::test_setup_runs_every_worker_at_once_with_a_log_"
              "each_and_a_summary",)),
    Mutation("colour codes with a ; (bold red) stay in error lines", "glmjax/error_text.py",
             '_COLOUR = re.compile(r"\\x1b\\[[0-9;]*m")',
             '_COLOUR = re.compile(r"\\x1b\\[[0-9]*m")',
             ("tests/test_error_text.py::test_terminal_colour_codes_are_left_out",)),
    Mutation("typed_line does not cut a long line unless asked", "glmjax/error_text.py",
             "def typed_line(error: BaseException, limit: int | None = 300) -> str:",
             "def typed_line(error: BaseException, limit: int | None = None) -> str:",
             ("tests/test_error_text.py::test_the_first_line_is_the_first_one_with_text_and_is_"
              "cut_at_the_limit",)),
    Mutation("fit_table takes ' GLM-10B' (a space after a comma) for an unknown model",
             "glmjax/fit_table.py",
             '  names = [name.strip() for name in text.split(",") if name.strip()]',
             '  names = [name for name in text.split(",") if name]',
             ("tests/test_fit_table.py::test_the_command_searches_the_chosen_models_and_"
              "generations_and_splices_their_rows",)),
    Mutation("a process holding no device of the mesh gets numpy's error", "glmjax/parallel.py",
             "  if not ranges:\n    raise ValueError(f\"Process {process} holds no device of the "
             "mesh; every process must.\")\n", "",
             ("tests/test_parallel.py::test_a_process_that_holds_no_device_of_the_mesh_is_named_"
              "in_the_error",)),
    Mutation("setup given --workers and a mistyped --accelerator takes the name unchecked",
             "launch/tpu_flags.py",
             "    elif args.accelerator:  # --workers wins; the name is checked all the same\n"
             "      parse_accelerator(args.accelerator)\n", "",
             (_LAUNCH + "test_a_usage_error_is_one_line_naming_the_flag_with_exit_status_2"
              "[argv13---accelerator='v9x-8' is not a TPU slice name]",)),
    Mutation("logs --lines=0 asks the worker for no lines", "launch/tpu_flags.py",
             '  if args.command == "logs" and args.lines < 1:', '  if False:',
             (_LAUNCH + "test_a_usage_error_is_one_line_naming_the_flag_with_exit_status_2"
              "[argv14---lines=0: how many of the log's last lines]",)),
    Mutation("restored arrays without a saved checksum pass unverified and unsaid",
             "glmjax/checksums.py", "  if unchecked:  # names that stopped matching",
             "  if False:  # names that stopped matching",
             ("tests/test_checkpoint_damage.py::test_restored_arrays_that_no_saved_checksum_names_"
              "are_warned_of_not_passed_silently",)),
)
