#!/usr/bin/env python
"""What a fixed CPU budget of pretraining buys: waveform vs spectral augmentation, the released recipe vs a
small-budget one, on Speech Commands and on the drum kits (issue 10, item 3).

For every dataset (pretraining on folds 1-4 only, labels unused) and every variant:

1. calibration: two short runs (1 and 5 steps) measure the CPU seconds one step costs (process and DataLoader
   workers, `getrusage`), so that the run's step count (and with it its warm-up + cosine schedule) fits the budget;
2. pretraining a 192-wide, 6-block encoder (3 heads, projector 512 -> 128) for `budget / cost per step` steps;
3. probing: standardised multinomial logistic regression on the pooled features (C picked on fold 4 after training on
   folds 1-3, refit on folds 1-4), tested on the held-out fold 5 (speaker-disjoint for Speech Commands, kit-disjoint
   for the drums), against the same architecture at its random initialisation and the log-Mel mean + std baseline.
   Two poolings of the encoder: `pooler_output` (the model's embedding, which averages all tokens) and band
   statistics (mean + std over time of each frequency band's tokens: the log-Mel baseline's own pooling).

    python examples/budget_study.py --cpu_minutes 25 --output_dir runs/budget
    python examples/budget_study.py --cpu_minutes 2 --datasets drumkits --variants released_spectral   # a quick look
    python examples/budget_study.py --datasets drumkits --steps 254 \\
        --variants released_spectral,released_spectral-pitch  # ablation: the same updates for every variant
    python examples/budget_study.py --seed 8 --output_dir runs/budget_seed8   # the spread between seeds

Prints one markdown table (and writes `budget_study.json` in `--output_dir`). Finished runs are reused.
"""

import argparse
import csv
import itertools
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from audiomosaic_training.augment import recipe_transforms
from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicFeatureExtractor, AudioMosaicModel, decode_audio
from modeling_audiomosaic import AudioMosaicForPreTraining
from modeling_audiomosaic.embeddings import band_statistics
from pretrain_and_probe_speechcommands import encoder_features, logmel_mean_std, probe


ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SEED = 7

# 192-wide, 6-block encoder; everything else from the small CPU recipe (official masking, BatchNorm projector,
# AdamW 1e-3, wd 0.05, cosine to 1e-6).
MODEL = {"hidden_size": 192, "num_hidden_layers": 6, "num_attention_heads": 3, "intermediate_size": 768}
DATASETS = {
    # name: (folder in --data_dir, frames per clip, normalisation)
    "speechcommands": ("speechcommands_test", 128, "speechcommands"),
    "drumkits": ("drumkits", 208, "auto"),
}
VARIANTS = {
    # The small-budget recipe: the Table 9 "aug2" chain (what learns in a few hundred steps, see RESULTS.md) on the
    # spectral backend, with smaller batches for more updates in the same budget.
    "small_budget_spectral": {"augmentation": "aug2", "augmentation_backend": "spectral",
                              "per_device_train_batch_size": 64},
    # The released augmentation (paper Table 8 chain + roll/magnitude) on each backend.
    "released_spectral": {"augmentation": "official", "augmentation_backend": "spectral"},
    "released_waveform": {"augmentation": "official", "augmentation_backend": "waveform"},
}


# The encoder's features the probes see: the model's embedding, and the log-Mel baseline's own pooling of its tokens.
POOLINGS = {"pooler_output": lambda encoder, inputs, mask: encoder_features(encoder, inputs),
            "band statistics": lambda encoder, inputs, mask: band_statistics(encoder, inputs, mask).numpy()}


def variant_settings(name: str) -> dict:
    """`VARIANTS[name]`, or for `variant-transform[-transform...]` (ablations) that variant's recipe without those
    transforms, e.g. `released_spectral-pitch`."""
    base, _, left_out = name.partition("-")
    if base not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}; expected one of {list(VARIANTS)}, optionally followed by "
                         "`-transform` for each transform left out (e.g. released_spectral-pitch)")
    variant = dict(VARIANTS[base])
    if left_out:
        variant["augmentation"] = f"{variant['augmentation']}-{left_out}"
        recipe_transforms(variant["augmentation"])  # a clear error for a transform the recipe does not have
    return variant


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_pretraining_list(data_dir: Path, folder: str, path: Path) -> int:
    with open(data_dir / folder / "meta.csv") as handle:
        rows = [str((data_dir / folder / row["filename"]).resolve()) for row in csv.DictReader(handle)
                if row["fold"] != "5"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("audio\n" + "\n".join(rows) + "\n")
    return len(rows)


def pretrain_command(clips: Path, output_dir: Path, frames: int, preset: str, variant: dict, steps: int,
                     workers: int) -> list[str]:
    settings = {"recipe": "pretrain_small_cpu", **MODEL, "max_length": frames, "feature_extractor_preset": preset,
                "per_device_train_batch_size": 128, "seed": DEFAULT_SEED, **variant, "max_steps": steps,
                "warmup_steps": max(1, steps // 20), "dataloader_num_workers": workers,
                # One model thread: a CPU budget buys the most steps that way (no OpenMP barriers or spinning; on the
                # shared 2-core machine 1.95x the samples per CPU-second of 2 threads, bench_pretrain --part cpu_step).
                "torch_threads": 1,
                "save_steps": 0, "effective_rank_steps": steps, "logging_steps": max(1, steps // 20)}
    command = [sys.executable, "-m", "audiomosaic_training.pretrain", "--dataset", str(clips),
               "--output_dir", str(output_dir), "--overwrite_output_dir", "--resume", "no", "--disable_tqdm"]
    for key, value in settings.items():
        command += [f"--{key}", str(value)]
    return command


def run_pretraining(command: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one pretraining subprocess."""
    cpu, wall = children_cpu_seconds(), time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return children_cpu_seconds() - cpu, time.perf_counter() - wall


def pretrain_within_budget(clips: Path, run_dir: Path, frames: int, preset: str, variant: dict, budget: float,
                           workers: int, fixed_steps: int | None = None) -> dict:
    """Calibrate the CPU cost of a step, then pretrain as many steps as the budget (CPU seconds) allows; or, with
    `fixed_steps`, that many steps (ablations: every variant gets the same number of updates, whatever else the
    machine runs meanwhile)."""
    summary_path = run_dir / "budget_run.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if fixed_steps is None or summary["steps"] == fixed_steps:
            return summary
    per_step = None
    if fixed_steps is None:
        costs = {}
        for steps in (1, 5):
            command = pretrain_command(clips, run_dir / f"calibration_{steps}", frames, preset, variant, steps, workers)
            command += ["--probe_size", "0"]
            costs[steps] = run_pretraining(command)[0]
        per_step = max((costs[5] - costs[1]) / 4, 1e-3)
        startup = max(costs[1] - per_step, 0.0)
        steps = max(int((budget - startup) / per_step), 1)
        print(f"  {per_step:.2f} CPU-s per step, {startup:.0f} CPU-s start-up -> {steps} steps", flush=True)
    else:
        steps = fixed_steps
    cpu, wall = run_pretraining(pretrain_command(clips, run_dir, frames, preset, variant, steps, workers))
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    ranked = [entry for entry in log if "effective_rank" in entry]
    summary = {"steps": steps, "cpu_seconds": cpu, "wall_seconds": wall,
               "cpu_seconds_per_step": per_step if per_step is not None else cpu / steps,
               "samples_per_second": steps * int(variant.get("per_device_train_batch_size", 128)) / wall,
               "effective_rank_first": ranked[0]["effective_rank"], "effective_rank_last": ranked[-1]["effective_rank"],
               "final_loss": next(e["loss"] for e in reversed(log) if "loss" in e),
               "final_contrastive_accuracy": next(e["contrastive_accuracy"] for e in reversed(log) if "loss" in e)}
    summary_path.write_text(json.dumps(summary, indent=2))
    return summary


def probe_inputs(data_dir: Path, folder: str, frames: int, preset: str, run_dir: Path):
    with open(data_dir / folder / "meta.csv") as handle:
        rows = list(csv.DictReader(handle))
    # The run's own feature extractor (with `auto`, the statistics of its training folds).
    extractor = AudioMosaicFeatureExtractor.from_pretrained(run_dir)
    waveforms = [decode_audio(str(data_dir / folder / row["filename"]), 16000) for row in rows]
    batch = extractor(waveforms, sampling_rate=16000, return_attention_mask=True, truncation=True,
                      return_tensors="pt")
    labels = np.array([row["label"] for row in rows])
    folds = np.array([row["fold"] for row in rows])
    return batch["input_values"], batch["attention_mask"].bool(), labels, folds


def probe_correct(features: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Per fold-5 clip, whether the probe trained on folds 1-4 classifies it right."""
    train, test = folds != "5", folds == "5"
    return probe(features[train], labels[train], folds[train], features[test], labels[test])["test_correct"]


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact McNemar test of two probes on the same test clips: clips only a / only b gets right, two-sided p."""
    from scipy.stats import binomtest

    only_a, only_b = int((correct_a & ~correct_b).sum()), int((correct_b & ~correct_a).sum())
    p_value = binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    return {"only_a": only_a, "only_b": only_b, "p": float(p_value)}


def paired_table(pretrained: dict, logmel: dict) -> str:
    """Exact McNemar tests on each dataset's test clips, per pooling (`pretrained[(dataset, pooling)][variant]`:
    per-clip correctness): every variant against the log-Mel baseline (`logmel[dataset]`), and the variants against
    each other."""
    lines = ["| dataset | pooling | a | b | clips only a gets right | only b | McNemar p |", "|---" * 7 + "|"]
    for (dataset, pooling), variants in pretrained.items():
        pairs = [(name, "log-Mel mean/std") for name in variants] + list(itertools.combinations(variants, 2))
        for name_a, name_b in pairs:
            test = mcnemar(variants[name_a], logmel[dataset] if name_b == "log-Mel mean/std" else variants[name_b])
            lines.append(f"| {dataset} | {pooling} | {name_a} | {name_b} | {test['only_a']} | {test['only_b']} | "
                         f"{test['p']:.3f} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    lines = ["| dataset | variant | steps in budget | CPU-min | samples/s | effective rank (start → end) | "
             "probe: pretrained | random init | band statistics: pretrained | random init | log-Mel mean/std |",
             "|---" * 11 + "|"]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['variant']} | {r['steps']} | {r['cpu_seconds'] / 60:.1f} | "
            f"{r['samples_per_second']:.1f} | {r['effective_rank_first']:.1f} → {r['effective_rank_last']:.1f} | "
            f"**{100 * r['probe_pretrained']:.1f} %** | {100 * r['probe_random_init']:.1f} % | "
            f"**{100 * r['probe_bands_pretrained']:.1f} %** | {100 * r['probe_bands_random_init']:.1f} % | "
            f"{100 * r['probe_logmel_mean_std']:.1f} % |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--output_dir", default=str(ROOT / "runs" / "budget"))
    parser.add_argument("--cpu_minutes", type=float, default=25.0, help="pretraining budget per run (CPU time)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--dataloader_num_workers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None,
                        help="pretrain every variant for this many steps instead of calibrating to --cpu_minutes")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed of every run (initialisation, data order, augmentation) and of the random-init "
                        "baseline; a second seed in another --output_dir measures the spread of one run")
    args = parser.parse_args()
    unknown = set(args.datasets.split(",")) - set(DATASETS)
    if unknown:
        raise SystemExit(f"unknown dataset {sorted(unknown)}; expected some of {list(DATASETS)}")
    variants = {name: {**variant_settings(name), "seed": args.seed} for name in args.variants.split(",")}
    torch.set_num_threads(2)
    data_dir, output_dir = Path(args.data_dir), Path(args.output_dir)
    rows, pretrained_correct, logmel_correct = [], {}, {}
    for dataset in args.datasets.split(","):
        folder, frames, preset = DATASETS[dataset]
        clips = output_dir / dataset / "pretrain_list.csv"
        print(f"{dataset}: {write_pretraining_list(data_dir, folder, clips)} pretraining clips (folds 1-4)", flush=True)
        baselines = None
        for name, variant in variants.items():
            run_dir = output_dir / dataset / name
            budget = f"{args.steps} steps" if args.steps else f"{args.cpu_minutes} CPU-minutes"
            print(f"{dataset} / {name}: pretraining for {budget}", flush=True)
            run = pretrain_within_budget(clips, run_dir, frames, preset, variant, 60 * args.cpu_minutes,
                                         args.dataloader_num_workers, args.steps)
            inputs, mask, labels, folds = probe_inputs(data_dir, folder, frames, preset, run_dir)

            def probes(encoder) -> dict:
                return {pooling: probe_correct(features(encoder, inputs, mask), labels, folds)
                        for pooling, features in POOLINGS.items()}

            pretrained = probes(AudioMosaicModel.from_pretrained(run_dir))
            for pooling, correct in pretrained.items():
                pretrained_correct.setdefault((dataset, pooling), {})[name] = correct
            if baselines is None:  # the same for every variant: the runs share seed, architecture and data
                torch.manual_seed(args.seed)  # the run's seed: exactly the weights pretraining started from
                random_init = probes(AudioMosaicForPreTraining(AudioMosaicConfig.from_pretrained(run_dir)).audiomosaic)
                logmel_correct[dataset] = probe_correct(logmel_mean_std(inputs, mask), labels, folds)
                baselines = {"probe_random_init": float(random_init["pooler_output"].mean()),
                             "probe_bands_random_init": float(random_init["band statistics"].mean()),
                             "probe_logmel_mean_std": float(logmel_correct[dataset].mean())}
            row = {"dataset": dataset, "variant": name, **run, **baselines,
                   "probe_pretrained": float(pretrained["pooler_output"].mean()),
                   "probe_bands_pretrained": float(pretrained["band statistics"].mean())}
            print(json.dumps(row), flush=True)
            rows.append(row)
    (output_dir / "budget_study.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))
    print(paired_table(pretrained_correct, logmel_correct))


if __name__ == "__main__":
    main()
