"""Speed of AudioMosaicFeatureExtractor against transformers' ASTFeatureExtractor and a per-clip Kaldi loop.

All three produce the same thing, (batch, 1024, 128) normalised log-Mel features, from the same seeded noise clips
at 16 kHz. Times are the best of `--repeats` runs after one warm-up.

    python benchmarks/bench_feature_extraction.py --device cpu --batch 32 --seconds 10 --repeats 5
    python benchmarks/bench_feature_extraction.py --device cuda   # adds GPU timings (batch --batch and 256)
    python benchmarks/bench_feature_extraction.py --threads 1     # single-threaded CPU comparison
"""

import argparse
import importlib.util
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchaudio
import transformers
from transformers import ASTFeatureExtractor


REPO = Path(__file__).resolve().parents[1]


def load_extractor_class() -> type:
    """Import the extractor from its file alone (as Hub remote code does), so the rest of the package is not needed."""
    path = REPO / "modeling_audiomosaic" / "feature_extraction_audiomosaic.py"
    spec = importlib.util.spec_from_file_location("feature_extraction_audiomosaic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.AudioMosaicFeatureExtractor


def best_times(
    functions: dict[str, Callable[[], object]], repeats: int, synchronize: bool = False
) -> dict[str, float]:
    """Best wall time of each function. Runs are interleaved (one of each per round) so that load from other
    processes, if any, hits every contender alike."""
    for function in functions.values():
        function()  # warm-up: caches, allocator, CUDA context
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            if synchronize:
                torch.cuda.synchronize()
            start = time.perf_counter()
            function()
            if synchronize:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def kaldi_loop(clips: list[np.ndarray], mean: float, std: float, max_length: int = 1024) -> torch.Tensor:
    """The authors' per-clip front end: mean removal, kaldi.fbank, pad/truncate, (x - mean) / (2 std)."""
    features = []
    for clip in clips:
        waveform = torch.from_numpy(clip)
        fbank = torchaudio.compliance.kaldi.fbank(
            (waveform - waveform.mean())[None],
            htk_compat=True,
            sample_frequency=16000,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=128,
            dither=0.0,
            frame_shift=10,
        )
        fbank = torch.nn.functional.pad(fbank, (0, 0, 0, max(0, max_length - fbank.shape[0])))[:max_length]
        features.append((fbank - mean) / (2 * std))
    return torch.stack(features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpu-batch", type=int, default=256, help="batch for the GPU-vs-AST comparison")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False")

    rng = np.random.default_rng(0)
    samples = int(args.seconds * 16000)
    clips = [(0.1 * rng.standard_normal(samples)).astype(np.float32) for _ in range(args.batch)]
    ours = load_extractor_class()()
    ast = ASTFeatureExtractor(num_mel_bins=128, max_length=1024)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch threads {torch.get_num_threads()}; torch {torch.__version__}, torchaudio {torchaudio.__version__}, "
        f"transformers {transformers.__version__}"
    )
    print(f"input: {args.batch} clips x {args.seconds:g} s at 16 kHz; best of {args.repeats}\n")

    reference = kaldi_loop(clips, ours.mean, ours.std)
    output = ours(clips, sampling_rate=16000, return_tensors="pt")["input_values"]
    print(f"max |ours - per-clip kaldi loop| = {(output - reference).abs().max().item():.2e}\n")

    timings = best_times(
        {
            "ours, batched (CPU)": lambda: ours(clips, sampling_rate=16000, return_tensors="pt"),
            "ASTFeatureExtractor (CPU)": lambda: ast(clips, sampling_rate=16000, return_tensors="pt"),
            "kaldi.fbank per-clip loop (CPU)": lambda: kaldi_loop(clips, ours.mean, ours.std),
        },
        args.repeats,
    )
    for name, seconds in timings.items():
        print(f"{name:40s} {1000 * seconds:9.1f} ms total {1000 * seconds / args.batch:8.3f} ms/clip")
    ours_cpu = timings["ours, batched (CPU)"]
    print(f"\nours/AST  = {ours_cpu / timings['ASTFeatureExtractor (CPU)']:.2f}")
    print(f"ours/loop = {ours_cpu / timings['kaldi.fbank per-clip loop (CPU)']:.2f}")

    if args.device == "cuda":
        print(f"\nGPU: {torch.cuda.get_device_name()}")
        time_gpu(ours, ast, clips, args.repeats)
        time_gpu(
            ours,
            ast,
            [(0.1 * rng.standard_normal(samples)).astype(np.float32) for _ in range(args.gpu_batch)],
            args.repeats,
        )


def time_gpu(ours: Callable, ast: ASTFeatureExtractor, clips: list[np.ndarray], repeats: int) -> None:
    """Ours on CUDA (from numpy clips, and from a tensor already on the GPU) against AST on CPU, same clips."""
    on_gpu = torch.from_numpy(np.stack(clips)).cuda()
    gpu = best_times(
        {
            "from_host": lambda: ours(clips, sampling_rate=16000, return_tensors="pt", device="cuda"),
            "resident": lambda: ours(on_gpu, sampling_rate=16000, return_tensors="pt"),
        },
        repeats,
        synchronize=True,
    )
    from_host, resident = gpu["from_host"], gpu["resident"]
    ast_time = best_times({"ast": lambda: ast(clips, sampling_rate=16000, return_tensors="pt")}, repeats)["ast"]
    gpu_output = ours(on_gpu, sampling_rate=16000, return_tensors="pt")["input_values"].cpu()
    cpu_output = ours(clips, sampling_rate=16000, return_tensors="pt")["input_values"]
    print(f"batch {len(clips)}: max |GPU - CPU| = {(gpu_output - cpu_output).abs().max().item():.2e}")
    for name, seconds in (
        ("ours, CUDA, numpy input (incl. copy)", from_host),
        ("ours, CUDA, input already on GPU", resident),
        ("ASTFeatureExtractor (CPU)", ast_time),
    ):
        print(f"  {name:38s} {1000 * seconds:9.1f} ms total {1000 * seconds / len(clips):8.3f} ms/clip")
    print(f"  GPU(numpy input)/AST = {from_host / ast_time:.3f}")
    print(f"  GPU(on-GPU input)/AST = {resident / ast_time:.3f}")


if __name__ == "__main__":
    main()
