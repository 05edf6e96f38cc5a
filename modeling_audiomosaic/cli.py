"""`audiomosaic` command line: embeddings, classification and timelines, ONNX export, conversion, training, probing,
analysis and publishing.

    audiomosaic embed clips/ --model runs/pretrain --output embeddings.npy
    audiomosaic embed long.wav --model runs/pretrain --frames --output frames.safetensors
    audiomosaic classify a.wav b.flac --model runs/finetune --top_k 3
    audiomosaic classify long.wav --model runs/finetune --timeline --format csv --plot timeline.png
    audiomosaic export-onnx runs/finetune onnx/ --int8
    audiomosaic convert-official model_state_dict.pt converted/
    audiomosaic pretrain --recipe training/recipes/pretrain_tiny_cpu.yaml --output_dir runs/pretrain ...
    audiomosaic probe --recipe training/recipes/probe_generic.yaml --dataset meta.csv ...
    audiomosaic finetune --recipe training/recipes/finetune_generic.yaml --dataset meta.csv ...
    audiomosaic effective-rank meta.csv --audio_column filename --model runs/pretrain --output_dir runs/erank
    audiomosaic publish runs/finetune --hub_model_id me/model --push_to_hub

`pretrain`, `finetune`, `probe`, `publish` and `effective-rank` hand every argument to the training package
(`training/` in the repository, installed as `audiomosaic_training` with the `[train]` extra); `audiomosaic finetune
--help` lists its arguments. `embed`, `classify` and `convert-official` need only the base install.
"""

import argparse
import csv
import importlib
import json
import os
import sys
from pathlib import Path


# Commands of the `[train]` extra, dispatched to the `audiomosaic_training` package (the repository's `training/`).
TRAINING_COMMANDS = {
    "pretrain": ("audiomosaic_training.pretrain", "contrastive pretraining (training/pretrain.py)"),
    "finetune": ("audiomosaic_training.finetune", "fine-tuning with transformers' Trainer (training/finetune.py)"),
    "probe": ("audiomosaic_training.probe", "linear / layer / weighted-sum / attentive probes (training/probe.py)"),
    "publish": ("audiomosaic_training.publish", "write a run's model card and upload it (training/publish.py)"),
    "effective-rank": ("audiomosaic_training.effective_rank",
                       "effective rank of pooled representations under masking (+ PNG)"),
    "train-ltu": ("audiomosaic_training.ltu",
                  "audio-language model (LTU), one curriculum stage per run (training/ltu.py)"),
}
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au"}
TABLE_EXTENSIONS = {".csv", ".json", ".jsonl", ".parquet"}


# ----------------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------------


def expand_inputs(inputs: list[str], audio_column: str = "audio") -> list:
    """Audio files, folders (searched recursively) and CSV/JSON/Parquet lists (their `audio_column`) -> a list of
    audio references (paths or audio dicts) in a stable order. Missing paths raise `FileNotFoundError`."""
    items = []
    for entry in inputs:
        path = Path(entry)
        if not path.exists():
            raise FileNotFoundError(f"Input {entry} does not exist.")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
            if not files:
                raise ValueError(f"Folder {entry} holds no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}).")
            items.extend(str(p) for p in files)
        elif path.suffix.lower() in TABLE_EXTENSIONS:
            items.extend(read_audio_list(path, audio_column))
        else:
            items.append(str(path))
    if not items:
        raise ValueError("No audio inputs given.")
    return items


def read_audio_list(path: Path, audio_column: str) -> list[str]:
    """The `audio_column` of a CSV / JSON / JSONL / Parquet list, as paths resolved against the list's folder."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    elif suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path} must hold a JSON list of records with a `{audio_column}` field.")
    else:
        try:
            import pyarrow.parquet
        except ImportError:
            raise ValueError(f"Reading {path} needs pyarrow (pip install pyarrow), or give a CSV/JSON list.") from None
        rows = pyarrow.parquet.read_table(path).to_pylist()
    if not rows:
        raise ValueError(f"{path} lists no audio.")
    missing = [i for i, row in enumerate(rows) if not isinstance(row, dict) or not row.get(audio_column)]
    if missing:
        columns = sorted(rows[0]) if isinstance(rows[0], dict) else []
        raise ValueError(f"{path}: row {missing[0]} has no `{audio_column}` value (--audio_column); its columns are "
                         f"{columns}.")
    return [str((path.parent / str(row[audio_column])).resolve()) for row in rows]


def item_name(item) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return str(item.get("path") or "<audio>")
    return "<audio>"


def batched(items: list, size: int):
    for start in range(0, len(items), size):
        yield start, items[start: start + size]


def resolve_device(name: str | None):
    import torch

    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def _dtype(name: str, device):
    """torch dtype of --dtype; reduced precision keeps the feature extractor in float32 (the model casts)."""
    import torch

    if name != "float32" and device.type == "cpu":
        print(f"--dtype {name} on CPU: supported, but usually slower than float32 (no native half-precision matmul "
              "on most CPUs; see benchmarks/RESULTS.md).", file=sys.stderr)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def progress_bar(iterable, total: int, desc: str, enabled: bool = True):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", file=sys.stderr)


def featurize(feature_extractor, waveforms: list, window_hop: int | None, device):
    """(input_values, window_clip_index) with long clips split into windows of the extractor's max_length."""
    batch = feature_extractor(waveforms, sampling_rate=feature_extractor.sampling_rate, long_audio="window",
                              window_hop=window_hop, return_tensors="pt")
    return batch["input_values"].to(device), batch["window_clip_index"].to(device), batch.get("attention_mask")


def load_feature_extractor(model_path: str, max_length: int | None):
    from transformers import AutoFeatureExtractor

    from . import AudioMosaicFeatureExtractor

    try:
        fe = AutoFeatureExtractor.from_pretrained(model_path)
    except (OSError, ValueError):
        print(f"{model_path} has no preprocessor_config.json; using the AudioSet feature extractor.", file=sys.stderr)
        fe = AudioMosaicFeatureExtractor()
    if max_length is not None:
        fe.max_length = max_length
    return fe


# ----------------------------------------------------------------------------------------------------------------------
# embed
# ----------------------------------------------------------------------------------------------------------------------


def parse_layers(spec: str, num_entries: int) -> list[int] | None:
    """None for the pooled output, else indices into (embedding output, block 1, ..., block depth)."""
    if spec == "pooled":
        return None
    if spec == "all":
        return list(range(num_entries))
    layers = []
    for part in spec.split(","):
        index = int(part)
        if not -num_entries <= index < num_entries:
            raise ValueError(f"--layers: {index} is out of range; the model has {num_entries} entries "
                             f"(0 = embedding output, 1..{num_entries - 1} = blocks).")
        layers.append(index % num_entries)
    return layers


def embed(args: argparse.Namespace) -> Path:
    import numpy as np
    import torch

    from . import AudioMosaicModel, average_windows, decode_audio

    output = Path(args.output)
    if output.suffix not in (".npy", ".safetensors"):
        raise ValueError(f"--output must end in .npy or .safetensors, got {output.name}.")
    items = expand_inputs(args.inputs, args.audio_column)
    device = resolve_device(args.device)
    model = AudioMosaicModel.from_pretrained(args.model, dtype=_dtype(args.dtype, device)).to(device).eval()
    fe = load_feature_extractor(args.model, args.max_length)
    layers = parse_layers(args.layers, model.config.num_hidden_layers + 1)
    if args.frames:
        return embed_frames(args, model, fe, items, layers, output)
    chunks = []
    with torch.no_grad():
        for _, chunk in progress_bar(batched(items, args.batch_size), -(-len(items) // args.batch_size), "Embedding",
                                     not args.quiet):
            waveforms = [decode_audio(item, fe.sampling_rate) for item in chunk]
            inputs, clip_index, mask = featurize(fe, waveforms, args.window_hop, device)
            mask = mask.to(device) if (mask is not None and args.mask_padding) else None
            out = model(inputs, attention_mask=mask, output_hidden_states=layers is not None)
            if layers is None:
                values = out.pooler_output if not args.no_fc_norm else model.pool(out.last_hidden_state, out.token_mask)
            else:
                values = torch.stack([model.pool(out.hidden_states[i], out.token_mask) for i in layers], dim=1)
            chunks.append(average_windows(values.float(), clip_index, len(chunk)).cpu())
    embeddings = torch.cat(chunks)
    meta = {"files": [item_name(i) for i in items], "model": args.model,
            "layers": "pooled" if layers is None else layers,
            "shape": list(embeddings.shape)}
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".npy":
        np.save(output, embeddings.numpy())
        output.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    else:
        from safetensors.torch import save_file

        save_file({"embeddings": embeddings.contiguous()}, str(output),
                  metadata={k: json.dumps(v) for k, v in meta.items()})
    print(f"Wrote {tuple(embeddings.shape)} embeddings of {len(items)} clip(s) to {output}", file=sys.stderr)
    return output


def embed_frames(args: argparse.Namespace, model, fe, items: list, layers: list[int] | None, output: Path) -> Path:
    """`embed --frames`: one vector per 160 ms patch row of every clip (see `embeddings.frame_embeddings`), all clips'
    rows concatenated, with each row's clip and centre time."""
    import numpy as np
    import torch

    from . import decode_audio
    from .embeddings import frame_embeddings

    frames, names = [], []
    for _, chunk in progress_bar(batched(items, args.batch_size), -(-len(items) // args.batch_size), "Embedding",
                                 not args.quiet):
        waveforms = [decode_audio(item, fe.sampling_rate) for item in chunk]
        frames += frame_embeddings(model, fe, waveforms, layers=-1 if layers is None else layers,
                                   window_hop=args.window_hop, batch_size=args.batch_size,
                                   mask_padding=args.mask_padding)
        names += [item_name(item) for item in chunk]
    embeddings = torch.cat([f.embeddings for f in frames])
    timestamps = torch.cat([f.timestamps for f in frames])
    clip_index = torch.cat([torch.full((len(f.timestamps),), i) for i, f in enumerate(frames)])
    meta = {"files": names, "model": args.model, "layers": "last" if layers is None else layers,
            "shape": list(embeddings.shape), "frames_per_file": [len(f.timestamps) for f in frames],
            "timestamps_seconds": [[round(t, 4) for t in f.timestamps.tolist()] for f in frames]}
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".npy":
        np.save(output, embeddings.numpy())
        output.with_suffix(".json").write_text(json.dumps(meta))
    else:
        from safetensors.torch import save_file

        meta.pop("timestamps_seconds")
        save_file({"embeddings": embeddings.contiguous(), "timestamps": timestamps, "clip_index": clip_index},
                  str(output), metadata={k: json.dumps(v) for k, v in meta.items()})
    print(f"Wrote {tuple(embeddings.shape)} frame embeddings of {len(items)} clip(s) to {output}", file=sys.stderr)
    return output


# ----------------------------------------------------------------------------------------------------------------------
# classify
# ----------------------------------------------------------------------------------------------------------------------


def classify(args: argparse.Namespace) -> list[dict]:
    import torch

    from . import AudioMosaicForAudioClassification, average_windows, decode_audio

    items = expand_inputs(args.inputs, args.audio_column)
    device = resolve_device(args.device)
    model = AudioMosaicForAudioClassification.from_pretrained(args.model, dtype=_dtype(args.dtype, device))
    model = model.to(device).eval()
    fe = load_feature_extractor(args.model, args.max_length)
    if args.plot and not args.timeline:
        raise ValueError("--plot draws a timeline: add --timeline.")
    if args.timeline:
        return classify_timeline(args, model, fe, items)
    multi_label = model.config.problem_type == "multi_label_classification"
    id2label = model.config.id2label
    top_k = min(args.top_k, model.config.num_labels)
    predictions = []
    with torch.no_grad():
        for _, chunk in progress_bar(batched(items, args.batch_size), -(-len(items) // args.batch_size), "Classifying",
                                     not args.quiet and len(items) > args.batch_size):
            waveforms = [decode_audio(item, fe.sampling_rate) for item in chunk]
            inputs, clip_index, _ = featurize(fe, waveforms, args.window_hop, device)
            logits = average_windows(model(inputs).logits.float(), clip_index, len(chunk))
            scores = logits.sigmoid() if multi_label else logits.softmax(dim=-1)
            values, indices = scores.topk(top_k, dim=-1)
            for item, row_values, row_indices in zip(chunk, values.tolist(), indices.tolist()):
                predictions.append({
                    "file": item_name(item),
                    "predictions": [{"label": id2label[i], "score": round(v, 6)}
                                    for v, i in zip(row_values, row_indices)],
                })
    if args.format == "json":
        text = json.dumps(predictions, indent=2)
    elif args.format == "csv":
        lines = ["file," + ",".join(f"label_{i},score_{i}" for i in range(1, top_k + 1))]
        lines += [",".join([p["file"], *[f"{x['label']},{x['score']}" for x in p["predictions"]]]) for p in predictions]
        text = "\n".join(lines)
    else:
        width = max(len(p["file"]) for p in predictions)
        label_width = max(len(str(x["label"])) for p in predictions for x in p["predictions"])
        lines = [f"{'file':<{width}}  {'label':<{label_width}}  score"]
        for p in predictions:
            for rank, x in enumerate(p["predictions"]):
                lines.append(f"{p['file'] if rank == 0 else '':<{width}}  {x['label']:<{label_width}}  {x['score']:.4f}")
        text = "\n".join(lines)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    return predictions


def classify_timeline(args: argparse.Namespace, model, fe, items: list) -> list[dict]:
    """`classify --timeline`: per-segment scores (windows of the model's length) as a table, JSON or CSV, and with
    --plot a heatmap PNG per file."""
    from . import decode_audio
    from .embeddings import classify_segments, plot_timeline, timelines_to_csv, timelines_to_table

    timelines = []
    for _, chunk in progress_bar(batched(items, args.batch_size), -(-len(items) // args.batch_size), "Classifying",
                                 not args.quiet and len(items) > args.batch_size):
        waveforms = [decode_audio(item, fe.sampling_rate) for item in chunk]
        timelines += classify_segments(model, fe, waveforms, window_hop=args.window_hop, batch_size=args.batch_size,
                                       names=[item_name(item) for item in chunk])
    if args.plot:
        plot = Path(args.plot)
        for index, timeline in enumerate(timelines):
            path = plot
            if len(timelines) > 1:
                path = plot.with_name(f"{plot.stem}_{index}_{Path(timeline.name).stem}.png")
            plot_timeline(timeline, path, top_k=max(args.top_k, 5))
            print(f"Wrote {path}", file=sys.stderr)
    result = [{"file": t.name, "segments": t.top(args.top_k)} for t in timelines]
    if args.format == "json":
        text = json.dumps(result, indent=2)
    elif args.format == "csv":
        text = timelines_to_csv(timelines, args.top_k).rstrip("\n")
    else:
        text = timelines_to_table(timelines, args.top_k)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    return result


# ----------------------------------------------------------------------------------------------------------------------
# export-onnx
# ----------------------------------------------------------------------------------------------------------------------


def export_onnx_command(args: argparse.Namespace) -> dict:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise SystemExit("audiomosaic export-onnx needs onnx, onnxscript and onnxruntime: "
                         "pip install \"modeling-audiomosaic[onnx]\"")
    from .onnx_export import export_onnx

    result = export_onnx(args.model_dir, args.out_dir, task=args.task, opset=args.opset, int8=args.int8)
    for length, error in result["max_abs_error"].items():
        print(f"onnxruntime vs PyTorch at {length} frames: max |error| {error:.2e}", file=sys.stderr)
    print(f"Wrote the {result['task']} to {', '.join(result['files'])}", file=sys.stderr)
    return result


# ----------------------------------------------------------------------------------------------------------------------
# sae-train / sae-report / fewshot / heads (modeling_audiomosaic.interpret; needs the `interpret` extra)
# ----------------------------------------------------------------------------------------------------------------------


INTERPRET_COMMANDS = {
    "sae-train": ("configure_sae_train", "train a sparse autoencoder on a layer's pooled or patch-token activations"),
    "sae-report": ("configure_sae_report", "SAE metrics, probes on codes vs raw, per-class latents and PNGs"),
    "fewshot": ("configure_fewshot", "few-shot benchmark of CALM, SAV and baselines over head vectors (+ PNG)"),
    "heads": ("configure_heads", "per-head probe map, head ablation / emphasis / steering vs random heads (+ PNGs)"),
}


def run_interpret_command(name: str, argv: list[str]):
    """Build and run one interpretability command; its parser needs `modeling_audiomosaic.interpret` (the `interpret`
    extra), so it is only imported when one of these commands runs."""
    try:
        from .interpret import commands
    except ImportError as error:
        raise SystemExit(f"audiomosaic {name}: needs the interpret extra: pip install "
                         f"'modeling-audiomosaic[interpret]' (missing module: {error.name}).") from None
    configure, help_text = INTERPRET_COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"audiomosaic {name}", description=help_text)
    getattr(commands, configure)(parser)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(1, f"audiomosaic {name}: error: {error}\n")


# ----------------------------------------------------------------------------------------------------------------------
# Parser
# ----------------------------------------------------------------------------------------------------------------------
# norm-stats
# ----------------------------------------------------------------------------------------------------------------------


def norm_stats_command(args: argparse.Namespace):
    """Log-Mel mean and std of the inputs at --max_length frames (the authors' recipe, see norm_stats.py); printed,
    and written as a feature-extractor folder with --output_dir."""
    from . import AudioMosaicFeatureExtractor
    from .norm_stats import compute_norm_stats, subsample

    clips = subsample(expand_inputs(args.inputs, args.audio_column), args.max_samples)
    stats = compute_norm_stats(clips, args.max_length, batch_size=args.batch_size, progress=not args.quiet)
    print(f"mean {stats.mean:.7g}  std {stats.std:.7g}  ({stats.num_clips} clips at {stats.max_length} frames)")
    if args.output_dir:
        feature_extractor = AudioMosaicFeatureExtractor(max_length=args.max_length, mean=stats.mean, std=stats.std)
        feature_extractor.save_pretrained(args.output_dir)
        print(f"Wrote {Path(args.output_dir) / 'preprocessor_config.json'}")
    return stats


# ----------------------------------------------------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="AudioMosaic checkpoint folder or Hub id")
    parser.add_argument("--batch_size", type=int, default=16, help="clips per forward pass (default 16)")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    parser.add_argument("--max_length", type=int, default=None,
                        help="frames per window (default: the checkpoint's feature extractor)")
    parser.add_argument("--window_hop", type=int, default=None,
                        help="hop between windows of clips longer than max_length (default max_length // 2); "
                             "window outputs are averaged per clip")
    parser.add_argument("--audio_column", default="audio", help="audio column of CSV/JSON/Parquet inputs")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="model precision (the features stay float32; outputs are written as float32)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiomosaic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="before the command: show the Python traceback of an error instead of one line "
                             f"(or set {DEBUG_VARIABLE}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("embed", help="pooled or per-layer embeddings of audio files -> .npy / .safetensors",
                       description="Embed audio files, folders or CSV lists with an AudioMosaic encoder. Output: "
                                   "(clips, dim) pooled embeddings (fc_norm of the token mean), or (clips, layers, "
                                   "dim) per-layer token means with --layers; a .npy also gets a .json with the file "
                                   "order, a .safetensors keeps it in its metadata.")
    p.add_argument("inputs", nargs="+", help="audio files, folders, or CSV/JSON/Parquet lists")
    p.add_argument("--output", required=True, help="embeddings.npy or embeddings.safetensors")
    p.add_argument("--layers", default="pooled",
                   help="'pooled' (default), 'all' (embedding output + every block) or indices, e.g. '0,6,12'")
    p.add_argument("--no_fc_norm", action="store_true", help="pooled: the token mean without fc_norm")
    p.add_argument("--mask_padding", action="store_true",
                   help="exclude padded frames from attention and pooling (the checkpoints were trained with "
                        "padding included)")
    p.add_argument("--frames", action="store_true",
                   help="time-aligned embeddings: one vector per 160 ms patch row (tokens of the row averaged over "
                        "frequency; --layers picks the block, default the last), all files' rows concatenated, with "
                        "their centre times and clip index (in the .json / .safetensors); long clips are windowed "
                        "(--window_hop must then be a multiple of 16) and each row comes from the window where it is "
                        "most central")
    _add_common(p)
    p.set_defaults(func=embed)

    p = sub.add_parser("classify", help="top-k labels of audio files",
                       description="Classify audio files with a fine-tuned AudioMosaic checkpoint. Clips longer than "
                                   "the training length are split into windows whose logits are averaged.")
    p.add_argument("inputs", nargs="+", help="audio files, folders, or CSV/JSON/Parquet lists")
    p.add_argument("--top_k", type=int, default=5, help="labels per clip (default 5)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    p.add_argument("--output", default=None, help="write to this file instead of stdout")
    p.add_argument("--timeline", action="store_true",
                   help="per-segment scores instead of one prediction per clip: each window of the model's length "
                        "(--window_hop apart) is a segment with its start/end in seconds and top-k labels "
                        "(sigmoid for multi-label models, softmax otherwise)")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="with --timeline: draw the timeline (time x top classes heatmap); several inputs get "
                        "FILE_<index>_<name>.png (needs matplotlib)")
    _add_common(p)
    p.set_defaults(func=classify)

    p = sub.add_parser("export-onnx", help="export an encoder or classifier to ONNX (dynamic batch and length)",
                       description="Export an AudioMosaic folder to OUT_DIR/model.onnx with dynamic batch size and "
                                   "number of frames (16 to the model's max_length), checked against PyTorch at "
                                   "several lengths; the feature extractor config and config.json are written "
                                   "beside it. Needs onnx and onnxruntime.")
    p.add_argument("model_dir", help="AudioMosaic folder (encoder, pretraining or classifier)")
    p.add_argument("out_dir", help="output folder")
    p.add_argument("--task", choices=("auto", "classifier", "encoder"), default="auto",
                   help="what to export (auto: the classifier when the folder holds one)")
    p.add_argument("--int8", action="store_true", help="also write model_int8.onnx (dynamic int8 quantisation)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.set_defaults(func=export_onnx_command)

    from .convert_official import build_parser as convert_parser
    from .convert_official import run as convert_run

    p = sub.add_parser("convert-official", help="convert an authors' checkpoint to a transformers folder",
                       description="Convert a checkpoint of the authors' code (HanxunH/AudioMosaic) into a "
                                   "transformers folder (config, weights, feature extractor, auto_map).")
    convert_parser(p)
    p.set_defaults(func=convert_run)

    from .convert_ltu import build_parser as convert_ltu_parser
    from .convert_ltu import run as convert_ltu_run

    p = sub.add_parser("convert-ltu", help="convert the authors' LTU audio-LLM release (+ base LLaMA) to a "
                                           "transformers folder and a peft adapter",
                       description="Convert an AudioMosaic-LTU release folder (extra_weights.bin: encoder, projector, "
                                   "LoRA) into an AudioMosaicLtuForConditionalGeneration folder on the base LLaMA "
                                   "given with --base-model, plus its processor and a peft LoRA adapter in adapter/.")
    convert_ltu_parser(p)
    p.set_defaults(func=convert_ltu_run)

    for name, (_, help_text) in INTERPRET_COMMANDS.items():
        sub.add_parser(name, help=f"{help_text} (interpret extra)", add_help=False)

    p = sub.add_parser("norm-stats", help="log-Mel mean and std of your audio (normalisation statistics)",
                       description="Compute the log-Mel mean and std of audio files, folders or CSV/JSON lists the "
                                   "way the authors' statistics were computed (AST's get_norm_stats.py: un-normalised "
                                   "Kaldi log-Mel padded/truncated to the model's length, mean of per-batch means "
                                   "and stds), print them, and optionally write a feature-extractor folder.")
    p.add_argument("inputs", nargs="+", help="audio files, folders, or CSV/JSON/Parquet lists")
    p.add_argument("--audio_column", default="audio", help="audio column of CSV/JSON/Parquet inputs")
    p.add_argument("--max_length", type=int, default=1024,
                   help="frames per clip the model will see (default 1024 = 10.24 s; Speech Commands 128)")
    p.add_argument("--max_samples", type=int, default=None,
                   help="use at most this many clips, drawn at random (seed 0)")
    p.add_argument("--batch_size", type=int, default=1000,
                   help="clips per statistics batch (AST's 1000; the result is the mean over batches)")
    p.add_argument("--output_dir", default=None, help="write a feature extractor with these statistics here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=norm_stats_command)

    for name, (_, help_text) in TRAINING_COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def run_training_command(name: str, argv: list[str]):
    module_name = TRAINING_COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        # The training package itself or one of the extra's dependencies (accelerate, datasets, ...) is missing.
        raise SystemExit(
            f"audiomosaic {name}: needs the training extra: pip install 'modeling-audiomosaic[train]' "
            f"(missing module: {error.name})."
        ) from None
    return module.main(argv)


# Bad input surfaces as these exceptions (transformers raises OSError for a folder without weights or config); the
# command line answers them with one line naming the problem instead of a traceback.
USER_ERRORS = (ValueError, OSError)  # OSError covers FileNotFoundError
DEBUG_VARIABLE = "AUDIOMOSAIC_DEBUG"


def run(argv: list[str] | None = None):
    """Run one command and return its result (embeddings path, predictions, results dict, ...).

    This is the command line's one error boundary: bad input, in any command, ends with one line `audiomosaic COMMAND:
    error: ...` on stderr and exit status 1. `audiomosaic --debug COMMAND ...` or AUDIOMOSAIC_DEBUG=1 re-raises the
    exception with its traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    debug = os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    if argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    command = argv[0] if argv else None
    try:
        if command in TRAINING_COMMANDS:
            return run_training_command(command, argv[1:])
        if command in INTERPRET_COMMANDS:
            return run_interpret_command(command, argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            raise SystemExit(2)
        return args.func(args)
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"audiomosaic {command}: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: exit status 0 on success, 1 on bad input (one line, see `run`)."""
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
