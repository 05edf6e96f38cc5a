"""Compute the log-Mel mean and std of audio files, folders or CSV/JSON lists the way the authors' statistics were
computed (AST's get_norm_stats.py: un-normalised Kaldi log-Mel padded/truncated to the model's length, mean of
per-batch means and stds), print them, and optionally write a feature-extractor folder.

    audiomosaic norm-stats clips/ --max_length 128 --output_dir my_feature_extractor
"""

import argparse
from pathlib import Path

from ..inputs import add_input_arguments, command_parser, expand_inputs
from ..validation import integer, output_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="audio files, folders, or CSV/JSON/Parquet lists")
    parser.add_argument("--max_samples", type=integer(minimum=1), default=None,
                        help="use at most this many clips, drawn at random (seed 0)")
    parser.add_argument("--output_dir", type=output_folder, default=None,
                        help="write a feature extractor with these statistics here")
    # AST's batches of 1000 clips (the result is the mean over batches); 1024 frames = 10.24 s (Speech Commands: 128).
    add_input_arguments(parser, model=False, device=False, batch_size=1000, max_length=1024)


def run(args: argparse.Namespace):
    """Log-Mel mean and std of the inputs at --max_length frames; printed, and written as a feature-extractor folder
    with --output_dir."""
    from .. import AudioMosaicFeatureExtractor
    from ..caching import atomic_folder
    from ..norm_stats import compute_norm_stats, subsample

    clips = subsample(expand_inputs(args.inputs, args.audio_column), args.max_samples)
    stats = compute_norm_stats(clips, args.max_length, batch_size=args.batch_size, progress=not args.quiet)
    print(f"mean {stats.mean:.7g}  std {stats.std:.7g}  ({stats.num_clips} clips at {stats.max_length} frames)")
    if args.output_dir:
        feature_extractor = AudioMosaicFeatureExtractor(max_length=args.max_length, mean=stats.mean, std=stats.std)
        with atomic_folder(args.output_dir) as partial:
            feature_extractor.save_pretrained(partial)
        print(f"Wrote {Path(args.output_dir) / 'preprocessor_config.json'}")
    return stats


def main(argv: list[str] | None = None):
    return run(command_parser("norm-stats", __doc__, add_arguments).parse_args(argv))
