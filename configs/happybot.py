"""HappyBot (Shin et al. 2019): look-ahead sentiment rewards, REINFORCE with a learned baseline.

Stages (one config, each resumable; see vedgan/papers/happybot/algorithm.py):
  classifier  sentiment classifier on labelled sentences             (Sec. 3.1)
  predictor   look-ahead predictor [u_i; s_i] -> sentiment of u_{i+1}, labelled on the
              fly by the frozen classifier (the paper's "labelling" pass)  (Sec. 2.2, 3.1)
  mle         Seq2Seq pre-training, L_MLE                              (Eq. 6)
  rl          L_mixed = lambda L_RL + (1 - lambda) L_MLE with the baseline (Eq. 7-10)

Variants (``--config configs/happybot.py:VARIANT``), SETTING[_MODEL]:
  SETTING demo    embedded chatterbot corpus, VADER-lexicon labels, small networks,
                  a few minutes on a 2-core CPU (default)
          paper   paper sizes and data: DailyDialog + PersonaChat + EmpatheticDialogues,
                  SST-2 + ED situations for the classifier (needs those data builders)
          medium  the installed chitchat corpus (VADER-lexicon labels), 128-unit networks;
                  medium_mle, then the RL variants from a copy of its workdir: about 20
                  minutes each on one core, 13.6-17.6 on two (docs/reproduction.md)
  MODEL   (none)  RL Look-ahead: reward = the look-ahead predictor
          current RL Current: reward = the classifier on the response itself
          mle     Seq2Seq: MLE only
          multiseq MultiSeq: MLE + a context-sentiment head ("multiseq" = "demo_multiseq")
The Table 2 rows share everything up to the end of MLE pre-training: a *_mle
workdir, copied, continues into the RL stage under demo/demo_current (or paper/...).
"""
import ml_collections

from vedgan import configlib

MODELS = ("", "current", "mle", "multiseq")   # "" = RL Look-ahead
SETTINGS = ("demo", "paper", "medium")
VARIANTS = tuple(f"{setting}_{m}" if m else setting for setting in SETTINGS
                 for m in MODELS) + ("multiseq",)


def get_config(variant: str = "demo"):
  c = configlib.base_config()
  c.objective = "happybot"

  # -- data ------------------------------------------------------------------
  c.data.name = "chatterbot_corpus"       # informational; the sources below are read
  c.data.dialogue_sources = ("chatterbot_corpus",)  # TFDS builders with dialogue records
  # Sentence sources of the classifier: "lexicon" = the utterances of the dialogue training
  # split labelled by the VADER lexicon (demo); otherwise TFDS builders of labelled sentences.
  c.data.sentiment_sources = ("lexicon",)
  c.data.lexicon_threshold = 0.0          # positive iff mean matched valence > this
  c.data.context_turns = 2                # input [s_i; u_{i+1}] (Sec. 2)
  c.data.max_context_len = 32
  c.data.max_response_len = 20            # tokens incl. EOS
  c.data.max_turn_len = 16                # u_{i+1} / u_{i+2} / classifier sentences
  c.data.buckets = (16, 32)

  c.tokenizer.vocab_size = 500

  # -- networks ----------------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.embed_dim = 64                  # paper: 300 (FastText), A.2
  c.model.hidden = 64                     # paper: 300, = embed_dim so the tie is exact, A.2
  c.model.encoder_layers = 1              # Bi-GRU encoder (Sec. 2.1)
  c.model.attention = "dot"               # Luong dot score, Eq. 1
  c.model.tie_embeddings = True           # embeddings tied with the output layer, A.2
  c.model.dropout = 0.3                   # paper code: 0.5
  c.model.dtype = "float32"
  c.model.unroll = 1
  c.model.remat = False               # jax.checkpoint the scan bodies (long sequences)
  c.model.loss_chunk = 0              # >0: chunked MLE output-layer CE, no [B, T, V] logits
  c.model.classifier = ml_collections.ConfigDict()   # reward encoders (nn/classifier.py)
  c.model.classifier.embed_dim = 48       # paper: BERT-base
  c.model.classifier.hidden = 48
  c.model.classifier.layers = 1
  c.model.classifier.dropout = 0.2

  c.optimizer.grad_clip_norm = 5.0        # the authors' max_grad_norm, applied here

  c.train.batch_size = 32                 # paper code: 32
  c.train.eval_batch_size = 64
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  c.train.log_every = 25

  # -- the recipe ----------------------------------------------------------------
  c.stages.classifier = configlib.stage("classifier", num_steps=150, learning_rate=3e-3)
  c.stages.predictor = configlib.stage("predictor", num_steps=150, learning_rate=3e-3)
  c.stages.mle = configlib.stage("mle", num_steps=500, learning_rate=2e-3)
  c.stages.multiseq = configlib.stage("multiseq", num_steps=500, learning_rate=2e-3,
                                      emotion_weight=1.0)   # MultiSeq: added to Eq. 6
  c.stages.rl = configlib.stage(
      "rl", num_steps=250, learning_rate=1e-3,
      mixed_weight=0.25,                  # lambda of Eq. 10 (RL weight), A.2
      temperature=0.4,                    # tau of Eq. 5 for sampling and log P(w_t), A.2
      reward="lookahead",                 # lookahead | current | lexicon | module:factory
      baseline="learned",                 # learned (Eq. 7-8) | none
      baseline_learning_rate=1e-2,        # Adam lr of W_r, b_r (Eq. 8)
      rollout_dropout=False)              # dropout in the scoring pass (off: exact on-policy)
  c.stage_order = ("classifier", "predictor", "mle", "rl")

  variant = {"multiseq": "demo_multiseq"}.get(variant or "demo", variant or "demo")
  setting, _, model = variant.partition("_")
  if setting not in SETTINGS or model not in MODELS:
    raise configlib.ConfigError(f"unknown variant {variant!r} of configs/happybot.py; "
                                f"use one of {', '.join(VARIANTS)}")
  if setting == "paper":
    _paper(c)
  elif setting == "medium":
    _medium(c)
  if model == "current":              # RL Current: reward = classifier on the response itself
    c.stages.rl.reward = "current"
  elif model == "mle":                # Seq2Seq: Eq. 6 only
    c.stage_order = ("classifier", "predictor", "mle")
  elif model == "multiseq":           # MultiSeq: Eq. 6 + context-sentiment head
    c.stage_order = ("classifier", "predictor", "multiseq")
  return c


def _paper(c) -> None:
  """The paper's sizes and data (Sec. 3.1, A.2)."""
  c.data.name = "daily_dialog+persona_chat+empathetic_dialogues"
  c.data.dialogue_sources = ("daily_dialog", "persona_chat", "empathetic_dialogues")
  c.data.sentiment_sources = ("sst2", "empathetic_dialogues")   # ED: situations
  c.data.max_context_len = 64
  c.data.max_response_len = 32
  c.data.max_turn_len = 31
  c.data.buckets = (16, 32, 64)
  c.tokenizer.vocab_size = 20_000
  c.model.embed_dim = 300
  c.model.hidden = 300
  c.model.dropout = 0.5
  c.model.classifier.embed_dim = 300
  c.model.classifier.hidden = 300
  c.model.classifier.dropout = 0.3
  c.train.update(batch_size=32, eval_every=2000, checkpoint_every=2000, log_every=100)
  c.stages.classifier.num_steps = 20_000
  c.stages.classifier.learning_rate = 1e-3
  c.stages.predictor.num_steps = 20_000
  c.stages.predictor.learning_rate = 1e-3
  c.stages.mle.num_steps = 60_000
  c.stages.mle.learning_rate = 1e-3       # A.2: lr in [1e-3, 1e-4]
  c.stages.multiseq.num_steps = 60_000
  c.stages.multiseq.learning_rate = 1e-3
  c.stages.rl.num_steps = 20_000
  c.stages.rl.learning_rate = 1e-4
  c.stages.rl.baseline_learning_rate = 1e-3


def _medium(c) -> None:
  """chitchat's dialogues, VADER-lexicon labels for the classifier (as the demo), 128-unit
  networks (the paper: 300), a 8k subword vocabulary, batch 64, one bucket (one compilation
  per step function); stages of 300 / 300 / 1,500 / 500 steps (the paper: 20k / 20k / 60k
  / 20k). Run as two commands of about 20 minutes each on one core of a 2-core CPU:
  ``medium_mle`` (the first three stages, 17.5 min) and ``medium`` / ``medium_current``
  from a copy of its workdir (the RL stage, 19.8 / 21.6 min); on both cores 13.6, 17.6 and
  15.0 min (docs/reproduction.md)."""
  c.data.update(name="chitchat", dialogue_sources=("chitchat",), max_context_len=48,
                max_response_len=24, max_turn_len=23, buckets=(48,))
  c.tokenizer.vocab_size = 8000
  c.model.update(embed_dim=128, hidden=128)
  c.model.classifier.update(embed_dim=96, hidden=96)
  c.train.update(batch_size=64, eval_batch_size=128, eval_every=250, eval_batches=8,
                 checkpoint_every=250, log_every=50)
  classifier, predictor, mle, rl = MEDIUM_STEPS
  for name, steps, lr in (("classifier", classifier, 1e-3), ("predictor", predictor, 1e-3),
                          ("mle", mle, 1e-3), ("multiseq", mle, 1e-3), ("rl", rl, 2e-4)):
    c.stages[name].update(num_steps=steps, learning_rate=lr)


#: Steps of the medium stages classifier, predictor, mle (or multiseq), rl.
MEDIUM_STEPS = (300, 300, 1500, 500)
