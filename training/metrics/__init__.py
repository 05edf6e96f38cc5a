"""Evaluation metrics shipped with the package as local `evaluate` modules, so they load offline.

`evaluate` 0.4 ships no metric scripts and `evaluate.load("accuracy")` needs the Hub; these modules are loaded by
path instead:

    >>> from audiomosaic_training.metrics import load_metric
    >>> load_metric("mean_average_precision").compute(predictions=scores, references=multi_hot)
    {'mAP': ..., 'mAUC': ..., 'num_classes_evaluated': ...}

Modules: `accuracy` (top-1, from class indices), `mean_average_precision` (mAP and mAUC over the classes that have
positives, the AudioSet convention) and `eer` (equal error rate and ROC AUC of a binary detector, as the authors'
EnvSDD evaluation).
"""

import functools
from pathlib import Path

import evaluate


METRICS_DIR = Path(__file__).resolve().parent
AVAILABLE_METRICS = tuple(sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file()))


def metric_path(name: str) -> Path:
    """Folder of the shipped `evaluate` module `name` (what `evaluate.load` takes)."""
    if name not in AVAILABLE_METRICS:
        raise ValueError(f"Unknown metric {name!r}; the package ships {list(AVAILABLE_METRICS)}.")
    return METRICS_DIR / name


@functools.lru_cache(maxsize=None)
def _load(name: str) -> evaluate.EvaluationModule:
    return evaluate.load(str(metric_path(name)))


def load_metric(name: str) -> evaluate.EvaluationModule:
    """`evaluate.load(<path of the shipped module folder>)`: works without network access. Modules are loaded once
    per process and reused (they hold no state between `compute` calls)."""
    return _load(name)


__all__ = ["AVAILABLE_METRICS", "load_metric", "metric_path"]
