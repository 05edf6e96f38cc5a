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
    with pytest.raises(ConversionError, match="weights_only"):
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
    save_file({"foo": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(ConversionError, match="Cannot tell|missing keys"):
        convert(tmp_path / "other.safetensors", tmp_path / "out")


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
