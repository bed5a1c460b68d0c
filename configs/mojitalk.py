"""MojiTalk (Zhou & Wang, ACL 2018): emoji-conditioned CVAE, emoji classifier, Reinforced CVAE.

Stages (one config, each resumable; see vedgan/papers/mojitalk/algorithm.py):
  base        seq2seq + scaled Luong attention, conditioned on the emoji    (paper Sec. 4)
  cvae        CVAE with the bag-of-words loss, L' of supplement Eq. 2, initialised
              from the converged base model, KL annealed to 0.5 by the end of epoch 6
  classifier  DeepMoji emoji classifier, response -> emoji                (supplement 0.2)
  rl          Reinforced CVAE, L'' = L' - lambda J' (Algorithm 1, Eq. 3), policy term
              from epoch 2 on                                              (supplement 0.3-0.4)

Variants (``--config configs/mojitalk.py:VARIANT``):
  demo           embedded chatterbot corpus with stand-in lexicon labels, all four stages
  demo_base      demo data, base seq2seq (+ the classifier that scores its generations)
  demo_cvae      demo data, base -> CVAE (+ classifier)
  paper          the full setting (REFERENCE_NOTES, supplement 0.4) on the MojiTalk Twitter
                 data (TFDS builder ``mojitalk_twitter``), all four stages
  paper_base     the paper's "Base" column: base seq2seq + classifier
  paper_cvae     the paper's "CVAE" column: base -> CVAE + classifier
  paper_tanh_kl  ``paper`` with the authors' tanh KL schedule (ceiling 0.48) instead of
                 the linear annealing to 0.5 the paper describes
  medium         the installed chitchat corpus (118k training pairs) with the lexicon
                 stand-in labels, the paper's network sizes, all four stages in at most
                 20 minutes on a 2-core CPU (measured: 14.5 on one shared core, 11.9 on
                 two; docs/reproduction.md)
  medium_base, medium_cvae   its Base and CVAE columns

The demo's labels are NOT emoji: the chatterbot corpus has none, so each response gets
one of 8 classes from the mean VADER-lexicon valence of its words (data.labels =
"lexicon"; vedgan/papers/mojitalk/data.py, LEXICON_LABEL_NAMES). docs/mojitalk.md.
"""
import ml_collections

from vedgan import configlib

VARIANTS = ("demo", "demo_base", "demo_cvae", "paper", "paper_base", "paper_cvae",
            "paper_tanh_kl", "medium", "medium_base", "medium_cvae")

# The MojiTalk paper's training split (~597k (tweet, reply) pairs) at batch 128. Only
# the stage lengths below use it; epoch-denominated schedule fields (KL annealing,
# policy start) are converted with the real iterator's epoch length at build time.
PAPER_STEPS_PER_EPOCH = 596_959 // 128


def _stages(c, steps_per_epoch: int, base_epochs: float, cvae_epochs: float,
            classifier_epochs: float, rl_epochs: float, lr: float):
  e = lambda n: int(round(n * steps_per_epoch))
  c.stages.base = configlib.stage("base", num_steps=e(base_epochs), learning_rate=lr)
  c.stages.cvae = configlib.stage(
      "cvae", num_steps=e(cvae_epochs), learning_rate=lr,
      kl_schedule="linear",       # paper: "KL annealing to 0.5 at the end of the 6th epoch"
      kl_ceiling=0.5,             # the authors' tanh schedule: 0.48 (REFERENCE_NOTES)
      kl_anneal_epochs=6.0,       # the ramp ends here (epochs of the training iterator)
      kl_tanh_ratio=0.75,         # tanh schedule: ramp over 75% of its total (6 of 8 epochs)
      bow_weight=1.0,             # BoW loss weight 1 (REFERENCE_NOTES)
      reset_optimizer=True)       # a new Adam over the converged seq2seq weights
  c.stages.classifier = configlib.stage("classifier", num_steps=e(classifier_epochs),
                                        learning_rate=lr)   # Adam 1e-3 (supplement 0.2)
  c.stages.rl = configlib.stage(
      "rl", num_steps=e(rl_epochs), learning_rate=lr,
      kl_schedule="constant", kl_ceiling=0.5,   # the CVAE's final KL weight
      kl_anneal_epochs=0.0, kl_tanh_ratio=0.75,
      bow_weight=1.0,
      policy_weight=1.0,          # lambda of L'' = L' - lambda J' (supplement 0.4)
      policy_start_epochs=2.0,    # "we introduce the policy loss only after 2 epochs"
      rank_weights=(0.0, 0.5, 1.0),   # alpha of Eq. 3 for ranks 1 / 2-5 / >5
      rl_decode="greedy",         # G: greedy tokens from a prior sample of z (authors' code)
      rl_latent="prior",          # z of G: prior p(z|c) (test-time generation) | posterior
      rl_max_len=0,               # 0 = the batch's response length
      reset_optimizer=True)


def get_config(variant: str = "demo"):
  variant = variant or "demo"
  if variant not in VARIANTS:
    raise configlib.ConfigError(f"unknown variant {variant!r} of configs/mojitalk.py; use one of "
                                f"{', '.join(VARIANTS)}")
  c = configlib.base_config()
  c.objective = "mojitalk"

  # -- data ------------------------------------------------------------------------
  c.data.name = "mojitalk_twitter"    # TFDS builder of the MojiTalk Twitter data (data issue)
  c.data.labels = "field"             # field: the record's emoji id | lexicon: demo stand-in
  c.data.label_field = "label"        # the emoji's id (the first token of each .ori line)
  c.data.num_labels = 64              # 64 emoji classes (supplement 0.2)
  c.data.label_names = ()             # display names for plots/samples (default: ids)
  c.data.lexicon_edges = (-1.5, -0.5, 0.75, 1.25, 1.75, 2.25)  # demo: valence bucket edges
  c.data.context_turns = 1            # the original tweet
  c.data.max_context_len = 50
  c.data.max_response_len = 50        # greedy decoding "up to 50 tokens" (REFERENCE_NOTES)
  c.data.buckets = (16, 32, 50)

  c.tokenizer.vocab_size = 20_000     # the paper does not state it; a 20k subword vocabulary

  # -- networks ----------------------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.embed_dim = 128             # word embeddings 128 (supplement 0.4)
  c.model.hidden = 128                # RNN units 128, encoders and decoder
  c.model.encoder_layers = 1          # bidirectional GRU encoder
  c.model.attention = "scaled_dot"    # scaled Luong attention (REFERENCE_NOTES)
  c.model.tie_embeddings = False
  c.model.dropout = 0.2               # input dropout 0.2
  c.model.dtype = "float32"
  c.model.unroll = 1
  c.model.remat = False               # jax.checkpoint the scan bodies (long sequences)
  c.model.emoji_dim = 12              # emoji embedding -> tanh dense -> 12 dims
  c.model.latent_dim = 268            # latent size 268
  c.model.recognition_hidden = (268, 268)  # q(z|x,c): 3-layer tanh MLP
  c.model.prior_hidden = (166, 206)   # p(z|c): int(0.62 L), int(0.77 L) (REFERENCE_NOTES)
  c.model.latent_tanh = True          # mean / log-variance through tanh (authors' code)
  c.model.classifier = ml_collections.ConfigDict()   # DeepMoji (supplement 0.2)
  c.model.classifier.embed_dim = 128
  c.model.classifier.hidden = 128
  c.model.classifier.num_layers = 2   # two BiGRU layers, attention over [emb; l1; l2]
  c.model.classifier.dropout = 0.2
  c.model.classifier.embed_scale = 4e-3   # embeddings ~ U[-4e-3, 4e-3]

  c.optimizer.grad_clip_norm = 5.0    # gradient clipping 5 (supplement 0.2)

  c.train.batch_size = 128            # REFERENCE_NOTES full setting
  c.train.eval_batch_size = 128
  c.train.eval_every = 5000
  c.train.checkpoint_every = 10_000
  c.train.max_checkpoints = 24        # keep the stage-end checkpoints for the comparison
  c.train.log_every = 100

  c.decode.mode = "greedy"            # greedy decoding of each candidate
  c.decode.latent_samples = 5         # "sample the result of CVAE models 5 times" (0.4)

  # the comparison's importance-weighted bound on -log p(x|c,e) (Burda et al. 2016)
  c.likelihood = ml_collections.ConfigDict()
  c.likelihood.iw_samples = 100       # K posterior draws per response
  c.likelihood.iw_chunk = 5           # draws per decoder pass (logits: chunk x batch rows)

  _stages(c, PAPER_STEPS_PER_EPOCH, base_epochs=10, cvae_epochs=8, classifier_epochs=5,
          rl_epochs=6, lr=1e-3)
  c.stage_order = ("base", "cvae", "classifier", "rl")

  if variant.startswith("medium"):
    _medium(c)
  if variant.startswith("demo"):
    # The embedded chatterbot corpus (~1.1k training pairs, ~33 batches per epoch) with
    # stand-in labels from the VADER lexicon (see the module docstring).
    c.data.name = "chatterbot_corpus"
    c.data.labels = "lexicon"
    c.data.num_labels = 8
    c.data.label_names = ("neutral", "very negative", "negative", "mixed", "mildly positive",
                          "positive", "very positive", "extremely positive")
    c.data.max_context_len = 24
    c.data.max_response_len = 20
    c.data.buckets = (24,)            # one padded shape: one compilation per step function
    c.tokenizer.vocab_size = 500
    c.model.embed_dim = 64
    c.model.hidden = 64
    c.model.dropout = 0.2
    c.model.latent_dim = 32
    c.model.recognition_hidden = (32, 32)
    c.model.prior_hidden = (19, 24)   # int(0.62 L), int(0.77 L)
    c.model.classifier.embed_dim = 48
    c.model.classifier.hidden = 48
    c.train.update(batch_size=32, eval_batch_size=50, eval_every=100, checkpoint_every=100,
                   max_checkpoints=30)
    c.train.log_every = 25
    demo_steps_per_epoch = 33         # 1,080 training pairs // batch 32
    _stages(c, demo_steps_per_epoch, base_epochs=12, cvae_epochs=12, classifier_epochs=9,
            rl_epochs=9, lr=2e-3)
    c.stages.cvae.kl_anneal_epochs = 6.0
    c.stages.classifier.learning_rate = 3e-3

  if variant in ("demo_base", "paper_base", "medium_base"):
    c.stage_order = ("base", "classifier")
  elif variant in ("demo_cvae", "paper_cvae", "medium_cvae"):
    c.stage_order = ("base", "cvae", "classifier")
  elif variant == "paper_tanh_kl":
    c.stages.cvae.kl_schedule = "tanh"
    c.stages.cvae.kl_ceiling = 0.48
    c.stages.rl.kl_ceiling = 0.48
  return c


#: chitchat's training split (118,217 pairs) at the medium batch of 64.
MEDIUM_STEPS_PER_EPOCH = 118_217 // 64


def _medium(c) -> None:
  """chitchat, stand-in labels, the paper's networks (128-unit GRUs, 268-d latent), batch
  64 and a 8k subword vocabulary; each stage a fraction of an epoch (the paper: 10, 8, 5
  and 6 epochs; here 0.3, 0.25, 0.1 and 0.1: 1,383 steps, ~1,200 at ~0.5 s and the RL
  stage's ~185 at ~1.6 s per step on one core of this machine, to fit 20 minutes; the
  first medium recipe, 2,123 steps, took 44 minutes, docs/reproduction.md), with the KL
  ramp and the policy start scaled to the shorter stages. Stage ends are kept (``max_checkpoints``) for the Base / CVAE / Reinforced CVAE
  comparison. ``label_names`` () takes the stand-in classes' names from
  ``data.LEXICON_LABEL_NAMES``; one bucket: one compilation per step function."""
  c.data.update(name="chitchat", labels="lexicon", num_labels=8, label_names=(),
                max_context_len=32, max_response_len=24, buckets=(32,))
  c.tokenizer.vocab_size = 8000
  c.train.update(batch_size=64, eval_batch_size=128, eval_every=250, eval_batches=8,
                 checkpoint_every=250, max_checkpoints=30, log_every=50, num_samples=2)
  base, cvae, classifier, rl = MEDIUM_EPOCHS
  _stages(c, MEDIUM_STEPS_PER_EPOCH, base_epochs=base, cvae_epochs=cvae,
          classifier_epochs=classifier, rl_epochs=rl, lr=1e-3)
  c.stages.cvae.kl_anneal_epochs = 0.75 * cvae   # the paper: 6 of 8 epochs
  c.stages.rl.policy_start_epochs = rl / 3       # the paper: 2 of 6 epochs


#: Epochs of the medium stages base, cvae, classifier, rl.
MEDIUM_EPOCHS = (0.3, 0.25, 0.1, 0.1)
