"""training/probe.py: cached probes equal the full-model probes (same seed), the layer sweep writes its table and
plot, the disk cache is reused, every probe recipe takes one optimisation step, and bad input is refused."""

import copy
import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicFeatureExtractor, AudioMosaicForPreTraining
from conftest import write_subset
from audiomosaic_training import classification, probe


RECIPES = Path(probe.__file__).resolve().parent / "recipes"
PROBE_RECIPES = sorted(p.name for p in RECIPES.glob("probe_*.yaml"))
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
            projection_hidden_size=32, projection_dim=16)
WORDS = ["yes", "no", "up"]
KINDS = ["linear", "layer", "weighted_sum", "attentive"]


@pytest.fixture(scope="module")
def clips(data_dir, tmp_path_factory) -> Path:
    """CSV of 18 real Speech Commands clips: 3 words x 3 clips in folds 1 and 5 (absolute paths, nothing copied).
    Real speech, because these tests check that the probes learn within 12 steps, which they do on speech; on the
    generated band-noise clips (tests/conftest.py) the default probe stayed at chance within that budget."""
    root = data_dir / "speechcommands_test"
    if not (root / "meta.csv").is_file():
        pytest.skip(f"speechcommands_test not found in {data_dir}")
    path = tmp_path_factory.mktemp("probe_clips") / "clips.csv"
    write_subset(root, WORDS, 3, "audio", path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("probe_ckpt")
    AudioMosaicForPreTraining(AudioMosaicConfig(**TINY, max_length=128)).save_pretrained(path)
    AudioMosaicFeatureExtractor.from_preset("speechcommands").save_pretrained(path)
    return path


def base_argv(clips: Path, checkpoint: Path, output_dir: Path, *extra) -> list[str]:
    return ["--dataset", str(clips), "--model_name_or_path", str(checkpoint), "--output_dir", str(output_dir),
            "--fold_column", "fold", "--train_folds", "1", "--eval_folds", "5", "--max_length", "128",
            "--num_train_epochs", "4", "--per_device_train_batch_size", "4", "--learning_rate", "0.01",
            "--warmup_epochs", "1", "--seed", "3", *extra]


def _randomise_probe_parameters(model):
    """Non-trivial LayerNorm affines, layer weights and fc_norm, so equality tests see every cached term."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))


@pytest.mark.parametrize("kind", KINDS)
def test_cached_head_equals_the_full_model(kind):
    torch.manual_seed(0)
    config = AudioMosaicConfig(**TINY, max_length=128, num_labels=5, probe_layer=1)
    base = classification.AudioMosaicForAudioClassification(config)
    model = probe.ProbeFactory(base, seed=0)(kind, 1 if kind == "layer" else None)
    _randomise_probe_parameters(model)
    model.eval()
    inputs = torch.randn(6, 100, 128)
    mask = torch.ones(6, 100, dtype=torch.long)
    mask[:3, 60:] = 0  # padded clips: the token mask must flow into both pooled features
    loader = [{"input_values": inputs, "attention_mask": mask}]
    cache = probe.extract_layer_features(model.audiomosaic, loader, torch.device("cpu"))
    assert cache["pooled"].shape == cache["standardized"].shape == (6, 3, 32)
    with torch.no_grad():
        expected = model(inputs, attention_mask=mask).logits
        cached = probe.cached_head_logits(model, cache["pooled"], cache["standardized"])
    torch.testing.assert_close(cached, expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_cached_path_runs_the_model_head_modules(kind):
    """The cached path feeds cached features to the model's own head modules: the logits are the full model's, bit
    for bit, and the head module is what computes them (no second copy of the probe arithmetic)."""
    torch.manual_seed(0)
    config = AudioMosaicConfig(**TINY, max_length=128, num_labels=5, probe_layer=1)
    model = probe.ProbeFactory(classification.AudioMosaicForAudioClassification(config), seed=0)(kind)
    _randomise_probe_parameters(model)
    model.eval()
    inputs = torch.randn(4, 100, 128)
    mask = torch.ones(4, 100, dtype=torch.long)
    mask[:2, 50:] = 0
    cache = probe.extract_layer_features(model.audiomosaic, [{"input_values": inputs, "attention_mask": mask}],
                                         torch.device("cpu"))
    calls = []
    model.head.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    with torch.no_grad():
        expected = model(inputs, attention_mask=mask).logits
        cached = probe.cached_head_logits(model, cache["pooled"], cache["standardized"])
    assert torch.equal(cached, expected)
    assert calls[0] == calls[1] == ((4, 32) if kind == "linear" else (4, 3, 32))


def test_cached_path_refuses_a_token_head():
    config = AudioMosaicConfig(**TINY, max_length=128, num_labels=2, classifier_type="aasist")
    model = classification.AudioMosaicForAudioClassification(config)
    with pytest.raises(ValueError, match="'aasist' has no cached probe"):
        probe.cached_head_logits(model, torch.zeros(1, 3, 32), torch.zeros(1, 3, 32))


def test_cached_and_recomputed_probes_give_the_same_result(clips, checkpoint, tmp_path):
    cached = probe.main(base_argv(clips, checkpoint, tmp_path / "cached", "--probes", "all"))
    recomputed = probe.main(base_argv(clips, checkpoint, tmp_path / "full", "--probes", "all",
                                      "--cache_features", "false"))
    assert set(cached["probes"]) == {"linear", "weighted_sum", "attentive"} and len(cached["layer_sweep"]) == 3
    pairs = [(cached["probes"][k], recomputed["probes"][k]) for k in cached["probes"]]
    pairs += [(cached["layer_sweep"][k], recomputed["layer_sweep"][k]) for k in cached["layer_sweep"]]
    for a, b in pairs:
        assert a["steps"] == b["steps"] == 4 * 3  # 9 clips, batches of 4, 4 epochs
        assert a["accuracy"] == b["accuracy"]
        assert a["final_loss"] == pytest.approx(b["final_loss"], rel=1e-4)
    assert cached["cached_features"] and cached["feature_extraction_seconds"] > 0
    assert not recomputed["cached_features"]
    # The probes learned something about the training set: the loss dropped below chance (ln 3).
    assert min(a["final_loss"] for a, _ in pairs) < math.log(3)


@pytest.mark.parametrize("kind", ["weighted_sum", "attentive"])
def test_cached_training_reaches_the_same_parameters(kind, clips, checkpoint, tmp_path):
    model_args = classification.ModelArguments(model_name_or_path=str(checkpoint))
    data_args = classification.DataArguments(dataset=str(clips), fold_column="fold", train_folds="1", eval_folds="5",
                                       max_length=128)
    args = probe.ProbeArguments(output_dir=str(tmp_path), num_train_epochs=3, per_device_train_batch_size=4,
                                learning_rate=0.02, seed=5, weight_decay=0.01)
    prepared = classification.prepare(model_args, data_args, 0)
    base = classification.build_model(copy.copy(model_args), prepared.labels, "single_label_classification", 128)
    factory = probe.ProbeFactory(base, seed=args.seed)
    device = torch.device("cpu")
    cache = probe.cached_features(base.audiomosaic, prepared, data_args, "train", 8, device)
    with_cache, without_cache = factory(kind), factory(kind)
    probe.train_probe(with_cache, prepared, data_args, args, device, cache)
    probe.train_probe(without_cache, prepared, data_args, args, device, None)
    trained = {n: p for n, p in with_cache.named_parameters() if p.requires_grad}
    for name, parameter in without_cache.named_parameters():
        if parameter.requires_grad:
            torch.testing.assert_close(trained[name], parameter, atol=1e-5, rtol=1e-4)
    start = factory(kind)
    moved = [n for n, p in start.named_parameters() if p.requires_grad and not torch.equal(p, trained[n])]
    assert "classifier.weight" in moved and "audiomosaic.fc_norm.weight" in moved
    # The frozen encoder never moves.
    assert torch.equal(start.audiomosaic.layers[0].mlp.fc1.weight, with_cache.audiomosaic.layers[0].mlp.fc1.weight)


def test_layer_sweep_table_plot_and_disk_cache(clips, checkpoint, tmp_path):
    argv = base_argv(clips, checkpoint, tmp_path / "sweep", "--probes", "layer_sweep,weighted_sum", "--cache_dir",
                     str(tmp_path / "cache"))
    first = probe.main(argv)
    out = tmp_path / "sweep"
    rows = list(csv.DictReader((out / "layer_sweep.csv").open()))
    assert [int(r["block"]) for r in rows] == [0, 1, 2]
    assert [float(r["accuracy"]) for r in rows] == [first["layer_sweep"][str(i)]["accuracy"] for i in range(3)]
    assert (out / "layer_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "layer 2 (block 3)" in (out / "probe_results.md").read_text()
    assert json.loads((out / "results.json").read_text())["best_layer"]["block"] in (0, 1, 2)
    cached_files = sorted((tmp_path / "cache").glob("*.safetensors"))
    assert [f.name.split("-")[0] for f in cached_files] == ["eval", "train"]
    stamps = [f.stat().st_mtime_ns for f in cached_files]
    second = probe.main(argv)  # reuses the cached features
    assert [f.stat().st_mtime_ns for f in cached_files] == stamps
    assert second["features_from_disk_cache"] and not first["features_from_disk_cache"]
    assert "read from the disk cache" in (out / "probe_results.md").read_text()
    assert second["layer_sweep"] == {k: {**v, "train_seconds": second["layer_sweep"][k]["train_seconds"],
                                         "eval_seconds": second["layer_sweep"][k]["eval_seconds"]}
                                     for k, v in first["layer_sweep"].items()}


@pytest.mark.parametrize("recipe", PROBE_RECIPES)
def test_probe_recipe_takes_one_step(recipe, clips, checkpoint, tmp_path):
    values = yaml.safe_load((RECIPES / recipe).read_text())
    argv = ["--recipe", str(RECIPES / recipe), "--dataset", str(clips), "--model_name_or_path", str(checkpoint),
            "--output_dir", str(tmp_path), "--max_length", "128", "--num_train_epochs", "1",
            "--per_device_train_batch_size", "9", "--warmup_epochs", "0", "--label_column", "label",
            "--multi_label", "false", "--label_separator", "", "--fold_column", "fold", "--eval_folds", "5"]
    if values.get("weighted_sample_size"):
        weights = tmp_path / "weights.txt"
        weights.write_text("\n".join(["1"] * 9))
        argv += ["--sample_weights_file", str(weights), "--weighted_sample_size", "9"]
    if values["probes"] == "layer_sweep":
        argv += ["--sweep_layers", "1"]
    summary = probe.main(argv)
    entries = list(summary["probes"].values()) + list(summary.get("layer_sweep", {}).values())
    assert len(entries) == (3 + 3 if values["probes"] == "all" else 1)  # all: 3 probes + a 3-block sweep
    for entry in entries:
        assert entry["steps"] == 1 and math.isfinite(entry["final_loss"]) and "accuracy" in entry
    assert summary["cached_features"] == values["cache_features"]
    assert summary["learning_rate"] == pytest.approx(values["blr"] * 9 / 256)


def test_bad_probe_input(clips, checkpoint, tmp_path):
    with pytest.raises(ValueError, match="Unknown probe"):
        probe.main(base_argv(clips, checkpoint, tmp_path, "--probes", "linear,mlp"))
    with pytest.raises(ValueError, match="cannot carry per-epoch augmentation.*mixup"):
        probe.main(base_argv(clips, checkpoint, tmp_path, "--mixup", "0.5", "--loss", "bce"))
    with pytest.raises(ValueError, match="needs an evaluation split"):
        probe.main(["--dataset", str(clips), "--model_name_or_path", str(checkpoint), "--output_dir", str(tmp_path),
                    "--max_length", "128"])
    with pytest.raises(ValueError, match="block 7 does not exist"):
        probe.main(base_argv(clips, checkpoint, tmp_path, "--probes", "layer_sweep", "--sweep_layers", "7"))


def test_features_are_batch_independent(clips, checkpoint):
    """The cache is extracted in batches: each clip's features must not depend on its batch mates."""
    model_args = classification.ModelArguments(model_name_or_path=str(checkpoint))
    data_args = classification.DataArguments(dataset=str(clips), fold_column="fold", eval_folds="5", max_length=128)
    prepared = classification.prepare(model_args, data_args, 0)
    base = classification.build_model(model_args, prepared.labels, "single_label_classification", 128)
    dataset = prepared.dataset(data_args, "eval")
    big = probe.extract_layer_features(
        base.audiomosaic, DataLoader(dataset, batch_size=9, collate_fn=prepared.collator(data_args)), "cpu")
    small = probe.extract_layer_features(
        base.audiomosaic, DataLoader(dataset, batch_size=2, collate_fn=prepared.collator(data_args)), "cpu")
    torch.testing.assert_close(big["pooled"], small["pooled"], atol=1e-5, rtol=1e-5)


def test_save_models_publishes_each_probe(clips, checkpoint, tmp_path):
    from huggingface_hub import ModelCard
    from transformers import pipeline

    import modeling_audiomosaic  # noqa: F401  (registration for the pipeline)

    summary = probe.main(base_argv(clips, checkpoint, tmp_path, "--probes", "attentive", "--num_train_epochs", "1",
                                   "--save_models", "true"))
    folder = tmp_path / "attentive"
    config = json.loads((folder / "config.json").read_text())
    assert config["classifier_type"] == "attentive_probe" and config["freeze_encoder"] is True
    card = ModelCard.load(folder / "README.md").data
    assert card.eval_results[0].metric_value == pytest.approx(summary["probes"]["attentive"]["accuracy"], abs=1e-6)
    labels = {p["label"] for p in pipeline("audio-classification", model=str(folder))(
        torch.zeros(16000).numpy(), top_k=None)}
    assert labels == set(WORDS)
