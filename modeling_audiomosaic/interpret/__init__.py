"""Interpretability tools for AudioMosaic encoders: per-head activations with an on-disk cache, sparse autoencoders,
few-shot head classifiers (SAV, CALM) and head probing / intervention. Needs the `interpret` extra
(scikit-learn, matplotlib); the core package never imports this subpackage."""

from .activations import Activations, HeadOutputCollector, collect_activations, load_or_collect_activations
from .fewshot import (
    CALMClassifier,
    CosineNearestCentroid,
    HeadSoftVoteClassifier,
    SAVClassifier,
    pooled_logistic_regression,
    run_fewshot_benchmark,
    summarize_benchmark,
)
from .heads import HeadIntervention, ablate_heads, evaluate_head_intervention, probe_heads, scale_heads
from .sae import SparseAutoencoder, evaluate_sae, latent_class_report, train_sae


__all__ = [
    "Activations",
    "CALMClassifier",
    "CosineNearestCentroid",
    "HeadIntervention",
    "HeadOutputCollector",
    "HeadSoftVoteClassifier",
    "SAVClassifier",
    "SparseAutoencoder",
    "ablate_heads",
    "collect_activations",
    "evaluate_head_intervention",
    "evaluate_sae",
    "latent_class_report",
    "load_or_collect_activations",
    "pooled_logistic_regression",
    "probe_heads",
    "run_fewshot_benchmark",
    "scale_heads",
    "summarize_benchmark",
    "train_sae",
]
