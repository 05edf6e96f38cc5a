"""The authors' Hub releases: Hub ids through a Hugging Face cache laid out here (offline), per-release labels and
problem types, `--all-releases` with model cards, upload through a stand-in API, and `--verify` against a release's
own `modeling.py`.

The stand-in releases have the authors' layout and naming (`config.json` with `model_class`, constructor arguments and
`audio_preprocessing`; `model.safetensors` with the authors' keys; `modeling.py`; `load_model.py`) with the tiny
parity-fixture weights. Their `modeling.py` is not the authors' (which is not available here): it builds our model
from the authors' keys, so `--verify` is tested for its plumbing (import only on request, forward on the same input,
threshold), not for numerical agreement with the authors' code — tests/test_parity.py does that against fixtures."""

import hashlib
import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, pipeline

from modeling_audiomosaic import AudioMosaicForAudioClassification, cli
from modeling_audiomosaic.convert_official import (
    ConversionError,
    convert,
    convert_all_releases,
    format_table,
    main,
)
from modeling_audiomosaic.releases import RELEASES, release_for


# The stand-in `modeling.py`: each authors' class name builds our model from the authors' keys on load_state_dict.
STAND_IN_MODELING = '''
import torch

from modeling_audiomosaic.convert_official import convert_state_dict, detect_classifier_type, infer_config

OFFSET = {offset}


class _StandIn(torch.nn.Module):
    def __init__(self, model_class, **kwargs):
        super().__init__()
        self.release_config = dict(kwargs, model_class=model_class)

    def load_state_dict(self, state_dict, strict=True):
        kind = detect_classifier_type(state_dict, self.release_config)
        self.ours = convert_state_dict(state_dict, infer_config(state_dict, self.release_config, kind)).eval()

    def forward(self, x):
        if self.release_config["model_class"] == "AudioMosaicPretrain":
            return {{"f": self.ours.forward_view(x[:, 0], view=0).pooled + OFFSET}}
        return self.ours(x[:, 0]).logits + OFFSET


class AudioMosaicClassifier(_StandIn):
    def __init__(self, **kwargs):
        super().__init__("AudioMosaicClassifier", **kwargs)


class AudioMosaicAttentiveProbe(_StandIn):
    def __init__(self, **kwargs):
        super().__init__("AudioMosaicAttentiveProbe", **kwargs)


class AudioMosaicPretrain(_StandIn):
    def __init__(self, **kwargs):
        super().__init__("AudioMosaicPretrain", **kwargs)
'''

NUM_CLASSES = {"as20k": 527, "as2m": 527, "linear-prob": 527, "spc1": 11, "spc2": 35, "esc": 50, "envsdd": 2}
PREPROCESSING = {"esc": (-6.6268077, 5.358466), "spc": (-6.845978, 5.5654526)}


def stand_in_weights(name: str, fixtures_dir) -> tuple[str, dict[str, torch.Tensor]]:
    """(model_class, authors'-key state dict) for a release, from the tiny fixtures, with the release's head size."""
    if name.endswith("pretrained"):
        return "AudioMosaicPretrain", load_file(fixtures_dir / "pretrain_sq.safetensors")
    state = load_file(fixtures_dir / "classifier_sq.safetensors")
    model_class = "AudioMosaicClassifier"
    if name.endswith("attentive"):
        state.update(load_file(fixtures_dir / "attentive_probe_sq_head.safetensors"))
        model_class = "AudioMosaicAttentiveProbe"
    num_classes = next(count for key, count in NUM_CLASSES.items() if key in name)
    generator = torch.Generator().manual_seed(len(name))
    state["head.weight"] = 0.5 * torch.randn(num_classes, state["head.weight"].shape[1], generator=generator)
    state["head.bias"] = torch.randn(num_classes, generator=generator)
    return model_class, state


def write_release(folder, name: str, fixtures_dir, offset: float = 0.0) -> None:
    """One release in the authors' layout (spec §10.2) with tiny weights."""
    model_class, state = stand_in_weights(name, fixtures_dir)
    mean, std = next((stats for key, stats in PREPROCESSING.items() if f"-{key}" in name), (-4.2677393, 4.5689974))
    config = {"model_class": model_class, "spec_size": [128, 128], "patch_stride": [16, 16], "depth": 2,
              "embed_dim": 64, "num_heads": 4, "pooling": "avg", "proj_bias": True,
              **({} if model_class == "AudioMosaicPretrain" else {"num_classes": state["head.weight"].shape[0]}),
              "audio_preprocessing": {"target_length": 128, "num_mel_bins": 128, "norm_mean": mean, "norm_std": std,
                                      "sample_rate": 16000, "frame_shift": 10.0}}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(state, folder / "model.safetensors")
    (folder / "modeling.py").write_text(STAND_IN_MODELING.format(offset=offset))
    (folder / "load_model.py").write_text("# the authors' loader (not used by the converter)\n")


def lay_out_cache(cache_dir, fixtures_dir, names, offset: float = 0.0) -> None:
    """A Hugging Face hub cache as snapshot_download leaves it: refs/main -> snapshots/<commit>/files."""
    for name in names:
        repo = cache_dir / f"models--hanxunh--{name}"
        commit = hashlib.sha1(name.encode()).hexdigest()
        write_release(repo / "snapshots" / commit, name, fixtures_dir, offset)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def release_cache(tmp_path_factory, fixtures_dir):
    cache = tmp_path_factory.mktemp("hub_cache")
    lay_out_cache(cache, fixtures_dir, RELEASES)
    return cache


class StandInApi:
    def __init__(self):
        self.created, self.uploads = [], []

    def create_repo(self, repo_id, exist_ok=False, repo_type=None):
        self.created.append(repo_id)

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None):
        self.uploads.append((repo_id, sorted(p.name for p in Path(folder_path).iterdir())))


def test_registry_covers_the_fourteen_releases():
    assert len(RELEASES) == 14
    assert release_for("hanxunh/AudioMosaic-vit-b16-finetune-esc-split3").reported == "accuracy 97.00 % (fold 3)"
    assert release_for("some/other-model") is None


def test_all_releases_offline_with_cards_and_upload(release_cache, tmp_path, offline):
    api = StandInApi()
    rows = convert_all_releases(tmp_path / "out", cache_dir=release_cache, verify=True, push_to="me", api=api)
    print("\n" + format_table(rows))  # the closing-note table (pytest -s)
    assert [row["release"] for row in rows] == list(RELEASES)
    assert all(row["parity"].startswith("max |error|") for row in rows), [r["parity"] for r in rows]
    by_name = {row["release"]: row for row in rows}
    assert by_name["AudioMosaic-vit-b16-finetune-as20k"]["labels"].startswith("527 sigmoid: Speech, Male speech")
    assert by_name["AudioMosaic-vit-b16-finetune-esc-split1"]["labels"].startswith("50 softmax: dog, rooster")
    assert by_name["AudioMosaic-vit-b16-finetune-spc1"]["labels"].startswith("11 sigmoid: yes, no")
    assert by_name["AudioMosaic-vit-b16-finetune-spc2"]["labels"].startswith("35 sigmoid: backward, follow")
    assert by_name["AudioMosaic-vit-b16-finetune-envsdd-ata"]["labels"].startswith("2 softmax: LABEL_0, LABEL_1")
    assert "attentive_probe" in by_name["AudioMosaic-vit-b16-linear-prob-as20k-attentive"]["class"]
    assert by_name["AudioMosaic-vit-b16-pretrained"]["class"] == "AudioMosaicForPreTraining"
    assert len(api.uploads) == 14 and api.created[0] == "me/AudioMosaic-vit-b16-pretrained"
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} <= set(api.uploads[1][1])

    card = (tmp_path / "out" / "AudioMosaic-vit-b16-finetune-as20k" / "README.md").read_text()
    assert "mAP 42.53" in card and "not re-measured" in card and "sigmoid" in card
    assert "base_model: hanxunh/AudioMosaic-vit-b16-finetune-as20k" in card and "@inproceedings" in card
    assert 'pipeline("audio-classification", model="me/AudioMosaic-vit-b16-finetune-as20k")' in card
    encoder_card = (tmp_path / "out" / "AudioMosaic-vit-b16-pretrained" / "README.md").read_text()
    assert "AutoModel.from_pretrained" in encoder_card and "pipeline(" not in encoder_card
    spc = AutoConfig.from_pretrained(tmp_path / "out" / "AudioMosaic-vit-b16-finetune-spc1")
    assert spc.problem_type == "multi_label_classification"  # the authors trained SPC with BCE on multi-hot labels
    preprocessor = json.loads((tmp_path / "out" / "AudioMosaic-vit-b16-finetune-esc-split2" /
                               "preprocessor_config.json").read_text())
    assert (preprocessor["mean"], preprocessor["std"]) == (-6.6268077, 5.358466)


def test_pipeline_names_audioset_and_esc50(release_cache, tmp_path, offline):
    waveform = 0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(1)).numpy()
    audioset = convert("hanxunh/AudioMosaic-vit-b16-finetune-as20k", tmp_path / "as", cache_dir=release_cache)
    scores = pipeline("audio-classification", model=str(audioset))(waveform, top_k=None)
    model = AudioMosaicForAudioClassification.from_pretrained(audioset)
    assert len(scores) == 527 and sum(entry["score"] for entry in scores) > 1.5  # sigmoid, not a distribution
    assert {"Speech", "Field recording", "Dog"} <= {entry["label"] for entry in scores}
    print("\nAudioSet stand-in top 3 of 527 sigmoid scores:", scores[:3])
    assert model.config.id2label[0] == "Speech" and model.config.id2label[526] == "Field recording"

    esc = convert("hanxunh/AudioMosaic-vit-b16-finetune-esc-split1", tmp_path / "esc", cache_dir=release_cache)
    scores = pipeline("audio-classification", model=str(esc))(waveform, top_k=None)
    assert len(scores) == 50 and sum(entry["score"] for entry in scores) == pytest.approx(1.0, abs=1e-4)
    assert {"dog", "hand_saw", "sea_waves"} <= {entry["label"] for entry in scores}
    print("\nESC-50 stand-in top 3:", scores[:3])  # the closing-note figure (pytest -s)


def test_verify_fails_above_tolerance_and_writes_nothing(tmp_path, fixtures_dir, offline):
    name = "AudioMosaic-vit-b16-finetune-esc-split4"
    lay_out_cache(tmp_path / "cache", fixtures_dir, [name], offset=1e-3)
    with pytest.raises(ConversionError, match=r"max \|error\| 0\.001 .* exceeds 0\.0001"):
        convert(f"hanxunh/{name}", tmp_path / "out", cache_dir=tmp_path / "cache", verify=True)
    assert not (tmp_path / "out").exists()
    # Without --verify the release's code is never imported: a modeling.py that raises on import does not matter.
    for modeling in (tmp_path / "cache").rglob("modeling.py"):
        modeling.write_text("raise RuntimeError('the release code was executed')\n")
    assert convert(f"hanxunh/{name}", tmp_path / "out", cache_dir=tmp_path / "cache").is_dir()
    with pytest.raises(RuntimeError, match="release code was executed"):
        convert(f"hanxunh/{name}", tmp_path / "out2", cache_dir=tmp_path / "cache", verify=True)


def test_missing_hub_id_offline_and_unknown_release(tmp_path, fixtures_dir, offline, caplog, capsys):
    # Offline and not cached: one clear error naming the id and why, not huggingface_hub's LocalEntryNotFoundError.
    with pytest.raises(ValueError, match="as a Hub id it is not in the local Hub cache and the Hub cannot be reached"):
        convert("hanxunh/AudioMosaic-vit-b16-finetune-as2m", tmp_path / "x", cache_dir=tmp_path / "empty")
    assert not (tmp_path / "x").exists()
    # A release folder the registry does not know converts from its config, with a warning naming what is missing.
    write_release(tmp_path / "my-release", "custom-spc2", fixtures_dir)
    with caplog.at_level("WARNING"):
        main([str(tmp_path / "my-release"), str(tmp_path / "custom")])
    assert "could not fill in id2label" in caplog.text
    assert "35 softmax: LABEL_0, LABEL_1" in capsys.readouterr().out
    # A local folder named after a release is recognised; without audio_preprocessing its preset applies.
    name = "AudioMosaic-vit-b16-finetune-esc-split5"
    write_release(tmp_path / name, name, fixtures_dir)
    release_config = json.loads((tmp_path / name / "config.json").read_text())
    del release_config["audio_preprocessing"]
    (tmp_path / name / "config.json").write_text(json.dumps(release_config))
    out = convert(tmp_path / name, tmp_path / "esc")
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert (preprocessor["mean"], preprocessor["std"]) == (-6.6268077, 5.358466)
    assert AutoConfig.from_pretrained(out).id2label[49] == "hand_saw"


def test_command_line_reports_failed_releases_and_refuses_mixed_arguments(tmp_path, fixtures_dir, offline, capsys):
    with pytest.raises(SystemExit):
        cli.run(["convert-official", "--all-releases", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "empty")])
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "14 of 14 releases failed" in captured.err
    with pytest.raises(SystemExit):
        cli.run(["convert-official", "src", "out", "--all-releases", str(tmp_path / "out")])
    assert "give no SRC / OUT_DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.run(["convert-official", str(fixtures_dir / "classifier_sq.safetensors"), str(tmp_path / "a"), "--verify"])
    assert "needs an authors' release folder" in capsys.readouterr().err
