"""GLM-Base (110M): 12 layers, hidden 768, 12 heads, BERT vocabulary (THUDM/GLM's config
scripts)."""
from glmjax import config as glm_config
from glmjax import recipes


def get_config(arg=None):
  config = glm_config.default_config()
  config.model.update(vocab_size=30592, hidden_size=768, num_layers=12, num_heads=12,
                      max_position=512)
  # GLM trained with attention dropout 0.1; the fused attention kernels (splash, cuDNN,
  # tokamax) have none, so this config leaves it off. 0.1 here makes attention=auto use xla.
  config.model.update(hidden_dropout=0.1, attention_dropout=0.0)
  config.data.update(seq_len=512, batch_size=1024, blank_prob=1.0, sentence_prob=0.0,
                     document_prob=0.0, tokenizer="hf", tokenizer_vocab="bert")
  config.optim.update(learning_rate=4e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.1,
                      warmup_ratio=0.05, decay_steps=120_000, schedule="cosine", final_ratio=0.05)
  config.train.steps = 150_000
  if "local" in recipes.parse_arg(arg):
    recipes.shrink_to_local(config)
  return config
