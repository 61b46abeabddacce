"""glmjax: GLM (autoregressive blank infilling) pretraining in JAX/Flax."""
