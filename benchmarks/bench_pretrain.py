#!/usr/bin/env python
"""Pretraining cost: one optimizer step of `AudioMosaicForPreTraining` (both views, NT-Xent, AdamW) and the two-view
data pipeline. Prints markdown tables (and writes JSON with `--json`).

Model step (`--part model`): samples/s and peak memory for ViT-Ti/S/B widths (192/384/768, 12 blocks) on 10.24 s
inputs (1024 frames), with the official view masking vs none and gradient checkpointing of the first 70 % of the
blocks on/off. Peak memory is `torch.cuda.max_memory_allocated` on CUDA (parameters, gradients, AdamW state and
activations) and, on CPU, the process's peak RSS minus its RSS before the first step (gradients, AdamW state and
activations, plus allocator slack; each configuration runs in its own process so the numbers do not leak).

    python benchmarks/bench_pretrain.py --part model --device cpu --batch_size 2
    python benchmarks/bench_pretrain.py --part gpu_table --device cuda    # base, ckpt 70 %, bf16, batch 64/128/256
    python benchmarks/bench_pretrain.py --part data                       # two-view pipeline, samples/s per core
    python benchmarks/bench_pretrain.py --part profile                    # real runs: waveform vs spectral backend
    python benchmarks/bench_pretrain.py --part cpu_step --frames 512      # small-budget CPU step: kernels, threads

Profile (`--part profile`): `audiomosaic pretrain` end to end on ESC-50-length clips (5 s, 512 frames: 5 Speech
Commands clips concatenated, so no extra data is needed), 192-wide 6-block encoder, batch `--batch_size` (default 32)
for `--steps` steps, per augmentation backend and DataLoader worker count in the same invocation; prints samples/s,
the ratio to the best waveform run, and where each step's time goes (data wait, forward, backward, optimizer; from
`log.jsonl`).

The model parts need torch, transformers, this package and the training script's imports (`pip install -e .[train]`).
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from audiomosaic_training.optim import build_optimizer, optimizer_kwargs
from audiomosaic_training.pretrain import configure_gradient_checkpointing
from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicForPreTraining


ROOT = Path(__file__).resolve().parents[1]


WIDTHS = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}


def current_rss_kib() -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))


def model_step(width: str, masking: str, checkpointing: float, batch_size: int, device: str, steps: int,
               frames: int = 1024, bf16: bool | None = None, compile: bool = False) -> dict:
    """Time `steps` optimizer steps after one warm-up step; returns samples/s and peak memory (GiB)."""
    device = torch.device(device)
    bf16 = device.type == "cuda" if bf16 is None else bf16
    hidden, heads = WIDTHS[width]
    config = AudioMosaicConfig(hidden_size=hidden, num_attention_heads=heads, intermediate_size=4 * hidden,
                               max_length=frames, pretraining_masking=masking)
    torch.manual_seed(0)
    model = AudioMosaicForPreTraining(config).to(device).train()
    flags = configure_gradient_checkpointing(model, checkpointing)
    forward = torch.compile(model, dynamic=False) if compile else model  # the authors compile their pretraining
    optimizer = build_optimizer(model, 6e-4, 0.05)
    views = [torch.randn(batch_size, frames, 128, device=device) for _ in range(2)]

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = forward(input_values=views[0], input_values_view1=views[1]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    rss_before = current_rss_kib()  # model, inputs; the steps add gradients, AdamW state and activations
    step()  # warm-up: allocates the AdamW state, autotunes kernels (and compiles)
    if compile:
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / steps
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 2**20  # KiB -> GiB
    return {"width": width, "masking": masking, "checkpointed_blocks": sum(flags), "batch_size": batch_size,
            "frames": frames, "bf16": bf16, "device": str(device), "seconds_per_step": seconds,
            "samples_per_second": batch_size / seconds, "peak_memory_gib": peak,
            "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6, "compiled": compile,
            "attn_implementation": model.config._attn_implementation}


def run_isolated(kwargs: dict) -> dict:
    """`model_step` in a fresh process (CPU peak RSS is per process)."""
    code = ("import json, runpy, sys; model_step = runpy.run_path(%r)['model_step']; "
            "print('RESULT' + json.dumps(model_step(**json.loads(sys.argv[1]))))" % __file__)
    done = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"model_step({kwargs}) failed:\n{done.stderr[-3000:]}")
    return json.loads(next(line[6:] for line in done.stdout.splitlines() if line.startswith("RESULT")))


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    lines = ["| " + " | ".join(title for title, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) for _, key, fmt in columns) + " |")
    return "\n".join(lines)


MODEL_COLUMNS = [("width", "width", "{}"), ("params (M)", "parameters_m", "{:.1f}"), ("view masking", "masking", "{}"),
                 ("ckpt blocks", "checkpointed_blocks", "{}"), ("batch", "batch_size", "{}"),
                 ("s/step", "seconds_per_step", "{:.2f}"), ("samples/s", "samples_per_second", "{:.2f}"),
                 ("peak mem (GiB)", "peak_memory_gib", "{:.2f}")]


def bench_model(args) -> list[dict]:
    rows = []
    for width in args.widths.split(","):
        for masking in ("official", "none"):
            for fraction in (0.0, 0.7):
                kwargs = dict(width=width, masking=masking, checkpointing=fraction, batch_size=args.batch_size,
                              device=args.device, steps=args.steps)
                row = run_isolated(kwargs) if args.device == "cpu" else model_step(**kwargs)
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
    print(table(rows, MODEL_COLUMNS))
    return rows


def bench_gpu_table(args) -> list[dict]:
    """Paper Table 5 setting: ViT-B/16, 10 s, official masking, checkpointing on 70 % of the blocks, bf16."""
    rows = []
    for batch_size in (64, 128, 256):
        try:
            row = model_step("base", "official", 0.7, batch_size, args.device, args.steps, compile=args.compile)
        except torch.OutOfMemoryError:
            row = {"width": "base", "masking": "official", "checkpointed_blocks": 8, "batch_size": batch_size,
                   "seconds_per_step": math.nan, "samples_per_second": math.nan, "peak_memory_gib": math.inf,
                   "parameters_m": 85.9}
        rows.append(row)
        print(json.dumps(row), flush=True)
        torch.cuda.empty_cache()
    paper = {64: 3.3, 128: 6.3, 256: 12.3}
    for row in rows:
        row["paper_l40s_gb"] = paper[row["batch_size"]]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 autocast, "
          f"{'torch.compile' if args.compile else 'no torch.compile'}, attention {rows[0].get('attn_implementation')}")
    print(table(rows, MODEL_COLUMNS[:1] + MODEL_COLUMNS[4:] + [("paper Table 5, L40S (GB)", "paper_l40s_gb", "{}")]))
    return rows


def bench_data(args) -> list[dict]:
    """Two-view pipeline (decode + per view roll/gain, audiomentations, fbank, pad, normalise) in one thread."""
    import numpy as np

    from modeling_audiomosaic import AudioMosaicFeatureExtractor
    from audiomosaic_training.augment import TwoViewTransform, sample_seed
    from modeling_audiomosaic import decode_audio

    torch.set_num_threads(1)
    meta = Path(args.data_dir) / "speechcommands_test" / "meta.csv"
    if not meta.is_file():
        raise SystemExit(f"{meta} not found: pass --data_dir")
    import csv

    with open(meta) as handle:
        paths = [str(meta.parent / row["filename"]) for row in csv.DictReader(handle)][:: 4890 // args.clips][: args.clips]
    rows = []
    for seconds, frames, preset in ((1.28, 128, "speechcommands"), (10.24, 1024, "audioset")):
        extractor = AudioMosaicFeatureExtractor.from_preset(preset, max_length=frames)
        for recipe in ("official", "aug2", "none"):
            transform = TwoViewTransform(extractor, recipe)
            start = time.perf_counter()
            for i, path in enumerate(paths):
                waveform = decode_audio(path, 16000)
                if seconds > 2:  # 10 s clips from 10 consecutive decodes of the same 1 s clip
                    waveform = np.concatenate([decode_audio(path, 16000) for _ in range(9)] + [waveform])
                transform(waveform, sample_seed(0, 0, i))
            elapsed = time.perf_counter() - start
            row = {"clip_seconds": seconds, "frames": frames, "augmentation": recipe,
                   "samples_per_second_per_core": len(paths) / elapsed, "ms_per_sample": 1000 * elapsed / len(paths)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(table(rows, [("clip (s)", "clip_seconds", "{}"), ("augmentation", "augmentation", "{}"),
                       ("samples/s per core", "samples_per_second_per_core", "{:.1f}"),
                       ("ms/sample", "ms_per_sample", "{:.1f}")]))
    return rows


def write_long_clips(data_dir: Path, output_dir: Path, count: int, seconds: int = 5) -> Path:
    """`count` clips of `seconds` s, each `seconds` consecutive Speech Commands clips, and a CSV listing them."""
    import csv

    import numpy as np
    import soundfile

    from modeling_audiomosaic import decode_audio

    meta = data_dir / "speechcommands_test" / "meta.csv"
    if not meta.is_file():
        raise SystemExit(f"{meta} not found: pass --data_dir")
    with open(meta) as handle:
        paths = [str(meta.parent / row["filename"]) for row in csv.DictReader(handle)]
    output_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        parts = [decode_audio(paths[(i * seconds + j) % len(paths)], 16000)[:16000] for j in range(seconds)]
        names.append(f"clip_{i:04d}.flac")
        soundfile.write(output_dir / names[-1], np.concatenate(parts), 16000)
    listing = output_dir / "clips.csv"
    listing.write_text("audio\n" + "\n".join(names) + "\n")
    return listing


PROFILE_PHASES = ("data_wait_seconds", "forward_seconds", "backward_seconds", "optimizer_seconds")


def bench_profile(args) -> list[dict]:
    """End-to-end pretraining steps per augmentation backend and DataLoader worker count, same data, model and
    settings, one after the other; the model's threads follow `pretrain`'s default (the cores the workers leave)."""
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="bench_profile_"))
    clips = write_long_clips(Path(args.data_dir), work / "clips", count=max(args.clips, 2 * args.batch_size))
    rows = []
    for backend in args.backends.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            output_dir = work / f"{backend}_{workers}"
            command = [
                sys.executable, "-m", "audiomosaic_training.pretrain", "--dataset", str(clips), "--output_dir",
                str(output_dir), "--recipe", "pretrain_small_cpu", "--hidden_size", "192", "--num_hidden_layers", "6",
                "--max_length", "512", "--feature_extractor_preset", "esc50", "--augmentation", "official",
                "--augmentation_backend", backend, "--per_device_train_batch_size", str(args.batch_size),
                "--max_steps", str(args.steps + 1), "--warmup_steps", "1", "--logging_steps", "1", "--save_steps",
                "0", "--probe_size", "0", "--dataloader_num_workers", str(workers), "--disable_tqdm",
            ]
            command += ["--use_cpu", "false", "--synchronize_step_times"] if args.device.startswith("cuda") else []
            if args.threads:
                command += ["--torch_threads", str(args.threads)]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            wall = time.perf_counter() - start
            entries = [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines() if line.strip()]
            steady = [e for e in entries if "loss" in e][1:]  # the first step includes the workers' start-up
            row = {"backend": backend, "workers": workers, "steps": len(steady), "batch_size": args.batch_size,
                   "wall_seconds": wall,
                   "samples_per_second": float(np.mean([e["samples_per_second"] for e in steady]))}
            row.update({phase: float(np.mean([e[phase] for e in steady])) for phase in PROFILE_PHASES})
            rows.append(row)
            print(json.dumps(row), flush=True)
    reference = max(r["samples_per_second"] for r in rows if r["backend"] == rows[0]["backend"])
    for row in rows:
        row["speed_up"] = row["samples_per_second"] / reference
    print(f"device {args.device}, {os.cpu_count()} cores, batch {args.batch_size}, 5 s clips (512 frames), "
          f"192-wide 6-block encoder, `official` augmentation")
    print(table(rows, [("backend", "backend", "{}"), ("workers", "workers", "{}"),
                       ("samples/s", "samples_per_second", "{:.2f}"),
                       (f"× best {rows[0]['backend']}", "speed_up", "{:.2f}"),
                       ("data wait (s/step)", "data_wait_seconds", "{:.2f}"), ("forward", "forward_seconds", "{:.2f}"),
                       ("backward", "backward_seconds", "{:.2f}"), ("optimizer", "optimizer_seconds", "{:.3f}")]))
    return rows


def compile_blocks(model: AudioMosaicForPreTraining) -> None:
    """`torch.compile` each transformer block in place (the authors compile their pretraining): inductor fuses the
    blocks' element-wise work (LayerNorm, GELU, residual adds, the attention layout copies) around the matmuls. Only
    the blocks: the view masking stays eager, so a seeded run masks as an uncompiled one (drop path, inside the blocks,
    draws from inductor's generator: same distribution, other draws). Parameter names and the state dict are
    unchanged, so checkpoints load either way."""
    for layer in model.audiomosaic.layers:
        layer.compile(dynamic=False)


# CPU step variants (`--part cpu_step`): name -> (attention, optimizer implementation, compiled blocks, threads; None:
# every core). The first is today's step (what `pretrain` ran before issue 22); the others change one or two things.
CPU_STEP_VARIANTS = {
    "today (sdpa, for-loop AdamW, 2 threads)": ("sdpa", "for_loop", False, None),
    "eager attention": ("eager", "for_loop", False, None),
    "foreach AdamW": ("sdpa", "foreach", False, None),
    "fused AdamW": ("sdpa", "fused", False, None),
    "compiled blocks": ("sdpa", "for_loop", True, None),
    "1 thread": ("sdpa", "for_loop", False, 1),
    "compiled blocks, 1 thread": ("sdpa", "for_loop", True, 1),
}


def bench_cpu_step(args) -> list[dict]:
    """The small-budget recipes' model step (192 wide, 6 blocks, 3 heads, official view masking, BatchNorm projector,
    no drop path, AdamW 1e-3) under each `CPU_STEP_VARIANTS` entry, side by side in one process: every variant starts
    from the same weights and takes the same inputs and masks at every step, and the rounds interleave the variants
    (one timed step of each per round, median over rounds), so that load from other processes hits all of them alike.
    Wall time gives samples/s; process CPU time (all threads) gives samples per CPU-second, what a CPU budget
    (examples/budget_study.py) buys. Numerics: the largest parameter difference to the first variant after all
    steps (AdamW turns rounding-level gradient differences into lr-sized steps), and the largest loss difference."""
    import copy
    import statistics

    device = torch.device("cpu")
    default_threads = torch.get_num_threads()
    config = AudioMosaicConfig(hidden_size=192, num_hidden_layers=6, num_attention_heads=3, intermediate_size=768,
                               max_length=args.frames, pretraining_masking="official", drop_path_rate=0.0,
                               projection_hidden_size=512, projection_dim=128)
    torch.manual_seed(0)
    initial = AudioMosaicForPreTraining(config).train()
    chosen = args.variants.split(";") if args.variants else list(CPU_STEP_VARIANTS)
    unknown = [name for name in chosen if name not in CPU_STEP_VARIANTS]
    if unknown:
        raise SystemExit(f"unknown --variants {unknown}; expected `;`-separated names of {list(CPU_STEP_VARIANTS)}")
    names = [name for name in CPU_STEP_VARIANTS if name in chosen]
    runs = {}
    for name in names:
        attention, optimizer_kind, compiled, _ = CPU_STEP_VARIANTS[name]
        model = copy.deepcopy(initial)
        model.config._attn_implementation = attention
        if compiled:
            compile_blocks(model)
        kwargs = {"foreach": False} if optimizer_kind == "for_loop" else {optimizer_kind: True}
        optimizer = torch.optim.AdamW(**optimizer_kwargs(model, 1e-3, 0.05), **kwargs)
        runs[name] = {"model": model, "optimizer": optimizer, "seconds": [], "cpu_seconds": [], "losses": [],
                      "warm_up_seconds": 0.0}
    generator = torch.Generator().manual_seed(1)

    def step(run: dict, views: list[torch.Tensor], seed: int) -> tuple[float, float]:
        torch.manual_seed(seed)  # the same masks for every variant
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = run["model"](input_values=views[0], input_values_view1=views[1]).loss
        loss.backward()
        run["optimizer"].step()
        run["optimizer"].zero_grad(set_to_none=True)
        run["losses"].append(loss.item())
        return time.perf_counter() - start, time.process_time() - cpu_start

    for round_index in range(args.steps + args.warm_up_steps):
        views = [torch.randn(args.batch_size, args.frames, 128, generator=generator) for _ in range(2)]
        for name in names:
            torch.set_num_threads(CPU_STEP_VARIANTS[name][3] or default_threads)
            seconds, cpu_seconds = step(runs[name], views, round_index)
            if round_index >= args.warm_up_steps:
                runs[name]["seconds"].append(seconds)
                runs[name]["cpu_seconds"].append(cpu_seconds)
            else:
                runs[name]["warm_up_seconds"] += seconds
        print(f"round {round_index}: " + ", ".join(f"{n} {runs[n]['losses'][-1]:.6f}" for n in names), flush=True)
    torch.set_num_threads(default_threads)
    reference = runs[names[0]]
    rows = []
    for name in names:
        run = runs[name]
        seconds, cpu_seconds = statistics.median(run["seconds"]), statistics.median(run["cpu_seconds"])
        parameter_difference = max(float((a - b).abs().max()) for a, b in zip(
            run["model"].parameters(), reference["model"].parameters()))
        rows.append({"variant": name, "threads": CPU_STEP_VARIANTS[name][3] or default_threads,
                     "batch_size": args.batch_size, "frames": args.frames, "seconds_per_step": seconds,
                     "samples_per_second": args.batch_size / seconds, "cpu_seconds_per_step": cpu_seconds,
                     "samples_per_cpu_second": args.batch_size / cpu_seconds, "warm_up_seconds": run["warm_up_seconds"],
                     "max_parameter_difference": parameter_difference,
                     "max_loss_difference": max(abs(a - b) for a, b in zip(run["losses"], reference["losses"]))})
    for row in rows:
        row["speed_up"] = row["samples_per_second"] / rows[0]["samples_per_second"]
        row["cpu_speed_up"] = row["samples_per_cpu_second"] / rows[0]["samples_per_cpu_second"]
        print(json.dumps(row), flush=True)
    print(f"CPU, {os.cpu_count()} cores, torch {torch.__version__}, batch {args.batch_size}, {args.frames} frames, "
          f"median of {args.steps} interleaved steps after {args.warm_up_steps} warm-up")
    print(table(rows, [("variant", "variant", "{}"), ("threads", "threads", "{}"),
                       ("s/step", "seconds_per_step", "{:.2f}"), ("samples/s", "samples_per_second", "{:.2f}"),
                       ("× today", "speed_up", "{:.2f}"), ("CPU-s/step", "cpu_seconds_per_step", "{:.2f}"),
                       ("samples per CPU-s", "samples_per_cpu_second", "{:.2f}"),
                       ("× today (CPU)", "cpu_speed_up", "{:.2f}"),
                       ("warm-up s", "warm_up_seconds", "{:.0f}"),
                       ("max |Δ param|", "max_parameter_difference", "{:.1e}"),
                       ("max |Δ loss|", "max_loss_difference", "{:.1e}")]))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("model", "gpu_table", "data", "profile", "cpu_step"), default="model")
    parser.add_argument("--backends", default="waveform,spectral",
                        help="profile: augmentation backends, the reference first")
    parser.add_argument("--workers", default="1,2", help="profile: DataLoader worker counts to try")
    parser.add_argument("--threads", type=int, default=None,
                        help="profile: model threads (default: pretrain's, the cores the workers leave)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--widths", default="tiny,small,base")
    parser.add_argument("--batch_size", type=int, default=None, help="model part: 2 on CPU, 64 on CUDA by default")
    parser.add_argument("--steps", type=int, default=None, help="timed steps: 1 on CPU, 10 on CUDA by default")
    parser.add_argument("--clips", type=int, default=100, help="data part: clips timed per setting")
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--compile", action="store_true", help="gpu_table: torch.compile the model as the authors do")
    parser.add_argument("--frames", type=int, default=512, help="cpu_step: frames per clip (512, or 128-208)")
    parser.add_argument("--warm_up_steps", type=int, default=2, help="cpu_step: untimed steps (compilation) first")
    parser.add_argument("--variants", default=None, help="cpu_step: `;`-separated CPU_STEP_VARIANTS names (all)")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    default_batch = {"profile": 32, "cpu_step": 64}.get(args.part, 2)
    args.batch_size = args.batch_size or (64 if cuda else default_batch)
    if args.batch_size < 2:
        raise SystemExit("--batch_size must be at least 2 (the projector BatchNorm needs two samples).")
    args.steps = args.steps or (10 if cuda or args.part == "profile" else 5 if args.part == "cpu_step" else 1)
    if args.part == "gpu_table" and not cuda:
        raise SystemExit("--part gpu_table needs --device cuda")
    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    parts = {"model": bench_model, "gpu_table": bench_gpu_table, "data": bench_data, "profile": bench_profile,
             "cpu_step": bench_cpu_step}
    rows = parts[args.part](args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
