"""Effective rank of the pooled representations of a dataset under inference-time masking (none / unstructured /
time / frequency / time_frequency); writes effective_rank.json and a bar chart effective_rank.png.

    audiomosaic effective-rank meta.csv --audio_column filename --model runs/pretrain --output_dir runs/erank

Reads any source the training scripts read (`training/data.py`), hence part of the `[train]` extra.
"""

import argparse
import json
import sys
from pathlib import Path

from modeling_audiomosaic import AudioMosaicModel, decode_audio
from modeling_audiomosaic.analysis import effective_rank_analysis, plot_effective_rank
from modeling_audiomosaic.inputs import (
    add_input_arguments,
    batched,
    command_parser,
    load_feature_extractor,
    resolve_device,
)

from .data import open_audio_dataset, select_folds, subsample


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="audio folder, CSV/JSON/Parquet list, save_to_disk folder or Hub dataset")
    parser.add_argument("--output_dir", required=True, help="where the JSON and PNG go")
    parser.add_argument("--split", default="train", help="split of a Hub / save_to_disk dataset")
    parser.add_argument("--dataset_config_name", default=None, help="Hub dataset configuration")
    parser.add_argument("--fold_column", default=None, help="column holding folds")
    parser.add_argument("--folds", default=None, help="comma-separated folds to keep")
    parser.add_argument("--max_samples", type=int, default=None, help="random subset of this many clips")
    parser.add_argument("--maskings", default="none,unstructured,time_frequency",
                        help="comma-separated from none, unstructured, time, frequency, time_frequency")
    parser.add_argument("--time_ratio", type=float, default=0.6, help="share of time rows dropped (default 0.6)")
    parser.add_argument("--freq_ratio", type=float, default=0.4,
                        help="share of frequency columns dropped (default 0.4)")
    parser.add_argument("--unstructured_ratio", type=float, default=None,
                        help="share of tokens dropped by unstructured masking (default: keep as many as "
                             "time_frequency)")
    parser.add_argument("--no_fc_norm", action="store_true", help="rank of the token mean without fc_norm")
    parser.add_argument("--center", action="store_true", help="remove the feature mean before the SVD")
    parser.add_argument("--seed", type=int, default=0, help="seed of the masks and of the subset")
    add_input_arguments(parser, batch_size=32)


def run(args: argparse.Namespace) -> dict:
    """Encode the selected clips under each masking, write effective_rank.json and effective_rank.png, print a line
    per masking and return the results."""
    dataset = open_audio_dataset(args.data, args.split, args.audio_column, args.dataset_config_name)
    dataset = select_folds(dataset, args.fold_column, args.folds, args.data, "selected")
    if len(dataset) == 0:
        raise ValueError(f"{args.data} holds no clips.")
    dataset = subsample(dataset, args.max_samples, args.seed)
    device = resolve_device(args.device)
    model = AudioMosaicModel.from_pretrained(args.model).to(device).eval()
    fe = load_feature_extractor(args.model, args.max_length, model.config.max_length)
    audio = dataset["audio"]

    def batches():
        for chunk in batched(audio, args.batch_size, "Encoding", not args.quiet):
            waveforms = [decode_audio(value, fe.sampling_rate) for value in chunk]
            yield fe(waveforms, sampling_rate=fe.sampling_rate, truncation=True, return_tensors="pt")["input_values"]

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


def main(argv: list[str] | None = None) -> dict:
    return run(command_parser("effective-rank", __doc__, add_arguments).parse_args(argv))


if __name__ == "__main__":
    main()
