"""Report on a sparse autoencoder trained by `audiomosaic sae-train`: held-out metrics, linear probes on its codes vs
the raw activations, the latents of each class and PNGs of them. Needs the `interpret` extra.

    audiomosaic sae-report clips/ --model runs/pretrain --sae runs/sae/sae --output_dir runs/sae_report
"""

from ..inputs import command_parser
from ..interpret.commands import add_sae_report_arguments as add_arguments
from ..interpret.commands import sae_report as run


def main(argv: list[str] | None = None) -> dict:
    return run(command_parser("sae-report", __doc__, add_arguments).parse_args(argv))
