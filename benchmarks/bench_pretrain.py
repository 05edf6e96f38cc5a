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

from audiomosaic_training.memory import checkpoint_blocks, checkpointed_blocks_for_memory, estimate_peak_memory_gib
from audiomosaic_training.optim import build_optimizer, optimizer_kwargs
from audiomosaic_training.pretrain import configure_gradient_checkpointing
from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicForPreTraining


ROOT = Path(__file__).resolve().parents[1]


WIDTHS = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}


def current_rss_kib() -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))


def model_step(width: str, masking: str, checkpointing: float, batch_size: int, device: str, steps: int,
               frames: int = 1024, bf16: bool | None = None, compile: bool = False, blocks: int | None = None,
               activation_memory_budget: float | None = None) -> dict:
    """Time `steps` optimizer steps after one warm-up step; returns samples/s and peak memory (GiB). `blocks`
    checkpoints that many blocks instead of the `checkpointing` fraction; `activation_memory_budget` is the compiler's
    (with `compile`)."""
    device = torch.device(device)
    bf16 = device.type == "cuda" if bf16 is None else bf16
    hidden, heads = WIDTHS[width]
    config = AudioMosaicConfig(hidden_size=hidden, num_attention_heads=heads, intermediate_size=4 * hidden,
                               max_length=frames, pretraining_masking=masking)
    torch.manual_seed(0)
    model = AudioMosaicForPreTraining(config).to(device).train()
    if blocks is None:
        flags = configure_gradient_checkpointing(model, checkpointing)
    else:
        flags = checkpoint_blocks(model, blocks)
    if activation_memory_budget is not None:
        torch._functorch.config.activation_memory_budget = activation_memory_budget
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
    torch._functorch.config.activation_memory_budget = 1.0
    return {"width": width, "masking": masking, "checkpointed_blocks": sum(flags), "batch_size": batch_size,
            "frames": frames, "bf16": bf16, "device": str(device), "seconds_per_step": seconds,
            "activation_memory_budget": activation_memory_budget,
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


PAPER_TABLE5_GB = {64: 3.3, 128: 6.3, 256: 12.3}  # L40S, the paper's Table 5
# Memory set-ups of the ViT-B/16 step (name: model_step arguments); `memory_option` checkpoints the blocks that
# `--gradient_checkpointing_memory_gib` picks for the paper's figure (`--part memory` prints them).
MEMORY_VARIANTS = {
    "eager_70": {"checkpointing": 0.7},
    "eager_all": {"checkpointing": 1.0},
    "eager_none": {"checkpointing": 0.0},
    "compile_70": {"checkpointing": 0.7, "compile": True},
    "compile_none": {"checkpointing": 0.0, "compile": True},
    "compile_all": {"checkpointing": 1.0, "compile": True},
}


def bench_gpu_table(args) -> list[dict]:
    """Paper Table 5 setting: ViT-B/16, 10 s, official masking, bf16; per memory set-up and batch size."""
    rows = []
    variants = dict(MEMORY_VARIANTS)
    for batch_size, blocks in zip((64, 128, 256), map(int, args.option_blocks.split(",")), strict=True):
        variants[f"memory_option_{batch_size}"] = {"blocks": blocks, "batch_sizes": (batch_size,)}
    if args.budget:
        variants["compile_budget"] = {"checkpointing": 0.0, "compile": True,
                                      "activation_memory_budget": args.budget}
    for name in (args.variants or "eager_70,eager_all,eager_none").split(","):
        kwargs = dict(variants[name])
        checkpointing = kwargs.pop("checkpointing", 0.0)
        for batch_size in kwargs.pop("batch_sizes", tuple(int(b) for b in args.batch_sizes.split(","))):
            started = time.perf_counter()
            try:
                row = model_step("base", "official", checkpointing, batch_size, args.device, args.steps, **kwargs)
            except torch.OutOfMemoryError:
                row = {"seconds_per_step": math.nan, "samples_per_second": math.nan, "peak_memory_gib": math.inf}
            row.update(variant=name, batch_size=batch_size, paper_l40s_gb=PAPER_TABLE5_GB.get(batch_size, math.nan),
                       wall_seconds=time.perf_counter() - started)
            rows.append(row)
            print(json.dumps(row), flush=True)
            torch.cuda.empty_cache()
    for row in rows:  # speed relative to today's released set-up at the same batch size
        baseline = [r for r in rows if r["variant"] == "eager_70" and r["batch_size"] == row["batch_size"]]
        row["speed_vs_eager_70"] = row["samples_per_second"] / baseline[0]["samples_per_second"] if baseline else math.nan
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 autocast, ViT-B/16, 1024 frames, "
          f"official masking, attention {rows[0].get('attn_implementation')}")
    print(table(rows, [("set-up", "variant", "{}"), ("ckpt blocks", "checkpointed_blocks", "{}"),
                       ("batch", "batch_size", "{}"), ("samples/s", "samples_per_second", "{:.1f}"),
                       ("× eager 70 %", "speed_vs_eager_70", "{:.3f}"), ("peak (GiB)", "peak_memory_gib", "{:.2f}"),
                       ("paper Table 5, L40S (GB)", "paper_l40s_gb", "{}")]))
    return rows


def bench_memory(args) -> list[dict]:
    """Estimated peak memory (training/memory.py: MemTracker under FakeTensorMode on CPU, no GPU needed) of the
    ViT-B/16 step per checkpointing and batch size, and what `--gradient_checkpointing_memory_gib` picks for the
    paper's Table 5 figures."""
    config = AudioMosaicConfig(max_length=1024, pretraining_masking="official")
    rows = []
    for batch_size, paper_gb in PAPER_TABLE5_GB.items():
        row = {"batch_size": batch_size, "paper_l40s_gb": paper_gb}
        for name, blocks in (("none", 0), ("ckpt_70", 8), ("all", 12)):
            row[name] = estimate_peak_memory_gib(config, batch_size, blocks, "bf16")
        budget = paper_gb * 1e9 / 2**30  # the paper's GB as GiB
        try:
            row["option_blocks"], row["option_estimate"] = checkpointed_blocks_for_memory(config, batch_size, budget)
        except ValueError:  # even every block checkpointed does not fit
            row["option_blocks"], row["option_estimate"] = "does not fit", math.nan
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("Estimated peak GiB per device (ViT-B/16, 1024 frames, official masking, bf16 autocast, AdamW):")
    print(table(rows, [("batch", "batch_size", "{}"), ("no ckpt", "none", "{:.2f}"), ("ckpt 70 %", "ckpt_70", "{:.2f}"),
                       ("ckpt all", "all", "{:.2f}"), ("paper Table 5 (GB)", "paper_l40s_gb", "{}"),
                       ("option: blocks for the paper's GB", "option_blocks", "{}"),
                       ("option: estimate", "option_estimate", "{:.2f}")]))
    return rows


def bench_selective_memory(args) -> list[dict]:
    """Estimated peak memory (as `--part memory`) of selective activation checkpointing: in the selectively
    checkpointed blocks the matmul and attention outputs are kept and everything else (LayerNorms, GELU, casts, the
    residual adds) is recomputed in backward, against keeping all (none) and recomputing all (full) per block. All
    rows are traced without autocast's weight-cast cache, which selective checkpointing needs when one block sees
    both views (pytorch/pytorch#193338); the `--part memory` figures keep it (~0.2 GiB less)."""
    import functools

    from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

    from audiomosaic_training.memory import checkpoint_blocks, traced_peak_gib

    aten = torch.ops.aten
    kept = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten._scaled_dot_product_flash_attention.default,
            aten._scaled_dot_product_flash_attention_for_cpu.default,
            aten._scaled_dot_product_efficient_attention.default}

    def policy(context, operation, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if operation in kept else CheckpointPolicy.PREFER_RECOMPUTE

    selective = functools.partial(checkpoint, use_reentrant=False,
                                  context_fn=functools.partial(create_selective_checkpoint_contexts, policy))

    def prepare(full: int, partial: int):
        def setup(model: AudioMosaicForPreTraining) -> None:
            checkpoint_blocks(model, full + partial)
            for layer in model.audiomosaic.layers[full:full + partial]:
                layer._gradient_checkpointing_func = selective  # the checkpoint function transformers' switch set
        return setup

    config = AudioMosaicConfig(max_length=1024, pretraining_masking="official")
    rows = []
    for full, partial in ((0, 0), (0, 12), (8, 0), (8, 4), (10, 0), (10, 2), (11, 0), (11, 1), (12, 0)):
        peak = traced_peak_gib(config, args.batch_size, prepare(full, partial), autocast_cache=False)
        rows.append({"full_blocks": full, "selective_blocks": partial, "kept_blocks": 12 - full - partial,
                     "peak_gib": peak})
        print(json.dumps(rows[-1]), flush=True)
    print(f"Estimated peak GiB per device at batch {args.batch_size} (ViT-B/16, 1024 frames, official masking, bf16):")
    print(table(rows, [("blocks recomputed in full", "full_blocks", "{}"),
                       ("selectively (matmuls kept)", "selective_blocks", "{}"),
                       ("not checkpointed", "kept_blocks", "{}"), ("peak (GiB)", "peak_gib", "{:.2f}")]))
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


# The commit before the device path (issue 18): `--part host` measures its spectral transform side by side.
LEGACY_COMMIT = "94946f4"


def load_legacy_spectral_transform():
    """`SpectralTwoViewTransform` as of LEGACY_COMMIT (read from git into the installed training package's
    namespace, so that its relative imports resolve), or None where git or that commit is not available."""
    import importlib.util
    import tempfile

    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{LEGACY_COMMIT}:training/spectral_augment.py"],
                                check=True, capture_output=True, text=True).stdout
        # The Kaldi constants it imported privately from the extractor are public in their own module since.
        start = source.index("from modeling_audiomosaic.feature_extraction_audiomosaic import (")
        end = source.index(")", start) + 1
        source = source[:start] + (
            "from modeling_audiomosaic.kaldi_audiomosaic import (LOG_FLOOR as _LOG_FLOOR, LOW_FREQ as _LOW_FREQ, "
            "PREEMPHASIS as _PREEMPHASIS, kaldi_constants as _kaldi_constants, KaldiConstants as _KaldiConstants)"
        ) + source[end:]
        path = Path(tempfile.mkdtemp()) / "legacy_spectral_augment.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("audiomosaic_training.legacy_spectral_augment", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.SpectralTwoViewTransform
    except (OSError, subprocess.CalledProcessError, ImportError, ValueError) as error:
        print(f"legacy transform unavailable ({error}); its row is left out")
        return None


def count_operations(function, *args) -> int:
    """Torch operations (aten calls) that `function(*args)` issues."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Counter.calls += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        function(*args)
    return Counter.calls


def median_seconds(function, repeats: int, synchronize: bool = False) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        if synchronize:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_host(args) -> list[dict]:
    """Host work the training process does per batch to make the spectral views on the training device: 256 clips of
    10 s (1024 frames). Before: the previous device path (per-clip NumPy draws, rolls and buffers, noise drawn on
    CPU; timed with `device="meta"`, whose kernels do nothing, so the figure is its host work plus the meta tensors'
    Python bookkeeping). After: `views_from_batch` on the padded batch (the workers pad it): on CUDA, the time to
    queue it (no synchronisation) and, apart, the device's time; on CPU, where kernels run in the caller, the torch
    operations it issues times the host cost per operation of the same sequence on a tiny batch."""
    from audiomosaic_training.augment import sample_seed
    from audiomosaic_training.spectral_augment import SpectralTwoViewTransform, pad_clips
    from modeling_audiomosaic import AudioMosaicFeatureExtractor

    extractor = AudioMosaicFeatureExtractor.from_preset("audioset")
    rng = np.random.default_rng(0)
    waveforms = [rng.normal(0, 0.1, int(args.clip_seconds * 16000)).astype(np.float32) for _ in range(args.batch_size)]
    seeds = [sample_seed(0, 0, i) for i in range(args.batch_size)]
    rows = []
    legacy = load_legacy_spectral_transform()
    if legacy is not None:
        transform = legacy(extractor, "official")
        transform(waveforms[:2], seeds[:2], "meta")  # warm-up
        seconds = median_seconds(lambda: transform(waveforms, seeds, "meta"), args.repeats)
        rows.append({"path": f"before: previous device path ({LEGACY_COMMIT}), host work", "ms_per_batch": 1000 * seconds})
    transform = SpectralTwoViewTransform(extractor, "official")
    device = torch.device(args.device)
    batch, lengths = pad_clips(waveforms)
    inputs = (batch.to(device), lengths.to(device), torch.tensor(seeds, device=device))
    if device.type == "cuda":
        transform.views_from_batch(*inputs)
        operations = count_operations(transform.views_from_batch, *inputs)
        torch.cuda.synchronize()
        queued = median_seconds(lambda: transform.views_from_batch(*inputs), args.repeats)
        torch.cuda.synchronize()
        total = median_seconds(lambda: transform.views_from_batch(*inputs), args.repeats, synchronize=True)
        rows.append({"path": "after: device path, time to queue (host)", "ms_per_batch": 1000 * queued,
                     "operations": operations})
        rows.append({"path": "after: device path, queue + device time", "ms_per_batch": 1000 * total,
                     "operations": operations})
    else:
        # The sequence a GPU run issues (meta tensors take the accelerator's branches and run no kernel), times the
        # host cost per operation of the same code on CPU tensors too small for their arithmetic to count.
        meta = tuple(tensor.to("meta") for tensor in inputs)
        transform.views_from_batch(*meta)  # fills the per-device caches (banks, constants) as a run's first batch does
        operations = count_operations(transform.views_from_batch, *meta)
        small = SpectralTwoViewTransform(AudioMosaicFeatureExtractor.from_preset("audioset", max_length=4), "official")
        tiny = pad_clips([waveform[:800] for waveform in waveforms[:2]]) + (inputs[2][:2],)
        small.views_from_batch(*tiny)
        per_operation = median_seconds(lambda: small.views_from_batch(*tiny), args.repeats * 20) / \
            count_operations(small.views_from_batch, *tiny)
        rows.append({"path": f"after: device path, operations x {1e6 * per_operation:.1f} µs host cost each",
                     "operations": operations, "ms_per_batch": 1000 * operations * per_operation})
    reference = rows[0]["ms_per_batch"]
    for row in rows:
        row["ratio"] = row["ms_per_batch"] / reference
        row.setdefault("operations", "")
        print(json.dumps(row), flush=True)
    print(f"{args.batch_size} clips of {args.clip_seconds:g} s, 1024 frames, `official` chain, device {device}")
    print(table(rows, [("spectral views, training process", "path", "{}"), ("ms per batch", "ms_per_batch", "{:.1f}"),
                       ("torch operations", "operations", "{}"), ("× before", "ratio", "{:.3f}")]))
    return rows


def write_synthetic_clips(folder: Path, count: int, seconds: float, sampling_rate: int = 16000) -> Path:
    """`count` WAV clips of `seconds` s (noise and a few tones, varied per clip) and a CSV listing them: data for the
    throughput parts where no audio is at hand (the GPU machine)."""
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    time_axis = np.arange(int(seconds * sampling_rate)) / sampling_rate
    names = []
    for i in range(count):
        tones = sum(np.sin(2 * np.pi * rng.uniform(80, 4000) * time_axis) for _ in range(3))
        clip = 0.05 * rng.standard_normal(time_axis.shape[0]) + 0.1 * tones
        names.append(f"clip_{i:05d}.wav")
        soundfile.write(folder / names[-1], clip.astype(np.float32), sampling_rate, subtype="PCM_16")
    listing = folder / "clips.csv"
    listing.write_text("audio\n" + "\n".join(names) + "\n")
    return listing


def bench_epoch_stall(args) -> list[dict]:
    """The wait for the first batch of each epoch, with a simulated model step of `--step_seconds` between batches:
    before, a DataLoader per epoch (workers restarted, the epoch's first batch built from nothing, as up to
    LEGACY_COMMIT); after, the run's one DataLoader over `RunBatchSampler` (workers kept, prefetching across the
    boundary)."""
    import tempfile

    from datasets import Dataset

    from audiomosaic_training import pretrain
    from audiomosaic_training.two_view_data import (RunBatchSampler, TwoViewDataset, epoch_batches,
                                                    map_style_loader)
    from modeling_audiomosaic import AudioMosaicFeatureExtractor

    work = Path(tempfile.mkdtemp(prefix="bench_epoch_stall_"))
    listing = write_synthetic_clips(work, args.clips, args.clip_seconds)
    source = Dataset.from_dict({"audio": [str(work / name) for name in listing.read_text().split()[1:]]})
    extractor = AudioMosaicFeatureExtractor.from_preset("audioset", max_length=int(args.clip_seconds * 100))
    steps_per_epoch = args.clips // args.batch_size
    rows = []
    for backend in args.backends.split(","):
        data_args = pretrain.DataArguments(dataset="-", augmentation="official", augmentation_backend=backend)
        # Not CPU: with the spectral backend the workers then only decode and pad (the GPU run's data path).
        views = pretrain.build_views(data_args, extractor, torch.device("meta"))
        dataset = TwoViewDataset(source, views, 16000, seed=0)

        def legacy_batches():
            for epoch in range(args.epochs):
                keys = [[(epoch, i) for i in batch] for batch in epoch_batches(args.clips, epoch, 0, args.batch_size,
                                                                                1, 0)]
                yield from torch.utils.data.DataLoader(dataset, batch_sampler=keys, collate_fn=dataset.collate,
                                                       num_workers=args.num_workers, persistent_workers=False)

        def run_batches():
            sampler = RunBatchSampler(args.clips, 0, args.batch_size, 1, 0, 0, 0, args.epochs * steps_per_epoch)
            yield from map_style_loader(dataset, sampler, args.num_workers)

        for name, batches in (("before: a DataLoader per epoch", legacy_batches), ("after: one DataLoader per run",
                                                                                  run_batches)):
            waits, iterator = [], batches()
            for _ in range(args.epochs * steps_per_epoch):
                start = time.perf_counter()
                next(iterator)
                waits.append(time.perf_counter() - start)
                time.sleep(args.step_seconds)  # the model step
            boundaries = [waits[e * steps_per_epoch] for e in range(1, args.epochs)]
            steady = [w for i, w in enumerate(waits) if i % steps_per_epoch and i > 2]
            row = {"backend": backend, "loader": name, "first_batch_s": waits[0], "boundary_stall_s": max(boundaries),
                   "steady_wait_s": float(np.median(steady)), "step_s": args.step_seconds}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"{args.clips} clips of {args.clip_seconds:g} s, batch {args.batch_size}, {args.num_workers} workers, "
          f"{args.epochs} epochs, simulated step {args.step_seconds} s")
    print(table(rows, [("backend", "backend", "{}"), ("loader", "loader", "{}"),
                       ("epoch-boundary stall (s)", "boundary_stall_s", "{:.2f}"),
                       ("steady wait (s)", "steady_wait_s", "{:.3f}"), ("first batch of the run (s)", "first_batch_s",
                                                                        "{:.2f}")]))
    return rows


def bench_end_to_end(args) -> list[dict]:
    """`audiomosaic pretrain` end to end (ViT-B/16, 10 s clips, 1024 frames, bf16, 70 % checkpointing, batch
    `--batch_size`, `--workers` DataLoader workers) per augmentation backend, against the model step alone on inputs
    already on the device; samples/s over the steady part (log windows of 8 steps after the first 16 steps)."""
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="bench_e2e_"))
    listing = write_synthetic_clips(work / "clips", args.clips, args.clip_seconds)
    ceiling = model_step("base", "official", 0.7, args.batch_size, args.device, 16)
    rows = [{"pipeline": "model step alone (inputs on the device)", "samples_per_second": ceiling["samples_per_second"],
             "steps": 16}]
    print(json.dumps(rows[0]), flush=True)
    for backend in args.backends.split(","):
        steps = args.steps if backend == "spectral" else args.waveform_steps
        if steps <= 16:
            continue
        output_dir = work / f"run_{backend}"
        command = [
            sys.executable, "-m", "audiomosaic_training.pretrain", "--recipe", "pretrain_audioset_vitb", "--dataset",
            str(listing), "--output_dir", str(output_dir), "--augmentation_backend", backend,
            "--per_device_train_batch_size", str(args.batch_size), "--dataloader_num_workers", str(args.num_workers),
            "--max_steps", str(steps), "--warmup_steps", "1", "--logging_steps", "8", "--save_steps", "0",
            "--probe_size", "0", "--disable_tqdm",
        ] + (["--use_cpu"] if args.device == "cpu" else [])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            print(f"pretrain ({backend}) failed:\n{done.stderr[-3000:]}", flush=True)
            continue
        entries = [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines() if line.strip()]
        steady = [entry for entry in entries if "samples_per_second" in entry and entry["step"] > 16]
        row = {"pipeline": f"audiomosaic pretrain --augmentation_backend {backend}", "steps": steps,
               "samples_per_second": float(np.mean([entry["samples_per_second"] for entry in steady]))}
        row.update({phase: float(np.mean([entry[phase] for entry in steady])) for phase in PROFILE_PHASES})
        rows.append(row)
        print(json.dumps(row), flush=True)
    for row in rows:
        row["share_of_ceiling"] = row["samples_per_second"] / rows[0]["samples_per_second"]
        for phase in PROFILE_PHASES:
            row.setdefault(phase, math.nan)
    print(f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}, {os.cpu_count()} cores, batch "
          f"{args.batch_size}, {args.num_workers} workers, {args.clip_seconds:g} s clips")
    print(table(rows, [("pipeline", "pipeline", "{}"), ("samples/s", "samples_per_second", "{:.1f}"),
                       ("share of the model-step ceiling", "share_of_ceiling", "{:.0%}"),
                       ("data wait (s/step)", "data_wait_seconds", "{:.3f}"), ("steps", "steps", "{}")]))


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
    parser.add_argument("--part", choices=("model", "gpu_table", "memory", "selective_memory", "data", "profile", "host",
                                           "epoch_stall", "end_to_end", "cpu_step"), default="model")
    parser.add_argument("--variants", default=None,
                        help=f"gpu_table: `,`-separated memory set-ups among {', '.join(MEMORY_VARIANTS)}, "
                             "memory_option_B, compile_budget (default eager_70,eager_all,eager_none); cpu_step: "
                             "`;`-separated CPU_STEP_VARIANTS names (default all)")
    parser.add_argument("--batch_sizes", default="64,128,256", help="gpu_table: batch sizes")
    parser.add_argument("--option_blocks", default="12,12,11",
                        help="gpu_table: blocks --gradient_checkpointing_memory_gib picks at 64,128,256 (--part memory)")
    parser.add_argument("--budget", type=float, default=None, help="gpu_table: compile_budget's activation budget")
    parser.add_argument("--clip_seconds", type=float, default=10.0, help="host, epoch_stall, end_to_end: clip length")
    parser.add_argument("--repeats", type=int, default=5, help="host: timed repeats (median)")
    parser.add_argument("--epochs", type=int, default=3, help="epoch_stall: epochs")
    parser.add_argument("--step_seconds", type=float, default=1.0, help="epoch_stall: simulated model step")
    parser.add_argument("--waveform_steps", type=int, default=24, help="end_to_end: steps of the waveform run")
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
    parser.add_argument("--num_workers", type=int, default=2, help="epoch_stall, end_to_end: DataLoader workers")
    parser.add_argument("--frames", type=int, default=512, help="cpu_step: frames per clip (512, or 128-208)")
    parser.add_argument("--warm_up_steps", type=int, default=2, help="cpu_step: untimed steps (compilation) first")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    default_batch = {"profile": 32, "host": 256, "end_to_end": 256, "epoch_stall": 16, "cpu_step": 64,
                     "selective_memory": 256}
    args.batch_size = args.batch_size or default_batch.get(args.part, 64 if cuda else 2)
    if args.batch_size < 2:
        raise SystemExit("--batch_size must be at least 2 (the projector BatchNorm needs two samples).")
    args.steps = args.steps or (10 if cuda or args.part == "profile" else 5 if args.part == "cpu_step" else 1)
    if args.part == "gpu_table" and not cuda:
        raise SystemExit("--part gpu_table needs --device cuda")
    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    parts = {"model": bench_model, "gpu_table": bench_gpu_table, "memory": bench_memory,
             "selective_memory": bench_selective_memory, "data": bench_data,
             "profile": bench_profile, "host": bench_host, "epoch_stall": bench_epoch_stall,
             "end_to_end": bench_end_to_end, "cpu_step": bench_cpu_step}
    rows = parts[args.part](args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
