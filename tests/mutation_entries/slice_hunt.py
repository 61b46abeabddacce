"""Planted bugs in splash's blocks, the TPU kernel pick, joining a multi-host job and the TPU
launcher that passed the suite (session 39's TPU hunt): splash computes in 128-token blocks,
auto on a TPU skips splash_dynamic, a named kernel goes unchecked on a TPU, process 0 of several
trains alone without a coordinator, two SLURM tasks are taken for one, JAX_PROCESS_ID=0 is
refused, setup run again stops at its own log folder, and a grace of 1 s or one log line is
refused."""
from mutation_entries import Mutation

_CHOICE, _DISTRIBUTED = "glmjax/attention_choice.py", "glmjax/distributed.py"
_CHOICE_TESTS = "tests/test_attention_choice.py::"
_REFUSED = ("tests/test_host_input.py::test_jax_variables_that_describe_no_joinable_job_are_"
            "refused_in_one_line")
_SMALLEST = ("tests/test_launch.py::test_a_grace_of_1_s_and_a_single_log_line_are_the_smallest_"
             "taken")

ENTRIES = (
    Mutation("splash tiles its inner key loop in 128-token compute blocks",
             "glmjax/model/splash.py",
             "      block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,",
             "      block_q=block, block_kv=block, block_kv_compute=128, block_q_dkv=block,",
             ("tests/test_attention.py::test_a_splash_kernel_computes_every_pass_in_whole_blocks_"
              "of_its_sequence",)),
    Mutation("auto on a TPU never falls back to splash_dynamic", _CHOICE,
             '    "tpu": ("splash", "splash_dynamic", REFERENCE),',
             '    "tpu": ("splash", REFERENCE),',
             (_CHOICE_TESTS + "test_auto_on_a_tpu_falls_back_to_splash_dynamic_when_splash_fails_"
              "its_check",)),
    Mutation("an explicitly named kernel is not checked at start-up on a TPU", _CHOICE,
             '      check_explicit = platform in ("gpu", "tpu")',
             '      check_explicit = platform == "gpu"',
             (_CHOICE_TESTS + "test_an_explicit_kernel_that_fails_its_check_stops_the_run_with_"
              "the_reason",)),
    Mutation("process 0 given JAX_NUM_PROCESSES=2 but no coordinator trains alone", _DISTRIBUTED,
             '    if explicit.get("num_processes", 1) > 1 or explicit.get("process_id", 0) > 0:',
             '    if explicit.get("num_processes", 1) > 1 and explicit.get("process_id", 0) > 0:',
             (_REFUSED + "[rank_0_of_2]", _REFUSED + "[count_2_alone]",
              _REFUSED + "[rank_1_alone]")),
    Mutation("JAX_NUM_PROCESSES=2 without a coordinator is taken for one process", _DISTRIBUTED,
             '    if explicit.get("num_processes", 1) > 1 or explicit.get("process_id", 0) > 0:',
             '    if explicit.get("num_processes", 1) > 2 or explicit.get("process_id", 0) > 0:',
             (_REFUSED + "[rank_0_of_2]", _REFUSED + "[count_2_alone]")),
    Mutation("JAX_PROCESS_ID=1 alone without a coordinator trains alone", _DISTRIBUTED,
             '    if explicit.get("num_processes", 1) > 1 or explicit.get("process_id", 0) > 0:',
             '    if explicit.get("num_processes", 1) > 1 or explicit.get("process_id", 0) > 1:',
             (_REFUSED + "[rank_1_alone]",)),
    Mutation("a two-task SLURM job is taken for a single process", _DISTRIBUTED,
             'return int(env.get("SLURM_NTASKS", "1")) > 1 or',
             'return int(env.get("SLURM_NTASKS", "1")) > 2 or',
             ("tests/test_parallel.py::test_a_process_joins_jax_distributed_exactly_when_its_"
              "environment_describes_several[env4-True]",)),
    Mutation("JAX_PROCESS_ID=0 is refused as below the lowest rank", _DISTRIBUTED,
             'explicit[key] < (1 if key == "num_processes" else 0):',
             'explicit[key] < (1 if key == "num_processes" else 1):',
             ("tests/test_parallel.py::test_a_process_given_the_coordinator_by_its_environment_"
              "joins_with_that_address_and_rank",)),
    Mutation("running launch/tpu.py setup again stops at the log folder it made before",
             "launch/tpu.py", "  os.makedirs(log_dir, exist_ok=True)",
             "  os.makedirs(log_dir, exist_ok=False)",
             ("tests/test_launch_tpu_setup.py::test_setup_run_again_writes_fresh_logs_into_the_"
              "log_folder_it_made_before",)),
    Mutation("a grace of 1 s between TERM and KILL is refused", "launch/tpu_flags.py",
             '  if args.command in ("train", "stop") and args.grace < 1:',
             '  if args.command in ("train", "stop") and args.grace < 2:', (_SMALLEST,)),
    Mutation("logs --lines=1 is refused", "launch/tpu_flags.py",
             '  if args.command == "logs" and args.lines < 1:',
             '  if args.command == "logs" and args.lines < 2:', (_SMALLEST,)),
    # Session 45's review: a pod slice started by hand trains without a preemption notice.
    Mutation("several processes that did not join train without a preemption notice",
             _DISTRIBUTED, "if preemption_notice and jax.process_count() > 1:",
             "if preemption_notice and jax.process_count() > 4:",
             ("tests/test_parallel.py::test_training_refuses_several_processes_that_did_not_"
              "join_as_they_would_hear_no_preemption",)),
    Mutation("train joins without asking for the preemption notice", "glmjax/train.py",
             "  try:\n    distributed.initialize(int(config.train.distributed_timeout_s), "
             "preemption_notice=True)",
             "  try:\n    distributed.initialize(int(config.train.distributed_timeout_s))",
             ("tests/test_host_input.py::test_train_refuses_a_pod_slice_started_without_joining_"
              "in_one_line",)),
    Mutation("a job jax cannot join is a bare ValueError", _DISTRIBUTED,
             "  except ValueError as error:  # jax found no coordinator",
             "  except KeyError as error:  # jax found no coordinator",
             ("tests/test_parallel.py::test_a_job_jax_cannot_join_from_its_environment_is_one_"
              "line_naming_srun",)),
    Mutation("setup run again with another --python keeps the old venv", "launch/tpu_remote.py",
             """--version 2>&1)" != '""", """--version 2>&1)" = '""",
             ("tests/test_launch_tpu_setup.py::test_setup_installs_once_and_skips_while_the_"
              "requirements_are_unchanged",)),
    Mutation("a venv made anew keeps the old install marker (and no requirements)",
             "launch/tpu_remote.py", "then rm -rf ~/glmjax/venv {MARKER}; ",
             "then rm -rf ~/glmjax/venv; ",
             ("tests/test_launch_tpu_setup.py::test_setup_installs_once_and_skips_while_the_"
              "requirements_are_unchanged",)),
    Mutation("launch/tpu.py takes several slices for one", "launch/tpu_flags.py",
             "  if spec.slices > 1:  # one gcloud TPU VM", "  if False:  # one gcloud TPU VM",
             ("tests/test_launch.py::test_a_usage_error_is_one_line_naming_the_flag_with_exit_"
              "status_2",)),
)
