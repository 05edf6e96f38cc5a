#!/usr/bin/env python
"""`audiomosaic heads` with and without the block-input cache (issue 22, item 4), side by side in one run on the same
inputs: wall time of each and whether every result (probes, ablations, steering, dose-response) is identical.

    python benchmarks/bench_heads_cache.py --model runs/sc_small_interp --output_dir runs/heads_cache

The uncached path (`--full_forward`) reruns the whole encoder for every intervention; the cached one records the
hidden states entering the first intervened block once and reruns only the blocks from there. Both run in-process
with one torch and one BLAS thread; extra arguments after `--` go to both `heads` runs (e.g. `-- --n_random 2`).

The saving depends on where the edited heads sit, so a second phase (`--phases per_block`) times one intervention
pass over 30 random test-fold clips per class (the `heads` default count) for a head in each block, full forward vs
cached, alternating the two `--repeats` times (medians), and checks that the outputs are identical.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # a shared 2-core machine
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

from modeling_audiomosaic.cli import run  # noqa: E402


def without_timings(payload: dict) -> dict:
    return {key: value for key, value in payload.items() if not key.endswith("_seconds")}


def per_block_passes(model_dir: str, meta: Path, repeats: int) -> list[dict]:
    """Median seconds of one zero-ablation pass with a head of block b edited, full forward vs from the cached block
    input, for every block b, on 30 random test-fold clips per class (the `heads` default count)."""
    import numpy as np

    from modeling_audiomosaic import AudioMosaicFeatureExtractor, AudioMosaicModel
    from modeling_audiomosaic.interpret import HeadIntervention
    from modeling_audiomosaic.interpret.commands import featurize_files, read_labelled_audio
    from modeling_audiomosaic.interpret.heads import BlockInputCache, pooled_outputs

    model = AudioMosaicModel.from_pretrained(model_dir).eval()
    files, labels, folds = read_labelled_audio(str(meta), "filename", "label", "fold")
    rng = np.random.default_rng(0)
    test = np.flatnonzero(folds == "5")
    evaluation = np.concatenate([rng.permutation(test[labels[test] == c])[:30] for c in np.unique(labels[test])])
    inputs = featurize_files(AudioMosaicFeatureExtractor.from_pretrained(model_dir), [files[i] for i in evaluation])
    start = time.time()
    cache = BlockInputCache(model, inputs)
    rows = [{"clips": len(inputs), "cache_seconds": time.time() - start}]
    for block in range(model.config.num_hidden_layers):
        times = {"full": [], "cached": []}
        with HeadIntervention(model, [(block, 0)], mode="zero"):
            for _ in range(repeats):
                start = time.time()
                full = pooled_outputs(model, inputs)
                times["full"].append(time.time() - start)
                start = time.time()
                cached = cache.pooled_outputs(block)
                times["cached"].append(time.time() - start)
        full_s, cached_s = float(np.median(times["full"])), float(np.median(times["cached"]))
        rows.append({"first_block": block, "full_seconds": full_s, "cached_seconds": cached_s,
                     "speed_up": full_s / cached_s, "identical": bool(np.array_equal(full, cached))})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="AudioMosaic encoder folder")
    parser.add_argument("--data_dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--phases", default="command,per_block", help="subset of command,per_block")
    parser.add_argument("--repeats", type=int, default=5, help="per_block: alternating timed passes per path")
    parser.add_argument("--cached_first", action="store_true",
                        help="command: run the cached path first (a second pair in the other order evens out drift "
                             "of the machine's load)")
    parser.add_argument("heads_arguments", nargs="*", help="extra `audiomosaic heads` arguments (after --)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.output_dir)
    meta = Path(args.data_dir) / "speechcommands_test" / "meta.csv"
    common = ["heads", str(meta), "--audio_column", "filename", "--fold_column", "fold", "--test_folds", "5",
              "--model", args.model, "--cache_dir", str(out / "cache"), "--quiet", *args.heads_arguments]
    if "per_block" in args.phases.split(","):
        rows = per_block_passes(args.model, meta, args.repeats)
        out.mkdir(parents=True, exist_ok=True)
        (out / "heads_cache_per_block.json").write_text(json.dumps(rows, indent=2))
    if "command" not in args.phases.split(","):
        return
    run([*common, "--output_dir", str(out / "warm_up"), "--n_random", "0", "--max_eval_per_class", "1"])  # cache

    results = {}
    paths = [("full forward (before)", ["--full_forward"]), ("block-input cache (after)", [])]
    for name, extra in (paths[::-1] if args.cached_first else paths):
        start = time.time()
        payload = run([*common, "--output_dir", str(out / name.split(" (")[0].replace(" ", "_")), *extra])
        results[name] = {"seconds": time.time() - start, "payload": payload}
        print(f"== {name}: {results[name]['seconds']:.1f} s", flush=True)
    before, after = results["full forward (before)"], results["block-input cache (after)"]
    identical = without_timings(before["payload"]) == without_timings(after["payload"])
    summary = {"arguments": common, "identical_results": identical,
               "seconds": {name: round(r["seconds"], 1) for name, r in results.items()},
               "phases": {name: {k: round(v, 1) for k, v in r["payload"].items() if k.endswith("_seconds")}
                          for name, r in results.items()},
               "speed_up": before["seconds"] / after["seconds"],
               "eval_clips": after["payload"]["eval_clips"],
               "first_intervened_blocks": sorted({min(b for b, _ in heads)
                                                  for heads in after["payload"]["heads_by_class"].values()})}
    name = "heads_cache_benchmark_cached_first.json" if args.cached_first else "heads_cache_benchmark.json"
    (out / name).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
