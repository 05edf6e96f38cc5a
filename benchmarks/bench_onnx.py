#!/usr/bin/env python
"""onnxruntime against PyTorch on CPU, side by side in one run: max |error| on real clips, speed ratio, and the
accuracy change of int8 dynamic quantisation on a real labelled set.

    python benchmarks/bench_onnx.py runs/drum_timeline/finetune ../shared/data/drumkits --folds 5

MODEL is a classifier folder (e.g. the one `examples/drumkits_timeline.py` fine-tunes on drum-kit folds 1-4); DATA a
folder with meta.csv (`filename,label,fold`); the clips of `--folds` are featurised once with the model's feature
extractor and fed to PyTorch (float32, eager and sdpa attention), onnxruntime float32 and onnxruntime int8
(`audiomosaic export-onnx --int8`). Timings are the median of `--repeats` passes over the whole set at batch 1 and
batch `--batch_size`, with `--threads` threads for both runtimes. `--vit_b` adds a speed/parity row for a randomly
initialised released-size ViT-B/16 classifier at 1024 frames (accuracy is meaningless there).
"""

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def timed(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_features(model_dir: Path, data: Path, folds: set[str]) -> tuple[torch.Tensor, list[str]]:
    from modeling_audiomosaic import AudioMosaicFeatureExtractor, load_audio

    fe = AudioMosaicFeatureExtractor.from_pretrained(model_dir)
    with open(data / "meta.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row["fold"] in folds]
    waveforms = [load_audio(data / row["filename"]) for row in rows]
    features = fe(waveforms, sampling_rate=16000, truncation=True, return_tensors="pt")["input_values"]
    return features, [row["label"] for row in rows]


def compare(model_dir: Path, features: torch.Tensor, labels: list[str] | None, args) -> dict:
    import onnxruntime

    from modeling_audiomosaic import AudioMosaicForAudioClassification
    from modeling_audiomosaic.onnx_export import export_onnx

    out = Path(tempfile.mkdtemp(prefix="audiomosaic_onnx_"))
    start = time.perf_counter()
    export = export_onnx(model_dir, out, task="classifier", int8=True)
    export_seconds = time.perf_counter() - start
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    sessions = {name: onnxruntime.InferenceSession(str(out / file), options, providers=["CPUExecutionProvider"])
                for name, file in (("onnxruntime fp32", "model.onnx"), ("onnxruntime int8", "model_int8.onnx"))}
    models = {f"pytorch fp32 {impl}": AudioMosaicForAudioClassification.from_pretrained(
        model_dir, attn_implementation=impl).eval() for impl in ("eager", "sdpa")}

    def run(name: str, batch: torch.Tensor) -> np.ndarray:
        if name in sessions:
            return sessions[name].run(["logits"], {"input_values": batch.numpy()})[0]
        with torch.no_grad():
            return models[name](batch).logits.numpy()

    def run_all(name: str, batch_size: int) -> np.ndarray:
        return np.concatenate([run(name, features[i: i + batch_size]) for i in range(0, len(features), batch_size)])

    reference = run_all("pytorch fp32 eager", args.batch_size)
    id2label = models["pytorch fp32 eager"].config.id2label
    rows = {}
    for name in [*models, *sessions]:
        logits = run_all(name, args.batch_size)
        row = {"max_abs_error_vs_pytorch": float(np.abs(logits - reference).max())}
        if labels is not None:
            predictions = [id2label[i] for i in logits.argmax(axis=1)]
            row["accuracy"] = float(np.mean([p == t for p, t in zip(predictions, labels)]))
            row["top1_agreement_with_pytorch"] = float(np.mean(logits.argmax(1) == reference.argmax(1)))
        for batch_size in (1, args.batch_size):
            row[f"seconds_batch{batch_size}"] = timed(lambda: run_all(name, batch_size), args.repeats)
        rows[name] = row
    base = rows["pytorch fp32 eager"]
    for row in rows.values():
        for batch_size in (1, args.batch_size):
            row[f"speedup_batch{batch_size}_vs_pytorch_eager"] = (base[f"seconds_batch{batch_size}"]
                                                                  / row[f"seconds_batch{batch_size}"])
    sizes = {p.name: p.stat().st_size for p in out.glob("*.onnx")}
    return {"clips": len(features), "frames": features.shape[1], "export_seconds": export_seconds,
            "export_check_max_abs_error": export["max_abs_error"], "onnx_bytes": sizes, "runtimes": rows}


def print_table(title: str, result: dict, batch_size: int) -> None:
    print(f"\n{title}: {result['clips']} clips x {result['frames']} frames; export {result['export_seconds']:.0f} s; "
          f"file sizes {result['onnx_bytes']}")
    header = (f"| runtime | max abs error vs PyTorch | accuracy | top-1 agreement | s (batch 1) | x PyTorch eager | "
              f"s (batch {batch_size}) | x PyTorch eager |")
    print(header)
    print("|" + "---|" * 8)
    for name, row in result["runtimes"].items():
        print(f"| {name} | {row['max_abs_error_vs_pytorch']:.2e} | {row.get('accuracy', float('nan')):.4f} | "
              f"{row.get('top1_agreement_with_pytorch', float('nan')):.4f} | {row['seconds_batch1']:.3f} | "
              f"{row['speedup_batch1_vs_pytorch_eager']:.2f} | {row[f'seconds_batch{batch_size}']:.3f} | "
              f"{row[f'speedup_batch{batch_size}_vs_pytorch_eager']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="classifier folder")
    parser.add_argument("data", type=Path, help="folder with meta.csv and the audio")
    parser.add_argument("--folds", default="5", help="comma-separated folds to evaluate on")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vit_b", action="store_true", help="also time a random released-size ViT-B/16")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    features, labels = load_features(args.model, args.data, set(args.folds.split(",")))
    results = {"model": str(args.model), "threads": args.threads,
               "small": compare(args.model, features, labels, args)}
    print_table(f"{args.model} on {args.data.name} folds {args.folds}", results["small"], args.batch_size)
    if args.vit_b:
        from modeling_audiomosaic import (
            AudioMosaicConfig,
            AudioMosaicFeatureExtractor,
            AudioMosaicForAudioClassification,
            load_audio,
        )

        folder = Path(tempfile.mkdtemp(prefix="audiomosaic_vitb_"))
        torch.manual_seed(0)
        AudioMosaicForAudioClassification(AudioMosaicConfig(num_labels=527)).save_pretrained(folder)
        fe = AudioMosaicFeatureExtractor.from_preset("audioset")
        fe.save_pretrained(folder)

        with open(args.data / "meta.csv") as handle:
            rows = [row for row in csv.DictReader(handle) if row["fold"] in set(args.folds.split(","))][:4]
        vitb_features = fe([load_audio(args.data / row["filename"]) for row in rows], sampling_rate=16000,
                           return_tensors="pt")["input_values"]
        vitb_args = argparse.Namespace(**{**vars(args), "batch_size": 4, "repeats": 1})
        results["vit_b"] = compare(folder, vitb_features, None, vitb_args)
        print_table("random ViT-B/16, 1024 frames (speed and parity only)", results["vit_b"], 4)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
