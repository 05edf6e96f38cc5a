"""Classify audio files with a fine-tuned AudioMosaic checkpoint. Clips longer than the training length are split
into windows whose logits are averaged; --timeline gives per-segment scores instead.

    audiomosaic classify a.wav b.flac --model runs/finetune --top_k 3
    audiomosaic classify long.wav --model runs/finetune --timeline --format csv --plot timeline.png
"""

import argparse
import json
import sys
from pathlib import Path

from .. import inputs
from ..validation import integer, output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="audio files, folders, or CSV/JSON/Parquet lists")
    parser.add_argument("--top_k", type=integer(minimum=1), default=5,
                        help="labels per clip or segment (default 5; at most the model's number of labels is shown)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    parser.add_argument("--output", type=output_file, default=None, help="write to this file instead of stdout")
    parser.add_argument("--timeline", action="store_true",
                        help="per-segment scores instead of one prediction per clip: each window of the model's "
                             "length (--window_hop apart) is a segment with its start/end in seconds and top-k "
                             "labels (sigmoid for multi-label models, softmax otherwise)")
    parser.add_argument("--plot", type=output_file, default=None, metavar="FILE.png",
                        help="with --timeline: draw the timeline (time x top classes heatmap); several inputs get "
                             "FILE_<index>_<name>.png (needs matplotlib)")
    inputs.add_input_arguments(parser, inference=True, model_kinds=("classifier",))


def main(argv: list[str] | None = None) -> list[dict]:
    return run(inputs.command_parser("classify", __doc__, add_arguments).parse_args(argv))


def run(args: argparse.Namespace) -> list[dict]:
    import torch

    from .. import AudioMosaicForAudioClassification, average_windows, decode_audio

    if args.plot and not args.timeline:
        raise ValueError("--plot draws a timeline: add --timeline.")
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise ValueError(f"--plot writes a PNG: give a file name ending in .png, got {args.plot}.")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError("--plot needs matplotlib: pip install matplotlib.") from None
    items = inputs.expand_inputs(args.inputs, args.audio_column)
    read = {Path(path).resolve() for path in [*args.inputs, *items] if isinstance(path, str)}
    for option, path in (("--output", args.output), ("--plot", args.plot)):
        if path is not None and Path(path).resolve() in read:
            raise ValueError(f"{option} {path} is one of the inputs; writing there would replace it.")
    model, fe, device = inputs.load_for_inference(AudioMosaicForAudioClassification, args, kinds=("classifier",))
    if args.timeline:
        return classify_timeline(args, model, fe, items)
    multi_label = model.config.problem_type == "multi_label_classification"
    id2label = model.config.id2label
    top_k = min(args.top_k, model.config.num_labels)
    predictions = []
    with torch.no_grad():
        for chunk in inputs.batched(items, args.batch_size, "Classifying", not args.quiet and len(items) > args.batch_size):
            waveforms = [decode_audio(item, fe.sampling_rate) for item in chunk]
            input_values, clip_index, _ = inputs.featurize(fe, waveforms, args.window_hop, device)
            logits = average_windows(model(input_values).logits.float(), clip_index, len(chunk))
            scores = logits.sigmoid() if multi_label else logits.softmax(dim=-1)
            values, indices = scores.topk(top_k, dim=-1)
            for item, row_values, row_indices in zip(chunk, values.tolist(), indices.tolist()):
                predictions.append({
                    "file": inputs.item_name(item),
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
    write_or_print(text, args.output)
    return predictions


def write_or_print(text: str, output: str | None) -> None:
    """`text` to the --output file (complete or not at all), else to stdout."""
    if output is None:
        print(text)
        return
    from ..caching import atomic_write

    with atomic_write(output) as partial:
        partial.write_text(text + "\n")


def classify_timeline(args: argparse.Namespace, model, fe, items: list) -> list[dict]:
    """`classify --timeline`: per-segment scores (windows of the model's length) as a table, JSON or CSV, and with
    --plot a heatmap PNG per file."""
    from .. import decode_audio
    from ..embeddings import classify_segments, plot_timeline, timelines_to_csv, timelines_to_table

    timelines = []
    for chunk in inputs.batched(items, args.batch_size, "Classifying", not args.quiet and len(items) > args.batch_size):
        waveforms = [decode_audio(item, fe.sampling_rate) for item in chunk]
        timelines += classify_segments(model, fe, waveforms, window_hop=args.window_hop, batch_size=args.batch_size,
                                       names=[inputs.item_name(item) for item in chunk])
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
    write_or_print(text, args.output)
    return result
