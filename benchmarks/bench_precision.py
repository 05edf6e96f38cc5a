#!/usr/bin/env python
"""float32 against bfloat16 and float16 weights/activations (`--dtype` of `audiomosaic embed|classify`), on real clips,
side by side in one run: logits, pooled embeddings and frame embeddings compared with float32, accuracy, and time.

    python benchmarks/bench_precision.py runs/drum_timeline/finetune ../shared/data/drumkits --folds 5 \
        --long_audio runs/drum_timeline/recording.wav

The feature extractor stays float32 in every run (the model casts its input). `--device cuda` runs the same on a GPU.
"""

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="classifier folder")
    parser.add_argument("data", type=Path, help="folder with meta.csv and the audio")
    parser.add_argument("--folds", default="5")
    parser.add_argument("--long_audio", type=Path, default=None, help="a long recording for frame embeddings")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from modeling_audiomosaic import AudioMosaicFeatureExtractor, AudioMosaicForAudioClassification, load_audio
    from modeling_audiomosaic.embeddings import frame_embeddings

    fe = AudioMosaicFeatureExtractor.from_pretrained(args.model)
    with open(args.data / "meta.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row["fold"] in set(args.folds.split(","))]
    features = fe([load_audio(args.data / row["filename"]) for row in rows], sampling_rate=16000, truncation=True,
                  return_tensors="pt")["input_values"].to(args.device)
    labels = [row["label"] for row in rows]
    long_audio = load_audio(args.long_audio) if args.long_audio else None

    outputs = {}
    for name, dtype in DTYPES.items():
        model = AudioMosaicForAudioClassification.from_pretrained(args.model, dtype=dtype).to(args.device).eval()
        start = time.perf_counter()
        with torch.no_grad():
            results = [model(features[i: i + args.batch_size], output_hidden_states=True)
                       for i in range(0, len(features), args.batch_size)]
        seconds = time.perf_counter() - start
        logits = torch.cat([r.logits.float().cpu() for r in results])
        # The encoder's pooled output (fc_norm of the token mean), what `audiomosaic embed` writes.
        pooled = torch.cat([model.audiomosaic.fc_norm(model.audiomosaic.pool(r.hidden_states[-1])).float().cpu()
                            for r in results])
        frames = None
        if long_audio is not None:
            frames = frame_embeddings(model, fe, long_audio, batch_size=args.batch_size)[0].embeddings
        predictions = [model.config.id2label[i] for i in logits.argmax(1).tolist()]
        outputs[name] = {"logits": logits, "pooled": pooled, "frames": frames, "seconds": seconds,
                         "accuracy": float(np.mean([p == t for p, t in zip(predictions, labels)]))}

    reference = outputs["float32"]
    table = {}
    for name, out in outputs.items():
        row = {"accuracy": out["accuracy"], "seconds": out["seconds"],
               "time_vs_float32": out["seconds"] / reference["seconds"],
               "top1_agreement": float((out["logits"].argmax(1) == reference["logits"].argmax(1)).float().mean()),
               "logits_max_abs_diff": float((out["logits"] - reference["logits"]).abs().max()),
               "pooled_max_abs_diff": float((out["pooled"] - reference["pooled"]).abs().max()),
               "pooled_min_cosine": float(torch.cosine_similarity(out["pooled"], reference["pooled"]).min())}
        if out["frames"] is not None:
            difference = (out["frames"] - reference["frames"]).abs()
            row["frames_max_abs_diff"] = float(difference.max())
            row["frames_max_rel_diff"] = float(difference.max() / reference["frames"].abs().max())
            row["frames_min_cosine"] = float(torch.cosine_similarity(out["frames"], reference["frames"]).min())
        table[name] = row

    print(f"\n{args.model} on {len(features)} clips of {args.data.name} (folds {args.folds}), device {args.device}, "
          f"{args.threads} thread(s)")
    columns = list(next(iter(table.values())))
    print("| dtype | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.5g}" for c in columns) + " |")
    if args.output:
        args.output.write_text(json.dumps({"model": str(args.model), "device": args.device, "table": table}, indent=2))


if __name__ == "__main__":
    main()
