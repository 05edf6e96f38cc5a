"""The HEAR API module: the validator's checks (shapes, dtypes, attributes, regular timestamps) on a tiny folder, and
the official `hear-validator` itself where it is installed (it needs tensorflow, so CI skips it)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicFeatureExtractor, AudioMosaicForPreTraining, hear


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = AudioMosaicConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               max_length=128)
    path = tmp_path_factory.mktemp("hear_model")
    AudioMosaicForPreTraining(config).save_pretrained(path)  # a pretraining folder, as released encoders are
    AudioMosaicFeatureExtractor.from_preset("speechcommands").save_pretrained(path)
    return path


def test_api_contract(model_dir):
    model = hear.load_model(str(model_dir))
    assert isinstance(model, torch.nn.Module)
    assert (model.sample_rate, model.scene_embedding_size, model.timestamp_embedding_size) == (16000, 32, 32)
    audio = torch.rand(3, 2 * 16000) * 2 - 1
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    assert embeddings.dtype == torch.float32 and embeddings.shape == (3, 12, 32)  # 198 frames -> 12 rows
    assert timestamps.shape == (3, 12)
    torch.testing.assert_close(timestamps.diff(dim=1), torch.full((3, 11), 160.0))  # milliseconds
    assert timestamps[0, 0].item() == pytest.approx(87.5)
    # Longer than the 1.28 s window: scene embeddings average the windows' pooled outputs.
    scene = hear.get_scene_embeddings(torch.rand(2, int(3.74 * 16000)) * 2 - 1, model)
    assert scene.dtype == torch.float32 and scene.shape == (2, 32)
    single = hear.get_scene_embeddings(audio[:1, :16000], model)
    fe = model.feature_extractor
    with torch.no_grad():
        expected = model.encoder(**fe(audio[0, :16000], sampling_rate=16000, return_tensors="pt")).pooler_output
    torch.testing.assert_close(single, expected)


def test_bad_input_is_named(model_dir):
    model = hear.load_model(str(model_dir))
    with pytest.raises(ValueError, match="2-D float tensor"):
        hear.get_scene_embeddings(torch.rand(16000), model)
    with pytest.raises(ValueError, match="folder or Hub id"):
        hear.load_model()


@pytest.mark.skipif(importlib.util.find_spec("hearvalidator") is None or importlib.util.find_spec("tensorflow") is None,
                    reason="hear-validator (and tensorflow) not installed")
def test_official_validator(model_dir):
    # The validator imports tensorflow before our module; importing triton (which torch's exporter/compiler loads
    # through transformers) after tensorflow segfaults, so triton is imported first when it is installed.
    preload = "import triton; " if importlib.util.find_spec("triton") else ""
    code = (f"import sys; {preload}from hearvalidator.validate import main; "
            f"sys.argv = ['hear-validator', 'modeling_audiomosaic.hear', '--model', {str(model_dir)!r}, "
            "'--device', 'cpu']; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Looks good!" in result.stdout
