"""The package boundary: the base install (model, feature extractor, converter, `embed`, `classify`) works without
torchaudio and without the `[train]` extra, the training code is installed as `audiomosaic_training` (never as a
top-level `training`), and training commands without the extra say which extra to install."""

import json
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[1]
# Modules the base install must not need: the optional reference, and everything only the [train] extra brings.
NOT_IN_BASE_INSTALL = ("torchaudio", "torchcodec", "datasets", "accelerate", "evaluate", "audiomentations", "sklearn",
                       "audiomosaic_training", "training")

BLOCKER = textwrap.dedent(
    """
    import sys

    BLOCKED = set(filter(None, sys.argv[1].split(",")))

    class Hide:
        # Wraps each import finder so that the blocked top-level modules look uninstalled: `import` raises
        # ModuleNotFoundError and importlib.util.find_spec (what availability checks use) returns None.
        def __init__(self, finder):
            self.finder = finder

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED or not hasattr(self.finder, "find_spec"):
                return None
            return self.finder.find_spec(name, path, target)

        def __getattr__(self, attribute):
            return getattr(self.finder, attribute)

    sys.meta_path[:] = [Hide(finder) for finder in sys.meta_path]
    sys.argv = sys.argv[1:]
    """
)


def run_python(code: str, blocked: tuple[str, ...], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter whose imports of `blocked` top-level modules fail, from `cwd` (so the
    repository checkout is not on sys.path: only what is installed can be imported)."""
    script = BLOCKER + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script, ",".join(blocked), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_base_install_needs_no_torchaudio_nor_training_extra(tmp_path):
    """Feature extraction (44.1 kHz stereo input resampled), a converted-style folder, `embed` and `classify` on a file
    and on a CSV list, all with torchaudio, datasets, accelerate and the training package unimportable."""
    rng = np.random.default_rng(0)
    soundfile.write(tmp_path / "a.wav", (0.1 * rng.standard_normal((44100, 2))).astype(np.float32), 44100)
    soundfile.write(tmp_path / "b.flac", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
    (tmp_path / "list.csv").write_text("audio,label\na.wav,x\nb.flac,y\n")
    code = """
        import json, sys
        import numpy as np, torch
        import modeling_audiomosaic
        from modeling_audiomosaic import (AudioMosaicConfig, AudioMosaicFeatureExtractor,
                                          AudioMosaicForAudioClassification, cli)

        torch.manual_seed(0)
        config = AudioMosaicConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                   max_length=128, num_labels=3, id2label={0: "x", 1: "y", 2: "z"},
                                   label2id={"x": 0, "y": 1, "z": 2})
        AudioMosaicForAudioClassification(config).save_pretrained("model")
        AudioMosaicFeatureExtractor.from_preset("speechcommands").save_pretrained("model")
        features = AudioMosaicFeatureExtractor.from_preset("speechcommands")("a.wav", return_tensors="pt")
        assert features["input_values"].shape == (1, 128, 128), features["input_values"].shape
        cli.run(["embed", "a.wav", "list.csv", "--model", "model", "--output", "emb.npy", "--quiet"])
        predictions = cli.run(["classify", "list.csv", "--model", "model", "--format", "json", "--quiet"])
        loaded = [name for name in sys.modules if name.split(".")[0] in BLOCKED]
        print(json.dumps({"embeddings": np.load("emb.npy").shape, "predictions": len(predictions), "loaded": loaded}))
    """
    done = run_python(code, NOT_IN_BASE_INSTALL, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"embeddings": [3, 32], "predictions": 2, "loaded": []}


def test_training_code_is_installed_under_a_namespaced_name(tmp_path):
    code = """
        import importlib.util, json
        print(json.dumps({name: importlib.util.find_spec(name) is not None
                          for name in ("training", "audiomosaic_training", "audiomosaic_training.pretrain")}))
    """
    done = run_python(code, (), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"training": False, "audiomosaic_training": True,
                                       "audiomosaic_training.pretrain": True}


def test_training_command_without_the_extra_names_it(tmp_path):
    code = """
        from modeling_audiomosaic.cli import main
        main(["pretrain", "--help"])
    """
    done = run_python(code, ("accelerate",), tmp_path)
    assert done.returncode != 0
    assert "pip install 'modeling-audiomosaic[train]'" in done.stderr and "accelerate" in done.stderr
    assert "Traceback" not in done.stderr


def test_model_card_template_ships_with_the_package():
    template = (resources.files("modeling_audiomosaic") / "model_card.md").read_text(encoding="utf-8")
    assert template == (REPO / "model_card.md").read_text(encoding="utf-8")
    assert "{{ card_data }}" in template
