"""Normalisation statistics for new data: `audiomosaic norm-stats` and `--feature_extractor_preset auto` /
`--feature_extractor_preset auto` in the training scripts."""

import csv
import json

import numpy as np
import pytest

from modeling_audiomosaic import norm_stats
from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicFeatureExtractor, cli
from modeling_audiomosaic.norm_stats import compute_norm_stats, subsample


def random_clips(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [0.1 * rng.standard_normal(int(rng.integers(4000, 30000))).astype(np.float32) for _ in range(count)]


def test_statistics_are_the_mean_of_per_batch_mean_and_std():
    """AST's get_norm_stats.py: torch.mean / torch.std of each batch of padded log-Mel features, averaged."""
    clips = random_clips(16)
    raw = AudioMosaicFeatureExtractor(max_length=128, do_normalize=False)
    features = raw(clips, sampling_rate=16000, truncation=True, return_tensors="pt")["input_values"]
    batches = features.split(6)
    stats = compute_norm_stats(clips, 128, batch_size=6, progress=False)
    assert stats.mean == pytest.approx(np.mean([b.mean().item() for b in batches]), abs=1e-5)
    assert stats.std == pytest.approx(np.mean([b.std().item() for b in batches]), abs=1e-5)
    # Padding frames count (value 0 before normalisation): a longer model length moves the statistics towards 0.
    longer = compute_norm_stats(clips, 512, progress=False)
    assert stats.mean < longer.mean < 0 and longer.std < stats.std and longer.max_length == 512


def test_norm_stats_command_writes_a_normalising_feature_extractor(synthetic_clips, tmp_path, capsys):
    out = tmp_path / "fe"
    stats = cli.run(["norm-stats", str(synthetic_clips / "meta.csv"), "--audio_column", "filename",
                     "--max_length", "128", "--output_dir", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert f"mean {stats.mean:.7g}" in printed and f"({stats.num_clips} clips at 128 frames)" in printed
    fe = AudioMosaicFeatureExtractor.from_pretrained(out)
    assert (fe.mean, fe.std, fe.max_length) == (pytest.approx(stats.mean), pytest.approx(stats.std), 128)
    # One batch: the written extractor maps the data to mean 0 and std 0.5 ((x - mean) / (2 std)).
    with open(synthetic_clips / "meta.csv") as handle:
        paths = [str(synthetic_clips / row["filename"]) for row in csv.DictReader(handle)]
    normalised = fe(paths, truncation=True, return_tensors="pt")["input_values"]
    assert normalised.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert normalised.std().item() == pytest.approx(0.5, abs=1e-4)


def test_max_samples_and_bad_input(synthetic_clips, tmp_path, capsys):
    assert subsample(list(range(10)), 4) == sorted(subsample(list(range(10)), 4))
    assert len(subsample(list(range(10)), 4)) == 4 and subsample(list(range(3)), 10) == [0, 1, 2]
    stats = cli.run(["norm-stats", str(synthetic_clips / "audio"), "--max_samples", "5", "--max_length", "128",
                     "--quiet"])
    assert stats.num_clips == 5
    with pytest.raises(SystemExit):
        cli.run(["norm-stats", str(tmp_path / "missing"), "--quiet"])
    assert "norm-stats: error: Input" in capsys.readouterr().err


def test_finetune_auto_preset_uses_the_training_split_and_caches(synthetic_clips, tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    from audiomosaic_training import classification

    monkeypatch.setattr(norm_stats, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    model_args = classification.ModelArguments(model_name_or_path=None)
    data_args = classification.DataArguments(dataset=str(synthetic_clips / "meta.csv"), audio_column="filename",
                                       fold_column="fold", train_folds="1,2", eval_folds="5", max_length=128,
                                       feature_extractor_preset="auto")
    prepared = classification.prepare(model_args, data_args)
    train_paths = list(prepared.train_hf["audio"])
    expected = compute_norm_stats(train_paths, 128, progress=False)
    fe = prepared.feature_extractor
    assert (fe.mean, fe.std, fe.max_length) == (pytest.approx(expected.mean), pytest.approx(expected.std), 128)
    cached = list((tmp_path / "cache").glob("norm_stats_*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["num_clips"] == len(train_paths)
    # A second run reads the cache: a doctored cached value comes back instead of a recomputation.
    cached[0].write_text(json.dumps({**json.loads(cached[0].read_text()), "mean": -1.5}))
    assert classification.prepare(model_args, data_args).feature_extractor.mean == -1.5


def test_pretrain_auto_preset(synthetic_clips, tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    from audiomosaic_training import pretrain
    from audiomosaic_training.data import open_train_split
    from audiomosaic_training.models import build_feature_extractor

    monkeypatch.setattr(norm_stats, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    data_args = pretrain.DataArguments(dataset=str(synthetic_clips / "meta.csv"), audio_column="filename",
                                       feature_extractor_preset="auto", max_train_samples=12)
    raw = open_train_split(data_args)
    fe = build_feature_extractor(data_args, max_length=AudioMosaicConfig(max_length=128).max_length,
                                 train_audio=raw["audio"])
    expected = compute_norm_stats(list(raw["audio"]), 128, progress=False)
    assert (fe.mean, fe.std) == (pytest.approx(expected.mean), pytest.approx(expected.std))
    with pytest.raises(ValueError, match="--feature_extractor_preset auto .* --streaming"):
        pretrain.DataArguments(dataset="x", feature_extractor_preset="auto", streaming=True)


def test_speechcommands_statistics_near_the_preset(data_dir):
    """Real Speech Commands clips (test split, 12 classes) at 128 frames land near the authors' SPC-2 statistics."""
    with open(data_dir / "speechcommands_test" / "meta.csv") as handle:
        paths = [str(data_dir / "speechcommands_test" / row["filename"]) for row in csv.DictReader(handle)]
    stats = compute_norm_stats(subsample(paths, 150), 128, progress=False)
    reference = AudioMosaicFeatureExtractor.from_preset("speechcommands")
    assert abs(stats.mean - reference.mean) < 0.5 and abs(stats.std - reference.std) < 0.5
