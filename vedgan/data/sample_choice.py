"""Which validation examples a run decodes and logs at each evaluation (``samples.jsonl``).

The first ``n`` examples of a split are often alike (one topic file of a corpus, one
emoji, one conversation's turns), so the logged samples would show one kind of context
``n`` times. :func:`spread_indices` picks ``n`` examples spread evenly over the split,
with distinct contexts and, for labelled data, the labels taken in turn.

>>> spread_indices(["a", "b", "c", "d", "e", "f", "g", "h"], 4)
[1, 3, 5, 7]
>>> spread_indices(["a", "a", "a", "a", "b", "c"], 3)
[1, 4, 5]
>>> spread_indices(["a", "b", "c", "d", "e", "f"], 3, labels=[0, 0, 0, 0, 1, 2])
[1, 4, 5]
"""
from __future__ import annotations

from typing import Sequence


def _key(text: str) -> str:
  return " ".join(str(text).lower().split())


def spread_indices(contexts: Sequence[str], n: int,
                   labels: Sequence[int] | None = None) -> list[int]:
  """Up to ``n`` indices into ``contexts``, spread over the whole list.

  Order of preference: the evenly spaced positions ``floor((k + 1/2) * N / n)``,
  ``k = 0..n-1``, then every other position in order; a context equal to one already
  chosen (case and spacing ignored) is passed over. With ``labels`` (one per context),
  the labels take turns (smallest label first) in that order of preference, so ``n``
  samples cover ``min(n, #labels)`` labels. Fewer than ``n`` indices come back only
  when there are fewer distinct contexts.

  Args:
    contexts: the split's contexts, ``[N]`` strings.
    n: how many to pick (``<= 0``: none).
    labels: optional ``[N]`` integer labels.
  Returns:
    the chosen indices: ascending, or with ``labels`` in the labels' turns.
  """
  total = len(contexts)
  if n <= 0 or total == 0:
    return []
  first = sorted({min(int((k + 0.5) * total / n), total - 1) for k in range(n)})
  taken = set(first)
  rest = [i for i in range(total) if i not in taken]
  seen, order = set(), []
  for i in first + rest:
    key = _key(contexts[i])
    if key not in seen:
      seen.add(key)
      order.append(i)
  if labels is None:
    return sorted(order[:n])
  queues: dict[int, list[int]] = {}
  for i in order:
    queues.setdefault(int(labels[i]), []).append(i)
  chosen, turn = [], sorted(queues)
  position = {label: 0 for label in turn}
  while len(chosen) < n and turn:
    for label in list(turn):
      if len(chosen) == n:
        break
      if position[label] < len(queues[label]):
        chosen.append(queues[label][position[label]])
        position[label] += 1
      else:
        turn.remove(label)
  return chosen
