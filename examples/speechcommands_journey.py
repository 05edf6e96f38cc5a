#!/usr/bin/env python
"""The whole AudioMosaic journey on a CPU, on real audio given by path: pretrain -> probe -> fine-tune -> publish ->
classify, printing the scores.

    python examples/speechcommands_journey.py ../shared/data/speechcommands_test

DATA is a folder with a `meta.csv` (or a CSV file) listing audio paths, labels and folds; the defaults
(`--audio_column filename --label_column label --fold_column fold`, train folds 1-4, test fold 5) fit that layout and
any other dataset can name its own columns and folds. With the Speech Commands test set the folds are
speaker-disjoint, so every score below is on speakers never heard in training.

1. Pretraining (`training/pretrain.py`, recipe `pretrain_small_cpu.yaml`: a 192-wide, 4-block ViT on 1.28 s clips)
   on the training folds' audio, labels unused, for `--pretrain_epochs` epochs.
2. Probes of the frozen encoder (`training/probe.py`, recipe `probe_generic.yaml`): last-layer linear probe, a
   per-layer sweep (table + PNG), weighted-sum and attentive probes, all from one cached feature extraction.
3. Fine-tuning (`training/finetune.py`, the authors' Speech Commands recipe `finetune_spc2.yaml`: SpecAugment,
   patch masking, layer-wise lr decay, warm-up + cosine) for `--finetune_epochs` epochs, evaluated on the test fold.
   Short-run overrides (`--finetune_overrides`): no mixup / noise and cross-entropy (mixup's soft targets pay off over
   the recipe's 100-200 epochs, not over a few), base LR 5e-3. The run folder is published locally (weights, feature
   extractor, auto_map, results.json, model card).
4. Classification of a few test clips with `audiomosaic classify` and with `pipeline("audio-classification")`.

About 8 minutes on an otherwise idle 2-core CPU with the defaults (other jobs on the same cores slow every step
down a lot: PyTorch's threads then compete for the cores). Outputs go to `--output_dir` (default runs/journey); the summary
is `journey_summary.json` there.
"""

import argparse
import csv
import json
import time
from pathlib import Path




def banner(text: str) -> None:
    print(f"\n{'=' * 100}\n{text}\n{'=' * 100}", flush=True)


def resolve_table(data: Path) -> Path:
    if data.is_dir():
        for name in ("meta.csv", "metadata.csv"):
            if (data / name).is_file():
                return data / name
        raise SystemExit(f"{data} has no meta.csv / metadata.csv listing the audio, labels and folds.")
    if not data.is_file():
        raise SystemExit(f"{data} does not exist.")
    return data


def data_argv(table: Path, args) -> list[str]:
    return ["--dataset", str(table), "--audio_column", args.audio_column, "--label_column", args.label_column,
            "--fold_column", args.fold_column, "--train_folds", args.train_folds, "--eval_folds", args.test_folds,
            "--max_length", str(args.max_length), "--feature_extractor_preset", args.preset]


def pretrain(table: Path, args, out: Path) -> Path | None:
    banner(f"1/4 Pretraining a small AudioMosaic encoder on folds {args.train_folds} ({args.pretrain_epochs} epochs)")
    try:
        from audiomosaic_training import pretrain as pretrain_module
    except ImportError as error:
        print(f"training/pretrain.py is not available ({error}); the probes use a randomly initialised encoder.")
        return None
    target = out / "pretrain"
    pretrain_module.main([
        "--recipe", "pretrain_small_cpu", "--dataset", str(table),
        "--audio_column", args.audio_column, "--fold_column", args.fold_column, "--train_folds", args.train_folds,
        "--output_dir", str(target), "--num_train_epochs", str(args.pretrain_epochs), "--disable_tqdm", "true",
        "--save_steps", "0", "--effective_rank_steps", "0",
    ])
    return target


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="folder with meta.csv (or a CSV) of audio paths, labels and folds")
    parser.add_argument("--output_dir", default="runs/journey")
    parser.add_argument("--audio_column", default="filename")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--fold_column", default="fold")
    parser.add_argument("--train_folds", default="1,2,3,4")
    parser.add_argument("--test_folds", default="5")
    parser.add_argument("--max_length", type=int, default=128, help="frames per clip (100 per second)")
    parser.add_argument("--preset", default="speechcommands", help="normalisation: audioset | esc50 | speechcommands")
    parser.add_argument("--pretrain_epochs", type=int, default=6)
    parser.add_argument("--probe_epochs", type=int, default=60)
    parser.add_argument("--finetune_epochs", type=int, default=8)
    parser.add_argument("--finetune_overrides", default="--blr 0.005 --mixup 0 --loss ce --spc_noise false",
                        help="arguments added to the fine-tuning recipe (default: short-run settings)")
    parser.add_argument("--classify_clips", type=int, default=5)
    parser.add_argument("--skip_pretraining", action="store_true", help="probe and fine-tune a random encoder")
    args = parser.parse_args(argv)

    table = resolve_table(Path(args.data))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings, started = {}, time.perf_counter()

    start = time.perf_counter()
    encoder = None if args.skip_pretraining else pretrain(table, args, out)
    timings["pretrain"] = time.perf_counter() - start
    model_argv = ["--model_name_or_path", str(encoder)] if encoder else [
        "--config_overrides", "hidden_size=192,num_hidden_layers=4,num_attention_heads=3,intermediate_size=768"]

    banner(f"2/4 Probing the frozen encoder: train folds {args.train_folds}, test fold(s) {args.test_folds}")
    from audiomosaic_training import finetune, probe

    start = time.perf_counter()
    probes = probe.main(["--recipe", "probe_generic", *data_argv(table, args), *model_argv,
                         "--num_train_epochs", str(args.probe_epochs), "--output_dir", str(out / "probe")])
    timings["probe"] = time.perf_counter() - start

    banner(f"3/4 Fine-tuning with the authors' Speech Commands recipe ({args.finetune_epochs} epoch(s))")
    start = time.perf_counter()
    finetuned = finetune.main(["--recipe", "finetune_spc2", *data_argv(table, args), *model_argv,
                               "--num_train_epochs", str(args.finetune_epochs), "--warmup_epochs", "0.3",
                               "--output_dir", str(out / "finetune"), "--save_strategy", "no",
                               "--load_best_model_at_end", "false", "--eval_strategy", "epoch", "--use_cpu", "true",
                               "--disable_tqdm", "true", "--logging_steps", "20",
                               *args.finetune_overrides.split()])
    timings["finetune"] = time.perf_counter() - start

    banner("4/4 Classifying held-out clips with the published folder")
    from transformers import pipeline

    from modeling_audiomosaic import cli, load_audio

    start = time.perf_counter()
    with open(table) as handle:
        rows = [r for r in csv.DictReader(handle) if r[args.fold_column] in args.test_folds.split(",")]
    step = max(len(rows) // args.classify_clips, 1)
    picked = rows[::step][: args.classify_clips]
    paths = [str((table.parent / r[args.audio_column]).resolve()) for r in picked]
    predictions = cli.run(["classify", *paths, "--model", str(out / "finetune"), "--top_k", "3", "--quiet"])
    classifier = pipeline("audio-classification", model=str(out / "finetune"))
    pipeline_top = [classifier(load_audio(p), top_k=1)[0]["label"] for p in paths]
    print(f"\n{'true label':<12} {'audiomosaic classify (top 1)':<30} pipeline (top 1)")
    for row, prediction, top in zip(picked, predictions, pipeline_top):
        best = prediction["predictions"][0]
        shown = "{} ({:.2f})".format(best["label"], best["score"])
        print(f"{row[args.label_column]:<12} {shown:<30} {top}")
    timings["classify"] = time.perf_counter() - start
    timings["total"] = time.perf_counter() - started

    summary = {
        "data": str(table),
        "train_folds": args.train_folds,
        "test_folds": args.test_folds,
        "pretrained_encoder": str(encoder) if encoder else None,
        "pretrain_epochs": 0 if encoder is None else args.pretrain_epochs,
        "probes": {name: {k: v for k, v in entry.items() if k in ("accuracy", "train_seconds")}
                   for name, entry in probes["probes"].items()},
        "layer_sweep": {block: entry["accuracy"] for block, entry in probes.get("layer_sweep", {}).items()},
        "layer_sweep_plot": probes.get("layer_sweep_plot"),
        "probe_feature_extraction_seconds": probes["feature_extraction_seconds"],
        "finetune": {"epochs": args.finetune_epochs, "overrides": args.finetune_overrides,
                     **{k: finetuned["eval"][k] for k in ("accuracy", "mAP", "mAUC") if k in finetuned["eval"]}},
        "classified": [{"file": p["file"], "true": r[args.label_column], "predicted": p["predictions"][0]["label"]}
                       for p, r in zip(predictions, picked)],
        "pipeline_agrees_with_cli": pipeline_top == [p["predictions"][0]["label"] for p in predictions],
        "seconds": timings,
    }
    (out / "journey_summary.json").write_text(json.dumps(summary, indent=2))
    banner("Scores on the held-out test fold(s)")
    for name, entry in summary["probes"].items():
        print(f"  {name + ' probe':<22} accuracy {entry['accuracy']:.3f}")
    for block, accuracy in summary["layer_sweep"].items():
        print(f"  {'layer probe, block ' + str(int(block) + 1):<22} accuracy {accuracy:.3f}")
    print(f"  {'fine-tuned':<22} accuracy {summary['finetune']['accuracy']:.3f}")
    print(f"\nModel folder with card: {out / 'finetune'}   layer-sweep plot: {summary['layer_sweep_plot']}")
    print("Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return summary


if __name__ == "__main__":
    main()
