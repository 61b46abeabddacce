"""GLM-10B: 48 layers, hidden 4096, 64 heads, GPT-2 vocabulary; stage 1 (512 tokens) by
default, `configs/glm_10b.py:stage2` for the second stage at 1024 tokens (GLM's scripts)."""
from glmjax import config as glm_config
from glmjax import recipes


def get_config(arg=None):
  config = recipes.glm_10b_recipe(glm_config.default_config())
  config.model.update(hidden_size=4096, num_layers=48, num_heads=64)
  words = recipes.parse_arg(arg, allowed=("stage2", "local"))
  if "stage2" in words:
    recipes.glm_10b_stage2(config)
  if "local" in words:  # the stage's objectives kept, at a few minutes' size
    recipes.shrink_to_local(config)
  return config
