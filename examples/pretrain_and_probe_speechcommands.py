#!/usr/bin/env python
"""Pretrain a small AudioMosaic encoder on a CPU and linear-probe it on held-out Speech Commands.

1. Pretraining data (audio only, labels unused): Speech Commands test-set folds 1-4 plus the drum kits, written as a
   CSV list of paths; `training/pretrain.py` with `training/recipes/pretrain_small_cpu.yaml` (1.28 s clips, a
   192-wide 4-block ViT). Re-running the script resumes or reuses the finished run.
2. Linear probes (standardised features, multinomial logistic regression; C picked on fold 4, then refit on folds
   1-4) on the 12-class Speech Commands task, tested on the speaker-disjoint fold 5 that pretraining never saw:
   (a) the pretrained encoder's `pooler_output`, (b) the same architecture with random weights (the pretraining
   initialisation, same seed), (c) log-Mel mean + std over the real frames (256-d); and (a) at the intermediate
   encoder exports, to show the probe accuracy over training.
3. Figures: loss and effective-rank curves (PNG) and a JSON summary.

    python examples/pretrain_and_probe_speechcommands.py --output_dir runs/sc_small

On the 2-core development machine: ~28 min of pretraining, then ~5-25 min of probing (the logistic-regression fits
dominate). `--skip_pretraining` re-probes a finished run. Figures: benchmarks/RESULTS.md, section Pretraining.
"""

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicFeatureExtractor, AudioMosaicModel, decode_audio
from modeling_audiomosaic.embeddings import mean_std_over_time


ROOT = Path(__file__).resolve().parents[1]


def write_pretraining_list(data_dir: Path, path: Path) -> int:
    rows = []
    for name, folds in (("speechcommands_test", {"1", "2", "3", "4"}), ("drumkits", None)):
        with open(data_dir / name / "meta.csv") as handle:
            for row in csv.DictReader(handle):
                if folds is None or row["fold"] in folds:
                    rows.append({"audio": str((data_dir / name / row["filename"]).resolve()), "source": name})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["audio", "source"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def pretrain(args) -> float:
    list_path = Path(args.output_dir) / "pretrain_list.csv"
    count = write_pretraining_list(Path(args.data_dir), list_path)
    print(f"pretraining list: {count} clips -> {list_path}", flush=True)
    command = [
        sys.executable, "-m", "audiomosaic_training.pretrain", "--recipe", args.recipe,
        "--dataset", str(list_path), "--output_dir", args.output_dir,
        "--num_train_epochs", str(args.epochs), "--export_steps", str(args.export_steps), "--disable_tqdm",
    ]
    print(" ".join(command), flush=True)
    start = time.time()
    subprocess.run(command, check=True)
    return time.time() - start


@torch.no_grad()
def encoder_features(model: AudioMosaicModel, inputs: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    model.eval()
    return torch.cat([model(inputs[i : i + batch_size]).pooler_output for i in range(0, len(inputs), batch_size)]).numpy()


def logmel_mean_std(inputs: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """The hand-made baseline: mean and std of every log-Mel bin over a clip's real frames (2 x num_mel_bins)."""
    return torch.cat(mean_std_over_time(inputs, mask), 1).numpy()


def probe(train_x, train_y, train_fold, test_x, test_y) -> dict:
    """Standardise, pick C on fold 4 (trained on folds 1-3), refit on folds 1-4, score fold 5 (`test_correct`: per
    test clip, whether it was classified right)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def fit(x, y, c):
        scaler = StandardScaler().fit(x)
        classifier = LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(x), y)
        return lambda z: classifier.predict(scaler.transform(z))

    validation = train_fold == "4"
    scores = {}
    for c in (0.01, 0.1, 1.0, 10.0):
        predict = fit(train_x[~validation], train_y[~validation], c)
        scores[c] = float((predict(train_x[validation]) == train_y[validation]).mean())
    best = max(scores, key=scores.get)
    correct = fit(train_x, train_y, best)(test_x) == test_y
    return {"test_accuracy": float(correct.mean()), "C": best, "validation_accuracy": scores, "test_correct": correct}


def plot_curves(log_path: Path, figure_path: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    loss = [(e["step"], e["loss"], e["contrastive_accuracy"]) for e in entries if "loss" in e]
    rank = [(e["step"], e["effective_rank"], e["effective_rank_projection"]) for e in entries if "effective_rank" in e]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), dpi=80)
    axes[0].plot([s for s, _, _ in loss], [v for _, v, _ in loss])
    axes[0].set(title="NT-Xent loss", xlabel="step")
    axes[1].plot([s for s, _, _ in loss], [a for _, _, a in loss])
    axes[1].set(title="contrastive top-1 accuracy", xlabel="step")
    axes[2].plot([s for s, _, _ in rank], [r for _, r, _ in rank], label="pooled (encoder)")
    axes[2].plot([s for s, _, _ in rank], [r for _, _, r in rank], label="projection")
    axes[2].set(title="effective rank, probe batch", xlabel="step")
    axes[2].legend()
    fig.tight_layout()
    figure_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure_path)
    return {
        "loss_first": loss[0][1], "loss_last": loss[-1][1],
        "loss_last_50_steps": float(np.mean([v for s, v, _ in loss if s > loss[-1][0] - 50])),
        "accuracy_first": loss[0][2], "accuracy_last": loss[-1][2],
        "effective_rank_first": rank[0][1], "effective_rank_last": rank[-1][1],
        "effective_rank_min": min(r for _, r, _ in rank),
        "effective_rank_projection_first": rank[0][2], "effective_rank_projection_last": rank[-1][2],
        "steps": loss[-1][0],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--output_dir", default=str(ROOT / "runs" / "sc_small"))
    parser.add_argument("--recipe", default="pretrain_small_cpu.yaml")
    parser.add_argument("--epochs", type=float, default=24)
    parser.add_argument("--export_steps", type=int, default=200)
    parser.add_argument("--figure", default=str(ROOT / "benchmarks" / "pretrain_speechcommands_curves.png"))
    parser.add_argument("--skip_pretraining", action="store_true", help="Only probe an existing run.")
    args = parser.parse_args()
    torch.set_num_threads(2)

    seconds = None if args.skip_pretraining else pretrain(args)
    output_dir = Path(args.output_dir)
    summary = {"pretraining_wall_seconds": seconds, "curves": plot_curves(output_dir / "log.jsonl", Path(args.figure))}
    summary["pretrain_state"] = {k: v for k, v in json.loads((output_dir / "pretrain_state.json").read_text()).items()
                                if k in ("global_step", "epoch", "samples_seen", "failed_loads", "nonfinite_steps")}

    # Probe data: Speech Commands folds 1-4 (train) and 5 (test), un-augmented 1.28 s features.
    sc = Path(args.data_dir) / "speechcommands_test"
    with open(sc / "meta.csv") as handle:
        rows = list(csv.DictReader(handle))
    extractor = AudioMosaicFeatureExtractor.from_pretrained(output_dir)
    waveforms = [decode_audio(str(sc / row["filename"]), 16000) for row in rows]
    batch = extractor(waveforms, sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
    inputs, mask = batch["input_values"], batch["attention_mask"].bool()
    labels = np.array([row["label"] for row in rows])
    folds = np.array([row["fold"] for row in rows])
    train, test = folds != "5", folds == "5"

    def run_probe(features: np.ndarray, name: str) -> dict:
        start = time.time()
        result = probe(features[train], labels[train], folds[train], features[test], labels[test])
        del result["test_correct"]  # per-clip, for paired tests; not written to the summary
        print(f"probe {name}: fold-5 accuracy {result['test_accuracy']:.4f} (C={result['C']}, "
              f"{time.time() - start:.0f} s)", flush=True)
        return result

    results = {}
    pretrained = AudioMosaicModel.from_pretrained(output_dir)
    results["a_pretrained"] = run_probe(encoder_features(pretrained, inputs), "a_pretrained")
    config = AudioMosaicConfig.from_pretrained(output_dir)
    torch.manual_seed(7)  # the recipe's seed: exactly the weights the run started from
    from modeling_audiomosaic import AudioMosaicForPreTraining

    results["b_random_init"] = run_probe(encoder_features(AudioMosaicForPreTraining(config).audiomosaic, inputs),
                                         "b_random_init")
    results["c_logmel_mean_std"] = run_probe(logmel_mean_std(inputs, mask), "c_logmel_mean_std")
    over_training = {}
    for export in sorted(output_dir.glob("encoder_step_*"), key=lambda p: int(p.name.rsplit("_", 1)[1])):
        step = int(export.name.rsplit("_", 1)[1])
        over_training[step] = run_probe(encoder_features(AudioMosaicModel.from_pretrained(export), inputs),
                                        export.name)["test_accuracy"]
    results["a_pretrained_over_training"] = over_training
    summary["probe"] = results
    summary["probe_chance"] = float(max(np.mean(labels[test] == c) for c in set(labels[test])))
    (output_dir / "probe_results.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
