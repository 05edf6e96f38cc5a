"""Mean average precision (mAP) and mean ROC AUC (mAUC) over classes, AudioSet convention, as a local `evaluate`
module."""

import warnings

import datasets
import evaluate
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


_DESCRIPTION = """
Multi-label retrieval metrics as the AudioSet literature (and the AudioMosaic authors' `calculate_stats`) report
them: per class, sklearn's `average_precision_score` and `roc_auc_score` of the scores against the binary targets,
then the unweighted mean over classes.

Classes without any positive reference (or, for the AUC, without any negative) have no defined AP/AUC: sklearn
returns AP = 0 with a warning (which would silently drag the mean down) and AUC = nan. They are left out of the means
and counted in `num_classes_skipped`. Soft targets (e.g. from mixup) are binarised at `threshold`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]`): scores of shape (examples, classes), e.g. sigmoid probabilities or logits
        (both metrics only use the ranking within a class).
    references (`list[list[float]]`): multi-hot targets of the same shape.
    threshold (`float`, defaults to 0.5): targets above it count as positive.
Returns:
    mAP (`float`): mean average precision over classes with at least one positive.
    mAUC (`float`): mean ROC AUC over classes with at least one positive and one negative (nan if none).
    num_classes_evaluated (`int`): classes that entered the mAP.
    num_classes_skipped (`int`): classes without positives.
Example:
    >>> metric = evaluate.load("training/metrics/mean_average_precision")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[[1, 0], [0, 1]])
    {'mAP': 1.0, 'mAUC': 1.0, 'num_classes_evaluated': 2, 'num_classes_skipped': 0}
"""

_CITATION = """
@inproceedings{gemmeke2017audioset, title={Audio Set: An ontology and human-labeled dataset for audio events},
  author={Gemmeke, Jort F. and others}, booktitle={ICASSP}, year={2017}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanAveragePrecision(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, predictions, references, threshold=0.5):
        scores = np.asarray(predictions, dtype=np.float64)
        targets = np.asarray(references, dtype=np.float64) > threshold
        if scores.ndim != 2 or scores.shape != targets.shape:
            raise ValueError(
                f"mean_average_precision: predictions {scores.shape} and references {targets.shape} must both be "
                "(examples, classes)."
            )
        positives = targets.sum(axis=0)
        with_positives = np.flatnonzero(positives > 0)
        with_both = np.flatnonzero((positives > 0) & (positives < targets.shape[0]))
        if with_positives.size == 0:
            raise ValueError("mean_average_precision: no class has a positive reference; mAP is undefined.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ap = [average_precision_score(targets[:, c], scores[:, c]) for c in with_positives]
            auc = [roc_auc_score(targets[:, c], scores[:, c]) for c in with_both]
        return {
            "mAP": float(np.mean(ap)),
            "mAUC": float(np.mean(auc)) if auc else float("nan"),
            "num_classes_evaluated": int(with_positives.size),
            "num_classes_skipped": int(targets.shape[1] - with_positives.size),
        }
