"""The `audiomosaic` console script: every subcommand's --help, embed (pooled / per-layer, .npy / .safetensors, long
clips in windows), classify (JSON / table), effective-rank (JSON + PNG) and clear errors."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from modeling_audiomosaic import (
    AudioMosaicConfig,
    AudioMosaicFeatureExtractor,
    AudioMosaicForAudioClassification,
    AudioMosaicModel,
    load_audio,
)
from modeling_audiomosaic import cli


SUBCOMMANDS = ["embed", "classify", "convert-official", "effective-rank", "finetune", "probe", "publish", "pretrain"]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = AudioMosaicConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               max_length=128, num_labels=4, id2label={0: "low", 1: "mid", 2: "high", 3: "other"},
                               label2id={"low": 0, "mid": 1, "high": 2, "other": 3})
    path = tmp_path_factory.mktemp("cli_model")
    AudioMosaicForAudioClassification(config).save_pretrained(path)
    AudioMosaicFeatureExtractor.from_preset("speechcommands").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def audio_files(synthetic_clips) -> list[Path]:
    root = synthetic_clips / "audio"
    return [sorted((root / label).glob("*.*"))[i] for label in ("low", "mid", "high") for i in range(2)]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out
    expected = {"embed": "--layers", "classify": "--top_k", "convert-official": "out_dir",
                "effective-rank": "--maskings", "finetune": "--blr", "probe": "--probes", "publish": "--hub_model_id",
                "pretrain": "--output_dir"}[command]
    assert expected in out


def test_console_script_lists_the_subcommands():
    script = shutil.which("audiomosaic")
    command = [script] if script else [sys.executable, "-m", "modeling_audiomosaic.cli"]
    out = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in SUBCOMMANDS:
        assert name in out.stdout


def _reference_pooled(model_dir: Path, files: list[Path]) -> torch.Tensor:
    model = AudioMosaicModel.from_pretrained(model_dir).eval()
    fe = AudioMosaicFeatureExtractor.from_pretrained(model_dir)
    with torch.no_grad():
        return torch.cat([model(**fe(load_audio(f), sampling_rate=16000, return_tensors="pt")).pooler_output
                          for f in files])


def test_embed_pooled_npy(classifier_dir, audio_files, tmp_path):
    out = tmp_path / "emb.npy"
    cli.run(["embed", *map(str, audio_files), "--model", str(classifier_dir), "--output", str(out), "--batch_size",
             "4", "--quiet"])
    embeddings = np.load(out)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert embeddings.shape == (6, 32) and meta["files"] == [str(f) for f in audio_files]
    np.testing.assert_allclose(embeddings, _reference_pooled(classifier_dir, audio_files).numpy(), atol=1e-5)


def test_embed_folder_per_layer_safetensors(classifier_dir, audio_files, tmp_path):
    small = tmp_path / "clips"  # a folder (searched recursively) of three linked clips
    small.mkdir()
    for f in audio_files[:3]:
        (small / f"{f.parent.name}_{f.name}").symlink_to(f)
    out = tmp_path / "layers.safetensors"
    cli.run(["embed", str(small), "--model", str(classifier_dir), "--output", str(out), "--layers", "all", "--quiet"])
    with safe_open(str(out), "pt") as handle:
        tensor = handle.get_tensor("embeddings")
        meta = handle.metadata()
    assert tensor.shape == (3, 3, 32)  # clips x (embedding output + 2 blocks) x width
    assert json.loads(meta["layers"]) == [0, 1, 2] and len(json.loads(meta["files"])) == 3
    # The last entry is the un-normalised token mean of the last block: fc_norm of it is the pooled embedding.
    model = AudioMosaicModel.from_pretrained(classifier_dir).eval()
    files = [Path(p).resolve() for p in json.loads(meta["files"])]
    with torch.no_grad():
        torch.testing.assert_close(model.fc_norm(tensor[:, -1]), _reference_pooled(classifier_dir, files), atol=1e-5,
                                   rtol=1e-5)


def test_embed_long_clip_averages_windows(classifier_dir, audio_files, tmp_path):
    import soundfile

    waves = [load_audio(f) for f in audio_files[:3]]
    long_clip = tmp_path / "long.wav"
    soundfile.write(long_clip, np.concatenate(waves), 16000)  # 3 s: several 1.28 s windows
    out = tmp_path / "long.npy"
    cli.run(["embed", str(long_clip), "--model", str(classifier_dir), "--output", str(out), "--window_hop", "64",
             "--quiet"])
    model = AudioMosaicModel.from_pretrained(classifier_dir).eval()
    fe = AudioMosaicFeatureExtractor.from_pretrained(classifier_dir)
    batch = fe(load_audio(long_clip), sampling_rate=16000, long_audio="window", window_hop=64, return_tensors="pt")
    assert len(batch["window_clip_index"]) > 2
    with torch.no_grad():
        expected = model(batch["input_values"]).pooler_output.mean(0)
    np.testing.assert_allclose(np.load(out)[0], expected.numpy(), atol=1e-5)


def test_classify_json_and_table(classifier_dir, audio_files, tmp_path, capsys):
    predictions = cli.run(["classify", *map(str, audio_files[:2]), "--model", str(classifier_dir), "--top_k", "3",
                           "--format", "json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == predictions and [p["file"] for p in printed] == [str(f) for f in audio_files[:2]]
    model = AudioMosaicForAudioClassification.from_pretrained(classifier_dir).eval()
    fe = AudioMosaicFeatureExtractor.from_pretrained(classifier_dir)
    for entry, path in zip(printed, audio_files[:2]):
        labels = [x["label"] for x in entry["predictions"]]
        scores = [x["score"] for x in entry["predictions"]]
        assert len(labels) == 3 and set(labels) <= {"low", "mid", "high", "other"} and scores == sorted(scores)[::-1]
        with torch.no_grad():
            probs = model(**fe(load_audio(path), sampling_rate=16000, return_tensors="pt")).logits.softmax(-1)[0]
        assert labels[0] == model.config.id2label[int(probs.argmax())]
        assert scores[0] == pytest.approx(float(probs.max()), abs=1e-5)
    table_path = tmp_path / "predictions.txt"
    cli.run(["classify", str(audio_files[0]), "--model", str(classifier_dir), "--top_k", "2", "--output",
             str(table_path)])
    lines = table_path.read_text().splitlines()
    assert lines[0].split() == ["file", "label", "score"] and len(lines) == 3 and str(audio_files[0]) in lines[1]


def test_effective_rank_command(classifier_dir, synthetic_clips, tmp_path, capsys):
    meta = synthetic_clips / "meta.csv"
    out = tmp_path / "erank"
    results = cli.run(["effective-rank", str(meta), "--audio_column", "filename", "--model", str(classifier_dir),
                       "--output_dir", str(out), "--fold_column", "fold", "--folds", "4,5", "--max_samples", "24",
                       "--batch_size", "12", "--quiet"])
    saved = json.loads((out / "effective_rank.json").read_text())
    assert set(saved["maskings"]) == {"none", "unstructured", "time_frequency"}
    assert saved["maskings"]["none"]["num_clips"] == 24 and saved == json.loads(json.dumps(results))
    assert 1 <= saved["maskings"]["time_frequency"]["effective_rank"] <= 24
    assert (out / "effective_rank.png").read_bytes()[:4] == b"\x89PNG"
    assert "time_frequency: effective rank" in capsys.readouterr().out


def test_cli_errors(classifier_dir, audio_files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["classify", str(tmp_path / "missing.wav"), "--model", str(classifier_dir)])
    assert exit_info.value.code == 1 and "missing.wav does not exist" in capsys.readouterr().err
    (tmp_path / "a.wav").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["embed", str(tmp_path / "a.wav"), "--model", str(classifier_dir), "--output", str(tmp_path / "x.pt")])
    assert exit_info.value.code == 1 and ".npy or .safetensors" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        cli.run(["embed", str(empty), "--model", str(classifier_dir), "--output", str(tmp_path / "x.npy")])
    assert "holds no audio files" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.run(["embed", str(audio_files[0]), "--model", str(classifier_dir), "--output", str(tmp_path / "x.npy"),
                 "--layers", "9", "--quiet"])
    assert "--layers: 9 is out of range; the model has 3 entries" in capsys.readouterr().err


def test_csv_inputs(classifier_dir, audio_files, tmp_path):
    listing = tmp_path / "list.csv"
    with listing.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([[str(f), f.parent.name] for f in audio_files[:2]])
    out = tmp_path / "from_csv.npy"
    cli.run(["embed", str(listing), "--audio_column", "path", "--model", str(classifier_dir), "--output", str(out),
             "--quiet"])
    np.testing.assert_allclose(np.load(out), _reference_pooled(classifier_dir, audio_files[:2]).numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "argv, problem",
    [
        (["pretrain", "--recipe", "pretrain_tiny_cpu", "--dataset", "{tmp}/missing.csv", "--output_dir", "{tmp}/o"],
         "missing.csv does not exist"),
        (["finetune", "--recipe", "finetune_generic", "--dataset", "{list}", "--audio_column", "path",
          "--output_dir", "{tmp}/o"], "no column `path`"),
        (["finetune", "--recipe", "finetune_generic", "--dataset", "{list}", "--label_column", "genre",
          "--output_dir", "{tmp}/o"], "genre"),
        (["finetune", "--recipe", "finetune_generic", "--dataset", "{list}", "--fold_column", "fold",
          "--eval_folds", "9", "--output_dir", "{tmp}/o"], "9"),
        (["probe", "--recipe", "probe_generic", "--dataset", "{list}", "--model_name_or_path", "{model}",
          "--fold_column", "fold", "--train_folds", "1", "--eval_folds", "2", "--max_length", "128",
          "--per_device_train_batch_size", "0", "--output_dir", "{tmp}/o"], "batch"),
        (["classify", "{clip}", "--model", "{bare}"], "{bare}"),
    ],
    ids=["missing-dataset", "no-audio-column", "no-label-column", "empty-eval-fold", "batch-size-0",
         "folder-without-weights"],
)
def test_bad_input_gets_one_line_in_every_command(argv, problem, classifier_dir, audio_files, tmp_path, capsys,
                                                  monkeypatch):
    """The command line's one error boundary: one line naming the problem, exit status 1, no traceback; with
    --debug (or AUDIOMOSAIC_DEBUG=1) the exception itself comes through."""
    listing = tmp_path / "list.csv"
    listing.write_text("audio,label,fold\n" + "".join(f"{path},{i % 2},{1 + (i // 2) % 2}\n"
                                                       for i, path in enumerate(audio_files)))
    bare = tmp_path / "bare"  # a model folder with its config.json but no weights
    bare.mkdir()
    shutil.copy(classifier_dir / "config.json", bare)
    values = {"tmp": str(tmp_path), "list": str(listing), "model": str(classifier_dir), "clip": str(audio_files[0]),
              "bare": str(bare)}
    argv = [part.format(**values) for part in argv]
    monkeypatch.delenv("AUDIOMOSAIC_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith(f"audiomosaic {argv[0]}: error: ")]
    assert len(error_lines) == 1 and problem.format(**values) in error_lines[0], err[-2000:]
    assert err.rstrip().endswith(error_lines[0]), "the error line is the last thing printed"
    monkeypatch.setenv("AUDIOMOSAIC_DEBUG", "1")
    with pytest.raises(cli.USER_ERRORS):
        cli.run(argv)


# One bad input per command that only Python can find (argparse's own errors exit 2, without a traceback to show),
# each failing before any real work (mostly a missing file or folder).
BAD_INPUT = {
    "embed": ["{tmp}/missing.wav", "--model", "{model}", "--output", "{tmp}/x.npy"],
    "classify": ["{tmp}/missing.wav", "--model", "{model}"],
    "norm-stats": ["{tmp}/missing"],
    "export-onnx": ["{model}", "{tmp}/onnx", "--opset", "1000"],  # checked against the installed onnx, in Python
    "convert-official": ["{tmp}/missing.pt", "{tmp}/converted"],
    "convert-ltu": ["{tmp}/missing", "{tmp}/converted", "--base-model", "{tmp}/missing_llama"],
    "pretrain": ["--recipe", "pretrain_tiny_cpu", "--dataset", "{tmp}/missing.csv", "--output_dir", "{tmp}/o"],
    "finetune": ["--recipe", "finetune_generic", "--dataset", "{tmp}/missing.csv", "--output_dir", "{tmp}/o"],
    "probe": ["--recipe", "probe_generic", "--dataset", "{tmp}/missing.csv", "--model_name_or_path", "{model}",
              "--output_dir", "{tmp}/o"],
    "effective-rank": ["{tmp}/missing.csv", "--model", "{model}", "--output_dir", "{tmp}/o"],
    "publish": ["{tmp}/missing"],
    "train-ltu": ["--model_name_or_path", "{tmp}/missing", "--dataset", "{tmp}/missing.csv", "--output_dir",
                  "{tmp}/o"],
    "sae-train": ["{tmp}/missing", "--model", "{model}", "--output_dir", "{tmp}/o"],
    "sae-report": ["{tmp}/missing", "--model", "{model}", "--sae", "{tmp}/missing_sae", "--output_dir", "{tmp}/o"],
    "fewshot": ["{tmp}/missing", "--model", "{model}", "--output_dir", "{tmp}/o"],
    "heads": ["{tmp}/missing", "--model", "{model}", "--output_dir", "{tmp}/o"],
}


def test_the_bad_input_table_covers_every_command():
    assert set(BAD_INPUT) == set(cli.COMMANDS)


@pytest.mark.parametrize("command", sorted(BAD_INPUT))
def test_debug_shows_the_exception_of_every_command(command, classifier_dir, tmp_path, capsys, monkeypatch):
    """Without --debug: one line `audiomosaic COMMAND: error: ...` and exit status 1; with `--debug` before the
    command the exception itself comes through (its traceback), whichever command it is."""
    argv = [command, *(part.format(tmp=tmp_path, model=classifier_dir) for part in BAD_INPUT[command])]
    monkeypatch.delenv("AUDIOMOSAIC_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    assert err.rstrip().splitlines()[-1].startswith(f"audiomosaic {command}: error: "), err[-2000:]
    with pytest.raises(cli.USER_ERRORS):
        cli.run(["--debug", *argv])


def test_debug_prints_a_traceback_from_the_console(tmp_path, classifier_dir):
    """The console script itself: the `fewshot` error (once handled by a second boundary that ignored --debug)."""
    command = [sys.executable, "-m", "modeling_audiomosaic.cli"]
    argv = ["fewshot", str(tmp_path / "missing"), "--model", str(classifier_dir), "--output_dir", str(tmp_path / "o")]
    plain = subprocess.run([*command, *argv], capture_output=True, text=True, timeout=300)
    debug = subprocess.run([*command, "--debug", *argv], capture_output=True, text=True, timeout=300)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines()[-1].startswith("audiomosaic fewshot: error: ")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


def test_no_module_below_the_command_line_imports_it():
    """Imports run one way: cli.py -> commands/ and the training scripts -> the library (modeling_audiomosaic.inputs
    holds what they share), so the import graph has no loop through the command line."""
    import ast

    repo = Path(__file__).resolve().parents[1]
    package = repo / "modeling_audiomosaic"
    below = [p for p in [*package.rglob("*.py"), *(repo / "training").rglob("*.py")]
             if p != package / "cli.py" and package / "commands" not in p.parents]
    offending = []
    for path in below:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [f"{'.' * node.level}{node.module or ''}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            offending += [f"{path.relative_to(repo)}: {name}" for name in names
                          if any(part in ("cli", "commands") for part in name.split("."))
                          and "interpret" not in name]  # interpret/commands.py is the interpret commands' library
    assert not offending, offending


def test_feature_extractor_fallback_is_clamped_to_the_model(tmp_path, capsys):
    """A folder without preprocessor_config.json gets the AudioSet extractor cut to the model's length (1024 frames
    would not fit a 128-frame model), and a longer --max_length is refused up front."""
    from modeling_audiomosaic.inputs import load_feature_extractor

    AudioMosaicModel(AudioMosaicConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, max_length=128)).save_pretrained(tmp_path)
    assert load_feature_extractor(str(tmp_path), None, 128).max_length == 128
    assert "no preprocessor_config.json" in capsys.readouterr().err
    assert load_feature_extractor(str(tmp_path), 64, 128).max_length == 64
    with pytest.raises(ValueError, match="longer than the model's max_length 128"):
        load_feature_extractor(str(tmp_path), 256, 128)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_a_gpu_is_one_line(classifier_dir, audio_files, capsys, monkeypatch):
    monkeypatch.delenv("AUDIOMOSAIC_DEBUG", raising=False)
    with pytest.raises(SystemExit):
        cli.run(["classify", str(audio_files[0]), "--model", str(classifier_dir), "--device", "cuda"])
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err.splitlines()[-1]
