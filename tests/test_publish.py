"""Publishing a run: checkpoint folder (save_pretrained + feature extractor + auto_map), results.json and a model card
whose model-index round-trips through huggingface_hub.ModelCard; the folder serves the audio-classification pipeline.
Nothing touches the network (pushing is checked against a stand-in HfApi)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

import modeling_audiomosaic  # noqa: F401  (registers the Auto classes for the pipeline)
from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicFeatureExtractor, AudioMosaicForPreTraining
from conftest import write_subset
from audiomosaic_training import classification, finetune, publish


WORDS = ["low", "mid", "high"]


@pytest.fixture(scope="module")
def run_dir(synthetic_clips, tmp_path_factory) -> Path:
    """A finished 2-step fine-tuning run of a tiny model on 12 generated clips."""
    data = tmp_path_factory.mktemp("publish_data") / "subset.csv"
    write_subset(synthetic_clips, WORDS, 2, "filename", data)
    torch.manual_seed(0)
    checkpoint = tmp_path_factory.mktemp("publish_ckpt")
    AudioMosaicForPreTraining(AudioMosaicConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                intermediate_size=64, max_length=128)).save_pretrained(checkpoint)
    out = tmp_path_factory.mktemp("published") / "tiny-spc"
    finetune.main(["--dataset", str(data), "--audio_column", "filename", "--fold_column", "fold", "--eval_folds", "5",
                   "--model_name_or_path", str(checkpoint), "--feature_extractor_preset", "speechcommands",
                   "--max_length", "128", "--output_dir", str(out), "--max_steps", "2", "--blr", "0.01",
                   "--per_device_train_batch_size", "3", "--save_strategy", "no", "--report_to", "none",
                   "--use_cpu", "true", "--disable_tqdm", "true"])
    return out


def test_checkpoint_folder(run_dir):
    files = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "results.json", "README.md",
            "configuration_audiomosaic.py", "modeling_audiomosaic.py", "feature_extraction_audiomosaic.py"} <= files
    config = json.loads((run_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForAudioClassification"] == \
        "modeling_audiomosaic.AudioMosaicForAudioClassification"
    assert config["auto_map"]["AutoModel"] == "modeling_audiomosaic.AudioMosaicModel"
    assert sorted(config["id2label"].values()) == sorted(WORDS)
    preprocessor = json.loads((run_dir / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"]["AutoFeatureExtractor"] == \
        "feature_extraction_audiomosaic.AudioMosaicFeatureExtractor"
    assert preprocessor["max_length"] == 128 and preprocessor["mean"] == pytest.approx(-6.845978)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["train"]["global_step"] == 2 and results["num_eval_examples"] == 6
    assert results["eval_folds"] == "5" and set(results["labels"]) == set(WORDS)


def test_model_card_round_trip(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    card = ModelCard.load(run_dir / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "audio-classification"
    assert data.model_name == "tiny-spc" and data.license == "mit"
    by_metric = {r.metric_name: r for r in data.eval_results}
    assert set(by_metric) == {"accuracy"}  # single-label: accuracy only (no mAP / EER)
    entry = by_metric["accuracy"]
    assert entry.task_type == "audio-classification"
    assert entry.dataset_name == Path(results["dataset"]).parent.name  # local data: named by its folder, not a path
    assert entry.dataset_split == "fold 5"
    assert entry.metric_value == pytest.approx(results["eval"]["accuracy"], abs=1e-6)
    text = (run_dir / "README.md").read_text()
    assert "model-index:" in text and "| accuracy |" in text and "`low`" in text
    assert "pipeline(\"audio-classification\", model=\"tiny-spc\")" in text


def test_pipeline_serves_the_folder(run_dir, synthetic_clips):
    from transformers import pipeline

    from modeling_audiomosaic import load_audio

    classifier = pipeline("audio-classification", model=str(run_dir))
    clip = sorted((synthetic_clips / "audio" / "low").glob("*.flac"))[0]
    predictions = classifier(load_audio(clip), top_k=3)
    assert [p["label"] for p in predictions] and {p["label"] for p in predictions} == set(WORDS)
    assert predictions[0]["score"] >= predictions[-1]["score"]
    # The pipeline gives the scores the model gives.
    model = classification.AudioMosaicForAudioClassification.from_pretrained(run_dir).eval()
    fe = AudioMosaicFeatureExtractor.from_pretrained(run_dir)
    assert model.config.problem_type == "single_label_classification"  # trained with cross-entropy -> softmax
    with torch.no_grad():
        scores = model(**fe(load_audio(clip), sampling_rate=16000, return_tensors="pt")).logits.softmax(-1)[0]
    best = int(scores.argmax())
    assert predictions[0]["label"] == model.config.id2label[best]
    assert predictions[0]["score"] == pytest.approx(float(scores[best]), abs=1e-5)


def test_republish_with_a_hub_id_and_push(run_dir, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    calls = {}
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kw: calls.setdefault("create", (repo_id, kw)))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                        lambda self, **kw: calls.setdefault("upload", kw) and "https://hub/commit/1")
    publish.main([str(copy), "--hub_model_id", "someone/audiomosaic-tiny", "--push_to_hub"])
    assert ModelCard.load(copy / "README.md").data.model_name == "someone/audiomosaic-tiny"
    assert calls["create"][0] == "someone/audiomosaic-tiny" and calls["create"][1]["exist_ok"]
    assert calls["upload"]["folder_path"] == str(copy) and calls["upload"]["repo_id"] == "someone/audiomosaic-tiny"
    assert "checkpoint-*" in calls["upload"]["ignore_patterns"]


def test_publish_errors(tmp_path, run_dir):
    with pytest.raises(FileNotFoundError, match="results.json"):
        publish.main([str(tmp_path)])
    with pytest.raises(ValueError, match="needs --hub_model_id"):
        publish.publish_run(tmp_path / "x", {"eval": {}}, push_to_hub=True)


def test_card_for_multi_label_and_detection_metrics(tmp_path):
    results = {"dataset": "org/audioset", "eval_split": "eval", "labels": ["a", "b"], "loss": "bce",
               "eval": {"mAP": 0.41, "mAUC": 0.93, "accuracy": 0.5, "eer": 0.12, "auc": 0.95, "runtime": 3.0,
                        "loss": 0.2},
               "model_name_or_path": "someone/AudioMosaic-base"}
    config = AudioMosaicConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                               num_labels=2)
    card = publish.build_model_card(results, config, AudioMosaicFeatureExtractor(), model_id="x/y")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md").data
    metrics = {r.metric_name: (r.metric_type, r.metric_value) for r in loaded.eval_results}
    assert metrics == {"mAP": ("mean_average_precision", 0.41), "mAUC": ("roc_auc", 0.93),
                       "accuracy": ("accuracy", 0.5), "eer": ("eer", 0.12), "auc": ("roc_auc", 0.95)}
    assert loaded.datasets == ["org/audioset"] and loaded.base_model == "someone/AudioMosaic-base"
    assert all(r.dataset_type == "org/audioset" for r in loaded.eval_results)
    assert np.isclose(metrics["mAP"][1], 0.41)
