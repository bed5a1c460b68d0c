"""The ``medium`` variants of every paper config (docs/reproduction.md): the installed
chitchat corpus, one padded shape, a valid plan, and model selection where a run trains
one model. Their sizes (at most 20 minutes on a 2-core CPU) are measured in the docs, not
here: no medium run belongs in the test suite."""
import pytest

from conftest import make_config
from vedgan import train

#: (config file, variant, validation metric that keeps checkpoints/best or "" for the
#: multi-stage recipes, whose stage-end checkpoints are compared instead).
MEDIUM = [
    ("configs/collaborative_ved.py", "hred,medium", "elbo_nll_per_token"),
    ("configs/collaborative_ved.py", "kla,medium", "elbo_nll_per_token"),
    ("configs/collaborative_ved.py", "kla_bow,medium", "elbo_nll_per_token"),
    ("configs/collaborative_ved.py", "co,medium", "elbo_nll_per_token"),
    ("configs/collaborative_ved.py", "co_ss,medium", "elbo_nll_per_token"),
    ("configs/mojitalk.py", "medium", ""),
    ("configs/mojitalk.py", "medium_base", ""),
    ("configs/mojitalk.py", "medium_cvae", ""),
    ("configs/happybot.py", "medium", ""),
    ("configs/happybot.py", "medium_current", ""),
    ("configs/happybot.py", "medium_mle", ""),
    ("configs/latent_gan.py", "medium", ""),
    ("configs/latent_gan.py", "medium_lambda0", ""),
    ("configs/latent_gan.py", "mle_medium", "perplexity"),
    ("configs/topk_gan.py", "medium", ""),
    ("configs/topk_gan.py", "mle_medium", ""),
]


@pytest.mark.parametrize("path, variant, select_by", MEDIUM)
def test_medium_variant_is_a_valid_chitchat_run(path, variant, select_by, tmp_path):
  config = make_config(path, variant)
  assert config.data.name == "chitchat"
  if config.objective == "happybot":
    assert tuple(config.data.dialogue_sources) == ("chitchat",)
  if "buckets" in config.data and config.objective not in ("latent_gan", "lstm_lm"):
    assert len(config.data.buckets) == 1      # one padded shape: one compile per step
  assert config.train.select_by == select_by
  plan = train.dry_run(config, str(tmp_path / "run"))
  assert plan.startswith(f"objective {config.objective}: ")
  demo = make_config(path, variant.replace("medium", "demo"))
  paper = make_config(path, variant.replace("medium", "paper").replace(",paper", ""))
  # Between the demo and the paper in training examples seen (steps x batch).
  assert (_examples(demo, tmp_path / "demo") < _examples(config, tmp_path / "run")
          < _examples(paper, tmp_path / "paper"))


def _examples(config, workdir) -> int:
  steps = int(train.dry_run(config, str(workdir)).split(":")[1].split()[0])
  return steps * int(config.train.batch_size)


def test_a_misspelt_setting_is_a_clear_error():
  with pytest.raises(Exception, match="medium"):
    make_config("configs/collaborative_ved.py", "kla,meduim")
