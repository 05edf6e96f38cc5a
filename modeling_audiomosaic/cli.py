"""`audiomosaic` command line: embeddings, classification, conversion, training, probing, analysis and publishing.

    audiomosaic embed clips/ --model runs/pretrain --output embeddings.npy
    audiomosaic classify a.wav b.flac --model runs/finetune --top_k 3
    audiomosaic convert-official model_state_dict.pt converted/
    audiomosaic pretrain --recipe training/recipes/pretrain_tiny_cpu.yaml --output_dir runs/pretrain ...
    audiomosaic probe --recipe training/recipes/probe_generic.yaml --dataset meta.csv ...
    audiomosaic finetune --recipe training/recipes/finetune_generic.yaml --dataset meta.csv ...
    audiomosaic effective-rank meta.csv --audio_column filename --model runs/pretrain --output_dir runs/erank
    audiomosaic publish runs/finetune --hub_model_id me/model --push_to_hub

`pretrain`, `finetune` and `probe` hand every argument to `training/pretrain.py`, `training/finetune.py` and
`training/probe.py` (`audiomosaic finetune --help` lists theirs).
"""

import argparse
import importlib
import json
import os
import sys
from pathlib import Path


TRAINING_COMMANDS = {
    "pretrain": ("training.pretrain", "contrastive pretraining (training/pretrain.py)"),
    "finetune": ("training.finetune", "fine-tuning with transformers' Trainer (training/finetune.py)"),
    "probe": ("training.probe", "linear / layer / weighted-sum / attentive probes (training/probe.py)"),
    "publish": ("training.publish", "write a run's model card and upload it (training/publish.py)"),
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
            from training.data import open_audio_dataset

            items.extend(open_audio_dataset(str(path), audio_column=audio_column)["audio"])
        else:
            items.append(str(path))
    if not items:
        raise ValueError("No audio inputs given.")
    return items


def item_name(item) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return str(item.get("path") or "<audio>")
    return "<audio>"


def load_waveform(item, sampling_rate: int):
    from training.data import decode_audio

    return decode_audio(item, sampling_rate)


def batched(items: list, size: int):
    for start in range(0, len(items), size):
        yield start, items[start: start + size]


def _device(name: str | None):
    import torch

    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def _progress(iterable, total: int, desc: str, enabled: bool = True):
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

    from . import AudioMosaicModel, average_windows

    output = Path(args.output)
    if output.suffix not in (".npy", ".safetensors"):
        raise ValueError(f"--output must end in .npy or .safetensors, got {output.name}.")
    items = expand_inputs(args.inputs, args.audio_column)
    device = _device(args.device)
    model = AudioMosaicModel.from_pretrained(args.model).to(device).eval()
    fe = load_feature_extractor(args.model, args.max_length)
    layers = parse_layers(args.layers, model.config.num_hidden_layers + 1)
    chunks = []
    with torch.no_grad():
        for _, chunk in _progress(batched(items, args.batch_size), -(-len(items) // args.batch_size), "Embedding",
                                  not args.quiet):
            waveforms = [load_waveform(item, fe.sampling_rate) for item in chunk]
            inputs, clip_index, mask = featurize(fe, waveforms, args.window_hop, device)
            mask = mask.to(device) if (mask is not None and args.mask_padding) else None
            out = model(inputs, attention_mask=mask, output_hidden_states=layers is not None)
            if layers is None:
                values = out.pooler_output if not args.no_fc_norm else model.pool(out.last_hidden_state, out.token_mask)
            else:
                values = torch.stack([model.pool(out.hidden_states[i], out.token_mask) for i in layers], dim=1)
            chunks.append(average_windows(values, clip_index, len(chunk)).cpu())
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


# ----------------------------------------------------------------------------------------------------------------------
# classify
# ----------------------------------------------------------------------------------------------------------------------


def classify(args: argparse.Namespace) -> list[dict]:
    import torch

    from . import AudioMosaicForAudioClassification, average_windows

    items = expand_inputs(args.inputs, args.audio_column)
    device = _device(args.device)
    model = AudioMosaicForAudioClassification.from_pretrained(args.model).to(device).eval()
    fe = load_feature_extractor(args.model, args.max_length)
    multi_label = model.config.problem_type == "multi_label_classification"
    id2label = model.config.id2label
    top_k = min(args.top_k, model.config.num_labels)
    predictions = []
    with torch.no_grad():
        for _, chunk in _progress(batched(items, args.batch_size), -(-len(items) // args.batch_size), "Classifying",
                                  not args.quiet and len(items) > args.batch_size):
            waveforms = [load_waveform(item, fe.sampling_rate) for item in chunk]
            inputs, clip_index, _ = featurize(fe, waveforms, args.window_hop, device)
            logits = average_windows(model(inputs).logits, clip_index, len(chunk))
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


# ----------------------------------------------------------------------------------------------------------------------
# effective-rank
# ----------------------------------------------------------------------------------------------------------------------


def effective_rank_command(args: argparse.Namespace) -> dict:
    from . import AudioMosaicModel
    from .analysis import effective_rank_analysis, plot_effective_rank
    from training.data import decode_audio, filter_rows, open_audio_dataset

    dataset = open_audio_dataset(args.data, args.split, args.audio_column, args.dataset_config_name)
    if args.folds is not None:
        if not args.fold_column or args.fold_column not in dataset.column_names:
            raise ValueError(f"--folds needs --fold_column naming one of {dataset.column_names}.")
        dataset = filter_rows(dataset, args.fold_column, args.folds)
    if len(dataset) == 0:
        raise ValueError(f"No clips left in {args.data} after fold filtering ({args.fold_column}={args.folds}).")
    if args.max_samples is not None and args.max_samples < len(dataset):
        dataset = dataset.shuffle(seed=args.seed).select(range(args.max_samples))
    device = _device(args.device)
    model = AudioMosaicModel.from_pretrained(args.model).to(device).eval()
    fe = load_feature_extractor(args.model, args.max_length)
    audio = dataset["audio"]

    def batches():
        for _, chunk in _progress(batched(audio, args.batch_size), -(-len(audio) // args.batch_size), "Encoding",
                                  not args.quiet):
            waveforms = [decode_audio(value, fe.sampling_rate) for value in chunk]
            yield fe(waveforms, sampling_rate=fe.sampling_rate, return_tensors="pt")["input_values"]

    maskings = [m.strip() for m in args.maskings.split(",") if m.strip()]
    results = effective_rank_analysis(model, batches(), maskings, time_ratio=args.time_ratio,
                                      freq_ratio=args.freq_ratio, unstructured_ratio=args.unstructured_ratio,
                                      use_fc_norm=not args.no_fc_norm, center=args.center, seed=args.seed,
                                      device=device)
    results["model"] = args.model
    results["data"] = args.data
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "effective_rank.json").write_text(json.dumps(results, indent=2))
    png = plot_effective_rank(results, output_dir / "effective_rank.png",
                              title=f"Effective rank, {len(audio)} clips of {Path(args.data).name}")
    for masking, values in results["maskings"].items():
        print(f"{masking:>15}: effective rank {values['effective_rank']:.2f} of {values['dim']} "
              f"({values['kept_tokens']} tokens kept)")
    print(f"Wrote {output_dir / 'effective_rank.json'} and {png}", file=sys.stderr)
    return results


# ----------------------------------------------------------------------------------------------------------------------
# sae-train / sae-report / fewshot / heads (modeling_audiomosaic.interpret; needs the `interpret` extra)
# ----------------------------------------------------------------------------------------------------------------------


INTERPRET_COMMANDS = {
    "sae-train": ("configure_sae_train", "train a sparse autoencoder on a layer's pooled or patch-token activations"),
    "sae-report": ("configure_sae_report", "SAE metrics, probes on codes vs raw, per-class latents and PNGs"),
    "fewshot": ("configure_fewshot", "few-shot benchmark of CALM, SAV and baselines over head vectors (+ PNG)"),
    "heads": ("configure_heads", "per-head probe map, head ablation / emphasis / steering vs random heads (+ PNGs)"),
}


def add_interpret_commands(sub) -> None:
    """Sub-parsers of the interpretability commands; without the `interpret` extra they only say how to install it."""
    try:
        from .interpret import commands
    except ImportError as error:
        commands, missing = None, error
    for name, (configure, help_text) in INTERPRET_COMMANDS.items():
        parser = sub.add_parser(name, help=help_text, description=help_text, add_help=commands is not None)
        if commands is not None:
            getattr(commands, configure)(parser)
            continue
        parser.add_argument("arguments", nargs=argparse.REMAINDER)

        def explain(args, error=missing):
            raise ValueError(f"this command needs the `interpret` extra ({error}): "
                             "pip install 'audiomosaic[interpret]'")

        parser.set_defaults(func=explain)


# ----------------------------------------------------------------------------------------------------------------------
# Parser
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
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiomosaic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    _add_common(p)
    p.set_defaults(func=embed)

    p = sub.add_parser("classify", help="top-k labels of audio files",
                       description="Classify audio files with a fine-tuned AudioMosaic checkpoint. Clips longer than "
                                   "the training length are split into windows whose logits are averaged.")
    p.add_argument("inputs", nargs="+", help="audio files, folders, or CSV/JSON/Parquet lists")
    p.add_argument("--top_k", type=int, default=5, help="labels per clip (default 5)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    p.add_argument("--output", default=None, help="write to this file instead of stdout")
    _add_common(p)
    p.set_defaults(func=classify)

    from .convert_official import build_parser as convert_parser
    from .convert_official import run as convert_run

    p = sub.add_parser("convert-official", help="convert an authors' checkpoint to a transformers folder",
                       description="Convert a checkpoint of the authors' code (HanxunH/AudioMosaic) into a "
                                   "transformers folder (config, weights, feature extractor, auto_map).")
    convert_parser(p)
    p.set_defaults(func=convert_run)

    p = sub.add_parser("effective-rank", help="effective rank of pooled representations under masking (+ PNG)",
                       description="Effective rank of the pooled representations of a dataset under inference-time "
                                   "masking (none / unstructured / time / frequency / time_frequency); writes "
                                   "effective_rank.json and a bar chart effective_rank.png.")
    p.add_argument("data", help="audio folder, CSV/JSON/Parquet list, save_to_disk folder or Hub dataset")
    p.add_argument("--model", required=True, help="AudioMosaic checkpoint folder or Hub id")
    p.add_argument("--output_dir", required=True, help="where the JSON and PNG go")
    p.add_argument("--audio_column", default="audio", help="audio column (default 'audio')")
    p.add_argument("--split", default="train", help="split of a Hub / save_to_disk dataset")
    p.add_argument("--dataset_config_name", default=None, help="Hub dataset configuration")
    p.add_argument("--fold_column", default=None, help="column holding folds")
    p.add_argument("--folds", default=None, help="comma-separated folds to keep")
    p.add_argument("--max_samples", type=int, default=None, help="random subset of this many clips")
    p.add_argument("--maskings", default="none,unstructured,time_frequency",
                   help="comma-separated from none, unstructured, time, frequency, time_frequency")
    p.add_argument("--time_ratio", type=float, default=0.6, help="share of time rows dropped (default 0.6)")
    p.add_argument("--freq_ratio", type=float, default=0.4, help="share of frequency columns dropped (default 0.4)")
    p.add_argument("--unstructured_ratio", type=float, default=None,
                   help="share of tokens dropped by unstructured masking (default: keep as many as time_frequency)")
    p.add_argument("--no_fc_norm", action="store_true", help="rank of the token mean without fc_norm")
    p.add_argument("--center", action="store_true", help="remove the feature mean before the SVD")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks and of the subset")
    p.add_argument("--batch_size", type=int, default=32, help="clips per forward pass")
    p.add_argument("--device", default=None, help="cpu / cuda")
    p.add_argument("--max_length", type=int, default=None, help="frames per clip (default: the checkpoint's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=effective_rank_command)

    add_interpret_commands(sub)

    for name, (_, help_text) in TRAINING_COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def run_training_command(name: str, argv: list[str]):
    module_name = TRAINING_COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name in (module_name, "training"):
            raise SystemExit(
                f"audiomosaic {name}: {module_name} is not available in this installation ({error})."
            ) from None
        raise
    return module.main(argv)


def run(argv: list[str] | None = None):
    """Run one command and return its result (embeddings path, predictions, results dict, ...)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if argv and argv[0] in TRAINING_COMMANDS:
        return run_training_command(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        raise SystemExit(2)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(1, f"audiomosaic {args.command}: error: {error}\n")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: exit status 0 on success."""
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
