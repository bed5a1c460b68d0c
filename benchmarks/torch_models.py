"""PyTorch reference implementations of two vedgan train steps, for side-by-side timing.

Written for the benchmark harness (:mod:`benchmarks.run`); PyTorch is an optional
dependency (``pip install ".[bench]"``) and nothing in ``vedgan`` imports this file.
Each model does the same arithmetic as the vedgan step it is compared with, at the
same sizes, so the ratio of their tokens/s measures the implementations, not the
models:

* :class:`Seq2SeqStep` -- ``vedgan.papers.seq2seq`` step ``mle``: embeddings
  ``[B, S, E]`` -> bidirectional GRU encoder (``[B, S, 2H]``) -> memory projection
  and Luong "general" keys (``[B, S, H]``); ``h_0 = tanh(W_b [h_fwd; h_bwd])``; a
  GRU decoder over the teacher-forced ``response_in[B, T]`` (no input feeding, so
  one ``nn.GRU`` call: cuDNN on GPU); scores ``[B, T, S]``, context ``[B, T, H]``,
  ``o = tanh(W_c [c; h])``, logits ``[B*T, V]`` as one matmul (tied:
  ``(o P) Emb^T + b``), masked token cross-entropy (sum / token count), global-norm
  clipping and Adam.
* :class:`LatentGANStep` -- ``vedgan.papers.latent_gan`` steps ``gen`` and
  ``disc``: a free-running LSTM generator (``z[B, N_z]`` -> ``(c_0, h_0)``), at each
  of ``T`` steps the word logits ``[B, V]``, the two-temperature Gumbel-softmax of
  Kojima et al. Eq. 2, the blank rule, the straight-through hard one-hot and the
  stop-gradient word fed back; the per-prefix LSTM discriminator over the soft
  one-hots' embeddings ``[B, T, V] x [V, E]`` (+ 8 sinusoidal position features) and
  the reconstructor over the hard ones; losses of Eq. 1 / Eq. 3 and Adam. The
  time loop is eager Python (what a PyTorch user writes); on GPU that is PyTorch
  eager mode, the issue's baseline for the free-running step.

Shapes: ``B`` batch, ``S`` context length, ``T`` response/sentence length, ``E``
embedding size, ``H`` hidden size, ``V`` vocabulary, ``P`` position features.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def sinusoidal_positions(length: int, features: int) -> np.ndarray:
  """``[length, features]`` sin/cos features (same formula as ``vedgan.nn.gan``)."""
  if features <= 0:
    return np.zeros((length, 0), np.float32)
  half = features // 2
  increment = math.log(1.0e4) / max(half - 1, 1)
  inv = np.exp(-increment * np.arange(half, dtype=np.float64))
  angles = np.arange(length, dtype=np.float64)[:, None] * inv[None, :]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


class Seq2Seq(nn.Module):
  """BiGRU encoder, GRU decoder, Luong attention; see the module docstring."""

  def __init__(self, vocab_size: int, embed_dim: int, hidden: int, attention: str = "general",
               tie_embeddings: bool = False, dropout: float = 0.0):
    super().__init__()
    if attention not in ("dot", "general", "scaled_dot"):
      raise ValueError(f"attention={attention!r} must be dot, general or scaled_dot")
    self.attention, self.tie, self.hidden = attention, tie_embeddings, hidden
    self.embed = nn.Embedding(vocab_size, embed_dim)
    self.encoder = nn.GRU(embed_dim, hidden, batch_first=True, bidirectional=True)
    self.memory = nn.Linear(2 * hidden, hidden, bias=False)
    self.key = nn.Linear(hidden, hidden, bias=False) if attention == "general" else None
    self.bridge = nn.Linear(2 * hidden, hidden)
    self.decoder = nn.GRU(embed_dim, hidden, batch_first=True)
    self.combine = nn.Linear(2 * hidden, hidden, bias=False)
    if tie_embeddings:
      self.out_proj = nn.Linear(hidden, embed_dim, bias=False)
      self.out_bias = nn.Parameter(torch.zeros(vocab_size))
    else:
      self.out = nn.Linear(hidden, vocab_size)
    self.drop = nn.Dropout(dropout)

  def forward(self, context: torch.Tensor, response_in: torch.Tensor) -> torch.Tensor:
    """``context[B, S]``, ``response_in[B, T]`` -> ``logits[B*T, V]``."""
    mask = context != 0
    enc, final = self.encoder(self.drop(self.embed(context)))      # [B, S, 2H], [2, B, H]
    values = self.memory(enc)
    keys = self.key(values) if self.key is not None else values
    if self.attention == "scaled_dot":
      keys = keys / math.sqrt(self.hidden)
    h0 = torch.tanh(self.bridge(torch.cat([final[0], final[1]], dim=-1)))[None]
    states, _ = self.decoder(self.drop(self.embed(response_in)), h0)   # [B, T, H]
    scores = torch.bmm(states, keys.transpose(1, 2))                    # [B, T, S]
    scores = scores.masked_fill(~mask[:, None, :], -1e9)
    ctx = torch.bmm(torch.softmax(scores, dim=-1), values)              # [B, T, H]
    o = self.drop(torch.tanh(self.combine(torch.cat([ctx, states], dim=-1))))
    o = o.reshape(-1, o.shape[-1])
    if self.tie:
      return F.linear(self.out_proj(o), self.embed.weight, self.out_bias)
    return self.out(o)


class Seq2SeqStep:
  """One teacher-forced MLE train step (forward, backward, clip, Adam) of :class:`Seq2Seq`."""

  def __init__(self, vocab_size, embed_dim, hidden, attention="general", tie_embeddings=False,
               dropout=0.0, learning_rate=1e-3, grad_clip_norm=5.0, device="cpu",
               autocast_dtype=None, seed=0):
    torch.manual_seed(seed)
    self.device = torch.device(device)
    self.model = Seq2Seq(vocab_size, embed_dim, hidden, attention, tie_embeddings,
                         dropout).to(self.device)
    self.model.train()
    self.opt = torch.optim.Adam(self.model.parameters(), lr=learning_rate, eps=1e-8)
    self.clip = grad_clip_norm
    self.autocast_dtype = autocast_dtype

  def batch(self, batch: dict) -> dict:
    """numpy batch -> device tensors (once, outside the timed region)."""
    return {k: torch.as_tensor(np.asarray(batch[k]), dtype=torch.long, device=self.device)
            for k in ("context", "response_in", "response_out")}

  def __call__(self, batch: dict) -> torch.Tensor:
    """Runs one step; returns the token-mean loss (a device tensor, not synced)."""
    target = batch["response_out"].reshape(-1)
    with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                        enabled=self.autocast_dtype is not None):
      logits = self.model(batch["context"], batch["response_in"])
    nll = F.cross_entropy(logits.float(), target, ignore_index=0, reduction="sum")
    loss = nll / (target != 0).sum().clamp(min=1)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    if self.clip:
      nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
    self.opt.step()
    return loss.detach()


class _Generator(nn.Module):

  def __init__(self, vocab_size, embed_dim, hidden, latent_dim, positions, forbid_ids):
    super().__init__()
    self.embedding = nn.Parameter(torch.randn(vocab_size, embed_dim) * 0.1)
    self.init_c = nn.Linear(latent_dim, hidden)
    self.init_h = nn.Linear(latent_dim, hidden)
    self.cell = nn.LSTMCell(embed_dim + positions, hidden)
    self.out = nn.Linear(hidden, vocab_size)
    bias = torch.zeros(vocab_size)
    bias[list(forbid_ids)] = -1e9
    self.register_buffer("forbid", bias)


class _SeqLSTM(nn.Module):
  """Embedding of (soft) one-hots ``[B, T, V] x [V, E]`` + positions -> LSTM -> linear."""

  def __init__(self, vocab_size, embed_dim, hidden, out_features, dropout=0.0):
    super().__init__()
    self.embedding = nn.Parameter(torch.randn(vocab_size, embed_dim) * 0.1)
    self.lstm = None
    self.hidden = hidden
    self.embed_dim = embed_dim
    self.out = nn.Linear(hidden, out_features)
    self.drop = nn.Dropout(dropout)

  def build(self, positions: int):
    self.lstm = nn.LSTM(self.embed_dim + positions, self.hidden, batch_first=True)
    return self

  def forward(self, onehots: torch.Tensor, pos: torch.Tensor):
    """``onehots[B, T, V]``, ``pos[T, P]`` -> ``(outputs[B, T, H], h_T[B, H])``."""
    e = self.drop(torch.matmul(onehots, self.embedding))
    x = torch.cat([e, pos.expand(e.shape[0], -1, -1)], dim=-1)
    ys, (h, _) = self.lstm(x)
    return ys, h[0]


class LatentGANStep:
  """The latent GAN's generator(+reconstructor) and discriminator train steps."""

  def __init__(self, vocab_size, embed_dim, gen_hidden, disc_hidden, rec_hidden, latent_dim,
               length, position_features=8, gumbel_temperature=0.1, word_temperature=0.1,
               recon_weight=1.0, disc_dropout=0.1, disc_weight_decay=1e-4, learning_rate=2e-4,
               bos_id=2, blank_id=5, forbid_ids=(0, 2, 3, 4), device="cpu", autocast_dtype=None,
               seed=0):
    torch.manual_seed(seed)
    self.device = torch.device(device)
    self.v, self.t, self.nz = vocab_size, length, latent_dim
    self.tau1, self.tau2, self.lam = gumbel_temperature, word_temperature, recon_weight
    self.wd, self.bos, self.blank = disc_weight_decay, bos_id, blank_id
    self.autocast_dtype = autocast_dtype
    p = position_features
    self.pos = torch.as_tensor(sinusoidal_positions(length, p), device=self.device)
    self.gen = _Generator(vocab_size, embed_dim, gen_hidden, latent_dim, p,
                          forbid_ids).to(self.device)
    self.disc = _SeqLSTM(vocab_size, embed_dim, disc_hidden, 1, disc_dropout).build(p)
    self.rec = _SeqLSTM(vocab_size, embed_dim, rec_hidden, latent_dim).build(p)
    self.disc.to(self.device)
    self.rec.to(self.device)
    adam = dict(lr=learning_rate, betas=(0.5, 0.999), eps=1e-8)
    self.g_opt = torch.optim.Adam(list(self.gen.parameters()) + list(self.rec.parameters()),
                                  **adam)
    self.d_opt = torch.optim.Adam(self.disc.parameters(), **adam)
    self.blank_row = F.one_hot(torch.tensor(blank_id), vocab_size).float().to(self.device)

  def batch(self, batch: dict) -> dict:
    """The real sentences ``[B, T]`` (blank-mapped) as a device tensor."""
    return {"real": torch.as_tensor(np.asarray(batch["real"]), dtype=torch.long,
                                    device=self.device)}

  def _autocast(self):
    return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                          enabled=self.autocast_dtype is not None)

  def rollout(self, n: int):
    """Free-running Gumbel-softmax generation: ``(z, soft, hard, tokens)``."""
    g = self.gen
    z = torch.randn(n, self.nz, device=self.device)
    c, h = g.init_c(z), g.init_h(z)
    prev = torch.full((n,), self.bos, dtype=torch.long, device=self.device)
    done = torch.zeros(n, dtype=torch.bool, device=self.device)
    softs, hards, tokens = [], [], []
    for t in range(self.t):
      x = torch.cat([g.embedding[prev], self.pos[t].expand(n, -1)], dim=-1)
      h, c = g.cell(x, (h, c))
      o = g.out(h).float() + g.forbid
      logp = torch.log_softmax(o / self.tau2, dim=-1)                       # Eq. 2
      gumbel = -torch.log(-torch.log(torch.rand_like(logp).clamp(1e-20, 1.0)))
      soft = torch.softmax((logp + gumbel) / self.tau1, dim=-1)
      soft = torch.where(done[:, None], self.blank_row, soft)                # blank rule
      token = soft.argmax(-1)
      hard = F.one_hot(token, self.v).float() + (soft - soft.detach())      # VQ
      done = done | (token == self.blank)
      prev = token
      softs.append(soft)
      hards.append(hard)
      tokens.append(token)
    return z, torch.stack(softs, 1), torch.stack(hards, 1), torch.stack(tokens, 1)

  def _prefix_mask(self, tokens):
    blank = (tokens == self.blank).int()
    return ((torch.cumsum(blank, -1) - blank) == 0).float()

  def gen_step(self, batch: dict) -> torch.Tensor:
    """Generator + reconstructor update (Algorithm 1 lines 17-30, minimax Eq. 3)."""
    n = batch["real"].shape[0]
    for p in self.disc.parameters():
      p.requires_grad_(False)
    with self._autocast():
      z, soft, hard, tokens = self.rollout(n)
      ys, _ = self.disc(soft, self.pos)
      logits = self.disc.out(ys)[..., 0].float()
      mask = self._prefix_mask(tokens)
      adv = -(F.softplus(logits) * mask).sum(-1).mean() / self.t   # log(1 - D) = -softplus
      _, h = self.rec(hard, self.pos)
      recon = ((self.rec.out(h).float() - z) ** 2).mean(-1).mean()
      loss = adv + self.lam * recon
    self.g_opt.zero_grad(set_to_none=True)
    loss.backward()
    self.g_opt.step()
    for p in self.disc.parameters():
      p.requires_grad_(True)
    return loss.detach()

  def disc_step(self, batch: dict) -> torch.Tensor:
    """Discriminator update (Algorithm 1 lines 2-15, Eq. 1 + L2)."""
    real = batch["real"]
    n = real.shape[0]
    with torch.no_grad(), self._autocast():
      _, soft, _, tokens = self.rollout(n)
    with self._autocast():
      x = torch.cat([F.one_hot(real, self.v).float(), soft.float()], 0)
      ys, _ = self.disc(x, self.pos)
      logits = self.disc.out(ys)[..., 0].float()
      real_mask, fake_mask = self._prefix_mask(real), self._prefix_mask(tokens)
      d_real = (F.softplus(-logits[:n]) * real_mask).sum(-1).mean() / self.t
      d_fake = (F.softplus(logits[n:]) * fake_mask).sum(-1).mean() / self.t
      l2 = 0.5 * self.wd * sum((p ** 2).sum() for p in self.disc.parameters())
      loss = d_real + d_fake + l2
    self.d_opt.zero_grad(set_to_none=True)
    loss.backward()
    self.d_opt.step()
    return loss.detach()


def synchronize(device: str) -> None:
  """Waits for queued device work (CUDA); a no-op on CPU."""
  if str(device).startswith("cuda"):
    torch.cuda.synchronize()
