"""The evaluate modules shipped in modeling_audiomosaic/metrics (offline, by path), the fine-tuning compute_metrics
built on them, and the effective-rank analysis."""

import os
import subprocess
import sys

import evaluate
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from modeling_audiomosaic.analysis import (
    effective_rank,
    effective_rank_analysis,
    kept_token_count,
    masking_keep_indices,
    plot_effective_rank,
)
from audiomosaic_training.metrics import AVAILABLE_METRICS, load_metric, metric_path


def test_modules_ship_and_load_by_path():
    assert set(AVAILABLE_METRICS) >= {"accuracy", "mean_average_precision", "eer"}
    for name in ("accuracy", "mean_average_precision", "eer"):
        module = evaluate.load(str(metric_path(name)))
        assert isinstance(module, evaluate.Metric)
    with pytest.raises(ValueError, match="Unknown metric"):
        load_metric("f1_macro")


def test_load_works_without_network_in_a_fresh_process(tmp_path):
    code = (
        "from audiomosaic_training.metrics import load_metric;"
        "print(load_metric('accuracy').compute(predictions=[1, 0, 1], references=[1, 1, 1])['accuracy'])"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert abs(float(out.stdout.strip().splitlines()[-1]) - 2 / 3) < 1e-12


def test_accuracy():
    metric = load_metric("accuracy")
    assert metric.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2]) == {"accuracy": 0.75}
    assert metric.compute(predictions=[0, 1], references=[0, 0], normalize=False) == {"accuracy": 1.0}
    weighted = metric.compute(predictions=[0, 1], references=[0, 0], sample_weight=[3.0, 1.0])
    assert weighted["accuracy"] == pytest.approx(0.75)


def test_map_matches_sklearn_and_skips_classes_without_positives():
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 6)) < 0.2).astype(np.float32)
    targets[:, 4] = 0  # no positives: AP undefined (sklearn would give 0 and drag the mean down)
    targets[:, 5] = 1  # no negatives: AP = 1, AUC undefined
    scores = rng.random((200, 6)) + targets * 0.5
    result = load_metric("mean_average_precision").compute(predictions=scores, references=targets)
    with_pos = [0, 1, 2, 3, 5]
    expected_ap = np.mean([average_precision_score(targets[:, c], scores[:, c]) for c in with_pos])
    expected_auc = np.mean([roc_auc_score(targets[:, c], scores[:, c]) for c in [0, 1, 2, 3]])
    assert result["mAP"] == pytest.approx(expected_ap, abs=1e-6)
    assert result["mAUC"] == pytest.approx(expected_auc, abs=1e-6)
    assert result["num_classes_evaluated"] == 5 and result["num_classes_skipped"] == 1
    # The naive sklearn macro average (class 4 counted as AP 0) is lower: the convention matters.
    with pytest.warns(UserWarning):
        naive = average_precision_score(targets, scores, average="macro")
    assert naive < result["mAP"]


def test_map_binarises_soft_targets_and_rejects_bad_shapes():
    metric = load_metric("mean_average_precision")
    soft = [[0.7, 0.3], [0.2, 0.8], [0.9, 0.1]]  # mixup-style targets
    scores = [[0.9, 0.1], [0.1, 0.9], [0.8, 0.2]]
    assert metric.compute(predictions=scores, references=soft)["mAP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no class has a positive"):
        metric.compute(predictions=[[0.1, 0.2]], references=[[0, 0]])


def test_eer_matches_the_authors_definition():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 500)
    scores = rng.normal(size=500) + labels * 1.5
    result = load_metric("eer").compute(predictions=scores, references=labels)
    fpr, tpr, _ = roc_curve(labels, scores, pos_label=1)
    best = np.nanargmin(np.abs((1 - tpr) - fpr))
    assert result["eer"] == pytest.approx(fpr[best])
    assert result["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert 0.1 < result["eer"] < 0.4
    perfect = load_metric("eer").compute(predictions=[0.1, 0.2, 0.8, 0.9], references=[0, 0, 1, 1])
    assert perfect["eer"] == 0.0 and perfect["auc"] == 1.0
    with pytest.raises(ValueError, match="both classes"):
        load_metric("eer").compute(predictions=[0.1, 0.2], references=[1, 1])


def test_classification_metrics_of_the_training_scripts():
    from audiomosaic_training.classification import classification_metrics

    logits = np.array([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    single = classification_metrics(logits, np.array([0, 1, 1, 0]))
    assert single == {"accuracy": 0.75}
    multi = classification_metrics(logits, np.eye(3)[[0, 1, 2, 0]])
    assert multi["accuracy"] == 1.0 and multi["mAP"] == pytest.approx(1.0) and "mAUC" in multi
    binary = classification_metrics(np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.5], [0.2, 0.1]]), np.array([0, 1, 1, 0]))
    assert {"accuracy", "eer", "auc"} <= set(binary) and binary["eer"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------------------------------
# Effective rank (modeling_audiomosaic.analysis)
# ---------------------------------------------------------------------------------------------------------------------


def test_effective_rank_extremes():
    torch.manual_seed(0)
    assert effective_rank(torch.randn(4000, 32)) == pytest.approx(32, rel=0.02)
    rank_one = torch.randn(500, 1) @ torch.randn(1, 32)
    assert effective_rank(rank_one) == pytest.approx(1.0, abs=0.01)
    # Two equal singular values -> exactly 2 (eps aside).
    two = torch.zeros(10, 8)
    two[0, 0] = two[1, 1] = 3.0
    assert effective_rank(two, eps=0.0) == pytest.approx(2.0)
    # Centering removes a shared offset direction.
    offset = torch.randn(1000, 2) @ torch.randn(2, 16) + 100 * torch.randn(1, 16)
    assert effective_rank(offset) < effective_rank(offset, center=True) == pytest.approx(2.0, abs=0.3)
    with pytest.raises(ValueError, match="at least 2"):
        effective_rank(torch.randn(1, 8))


def test_masking_keep_indices_follow_the_grid():
    torch.manual_seed(0)
    keep = masking_keep_indices("time_frequency", 3, 8, 8, time_ratio=0.6, freq_ratio=0.4)
    assert keep.shape == (3, 3 * 4) and kept_token_count("time_frequency", 8, 8) == 12
    rows, cols = keep // 8, keep % 8
    for b in range(3):  # kept tokens form a full (rows x cols) sub-grid
        assert len(set(rows[b].tolist())) == 3 and len(set(cols[b].tolist())) == 4
    unstructured = masking_keep_indices("unstructured", 2, 8, 8)
    assert unstructured.shape == (2, 12) and len(set(unstructured[0].tolist())) == 12
    assert masking_keep_indices("none", 2, 8, 8) is None
    assert masking_keep_indices("time", 1, 8, 8).shape == (1, 3 * 8)
    with pytest.raises(ValueError, match="Unknown masking"):
        masking_keep_indices("random", 1, 8, 8)


def test_effective_rank_analysis_and_plot(tmp_path):
    from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicModel

    torch.manual_seed(0)
    config = AudioMosaicConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                               max_length=128)
    model = AudioMosaicModel(config).eval()
    batches = [torch.randn(8, 128, 128) for _ in range(3)]
    results = effective_rank_analysis(model, batches, ("none", "unstructured", "time_frequency"), seed=3)
    for masking, entry in results["maskings"].items():
        assert entry["num_clips"] == 24 and entry["dim"] == 32
        assert 1.0 <= entry["effective_rank"] <= 32
    assert results["maskings"]["none"]["kept_tokens"] == 64
    assert results["maskings"]["unstructured"]["kept_tokens"] == results["maskings"]["time_frequency"]["kept_tokens"]
    # The unmasked rank is the rank of the plain pooler outputs.
    with torch.no_grad():
        plain = torch.cat([model(b).pooler_output for b in batches])
    assert results["maskings"]["none"]["effective_rank"] == pytest.approx(effective_rank(plain), rel=1e-6)
    # Seeded: the same masks again.
    again = effective_rank_analysis(model, batches, ("none", "unstructured", "time_frequency"), seed=3)
    assert again["maskings"] == results["maskings"]
    other_seed = effective_rank_analysis(model, batches, ("none", "unstructured", "time_frequency"), seed=4)
    assert other_seed["maskings"]["unstructured"] != results["maskings"]["unstructured"]
    png = plot_effective_rank(results, tmp_path / "rank.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
