"""The official-checkpoint converter: input formats, prefix stripping, detection, size inference, labels and the
errors for checkpoints it cannot convert."""

import argparse
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

import modeling_audiomosaic  # noqa: F401 - registers the Auto classes
from modeling_audiomosaic import AudioMosaicForAudioClassification, AudioMosaicForPreTraining, AudioMosaicModel
from modeling_audiomosaic.convert_official import ConversionError, convert, main


@pytest.fixture(scope="module")
def pretrain_state(fixtures_dir):
    return load_file(fixtures_dir / "pretrain_long.safetensors")


def test_torch_pickle_with_training_prefixes(pretrain_state, tmp_path):
    """The authors' pretraining saves `_orig_mod.` (compiled) keys, DDP adds `module.`: both are stripped."""
    prefixed = {f"module._orig_mod.{key}": value for key, value in pretrain_state.items()}
    torch.save(prefixed, tmp_path / "model_state_dict.pt")
    out = convert(tmp_path / "model_state_dict.pt", tmp_path / "out", num_heads=4)
    model = AutoModelForPreTraining.from_pretrained(out)
    assert isinstance(model, AudioMosaicForPreTraining)
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.max_length) == (64, 2, 4, 256)
    assert (config.projection_hidden_size, config.projection_dim, config.intermediate_size) == (512, 32, 256)
    torch.testing.assert_close(model.projector.dense_in.weight, pretrain_state["projector.0.weight"])
    # A pretraining folder also serves the bare encoder.
    assert isinstance(AutoModel.from_pretrained(out), AudioMosaicModel)
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert preprocessor["max_length"] == 256


def test_default_head_count_is_width_over_64(pretrain_state, tmp_path):
    save_file(pretrain_state, tmp_path / "pretrain.safetensors")
    out = convert(tmp_path / "pretrain.safetensors", tmp_path / "out")
    assert AutoConfig.from_pretrained(out).num_attention_heads == 1


def test_pickled_code_is_refused(tmp_path):
    # Any non-tensor object needs code to unpickle; weights_only loading refuses it.
    torch.save({"cls_token": argparse.Namespace(payload="code")}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights_only=True"):
        convert(tmp_path / "evil.pt", tmp_path / "out")


def test_unknown_and_misshaped_keys_are_listed(pretrain_state, tmp_path):
    extra = dict(pretrain_state, **{"online_classifier.weight": torch.zeros(3, 64), "norm.weight": torch.ones(64)})
    save_file(extra, tmp_path / "extra.safetensors")
    with pytest.raises(ConversionError, match=r"norm\.weight.*online_classifier\.weight"):
        convert(tmp_path / "extra.safetensors", tmp_path / "out1", num_heads=4)
    bad = dict(pretrain_state)
    bad["blocks.1.mlp.fc2.weight"] = torch.zeros(64, 100)
    save_file(bad, tmp_path / "bad.safetensors")
    with pytest.raises(ConversionError, match=r"layers\.1\.mlp\.fc2\.weight: checkpoint shape \(64, 100\)"):
        convert(tmp_path / "bad.safetensors", tmp_path / "out2", num_heads=4)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert(tmp_path / "missing.pt", tmp_path / "out")
    (tmp_path / "weights.ckpt").write_text("x")
    with pytest.raises(ConversionError, match="Unsupported checkpoint file"):
        convert(tmp_path / "weights.ckpt", tmp_path / "out")
    save_file({"foo": torch.zeros(1), "bar.weight": torch.zeros(2, 3)}, tmp_path / "other.safetensors")
    # The refusal lists what the checkpoint does hold, so the user can see what it is.
    with pytest.raises(ConversionError, match=r"Cannot tell.*holds 2 keys: bar\.weight \(2, 3\), foo \(1,\)"):
        convert(tmp_path / "other.safetensors", tmp_path / "out")
    encoder_only = {"head.weight": torch.zeros(2, 4), "blocks.0.attn.qkv.weight": torch.zeros(12, 4)}
    save_file(encoder_only, tmp_path / "partial.safetensors")
    with pytest.raises(ConversionError, match=r"missing keys \['cls_token'.*holds 2 keys: blocks\.0\.attn\.qkv"):
        convert(tmp_path / "partial.safetensors", tmp_path / "out")


def test_labels_csv_must_match_the_head(fixtures_dir, tmp_path):
    (tmp_path / "labels.csv").write_text("index,mid,display_name\n0,/m/a,A\n1,/m/b,B\n")
    with pytest.raises(ValueError, match="2 labels but the checkpoint's head has 10"):
        convert(fixtures_dir / "classifier_sq.safetensors", tmp_path / "out", num_heads=4, labels=tmp_path / "labels.csv")


def test_command_line_entry_points(fixtures_dir, tmp_path, capsys):
    main([str(fixtures_dir / "classifier_sq.safetensors"), str(tmp_path / "a"), "--num-heads", "4"])
    assert "model.safetensors" in capsys.readouterr().out
    model = AudioMosaicForAudioClassification.from_pretrained(tmp_path / "a")
    assert model.config.num_labels == 10 and model.config.classifier_type == "linear"
    completed = subprocess.run(
        [sys.executable, "-m", "modeling_audiomosaic.convert_official", str(fixtures_dir / "classifier_sq.safetensors"),
         str(tmp_path / "b"), "--num-heads", "4", "--classifier-type", "layer_probe", "--probe-layer", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    probe = AudioMosaicForAudioClassification.from_pretrained(tmp_path / "b")
    assert probe.config.classifier_type == "layer_probe" and probe.config.probe_layer == 1 and probe.config.freeze_encoder


def audioset_head_release(fixtures_dir, folder, release_extra: dict | None = None):
    """The fixture classifier with a 527-way head, written as an authors' release folder (config.json + weights)."""
    state = load_file(fixtures_dir / "classifier_sq.safetensors")
    generator = torch.Generator().manual_seed(0)
    state["head.weight"] = 0.5 * torch.randn(527, state["head.weight"].shape[1], generator=generator)
    state["head.bias"] = torch.randn(527, generator=generator)
    folder.mkdir(parents=True)
    save_file(state, folder / "model.safetensors")
    config = {"model_class": "AudioMosaicClassifier", "num_heads": 4, "num_classes": 527, **(release_extra or {})}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_audioset_head_reports_sigmoid_scores(fixtures_dir, tmp_path, capsys):
    """527 AudioSet classes are multi-label: pipeline() and `audiomosaic classify` give independent sigmoid scores."""
    from transformers import pipeline

    from modeling_audiomosaic import cli

    out = convert(audioset_head_release(fixtures_dir, tmp_path / "release"), tmp_path / "as")
    model = AudioMosaicForAudioClassification.from_pretrained(out).eval()
    assert model.config.problem_type == "multi_label_classification"
    waveform = 0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(1)).numpy()
    scores = pipeline("audio-classification", model=str(out))(waveform, top_k=None)
    feature_extractor = modeling_audiomosaic.AudioMosaicFeatureExtractor.from_pretrained(out)
    with torch.no_grad():
        expected = model(feature_extractor(waveform, sampling_rate=16000, return_tensors="pt")["input_values"])
    expected = expected.logits[0].sigmoid()
    assert len(scores) == 527 and sum(entry["score"] for entry in scores) > 1.5  # not a distribution
    for entry in scores[:10]:
        assert entry["score"] == pytest.approx(expected[model.config.label2id[entry["label"]]].item(), abs=1e-5)

    import soundfile

    soundfile.write(tmp_path / "clip.wav", waveform, 16000)
    predictions = cli.run(["classify", str(tmp_path / "clip.wav"), "--model", str(out), "--top_k", "3", "--format",
                           "json", "--quiet"])
    top = predictions[0]["predictions"]
    assert [entry["score"] for entry in top] == pytest.approx(expected.topk(3).values.tolist(), abs=1e-5)
    capsys.readouterr()


def test_problem_type_from_release_config_or_override(fixtures_dir, tmp_path):
    single = convert(audioset_head_release(fixtures_dir, tmp_path / "r1", {"multi_label": False}), tmp_path / "a")
    assert AutoConfig.from_pretrained(single).problem_type == "single_label_classification"
    ten_way = fixtures_dir / "classifier_sq.safetensors"
    assert AutoConfig.from_pretrained(convert(ten_way, tmp_path / "b", num_heads=4)).problem_type == (
        "single_label_classification")
    forced = convert(ten_way, tmp_path / "c", num_heads=4, problem_type="multi_label_classification")
    assert AutoConfig.from_pretrained(forced).problem_type == "multi_label_classification"
    with pytest.raises(ConversionError, match="pretraining checkpoint"):
        convert(fixtures_dir / "pretrain_sq.safetensors", tmp_path / "d", problem_type="multi_label_classification")
