"""Bad and odd inputs of the tool commands (issue 20) -- convert-ltu, train-ltu, sae-train, sae-report, fewshot,
heads, effective-rank -- and of their Python entry points, as a new user would make them. Each case must end in one
clear line naming the problem (the command line: a non-zero exit status, exactly one non-empty stderr line, no
traceback; Python: one ValueError / OSError), and nothing may be written. Everything is generated here: tiny models,
tones written with soundfile, no Hub access."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("peft")

from safetensors.torch import save_file  # noqa: E402
from test_interpret import tiny_model as tiny_encoder  # noqa: E402
from test_interpret import write_tones  # noqa: E402
from test_ltu import tiny_model as tiny_ltu_model  # noqa: E402
from test_ltu import tiny_processor, word_tokenizer  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from audiomosaic_training import ltu as training_ltu  # noqa: E402

from modeling_audiomosaic import (  # noqa: E402
    AudioMosaicConfig,
    AudioMosaicFeatureExtractor,
    AudioMosaicForAudioClassification,
    AudioMosaicModel,
    cli,
)
from modeling_audiomosaic.inputs import command_parser  # noqa: E402
from modeling_audiomosaic.interpret.commands import sae_train  # noqa: E402
from modeling_audiomosaic.interpret import (  # noqa: E402
    Activations,
    SparseAutoencoder,
    collect_activations,
    evaluate_head_intervention,
    evaluate_sae,
    latent_class_report,
    probe_heads,
    run_fewshot_benchmark,
    train_sae,
)


class NeedsCode:
    """Unpickling an instance needs this module's code: `weights_only=True` refuses it."""


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def tiny_llama(folder: Path) -> Path:
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                                 eos_token_id=2)).save_pretrained(folder)
    word_tokenizer(50).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Every input the cases point at: good ones (a tiny encoder, tones of two classes, a trained SAE, a tiny LLaMA
    and LTU folder) and bad ones (one class, a CSV without labels, truncated and code-pickling weight files, ...)."""
    root = tmp_path_factory.mktemp("edges_tools")
    tiny_encoder().save_pretrained(root / "encoder")
    AudioMosaicFeatureExtractor.from_preset("speechcommands", max_length=64).save_pretrained(root / "encoder")
    wide = AudioMosaicConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                             max_length=64)
    AudioMosaicModel(wide).save_pretrained(root / "wide_encoder")
    AudioMosaicFeatureExtractor.from_preset("speechcommands", max_length=64).save_pretrained(root / "wide_encoder")
    shallow = AudioMosaicConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                max_length=64)
    AudioMosaicModel(shallow).save_pretrained(root / "shallow_encoder")
    AudioMosaicForAudioClassification(AudioMosaicConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                        intermediate_size=64, max_length=64, num_labels=2)
                                      ).save_pretrained(root / "classifier")
    audio = write_tones(root / "audio", per_class=6)
    (root / "one_class" / "low").mkdir(parents=True)
    for name in ("0.wav", "1.wav", "2.wav"):
        shutil.copy(audio / "low" / name, root / "one_class" / "low" / name)
    (root / "two_clips" / "low").mkdir(parents=True)
    (root / "two_clips" / "high").mkdir(parents=True)
    shutil.copy(audio / "low" / "0.wav", root / "two_clips" / "low" / "0.wav")
    shutil.copy(audio / "high" / "0.wav", root / "two_clips" / "high" / "0.wav")
    (root / "no_label.csv").write_text("audio,kind\n" + "".join(f"audio/low/{i}.wav,x\n" for i in range(4)))
    (root / "missing_file.csv").write_text("audio,label\naudio/low/0.wav,low\naudio/low/99.wav,low\n")
    (root / "a_file").write_text("not a folder")
    (root / "one_clip").mkdir()
    shutil.copy(audio / "low" / "0.wav", root / "one_clip" / "0.wav")
    # Fold 2 (the test fold below) holds clips of one class only.
    (root / "folds.csv").write_text("audio,label,fold\n" + "".join(
        f"audio/{label}/{i}.wav,{label},{1 if label == 'high' or i < 3 else 2}\n"
        for label in ("low", "high") for i in range(6)))

    tiny_llama(root / "llama")
    LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2).save_pretrained(root / "llama_pickle")
    torch.save({"model.embed_tokens.weight": torch.zeros(50, 32), "hook": NeedsCode()},
               root / "llama_pickle" / "pytorch_model.bin")
    shutil.copytree(root / "llama", root / "llama_truncated")
    truncate(root / "llama_truncated" / "model.safetensors")
    tiny_ltu_model().save_pretrained(root / "ltu")
    tiny_processor().save_pretrained(root / "ltu")
    tiny_ltu_model().save_pretrained(root / "ltu_without_processor")

    (root / "release_truncated").mkdir()
    torch.save({"audio_encoder.cls_token": torch.zeros(1, 1, 32)}, root / "release_truncated" / "extra_weights.bin")
    truncate(root / "release_truncated" / "extra_weights.bin")
    (root / "release_code").mkdir()
    torch.save({"audio_encoder.cls_token": NeedsCode()}, root / "release_code" / "extra_weights.bin")
    (root / "release_foreign").mkdir()
    (root / "release_foreign" / "extra_weights.bin").write_bytes(b"these are not weights" * 10)

    cli.run(["sae-train", str(audio), "--model", str(root / "encoder"), "--output_dir", str(root / "sae_run"),
             "--expansion", "2", "--k", "4", "--epochs", "2", "--quiet"])
    sae = root / "sae_run" / "sae"
    for name in ("sae_truncated", "sae_bad_json", "sae_foreign_tensors"):
        shutil.copytree(sae, root / name)
    truncate(root / "sae_truncated" / "model.safetensors")
    (root / "sae_bad_json" / "audiomosaic_sae.json").write_text("{ not json")
    save_file({"W_dec": torch.zeros(3, 3)}, str(root / "sae_foreign_tensors" / "model.safetensors"))
    return root


def snapshot(*folders: Path) -> dict:
    """Every path under `folders` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for folder in folders for p in sorted(folder.rglob("*"))}


def assert_one_line_failure(argv: list[str], capsys, exit_codes: tuple[int, ...], message: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code in exit_codes, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"audiomosaic {argv[0]}: error: ") and message in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------------------------

ARGUMENT = (2,)  # an option's value refused by the command's parser
INPUT = (1,)  # bad input found by the command (the error boundary's one line)
# --model is checked by the command itself here and by the parser once the shared audio options declare its type: the
# line is the same, the exit status is that of either.
MODEL = (1, 2)

TONES = ["{root}/audio", "--model", "{root}/encoder", "--output_dir", "{out}"]
LTU_DATA = ["--dataset", "{root}/audio", "--output_dir", "{out}", "--instruction", "w5", "--answer_column", "label"]
RANK = ["{root}/audio", "--model", "{root}/encoder", "--output_dir", "{out}", "--quiet"]

CLI_CASES = {
    # sae-train
    "sae-train --epochs 0": (["sae-train", *TONES, "--epochs", "0"], ARGUMENT,
                             "argument --epochs: expected an integer >= 1, got '0'"),
    "sae-train missing --model": (["sae-train", "{root}/audio", "--model", "{root}/missing_model", "--output_dir",
                                   "{out}"], MODEL, "missing_model does not exist"),
    "sae-train Hub-like --model offline": (["sae-train", "{root}/audio", "--model", "nobody/no-such-model",
                                            "--output_dir", "{out}"], MODEL, "Hub cannot be reached (offline)"),
    "sae-train --model a LLaMA": (["sae-train", "{root}/audio", "--model", "{root}/llama", "--output_dir", "{out}"],
                                  MODEL, "is a llama folder; expected an AudioMosaic encoder"),
    "sae-train --layer 99": (["sae-train", *TONES, "--layer", "99"], INPUT, "--layer 99 is out of range"),
    "sae-train --k above latents": (["sae-train", *TONES, "--expansion", "2", "--k", "100"], INPUT,
                                    "--k 100 is more than the 64 latents"),
    "sae-train --tokens_per_clip 0": (["sae-train", *TONES, "--mode", "token", "--tokens_per_clip", "0"], ARGUMENT,
                                      "argument --tokens_per_clip"),
    "sae-train --expansion 0": (["sae-train", *TONES, "--expansion", "0"], ARGUMENT, "argument --expansion"),
    "sae-train --learning_rate -1": (["sae-train", *TONES, "--learning_rate", "-1"], ARGUMENT,
                                     "argument --learning_rate"),
    "sae-train one class": (["sae-train", "{root}/one_class", "--model", "{root}/encoder", "--output_dir", "{out}"],
                            INPUT, "holds one class ('low')"),
    "sae-train CSV without labels": (["sae-train", "{root}/no_label.csv", "--model", "{root}/encoder",
                                      "--output_dir", "{out}"], INPUT, "no column `label` (--label_column)"),
    "sae-train CSV naming a missing clip": (["sae-train", "{root}/missing_file.csv", "--model", "{root}/encoder",
                                             "--output_dir", "{out}"], INPUT, "99.wav, which does not exist"),
    "sae-train --output_dir a file": (["sae-train", "{root}/audio", "--model", "{root}/encoder", "--output_dir",
                                       "{root}/a_file"], ARGUMENT, "is an existing file; expected a folder"),
    "sae-train missing data": (["sae-train", "{root}/no_such_data", "--model", "{root}/encoder", "--output_dir",
                                "{out}"], INPUT, "no_such_data does not exist"),
    "sae-train too few clips to split": (["sae-train", "{root}/two_clips", "--model", "{root}/encoder",
                                          "--output_dir", "{out}"], INPUT, "stratified 25 % test split"),
    "sae-train --test_folds without folds": (["sae-train", *TONES, "--test_folds", "1"], INPUT,
                                             "--test_folds needs --fold_column"),
    "sae-train --seed -1": (["sae-train", *TONES, "--seed", "-1"], ARGUMENT, "argument --seed"),
    "sae-train --max_length above the model's": (["sae-train", *TONES, "--max_length", "500"], INPUT,
                                                  "--max_length 500 is longer than the model's max_length 64"),
    "sae-train --pooling max": (["sae-train", *TONES, "--pooling", "max"], ARGUMENT, "argument --pooling: invalid"),
    "sae-train --cache_dir a file": (["sae-train", *TONES, "--cache_dir", "{root}/a_file"], ARGUMENT,
                                     "argument --cache_dir"),
    # sae-report
    "sae-report missing --sae": (["sae-report", *TONES, "--sae", "{root}/no_sae"], INPUT,
                                 "argument --sae: {root}/no_sae does not exist"),
    "sae-report --sae an encoder": (["sae-report", *TONES, "--sae", "{root}/encoder"], INPUT,
                                    "expected a sparse-autoencoder folder"),
    "sae-report truncated SAE weights": (["sae-report", *TONES, "--sae", "{root}/sae_truncated"], INPUT,
                                         "model.safetensors is corrupt or not a sparse-autoencoder weights file"),
    "sae-report SAE tensors of another SAE": (["sae-report", *TONES, "--sae", "{root}/sae_foreign_tensors"], INPUT,
                                              "tensors that do not fit its config.json"),
    "sae-report corrupt audiomosaic_sae.json": (["sae-report", *TONES, "--sae", "{root}/sae_bad_json"], INPUT,
                                                "audiomosaic_sae.json is corrupt"),
    "sae-report SAE on a model of another width": (["sae-report", "{root}/audio", "--model", "{root}/wide_encoder",
                                                    "--output_dir", "{out}", "--sae", "{root}/sae_run/sae"], INPUT,
                                                   "of width 32; --model"),
    "sae-report SAE of a deeper model's last layer": (["sae-report", "{root}/audio", "--model",
                                                       "{root}/shallow_encoder", "--output_dir", "{out}", "--sae",
                                                       "{root}/sae_run/sae"], INPUT,
                                                      "trained on hidden state 2 of width 32; --model"),
    "sae-report --top_latents 0": (["sae-report", *TONES, "--sae", "{root}/sae_run/sae", "--top_latents", "0"],
                                   ARGUMENT, "argument --top_latents"),
    # fewshot
    "fewshot --episodes 0": (["fewshot", *TONES, "--episodes", "0"], ARGUMENT, "argument --episodes"),
    "fewshot --shots abc": (["fewshot", *TONES, "--shots", "abc"], ARGUMENT,
                            "argument --shots: expected comma-separated integers >= 1, got 'abc'"),
    "fewshot --shots 1,0": (["fewshot", *TONES, "--shots", "1,0"], ARGUMENT, "argument --shots"),
    "fewshot more shots than clips": (["fewshot", *TONES, "--shots", "1,50"], INPUT,
                                      "--shots 50 needs 50 training clips per class"),
    "fewshot --best_layer 99": (["fewshot", *TONES, "--best_layer", "99"], INPUT, "--best_layer 99 is out of range"),
    "fewshot one class": (["fewshot", "{root}/one_class", "--model", "{root}/encoder", "--output_dir", "{out}"],
                          INPUT, "holds one class"),
    # heads
    "heads --top_heads 0": (["heads", *TONES, "--top_heads", "0"], ARGUMENT, "argument --top_heads"),
    "heads --top_heads all heads": (["heads", *TONES, "--top_heads", "8"], INPUT,
                                    "--top_heads 8: the model has 8 heads"),
    "heads --max_eval_per_class 0": (["heads", *TONES, "--max_eval_per_class", "0"], ARGUMENT,
                                     "argument --max_eval_per_class"),
    "heads --cv 1": (["heads", *TONES, "--cv", "1"], ARGUMENT, "argument --cv: expected an integer >= 2"),
    "heads --cv above the clips per class": (["heads", *TONES, "--cv", "9"], INPUT,
                                             "--cv 9 needs 9 probed training clips per class"),
    "heads --n_random -1": (["heads", *TONES, "--n_random", "-1"], ARGUMENT, "argument --n_random"),
    "heads a test fold of one class": (["heads", "{root}/folds.csv", "--model", "{root}/encoder", "--output_dir",
                                        "{out}", "--fold_column", "fold", "--test_folds", "2", "--cv", "2"], INPUT,
                                       "only 1 class(es) ['low'] have both training and test clips"),
    "fewshot test folds leaving one training class": (["fewshot", "{root}/folds.csv", "--model", "{root}/encoder",
                                                       "--output_dir", "{out}", "--fold_column", "fold",
                                                       "--test_folds", "1"], INPUT,
                                                      "leaves training clips of 1 class(es) ['low']"),
    "heads missing --model": (["heads", "{root}/audio", "--model", "{root}/missing_model", "--output_dir", "{out}"],
                              MODEL, "missing_model does not exist"),
    # convert-ltu
    "convert-ltu missing --base-model": (["convert-ltu", "{root}/release_code", "{out}", "--base-model",
                                          "{root}/no_llama"], INPUT, "argument --base-model: "),
    "convert-ltu --base-model pickles code": (["convert-ltu", "{root}/release_code", "{out}", "--base-model",
                                               "{root}/llama_pickle"], INPUT,
                                              "pytorch_model.bin needs code to be unpickled"),
    "convert-ltu truncated base weights": (["convert-ltu", "{root}/release_code", "{out}", "--base-model",
                                            "{root}/llama_truncated"], INPUT,
                                           "model.safetensors is corrupt or not a safetensors weights file"),
    "convert-ltu --base-model an encoder": (["convert-ltu", "{root}/release_code", "{out}", "--base-model",
                                             "{root}/encoder"], INPUT, "is an audio model folder (encoder)"),
    "convert-ltu truncated extra_weights.bin": (["convert-ltu", "{root}/release_truncated", "{out}",
                                                 "--base-model", "{root}/llama"], INPUT,
                                                "extra_weights.bin is corrupt or not a PyTorch weights file"),
    "convert-ltu foreign extra_weights.bin": (["convert-ltu", "{root}/release_foreign", "{out}", "--base-model",
                                               "{root}/llama"], INPUT, "extra_weights.bin is corrupt"),
    "convert-ltu extra_weights.bin pickles code": (["convert-ltu", "{root}/release_code", "{out}", "--base-model",
                                                    "{root}/llama"], INPUT, "needs code to be unpickled"),
    "convert-ltu missing release": (["convert-ltu", "{root}/no_release", "{out}", "--base-model", "{root}/llama"],
                                    INPUT, "no_release does not exist"),
    "convert-ltu --num-heads 0": (["convert-ltu", "{root}/release_code", "{out}", "--base-model", "{root}/llama",
                                   "--num-heads", "0"], ARGUMENT, "argument --num-heads"),
    "convert-ltu out_dir a file": (["convert-ltu", "{root}/release_code", "{root}/a_file", "--base-model",
                                    "{root}/llama"], ARGUMENT, "a_file is an existing file"),
    # train-ltu
    "train-ltu a classifier as LTU folder": (["train-ltu", "--recipe", "ltu_stage2_all_cla", "--model_name_or_path",
                                              "{root}/classifier", *LTU_DATA], INPUT,
                                             "is an AudioMosaic classifier folder; expected an LTU model folder"),
    "train-ltu missing --language_model": (["train-ltu", "--recipe", "ltu_stage1_projector", "--language_model",
                                            "{root}/no_llama", *LTU_DATA], INPUT, "no_llama does not exist"),
    "train-ltu --language_model pickles code": (["train-ltu", "--recipe", "ltu_stage1_projector", "--language_model",
                                                 "{root}/llama_pickle", *LTU_DATA], INPUT, "needs code"),
    "train-ltu --audio_encoder a LLaMA": (["train-ltu", "--recipe", "ltu_stage1_projector", "--language_model",
                                           "{root}/llama", "--audio_encoder", "{root}/llama", *LTU_DATA], INPUT,
                                          "argument --audio_encoder"),
    "train-ltu an LTU folder without processor": (["train-ltu", "--model_name_or_path", "{root}/ltu_without_processor",
                                                   *LTU_DATA], INPUT, "has no processor (processor_config.json"),
    "train-ltu both model options": (["train-ltu", "--model_name_or_path", "{root}/ltu", "--language_model",
                                      "{root}/llama", *LTU_DATA], INPUT, "not both or neither"),
    "train-ltu --lora_r 0": (["train-ltu", "--model_name_or_path", "{root}/ltu", "--lora_r", "0", *LTU_DATA], INPUT,
                             "argument --lora_r: expected an integer >= 1"),
    "train-ltu --lora_dropout 1.5": (["train-ltu", "--model_name_or_path", "{root}/ltu", "--lora_dropout", "1.5",
                                      *LTU_DATA], INPUT, "argument --lora_dropout"),
    "train-ltu --lora_r abc": (["train-ltu", "--model_name_or_path", "{root}/ltu", "--lora_r", "abc", *LTU_DATA],
                               ARGUMENT, "invalid int value: 'abc'"),
    "train-ltu --text_max_length 0": (["train-ltu", "--model_name_or_path", "{root}/ltu", "--text_max_length", "0",
                                       *LTU_DATA], INPUT, "argument --text_max_length"),
    "train-ltu --trainable everything": (["train-ltu", "--model_name_or_path", "{root}/ltu", "--trainable",
                                          "everything", *LTU_DATA], INPUT, "argument --trainable"),
    "train-ltu --eval_folds without folds": (["train-ltu", "--model_name_or_path", "{root}/ltu", "--eval_folds", "5",
                                              *LTU_DATA], INPUT, "--eval_folds needs --fold_column"),
    "train-ltu missing dataset": (["train-ltu", "--model_name_or_path", "{root}/ltu", "--dataset",
                                   "{root}/no_rows.csv", "--output_dir", "{out}", "--instruction", "w5"], INPUT,
                                  "no_rows.csv does not exist"),
    "train-ltu dataset without the answer column": (["train-ltu", "--model_name_or_path", "{root}/ltu", "--dataset",
                                                     "{root}/audio", "--output_dir", "{out}", "--instruction", "w5"],
                                                    INPUT, "has no column(s) ['answer']"),
    "train-ltu --audio_config_overrides unknown": (["train-ltu", "--language_model", "{root}/llama",
                                                    "--audio_config_overrides", "depth=3", *LTU_DATA], INPUT,
                                                   "argument --audio_config_overrides"),
    "train-ltu --per_device_train_batch_size 0": (["train-ltu", "--model_name_or_path", "{root}/ltu",
                                                   "--per_device_train_batch_size", "0", *LTU_DATA], INPUT,
                                                  "argument --per_device_train_batch_size"),
    "train-ltu --learning_rate -1": (["train-ltu", "--model_name_or_path", "{root}/ltu", "--learning_rate", "-1",
                                      *LTU_DATA], INPUT, "argument --learning_rate"),
    "train-ltu --output_dir a file": (["train-ltu", "--model_name_or_path", "{root}/ltu", "--dataset",
                                       "{root}/audio", "--output_dir", "{root}/a_file", "--instruction", "w5"],
                                      INPUT, "argument --output_dir"),
    # effective-rank
    "effective-rank --time_ratio 1.5": (["effective-rank", *RANK, "--time_ratio", "1.5"], ARGUMENT,
                                        "argument --time_ratio: expected a number >= 0 and < 1, got '1.5'"),
    "effective-rank --maskings unknown": (["effective-rank", *RANK, "--maskings", "none,blur"], ARGUMENT,
                                          "argument --maskings"),
    "effective-rank a masking keeping no token": (["effective-rank", *RANK, "--time_ratio", "0.9", "--maskings",
                                                   "time_frequency"], INPUT, "keeps no token of the 4 x 8 patch grid"),
    "effective-rank --max_samples 1": (["effective-rank", *RANK, "--max_samples", "1"], ARGUMENT,
                                       "argument --max_samples"),
    "effective-rank --output_dir a file": (["effective-rank", "{root}/audio", "--model", "{root}/encoder",
                                            "--output_dir", "{root}/a_file"], ARGUMENT, "argument --output_dir"),
    "effective-rank one clip": (["effective-rank", "{root}/one_clip", "--model", "{root}/encoder", "--output_dir",
                                 "{out}"], INPUT, "holds 1 clip(s); an effective rank needs at least 2"),
    "effective-rank --model a LLaMA": (["effective-rank", "{root}/audio", "--model", "{root}/llama", "--output_dir",
                                        "{out}"], MODEL, "is a llama folder"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_command_line_case(case, root, tmp_path, capsys, monkeypatch):
    template, exit_codes, message = CLI_CASES[case]
    monkeypatch.delenv("AUDIOMOSAIC_DEBUG", raising=False)
    argv = [part.format(root=root, out=tmp_path / "out") for part in template]
    before = snapshot(root, tmp_path)
    assert_one_line_failure(argv, capsys, exit_codes, message.format(root=root))
    assert snapshot(root, tmp_path) == before


@pytest.mark.parametrize("case", ["fewshot --shots abc", "train-ltu a classifier as LTU folder"])
def test_console_script_case(case, root, tmp_path):
    """The installed console script (a fresh process): one line and the exit status; --debug shows the traceback."""
    template, exit_codes, message = CLI_CASES[case]
    argv = [part.format(root=root, out=tmp_path / "out") for part in template]
    script = shutil.which("audiomosaic", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "modeling_audiomosaic.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AUDIOMOSAIC_DEBUG": "0"}
    plain = subprocess.run([*command, *argv], capture_output=True, text=True, timeout=300, env=env)
    lines = [line for line in plain.stderr.splitlines() if line.strip()]
    assert plain.returncode in exit_codes and len(lines) == 1 and message in lines[0], plain.stderr
    assert not (tmp_path / "out").exists()
    if exit_codes == INPUT:
        debug = subprocess.run([*command, "--debug", *argv], capture_output=True, text=True, timeout=300, env=env)
        assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_a_corrupt_activation_cache_is_recomputed_with_a_note(root, tmp_path, capsys):
    """A cache is only a cache: a truncated one is named on stderr, recomputed and replaced, and the command ends."""
    args = ["sae-train", str(root / "audio"), "--model", str(root / "encoder"), "--output_dir", str(tmp_path / "a"),
            "--expansion", "2", "--k", "4", "--epochs", "1", "--quiet"]
    cli.run(args)
    cache = next((tmp_path / "a" / "cache").glob("activations-*.safetensors"))
    truncate(cache)
    info = cli.run([*args[:5], str(tmp_path / "b"), *args[6:], "--cache_dir", str(tmp_path / "a" / "cache")])
    err = capsys.readouterr().err
    assert f"{cache} is corrupt or not a safetensors activation cache file" in err and "recomputing it" in err
    assert info["train_vectors"] > 0 and (tmp_path / "b" / "sae" / "model.safetensors").is_file()
    assert Activations.load(cache).hidden.shape[0] == 12  # replaced by a complete one


# ----------------------------------------------------------------------------------------------------------------------
# Python entry points
# ----------------------------------------------------------------------------------------------------------------------


def parsed(command: str, argv: list[str], **changes) -> argparse.Namespace:
    """The namespace `audiomosaic COMMAND argv` parses to, with `changes` made in Python afterwards (as a caller
    building its own namespace would)."""
    import importlib

    module = importlib.import_module(f"modeling_audiomosaic.commands.{command.replace('-', '_')}")
    args = command_parser(command, None, module.add_arguments).parse_args(argv)
    return argparse.Namespace(**{**vars(args), **changes})


def interpret_call(name: str, root: Path, out: Path, **changes):
    from modeling_audiomosaic.interpret import commands

    argv = [str(root / "audio"), "--model", str(root / "encoder"), "--output_dir", str(out), "--quiet"]
    if name == "sae_report":
        argv += ["--sae", str(root / "sae_run" / "sae")]
    return lambda: getattr(commands, name)(parsed(name.replace("_", "-"), argv, **changes))


def sae_call(**kwargs):
    return lambda: SparseAutoencoder(**{"d_in": 8, "d_sae": 16, "k": 4, **kwargs})


def train_sae_call(rows: int = 20, width: int = 8, **kwargs):
    data = np.random.default_rng(0).normal(size=(rows, width))
    return lambda: train_sae(data, **{"d_sae": 16, "k": 4, "epochs": 1, "progress": False, **kwargs})


def from_pretrained_call(folder: str):
    return lambda root: SparseAutoencoder.from_pretrained(folder.format(root=root))


def activations_call(root: Path, files: list[str], **kwargs):
    model = AudioMosaicModel.from_pretrained(root / "encoder")
    fe = AudioMosaicFeatureExtractor.from_pretrained(root / "encoder")
    return collect_activations(model, fe, files, progress=False, **kwargs)


def head_features(per_class: int = 4, classes: int = 2):
    rng = np.random.default_rng(0)
    labels = np.repeat([f"c{i}" for i in range(classes)], per_class)
    return rng.normal(size=(len(labels), 4, 8)).astype(np.float32), labels


def fewshot_call(**kwargs):
    heads, labels = head_features(per_class=6)
    features = {"heads": heads, "pooled_last": heads[:, 0], "pooled_best": heads[:, 1]}
    index = np.arange(len(labels))
    return lambda: run_fewshot_benchmark(features, labels, index[index % 3 != 0], index[index % 3 == 0],
                                         **{"shots": (1,), "episodes": 1, "progress": False, **kwargs})


def probe_call(per_class: int = 4, classes: int = 2, **kwargs):
    heads, labels = head_features(per_class, classes)
    return lambda: probe_heads(heads.reshape(len(labels), 2, 2, 8), labels, progress=False, **kwargs)


def intervention_call(root: Path, heads_by_class: dict, **kwargs):
    from modeling_audiomosaic.interpret.fewshot import pooled_logistic_regression

    model = AudioMosaicModel.from_pretrained(root / "encoder").eval()
    inputs = torch.zeros(2, 64, 128)
    readout = pooled_logistic_regression().fit(np.random.default_rng(0).normal(size=(4, 32)), ["a", "b"] * 2)
    return evaluate_head_intervention(model, inputs, np.array(["a", "b"]), readout, heads_by_class, progress=False,
                                      **kwargs)


def convert_call(root: Path, out: Path, **kwargs):
    from modeling_audiomosaic.convert_ltu import convert_ltu

    arguments = {"release": root / "release_code", "out_dir": out, "base_model": root / "llama", **kwargs}
    return convert_ltu(**{key: str(value) if isinstance(value, Path) else value for key, value in arguments.items()})


def release_call(folder: str):
    from modeling_audiomosaic.convert_ltu import load_release_weights

    return lambda root: load_release_weights(root / folder)


def model_arguments(root: Path, **fields):
    from audiomosaic_training.ltu import ModelArguments

    return ModelArguments(**{key: value.format(root=root) if isinstance(value, str) else value
                             for key, value in fields.items()})


def data_arguments(**fields):
    from audiomosaic_training.ltu import DataArguments

    return DataArguments(**{"dataset": "rows.csv", **fields})


def effective_rank_call(root: Path, out: Path, **changes):
    from audiomosaic_training import effective_rank

    args = command_parser("effective-rank", None, effective_rank.add_arguments).parse_args(
        [str(root / "audio"), "--model", str(root / "encoder"), "--output_dir", str(out), "--quiet"])
    return effective_rank.run(argparse.Namespace(**{**vars(args), **changes}))


# name -> (call(root, out), exception, message). Each call is what a Python user would write.
PYTHON_CASES = {
    # modeling_audiomosaic.interpret.commands, with namespaces built or edited in Python
    "sae_train epochs=0": (lambda root, out: interpret_call("sae_train", root, out, epochs=0)(), ValueError,
                           "argument --epochs: expected an integer >= 1, got 0"),
    "sae_train layer=-9": (lambda root, out: interpret_call("sae_train", root, out, layer=-9)(), ValueError,
                           "--layer -9 is out of range"),
    "sae_train model missing": (lambda root, out: interpret_call("sae_train", root, out, model=str(root / "nope"))(),
                                ValueError, "argument --model: "),
    "sae_train output_dir a file": (
        lambda root, out: interpret_call("sae_train", root, out, output_dir=str(root / "a_file"))(), ValueError,
        "argument --output_dir"),
    "sae_train namespace of three options": (
        lambda root, out: sae_train(argparse.Namespace(data=str(root / "audio"), model=str(root / "encoder"),
                                                       output_dir=str(out), epochs=0)), ValueError,
        "argument --epochs"),
    "sae_train namespace without data": (
        lambda root, out: sae_train(argparse.Namespace(model=str(root / "encoder"), output_dir=str(out))), ValueError,
        "the following arguments are required: data"),
    "sae_train mode='tokens'": (lambda root, out: interpret_call("sae_train", root, out, mode="tokens")(), ValueError,
                                "argument --mode: invalid choice: 'tokens'"),
    "sae_report sae missing": (lambda root, out: interpret_call("sae_report", root, out, sae=str(root / "nope"))(),
                               ValueError, "does not exist"),
    "sae_report top_clips=0": (lambda root, out: interpret_call("sae_report", root, out, top_clips=0)(), ValueError,
                               "argument --top_clips"),
    "fewshot episodes=0": (lambda root, out: interpret_call("fewshot", root, out, episodes=0)(), ValueError,
                           "argument --episodes"),
    "fewshot shots='abc'": (lambda root, out: interpret_call("fewshot", root, out, shots="abc")(), ValueError,
                            "argument --shots"),
    "fewshot best_layer=99": (lambda root, out: interpret_call("fewshot", root, out, best_layer=99)(), ValueError,
                              "--best_layer 99 is out of range"),
    "heads top_heads=0": (lambda root, out: interpret_call("heads", root, out, top_heads=0)(), ValueError,
                          "argument --top_heads"),
    "heads max_eval_per_class=0": (lambda root, out: interpret_call("heads", root, out, max_eval_per_class=0)(),
                                   ValueError, "argument --max_eval_per_class"),
    "heads one class": (lambda root, out: interpret_call("heads", root, out, data=str(root / "one_class"))(),
                        ValueError, "holds one class"),
    # SparseAutoencoder and train_sae
    "SparseAutoencoder d_in=0": (lambda root, out: sae_call(d_in=0)(), ValueError, "positive integer widths"),
    "SparseAutoencoder k > d_sae": (lambda root, out: sae_call(k=17)(), ValueError, "k must be in 1..d_sae"),
    "SparseAutoencoder activation": (lambda root, out: sae_call(activation="gelu")(), ValueError, "Unknown activation"),
    "from_pretrained missing": (lambda root, out: from_pretrained_call("{root}/nope")(root), ValueError,
                                "nope does not exist"),
    "from_pretrained encoder folder": (lambda root, out: from_pretrained_call("{root}/encoder")(root), ValueError,
                                       "is an AudioMosaic encoder folder; expected a sparse-autoencoder folder"),
    "from_pretrained truncated": (lambda root, out: from_pretrained_call("{root}/sae_truncated")(root), ValueError,
                                  "is corrupt or not a sparse-autoencoder weights file"),
    "from_pretrained foreign tensors": (lambda root, out: from_pretrained_call("{root}/sae_foreign_tensors")(root),
                                        ValueError, "tensors that do not fit its config.json"),
    "train_sae epochs=0": (lambda root, out: train_sae_call(epochs=0)(), ValueError, "`epochs`"),
    "train_sae batch_size=0": (lambda root, out: train_sae_call(batch_size=0)(), ValueError, "`batch_size`"),
    "train_sae learning_rate=0": (lambda root, out: train_sae_call(learning_rate=0)(), ValueError,
                                  "`learning_rate`"),
    "train_sae one row": (lambda root, out: train_sae_call(rows=1)(), ValueError, "examples >= 2"),
    "evaluate_sae other width": (
        lambda root, out: evaluate_sae(SparseAutoencoder.from_pretrained(root / "sae_run" / "sae"), np.zeros((3, 48))),
        ValueError, "takes (examples, 32) activations, got shape (3, 48)"),
    "latent_class_report top_latents=0": (
        lambda root, out: latent_class_report(np.ones((4, 3)), np.array(list("aabb")), top_latents=0), ValueError,
        "`top_latents`"),
    # activations
    "Activations.load truncated": (lambda root, out: Activations.load(root / "sae_truncated" / "model.safetensors"),
                                   ValueError, "is corrupt or not a safetensors activation cache file"),
    "Activations.load missing": (lambda root, out: Activations.load(root / "nothing.safetensors"),
                                 FileNotFoundError, "nothing.safetensors does not exist"),
    "collect_activations no files": (lambda root, out: activations_call(root, []), ValueError,
                                     "needs at least one audio file"),
    "collect_activations batch_size=0": (lambda root, out: activations_call(root, [str(root / "audio/low/0.wav")],
                                                                            batch_size=0), ValueError,
                                         "`batch_size`"),
    "collect_activations missing file": (lambda root, out: activations_call(root, [str(root / "gone.wav")]),
                                         FileNotFoundError, "gone.wav does not exist"),
    "collect_activations token_layer=9": (lambda root, out: activations_call(root, [str(root / "audio/low/0.wav")],
                                                                             token_layer=9), ValueError,
                                          "token_layer 9 is out of range"),
    # few-shot and head functions
    "run_fewshot_benchmark episodes=0": (lambda root, out: fewshot_call(episodes=0)(), ValueError,
                                         "`episodes`"),
    "run_fewshot_benchmark shots=(0,)": (lambda root, out: fewshot_call(shots=(0,))(), ValueError,
                                         "`shots`"),
    "run_fewshot_benchmark too many shots": (lambda root, out: fewshot_call(shots=(9,))(), ValueError,
                                             "Class 'c0' has 4 training clips; 9 shots"),
    "probe_heads cv=1": (lambda root, out: probe_call(cv=1)(), ValueError, "`cv`"),
    "probe_heads one class": (lambda root, out: probe_call(classes=1)(), ValueError, "two or more classes"),
    "probe_heads cv above class size": (lambda root, out: probe_call(per_class=3, cv=4)(), ValueError,
                                        "at least cv=4 clips per class"),
    "evaluate_head_intervention n_random=-1": (
        lambda root, out: intervention_call(root, {"a": [(0, 0)], "b": [(1, 1)]}, n_random=-1), ValueError,
        "`n_random`"),
    "evaluate_head_intervention one class": (lambda root, out: intervention_call(root, {"a": [(0, 0)]}), ValueError,
                                             "compares two or more classes"),
    # convert_ltu
    "load_release_weights truncated": (lambda root, out: release_call("release_truncated")(root), ValueError,
                                       "extra_weights.bin is corrupt or not a PyTorch weights file"),
    "load_release_weights pickles code": (lambda root, out: release_call("release_code")(root), ValueError,
                                          "needs code to be unpickled"),
    "load_release_weights empty folder": (lambda root, out: release_call("one_class")(root), FileNotFoundError,
                                          "holds no extra_weights.bin"),
    "convert_ltu base model missing": (lambda root, out: convert_call(root, out, base_model=root / "nope"), ValueError,
                                       "argument --base-model: "),
    "convert_ltu base model pickles code": (lambda root, out: convert_call(root, out, base_model=root / "llama_pickle"),
                                            ValueError, "needs code to be unpickled"),
    "convert_ltu out_dir a file": (lambda root, out: convert_call(root, root / "a_file"), ValueError,
                                   "`out_dir`"),
    "convert_ltu num_heads=0": (lambda root, out: convert_call(root, out, num_heads=0), ValueError,
                                "argument --num-heads"),
    # audiomosaic_training.ltu
    "ModelArguments classifier as LTU folder": (
        lambda root, out: model_arguments(root, model_name_or_path="{root}/classifier"), ValueError,
        "expected an LTU model folder"),
    "ModelArguments language_model missing": (lambda root, out: model_arguments(root, language_model="{root}/nope"),
                                              ValueError, "argument --language_model"),
    "ModelArguments neither model": (lambda root, out: model_arguments(root), ValueError, "not both or neither"),
    "ModelArguments lora_r=0": (lambda root, out: model_arguments(root, language_model="{root}/llama", lora_r=0),
                                ValueError, "argument --lora_r"),
    "ModelArguments overrides of a previous stage": (
        lambda root, out: model_arguments(root, model_name_or_path="{root}/ltu",
                                          audio_config_overrides="max_length=64"),
        ValueError, "--audio_config_overrides configures the random encoder of a new model"),
    "ModelArguments audio_pooling": (lambda root, out: model_arguments(root, language_model="{root}/llama",
                                                                       audio_pooling="max"), ValueError,
                                     "argument --audio_pooling"),
    "DataArguments text_max_length=0": (lambda root, out: data_arguments(text_max_length=0), ValueError,
                                        "argument --text_max_length"),
    "DataArguments train_folds without column": (lambda root, out: data_arguments(train_folds="1"), ValueError,
                                                 "--train_folds needs --fold_column"),
    "DataArguments preset": (lambda root, out: data_arguments(feature_extractor_preset="music"), ValueError,
                             "argument --feature_extractor_preset"),
    "ltu.main classifier as LTU folder": (
        lambda root, out: training_ltu.main(
            ["--recipe", "ltu_stage2_all_cla", "--model_name_or_path", str(root / "classifier"), "--dataset",
             str(root / "audio"), "--output_dir", str(out)]), ValueError, "expected an LTU model folder"),
    # audiomosaic_training.effective_rank
    "effective_rank.run time_ratio=1.5": (lambda root, out: effective_rank_call(root, out, time_ratio=1.5),
                                          ValueError, "argument --time_ratio"),
    "effective_rank.run maskings='blur'": (lambda root, out: effective_rank_call(root, out, maskings="blur"),
                                           ValueError, "argument --maskings"),
    "effective_rank.run keeps no token": (lambda root, out: effective_rank_call(root, out, time_ratio=0.9,
                                                                                maskings="time"), ValueError,
                                          "keeps no token"),
    "effective_rank.run model missing": (lambda root, out: effective_rank_call(root, out, model=str(root / "nope")),
                                         ValueError, "argument --model"),
}


@pytest.mark.parametrize("case", sorted(PYTHON_CASES))
def test_python_entry_point_case(case, root, tmp_path):
    call, exception, message = PYTHON_CASES[case]
    before = snapshot(root, tmp_path)
    with pytest.raises(exception) as error_info:
        call(root, tmp_path / "out")
    assert message in str(error_info.value) and "\n" not in str(error_info.value).strip(), str(error_info.value)
    assert snapshot(root, tmp_path) == before


def test_validators_for_lists_and_weight_files(root, tmp_path):
    """The validators appended for these tools: comma lists, and weight-file headers read without their tensors."""
    from modeling_audiomosaic.validation import check_weight_files, choice_list, integer_list

    assert integer_list(minimum=1)("1, 5,20") == (1, 5, 20) and integer_list(minimum=1)((2,)) == (2,)
    assert choice_list(("none", "time"))("time,none") == ("time", "none")
    for bad in ("", "1,x", "0"):
        with pytest.raises(argparse.ArgumentTypeError, match="comma-separated integers >= 1"):
            integer_list(minimum=1)(bad)
    check_weight_files(root / "llama")  # a good folder passes
    with pytest.raises(ValueError, match="is corrupt or not a safetensors weights file"):
        check_weight_files(root / "llama_truncated")
    with pytest.raises(ValueError, match=r"needs code to be unpickled, .* \(needs test_edges_tools.NeedsCode"):
        check_weight_files(root / "llama_pickle")


def test_a_command_failing_while_writing_leaves_no_partial_output(root, tmp_path, capsys, monkeypatch):
    """The outputs are staged: when the second of fewshot's three files fails, none of them is left behind (only the
    activation cache, which is valid on its own)."""
    from modeling_audiomosaic.interpret import plots

    def failing_plot(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(plots, "plot_heatmap", failing_plot)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fewshot", str(root / "audio"), "--model", str(root / "encoder"), "--output_dir", str(out),
                  "--shots", "1", "--episodes", "1", "--quiet"])
    err = capsys.readouterr().err  # the work done so far was reported above the error
    assert exit_info.value.code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "audiomosaic fewshot: error: No space left on device"
    assert sorted(p.name for p in out.iterdir()) == ["cache"]
    assert not [p for p in tmp_path.rglob("*") if "partial" in p.name]


def test_sae_report_stdout_is_only_its_json(root, tmp_path, capsys):
    """A good run for contrast: stdout holds just the JSON summary (notes and progress go to stderr), so it can be
    piped, and the report's files are all there."""
    cli.run(["sae-report", str(root / "audio"), "--model", str(root / "encoder"), "--output_dir", str(tmp_path / "r"),
             "--sae", str(root / "sae_run" / "sae"), "--quiet"])
    summary = json.loads(capsys.readouterr().out)
    assert {"held_out", "probe_raw", "probe_codes", "downstream"} <= set(summary)
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"cache", "sae_report.json", "sae_class_latent_heatmap.png"}
