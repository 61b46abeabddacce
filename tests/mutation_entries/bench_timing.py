"""Planted bugs in the benchmarks' timing: work left running (a warm-up step, an untimed step,
the transfer that allocates) or a compile counted in a timed window, and the data benchmark's
core count. The tests' fake clock spends a step's device work only when it is waited for."""
from mutation_entries import Mutation

_STEP_PY = "glmjax/bench/step.py"
_SAVE_PY = "glmjax/bench/save.py"
_STEP = "tests/test_bench_step.py::"
_WAITS = "tests/test_bench_save_waits.py::"
_DATA = "tests/test_bench_data.py::"
_TRANSFER = (_WAITS + "test_the_host_transfer_is_timed_on_its_second_send_and_beside_a_step_from_"
             "an_idle_start",)
_FETCH = (_WAITS + "test_jax_s_fetch_is_timed_on_a_new_copy_and_beside_a_step_from_an_idle_"
          "start",)
_ATTENTION = ("tests/test_bench_attention.py::test_an_attention_timing_leaves_out_the_call_that_"
              "compiles",)

ENTRIES: tuple[Mutation, ...] = (
    # The step benchmark (step.py): pre-built batches, the pipeline, the compile.
    Mutation("the step benchmark starts its clock while the warm-up step still runs", _STEP_PY,
             "    state, out = compiled(state, device_batch)  # warm-up\n"
             "    jax.block_until_ready(out)\n",
             "    state, out = compiled(state, device_batch)  # warm-up\n",
             (_STEP + "test_the_step_benchmark_starts_its_clock_after_the_warm_up_step_has_"
              "finished",)),
    Mutation("the pipeline-fed step time starts while the first batch's step still runs",
             _STEP_PY,
             "batches.get(0))  # the first batch has no step to hide behind\n"
             "    jax.block_until_ready(out)\n",
             "batches.get(0))  # the first batch has no step to hide behind\n",
             (_STEP + "test_the_pipeline_fed_step_time_is_that_of_the_steps_after_the_first_"
              "batch",)),
    Mutation("the step benchmark's compile time includes building the program and the state",
             _STEP_PY,
             "  with parallel.activate(mesh, rules):\n"
             "    program = step_lib.build_program(config, mesh, rules, model_config)\n"
             "    state = step_lib.init_sharded_state(program.init_fn, program.shardings, "
             "config.seed)\n"
             "    host = parallel.host_rows(mesh, config.data.batch_size)  # this process's rows "
             "of the batch\n"
             "    device_batch = parallel.global_batch({k: v[host.rows] for k, v in "
             "batch.items()}, host)\n"
             "    start = time.perf_counter()\n",
             "  with parallel.activate(mesh, rules):\n"
             "    start = time.perf_counter()\n"
             "    program = step_lib.build_program(config, mesh, rules, model_config)\n"
             "    state = step_lib.init_sharded_state(program.init_fn, program.shardings, "
             "config.seed)\n"
             "    host = parallel.host_rows(mesh, config.data.batch_size)  # this process's rows "
             "of the batch\n"
             "    device_batch = parallel.global_batch({k: v[host.rows] for k, v in "
             "batch.items()}, host)\n",
             (_STEP + "test_the_step_benchmark_s_compile_time_is_the_compile_s_alone",)),
    # The profile benchmark.
    Mutation("the profile starts its trace and clock while the warm-up step still runs",
             "glmjax/bench/profile.py",
             "    state, out = compiled(state, batch)  # warm-up: compiled, buffers allocated\n"
             "    jax.block_until_ready(out)\n",
             "    state, out = compiled(state, batch)  # warm-up: compiled, buffers allocated\n",
             ("tests/test_bench_profile.py::test_the_profile_benchmark_starts_its_trace_and_clock_"
              "after_the_warm_up_step_has_finished",)),
    # The save benchmark (save.py): each timed window opens on idle devices.
    Mutation("the save benchmark's step time starts while its untimed step still runs", _SAVE_PY,
             "after one untimed step.\"\"\"\n  state, out = compiled(state, batch)\n"
             "  jax.block_until_ready(out)\n",
             "after one untimed step.\"\"\"\n  state, out = compiled(state, batch)\n",
             (_WAITS + "test_the_save_benchmark_times_its_steps_after_the_untimed_step_has_"
              "finished",)),
    Mutation("the host transfer is timed once, on the send that allocates the pinned buffers",
             _SAVE_PY, "  for _ in range(2):\n    on_host = None",
             "  for _ in range(1):\n    on_host = None", _TRANSFER),
    Mutation("the transfer beside a step starts while the step before it still runs", _SAVE_PY,
             "  jax.block_until_ready(out)\n  start = time.perf_counter()\n"
             "  state, out = compiled(state, batch)\n  on_host = host_copy.start(copy)\n",
             "  start = time.perf_counter()\n"
             "  state, out = compiled(state, batch)\n  on_host = host_copy.start(copy)\n",
             _TRANSFER),
    Mutation("jax's fetch is timed once, the first kept", _SAVE_PY,
             "  for _ in range(2):  # the second kept", "  for _ in range(1):  # the second kept",
             _FETCH),
    Mutation("the fetch beside a step starts while the step before it still runs", _SAVE_PY,
             "  jax.block_until_ready(out)\n  start = time.perf_counter()\n"
             "  state, out = compiled(state, batch)\n  fetched(copy)\n",
             "  start = time.perf_counter()\n"
             "  state, out = compiled(state, batch)\n  fetched(copy)\n", _FETCH),
    Mutation("a save's timed steps start while the untimed step still runs", _SAVE_PY,
             "  def timed(state, save):\n    state, out = compiled(state, batch)\n"
             "    jax.block_until_ready(out)\n",
             "  def timed(state, save):\n    state, out = compiled(state, batch)\n",
             (_WAITS + "test_a_direct_save_s_call_time_is_its_own_not_that_of_the_step_before_"
              "it",)),
    Mutation("the largest step overhead's first step starts while the untimed step still runs",
             _SAVE_PY,
             "  def each_step(state, save):\n    state, out = compiled(state, batch)\n"
             "    jax.block_until_ready(out)\n",
             "  def each_step(state, save):\n    state, out = compiled(state, batch)\n",
             (_WAITS + "test_each_step_of_the_largest_step_overhead_is_timed_from_an_idle_"
              "device",)),
    Mutation("the in-step transfer's steps start while its untimed call still runs", _SAVE_PY,
             "    state, out, on_host = program(state, setup.batch)\n"
             "    jax.block_until_ready((out, on_host))\n    start = time.perf_counter()\n",
             "    state, out, on_host = program(state, setup.batch)\n"
             "    start = time.perf_counter()\n",
             (_WAITS + "test_the_in_step_transfer_is_timed_after_its_untimed_call_has_"
              "finished",)),
    # The attention and data benchmarks.
    Mutation("the attention benchmark times the compiling call with the rest",
             "glmjax/bench/attention.py",
             "  jax.block_until_ready(fn(*args))  # compile and warm up\n"
             "  start = time.perf_counter()\n",
             "  start = time.perf_counter()\n"
             "  jax.block_until_ready(fn(*args))  # compile and warm up\n", _ATTENTION),
    Mutation("the attention benchmark starts its clock while the compiling call still runs",
             "glmjax/bench/attention.py",
             "  jax.block_until_ready(fn(*args))  # compile and warm up\n",
             "  fn(*args)  # compile and warm up\n", _ATTENTION),
    Mutation("the data benchmark times its first batch, which warms up", "glmjax/bench/data.py",
             "  p.global_batch(0)  # warm-up: first-touch of memory, imports\n", "",
             (_DATA + "test_the_data_benchmark_starts_its_clock_after_a_warm_up_batch",)),
    Mutation("the data benchmark counts the machine's cores, not those it may run on",
             "glmjax/bench/data.py", '"cpu_cores_allowed": len(os.sched_getaffinity(0)),',
             '"cpu_cores_allowed": os.cpu_count(),',
             (_DATA + "test_the_data_benchmark_counts_the_cores_this_process_may_run_on_not_the_"
              "machine_s",)),
    Mutation("the step benchmark is silent while it compiles", "glmjax/bench/step.py",
             '    log.info("Compiled in %.1f s; timing it (one JSON line follows on stdout)", '
             'compile_s)\n', "",
             (_STEP + "test_the_step_benchmark_says_it_is_compiling_and_how_long_that_took",)),
)
