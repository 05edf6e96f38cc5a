"""Top-1 accuracy as a local `evaluate` module (the Hub's `evaluate-metric/accuracy` is unreachable offline)."""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Top-1 accuracy: the fraction of examples whose predicted class index equals the reference class index. For multi-hot
references (AudioSet-style targets, or Speech Commands trained with BCE as by the AudioMosaic authors) pass
`argmax(scores)` as predictions and `argmax(targets)` as references, which is the authors' "acc".
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class indices.
    references (`list[int]`): reference class indices.
    normalize (`bool`, defaults to `True`): return the fraction instead of the count of correct predictions.
    sample_weight (`list[float]`, *optional*): per-example weights.
Returns:
    accuracy (`float`): in [0, 1] (or a count with `normalize=False`).
Example:
    >>> metric = evaluate.load("training/metrics/accuracy")
    >>> metric.compute(predictions=[0, 1, 2], references=[0, 1, 1])
    {'accuracy': 0.6666666666666666}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if predictions.size == 0:
            raise ValueError("accuracy: no predictions to score.")
        correct = (predictions == references).astype(np.float64)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.shape != correct.shape:
                raise ValueError(f"accuracy: sample_weight has shape {sample_weight.shape}, expected {correct.shape}.")
            total = float((correct * sample_weight).sum())
            return {"accuracy": total / float(sample_weight.sum()) if normalize else total}
        return {"accuracy": float(correct.mean()) if normalize else float(correct.sum())}
