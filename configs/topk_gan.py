"""Top-k softmax dialogue GAN (López Zorrilla et al.) and its MLE baseline.

Variants (``--config configs/topk_gan.py:VARIANT``):
  paper       Section 4: OpenSubtitles consecutive-utterance pairs, the paper's
              networks, 50k MLE pretraining steps, 125k replayed responses,
              1k discriminator pretraining steps, 200 global iterations of
              35 adversarial / 40 discriminator / 50 MLE steps with 5,000
              responses added before each discriminator block.
  demo        the embedded chatterbot corpus, small networks, a few minutes on
              a 2-core CPU (see docs/topk_gan.md).
  mle_demo    the MLE baseline of ``demo``: the same generator trained only by
              MLE, for as many MLE steps as the GAN run makes (pretraining + the
              MLE blocks of the global iterations).
  mle_paper   the same for ``paper``.
  medium      consecutive-turn pairs of the installed chitchat corpus, networks between
              the demo's and the paper's, at most 20 minutes on a 2-core CPU
              (docs/reproduction.md); mle_medium: its MLE baseline.

Algorithm 1 is data: ``stage_order = (mle_pretrain, fill, d_pretrain,
adversarial)`` with the step functions ``gmle``, ``refill``, ``dstep`` and
``gadv`` of :mod:`vedgan.papers.topk_gan.algorithm`. One global iteration is one
pass of ``stages.adversarial.step``; ``lr_decay_every`` is its length, so the
learning rate decays by ``lr_decay`` once per global iteration, and a stage's
``<step>_lr_scale`` multiplies the rate of that step function (declared in every
stage that runs it).
"""
from vedgan import configlib


def _cycle(gadv: int, refill: int, dstep: int, gmle: int) -> tuple[str, int]:
  """Algorithm 1's loop body as a cycle string and its length in steps."""
  step = (f"gadv*{gadv},refill*{refill},dstep*{dstep},gmle*{gmle},refill*{refill},"
          f"dstep*{dstep}")
  return step, gadv + gmle + 2 * (refill + dstep)


def _paper(c):
  m = c.model
  m.word_dim = 300                  # 300-d fastText vectors (Sec. 4)
  m.word_vectors = ""               # fastText/word2vec file for W (Sec. 4); "" = random
  m.encoder_layers = 4              # deep BiLSTM encoder: 4 layers per direction (Sec. 4)
  m.encoder_hidden = 512            # 512 cells per layer and direction (Sec. 4)
  m.decoder_layers = 4              # deep LSTM decoder: 4 layers (Sec. 4)
  m.decoder_hidden = 1028           # 1028 cells (Sec. 4, as printed)
  m.attention_hidden = 250          # attention score MLP: tanh 250 -> linear 1 (Sec. 4)
  m.output_hidden = 500             # õ_t: one leaky-ReLU layer of 500 on [o_t; c_t] (Sec. 4)
  m.disc_layers = 2                 # discriminator BiLSTMs: 2 layers (Sec. 4)
  m.disc_hidden = 128               # 128 cells per layer and direction (Sec. 4)
  m.disc_mlp_hidden = 100           # leaky-ReLU layer of 100, then one sigmoid unit (Sec. 4)
  m.leaky_relu_slope = 0.01         # not stated in the paper
  m.dropout = 0.0                   # not stated in the paper (none)
  m.word_table_trained_by = "generator"  # who trains the shared W: "generator" | "discriminator"
                                    # | "both"; W is the seq2seq model's word matrix (Sec. 2,
                                    # Fig. 1) and Table 1's B -> C needs D steps to leave G
                                    # unchanged (docs/topk_gan.md)
  m.dtype = "float32"
  m.unroll = 1
  m.remat = False                   # jax.checkpoint the scan bodies (long sequences)

  g = c.gan
  g.topk = 2                        # k of the top-k softmax (Sec. 4)
  g.replay_capacity = 262_144       # rows of C_D: the 125k pretraining responses + ~13 iterations
  g.replay_half_life = 170          # generator updates: 2 global iterations of 35 + 50 (ours)
  g.report_inputs = 1_000           # Sec. 5 feeds 1000 random inputs; here the first 1000 distinct
                                    # validation inputs
  g.nn_check_ks = tuple(range(2, 11))  # Fig. 3
  g.table_inputs = ("hi!", "I love you.", "who is she?", "what's the color of the sky?",
                    "see you")      # Table 1
  g.table_iteration = 100           # global iteration whose MLE / adversarial blocks give B / C

  c.data.name = "opensubtitles/en"  # all of OpenSubtitles2018 (Sec. 4); or .../en_10m
  c.data.context_turns = 1          # the input is the previous utterance only (Sec. 1, 4)
  c.data.max_context_len = 32       # not stated in the paper
  c.data.max_response_len = 24      # not stated in the paper (tokens incl. EOS)
  c.data.buckets = (8, 16, 32)
  c.tokenizer.kind = "word"         # a word vocabulary ...
  c.tokenizer.vocab_size = 30_000   # ... of the 30,000 most frequent words (Sec. 4)

  c.optimizer.b1 = 0.9              # Adam (Sec. 4), default moments
  c.optimizer.b2 = 0.999
  c.optimizer.grad_clip_norm = 0.0  # the paper mentions no clipping

  c.train.batch_size = 256          # "batch size of 256 throughout all the optimization processes"
  c.train.eval_batch_size = 256
  c.train.eval_every = 5_000
  c.train.eval_batches = 20
  c.train.checkpoint_every = 5_000
  c.train.max_checkpoints = 10      # keeps model A (end of D pretraining) for the Section 5
                                    # suites (vedgan.papers.topk_gan.report)

  step, length = _cycle(gadv=35, refill=20, dstep=40, gmle=50)  # 20 x 256 = 5,120 ~ 5,000 responses
  c.stages.mle_pretrain = configlib.stage("gmle", num_steps=50_000, learning_rate=1e-3,
                                         gmle_lr_scale=1.0)
  c.stages.fill = configlib.stage("refill", num_steps=489, learning_rate=0.0)  # 489 x 256 ~ 125k
  c.stages.d_pretrain = configlib.stage("dstep", num_steps=1_000, learning_rate=1e-3,
                                        dstep_lr_scale=1.0)
  adv = configlib.stage(step, num_steps=200 * length,  # 200 global iterations (Sec. 4)
                        learning_rate=1e-3, gmle_lr_scale=1.0, dstep_lr_scale=1.0,
                        gadv_lr_scale=0.1)  # G vs D: "ten times smaller"
  adv.lr_decay = 0.995              # decaying factor of 0.995 ...
  adv.lr_decay_every = length       # ... per global iteration
  c.stages.adversarial = adv
  c.stage_order = ("mle_pretrain", "fill", "d_pretrain", "adversarial")


def _demo(c):
  m = c.model
  m.word_dim = 64
  m.encoder_layers = 2
  m.encoder_hidden = 64
  m.decoder_layers = 2
  m.decoder_hidden = 128
  m.attention_hidden = 64
  m.output_hidden = 128
  m.disc_layers = 2
  m.disc_hidden = 32
  m.disc_mlp_hidden = 32
  m.dropout = 0.1

  g = c.gan
  g.replay_capacity = 2_048
  g.replay_half_life = 26           # 2 global iterations of 5 + 8 generator updates
  g.report_inputs = 256
  g.table_iteration = 5

  c.data.name = "chatterbot_corpus"
  c.data.max_context_len = 20
  c.data.max_response_len = 20
  c.data.buckets = (20,)            # one padded shape: each step function compiles once
  c.tokenizer.vocab_size = 1_000
  c.optimizer.grad_clip_norm = 5.0

  c.train.batch_size = 32
  c.train.eval_batch_size = 64
  c.train.eval_every = 200
  c.train.eval_batches = 0
  c.train.checkpoint_every = 500
  c.train.log_every = 25

  step, length = _cycle(gadv=5, refill=1, dstep=6, gmle=8)
  c.stages.mle_pretrain.num_steps = 600
  c.stages.mle_pretrain.learning_rate = 2e-3
  c.stages.fill.num_steps = 16      # 16 x 32 = 512 responses
  c.stages.d_pretrain.num_steps = 40
  c.stages.adversarial.step = step
  c.stages.adversarial.num_steps = 10 * length  # 10 global iterations
  c.stages.adversarial.learning_rate = 2e-3
  c.stages.adversarial.lr_decay_every = length


def _medium(c):
  """chitchat pairs (the previous turn as the input), an 8k-word vocabulary, 2-layer
  encoder/decoder LSTMs of 128/256 (the paper: 4 layers of 512/1028), batch 64; Algorithm
  1's stages with the demo's cycle, the pretraining a fraction of an epoch, so that the
  run fits 20 minutes on a 2-core CPU."""
  _demo(c)
  c.model.update(word_dim=128, encoder_hidden=128, decoder_hidden=256, attention_hidden=128,
                 output_hidden=256, disc_hidden=64, disc_mlp_hidden=64)
  c.gan.update(replay_capacity=8_192, report_inputs=1_000)
  c.data.update(name="chitchat", max_context_len=24, max_response_len=24, buckets=(24,))
  c.tokenizer.vocab_size = 8_000
  c.train.update(batch_size=64, eval_batch_size=128, eval_every=500, eval_batches=8,
                 checkpoint_every=500, log_every=50)
  pretrain, iterations = MEDIUM_SCHEDULE
  c.stages.mle_pretrain.update(num_steps=pretrain, learning_rate=1e-3)
  c.stages.fill.num_steps = 64       # 64 x 64 = 4,096 responses
  c.stages.d_pretrain.num_steps = 100
  adv = c.stages.adversarial
  adv.update(num_steps=iterations * adv.lr_decay_every, learning_rate=1e-3)


#: Medium MLE pretraining steps and global iterations of Algorithm 1.
MEDIUM_SCHEDULE = (700, 12)          # 1,188 steps: 10.6 minutes on one shared core, 9.9 on
                                     # two ((1,200, 20) took ~26 CPU-minutes)


def _mle_only(c):
  """Only MLE, for as many generator MLE steps as the GAN recipe makes."""
  adv = c.stages.adversarial
  per_iteration = sum(n for name, n in configlib.parse_cycle(adv.step) if name == "gmle")
  period = sum(n for _, n in configlib.parse_cycle(adv.step))
  iterations = int(adv.num_steps) // period
  pretrain = int(c.stages.mle_pretrain.num_steps)
  c.stages.mle_pretrain.num_steps = pretrain + iterations * per_iteration
  c.stage_order = ("mle_pretrain",)


def get_config(variant: str = "paper"):
  variant = variant or "paper"
  c = configlib.base_config()
  c.objective = "topk_gan"
  c.model = configlib.ml_collections.ConfigDict()
  c.gan = configlib.ml_collections.ConfigDict()
  _paper(c)
  if variant in ("demo", "mle_demo"):
    _demo(c)
  elif variant in ("medium", "mle_medium"):
    _medium(c)
  elif variant not in ("paper", "mle_paper"):
    raise configlib.ConfigError(f"unknown variant {variant!r} of configs/topk_gan.py; use "
                                "'paper', 'demo', 'medium', 'mle_paper', 'mle_demo' or "
                                "'mle_medium'")
  if variant.startswith("mle_"):
    _mle_only(c)
  return c
