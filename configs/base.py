"""GLM-Base (110M): 12 layers, hidden 768, 12 heads, BERT vocabulary (THUDM/GLM's config
scripts)."""
from glmjax import config as glm_config
from glmjax import recipes


def get_config(arg=None):
  config = recipes.bert_vocabulary_recipe(glm_config.default_config())
  config.model.update(hidden_size=768, num_layers=12, num_heads=12)
  # Warmup 6k of a 120k decay horizon, cosine to 5% of the peak; 150k steps.
  config.optim.update(learning_rate=4e-4, decay_steps=120_000, final_ratio=0.05)
  config.train.steps = 150_000
  if "local" in recipes.parse_arg(arg):
    recipes.shrink_to_local(config)
  return config
