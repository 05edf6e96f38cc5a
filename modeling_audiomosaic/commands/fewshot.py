"""Few-shot benchmark of CALM, SAV and baselines over the attention heads' output vectors of labelled audio (a folder
with one sub-folder per class, or a CSV with audio and label columns): a Markdown table, JSON and a reliability PNG.
Needs the `interpret` extra.

    audiomosaic fewshot clips/ --model runs/pretrain --output_dir runs/fewshot --shots 1,5
"""

import argparse

from ..interpret.commands import add_labelled_data_arguments
from ..interpret.commands import fewshot as run
from ..inputs import command_parser
from ..validation import integer, integer_list


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_labelled_data_arguments(parser)
    parser.add_argument("--shots", type=integer_list(minimum=1), default=(1, 5, 20), help="comma-separated shots per class (default 1,5,20)")
    parser.add_argument("--episodes", type=integer(minimum=1), default=5, help="support-set draws per shot count (default 5)")
    parser.add_argument("--best_layer", type=integer(), default=None,
                        help="hidden-state index of the 'best layer' baselines (default: best 3-fold cosine "
                             "nearest-centroid accuracy on the training clips)")


def main(argv: list[str] | None = None) -> dict:
    return run(command_parser("fewshot", __doc__, add_arguments).parse_args(argv))
