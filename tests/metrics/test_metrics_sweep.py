"""Quality-diversity temperature sweep: values, JSON and plot."""
import random

import pytest

from vedgan import metrics


def fake_generator(vocab_base=3):
  """Greedy (t=0) repeats one sentence; higher t samples from more words."""
  calls = []

  def generate(temperature, num_samples, seed):
    calls.append((temperature, num_samples, seed))
    rng = random.Random(seed)
    if temperature == 0.0:
      return [["w0", "w1", "w2", "w3"]] * num_samples
    vocab = [f"w{i}" for i in range(vocab_base + int(20 * temperature))]
    return [[rng.choice(vocab) for _ in range(rng.randint(3, 8))]
            for _ in range(num_samples)]

  return generate, calls


def test_sweep_values_json_and_plot(tmp_path):
  rng = random.Random(0)
  refs = [[f"w{rng.randrange(6)}" for _ in range(rng.randint(3, 8))]
          for _ in range(40)]
  gen, calls = fake_generator()
  temps = (0.0, 0.5, 1.0)
  sweep = metrics.quality_diversity_sweep(gen, temps, refs, num_samples=30,
                                          seed=7, orders=(2, 4), name="A")
  assert [c[0] for c in calls] == list(temps)
  assert all(c[1:] == (30, 7) for c in calls)
  assert sweep["settings"]["reference_hash"] == metrics.corpus_hash(
      refs, ordered=False)
  for t, point in zip(temps, sweep["points"]):
    samples = gen(t, 30, 7)
    assert point["temperature"] == t
    assert point["bleu"]["4"] == metrics.bleu(samples, refs, 4)
    assert point["negative_bleu"]["2"] == -metrics.bleu(samples, refs, 2)
    assert point["self_bleu"]["4"] == metrics.self_bleu(samples, 4)
    assert point["num_samples"] == 30
  # Greedy repeats one sentence: maximal Self-BLEU; diversity grows with t.
  assert sweep["points"][0]["self_bleu"]["4"] == pytest.approx(1.0)
  assert sweep["points"][2]["self_bleu"]["2"] < sweep["points"][1]["self_bleu"]["2"]

  path = metrics.save_sweep(sweep, tmp_path / "out" / "sweep.json")
  assert metrics.load_sweep(path) == sweep
  gen_b, _ = fake_generator(vocab_base=6)
  sweep_b = metrics.quality_diversity_sweep(gen_b, temps, refs, num_samples=30,
                                            seed=7, orders=(2, 4), name="B")
  png = metrics.plot_quality_diversity(
      [sweep, sweep_b], tmp_path / "qd.png", order=4,
      extra_points={"training data": (-0.5, 0.4)})
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError):
    metrics.plot_quality_diversity(sweep, tmp_path / "x.png", order=5)


def test_sweep_checks_sample_count():
  def bad(temperature, num_samples, seed):
    return [["a", "b"]] * (num_samples - 1)

  with pytest.raises(ValueError):
    metrics.quality_diversity_sweep(bad, (1.0,), [["a"]], num_samples=5)
  assert metrics.KOJIMA_TEMPERATURES[0] == 0.0
  assert metrics.KOJIMA_TEMPERATURES[-1] == 1.0
  assert len(metrics.KOJIMA_TEMPERATURES) == 11
