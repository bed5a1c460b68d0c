"""Collaborative VED (Shen et al., AAAI 2018): every row of Table 1 as a variant.

``--config configs/collaborative_ved.py:ROW`` trains row ROW with the paper's
settings on DailyDialog; ``ROW,demo`` (or ``demo,ROW``) on the embedded
chatterbot corpus with a small model (minutes on a 2-core CPU); ``demo`` alone
is ``co_ss,demo``; ``ROW,medium`` on the installed ``chitchat`` corpus (118k
training pairs) with a mid-sized model sized for about 20 minutes on a 2-core CPU
(measured 11-34 minutes on one shared core, 9.7-19.6 on two cores: ``co_ss`` the fastest,
``fb`` the slowest), the best validation checkpoint kept
(docs/reproduction.md). Rows:

  hred         HRED (no latent variable)
  kla          VHRED + KL annealing (weight 0 -> 1 over 12k steps)
  kla_do       KLA + 25% word drop-out (training only)
  kla_bow      KLA + bag-of-words loss
  fb           KLA + free bits, 0.01 nats per latent dimension
  fb_all       KLA + free bits, 5 nats for the whole latent
  co           collaborative VED, AE/CVAE phases alternating epoch-wise, alpha = 5
  co_do        CO + 25% word drop-out
  co_ss        CO + scheduled sampling, k = 2500 (Eq. 7)   [default]
  co_ss_joint  CO+SS with both phases trained together (ablation)

Paper settings (Experiments + the authors' code, REFERENCE_NOTES.md): word
vocabulary 20k with <unk>, embeddings 300, utterance/context/decoder GRUs
512/1024/512, latent 512, 2-layer feed-forward estimators, batch 128, Adam
lr 2e-4, gradient value clipping 5, beam 5 with <unk> blocked, 80-word slices.
"""
from vedgan import configlib

ROWS = ("hred", "kla", "kla_do", "kla_bow", "fb", "fb_all", "co", "co_do", "co_ss",
        "co_ss_joint")

# DailyDialog train: 11,118 dialogues -> ~76k (context, response) examples; at batch
# 128 one epoch is ~595 batches. bind_inputs() logs the exact value for the run's data
# if it differs; override with --config.ved.steps_per_epoch=N.
DAILYDIALOG_STEPS_PER_EPOCH = 595
# The embedded chatterbot corpus: 1,080 training examples / batch 32.
DEMO_STEPS_PER_EPOCH = 33
# chitchat train: 118,217 (context, response) examples / batch 64.
MEDIUM_STEPS_PER_EPOCH = 1847
SETTINGS = ("demo", "medium")


def get_config(variant: str = "co_ss"):
  parts = [p.strip() for p in (variant or "co_ss").replace("+", ",").split(",") if p.strip()]
  settings = [p for p in parts if p in SETTINGS]
  rows = [p for p in parts if p not in SETTINGS]
  if len(rows) > 1 or len(settings) > 1 or any(r not in ROWS for r in rows):
    raise configlib.ConfigError(f"unknown variant {variant!r} of configs/collaborative_ved.py; "
                                f"use one of {', '.join(ROWS)}, optionally with ',demo' or "
                                "',medium'")
  row = rows[0] if rows else "co_ss"
  demo, medium = settings == ["demo"], settings == ["medium"]

  c = configlib.base_config()
  c.objective = "collaborative_ved"
  c.row = row                          # which Table 1 row this config is (informational)

  # Data: DailyDialog multi-turn; context = previous turns, response = the last turn.
  c.data.name = "daily_dialog"
  c.data.max_turns = 10                # DailyDialog averages ~8 turns per dialogue
  c.data.max_turn_len = 40             # tokens per context turn (~15 on average)
  c.data.max_context_len = 40          # = max_turn_len (checked against buckets)
  c.data.max_response_len = 40
  c.data.slice_words = 80              # "Dialogs are cut into set of slices with each slice
                                       # containing 80 words" (context + response words)
  c.data.buckets = (10, 20, 40)        # padded turn / response lengths
  c.data.turn_buckets = (2, 4, 10)     # padded numbers of context turns

  c.tokenizer.kind = "word"            # "the vocabulary size was set as 20,000 ... <unk>"
  c.tokenizer.vocab_size = 20_000
  c.tokenizer.lowercase = True         # "the letters are all transformed to the lower-case"

  c.model = configlib.ml_collections.ConfigDict()
  c.model.latent = "co"                # none (HRED) | vhred | co
  c.model.embed_dim = 300              # word2vec size
  c.model.utterance_hidden = 512       # first-layer encoder GRU
  c.model.context_hidden = 1024        # second-layer (context) encoder GRU
  c.model.decoder_hidden = 512         # decoder GRU
  c.model.latent_dim = 512             # "The dimension of latent variables is set to 512"
  c.model.estimator_hidden = 512       # 2-layer feed-forward prior/posterior estimators
  c.model.unroll = 1
  c.model.remat = False                # jax.checkpoint the scan bodies (long sequences)
  c.model.dtype = "float32"            # compute dtype: float32 | bfloat16

  c.ved = configlib.ml_collections.ConfigDict()
  c.ved.kl_anneal_steps = 12_000       # KLA: weight 0 -> 1 over the first 12k steps (DailyDialog)
  c.ved.word_dropout = 0.0             # DO: 0.25, training only
  c.ved.bow_weight = 0.0               # BOW: 1.0
  c.ved.free_bits = 0.0                # FB: 0.01 per dimension; FB-all: 5.0 in total
  c.ved.free_bits_mode = "per_dim"     # per_dim (FB) | total (FB-all)
  c.ved.alpha = 5.0                    # CO: max(alpha, KL) in the AE phase (Eq. 9)
  c.ved.ss_k = 0.0                     # SS: k = 2500 (DailyDialog) / 5000 (Switchboard); 0 = off
  c.ved.steps_per_epoch = DAILYDIALOG_STEPS_PER_EPOCH  # AE/CVAE phase length (epoch-wise)

  # Table 1's importance-weighted bound on -log p(x|c) (Burda et al. 2016; report suites only)
  c.likelihood = configlib.ml_collections.ConfigDict()
  c.likelihood.iw_samples = 100        # K posterior draws per response
  c.likelihood.iw_chunk = 5            # draws per decoder pass (logits: chunk x batch rows)

  c.optimizer.grad_clip_norm = 0.0
  c.optimizer.grad_clip_value = 5.0    # authors' code: gradient value clipping at 5

  c.train.batch_size = 128
  c.train.eval_batch_size = 128
  c.train.eval_every = 2000
  c.train.checkpoint_every = 2000
  c.train.log_every = 100

  c.decode.mode = "beam"               # test protocol: beam search, width 5, <unk> blocked
  c.decode.beam_width = 5
  c.decode.forbid_unk = True

  num_steps = 60_000
  lr = 2e-4                            # "we fix the learning rate as 0.0002 for all models"

  if demo:
    c.data.name = "chatterbot_corpus"
    c.data.max_turns = 4
    c.data.max_turn_len = 20
    c.data.max_context_len = 20
    c.data.max_response_len = 20
    c.data.buckets = (20,)             # one shape: a single compilation per step function
    c.data.turn_buckets = (4,)
    c.tokenizer.vocab_size = 1000
    c.model.embed_dim = 64
    c.model.utterance_hidden = 64
    c.model.context_hidden = 96
    c.model.decoder_hidden = 96
    c.model.latent_dim = 32
    c.model.estimator_hidden = 64
    c.ved.kl_anneal_steps = 200        # reaches weight 1 at 1/3 of the demo budget
    c.ved.steps_per_epoch = DEMO_STEPS_PER_EPOCH
    c.train.update(batch_size=32, eval_batch_size=50, eval_every=200, checkpoint_every=600,
                   log_every=33, num_samples=2)
    num_steps = 594                    # 18 epochs = 9 AE/CVAE alternations
    lr = 2e-3

  if medium:
    num_steps, lr = _medium(c)

  latent = {"hred": "none", "co": "co", "co_do": "co", "co_ss": "co", "co_ss_joint": "co"}
  c.model.latent = latent.get(row, "vhred")
  if row == "hred":
    c.ved.kl_anneal_steps = 0
  if row in ("kla_do", "co_do"):
    c.ved.word_dropout = 0.25
  if row == "kla_bow":
    c.ved.bow_weight = 1.0
  if row == "fb":
    c.ved.free_bits, c.ved.free_bits_mode = 0.01, "per_dim"
  if row == "fb_all":
    c.ved.free_bits, c.ved.free_bits_mode = 5.0, "total"
  if row in ("co_ss", "co_ss_joint"):
    # 2500 is ~4 DailyDialog epochs; demo: ~3 AE epochs; medium: ~2/3 of its AE steps
    c.ved.ss_k = {"demo": 100.0, "medium": MEDIUM_SS_K}.get("".join(settings), 2500.0)

  if c.model.latent == "co" and row != "co_ss_joint":
    # Epoch-wise alternation "ae*N,cvae*N", N = ved.steps_per_epoch (a reference: an
    # override --config.ved.steps_per_epoch=N changes the cycle too).
    n = c.ved.get_ref("steps_per_epoch").to_str()
    c.stages.co = configlib.stage("ae*1,cvae*1", num_steps=num_steps, learning_rate=lr)
    c.stages.co.step = "ae*" + n + ",cvae*" + n
    c.stage_order = ("co",)
  else:
    c.stages.train = configlib.stage("joint", num_steps=num_steps, learning_rate=lr)
    c.stage_order = ("train",)
  return c



#: Scheduled-sampling k of the medium CO+SS row (Eq. 7): the teacher-forcing probability
#: k / (k + exp(i / k)) falls to 1/2 after ~k ln k steps (~1,060 of its 1,200 AE steps).
MEDIUM_SS_K = 200.0


def _medium(c) -> tuple[int, float]:
  """chitchat at a size meant to train in about 20 minutes on a 2-core CPU (measured times
  in docs/reproduction.md; several rows took longer on one shared core): 5 context turns of at
  most 20 words, an 8k-word vocabulary, GRUs of 128/256/256 and a 64-d latent (a quarter
  to an eighth of the paper's), batch 64, 2,400 steps (1.3 epochs; ~2 steps/s on one core
  of this machine); KL annealing over the first fifth of training as in the paper (12k of
  60k), AE/CVAE phases of 300 steps (a sixth of an epoch: the paper alternates every
  epoch, ~50 times in a run; here 4 alternations), and the checkpoint with the best
  validation ELBO per token kept. Returns (steps, learning rate)."""
  # buckets: one padded shape, so one compilation per step function
  c.data.update(name="chitchat", max_turns=5, max_turn_len=20, max_context_len=20,
                max_response_len=20, buckets=(20,), turn_buckets=(5,))
  c.tokenizer.vocab_size = 8000
  c.model.update(embed_dim=128, utterance_hidden=128, context_hidden=256, decoder_hidden=256,
                 latent_dim=64, estimator_hidden=128)
  num_steps = MEDIUM_NUM_STEPS
  c.ved.kl_anneal_steps = num_steps // 5
  c.ved.steps_per_epoch = MEDIUM_PHASE_STEPS
  c.train.update(batch_size=64, eval_batch_size=128, eval_every=300, eval_batches=10,
                 checkpoint_every=300, log_every=50, num_samples=2,
                 select_by="elbo_nll_per_token", select_mode="min")
  return num_steps, 1e-3


MEDIUM_NUM_STEPS = 2400
MEDIUM_PHASE_STEPS = 300
