"""Planted bugs in sharding that passed the suite (session 37's mesh hunt): the numbers stay
right, the memory or the traffic does not. A parameter or the logits left whole over the tensor
axis, the embedding table gathered whole, micro-batches checked against mesh.data alone."""
from mutation_entries import Mutation

_GLM = "glmjax/model/glm.py"
_SHARDED = ("tests/test_model_sharding.py::test_every_parameter_and_the_logits_are_split_over_"
            "the_axes_their_rules_name",)

ENTRIES = (
    Mutation("the fused QKV kernel is not split over heads on the tensor axis", _GLM,
             '("embed", None, "heads", "kv")', '("embed", None, None, "kv")', _SHARDED),
    Mutation("the MLP's output kernel is not split over the tensor axis", _GLM,
             '"wo", (ffn, hidden), ("mlp", "embed")', '"wo", (ffn, hidden), (None, "embed")',
             _SHARDED),
    Mutation("the logits are not split over the vocabulary on the tensor axis", _GLM,
             'LOGIT_AXES = ("activation_batch", "activation_length", "activation_vocab")',
             'LOGIT_AXES = ("activation_batch", "activation_length", None)', _SHARDED),
    Mutation("the word-embedding lookup gathers the whole table, not this device's vocabulary",
             _GLM, 'jnp.take(_gathered_over_embed(word_embeddings, "vocab"), tokens, axis=0)',
             'jnp.take(_gathered_over_embed(word_embeddings, None), tokens, axis=0)',
             ("tests/test_model_sharding.py::test_under_fsdp_a_tpu_slice_gathers_the_embedding_"
              "tables_never_the_batch_s_token_ids[2]",)),
    Mutation("train checks the micro-batch against mesh.data alone, not data x fsdp",
             "glmjax/train.py",
             "                        batch_parallelism=parallel.batch_axis_size(mesh))",
             "                        batch_parallelism=mesh.shape[\"data\"])",
             ("tests/test_train_startup.py::test_a_micro_batch_that_cannot_split_over_the_fsdp_"
              "devices_is_refused_at_start_up",)),
)
