"""GLM-2B: 36 layers, hidden 2048, 32 heads, GPT-2 vocabulary, Token+Sentence+Document objectives.

THUDM/GLM's config/ds_block_2B.sh is GLM-10B stage 1's recipe (the same data options, optimizer
and schedule) with --bert-prob 0.4: [MASK] 0.4, [sMASK] 0.3 and [gMASK] the remaining 0.3.
"""
from glmjax import config as glm_config
from glmjax import recipes


def get_config(arg=None):
  config = recipes.glm_10b_recipe(glm_config.default_config())
  config.model.update(hidden_size=2048, num_layers=36, num_heads=32)
  config.data.update(blank_prob=0.4, sentence_prob=0.3, document_prob=0.3)
  if "local" in recipes.parse_arg(arg):
    recipes.shrink_to_local(config)
  return config
