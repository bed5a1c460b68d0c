"""How to decode: :class:`DecodeOptions` (from ``config.decode`` or the sampling CLIs) and the
special ids every decoder takes (:func:`special_ids`). Re-exported by :mod:`vedgan.decode`."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """How :meth:`vedgan.objective.Objective.generate` decodes (``config.decode`` holds the run's defaults).

  Attributes:
    mode: ``greedy`` | ``sample`` | ``beam``.
    max_len: generated tokens incl. EOS (0 = the objective's response length).
    temperature, top_k, top_p: sampling (``top_k = 0``: the whole vocabulary; ``top_p = 1``:
      no nucleus).
    beam_width, length_penalty: beam search (GNMT length penalty ``alpha``).
    repetition_penalty, no_repeat_ngram, min_len: every mode (1, 0, 0 = off;
      :mod:`vedgan.decode_constraints`; ``min_len``: no EOS before that many tokens).
    forbid_unk: never emit ``<unk>``.
    num_samples: unconditional objectives: how many sentences.
  """
  mode: str = "greedy"
  max_len: int = 0
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  beam_width: int = 4
  length_penalty: float = 0.0
  forbid_unk: bool = True
  num_samples: int = 0
  repetition_penalty: float = 1.0
  no_repeat_ngram: int = 0
  min_len: int = 0

  @classmethod
  def from_config(cls, decode_config, **overrides) -> "DecodeOptions":
    d = decode_config
    get = d.get   # runs saved before a field existed lack it
    fields = dict(mode=d.mode, temperature=float(d.temperature), top_k=int(d.top_k),
                  top_p=float(get("top_p", 1.0)), beam_width=int(d.beam_width),
                  length_penalty=float(d.length_penalty), forbid_unk=bool(d.forbid_unk),
                  repetition_penalty=float(get("repetition_penalty", 1.0)),
                  no_repeat_ngram=int(get("no_repeat_ngram", 0)),
                  min_len=int(get("min_len", 0)))
    fields.update(overrides)
    return cls(**fields)

  def split_temperature(self) -> tuple["DecodeOptions", jax.Array]:
    """``(options with temperature 1, temperature)``: jit the first as a static argument
    and pass the second traced, so a temperature sweep compiles once per mode (put it
    back inside the jitted function with :meth:`with_temperature`)."""
    return dataclasses.replace(self, temperature=1.0), jnp.float32(self.temperature)

  def with_temperature(self, temperature) -> "DecodeOptions":
    """These options at ``temperature`` (a traced scalar inside a jitted function)."""
    return dataclasses.replace(self, temperature=temperature)


def special_ids(tokenizer, forbid_unk: bool = True) -> dict:
  """``bos_id``, ``eos_id``, ``pad_id`` and ``forbid_ids`` (pad, bos and, if asked, unk)
  of ``tokenizer``: the id keywords of :func:`run`."""
  t = tokenizer
  forbid = (t.pad_id, t.bos_id) + ((t.unk_id,) if forbid_unk else ())
  return dict(bos_id=t.bos_id, eos_id=t.eos_id, pad_id=t.pad_id, forbid_ids=forbid)
