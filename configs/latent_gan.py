"""Latent-space language GAN (Kojima et al.) and its MLE language-model baseline.

Variants (``--config configs/latent_gan.py:VARIANT``):
  paper          Appendix B on the Texygen COCO captions (50k iterations = 100k steps
                 of the "disc*1,gen*1" cycle, batch 256); needs the COCO builder.
  demo           short sentences of the embedded chatterbot corpus, a smaller model,
                 ~10 minutes on a 2-core CPU.
  mle_paper      the MLE LSTM language model (``lstm_lm``) on COCO.
  mle_demo       the same on the embedded corpus.
  medium         the distinct turns of the installed chitchat corpus of at most 15 words,
                 the paper's networks, at most 20 minutes on a 2-core CPU
                 (docs/reproduction.md); mle_medium: its language model.
  demo_lambda0, demo_lambda0.5, demo_lambda1, demo_lambda2
                 (and paper_lambda0 ... paper_lambda2): Fig. 4's ablation of the
                 reconstruction weight lambda; equivalently
                 ``--config.model.recon_weight=0.5``.

One paper iteration (Algorithm 1: a discriminator step, then a generator +
reconstructor step) is TWO global steps, so ``stages.gan.num_steps`` counts
half-iterations and ``learning_rate`` applies to all three networks.
"""
from vedgan import configlib


def _gan(c):
  c.objective = "latent_gan"
  m = c.model
  m.latent_dim = 8                  # N_z (App. B)
  m.gen_hidden = 128                # generator LSTM (App. B)
  m.disc_hidden = 64                # discriminator LSTM (App. B)
  m.rec_hidden = 128                # reconstructor LSTM (App. B)
  m.embed_dim = 64                  # word embeddings of G, D and R (not stated in the paper)
  m.position_features = 8           # sinusoidal features concatenated to embeddings (App. A)
  m.disc_dropout = 0.1              # dropout on D's word embeddings (App. B)
  m.disc_weight_decay = 1e-4        # L2 penalty (wd/2)||phi||^2 in D's loss (App. A/B)
  m.gumbel_temperature = 0.1        # tau_1 of Eq. 2 in training (App. B)
  m.word_temperature = 0.1          # tau_2 of Eq. 2 in training (App. B)
  m.recon_weight = 1.0              # lambda of Eq. 3 (App. B); Fig. 4 sweeps 0, 0.5, 1, 2
  m.gen_loss = "minimax"            # Eq. 3 / Alg. 1 l. 27: min log(1 - D); or "non_saturating"
  m.adversarial_reduction = "mean"  # G's adversarial term over the T prefixes: "mean" = Alg. 1
                                    # l. 27's (1/T) sum_t; "sum" = Eq. 3's sum_t (T times the
                                    # weight against lambda; docs/latent_gan.md)
  m.mask_after_blank = True         # score prefixes up to the first blank (ScratchGAN); False = all T
  m.forget_bias = 1.0               # LSTM forget-gate bias (not stated in the paper)
  m.unroll = 1
  m.dtype = "float32"
  m.remat = False                   # jax.checkpoint the scan bodies (long sequences)
  c.stages.gan = configlib.stage("disc*1,gen*1", num_steps=100_000, learning_rate=2e-4)
  c.stage_order = ("gan",)


def _lm(c):
  c.objective = "lstm_lm"
  m = c.model
  m.gen_hidden = 128                # the generator's LSTM, without z
  m.embed_dim = 64
  m.position_features = 8
  m.forget_bias = 1.0
  m.unroll = 1
  m.dtype = "float32"
  m.remat = False                   # jax.checkpoint the scan bodies (long sequences)
  c.optimizer.b1 = 0.9
  c.optimizer.grad_clip_norm = 5.0
  c.stages.mle = configlib.stage("mle", num_steps=2_000, learning_rate=1e-3)
  c.stage_order = ("mle",)


def get_config(variant: str = "paper"):
  variant = variant or "paper"
  c = configlib.base_config()
  c.model = configlib.ml_collections.ConfigDict()

  # Single sentences at a fixed length (static shapes). The tokenizer's
  # <blank> ends and pads a sentence: T = max_len positions hold at most
  # max_len - 1 tokens and at least one blank.
  c.data.name = "coco_captions_texygen"   # Texygen COCO: 10k train / 10k test captions
  c.data.max_len = 38                     # T: 37 tokens (COCO's longest caption) + the end blank
  c.data.too_long = "truncate"            # or "skip" sentences over max_len - 1 tokens
  c.data.validation_split = "test"        # split scored in evaluation and used as BLEU references
  # Unused by these objectives (the dialogue pipeline's fields; kept valid).
  c.data.max_context_len = 1
  c.data.max_response_len = 2
  c.data.buckets = (2,)
  c.tokenizer.kind = "word"               # the paper's word vocabulary (COCO is tokenised text)
  c.tokenizer.vocab_size = 6583           # COCO's 6,577 words (Sec. 4.1) + the 6 special ids
  c.tokenizer.lowercase = True

  c.optimizer.b1 = 0.5                    # Adam (App. B)
  c.optimizer.b2 = 0.999
  c.optimizer.grad_clip_norm = 0.0        # the paper clips nothing
  c.optimizer.weight_decay = 0.0          # D's L2 penalty is model.disc_weight_decay

  c.train.batch_size = 256                # App. B
  c.train.eval_batch_size = 256
  c.train.eval_every = 5_000
  c.train.eval_batches = 8
  c.train.checkpoint_every = 5_000
  c.train.log_every = 100
  c.train.num_samples = 8                 # greedy sentences logged per evaluation

  # Quality-diversity sweep: python -m vedgan.evaluate --suite latent_gan_fig3 (fig4, table2);
  # --num_samples / --temperatures override these.
  c.sweep = configlib.ml_collections.ConfigDict()
  c.sweep.num_samples = 10_000            # per temperature (Sec. 4.2)
  c.sweep.temperatures = tuple(round(0.1 * i, 1) for i in range(11))  # tau_2 = 0.0 .. 1.0
  c.sweep.orders = (2, 3, 4, 5)
  c.sweep.plot_order = 5                  # BLEU-5 vs Self-BLEU-5 as Caccia et al. (n not stated)

  base_variant, _, lam = variant.partition("_lambda")
  demo = base_variant in ("demo", "mle_demo")
  if base_variant in ("paper", "demo", "medium"):
    _gan(c)
  elif base_variant in ("mle_paper", "mle_demo", "mle_medium"):
    _lm(c)
  else:
    raise configlib.ConfigError(
        f"unknown variant {variant!r} of configs/latent_gan.py; use paper, demo, medium, "
        "mle_paper, mle_demo, mle_medium, or <paper|demo|medium>_lambda<x>")
  if lam:
    if c.objective != "latent_gan":
      raise configlib.ConfigError(f"variant {variant!r}: lambda applies to the GAN only")
    try:
      c.model.recon_weight = float(lam)
    except ValueError:
      raise configlib.ConfigError(f"variant {variant!r}: lambda {lam!r} is not a number") from None

  if base_variant in ("medium", "mle_medium"):
    _medium(c)
  if demo:
    # The chatterbot corpus: ~1.7k distinct sentences; those of <= 15 words
    # (~1.45k train, ~0.1k validation, 6.4 words on average) are kept whole.
    c.data.name = "chatterbot_corpus"
    c.data.max_len = 16
    c.data.too_long = "skip"
    c.data.validation_split = "validation"
    c.tokenizer.vocab_size = 1500         # ~11% of the words become <unk>
    c.model.embed_dim = 32
    c.model.gen_hidden = 96
    c.train.batch_size = 64
    c.train.eval_batch_size = 64
    c.train.eval_batches = 0
    c.train.eval_every = 500
    c.train.checkpoint_every = 1000
    c.train.log_every = 50
    c.train.num_samples = 4
    c.sweep.num_samples = 200
    c.sweep.plot_order = 3                # demo sentences are short (~7 words)
    if c.objective == "latent_gan":
      c.model.disc_hidden = 64
      c.model.rec_hidden = 96
      # Measured on this corpus (docs/latent_gan.md): with the paper's minimax
      # loss the generator never learns to end a sentence within the demo's
      # budget (all fakes run to T = 16 words while D wins ~98% of prefixes);
      # the non-saturating loss learns lengths within ~1.5k steps.
      c.model.gen_loss = "non_saturating"
      c.stages.gan.num_steps = 3_000      # 1,500 iterations of Algorithm 1
      c.stages.gan.learning_rate = 1e-3
    else:
      c.stages.mle.num_steps = 400         # validation perplexity bottoms out (~34) here
      c.stages.mle.learning_rate = 3e-3
  return c


def _medium(c) -> None:
  """chitchat's distinct turns of at most 15 words (``sources.sentences``; the longer ones
  skipped), a 5k-word vocabulary, the paper's networks (App. B: they are small already),
  batch 128 (the paper: 256); the GAN keeps the demo's non-saturating generator loss (the
  minimax loss did not learn lengths in a demo-sized budget, docs/latent_gan.md); the
  language model keeps its best validation perplexity."""
  c.data.update(name="chitchat", max_len=16, too_long="skip", validation_split="validation")
  c.tokenizer.vocab_size = 5000
  c.train.update(batch_size=128, eval_batch_size=128, eval_batches=8, eval_every=500,
                 checkpoint_every=1000, log_every=50, num_samples=4)
  c.sweep.update(num_samples=1000, plot_order=4)
  if c.objective == "latent_gan":
    c.model.gen_loss = "non_saturating"
    c.stages.gan.update(num_steps=MEDIUM_GAN_STEPS, learning_rate=1e-3)
  else:
    c.stages.mle.update(num_steps=MEDIUM_LM_STEPS, learning_rate=2e-3)
    c.train.update(select_by="perplexity", select_mode="min")


MEDIUM_GAN_STEPS = 2000                  # 1,000 iterations of Algorithm 1 (~0.43 CPU-s per
                                         # step: ~15 minutes on one core; 4,000 took ~30)
MEDIUM_LM_STEPS = 2000
