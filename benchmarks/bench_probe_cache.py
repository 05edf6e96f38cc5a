#!/usr/bin/env python
"""Cached vs recomputed probing, side by side: the same probe, seed, data order, optimiser and schedule, trained
(a) on per-layer features extracted once (`training/probe.py --cache_features true`) and (b) through the full model
with its frozen encoder recomputing every clip every epoch (`--cache_features false`).

    python benchmarks/bench_probe_cache.py ../shared/data/speechcommands_test/meta.csv \
        --audio_column filename --fold_column fold --train_folds 1,2,3,4 --eval_folds 5 \
        --model runs/journey/pretrain --epochs 5 --probes linear,attentive

Prints, per probe: wall time of each path (the cached one including its share of the one-off extraction), the
speed-up, the test scores of both and the largest difference between the trained head parameters; also the measured
per-epoch costs, from which the speed-up at the recipes' 60 epochs follows. Writes a JSON with `--output`.
"""

import argparse
import copy
import json
import time
from pathlib import Path


import torch

from audiomosaic_training import classification, probe


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="folder / CSV of labelled audio")
    parser.add_argument("--audio_column", default="audio")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--fold_column", default=None)
    parser.add_argument("--train_folds", default=None)
    parser.add_argument("--eval_folds", default=None)
    parser.add_argument("--model", default=None, help="encoder checkpoint (default: a random 192-wide, 4-block model)")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--preset", default="speechcommands")
    parser.add_argument("--probes", default="linear,attentive", help="comma-separated: linear, layer, weighted_sum, "
                                                                      "attentive")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--blr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--output", default=None, help="JSON file for the results")
    args = parser.parse_args(argv)

    model_args = classification.ModelArguments(
        model_name_or_path=args.model,
        config_overrides=None if args.model else "hidden_size=192,num_hidden_layers=4,num_attention_heads=3,"
                                                 "intermediate_size=768",
    )
    data_args = classification.DataArguments(
        dataset=args.dataset, audio_column=args.audio_column, label_column=args.label_column,
        fold_column=args.fold_column, train_folds=args.train_folds, eval_folds=args.eval_folds,
        max_length=args.max_length, feature_extractor_preset=args.preset, max_train_samples=args.max_train_samples,
    )
    probe_args = probe.ProbeArguments(num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
                                      blr=args.blr, seed=args.seed, warmup_epochs=min(1.0, args.epochs / 5))
    torch.manual_seed(args.seed)
    device = torch.device("cpu")
    prepared = classification.prepare(model_args, data_args, args.seed)
    head_args = copy.copy(model_args)
    head_args.freeze_encoder = True
    base = classification.build_model(head_args, prepared.labels, "single_label_classification", prepared.max_length)
    factory = probe.ProbeFactory(base, args.seed)
    print(f"{len(prepared.train_targets)} train / {len(prepared.eval_targets)} test clips, "
          f"{sum(p.numel() for p in base.audiomosaic.parameters()) / 1e6:.2f}M-parameter encoder, "
          f"{args.epochs} epochs, torch threads {torch.get_num_threads()}", flush=True)

    start = time.perf_counter()
    caches = {split: probe.cached_features(base.audiomosaic, prepared, data_args, split, 64, device)
              for split in ("train", "eval")}
    extraction = time.perf_counter() - start
    print(f"one-off feature extraction (train + test): {extraction:.1f} s", flush=True)

    results = {"num_train": len(prepared.train_targets), "num_eval": len(prepared.eval_targets),
               "epochs": args.epochs, "extraction_seconds": extraction, "probes": {}}
    names = [n.strip() for n in args.probes.split(",") if n.strip()]
    for name in names:
        row = {}
        for cached in (True, False):
            model = factory(name)
            start = time.perf_counter()
            stats = probe.train_probe(model, prepared, data_args, probe_args, device,
                                      caches["train"] if cached else None)
            metrics, logits = probe.evaluate_probe(model, prepared, data_args, probe_args, device,
                                                   caches["eval"] if cached else None)
            seconds = time.perf_counter() - start
            row["cached" if cached else "recomputed"] = {
                "seconds": seconds, "train_seconds": stats["train_seconds"], "final_loss": stats["final_loss"],
                **metrics,
            }
            row[f"_params_{cached}"] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            row[f"_logits_{cached}"] = torch.as_tensor(logits)
        a, b = row.pop("_params_True"), row.pop("_params_False")
        row["max_abs_param_difference"] = max(float((a[n] - b[n]).abs().max()) for n in a)
        row["max_abs_logit_difference"] = float((row.pop("_logits_True") - row.pop("_logits_False")).abs().max())
        # The cached path pays the extraction once for every probe; charge it in full here (one probe per run).
        cached_total = row["cached"]["seconds"] + extraction
        row["cached"]["seconds_with_extraction"] = cached_total
        row["speedup"] = row["recomputed"]["seconds"] / cached_total
        row["same_accuracy"] = row["cached"]["accuracy"] == row["recomputed"]["accuracy"]
        per_epoch_cached = row["cached"]["train_seconds"] / args.epochs
        per_epoch_recomputed = row["recomputed"]["train_seconds"] / args.epochs
        row["speedup_at_60_epochs_from_per_epoch_costs"] = (
            (60 * per_epoch_recomputed + row["recomputed"]["seconds"] - row["recomputed"]["train_seconds"])
            / (extraction + 60 * per_epoch_cached + row["cached"]["seconds"] - row["cached"]["train_seconds"])
        )
        results["probes"][name] = row
        print(f"{name:>12}: cached {cached_total:7.1f} s (extraction {extraction:.1f} + {row['cached']['seconds']:.1f})"
              f" | recomputed {row['recomputed']['seconds']:7.1f} s | speed-up x{row['speedup']:.1f}"
              f" (x{row['speedup_at_60_epochs_from_per_epoch_costs']:.0f} at 60 epochs)"
              f" | accuracy {row['cached']['accuracy']:.4f} vs {row['recomputed']['accuracy']:.4f}"
              f" | max |d param| {row['max_abs_param_difference']:.1e}, max |d logit| "
              f"{row['max_abs_logit_difference']:.1e}", flush=True)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
