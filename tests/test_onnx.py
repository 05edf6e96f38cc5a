"""ONNX export (dynamic batch and length) of classifiers and encoders, checked with onnxruntime against PyTorch."""

import json

import numpy as np
import pytest
import torch

from modeling_audiomosaic import (
    AudioMosaicConfig,
    AudioMosaicFeatureExtractor,
    AudioMosaicForAudioClassification,
    AudioMosaicForPreTraining,
    AudioMosaicModel,
)
from modeling_audiomosaic import cli


onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_length=256)


def test_classifier_export_matches_pytorch_at_every_length(tmp_path):
    torch.manual_seed(0)
    config = AudioMosaicConfig(**TINY, num_labels=3)
    model = AudioMosaicForAudioClassification(config).eval()
    model.save_pretrained(tmp_path / "model")
    AudioMosaicFeatureExtractor(max_length=256).save_pretrained(tmp_path / "model")
    result = cli.run(["export-onnx", str(tmp_path / "model"), str(tmp_path / "onnx"), "--int8"])
    assert result["task"] == "classifier"
    assert {p.name for p in (tmp_path / "onnx").iterdir()} >= {"model.onnx", "model_int8.onnx", "config.json",
                                                                "preprocessor_config.json"}
    assert json.loads((tmp_path / "onnx" / "preprocessor_config.json").read_text())["max_length"] == 256
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    quantised = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model_int8.onnx"),
                                             providers=["CPUExecutionProvider"])
    # Lengths other than the traced one (256), including ones that are not multiples of the patch size.
    for batch, frames in [(1, 16), (3, 100), (2, 128), (1, 250), (5, 256)]:
        features = torch.randn(batch, frames, 128)
        with torch.no_grad():
            expected = model(features).logits.numpy()
        got = session.run(["logits"], {"input_values": features.numpy()})[0]
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        assert quantised.run(["logits"], {"input_values": features.numpy()})[0].shape == expected.shape


def test_encoder_export_from_a_pretraining_folder(tmp_path):
    torch.manual_seed(1)
    AudioMosaicForPreTraining(AudioMosaicConfig(**TINY)).save_pretrained(tmp_path / "model")
    from modeling_audiomosaic.onnx_export import export_onnx

    result = export_onnx(tmp_path / "model", tmp_path / "onnx", check_lengths=(48, 256))
    assert result["task"] == "encoder" and max(result["max_abs_error"].values()) < 1e-4
    encoder = AudioMosaicModel.from_pretrained(tmp_path / "model").eval()
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    features = torch.randn(2, 77, 128)
    with torch.no_grad():
        expected = encoder(features)
    hidden, pooled = session.run(["last_hidden_state", "pooler_output"], {"input_values": features.numpy()})
    assert hidden.shape == (2, 1 + 5 * 8, 32)  # 77 frames padded to 80: 5 time rows x 8 frequency patches + cls
    np.testing.assert_allclose(pooled, expected.pooler_output.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(hidden, expected.last_hidden_state.numpy(), atol=1e-4, rtol=0)
