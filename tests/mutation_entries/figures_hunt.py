"""Planted bugs in the figures a user reads that passed the suite (session 39's figures hunt):
the step's pair count for long rows and the start-up line's rate for the last step; the
console's lr and gnorm columns; TensorBoard's flush interval and config text; the first-step
notice's next log step in a short run; the Finished line's time, the eval line's step, the
parameter count and the rate line's last step of a run and its resume; evaluate's notice that
held-out documents come back under --batch_size; held-out progress waiting on the devices."""
from mutation_entries import Mutation

_METRICS = "tests/test_metrics.py::"
_CONSOLE = (_METRICS + "test_the_console_line_gives_the_rate_in_exponent_form_and_the_gradient_"
            "norm_as_gnorm",)
_RUN = ("tests/test_run_log_figures.py::test_a_run_and_its_resume_log_their_own_figures",)
_LONG_ROWS = ("tests/test_flops.py::test_the_train_step_counts_the_visible_pairs_of_rows_longer_"
              "than_46340_tokens",)

ENTRIES = (
    Mutation("the step counts visible pairs with T as a Python int (rows over 46340 tokens "
             "overflow)", "glmjax/step.py",
             'visible_pairs=jnp.sum(model_lib.visible_pairs(float(batch["tokens"].shape[1]),',
             'visible_pairs=jnp.sum(model_lib.visible_pairs(batch["tokens"].shape[1],',
             _LONG_ROWS),
    Mutation("the start-up line gives the rate after the last step instead of the one it applies",
             "glmjax/optim.py", 'f"{float(schedule(max(last_step - 1, 0))):.2e}")',
             'f"{float(schedule(last_step)):.2e}")',
             ("tests/test_optim.py::test_the_start_up_line_gives_the_schedule_and_the_rate_a_"
              "shortened_run_stops_at",
              "tests/test_train.py::test_nan_batch_is_skipped_and_logged")),
    Mutation("the console's gnorm column shows the parameter norm", "glmjax/metrics.py",
             "gnorm {fmt('grad_norm', '.3f')}", "gnorm {fmt('param_norm', '.3f')}", _CONSOLE),
    Mutation("the console shows the learning rate with two decimals so every rate reads 0.00",
             "glmjax/metrics.py", "lr {fmt('learning_rate', '.2e')}",
             "lr {fmt('learning_rate', '.2f')}", _CONSOLE),
    Mutation("tensorboard events reach disk only once an hour during a run", "glmjax/metrics.py",
             "SummaryWriter(folder, flush_secs=30)", "SummaryWriter(folder, flush_secs=3600)",
             (_METRICS + "test_tensorboard_events_reach_disk_within_a_minute_of_being_written",)),
    Mutation("the first-step notice names a next log step past the end of a short run",
             "glmjax/loop.py",
             "                 min((step_done // log_every + 1) * log_every, self.total_steps), "
             "log_every)",
             "                 (step_done // log_every + 1) * log_every, log_every)",
             ("tests/test_loop.py::test_a_run_s_first_step_is_said_at_once_when_its_first_log_"
              "line_is_steps_away",)),
    Mutation("the Finished line's time includes the compiles", "glmjax/train.py",
             "  run_start = time.perf_counter()\n", "  run_start = started\n", _RUN),
    Mutation("the eval log line names the step before the one evaluated", "glmjax/train.py",
             '"eval at step %d | loss %.4f | accuracy %.3f | perplexity %.2f", done,',
             '"eval at step %d | loss %.4f | accuracy %.3f | perplexity %.2f", step,', _RUN),
    Mutation("the start-up parameter count includes the optimizer moments", "glmjax/train.py",
             "for x in jax.tree.leaves(abstract.params))", "for x in jax.tree.leaves(abstract))",
             _RUN),
    Mutation("the learning-rate start-up line uses this run's step count not its last step",
             "glmjax/train.py", "  log.info(optim.schedule_line(config.optim, total_steps))",
             "  log.info(optim.schedule_line(config.optim, total_steps - start))", _RUN),
    Mutation("tensorboard's config text keeps attention auto not the kernel that ran",
             "glmjax/train.py",
             'writer.write_text("config", resolved.to_json_best_effort(indent=2))',
             'writer.write_text("config", config.to_json_best_effort(indent=2))', _RUN),
    Mutation("evaluate's notice that documents come back counts the run's batch size",
             "glmjax/evaluate.py",
             "passes = batches * int(data.batch_size) * int(data.seq_len)",
             "passes = batches * int(config.data.batch_size) * int(data.seq_len)",
             ("tests/test_evaluate.py::test_more_batches_than_the_held_out_split_holds_say_its_"
              "documents_come_back",)),
    Mutation("held-out progress reports batches queued as done", "glmjax/held_out.py",
             "      jax.block_until_ready(total)  # report what the device has done, not what "
             "was queued\n", "",
             ("tests/test_host_input.py::test_held_out_sums_wait_on_the_devices_only_to_report_"
              "progress",)),
)
