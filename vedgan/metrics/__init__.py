"""vedgan.metrics: evaluation metrics for text generation.

Pure numpy / jax (matplotlib only when a plot is drawn); no Flax model, no
data pipeline.  Inputs that are text are lists of token lists (any hashable
tokens: strings or integer ids).  See ``docs/metrics.md`` for definitions.

Plain functions return numbers; ``*_report`` twins return a
:class:`MetricResult` (value + the settings that decide comparability).
"""
from vedgan.metrics.bleu import (
    bleu,
    bleu_report,
    bleu_scores,
    corpus_bleu,
    corpus_bleu_from_statistics,
    corpus_bleu_report,
    corpus_bleu_statistics,
    self_bleu,
    self_bleu_report,
    self_bleu_scores,
    sentence_bleu,
)
from vedgan.metrics.classifier import (
    classifier_stats,
    finalize_classifier,
    label_rank,
    per_label_accuracy,
    plot_per_label_accuracy,
    topk_accuracy,
)
from vedgan.metrics.collapse import (
    MomentAccumulator,
    active_units,
    finalize_kl_per_dim,
    gaussian_kl_per_dim,
    kl_per_dim_stats,
    mutual_information,
)
from vedgan.metrics.diversity import (
    average_length,
    distinct_n,
    distinct_n_per_sentence,
    diversity_report,
    unique_ngram_ratio,
)
from vedgan.metrics.embedding import (
    WordVectors,
    as_word_vectors,
    embedding_average,
    embedding_extrema,
    embedding_greedy,
    embedding_metrics,
    embedding_report,
    embedding_scores,
    load_word_vectors,
)
from vedgan.metrics.likelihood import (
    accumulate,
    finalize_likelihood,
    likelihood_stats,
    token_nll,
)
from vedgan.metrics.result import IMPLEMENTATION_VERSION, MetricResult, corpus_hash
from vedgan.metrics.sweep import (
    KOJIMA_TEMPERATURES,
    evaluate_samples,
    load_sweep,
    plot_quality_diversity,
    quality_diversity_sweep,
    save_sweep,
)
from vedgan.metrics.topk_check import (
    nearest_word,
    plot_topk_check,
    topk_approximation_check,
    topk_weighted_embedding,
)

__all__ = [
    "IMPLEMENTATION_VERSION", "KOJIMA_TEMPERATURES", "MetricResult",
    "MomentAccumulator", "WordVectors", "accumulate", "active_units",
    "as_word_vectors", "average_length", "bleu", "bleu_report", "bleu_scores",
    "classifier_stats", "corpus_bleu", "corpus_bleu_from_statistics",
    "corpus_bleu_report", "corpus_bleu_statistics", "corpus_hash",
    "distinct_n", "distinct_n_per_sentence", "diversity_report",
    "embedding_average", "embedding_extrema", "embedding_greedy",
    "embedding_metrics", "embedding_report", "embedding_scores",
    "evaluate_samples", "finalize_classifier", "finalize_kl_per_dim",
    "finalize_likelihood", "gaussian_kl_per_dim", "kl_per_dim_stats",
    "label_rank", "likelihood_stats", "load_sweep", "load_word_vectors",
    "mutual_information", "nearest_word", "per_label_accuracy",
    "plot_per_label_accuracy", "plot_quality_diversity", "plot_topk_check",
    "quality_diversity_sweep", "save_sweep", "self_bleu", "self_bleu_report",
    "self_bleu_scores", "sentence_bleu", "token_nll", "topk_accuracy",
    "topk_approximation_check", "topk_weighted_embedding",
    "unique_ngram_ratio",
]
