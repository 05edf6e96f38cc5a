"""Bad and odd inputs at the edges of `embed`, `classify`, `norm-stats`, `export-onnx`, `convert-official`, the HEAR
module and the Python functions behind them, as a new user makes them: each ends with one clear line (exit status 2
for an option argparse refuses, 1 for what only Python can find), no traceback without --debug, and nothing written.

Every model, checkpoint and clip is generated here (tiny, 32 wide); nothing reaches the Hub (HF_HUB_OFFLINE=1)."""

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file, save_file

from modeling_audiomosaic import (
    AudioMosaicConfig,
    AudioMosaicFeatureExtractor,
    AudioMosaicForAudioClassification,
    AudioMosaicForPreTraining,
    AudioMosaicModel,
    cli,
    hear,
)
from modeling_audiomosaic.convert_official import convert
from modeling_audiomosaic.embeddings import SegmentScores, classify_segments, frame_embeddings, timelines_to_csv
from modeling_audiomosaic.norm_stats import cached_norm_stats, compute_norm_stats, subsample
from modeling_audiomosaic.onnx_export import export_onnx, load_for_export
from modeling_audiomosaic.validation import load_pretrained


TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_length=128)
# Our key -> the authors' key, to write a checkpoint in the authors' layout from a tiny classifier.
OURS_TO_OFFICIAL = [
    (r"^audiomosaic\.embeddings\.cls_token$", "cls_token"),
    (r"^audiomosaic\.embeddings\.position_embeddings$", "pos_embed"),
    (r"^audiomosaic\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^audiomosaic\.embeddings\.patch_embeddings\.layernorm\.", "patch_embed.norm."),
    (r"^audiomosaic\.embeddings\.pre_layernorm\.", "norm_pre."),
    (r"^audiomosaic\.layers\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^audiomosaic\.layers\.(\d+)\.attention\.qkv\.", r"blocks.\1.attn.qkv."),
    (r"^audiomosaic\.layers\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (r"^audiomosaic\.layers\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^audiomosaic\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
    (r"^audiomosaic\.fc_norm\.", "fc_norm."),
    (r"^classifier\.", "head."),
]


def official_state_dict(model: AudioMosaicForAudioClassification) -> dict[str, torch.Tensor]:
    state = {}
    for key, value in model.state_dict().items():
        pattern, replacement = next((p, r) for p, r in OURS_TO_OFFICIAL if re.match(p, key))
        state[re.sub(pattern, replacement, key)] = value.clone()
    return state


def model_folder(root: Path, name: str, model_class=AudioMosaicModel, preprocessor: dict | None = None,
                 **config) -> Path:
    torch.manual_seed(0)
    path = root / name
    model_class(AudioMosaicConfig(**{**TINY, **config})).save_pretrained(path)
    extractor = AudioMosaicFeatureExtractor.from_preset("speechcommands")
    extractor.save_pretrained(path)
    if preprocessor is not None:
        saved = json.loads((path / "preprocessor_config.json").read_text())
        (path / "preprocessor_config.json").write_text(json.dumps({**saved, **preprocessor}))
    return path


def config_only(root: Path, name: str, config: dict | str, preprocessor: Path | None = None) -> Path:
    """A folder with this config.json (and a copy of `preprocessor`), to which a case adds its weights."""
    (root / name).mkdir()
    (root / name / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if preprocessor is not None:
        shutil.copy(preprocessor, root / name)
    return root / name


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    """Every input the cases below use, by name."""
    root = tmp_path_factory.mktemp("edges")
    p = {"root": root}
    p["cls"] = model_folder(root, "cls", AudioMosaicForAudioClassification, num_labels=3)
    p["enc"] = model_folder(root, "enc")
    p["pre"] = model_folder(root, "pre", AudioMosaicForPreTraining)
    p["rate0"] = model_folder(root, "rate0", preprocessor={"sampling_rate": 0})
    p["std0"] = model_folder(root, "std0", preprocessor={"std": 0.0})
    p["badpre"] = model_folder(root, "badpre")
    (p["badpre"] / "preprocessor_config.json").write_text("{not json")
    p["llama"] = config_only(root, "llama", {"model_type": "llama", "hidden_size": 32})
    p["ltu"] = config_only(root, "ltu", {"model_type": "audiomosaic_ltu"})
    p["sae"] = config_only(root, "sae", {"d_in": 32, "d_sae": 256})
    p["badjson"] = config_only(root, "badjson", "{not json")
    p["listjson"] = config_only(root, "listjson", "[1, 2]")
    encoder_config, preprocessor = (p["enc"] / "config.json").read_text(), p["enc"] / "preprocessor_config.json"
    p["bare"] = config_only(root, "bare", encoder_config, preprocessor)
    p["evil"] = config_only(root, "evil", encoder_config, preprocessor)
    torch.save({"weight": argparse.Namespace(code="runs on load")}, p["evil"] / "pytorch_model.bin")
    weights = load_file(p["enc"] / "model.safetensors")
    p["trunc"] = config_only(root, "trunc", encoder_config, preprocessor)
    (p["trunc"] / "model.safetensors").write_bytes((p["enc"] / "model.safetensors").read_bytes()[:3000])
    p["half"] = config_only(root, "half", encoder_config, preprocessor)
    save_file({k: v for k, v in weights.items() if not k.startswith("layers.1.")}, p["half"] / "model.safetensors")
    p["shape"] = config_only(root, "shape", encoder_config, preprocessor)
    save_file({**weights, "fc_norm.weight": torch.ones(5)}, p["shape"] / "model.safetensors")
    p["empty"] = root / "empty"
    p["empty"].mkdir()
    p["afile"] = root / "afile.txt"
    p["afile"].write_text("not a folder")

    rng = np.random.default_rng(0)
    for name, samples in (("clip", 16000), ("short", 800), ("tiny", 160)):
        p[name] = root / f"{name}.wav"
        soundfile.write(p[name], (0.1 * rng.standard_normal(samples)).astype(np.float32), 16000)
    p["nan"] = root / "nan.wav"
    soundfile.write(p["nan"], np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    p["badwav"] = root / "bad.wav"
    p["badwav"].write_text("not audio")

    torch.manual_seed(0)
    state = official_state_dict(AudioMosaicForAudioClassification(AudioMosaicConfig(**TINY, num_labels=3)))
    p["official"] = root / "official.safetensors"
    save_file(state, p["official"])
    p["official_pt"] = root / "official.pt"
    torch.save(state, p["official_pt"])
    p["trunc_pt"] = root / "trunc.pt"
    p["trunc_pt"].write_bytes(p["official_pt"].read_bytes()[:500])
    p["trunc_st"] = root / "trunc.safetensors"
    p["trunc_st"].write_bytes(p["official"].read_bytes()[:500])
    p["evil_pt"] = root / "evil.pt"
    torch.save({"cls_token": argparse.Namespace(code="runs on load")}, p["evil_pt"])
    p["list_pt"] = root / "list.pt"
    torch.save([torch.zeros(2)], p["list_pt"])
    p["labels_bad"] = root / "labels_bad.csv"
    p["labels_bad"].write_text("index,mid,display_name\nfirst,/m/0,a\n")
    p["release_bad_config"] = root / "release_bad_config"
    p["release_bad_config"].mkdir()
    save_file(state, p["release_bad_config"] / "model.safetensors")
    (p["release_bad_config"] / "config.json").write_text("{truncated")
    return p


def snapshot(*roots: Path) -> dict[str, int]:
    return {str(path): path.stat().st_mtime_ns for root in roots for path in sorted(root.rglob("*"))}


def assert_one_line(text: str, *expected: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text[-3000:]}"
    assert "Traceback" not in text
    for part in expected:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    return lines[0]


# ----------------------------------------------------------------------------------------------------------------------
# Command line: (argv with {name} for the inputs above and {out} for a fresh output folder, exit status, text)
# ----------------------------------------------------------------------------------------------------------------------

CLI_CASES = {
    # export-onnx
    "onnx-missing-path": (["export-onnx", "{root}/missing", "{out}/onnx"], 2, "missing does not exist"),
    "onnx-hub-id-offline": (["export-onnx", "no-such-model-here", "{out}/onnx"], 2,
                            "not in the local Hub cache and the Hub cannot be reached (offline)"),
    "onnx-model-is-a-file": (["export-onnx", "{afile}", "{out}/onnx"], 2, "is a file; expected a model folder"),
    "onnx-folder-without-config": (["export-onnx", "{empty}", "{out}/onnx"], 2, "has no config.json"),
    "onnx-llama-folder": (["export-onnx", "{llama}", "{out}/onnx"], 2, "is a llama folder"),
    "onnx-ltu-folder": (["export-onnx", "{ltu}", "{out}/onnx"], 2, "is an LTU model folder"),
    "onnx-sae-folder": (["export-onnx", "{sae}", "{out}/onnx"], 2, "is a sparse-autoencoder folder"),
    "onnx-corrupt-config": (["export-onnx", "{badjson}", "{out}/onnx"], 2, "is corrupt or not a JSON file"),
    "onnx-encoder-as-classifier": (["export-onnx", "{enc}", "{out}/onnx", "--task", "classifier"], 1,
                                   "is an AudioMosaic encoder folder; expected an AudioMosaic classifier folder"),
    "onnx-pretraining-as-classifier": (["export-onnx", "{pre}", "{out}/onnx", "--task", "classifier"], 1,
                                       "expected an AudioMosaic classifier folder"),
    "onnx-opset-3": (["export-onnx", "{cls}", "{out}/onnx", "--opset", "3"], 2, "--opset: expected an integer >= 18"),
    "onnx-opset-text": (["export-onnx", "{cls}", "{out}/onnx", "--opset", "latest"], 2, "--opset"),
    "onnx-opset-future": (["export-onnx", "{cls}", "{out}/onnx", "--opset", "1000"], 1, "`opset`: expected"),
    "onnx-task-unknown": (["export-onnx", "{cls}", "{out}/onnx", "--task", "decoder"], 2, "--task"),
    "onnx-output-is-a-file": (["export-onnx", "{cls}", "{afile}"], 2, "is an existing file; expected a folder"),
    "onnx-weights-pickle-code": (["export-onnx", "{evil}", "{out}/onnx"], 1,
                                 "pytorch_model.bin needs code to be unpickled, which is refused"),
    "onnx-truncated-weights": (["export-onnx", "{trunc}", "{out}/onnx"], 1, "model.safetensors is corrupt"),
    "onnx-weights-missing-a-block": (["export-onnx", "{half}", "{out}/onnx"], 1, "lacks 12 weight(s)"),
    "onnx-weights-of-another-shape": (["export-onnx", "{shape}", "{out}/onnx"], 1,
                                      "do not fit its config.json, e.g. fc_norm.weight"),
    "onnx-no-weights": (["export-onnx", "{bare}", "{out}/onnx"], 1, "no file named model.safetensors"),
    "onnx-preprocessor-rate-0": (["export-onnx", "{rate0}", "{out}/onnx"], 1, "`sampling_rate` must be a positive"),
    # embed
    "embed-frames-50ms": (["embed", "{short}", "--model", "{cls}", "--frames", "--output", "{out}/f.npy"], 1,
                          "too short for frame embeddings"),
    "embed-frames-hop-not-a-patch": (["embed", "{clip}", "--model", "{enc}", "--frames", "--window_hop", "10",
                                      "--output", "{out}/f.npy"], 1, "multiple of the patch size"),
    "embed-frames-length-not-a-patch": (["embed", "{clip}", "--model", "{enc}", "--frames", "--max_length", "100",
                                         "--output", "{out}/f.npy"], 1, "multiple of the patch size (16)"),
    "embed-output-suffix": (["embed", "{clip}", "--model", "{enc}", "--output", "{out}/e.txt"], 1,
                            "--output must end in .npy or .safetensors"),
    "embed-output-is-a-folder": (["embed", "{clip}", "--model", "{enc}", "--output", "{empty}"], 2,
                                 "is an existing folder; expected a file name"),
    "embed-output-below-a-file": (["embed", "{clip}", "--model", "{enc}", "--output", "{afile}/e.npy"], 2,
                                  "is a file, not a folder"),
    "embed-batch-size-0": (["embed", "{clip}", "--model", "{enc}", "--batch_size", "0", "--output", "{out}/e.npy"],
                           2, "--batch_size: expected an integer >= 1, got '0'"),
    "embed-window-hop-0": (["embed", "{clip}", "--model", "{enc}", "--window_hop", "0", "--output", "{out}/e.npy"],
                           2, "--window_hop"),
    "embed-max-length-negative": (["embed", "{clip}", "--model", "{enc}", "--max_length", "-5", "--output",
                                   "{out}/e.npy"], 2, "--max_length"),
    "embed-max-length-too-long": (["embed", "{clip}", "--model", "{enc}", "--max_length", "256", "--output",
                                   "{out}/e.npy"], 1, "longer than the model's max_length 128"),
    "embed-layer-out-of-range": (["embed", "{clip}", "--model", "{enc}", "--layers", "99", "--output", "{out}/e.npy"],
                                 1, "--layers: 99 is out of range"),
    "embed-layers-not-numbers": (["embed", "{clip}", "--model", "{enc}", "--layers", "last", "--output",
                                  "{out}/e.npy"], 1, "--layers: expected"),
    "embed-llama-model": (["embed", "{clip}", "--model", "{llama}", "--output", "{out}/e.npy"], 2,
                          "is a llama folder"),
    "embed-missing-model": (["embed", "{clip}", "--model", "{root}/nothing", "--output", "{out}/e.npy"], 2,
                            "nothing does not exist"),
    "embed-not-audio": (["embed", "{badwav}", "--model", "{enc}", "--output", "{out}/e.npy"], 1,
                        "Could not decode audio"),
    "embed-10ms-clip": (["embed", "{tiny}", "--model", "{enc}", "--output", "{out}/e.npy"], 1, "is too short"),
    "embed-nan-clip": (["embed", "{nan}", "--model", "{enc}", "--output", "{out}/e.npy"], 1, "non-finite"),
    "embed-folder-without-audio": (["embed", "{empty}", "--model", "{enc}", "--output", "{out}/e.npy"], 1,
                                   "holds no audio files"),
    "embed-preprocessor-rate-0": (["embed", "{clip}", "--model", "{rate0}", "--output", "{out}/e.npy"], 1,
                                  "preprocessor_config.json: cannot load its feature extractor"),
    "embed-preprocessor-std-0": (["embed", "{clip}", "--model", "{std0}", "--output", "{out}/e.npy"], 1,
                                 "`std` must be positive"),
    "embed-preprocessor-corrupt": (["embed", "{clip}", "--model", "{badpre}", "--output", "{out}/e.npy"], 1,
                                   "preprocessor_config.json"),
    "embed-unknown-device": (["embed", "{clip}", "--model", "{enc}", "--device", "tpu", "--output", "{out}/e.npy"],
                             1, "Invalid `device` 'tpu'"),
    # classify
    "classify-timeline-top-k-0": (["classify", "{clip}", "--model", "{cls}", "--timeline", "--top_k", "0"], 2,
                                  "--top_k: expected an integer >= 1, got '0'"),
    "classify-top-k-negative": (["classify", "{clip}", "--model", "{cls}", "--top_k", "-3"], 2, "--top_k"),
    "classify-top-k-text": (["classify", "{clip}", "--model", "{cls}", "--top_k", "all"], 2, "--top_k"),
    "classify-encoder-folder": (["classify", "{clip}", "--model", "{enc}"], 2,
                                "is an AudioMosaic encoder folder; expected an AudioMosaic classifier folder"),
    "classify-pretraining-folder": (["classify", "{clip}", "--model", "{pre}"], 2,
                                    "expected an AudioMosaic classifier folder"),
    "classify-plot-without-timeline": (["classify", "{clip}", "--model", "{cls}", "--plot", "{out}/t.png"], 1,
                                       "--plot draws a timeline"),
    "classify-plot-not-png": (["classify", "{clip}", "--model", "{cls}", "--timeline", "--plot", "{out}/t.jpg"], 1,
                              "--plot writes a PNG"),
    "classify-output-is-a-folder": (["classify", "{clip}", "--model", "{cls}", "--output", "{empty}"], 2,
                                    "is an existing folder"),
    "classify-window-hop-too-long": (["classify", "{clip}", "--model", "{cls}", "--window_hop", "9999"], 1,
                                     "must not exceed `max_length`"),
    "classify-output-is-an-input": (["classify", "{clip}", "--model", "{cls}", "--output", "{clip}"], 1,
                                    "--output {clip} is one of the inputs"),
    "classify-max-length-below-a-patch": (["classify", "{clip}", "--model", "{cls}", "--max_length", "8"], 1,
                                          "--max_length 8 is shorter than one patch of the model (16 frames)"),
    "onnx-into-the-model-folder": (["export-onnx", "{cls}", "{cls}"], 1, "is the model folder itself"),
    "convert-into-the-release-folder": (["convert-official", "{release_bad_config}", "{release_bad_config}"], 1,
                                        "is the checkpoint's own folder"),
    "classify-format-unknown": (["classify", "{clip}", "--model", "{cls}", "--format", "xml"], 2, "--format"),
    "classify-missing-input": (["classify", "{root}/missing.wav", "--model", "{cls}"], 1, "does not exist"),
    # norm-stats
    "norm-stats-batch-size-0": (["norm-stats", "{clip}", "--batch_size", "0"], 2,
                                "--batch_size: expected an integer >= 1, got '0'"),
    "norm-stats-output-is-a-file": (["norm-stats", "{clip}", "--output_dir", "{afile}"], 2,
                                    "is an existing file; expected a folder to write into"),
    "norm-stats-output-below-a-file": (["norm-stats", "{clip}", "--output_dir", "{afile}/fe"], 2,
                                       "is a file, not a folder"),
    "norm-stats-max-samples-0": (["norm-stats", "{clip}", "--max_samples", "0"], 2, "--max_samples"),
    "norm-stats-max-samples-text": (["norm-stats", "{clip}", "--max_samples", "ten"], 2, "--max_samples"),
    "norm-stats-max-length-0": (["norm-stats", "{clip}", "--max_length", "0"], 2, "--max_length"),
    "norm-stats-missing-input": (["norm-stats", "{root}/missing", "--output_dir", "{out}/fe"], 1, "does not exist"),
    "norm-stats-not-audio": (["norm-stats", "{badwav}", "--output_dir", "{out}/fe"], 1, "Could not decode audio"),
    # convert-official
    "convert-output-is-a-file": (["convert-official", "{official}", "{afile}"], 2, "is an existing file"),
    "convert-hub-id-offline": (["convert-official", "someone/no-such-release", "{out}/c"], 1,
                               "not in the local Hub cache and the Hub cannot be reached (offline)"),
    "convert-missing-file": (["convert-official", "{root}/missing.pt", "{out}/c"], 1, "does not exist"),
    "convert-truncated-pickle": (["convert-official", "{trunc_pt}", "{out}/c"], 1,
                                 "trunc.pt is corrupt or not a PyTorch state-dict file"),
    "convert-truncated-safetensors": (["convert-official", "{trunc_st}", "{out}/c"], 1,
                                      "trunc.safetensors is corrupt or not a safetensors checkpoint file"),
    "convert-pickled-code": (["convert-official", "{evil_pt}", "{out}/c"], 1,
                             "needs code to be unpickled, which is refused"),
    "convert-pickled-list": (["convert-official", "{list_pt}", "{out}/c"], 1, "does not hold a flat dict of tensors"),
    "convert-unsupported-file": (["convert-official", "{afile}", "{out}/c"], 1, "Unsupported checkpoint file"),
    "convert-folder-without-weights": (["convert-official", "{empty}", "{out}/c"], 1, "has no model.safetensors"),
    "convert-release-config-corrupt": (["convert-official", "{release_bad_config}", "{out}/c"], 1,
                                       "is corrupt or not a JSON release config file"),
    "convert-our-own-folder": (["convert-official", "{cls}", "{out}/c"], 1, "is already a transformers AudioMosaic"),
    "convert-num-heads-0": (["convert-official", "{official}", "{out}/c", "--num-heads", "0"], 2, "--num-heads"),
    "convert-num-heads-not-dividing": (["convert-official", "{official}", "{out}/c", "--num-heads", "5"], 1,
                                       "5 attention heads (--num-heads) do not divide"),
    "convert-probe-layer-negative": (["convert-official", "{official}", "{out}/c", "--probe-layer", "-1"], 2,
                                     "--probe-layer"),
    "convert-max-length-not-a-patch": (["convert-official", "{official}", "{out}/c", "--max-length", "100"], 1,
                                       "--max-length 100 is not a multiple of the patch size 16"),
    "convert-labels-missing": (["convert-official", "{official}", "{out}/c", "--labels", "{root}/labels.csv"], 2,
                               "labels.csv does not exist"),
    "convert-all-releases-into-a-file": (["convert-official", "--all-releases", "{afile}"], 2, "is an existing file"),
    "convert-nothing-given": (["convert-official"], 1, "give SRC and OUT_DIR"),
    "convert-revision-of-a-file": (["convert-official", "{official}", "{out}/c", "--revision", "main"], 1,
                                   "--revision applies to Hub ids"),
    "convert-push-without-all-releases": (["convert-official", "{official}", "{out}/c", "--push-to", "me"], 1,
                                          "--push-to applies to --all-releases"),
}


def fill(argv: list[str], paths: dict[str, Path], out: Path) -> list[str]:
    return [part.format(out=out, **paths) for part in argv]


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_command_line(case, paths, tmp_path, capsys, monkeypatch):
    argv, status, expected = CLI_CASES[case]
    argv = fill(argv, paths, tmp_path)
    monkeypatch.delenv("AUDIOMOSAIC_DEBUG", raising=False)
    before = snapshot(paths["root"], tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, *(["--quiet"] if argv[0] in ("embed", "classify", "norm-stats", "export-onnx") else [])])
    captured = capsys.readouterr()
    assert exit_info.value.code == status, captured.err
    line = assert_one_line(captured.err, f"audiomosaic {argv[0]}: error: ", expected.format(**paths))
    assert captured.out == ""  # no partial table or statistics either
    assert snapshot(paths["root"], tmp_path) == before, f"something was written: {line}"


def test_debug_shows_the_traceback_of_a_python_error(paths, tmp_path, capsys):
    with pytest.raises(ValueError, match="too short for frame embeddings"):
        cli.main(["--debug", "embed", str(paths["short"]), "--model", str(paths["enc"]), "--frames", "--output",
                  str(tmp_path / "f.npy"), "--quiet"])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, status, expected", [
    (["export-onnx", "{enc}", "{out}/onnx", "--opset", "3"], 2, "--opset: expected an integer >= 18"),
    (["embed", "{short}", "--model", "{enc}", "--frames", "--output", "{out}/f.npy", "--quiet"], 1,
     "too short for frame embeddings"),
], ids=["argparse-error", "python-error"])
def test_the_console_script(argv, status, expected, paths, tmp_path):
    """The installed `audiomosaic` script (or `python -m modeling_audiomosaic.cli` where it is not on PATH)."""
    script = shutil.which("audiomosaic")
    command = [script] if script else [sys.executable, "-m", "modeling_audiomosaic.cli"]
    result = subprocess.run([*command, *fill(argv, paths, tmp_path)], capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == status
    assert_one_line(result.stderr, expected)
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------------------------------
# HEAR module
# ----------------------------------------------------------------------------------------------------------------------

LOAD_CASES = {
    "empty-string": ("", ValueError, "needs an AudioMosaic folder or Hub id"),
    "none": (None, ValueError, "needs an AudioMosaic folder or Hub id"),
    "a-number": (3, ValueError, "got int"),
    "a-model-object": ("<model>", ValueError, "got AudioMosaicModel"),
    "missing-path": ("{root}/missing", ValueError, "missing does not exist"),
    "hub-id-offline": ("someone/no-such-model", ValueError, "not in the local Hub cache"),
    "audio-file": ("{clip}", ValueError, "is a file; expected a model folder"),
    "empty-folder": ("{empty}", ValueError, "has no config.json"),
    "llama-folder": ("{llama}", ValueError, "is a llama folder"),
    "ltu-folder": ("{ltu}", ValueError, "is an LTU model folder"),
    "sae-folder": ("{sae}", ValueError, "is a sparse-autoencoder folder"),
    "corrupt-config": ("{badjson}", ValueError, "is corrupt or not a JSON file"),
    "config-not-an-object": ("{listjson}", ValueError, "expected a JSON object"),
    "weights-pickle-code": ("{evil}", ValueError, "needs code to be unpickled"),
    "truncated-weights": ("{trunc}", ValueError, "is corrupt or not an AudioMosaic encoder weights file"),
    "weights-missing-a-block": ("{half}", ValueError, "lacks 12 weight(s) the model needs"),
    "weights-of-another-shape": ("{shape}", ValueError, "do not fit its config.json"),
    "no-weights": ("{bare}", OSError, "no file named model.safetensors"),
    "preprocessor-rate-0": ("{rate0}", ValueError, "`sampling_rate` must be a positive integer, got 0"),
    "preprocessor-std-0": ("{std0}", ValueError, "`std` must be positive"),
    "preprocessor-corrupt": ("{badpre}", ValueError, "preprocessor_config.json: cannot load"),
}


@pytest.mark.parametrize("case", sorted(LOAD_CASES))
def test_hear_load_model(case, paths):
    reference, error, expected = LOAD_CASES[case]
    if reference == "<model>":
        reference = AudioMosaicModel(AudioMosaicConfig(**TINY))
    elif isinstance(reference, str):
        reference = reference.format(**paths)
    before = snapshot(paths["root"])
    with pytest.raises(error) as info:
        hear.load_model(reference)
    assert_one_line(str(info.value), expected)
    assert snapshot(paths["root"]) == before


@pytest.fixture(scope="module")
def hear_model(paths):
    return hear.load_model(str(paths["pre"]))


def _audio(kind: str):
    noise = torch.rand(2, 16000) * 0.2 - 0.1
    return {
        "numpy": noise.numpy(),
        "list": noise.tolist(),
        "1-d": noise[0],
        "3-d": noise[None],
        "int16": (noise * 2**15).short(),
        "bool": noise > 0,
        "complex": noise.to(torch.complex64),
        "no-sounds": torch.zeros(0, 16000),
        "no-samples": torch.zeros(2, 0),
        "nan": noise.clone().index_put_((torch.tensor([1]), torch.tensor([5])), torch.tensor(float("nan"))),
        "inf": torch.full((1, 16000), float("inf")),
        "10-ms": noise[:, :160],
    }[kind]


AUDIO_CASES = {
    "numpy": "2-D float tensor", "list": "got list", "1-d": "of shape (16000,)", "3-d": "of shape (1, 2, 16000)",
    "int16": "got dtype torch.int16", "bool": "got dtype torch.bool", "complex": "got dtype torch.complex64",
    "no-sounds": "at least one sound", "no-samples": "at least one sound and one sample", "nan": "non-finite",
    "inf": "non-finite", "10-ms": "is too short",
}


@pytest.mark.parametrize("function", ["get_scene_embeddings", "get_timestamp_embeddings"])
@pytest.mark.parametrize("kind", sorted(AUDIO_CASES))
def test_hear_bad_audio(kind, function, hear_model):
    with pytest.raises(ValueError) as info:
        getattr(hear, function)(_audio(kind), hear_model)
    assert_one_line(str(info.value), AUDIO_CASES[kind])


def test_hear_timestamps_of_a_50_ms_sound(hear_model):
    """Long enough for a scene embedding, too short for one 160 ms row: named, not an empty (1, 0, D) result."""
    audio = torch.rand(1, 800) * 0.2 - 0.1
    assert hear.get_scene_embeddings(audio, hear_model).shape == (1, 32)
    with pytest.raises(ValueError) as info:
        hear.get_timestamp_embeddings(audio, hear_model)
    assert_one_line(str(info.value), "sound 0 is too short for frame embeddings")


@pytest.mark.parametrize("function", ["get_scene_embeddings", "get_timestamp_embeddings"])
@pytest.mark.parametrize("model", ["none", "encoder", "path"])
def test_hear_wrong_model_object(model, function, paths):
    value = {"none": None, "encoder": AudioMosaicModel(AudioMosaicConfig(**TINY)), "path": str(paths["enc"])}[model]
    with pytest.raises(ValueError) as info:
        getattr(hear, function)(torch.zeros(1, 16000), value)
    assert_one_line(str(info.value), "Expected the model returned by load_model")


# ----------------------------------------------------------------------------------------------------------------------
# Python entry points
# ----------------------------------------------------------------------------------------------------------------------

FEATURE_EXTRACTOR_CASES = {
    "sampling-rate-0": ({"sampling_rate": 0}, "`sampling_rate` must be a positive integer, got 0"),
    "sampling-rate-negative": ({"sampling_rate": -16000}, "`sampling_rate`"),
    "sampling-rate-fraction": ({"sampling_rate": 16000.5}, "`sampling_rate`"),
    "sampling-rate-text": ({"sampling_rate": "16k"}, "`sampling_rate`"),
    "feature-size-0": ({"feature_size": 0, "num_mel_bins": 0}, "`feature_size`"),
    "max-length-0": ({"max_length": 0}, "`max_length`"),
    "mean-nan": ({"mean": float("nan")}, "`mean` must be a finite number"),
    "std-0": ({"std": 0.0}, "`std` must be positive"),
    "std-inf": ({"std": float("inf")}, "`std` must be a finite number"),
    "padding-value-nan": ({"padding_value": float("nan")}, "`padding_value`"),
}


@pytest.mark.parametrize("case", sorted(FEATURE_EXTRACTOR_CASES))
def test_feature_extractor_refuses_impossible_values(case, tmp_path):
    """At construction and, the same check, when a saved preprocessor_config.json is loaded."""
    values, expected = FEATURE_EXTRACTOR_CASES[case]
    with pytest.raises(ValueError) as info:
        AudioMosaicFeatureExtractor(**values)
    assert_one_line(str(info.value), expected)
    saved = {**json.loads(AudioMosaicFeatureExtractor().to_json_string()), **values}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(saved, allow_nan=True))
    with pytest.raises(ValueError, match=re.escape(expected)):
        AudioMosaicFeatureExtractor.from_pretrained(tmp_path)


CLIPS = [np.zeros(16000, dtype=np.float32)]
NORM_STATS_CASES = {
    "max-length-0": (lambda: compute_norm_stats(CLIPS, 0), "`max_length`: expected an integer >= 1, got 0"),
    "batch-size-0": (lambda: compute_norm_stats(CLIPS, 128, batch_size=0),
                     "`batch_size`: expected an integer >= 1, got 0"),
    "batch-size-fraction": (lambda: compute_norm_stats(CLIPS, 128, batch_size=2.5), "`batch_size`"),
    "sampling-rate-0": (lambda: compute_norm_stats(CLIPS, 128, sampling_rate=0), "`sampling_rate`"),
    "no-clips": (lambda: compute_norm_stats([], 128), "No clips"),
    "max-samples-0": (lambda: subsample(CLIPS * 3, 0), "`max_samples`: expected an integer >= 1, got 0"),
    "max-samples-text": (lambda: subsample(CLIPS * 3, "two"), "`max_samples`"),
}


@pytest.mark.parametrize("case", sorted(NORM_STATS_CASES))
def test_norm_stats_arguments(case):
    call, expected = NORM_STATS_CASES[case]
    with pytest.raises(ValueError) as info:
        call()
    assert_one_line(str(info.value), expected)


def test_a_corrupt_norm_stats_cache_is_recomputed(tmp_path):
    """The statistics cache is only a cache: a damaged entry is recomputed and replaced, not an error."""
    clips = [np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1]
    expected = cached_norm_stats(clips, 128, cache_dir=tmp_path, progress=False)
    (cache,) = tmp_path.glob("norm_stats_*.json")
    for damage in ("{trunc", "[1, 2]", '{"mean": 1}'):
        cache.write_text(damage)
        assert cached_norm_stats(clips, 128, cache_dir=tmp_path, progress=False) == expected
        assert json.loads(cache.read_text())["mean"] == expected.mean


EXPORT_CASES = {
    "opset-3": (dict(opset=3), ValueError, "`opset`: expected an integer >= 18"),
    "opset-future": (dict(opset=1000), ValueError, "`opset`"),
    "task-unknown": (dict(task="decoder"), ValueError, "task must be"),
    "encoder-as-classifier": (dict(model_dir="{enc}", task="classifier"), ValueError,
                              "expected an AudioMosaic classifier folder (task 'classifier': without a trained head"),
    "output-is-a-file": (dict(output_dir="{afile}"), ValueError, "is an existing file"),
    "missing-model": (dict(model_dir="{root}/missing"), ValueError, "does not exist"),
    "llama-model": (dict(model_dir="{llama}"), ValueError, "is a llama folder"),
    "check-length-below-a-patch": (dict(check_lengths=(4,)), ValueError, "`check_lengths`"),
    "check-length-too-long": (dict(check_lengths=(256,)), ValueError, "`check_lengths`"),
    "preprocessor-rate-0": (dict(model_dir="{rate0}"), ValueError, "sampling_rate"),
}


@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_export_onnx_arguments(case, paths, tmp_path):
    pytest.importorskip("onnx")
    kwargs, error, expected = EXPORT_CASES[case]
    kwargs = {"model_dir": "{cls}", "output_dir": str(tmp_path / "onnx"), **kwargs}
    kwargs = {k: v.format(**paths) if isinstance(v, str) else v for k, v in kwargs.items()}
    before = snapshot(paths["root"], tmp_path)
    with pytest.raises(error) as info:
        export_onnx(**kwargs)
    assert_one_line(str(info.value), expected)
    assert snapshot(paths["root"], tmp_path) == before


def test_a_failed_export_leaves_the_output_folder_as_it_was(paths, tmp_path, monkeypatch):
    """The export and its files go to a temporary folder first: a parity failure at the end writes nothing."""
    pytest.importorskip("onnxruntime")
    import modeling_audiomosaic.onnx_export as onnx_export

    out = tmp_path / "onnx"
    out.mkdir()
    (out / "model.onnx").write_text("the previous export")
    monkeypatch.setattr(onnx_export, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(ValueError, match="nothing was written"):
        export_onnx(paths["cls"], out, check_lengths=(16,))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]
    assert [p.name for p in out.iterdir()] == ["model.onnx"]
    assert (out / "model.onnx").read_text() == "the previous export"


def test_an_export_without_int8_removes_an_earlier_int8_model(paths, tmp_path):
    """model_int8.onnx of an earlier export would be taken for the new model's quantised version."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "model_int8.onnx").write_text("an earlier export")
    (out / "notes.txt").write_text("not the export's")
    result = export_onnx(paths["cls"], out, check_lengths=(16,))
    written = {p.name for p in out.iterdir()}
    assert {"model.onnx", "config.json", "preprocessor_config.json", "notes.txt"} <= written
    assert "model_int8.onnx" not in written
    assert sorted(Path(f).name for f in result["files"]) == ["config.json", "model.onnx", "preprocessor_config.json"]


def test_export_of_an_encoder_of_a_classifier_is_allowed(paths):
    """--task encoder on a classifier folder exports its encoder (a legitimate request), --task classifier needs one."""
    assert isinstance(load_for_export(paths["cls"], "encoder"), AudioMosaicModel)
    assert isinstance(load_for_export(paths["cls"], "auto"), AudioMosaicForAudioClassification)
    assert isinstance(load_for_export(paths["pre"], "auto"), AudioMosaicModel)


CONVERT_CASES = {
    "output-is-a-file": (dict(out_dir="{afile}"), "is an existing file"),
    "num-heads-0": (dict(num_heads=0), "`num_heads`: expected an integer >= 1"),
    "num-heads-not-dividing": (dict(num_heads=3), "3 attention heads (--num-heads) do not divide"),
    "probe-layer-negative": (dict(probe_layer=-1), "`probe_layer`"),
    "max-length-0": (dict(max_length=0), "`max_length`"),
    "max-length-not-a-patch": (dict(max_length=100), "not a multiple of the patch size"),
    "labels-missing": (dict(labels="{root}/labels.csv"), "`labels`: {root}/labels.csv does not exist"),
    "labels-not-indexed": (dict(labels="{labels_bad}"), "every `index` must be an integer"),
    "labels-not-a-label-table": (dict(labels="{afile}"), "must be a CSV with a header containing `index`"),
    "src-missing": (dict(src="{root}/missing.pt"), "does not exist"),
    "src-truncated-pickle": (dict(src="{trunc_pt}"), "is corrupt or not a PyTorch state-dict file"),
    "src-truncated-safetensors": (dict(src="{trunc_st}"), "is corrupt or not a safetensors checkpoint file"),
    "src-pickled-code": (dict(src="{evil_pt}"), "needs code to be unpickled"),
    "src-pickled-list": (dict(src="{list_pt}"), "does not hold a flat dict of tensors"),
    "src-unsupported": (dict(src="{afile}"), "Unsupported checkpoint file"),
    "src-folder-without-weights": (dict(src="{empty}"), "has no model.safetensors"),
    "src-release-config-corrupt": (dict(src="{release_bad_config}"), "is corrupt or not a JSON release config file"),
    "src-hub-id-offline": (dict(src="someone/no-such-release"), "not in the local Hub cache"),
    "revision-of-a-file": (dict(revision="main"), "--revision applies to Hub ids"),
    "problem-type-unknown": (dict(problem_type="regression"), "Unknown problem_type"),
    "our-own-folder": (dict(src="{cls}"), "is already a transformers AudioMosaic folder"),
}


@pytest.mark.parametrize("case", sorted(CONVERT_CASES))
def test_convert_official_arguments(case, paths, tmp_path):
    kwargs, expected = CONVERT_CASES[case]
    kwargs = {"src": "{official}", "out_dir": str(tmp_path / "converted"), **kwargs}
    kwargs = {k: v.format(**paths) if isinstance(v, str) else v for k, v in kwargs.items()}
    before = snapshot(paths["root"], tmp_path)
    with pytest.raises((ValueError, OSError)) as info:
        convert(**kwargs)
    assert_one_line(str(info.value), expected.format(**paths))
    assert snapshot(paths["root"], tmp_path) == before


def test_convert_official_control(paths, tmp_path):
    """The checkpoint the cases above spoil converts as it is (so each case fails for its own reason)."""
    out = convert(paths["official"], tmp_path / "converted", num_heads=2)
    model = AudioMosaicForAudioClassification.from_pretrained(out)
    assert model.config.num_labels == 3
    assert not [p for p in tmp_path.iterdir() if p.name != "converted"], "the temporary folder was left behind"


@pytest.fixture(scope="module")
def tiny_classifier(paths):
    return (AudioMosaicForAudioClassification.from_pretrained(paths["cls"]).eval(),
            AudioMosaicFeatureExtractor.from_pretrained(paths["cls"]))


EMBEDDINGS_CASES = {
    "frames-batch-size-0": (lambda m, fe, clip, t: frame_embeddings(m, fe, clip, batch_size=0),
                            "`batch_size`: expected an integer >= 1"),
    "frames-layer-99": (lambda m, fe, clip, t: frame_embeddings(m, fe, clip, layers=99), "layer 99 is out of range"),
    "frames-hop-not-a-patch": (lambda m, fe, clip, t: frame_embeddings(m, fe, clip, window_hop=10),
                               "multiple of the patch size"),
    "frames-one-clip-too-short": (lambda m, fe, clip, t: frame_embeddings(m, fe, [clip, clip[:800]],
                                                                          names=["a.wav", "b.wav"]),
                                  "b.wav is too short for frame embeddings"),
    "frames-no-model": (lambda m, fe, clip, t: frame_embeddings(None, fe, clip), "Expected an AudioMosaic model"),
    "frames-a-linear-layer": (lambda m, fe, clip, t: frame_embeddings(torch.nn.Linear(2, 2), fe, clip),
                              "got Linear"),
    "frames-no-extractor": (lambda m, fe, clip, t: frame_embeddings(m, None, clip),
                            "Expected the model's AudioMosaicFeatureExtractor, got NoneType"),
    "segments-of-an-encoder": (lambda m, fe, clip, t: classify_segments(m.audiomosaic, fe, clip),
                               "Expected an AudioMosaicForAudioClassification, got AudioMosaicModel"),
    "segments-batch-size-0": (lambda m, fe, clip, t: classify_segments(m, fe, clip, batch_size=0), "`batch_size`"),
    "segments-hop-0": (lambda m, fe, clip, t: classify_segments(m, fe, clip, window_hop=0),
                       "`window_hop` must be an integer"),
    "top-0": (lambda m, fe, clip, t: t.top(0), "`top_k`: expected an integer >= 1, got 0"),
    "top-negative": (lambda m, fe, clip, t: t.top(-3), "`top_k`"),
    "csv-top-0": (lambda m, fe, clip, t: timelines_to_csv([t], top_k=0), "`top_k`"),
    "csv-of-nothing": (lambda m, fe, clip, t: timelines_to_csv([]), "No timelines"),
}


@pytest.mark.parametrize("case", sorted(EMBEDDINGS_CASES))
def test_embeddings_arguments(case, tiny_classifier):
    model, extractor = tiny_classifier
    clip = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    timeline = classify_segments(model, extractor, clip)[0]
    assert isinstance(timeline, SegmentScores) and timeline.scores.shape[1] == 3
    call, expected = EMBEDDINGS_CASES[case]
    with pytest.raises(ValueError) as info:
        call(model, extractor, clip, timeline)
    assert_one_line(str(info.value), expected)


@pytest.mark.parametrize("kinds, reference, expected", [
    (("classifier",), "{enc}", "is an AudioMosaic encoder folder; expected an AudioMosaic classifier folder"),
    (("encoder", "classifier", "pretraining"), "{llama}", "is a llama folder"),
    (("encoder", "classifier", "pretraining"), "{evil}", "needs code to be unpickled"),
    (("encoder", "classifier", "pretraining"), "{shape}", "(5,) in the file vs (32,) in the model"),
], ids=["classifier-of-an-encoder", "llama", "pickled-code", "other-shape"])
def test_load_pretrained(kinds, reference, expected, paths):
    model_class = AudioMosaicForAudioClassification if kinds == ("classifier",) else AudioMosaicModel
    with pytest.raises(ValueError) as info:
        load_pretrained(model_class, reference.format(**paths), kinds)
    assert_one_line(str(info.value), expected)
