"""Planted bugs in the figures a user reads that passed the suite (session 39's figures hunt):
the step's pair count for long rows and the start-up line's rate for the last step."""
from mutation_entries import Mutation

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
)
