"""Equal error rate (EER) and ROC AUC of a binary detector as a local `evaluate` module (deepfake / spoof
detection, the AudioMosaic authors' EnvSDD evaluation)."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


_DESCRIPTION = """
Equal error rate of a detector score, computed as the AudioMosaic authors do (`engine_finetune.py`): sklearn's
`roc_curve(references, scores, pos_label)`, then the false-positive rate at the threshold where |FNR - FPR| is
smallest (no interpolation between thresholds). Also returns the ROC AUC and the threshold used. Lower EER is better.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[float]`): detector scores, higher = more likely `pos_label` (e.g. the softmax probability of
        class 1 of a 2-way classifier).
    references (`list[int]`): binary labels.
    pos_label (`int`, defaults to 1): the label the score detects.
Returns:
    eer (`float`): equal error rate in [0, 1].
    auc (`float`): ROC AUC.
    threshold (`float`): score threshold at the EER operating point.
Example:
    >>> metric = evaluate.load("training/metrics/eer")
    >>> metric.compute(predictions=[0.1, 0.4, 0.35, 0.8], references=[0, 0, 1, 1])
    {'eer': 0.5, 'auc': 0.75, 'threshold': 0.4}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class EqualErrorRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, pos_label=1):
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references)
        positives = labels == pos_label
        if positives.all() or not positives.any():
            raise ValueError(
                f"eer: the references need both classes (got {int(positives.sum())} of {labels.size} equal to "
                f"pos_label={pos_label}); the equal error rate is undefined otherwise."
            )
        fpr, tpr, thresholds = roc_curve(labels, scores, pos_label=pos_label)
        fnr = 1.0 - tpr
        best = int(np.nanargmin(np.abs(fnr - fpr)))
        return {
            "eer": float(fpr[best]),
            "auc": float(roc_auc_score(positives, scores)),
            "threshold": float(thresholds[best]),
        }
