"""GLM model: `GLM(ModelConfig.from_config(config.model))` plus its size and FLOPs formulas.

    logits = GLM(cfg).apply(variables, tokens, position_ids, block_position_ids, sep,
                            deterministic=True)           # [B, T, V] float32
    hidden = GLM(cfg).apply(..., return_hidden=True)      # [B, T, H] compute dtype
    logits = tied_logits(params["word_embeddings"], hidden)
"""
from glmjax.model.attention import glm_attention
from glmjax.model.glm import GLM, tied_logits
from glmjax.model.mask import glm_mask
from glmjax.model.model_config import (ModelConfig, flops_per_token, param_count, step_flops,
                                       visible_pairs)
from glmjax.model.param_trees import in_compute_dtype, stack_layers, unstack_layers

__all__ = ["GLM", "ModelConfig", "flops_per_token", "glm_attention", "glm_mask",
           "in_compute_dtype", "param_count", "stack_layers", "step_flops", "tied_logits",
           "unstack_layers", "visible_pairs"]
