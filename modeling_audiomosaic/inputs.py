"""What every command and script does to its inputs before the model runs: find the audio (files, folders, CSV / JSON /
Parquet lists), cut it into batches, pick the device and load the feature extractor of a checkpoint.

The command line (`modeling_audiomosaic.commands`), `modeling_audiomosaic.interpret` and the training package
(`audiomosaic_training`) all import these helpers from here; nothing here imports any of them, so the import graph
runs one way: CLI -> library.
"""

import argparse
import contextlib
import csv
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from .validation import ENCODER_KINDS, integer, is_a, load_pretrained, model_reference


AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au"})
TABLE_EXTENSIONS = frozenset({".csv", ".json", ".jsonl", ".parquet"})


# ----------------------------------------------------------------------------------------------------------------------
# Finding audio
# ----------------------------------------------------------------------------------------------------------------------


def find_audio_files(folder: str | Path) -> list[Path]:
    """The audio files under `folder` (searched recursively), sorted; `ValueError` when there are none."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ValueError(f"Folder {folder} holds no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}).")
    return files


def read_table(path: str | Path) -> list[dict]:
    """The rows of a CSV / JSON (a list of records) / JSONL / Parquet file, as dicts; `ValueError` when it is empty
    or not a table."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    elif suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path} must hold a JSON list of records.")
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet
        except ImportError:
            raise ValueError(f"Reading {path} needs pyarrow (pip install pyarrow), or give a CSV/JSON list.") from None
        rows = pyarrow.parquet.read_table(path).to_pylist()
    else:
        raise ValueError(f"{path}: expected a {', '.join(sorted(TABLE_EXTENSIONS))} list.")
    if not rows:
        raise ValueError(f"{path} has no rows.")
    if not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{path} must hold records (one object per row).")
    return rows


def check_columns(rows: list[dict], columns: Iterable[str | None], source: str | Path, option: str = "") -> None:
    """`ValueError` naming the first of `columns` (None entries are skipped) that the table lacks, or that a row
    leaves empty."""
    hint = f" ({option})" if option else ""
    for column in columns:
        if column is None:
            continue
        if all(column not in row for row in rows):
            raise ValueError(f"{source} has no column `{column}`{hint}; its columns are {sorted(rows[0])}.")
        missing = [i for i, row in enumerate(rows) if row.get(column) in (None, "")]
        if missing:
            raise ValueError(f"{source}: row {missing[0]} has no `{column}` value{hint}.")


def resolve_audio_path(value: str, table: str | Path) -> str:
    """An audio path of a list file, resolved against the list's folder (absolute paths stay as they are)."""
    return str((Path(table).parent / str(value)).resolve())


def read_audio_list(path: str | Path, audio_column: str = "audio") -> list[str]:
    """The `audio_column` of a CSV / JSON / JSONL / Parquet list, as paths resolved against the list's folder."""
    rows = read_table(path)
    check_columns(rows, [audio_column], path, "--audio_column")
    return [resolve_audio_path(row[audio_column], path) for row in rows]


def expand_inputs(inputs: Sequence[str], audio_column: str = "audio") -> list[str]:
    """Audio files, folders (searched recursively) and CSV/JSON/Parquet lists (their `audio_column`) -> a list of
    audio paths in a stable order. Missing paths raise `FileNotFoundError`."""
    items = []
    for entry in inputs:
        path = Path(entry)
        if not path.exists():
            raise FileNotFoundError(f"Input {entry} does not exist.")
        if path.is_dir():
            items.extend(str(p) for p in find_audio_files(path))
        elif path.suffix.lower() in TABLE_EXTENSIONS:
            items.extend(read_audio_list(path, audio_column))
        else:
            items.append(str(path))
    if not items:
        raise ValueError("No audio inputs given.")
    return items


def item_name(item) -> str:
    """How an audio reference (a path, or an audio dict) is named in outputs."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return str(item.get("path") or "<audio>")
    return "<audio>"


# ----------------------------------------------------------------------------------------------------------------------
# Batches, progress, device
# ----------------------------------------------------------------------------------------------------------------------


def batched(items: Sequence, size: int, desc: str | None = None, progress: bool = False) -> Iterator[Sequence]:
    """Chunks of `size` items (the last may be shorter), with a progress bar on stderr named `desc` when
    `progress`."""
    if size < 1:
        raise ValueError(f"The batch size must be a positive integer, got {size}.")
    chunks = (items[start: start + size] for start in range(0, len(items), size))
    if not progress:
        return chunks
    from tqdm.auto import tqdm

    return tqdm(chunks, total=-(-len(items) // size), desc=desc, unit="batch", file=sys.stderr)


def resolve_device(name: str | None = None):
    """`torch.device` of `--device` (default: cuda when available, else cpu); a clear `ValueError` for an unknown
    device or cuda without a GPU."""
    import torch

    from .feature_extraction_audiomosaic import check_device

    return check_device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def resolve_dtype(name: str, device):
    """torch dtype of `--dtype`; reduced precision keeps the feature extractor in float32 (the model casts)."""
    import torch

    if name != "float32" and device.type == "cpu":
        print(f"--dtype {name} on CPU: supported, but usually slower than float32 (no native half-precision matmul "
              "on most CPUs; see benchmarks/RESULTS.md).", file=sys.stderr)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


# ----------------------------------------------------------------------------------------------------------------------
# Feature extractor
# ----------------------------------------------------------------------------------------------------------------------


def featurize(feature_extractor, waveforms: list, window_hop: int | None, device):
    """(input_values, window_clip_index, attention_mask or None) with long clips split into windows of the
    extractor's max_length, `window_hop` frames apart."""
    batch = feature_extractor(waveforms, sampling_rate=feature_extractor.sampling_rate, long_audio="window",
                              window_hop=window_hop, return_tensors="pt")
    return batch["input_values"].to(device), batch["window_clip_index"].to(device), batch.get("attention_mask")


def load_for_inference(model_class, args: argparse.Namespace, kinds: tuple[str, ...] = ENCODER_KINDS):
    """(model, feature extractor, device) of `--model` (a folder or Hub id of one of `kinds`) for inference: the model
    in `--dtype` on `--device` in eval mode, and its feature extractor at `--max_length` (never longer than the model
    takes)."""
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    with loading_bars(not args.quiet):
        model = load_pretrained(model_class, args.model, kinds, dtype=dtype)
    if args.max_length is not None and args.max_length < model.config.patch_size:
        raise ValueError(f"--max_length {args.max_length} is shorter than one patch of the model "
                         f"({model.config.patch_size} frames).")
    return model.to(device).eval(), load_feature_extractor(args.model, args.max_length, model.config.max_length), device


@contextlib.contextmanager
def loading_bars(show: bool) -> Iterator[None]:
    """transformers' own progress bars ("Loading weights") as they are, or hidden for the block (--quiet)."""
    from transformers.utils import logging as transformers_logging

    hide = not show and transformers_logging.is_progress_bar_enabled()
    if hide:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if hide:
            transformers_logging.enable_progress_bar()


def load_feature_extractor(model_path: str, max_length: int | None, model_max_length: int):
    """The feature extractor saved with `model_path`, else (no preprocessor_config.json) the AudioSet one, with a note
    on stderr, at `max_length` frames when given, else at its own length; never longer than the model's
    `model_max_length` (its position embeddings end there). A preprocessor_config.json that is there but unreadable
    or impossible (e.g. `sampling_rate` 0) is an error naming the file, not a silent fallback."""
    from transformers import AutoFeatureExtractor

    from .feature_extraction_audiomosaic import AudioMosaicFeatureExtractor

    if max_length is not None and max_length > model_max_length:
        raise ValueError(f"--max_length {max_length} is longer than the model's max_length {model_max_length}.")
    local = Path(model_path).is_dir()
    config_file = Path(model_path) / "preprocessor_config.json"
    if local and not config_file.is_file():
        feature_extractor = None
    else:
        try:
            feature_extractor = AutoFeatureExtractor.from_pretrained(model_path)
        except (OSError, ValueError) as error:
            if local or not isinstance(error, OSError):
                reason = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
                raise ValueError(f"{config_file if local else model_path}: cannot load its feature extractor "
                                 f"({reason})") from None
            feature_extractor = None  # a Hub model without a preprocessor_config.json
    if feature_extractor is not None and not is_a(feature_extractor, "AudioMosaicFeatureExtractor"):
        raise ValueError(f"{config_file if local else model_path}: holds a {type(feature_extractor).__name__}, not an "
                         "AudioMosaicFeatureExtractor.")
    if feature_extractor is None:
        print(f"{model_path} has no preprocessor_config.json; using the AudioSet feature extractor.", file=sys.stderr)
        feature_extractor = AudioMosaicFeatureExtractor()
    feature_extractor.max_length = max_length or min(feature_extractor.max_length, model_max_length)
    return feature_extractor


# ----------------------------------------------------------------------------------------------------------------------
# Command-line parsers and their shared options
# ----------------------------------------------------------------------------------------------------------------------


class CommandParser(argparse.ArgumentParser):
    """argparse with the command line's one-line errors: `audiomosaic COMMAND: error: argument --x: ...` (exit 2)
    instead of the usage block followed by the error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command_parser(command: str, description: str | None,
                   add_arguments: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """The parser of `audiomosaic COMMAND`, described by `description` (a command module's docstring) and filled by
    the module's `add_arguments`."""
    parser = CommandParser(prog=f"audiomosaic {command}", description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def add_input_arguments(parser: argparse.ArgumentParser, *, model: bool = True, batch_size: int = 16,
                        max_length: int | None = None, device: bool = True, inference: bool = False,
                        model_kinds: tuple[str, ...] = ENCODER_KINDS) -> None:
    """The options every audio-reading command shares (--model, --batch_size, --max_length, --audio_column,
    --device, --quiet), defined once; `max_length` is the default frame count (None: the checkpoint's); --model must
    be a folder or Hub id of one of `model_kinds`. With `inference`, also --window_hop and --dtype (`embed`,
    `classify`)."""
    if model:
        parser.add_argument("--model", required=True, type=model_reference(*model_kinds),
                            help="AudioMosaic checkpoint folder or Hub id")
    parser.add_argument("--batch_size", type=integer(minimum=1), default=batch_size,
                        help=f"clips per forward pass (default {batch_size})")
    parser.add_argument("--max_length", type=integer(minimum=1), default=max_length,
                        help="frames per clip or window (default: "
                             f"{max_length if max_length is not None else 'the checkpoint'})")
    parser.add_argument("--audio_column", default="audio", help="audio column of CSV/JSON/Parquet lists (default 'audio')")
    if device:
        parser.add_argument("--device", default=None, help="cpu / cuda / cuda:N (default: cuda when available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    if inference:
        parser.add_argument("--window_hop", type=integer(minimum=1), default=None,
                            help="hop between windows of clips longer than max_length (default max_length // 2); "
                                 "window outputs are averaged per clip")
        parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                            help="model precision (the features stay float32; outputs are written as float32)")
