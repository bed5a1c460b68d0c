"""The synthetic-oracle benchmark of SeqGAN / Texygen (issue 18; docs/oracle.md).

Variants (``--config configs/oracle.py:VARIANT``):
  mle          the MLE LSTM language model (``lstm_lm``) with SeqGAN's generator
               pretraining settings: embedding and hidden 32, batch 64, Adam lr 0.01,
               gradient clipping 5.0 (SeqGAN's ``generator.py``), 120 epochs of the 10,000
               oracle sequences.
  latent_gan   the latent-space GAN (Kojima et al.) at these sizes.
  demo         tiny oracle (V = 40, T = 8), tiny MLE model: seconds on a CPU (tests).
  latent_gan_demo  the GAN on the demo oracle.

The oracle (``data.oracle_*``): V = 5000, E = H = 32, T = 20, N(0, 1) parameters from
``data.oracle_seed`` (Texygen's random oracle) or an .npz at ``data.oracle_params``
(:mod:`vedgan.oracle`). The data (:mod:`vedgan.data.oracle_data`): 10,000 train and 10,000
test sequences sampled once with ``data.oracle_data_seed`` and cached. Token ``k`` is model
id ``k + 6`` (:class:`vedgan.data.tokenizer.IdentityTokenizer`), so ``tokenizer.vocab_size
= V + 6`` and ``data.max_len = T + 1`` (the models' final blank); keep them in step when
overriding ``data.oracle_vocab`` or ``data.oracle_length``.
"""
from vedgan import configlib

V, T = 5000, 20
#: SeqGAN: 10,000 training sequences, batch 64 -> ceil(10000 / 64) = 157 batches an epoch.
STEPS_PER_EPOCH = -(-10_000 // 64)


def _mle(c):
  """SeqGAN's generator pretraining, on the paper configs' ``lstm_lm`` model fields."""
  c.objective = "lstm_lm"
  c.model = configlib.sibling_config(__file__, "latent_gan", "mle_paper").model
  m = c.model
  m.embed_dim = 32                  # SeqGAN EMB_DIM
  m.gen_hidden = 32                 # SeqGAN HIDDEN_DIM
  m.position_features = 0           # SeqGAN's LSTM reads the word embedding only
  m.forget_bias = 0.0               # SeqGAN's generator adds no forget-gate bias
  c.optimizer.b1 = 0.9              # tf.train.AdamOptimizer defaults (SeqGAN generator.py)
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.grad_clip_norm = 5.0  # SeqGAN grad_clip = 5.0 (clip_by_global_norm)
  # SeqGAN PRE_EPOCH_NUM = 120 epochs of generator pretraining at learning_rate = 0.01.
  c.stages.mle = configlib.stage("mle", num_steps=120 * STEPS_PER_EPOCH, learning_rate=0.01)
  c.stage_order = ("mle",)


def _gan(c):
  """Kojima et al.'s GAN: every model field from ``configs/latent_gan.py:paper`` (App. A/B:
  N_z 8, tau_1 = tau_2 = 0.1, lambda 1, minimax, dropout 0.1, weight decay 1e-4, position
  features 8), the networks at the oracle's sizes."""
  c.objective = "latent_gan"
  paper = configlib.sibling_config(__file__, "latent_gan", "paper")
  c.model = paper.model
  m = c.model
  m.embed_dim = 32                  # the oracle's sizes (issue 18)
  m.gen_hidden = 32
  m.disc_hidden = 32
  m.rec_hidden = 32
  c.optimizer = paper.optimizer     # Adam as App. B (b1 0.5), no clipping
  # As many generator updates as the MLE's 120 epochs (one iteration = two global steps).
  c.stages.gan = configlib.stage("disc*1,gen*1", num_steps=2 * 120 * STEPS_PER_EPOCH,
                                 learning_rate=paper.stages.gan.learning_rate)
  c.stage_order = ("gan",)


def get_config(variant: str = "mle"):
  variant = variant or "mle"
  c = configlib.base_config()
  c.model = configlib.ml_collections.ConfigDict()

  d = c.data
  d.name = "oracle"                 # vedgan.data.oracle_data
  d.oracle_vocab = V                # V (SeqGAN vocab_size)
  d.oracle_embed = 32               # E of a random oracle (SeqGAN target LSTM)
  d.oracle_hidden = 32              # H of a random oracle
  d.oracle_length = T               # T (SeqGAN SEQ_LENGTH)
  d.oracle_seed = 0                 # N(0, 1) parameters (Texygen's random oracle)
  d.oracle_params = ""              # or an .npz of the 15 arrays (vedgan.oracle.PARAM_NAMES)
  d.oracle_data_seed = 1            # sampling of the train / test splits
  d.oracle_train_size = 10_000      # SeqGAN generated_num
  d.oracle_test_size = 10_000
  d.oracle_eval_samples = 10_000    # model samples scored by nll_oracle at each evaluation
  d.max_len = T + 1                 # T oracle tokens + the models' final blank
  d.too_long = "skip"
  d.validation_split = "test"
  d.max_context_len = 1             # unused (the dialogue pipeline's fields; kept valid)
  d.max_response_len = 2
  d.buckets = (2,)
  c.tokenizer.kind = "identity"     # token k <-> model id k + 6 (IdentityTokenizer)
  c.tokenizer.vocab_size = V + 6

  c.train.batch_size = 64           # SeqGAN BATCH_SIZE
  c.train.eval_batch_size = 64
  c.train.eval_every = 5 * STEPS_PER_EPOCH   # SeqGAN scores NLL-oracle every 5 epochs
  c.train.eval_batches = 16         # the objective's own validation statistics; nll_test
                                    # reads the whole test split
  c.train.checkpoint_every = 5 * STEPS_PER_EPOCH
  c.train.log_every = 157
  c.train.num_samples = 2           # greedy sequences logged per evaluation

  base = variant[:-len("_demo")] if variant.endswith("_demo") else variant
  demo = variant == "demo" or variant.endswith("_demo")
  if base in ("mle", "demo"):
    _mle(c)
  elif base == "latent_gan":
    _gan(c)
  else:
    raise configlib.ConfigError(f"unknown variant {variant!r} of configs/oracle.py; use mle, "
                                "latent_gan, demo or latent_gan_demo")
  if demo:
    v, t = 40, 8
    d.oracle_vocab, d.oracle_embed, d.oracle_hidden, d.oracle_length = v, 8, 8, t
    d.oracle_train_size, d.oracle_test_size, d.oracle_eval_samples = 512, 256, 256
    d.max_len = t + 1
    c.tokenizer.vocab_size = v + 6
    c.model.embed_dim, c.model.gen_hidden = 16, 32
    c.train.batch_size = c.train.eval_batch_size = 32
    c.train.eval_every, c.train.checkpoint_every, c.train.log_every = 30, 60, 10
    c.train.eval_batches = 2
    c.train.progress = False
    if c.objective == "lstm_lm":
      c.stages.mle.num_steps = 60
    else:
      c.model.disc_hidden = c.model.rec_hidden = 16
      c.stages.gan.num_steps = 60
  return c
