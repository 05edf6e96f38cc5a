"""A converted classifier folder works with `pipeline("audio-classification")` on real audio, and loads with
`trust_remote_code=True` in a Python where this package cannot be imported."""

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile
import torch
from conftest import check_pipeline_resamples_dict
from transformers import AutoFeatureExtractor, pipeline

import modeling_audiomosaic  # noqa: F401 - registers the Auto classes
from modeling_audiomosaic import AudioMosaicForAudioClassification, resample
from modeling_audiomosaic.convert_official import convert


LABELS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory, fixtures_dir):
    root = tmp_path_factory.mktemp("pipeline")
    labels_csv = root / "labels.csv"
    with open(labels_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows([index, f"/m/{index}", name] for index, name in enumerate(LABELS))
    return convert(fixtures_dir / "classifier_sq.safetensors", root / "model", num_heads=4, labels=labels_csv)


@pytest.fixture(scope="module")
def clip_path(synthetic_clips):
    return sorted((synthetic_clips / "audio" / "low").glob("*.flac"))[0]


def expected_scores(folder, waveform):
    """Softmax of the model on the feature extractor's output, computed without the pipeline."""
    model = AudioMosaicForAudioClassification.from_pretrained(folder).eval()
    features = AutoFeatureExtractor.from_pretrained(folder)(waveform, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**features).logits.softmax(-1)[0]
    return {LABELS[i]: probabilities[i].item() for i in range(len(LABELS))}


def check(result, expected, top_k=5):
    assert [r["label"] for r in result] == sorted(expected, key=expected.get, reverse=True)[:top_k]
    for entry in result:
        assert entry["score"] == pytest.approx(expected[entry["label"]], abs=1e-4)


def test_converted_folder_contents(classifier_folder):
    names = {p.name for p in classifier_folder.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "configuration_audiomosaic.py",
            "modeling_audiomosaic.py", "feature_extraction_audiomosaic.py", "kaldi_audiomosaic.py"} <= names
    config = json.loads((classifier_folder / "config.json").read_text())
    assert config["model_type"] == "audiomosaic" and config["id2label"]["0"] == "yes"
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel", "AutoModelForAudioClassification"}
    preprocessor = json.loads((classifier_folder / "preprocessor_config.json").read_text())
    assert preprocessor["max_length"] == 128 and preprocessor["mean"] == pytest.approx(-6.845978)
    assert preprocessor["auto_map"]["AutoFeatureExtractor"].endswith("AudioMosaicFeatureExtractor")


def test_pipeline_numpy_file_and_resampled_dict(classifier_folder, clip_path):
    classifier = pipeline("audio-classification", model=str(classifier_folder))
    waveform, rate = soundfile.read(clip_path, dtype="float32")
    assert rate == 16000
    expected = expected_scores(classifier_folder, waveform)
    check(classifier(waveform, top_k=5), expected)
    check(classifier(waveform, top_k=3), expected, top_k=3)

    # `resample` is torchaudio's default resampling bit for bit (tests/test_feature_extraction.py).
    at_44k = resample(torch.from_numpy(waveform), 16000, 44100).numpy()
    back_to_16k = resample(torch.from_numpy(at_44k), 44100, 16000).numpy()
    check_pipeline_resamples_dict(classifier, at_44k, 44100,
                                  lambda result: check(result, expected_scores(classifier_folder, back_to_16k)),
                                  top_k=5)

    if shutil.which("ffmpeg") is None:
        pytest.skip("file paths in transformers' pipeline are decoded by the ffmpeg CLI, which is not installed")
    from_file = classifier(str(clip_path))
    assert [r["label"] for r in from_file] == [r["label"] for r in classifier(waveform)]


BLOCK_PACKAGE = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_audiomosaic", "audiomosaic_training"):
                raise ImportError(f"{name} is blocked: this process must not see the installed package")

    sys.meta_path.insert(0, Block())
    sys.path = [p for p in sys.path if p not in ("", REPO)]
    """
)

REMOTE_SCRIPT = BLOCK_PACKAGE + textwrap.dedent(
    """
    import numpy as np, torch
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification, pipeline

    folder = FOLDER
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    encoder = AutoModel.from_pretrained(folder, trust_remote_code=True)
    classifier = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
    extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
    waveform = np.load(WAVEFORM)
    features = extractor(waveform, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = classifier(**features).logits
    result = pipeline("audio-classification", model=folder, trust_remote_code=True)(waveform, top_k=1)
    assert "modeling_audiomosaic" not in sys.modules
    print(type(config).__module__, type(encoder).__name__, type(classifier).__module__, type(extractor).__name__)
    print("LOGITS", logits[0].tolist())
    print("TOP", result[0]["label"])
    """
)


def run_without_package(script: str, tmp_path) -> list[str]:
    """Run a BLOCK_PACKAGE script in a fresh Python (offline, own module cache) and return its stdout lines."""
    repo = str(modeling_audiomosaic.__file__).rsplit("/modeling_audiomosaic/", 1)[0]
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    completed = subprocess.run([sys.executable, "-c", script.replace("REPO", repr(repo))], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout.splitlines()


def test_trust_remote_code_without_the_package(classifier_folder, clip_path, tmp_path):
    waveform, _ = soundfile.read(clip_path, dtype="float32")
    np.save(tmp_path / "clip.npy", waveform)
    script = REMOTE_SCRIPT.replace("FOLDER", repr(str(classifier_folder)))
    lines = run_without_package(script.replace("WAVEFORM", repr(str(tmp_path / "clip.npy"))), tmp_path)
    modules = lines[-3].split()
    assert modules[0].startswith("transformers_modules") and modules[2].startswith("transformers_modules")
    assert modules[1] == "AudioMosaicModel" and modules[3] == "AudioMosaicFeatureExtractor"
    remote_logits = torch.tensor(json.loads(lines[-2].removeprefix("LOGITS ")))
    model = AudioMosaicForAudioClassification.from_pretrained(classifier_folder).eval()
    features = AutoFeatureExtractor.from_pretrained(classifier_folder)(waveform, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(remote_logits, model(**features).logits[0], atol=1e-5, rtol=1e-5)
    assert lines[-1].removeprefix("TOP ") in LABELS


AASIST_SCRIPT = BLOCK_PACKAGE + textwrap.dedent(
    """
    import torch
    from transformers import AutoModelForAudioClassification

    model = AutoModelForAudioClassification.from_pretrained(FOLDER, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(torch.load(INPUTS)).logits
    assert "modeling_audiomosaic" not in sys.modules and type(model.aasist).__module__.endswith("_aasist")
    print("LOGITS", logits.tolist())
    """
)


def test_aasist_sibling_file_travels_as_remote_code(tmp_path):
    """The AASIST back-end lives in its own file (modeling_audiomosaic_aasist.py): save_pretrained copies it beside
    the modeling file, and the folder loads with trust_remote_code=True without the package."""
    torch.manual_seed(0)
    config = modeling_audiomosaic.AudioMosaicConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                    intermediate_size=64, max_length=128, num_labels=2,
                                                    classifier_type="aasist")
    folder = tmp_path / "aasist"
    AudioMosaicForAudioClassification(config).eval().save_pretrained(folder)
    assert (folder / "modeling_audiomosaic_aasist.py").is_file()
    inputs = torch.randn(2, 128, 128)
    torch.save(inputs, tmp_path / "inputs.pt")
    script = AASIST_SCRIPT.replace("FOLDER", repr(str(folder))).replace("INPUTS", repr(str(tmp_path / "inputs.pt")))
    remote = torch.tensor(json.loads(run_without_package(script, tmp_path)[-1].removeprefix("LOGITS ")))
    with torch.no_grad():
        local = AudioMosaicForAudioClassification.from_pretrained(folder).eval()(inputs).logits
    torch.testing.assert_close(remote, local, atol=1e-5, rtol=1e-5)
