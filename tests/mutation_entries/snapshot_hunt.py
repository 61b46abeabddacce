"""Planted bugs in a checkpoint save's costs and the step benchmark's timing that passed the
suite (session 39's save and benchmark hunt): a deferred save waits for the step and the copy,
the device copy is held while Orbax saves, the snapshot's copy and the checksums run op by op,
the step benchmark times a host batch, builds the pipeline's batches on its timing thread and
waits after every timed step, and the sweep keeps jax's caches from trial to trial."""
from mutation_entries import Mutation

_CHECKPOINT, _CHECKSUMS = "glmjax/checkpoint.py", "glmjax/checksums.py"
_BENCH_STEP = "glmjax/bench/step.py"
_COSTS = "tests/test_save_costs.py::"
_STEP = "tests/test_bench_step.py::"

ENTRIES = (
    Mutation("a deferred snapshot save waits for the running step and the copy", _CHECKPOINT,
             "      copy, summary = checksums.copy_with_summary(state)\n",
             "      copy, summary = checksums.copy_with_summary(state)\n"
             "      jax.block_until_ready(copy)\n",
             (_COSTS + "test_a_deferred_save_returns_without_waiting_for_the_devices",)),
    Mutation("the snapshot's device copy stays alive while Orbax saves", _CHECKPOINT,
             "    del transfer  # the copy not handed over is freed before Orbax needs memory\n",
             "", (_COSTS + "test_a_device_snapshot_s_copy_on_the_devices_is_freed_before_orbax_"
                  "writes",)),
    Mutation("the snapshot's copy and checksums run op by op instead of jitted", _CHECKSUMS,
             "_copies_and_summaries = jax.jit(_each_copy_and_summary, static_argnums=1)",
             "_copies_and_summaries = _each_copy_and_summary",
             (_COSTS + "test_a_snapshot_s_copy_and_checksums_run_as_one_compiled_program",)),
    Mutation("checkpoint checksums are computed op by op instead of jitted", _CHECKSUMS,
             "_summaries = jax.jit(_each_summary, static_argnums=1)",
             "_summaries = _each_summary",
             (_COSTS + "test_a_checkpoint_s_checksums_run_as_one_compiled_program",)),
    Mutation("the step benchmark times a host batch transferred at every step", _BENCH_STEP,
             "    yield Setup(compiled, state, device_batch, host,",
             "    yield Setup(compiled, state, batch, host,",
             (_STEP + "test_the_step_benchmark_feeds_its_steps_a_batch_already_on_the_devices",)),
    Mutation("the pipeline-fed benchmark builds each batch on the timing thread", _BENCH_STEP,
             "      state, out = compiled(state, batches.get(step))",
             "      state, out = compiled(state, build(step))",
             (_STEP + "test_the_pipeline_fed_step_benchmark_builds_every_batch_on_the_prefetch_"
              "thread",)),
    Mutation("the step benchmark waits for every timed step", _BENCH_STEP,
             "    for _ in range(steps):\n      state, out = compiled(state, device_batch)\n",
             "    for _ in range(steps):\n      state, out = compiled(state, device_batch)\n"
             "      jax.block_until_ready(out)\n",
             (_STEP + "test_the_step_benchmark_waits_once_for_its_timed_steps",)),
    Mutation("the sweep keeps jax's caches from one trial to the next", "glmjax/bench/sweep.py",
             "    jax.clear_caches()\n", "",
             ("tests/test_bench.py::test_the_sweep_times_each_setting_it_records_and_picks_the_"
              "one_with_most_tokens_per_s",)),
)
