"""Report on a sparse autoencoder trained by `audiomosaic sae-train`: held-out metrics, linear probes on its codes vs
the raw activations, the latents of each class and PNGs of them. Needs the `interpret` extra.

    audiomosaic sae-report clips/ --model runs/pretrain --sae runs/sae/sae --output_dir runs/sae_report
"""

import argparse

from ..interpret.commands import add_labelled_data_arguments
from ..interpret.commands import sae_report as run
from ..inputs import command_parser
from ..validation import integer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_labelled_data_arguments(parser)
    parser.add_argument("--sae", required=True, help="the sae/ folder written by `audiomosaic sae-train`")
    parser.add_argument("--top_latents", type=integer(minimum=1), default=5, help="latents listed per class")
    parser.add_argument("--top_clips", type=integer(minimum=1), default=4, help="clips in the latent spectrogram figure")


def main(argv: list[str] | None = None) -> dict:
    return run(command_parser("sae-report", __doc__, add_arguments).parse_args(argv))
