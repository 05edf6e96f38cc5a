"""Train a sparse autoencoder on a layer's pooled or patch-token activations of labelled audio (a folder with one
sub-folder per class, or a CSV with audio and label columns); writes OUTPUT_DIR/sae/. Needs the `interpret` extra.

    audiomosaic sae-train clips/ --model runs/pretrain --output_dir runs/sae --layer 6 --mode token
"""

from ..inputs import command_parser
from ..interpret.commands import add_sae_train_arguments as add_arguments
from ..interpret.commands import sae_train as run


def main(argv: list[str] | None = None) -> dict:
    return run(command_parser("sae-train", __doc__, add_arguments).parse_args(argv))
