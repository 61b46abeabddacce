"""GLM-2B: 36 layers, hidden 2048, 32 heads, GPT-2 vocabulary, Token+Sentence+Document objectives.

The GLM repository has no pretraining script for 2B; the objective mix and optimizer follow
GLM-10B stage 1 (THUDM/GLM's config scripts), the closest published recipe.
"""
from glmjax import config as glm_config
from glmjax import recipes


def get_config(arg=None):
  config = recipes.glm_10b_recipe(glm_config.default_config())
  config.model.update(vocab_size=50304, hidden_size=2048, num_layers=36, num_heads=32,
                      max_position=1024, remat="full")
  # GLM trained with attention dropout 0.1; the fused attention kernels (splash, cuDNN,
  # tokamax) have none, so this config leaves it off. 0.1 here makes attention=auto use xla.
  config.model.update(hidden_dropout=0.1, attention_dropout=0.0)
  if "local" in recipes.parse_arg(arg):
    recipes.shrink_to_local(config)
    config.data.update(blank_prob=0.5, sentence_prob=0.3, document_prob=0.2)
  return config
