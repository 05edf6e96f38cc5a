"""Command-line parsing shared by the training scripts: dataclass arguments (transformers' `HfArgumentParser`) whose
defaults can come from a small YAML recipe, so a recipe is a config file rather than a copied script:

    audiomosaic pretrain --recipe pretrain_tiny_cpu --output_dir runs/tiny --max_steps 50

`--recipe` takes a YAML file or the name of a recipe shipped in `recipes/` (installed with the package). Values on
the command line override the recipe; a recipe key that no argument knows is an error.
"""

import argparse
from pathlib import Path

import yaml
from transformers import HfArgumentParser


RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe file, or the shipped recipe of that name (with or without `.yaml`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"Recipe {name_or_path} is neither a file nor a shipped recipe ({names}).")


def read_recipe(path: str | Path) -> dict:
    path = resolve_recipe(path)
    recipe = yaml.safe_load(path.read_text())
    if not isinstance(recipe, dict):
        raise ValueError(f"Recipe {path} must be a YAML mapping of argument names to values.")
    return recipe


def parse_args_with_recipe(dataclass_types: tuple, argv: list[str] | None = None) -> tuple:
    """Parse `argv` into instances of `dataclass_types`, taking defaults from `--recipe FILE` when given."""
    recipe_parser = argparse.ArgumentParser(add_help=False)
    recipe_parser.add_argument("--recipe", default=None)
    known, remaining = recipe_parser.parse_known_args(argv)

    parser = HfArgumentParser(dataclass_types)
    parser.add_argument("--recipe", default=None, help="YAML file whose keys set the defaults of these arguments")
    if known.recipe:
        recipe = read_recipe(known.recipe)
        valid = {action.dest for action in parser._actions}
        unknown = sorted(set(recipe) - valid)
        if unknown:
            raise ValueError(f"Recipe {known.recipe} sets unknown arguments: {unknown}.")
        parser.set_defaults(**recipe)
        # Required arguments given by the recipe must not be demanded again on the command line.
        for action in parser._actions:
            if action.dest in recipe:
                action.required = False
    *parsed, _ = parser.parse_args_into_dataclasses(args=remaining + ["--recipe", known.recipe or ""])
    return tuple(parsed)
