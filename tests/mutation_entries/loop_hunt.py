"""Planted bugs in the training loop, the training program's eval step, the profiler and the
held-out sums that passed the suite (session 39's step and loop hunt): the loop calls the jit
wrappers instead of the steps compiled at start-up, builds or transfers batches on the training
thread, reads each step's metrics at once, leaves its prefetch thread running after a failure,
the eval step ignores grad_accum_steps and train.loss_chunk, the profiler stops without waiting
for the traced steps, and held-out sums wait on the devices after every batch."""
from mutation_entries import Mutation

_TRAIN = "glmjax/train.py"
_FEEDING = ("tests/test_loop_feeding.py::test_each_step_runs_the_compiled_steps_on_prefetched_"
            "batches_reading_metrics_a_step_late",)
_EVAL_STEP = ("tests/test_train_step.py::test_the_training_program_s_held_out_step_runs_grad_"
              "accum_steps_micro_batches_in_loss_chunks",)

ENTRIES = (
    Mutation("the training loop calls the uncompiled jit wrapper instead of the compiled step",
             _TRAIN, "        state, metrics = train_fn(state, batch)",
             "        state, metrics = program.train_step(state, batch)", _FEEDING),
    Mutation("evaluation in training runs the uncompiled eval wrapper", _TRAIN,
             "  evaluator = (held_out.Evaluator(program.compile_eval_step(config, mesh), "
             "inputs.eval_pipeline,",
             "  evaluator = (held_out.Evaluator(program.eval_step, inputs.eval_pipeline,",
             _FEEDING),
    Mutation("train batches are transferred to the devices on the training thread", _TRAIN,
             "      lambda k: parallel.pipeline_batch(inputs.train_pipeline, k, host), start, "
             "total_steps)\n  run_start = time.perf_counter()\n  try:\n"
             "    for step in range(start, total_steps):\n      profiler.before_step(step)\n"
             "      batch = batches.get(step)",
             "      lambda k: inputs.train_pipeline.build_rows(k, host.rows), start, total_steps)\n"
             "  run_start = time.perf_counter()\n  try:\n"
             "    for step in range(start, total_steps):\n      profiler.before_step(step)\n"
             "      batch = parallel.global_batch(batches.get(step), host)", _FEEDING),
    Mutation("train builds each batch itself and never takes the prefetched one", _TRAIN,
             "      batch = batches.get(step)",
             "      batch = parallel.pipeline_batch(inputs.train_pipeline, step, host)", _FEEDING),
    Mutation("the loop reads each step's metrics right after dispatching it", _TRAIN,
             "      reporter.push(done, metrics)",
             "      reporter.push(done, metrics)\n      reporter.flush()", _FEEDING),
    Mutation("train never closes the prefetcher so a failed run leaks its thread", _TRAIN,
             "    batches.close()\n", "",
             ("tests/test_loop_feeding.py::test_a_run_that_fails_mid_loop_stops_its_prefetch_"
              "thread",)),
    Mutation("the training program's eval step ignores grad_accum_steps", "glmjax/step.py",
             "                     micro_batches=int(config.optim.grad_accum_steps),",
             "                     micro_batches=1,", _EVAL_STEP),
    Mutation("the training program's eval step ignores train.loss_chunk", "glmjax/step.py",
             "                     loss_chunk=int(config.train.loss_chunk)),\n"
             "                 compiler_options",
             "                     loss_chunk=loss_lib.DEFAULT_CHUNK),\n"
             "                 compiler_options", _EVAL_STEP),
    Mutation("the profiler stops tracing without waiting for the traced steps", "glmjax/loop.py",
             "      if state is not None:\n        jax.block_until_ready(state)\n", "",
             ("tests/test_loop.py::test_the_profiler_waits_for_the_traced_steps_before_it_stops_"
              "the_trace",)),
    Mutation("held-out summing waits on the devices after every batch", "glmjax/held_out.py",
             "    if progress is not None and time.monotonic() - last > every_s:\n"
             "      jax.block_until_ready(total)",
             "    jax.block_until_ready(total)\n"
             "    if progress is not None and time.monotonic() - last > every_s:\n      pass",
             ("tests/test_host_input.py::test_held_out_sums_wait_on_the_devices_only_to_report_"
              "progress",)),
)
