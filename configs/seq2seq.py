"""Seq2seq with Luong attention trained by MLE: the baseline every paper starts from.

Variants (``--config configs/seq2seq.py:VARIANT``):
  default  full-size settings (hidden/embedding 512, vocabulary 3k, 50k steps);
  demo     the embedded chatterbot corpus, a small model, a few minutes on a 2-core CPU.
"""
from vedgan import configlib


def get_config(variant: str = "default"):
  c = configlib.base_config()
  c.objective = "seq2seq"

  c.model = configlib.ml_collections.ConfigDict()
  c.model.embed_dim = 512
  c.model.hidden = 512
  c.model.encoder_layers = 1
  c.model.attention = "general"       # Luong score: dot | general | scaled_dot
  c.model.tie_embeddings = False
  c.model.dropout = 0.2
  c.model.dtype = "float32"           # compute dtype: float32 | bfloat16
  c.model.unroll = 1                  # lax.scan unroll factor of the recurrent layers
  c.model.remat = False               # jax.checkpoint the scan bodies (long sequences)
  c.model.loss_chunk = 0              # >0: chunked output-layer CE, no [B, T, V] logits (big V)

  c.tokenizer.vocab_size = 3000      # the embedded corpus supports at most ~3.1k unigram pieces
  c.train.batch_size = 128
  c.stages.mle = configlib.stage("mle", num_steps=50_000, learning_rate=1e-3)
  c.stage_order = ("mle",)

  variant = variant or "default"
  if variant == "demo":
    # ~1k training pairs: a small vocabulary and model with strong dropout
    # generalise best (validation perplexity ~500 -> ~45 in 500 steps).
    c.tokenizer.vocab_size = 500
    c.model.embed_dim = 64
    c.model.hidden = 96
    c.model.dropout = 0.3
    c.model.tie_embeddings = True
    c.train.update(batch_size=32, eval_batch_size=64, eval_every=100, checkpoint_every=250,
                   log_every=25)
    c.stages.mle.num_steps = 500
    c.stages.mle.learning_rate = 2e-3
  elif variant != "default":
    raise configlib.ConfigError(f"unknown variant {variant!r} of configs/seq2seq.py; "
                                "use 'demo' or 'default'")
  return c
