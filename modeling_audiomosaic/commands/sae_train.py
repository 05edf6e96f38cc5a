"""Train a sparse autoencoder on a layer's pooled or patch-token activations of labelled audio (a folder with one
sub-folder per class, or a CSV with audio and label columns); writes OUTPUT_DIR/sae/. Needs the `interpret` extra.

    audiomosaic sae-train clips/ --model runs/pretrain --output_dir runs/sae --layer 6 --mode token
"""

import argparse

from ..interpret.commands import add_labelled_data_arguments
from ..interpret.commands import sae_train as run
from ..inputs import command_parser
from ..validation import integer, number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_labelled_data_arguments(parser)
    parser.add_argument("--layer", type=integer(), default=-1,
                        help="hidden-state index (0 = embedding output, -1 = last block; default -1)")
    parser.add_argument("--mode", choices=("clip", "token"), default="clip",
                        help="'clip': one mean-pooled vector per clip; 'token': patch tokens (cls excluded)")
    parser.add_argument("--tokens_per_clip", type=integer(minimum=1), default=None, help="token mode: random tokens per clip")
    parser.add_argument("--activation", choices=("topk", "relu"), default="topk", help="TopK or ReLU + L1")
    parser.add_argument("--expansion", type=number(above=0), default=4.0, help="latents per input dimension (default 4)")
    parser.add_argument("--k", type=integer(minimum=1), default=32, help="active latents per input (topk; default 32)")
    parser.add_argument("--l1_coefficient", type=number(minimum=0), default=1e-3, help="L1 weight (relu)")
    parser.add_argument("--epochs", type=integer(minimum=1), default=100, help="passes over the training vectors")
    parser.add_argument("--sae_batch_size", type=integer(minimum=1), default=256, help="vectors per SAE step")
    parser.add_argument("--learning_rate", type=number(above=0), default=1e-3, help="Adam learning rate")


def main(argv: list[str] | None = None) -> dict:
    return run(command_parser("sae-train", __doc__, add_arguments).parse_args(argv))
