"""GLM-10B stage 1: 48 layers, hidden 4096, 64 heads, GPT-2 vocabulary (reference GLM.md §3)."""
from glmjax import config as glm_config


def get_config(arg=None):
  config = glm_config.default_config()
  config.model.update(vocab_size=50304, hidden_size=4096, num_layers=48, num_heads=64,
                      max_position=1024, remat="full")
  config.data.update(seq_len=512, batch_size=1024, blank_prob=0.5, sentence_prob=0.3,
                     document_prob=0.2, gen_min_ratio=0.25, tokenizer="hf", tokenizer_vocab="gpt2")
  # Warmup 7k of a 175k decay horizon, cosine to 10% of the peak; 250k steps.
  config.optim.update(learning_rate=1e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                      warmup_ratio=0.04, decay_steps=175_000, schedule="cosine", final_ratio=0.1)
  config.train.steps = 250_000
  config.mesh.update(data=1, fsdp=-1, tensor=1)
  if "local" in glm_config.parse_arg(arg):
    glm_config.shrink_to_local(config)
    config.data.update(blank_prob=0.5, sentence_prob=0.3, document_prob=0.2)
  return config
