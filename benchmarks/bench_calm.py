#!/usr/bin/env python
"""CALM on an AudioMosaic encoder's heads, against the uniform soft vote, SAV and pooled logistic regression, with the
reference implementation's arithmetic beside ours on the same cached head features (issue 22, item 3).

    python benchmarks/bench_calm.py --model runs/sc_small_interp --output_dir runs/calm

For each data set (test fold 5; episodes drawn from the other folds) and shot count, every episode draws one support
set S (n clips per class) and one disjoint reliability set V (n more clips per class), the same for every method, so
the results are paired. Methods:

* `CALM` (ours, `CALMClassifier()` with the package defaults, fitted on S only: reliabilities cross-fitted inside S,
  uniform weights at 1 shot).
* `CALM, reliability split` (ours, fitted on S with V as its validation split) and `reference arithmetic` (the
  numpy transcription below of mvideet/CALM `SAVs/src/calm.py`: prototypes from S, reliabilities on V, its
  defaults tau 0.07, tau_w 1, margin_clamped, no top-k, no shrinkage, i.e. what `python -m src.run --task classify
  --train_path S --val_path V --test_path T` computes once the head vectors exist). These two see 2n labels per
  class; the others see n. Their predictions must agree clip for clip (`agrees_with_reference`).
* `CALM, pool reliabilities` (diagnostic: reliabilities from every other training clip, hundreds per class), the
  best the reliability weighting can do with this encoder's heads.
* `soft vote, all heads`, `SAV (top k)`, `logistic regression, pooled last` (the package's baselines on S).

Statistics: mean ± std over episodes, the paired difference to the uniform soft vote, wins/ties/losses, a two-sided
Wilcoxon signed-rank test (zeros split between the signs) and an exact two-sided sign test over episodes. Diagnostics
per method with weights: the share of test clips whose prediction differs from the uniform soft vote, the effective
number of heads per class (1 / sum_h w^2) and the share of classes whose reliabilities are all zero (uniform
fallback). Writes `<output_dir>/calm_results.json` and `calm_table.md`.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # a shared 2-core machine
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import binomtest, wilcoxon  # noqa: E402

from modeling_audiomosaic.interpret.activations import load_or_collect_activations  # noqa: E402
from modeling_audiomosaic.interpret.commands import read_labelled_audio, split_train_test  # noqa: E402
from modeling_audiomosaic.interpret.fewshot import (  # noqa: E402
    CALMClassifier,
    HeadSoftVoteClassifier,
    SAVClassifier,
    draw_support,
    pooled_logistic_regression,
)


DATASETS = {"speechcommands": "speechcommands_test", "drumkits": "drumkits", "fsdd": "fsdd"}
BASELINE = "soft vote, all heads"


# ----------------------------------------------------------------------------------------------------------------------
# The reference implementation's arithmetic (mvideet/CALM, SAVs/src/calm.py), transcribed to numpy for cached head
# vectors: calm_prepare_cache (class means of the support vectors, L2-normalised; query vectors L2-normalised per
# head), calm_compute_posteriors_from_cache (softmax over classes of cosine / tau), calm_compute_reliability
# ("margin_clamped": per class, mean over its validation items of max(0, p(c) - runner-up), the runner-up taken from
# the top-2 classes), calm_build_weights_from_r (tau_w = 1, no top-k: r / column sum, 1 / K for an all-zero column),
# calm_eval_from_posteriors (argmax over classes of sum_h w[h, c] p_h(c)).
# ----------------------------------------------------------------------------------------------------------------------


def _l2norm(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def reference_posteriors(queries: np.ndarray, prototypes_n: np.ndarray, tau: float) -> np.ndarray:
    logits = np.einsum("tjd,cjd->tjc", _l2norm(queries), prototypes_n) / tau
    logits = np.exp(logits - logits.max(axis=2, keepdims=True))
    return logits / logits.sum(axis=2, keepdims=True)


def reference_reliability(p_val: np.ndarray, val_labels: np.ndarray) -> np.ndarray:
    _, heads, classes = p_val.shape
    r = np.zeros((heads, classes))
    for c in range(classes):
        pv = p_val[val_labels == c]
        if len(pv) == 0:
            continue
        order = np.argsort(-pv, axis=2, kind="stable")[:, :, :2]
        top = np.take_along_axis(pv, order, axis=2)
        max_other = np.where(order[:, :, 0] == c, top[:, :, 1], top[:, :, 0])
        r[:, c] = np.maximum(pv[:, :, c] - max_other, 0.0).mean(axis=0)
    return r


def reference_weights(r: np.ndarray) -> np.ndarray:
    sums = r.sum(axis=0, keepdims=True)
    return np.where(sums > 1e-12, r / np.where(sums > 1e-12, sums, 1.0), 1.0 / r.shape[0])


def reference_calm_predict(support: np.ndarray, support_labels: np.ndarray, val: np.ndarray, val_labels: np.ndarray,
                           test: np.ndarray, tau: float = 0.07) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class indices of `test`, weights (heads, classes)); labels are class indices 0..C-1."""
    classes = int(support_labels.max()) + 1
    prototypes_n = _l2norm(np.stack([support[support_labels == c].mean(axis=0) for c in range(classes)]))
    weights = reference_weights(reference_reliability(reference_posteriors(val, prototypes_n, tau), val_labels))
    scores = (reference_posteriors(test, prototypes_n, tau) * weights[None]).sum(axis=1)
    return scores.argmax(axis=1), weights


# ----------------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------------


def paired_tests(a: np.ndarray, b: np.ndarray) -> dict:
    """a - b over paired episodes: mean, wins/ties/losses, Wilcoxon signed-rank (zsplit) and exact sign test."""
    diff = np.asarray(a) - np.asarray(b)
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    result = {"mean_difference": float(diff.mean()), "wins": wins, "ties": int(len(diff) - wins - losses),
              "losses": losses, "wilcoxon_p": 1.0, "sign_test_p": 1.0}
    if wins + losses:
        result["wilcoxon_p"] = float(wilcoxon(diff, zero_method="zsplit").pvalue)
        result["sign_test_p"] = float(binomtest(wins, wins + losses).pvalue)
    return result


def effective_heads(weights: np.ndarray) -> float:
    return float(np.mean(1.0 / (weights ** 2).sum(axis=0)))


# ----------------------------------------------------------------------------------------------------------------------
# Episodes
# ----------------------------------------------------------------------------------------------------------------------


def draw_at_most(labels: np.ndarray, candidates: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `count` random rows of `candidates` per class (a class with fewer clips left gives all it has)."""
    return np.concatenate([rng.choice(rows, min(count, len(rows)), replace=False)
                           for name in np.unique(labels[candidates])
                           if len(rows := candidates[labels[candidates] == name])])


def run_dataset(heads: np.ndarray, pooled: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                shots: list[int], episodes: int, seed: int) -> list[dict]:
    classes, encoded = np.unique(labels, return_inverse=True)
    sav_heads = min(20, max(1, heads.shape[1] // 4))
    records = []
    for shot_count in shots:
        for episode in range(episodes):
            rng = np.random.default_rng([seed, shot_count, episode])
            support = draw_support(labels, train, shot_count, rng)
            rest = np.setdiff1d(train, support)
            val = draw_at_most(labels, rest, shot_count, rng)
            pool = np.setdiff1d(rest, val)
            y_test = labels[test]
            soft = HeadSoftVoteClassifier().fit(heads[support], labels[support])
            soft_predicted = soft.predict(heads[test])
            predictions, weights = {BASELINE: soft_predicted}, {}

            def fitted(name, estimator, *extra):
                estimator.fit(heads[support], labels[support], *extra)
                predictions[name] = estimator.predict(heads[test])
                weights[name] = (estimator.weights_, estimator.reliability_)

            fitted("CALM", CALMClassifier())
            fitted("CALM, reliability split", CALMClassifier(), heads[val], labels[val])
            fitted("CALM, pool reliabilities", CALMClassifier(), heads[pool], labels[pool])
            reference, reference_w = reference_calm_predict(heads[support], encoded[support], heads[val],
                                                            encoded[val], heads[test])
            predictions["reference arithmetic (reliability split)"] = classes[reference]
            agreement = float((classes[reference] == predictions["CALM, reliability split"]).mean())
            weights["reference arithmetic (reliability split)"] = (reference_w, None)
            predictions[f"SAV (top {sav_heads} heads)"] = (SAVClassifier(n_heads=sav_heads)
                                                           .fit(heads[support], labels[support]).predict(heads[test]))
            predictions["logistic regression, pooled last"] = (pooled_logistic_regression()
                                                               .fit(pooled[support], labels[support])
                                                               .predict(pooled[test]))
            for name, predicted in predictions.items():
                record = {"method": name, "shots": shot_count, "episode": episode,
                          "accuracy": float((predicted == y_test).mean()),
                          "differs_from_soft_vote": float((predicted != soft_predicted).mean())}
                if name == "CALM, reliability split":
                    record["agrees_with_reference"] = agreement
                if name in weights:
                    w, r = weights[name]
                    record["effective_heads_per_class"] = effective_heads(w)
                    if r is not None:
                        record["all_zero_reliability_classes"] = float((r.sum(axis=0) <= 0).mean())
                records.append(record)
    return records


def summarize(records: list[dict]) -> list[dict]:
    table = []
    for shot_count in sorted({r["shots"] for r in records}):
        rows = [r for r in records if r["shots"] == shot_count]
        base = {r["episode"]: r["accuracy"] for r in rows if r["method"] == BASELINE}
        episodes = sorted(base)
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = {r["episode"]: r for r in rows if r["method"] == method}
            accuracy = np.array([mine[e]["accuracy"] for e in episodes])
            entry = {"method": method, "shots": shot_count, "episodes": len(episodes),
                     "accuracy_mean": float(accuracy.mean()), "accuracy_std": float(accuracy.std(ddof=1)),
                     "differs_from_soft_vote": float(np.mean([mine[e]["differs_from_soft_vote"] for e in episodes]))}
            for key in ("effective_heads_per_class", "all_zero_reliability_classes", "agrees_with_reference"):
                if key in mine[episodes[0]]:
                    entry[key] = float(np.mean([mine[e][key] for e in episodes]))
            if method != BASELINE:
                entry["vs_soft_vote"] = paired_tests(accuracy, np.array([base[e] for e in episodes]))
            table.append(entry)
    return table


def markdown(name: str, summary: list[dict]) -> str:
    lines = [f"#### {name}", "",
             "| shots | method | accuracy % | minus soft vote (W/T/L) | Wilcoxon p | sign p | predictions != soft vote "
             "| effective heads / class | all-zero classes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in summary:
        test = row.get("vs_soft_vote")
        paired = (f"{100 * test['mean_difference']:+.1f} ({test['wins']}/{test['ties']}/{test['losses']})", 
                  f"{test['wilcoxon_p']:.3g}", f"{test['sign_test_p']:.3g}") if test else ("-", "-", "-")
        heads = f"{row['effective_heads_per_class']:.1f}" if "effective_heads_per_class" in row else "-"
        zero = (f"{100 * row['all_zero_reliability_classes']:.0f} %" if "all_zero_reliability_classes" in row
                else "-")
        method = row["method"]
        if "agrees_with_reference" in row:
            method += f" (same prediction as the reference on {100 * row['agrees_with_reference']:.1f} % of clips)"
        lines.append(f"| {row['shots']} | {method} | {100 * row['accuracy_mean']:.1f} ± "
                     f"{100 * row['accuracy_std']:.1f} | {' | '.join(paired)} | "
                     f"{100 * row['differs_from_soft_vote']:.1f} % | {heads} | {zero} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="AudioMosaic encoder folder")
    parser.add_argument("--data_dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"subset of {','.join(DATASETS)}")
    parser.add_argument("--shots", default="1,5,20")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache_dir", default=None, help="activation cache (default: <output_dir>/cache)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from modeling_audiomosaic import AudioMosaicFeatureExtractor, AudioMosaicModel

    model = AudioMosaicModel.from_pretrained(args.model).eval()
    feature_extractor = AudioMosaicFeatureExtractor.from_pretrained(args.model)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, tables = {}, []
    for name in args.datasets.split(","):
        meta = Path(args.data_dir) / DATASETS[name] / "meta.csv"
        files, labels, folds = read_labelled_audio(str(meta), "filename", "label", "fold")
        train, test = split_train_test(labels, folds, "5")
        start = time.time()
        cache_dir = args.cache_dir or out / "cache"
        activations, _, _ = load_or_collect_activations(model, feature_extractor, files, cache_dir, progress=False)
        extraction = time.time() - start
        start = time.time()
        records = run_dataset(activations.head_features(), activations.hidden[:, -1].numpy(), labels, train, test,
                              [int(s) for s in args.shots.split(",")], args.episodes, args.seed)
        summary = summarize(records)
        results[name] = {"train_clips": int(len(train)), "test_clips": int(len(test)),
                         "extraction_seconds": extraction, "episodes_seconds": time.time() - start,
                         "summary": summary, "records": records}
        tables.append(markdown(f"{name} ({len(train)} training clips, {len(test)} test clips)", summary))
        print(tables[-1], flush=True)
    (out / "calm_results.json").write_text(json.dumps({"model": args.model, "args": vars(args), **results},
                                                      indent=2))
    (out / "calm_table.md").write_text("\n\n".join(tables) + "\n")


if __name__ == "__main__":
    main()
