"""Per-head probe map and head ablation / emphasis / steering against matched random heads, on labelled audio (a
folder with one sub-folder per class, or a CSV with audio and label columns): JSON and PNGs. Needs the `interpret`
extra.

    audiomosaic heads clips/ --model runs/pretrain --output_dir runs/heads --top_heads 3
"""

from ..inputs import command_parser
from ..interpret.commands import add_heads_arguments as add_arguments
from ..interpret.commands import heads as run


def main(argv: list[str] | None = None) -> dict:
    return run(command_parser("heads", __doc__, add_arguments).parse_args(argv))
