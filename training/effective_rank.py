"""Effective rank of the pooled representations of a dataset under inference-time masking (none / unstructured /
time / frequency / time_frequency); writes effective_rank.json and a bar chart effective_rank.png.

    audiomosaic effective-rank meta.csv --audio_column filename --model runs/pretrain --output_dir runs/erank

Reads any source the training scripts read (`training/data.py`), hence part of the `[train]` extra.
"""

import argparse
import json
import math
import sys
from pathlib import Path

from modeling_audiomosaic import AudioMosaicConfig, AudioMosaicModel, decode_audio
from modeling_audiomosaic.analysis import MASKINGS, effective_rank_analysis, kept_token_count, plot_effective_rank
from modeling_audiomosaic.caching import atomic_folder
from modeling_audiomosaic.inputs import (
    add_input_arguments,
    batched,
    command_parser,
    load_feature_extractor,
    resolve_device,
)
from modeling_audiomosaic.validation import (
    ENCODER_KINDS,
    check_arguments,
    check_value,
    choice_list,
    integer,
    model_reference,
    number,
    output_folder,
)

from .data import open_audio_dataset, select_folds, subsample


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="audio folder, CSV/JSON/Parquet list, save_to_disk folder or Hub dataset")
    parser.add_argument("--output_dir", required=True, type=output_folder, help="where the JSON and PNG go")
    parser.add_argument("--split", default="train", help="split of a Hub / save_to_disk dataset")
    parser.add_argument("--dataset_config_name", default=None, help="Hub dataset configuration")
    parser.add_argument("--fold_column", default=None, help="column holding folds")
    parser.add_argument("--folds", default=None, help="comma-separated folds to keep")
    parser.add_argument("--max_samples", type=integer(minimum=2), default=None,
                        help="random subset of this many clips")
    parser.add_argument("--maskings", type=choice_list(MASKINGS), default=("none", "unstructured", "time_frequency"),
                        help="comma-separated from none, unstructured, time, frequency, time_frequency")
    parser.add_argument("--time_ratio", type=number(minimum=0, below=1), default=0.6,
                        help="share of time rows dropped, in [0, 1) (default 0.6)")
    parser.add_argument("--freq_ratio", type=number(minimum=0, below=1), default=0.4,
                        help="share of frequency columns dropped, in [0, 1) (default 0.4)")
    parser.add_argument("--unstructured_ratio", type=number(minimum=0, below=1), default=None,
                        help="share of tokens dropped by unstructured masking (default: keep as many as "
                             "time_frequency)")
    parser.add_argument("--no_fc_norm", action="store_true", help="rank of the token mean without fc_norm")
    parser.add_argument("--center", action="store_true", help="remove the feature mean before the SVD")
    parser.add_argument("--seed", type=integer(minimum=0), default=0, help="seed of the masks and of the subset")
    add_input_arguments(parser, batch_size=32)


def run(args: argparse.Namespace) -> dict:
    """Encode the selected clips under each masking, write effective_rank.json and effective_rank.png (together,
    once everything is computed), print a line per masking and return the results. The options, the clip count and
    the tokens each masking keeps are checked before any clip is encoded."""
    check_arguments(args, add_arguments)
    args.model = check_value("--model", args.model, model_reference(*ENCODER_KINDS))
    dataset = open_audio_dataset(args.data, args.split, args.audio_column, args.dataset_config_name)
    dataset = select_folds(dataset, args.fold_column, args.folds, args.data, "selected")
    if len(dataset) < 2:
        raise ValueError(f"{args.data} holds {len(dataset)} clip(s); an effective rank needs at least 2.")
    dataset = subsample(dataset, args.max_samples, args.seed)
    device = resolve_device(args.device)
    config = AudioMosaicConfig.from_pretrained(args.model)
    fe = load_feature_extractor(args.model, args.max_length, config.max_length)
    # The encoder's `patch_grid`, from the config alone: the ratios are checked before the weights are loaded.
    grid = (math.ceil(fe.max_length / config.patch_size), config.num_mel_bins // config.patch_size)
    check_kept_tokens(args, grid, fe.max_length)
    model = AudioMosaicModel.from_pretrained(args.model).to(device).eval()
    audio = dataset["audio"]

    def batches():
        for chunk in batched(audio, args.batch_size, "Encoding", not args.quiet):
            waveforms = [decode_audio(value, fe.sampling_rate) for value in chunk]
            yield fe(waveforms, sampling_rate=fe.sampling_rate, truncation=True, return_tensors="pt")["input_values"]

    results = effective_rank_analysis(model, batches(), args.maskings, time_ratio=args.time_ratio,
                                      freq_ratio=args.freq_ratio, unstructured_ratio=args.unstructured_ratio,
                                      use_fc_norm=not args.no_fc_norm, center=args.center, seed=args.seed,
                                      device=device)
    results["model"] = args.model
    results["data"] = args.data
    output_dir = Path(args.output_dir)
    with atomic_folder(output_dir) as staging:
        (staging / "effective_rank.json").write_text(json.dumps(results, indent=2))
        plot_effective_rank(results, staging / "effective_rank.png",
                            title=f"Effective rank, {len(audio)} clips of {Path(args.data).name}")
    png = output_dir / "effective_rank.png"
    for masking, values in results["maskings"].items():
        print(f"{masking:>15}: effective rank {values['effective_rank']:.2f} of {values['dim']} "
              f"({values['kept_tokens']} tokens kept)")
    print(f"Wrote {output_dir / 'effective_rank.json'} and {png}", file=sys.stderr)
    return results


def check_kept_tokens(args: argparse.Namespace, grid: tuple[int, int], frames: int) -> None:
    """`ValueError` naming the ratios when a masking would keep no patch token of a `frames`-frame clip's grid."""
    for masking in args.maskings:
        kept = kept_token_count(masking, *grid, time_ratio=args.time_ratio, freq_ratio=args.freq_ratio,
                                unstructured_ratio=args.unstructured_ratio)
        if kept < 1:
            raise ValueError(f"--maskings {masking} with --time_ratio {args.time_ratio} and --freq_ratio "
                             f"{args.freq_ratio} keeps no token of the {grid[0]} x {grid[1]} patch grid of "
                             f"{frames}-frame clips; lower the ratios.")


def main(argv: list[str] | None = None) -> dict:
    return run(command_parser("effective-rank", __doc__, add_arguments).parse_args(argv))


if __name__ == "__main__":
    main()
