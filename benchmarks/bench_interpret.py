#!/usr/bin/env python
"""Interpretability figures of benchmarks/RESULTS.md: few-shot head classifiers on Speech Commands and the drum kits,
sparse autoencoders (clip- and token-level) and head probing / ablation, each for a pretrained encoder and for the
same architecture with random weights (control). Runs the `audiomosaic` commands in-process, one torch thread, and
records every step's wall time in `<output_dir>/timings.json`.

    python benchmarks/bench_interpret.py --model runs/sc_small_interp --output_dir runs/interpret

Speech Commands: test fold 5 (speaker-disjoint, never seen in pretraining), episodes drawn from folds 1-4. Drum
kits: test fold 5 (kit-disjoint). Activations are cached under `<output_dir>/cache` and shared by all steps.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # numpy/scikit-learn BLAS too, not only torch: a shared 2-core machine
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

from modeling_audiomosaic.cli import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="pretrained AudioMosaic encoder folder")
    parser.add_argument("--data_dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--steps", default="fewshot,sae,heads", help="comma-separated subset of fewshot,sae,heads")
    parser.add_argument("--inits", default="pretrained,random_init",
                        help="comma-separated subset of pretrained,random_init (random_init: --model's architecture "
                             "with random weights, seed 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.output_dir)
    data = Path(args.data_dir)
    datasets = {
        "speechcommands": [str(data / "speechcommands_test" / "meta.csv"), "--audio_column", "filename",
                           "--fold_column", "fold", "--test_folds", "5"],
        "drumkits": [str(data / "drumkits" / "meta.csv"), "--audio_column", "filename", "--fold_column", "fold",
                     "--test_folds", "5"],
    }
    steps = set(args.steps.split(","))
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}

    def step(name: str, argv: list[str]) -> None:
        start = time.time()
        run(argv)
        timings[name] = {"seconds": round(time.time() - start, 1), "argv": argv}
        out.mkdir(parents=True, exist_ok=True)
        timings_path.write_text(json.dumps(timings, indent=2))
        print(f"== {name}: {timings[name]['seconds']} s", flush=True)

    for init in args.inits.split(","):
        extra = ["--random_init"] if init == "random_init" else []
        common = ["--model", args.model, "--cache_dir", str(out / "cache"), "--quiet", *extra]
        if "fewshot" in steps:
            for name, spec in datasets.items():
                step(f"fewshot/{name}/{init}", ["fewshot", *spec, *common, "--output_dir",
                                                 str(out / "fewshot" / name / init), "--episodes", str(args.episodes)])
        if "sae" in steps:
            spec = datasets["speechcommands"]
            for mode, options in (("clip", ["--expansion", "4", "--k", "16", "--epochs", "100"]),
                                  ("token", ["--expansion", "4", "--k", "16", "--epochs", "5",
                                             "--tokens_per_clip", "16"])):
                folder = out / "sae" / f"{mode}" / init
                step(f"sae-train/{mode}/{init}", ["sae-train", *spec, *common, "--output_dir", str(folder),
                                                  "--mode", mode, *options])
                step(f"sae-report/{mode}/{init}", ["sae-report", *spec, *common, "--output_dir",
                                                   str(folder / "report"), "--sae", str(folder / "sae")])
        if "heads" in steps:
            step(f"heads/speechcommands/{init}", ["heads", *datasets["speechcommands"], *common, "--output_dir",
                                                  str(out / "heads" / "speechcommands" / init)])


if __name__ == "__main__":
    main()
