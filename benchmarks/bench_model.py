"""Encoder forward speed and memory: AudioMosaic (ViT-B/16, 16x16 patches, 513 tokens for 10 s) against transformers'
AST (ViT-B, overlapping 16x16 patches with stride 10, 1214 tokens for 10 s), the native transformers alternative, in one
run on the same input. Also checks on CUDA that bf16 autocast stays close to float32.

    python benchmarks/bench_model.py --device cpu --batch 2 --repeats 3
    python benchmarks/bench_model.py --device cuda --batch 64 --repeats 10
"""

import argparse
import time

import torch
from transformers import ASTConfig, ASTModel

from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicModel


def timed(fn, repeats: int, device: str) -> float:
    """Best wall time of `repeats` calls after one warm-up, in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def peak_memory(fn, device: str) -> float | None:
    if device != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = args.device
    x = torch.randn(args.batch, args.frames, 128, device=device)

    models = {
        "AudioMosaic ViT-B/16": AudioMosaicModel(AudioMosaicConfig(max_length=args.frames)),
        "AST ViT-B (transformers)": ASTModel(ASTConfig(max_length=args.frames)),
    }
    dtypes = [("float32", None)] + ([("bf16 autocast", torch.bfloat16)] if device == "cuda" else [])
    rows = []
    for name, model in models.items():
        model.to(device).eval()
        for implementation in ("eager", "sdpa"):
            model.set_attn_implementation(implementation)
            for dtype_name, dtype in dtypes:
                def forward(model=model, dtype=dtype):
                    with torch.no_grad(), torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
                        return model(x).last_hidden_state

                seconds = timed(forward, args.repeats, device)
                rows.append((name, implementation, dtype_name, forward().shape[1], seconds, peak_memory(forward, device)))

    print(f"device={device} batch={args.batch} frames={args.frames} torch={torch.__version__}")
    print("| model | attention | dtype | tokens | ms / batch | clips / s | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for name, implementation, dtype_name, tokens, seconds, memory in rows:
        memory_text = f"{memory:.2f}" if memory is not None else "-"
        print(f"| {name} | {implementation} | {dtype_name} | {tokens} | {seconds * 1e3:.1f} | "
              f"{args.batch / seconds:.1f} | {memory_text} |")
    for implementation in ("eager", "sdpa"):
        for dtype_name, _ in dtypes:
            ours = next(r[4] for r in rows if r[0].startswith("AudioMosaic") and r[1:3] == (implementation, dtype_name))
            ast = next(r[4] for r in rows if r[0].startswith("AST") and r[1:3] == (implementation, dtype_name))
            print(f"speed-up AudioMosaic vs AST ({implementation}, {dtype_name}): {ast / ours:.2f}x")

    if device == "cuda":
        model = models["AudioMosaic ViT-B/16"]
        with torch.no_grad():
            reference = model(x).pooler_output
            with torch.autocast("cuda", dtype=torch.bfloat16):
                bf16 = model(x).pooler_output.float()
        cosine = torch.nn.functional.cosine_similarity(reference, bf16, dim=-1).min().item()
        print(f"bf16 autocast vs float32 pooled output: max |diff| {(reference - bf16).abs().max().item():.3e}, "
              f"min cosine {cosine:.6f}")


if __name__ == "__main__":
    main()
