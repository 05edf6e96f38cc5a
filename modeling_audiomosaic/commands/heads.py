"""Per-head probe map and head ablation / emphasis / steering against matched random heads, on labelled audio (a
folder with one sub-folder per class, or a CSV with audio and label columns): JSON and PNGs. Needs the `interpret`
extra.

    audiomosaic heads clips/ --model runs/pretrain --output_dir runs/heads --top_heads 3
"""

import argparse

from ..interpret.commands import add_labelled_data_arguments
from ..interpret.commands import heads as run
from ..inputs import command_parser
from ..validation import integer, number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_labelled_data_arguments(parser)
    parser.add_argument("--cv", type=integer(minimum=2), default=5, help="folds of the per-head probes")
    parser.add_argument("--max_probe_clips", type=integer(minimum=2), default=1500,
                        help="random training clips for the per-head probes (default 1500)")
    parser.add_argument("--top_heads", type=integer(minimum=1), default=3, help="heads per class to ablate / scale (default 3)")
    parser.add_argument("--n_random", type=integer(minimum=0), default=10, help="draws of matched random heads (default 10)")
    parser.add_argument("--max_eval_per_class", type=integer(minimum=1), default=30, help="test clips per class for interventions")
    parser.add_argument("--steer_alpha", type=number(), default=5.0, help="steering strength in std units")
    parser.add_argument("--full_forward", action="store_true",
                        help="rerun the whole encoder for every intervention instead of starting at the first "
                             "edited block from cached block inputs (same results, slower; for checking)")


def main(argv: list[str] | None = None) -> dict:
    return run(command_parser("heads", __doc__, add_arguments).parse_args(argv))
