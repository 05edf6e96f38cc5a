"""Few-shot benchmark of CALM, SAV and baselines over the attention heads' output vectors of labelled audio (a folder
with one sub-folder per class, or a CSV with audio and label columns): a Markdown table, JSON and a reliability PNG.
Needs the `interpret` extra.

    audiomosaic fewshot clips/ --model runs/pretrain --output_dir runs/fewshot --shots 1,5
"""

from ..inputs import command_parser
from ..interpret.commands import add_fewshot_arguments as add_arguments
from ..interpret.commands import fewshot as run


def main(argv: list[str] | None = None) -> dict:
    return run(command_parser("fewshot", __doc__, add_arguments).parse_args(argv))
