"""Command-line parsing shared by the training scripts: dataclass arguments (transformers' `HfArgumentParser`) whose
defaults can come from a small YAML recipe, so a recipe is a config file rather than a copied script:

    audiomosaic pretrain --recipe pretrain_tiny_cpu --output_dir runs/tiny --max_steps 50

`--recipe` takes a YAML file or the name of a recipe shipped in `recipes/` (installed with the package). Values on
the command line override the recipe; a recipe key that no argument knows is an error.

Every script names a concept the same way, through `AudioDataArguments` (the data fields all scripts share) and the
names below; the names earlier releases used are still accepted, with a deprecation warning, for one release.
"""

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from modeling_audiomosaic.feature_extraction_audiomosaic import PRESETS
from modeling_audiomosaic.inputs import CommandParser
from modeling_audiomosaic.norm_stats import AUTO_PRESET


logger = logging.getLogger("audiomosaic.arguments")


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


# Old name -> the name every script now uses (accepted until the next minor release).
RENAMED_ARGUMENTS = {
    "feature_preset": "feature_extractor_preset",
    "min_learning_rate": "min_lr",
    "roll_mag_aug": "roll_magnitude",
    "filter_column": "fold_column",
    "filter_values": "train_folds",
}


def _warn_renamed(old: str, where: str) -> None:
    logger.warning("%s: `%s` is deprecated and will be removed in the next release; use `%s`.", where, old,
                   RENAMED_ARGUMENTS[old])


def rename_deprecated_options(argv: list[str]) -> list[str]:
    """`--old_name value` / `--old_name=value` / `--no_old_name` -> the current names, each with a warning."""
    renamed = []
    for arg in argv:
        name, separator, value = arg.partition("=")
        negated = name.startswith("--no_") and name[len("--no_"):] in RENAMED_ARGUMENTS
        old = name[len("--no_"):] if negated else name[2:] if name.startswith("--") else None
        if old in RENAMED_ARGUMENTS:
            _warn_renamed(old, "command line")
            arg = f"--{'no_' if negated else ''}{RENAMED_ARGUMENTS[old]}{separator}{value}"
        renamed.append(arg)
    return renamed


def rename_deprecated_keys(recipe: dict, source: str) -> dict:
    """Recipe keys with their current names; a recipe giving both the old and the new name is refused."""
    renamed = {}
    for key, value in recipe.items():
        if key in RENAMED_ARGUMENTS:
            _warn_renamed(key, f"recipe {source}")
            if RENAMED_ARGUMENTS[key] in recipe:
                raise ValueError(f"Recipe {source} sets both `{key}` and its new name `{RENAMED_ARGUMENTS[key]}`.")
            key = RENAMED_ARGUMENTS[key]
        renamed[key] = value
    return renamed


class RecipeArgumentParser(CommandParser, HfArgumentParser):
    """`HfArgumentParser` with the command line's one-line errors (`audiomosaic COMMAND: error: argument ...`)."""


def parse_args_with_recipe(dataclass_types: tuple, argv: list[str] | None = None, prog: str | None = None) -> tuple:
    """Parse `argv` into instances of `dataclass_types`, taking defaults from `--recipe FILE` when given; `prog` is
    the command named in `--help` and errors (e.g. "audiomosaic finetune")."""
    argv = rename_deprecated_options(list(sys.argv[1:] if argv is None else argv))
    recipe_parser = argparse.ArgumentParser(add_help=False)
    recipe_parser.add_argument("--recipe", default=None)
    known, remaining = recipe_parser.parse_known_args(argv)

    parser = RecipeArgumentParser(dataclass_types, prog=prog)
    parser.add_argument("--recipe", default=None, help="YAML file whose keys set the defaults of these arguments")
    if known.recipe:
        recipe = rename_deprecated_keys(read_recipe(known.recipe), known.recipe)
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


@dataclass
class AudioDataArguments:
    """The data settings every training script shares, under one name each (`PretrainDataArguments` and the
    classification scripts' `DataArguments` add their own)."""

    dataset: str = field(
        metadata={"help": "audio folder (audiofolder layout / metadata.csv), CSV/JSON/JSONL/Parquet list of audio "
                          "paths (and labels), a save_to_disk folder, or a Hub dataset id"},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration"})
    train_split: str = field(default="train", metadata={"help": "split to train on"})
    audio_column: str = field(default="audio", metadata={"help": "column with the audio (path or audio dict)"})
    fold_column: str | None = field(default=None, metadata={"help": "column holding the fold of each row"})
    train_folds: str | None = field(default=None, metadata={"help": "comma-separated folds to train on"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use only this many training rows"})
    sampling_rate: int = field(default=16000, metadata={"help": "audio is resampled to this rate"})
    max_length: int | None = field(
        default=None, metadata={"help": "frames per clip (10 ms each): 1024 = 10.24 s, 400 = 4 s, 128 = 1.28 s; "
                                        "default: the model's"}
    )
    feature_extractor_preset: str | None = field(
        default=None,
        metadata={"help": f"normalisation statistics: one of {sorted(PRESETS)}, or `{AUTO_PRESET}`: those of the "
                          "training split (cached in ~/.cache/audiomosaic/norm_stats); default: the checkpoint's"},
    )
    norm_mean: float | None = field(default=None, metadata={"help": "override the log-Mel mean"})
    norm_std: float | None = field(default=None, metadata={"help": "override the log-Mel std"})
    roll_magnitude: bool = field(
        default=False, metadata={"help": "random circular roll and Beta(10,10)+0.5 gain of each training waveform"}
    )

    def __post_init__(self):
        if self.feature_extractor_preset not in (None, *PRESETS, AUTO_PRESET):
            raise ValueError(f"--feature_extractor_preset must be one of {sorted(PRESETS)} or {AUTO_PRESET}, got "
                             f"{self.feature_extractor_preset!r}.")
        if self.train_folds is not None and not self.fold_column:
            raise ValueError("--train_folds needs --fold_column (the column holding each row's fold).")
        for name in ("max_train_samples", "max_length", "sampling_rate"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be at least 1, got {value}.")
