"""Audio data sources for the training scripts, readable without torchcodec.

Every script takes the same kinds of source (`--dataset`):

* a folder in the `audiofolder` layout: audio files with a `metadata.csv` / `metadata.jsonl` (a `file_name` column,
  or the column named by `--audio_column`) or, without one, labels taken from the sub-folder names;
* a CSV / JSON / JSONL / Parquet file listing audio paths (relative to the file) and optional labels;
* a dataset written with `Dataset.save_to_disk`;
* a Hub dataset id (optionally `--streaming`).

`datasets` decodes audio only through torchcodec (and its `audiofolder` builder needs it even to list files), so
sources are opened with their audio column undecoded (`{"path", "bytes"}`, or a plain path string) and decoded
with soundfile by `modeling_audiomosaic.decode_audio`; already-decoded `{"array", "sampling_rate"}` values are
accepted as they are.
"""

from pathlib import Path

from datasets import Audio, Dataset, DatasetDict, IterableDataset, load_dataset, load_from_disk

from modeling_audiomosaic.inputs import find_audio_files, resolve_audio_path


TABLE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _absolute_paths(dataset: Dataset, column: str, table: Path) -> Dataset:
    return dataset.map(lambda row: {column: resolve_audio_path(row[column], table)})


def _folder_dataset(folder: Path, audio_column: str) -> Dataset:
    for name, builder in (("metadata.csv", "csv"), ("metadata.jsonl", "json")):
        metadata = folder / name
        if metadata.is_file():
            dataset = load_dataset(builder, data_files=str(metadata), split="train")
            column = audio_column if audio_column in dataset.column_names else "file_name"
            if column not in dataset.column_names:
                raise ValueError(f"{metadata} has no `{audio_column}` or `file_name` column with the audio paths.")
            dataset = _absolute_paths(dataset, column, metadata)
            return dataset.rename_column(column, "audio") if column != "audio" else dataset
    files = find_audio_files(folder)  # no metadata file: the audio files themselves
    columns = {"audio": [str(p.resolve()) for p in files]}
    labels = [p.parent.relative_to(folder).as_posix() for p in files]
    if len(set(labels)) > 1:  # audiofolder convention: one sub-folder per class
        columns["label"] = labels
    return Dataset.from_dict(columns)


def open_audio_dataset(
    source: str,
    split: str = "train",
    audio_column: str = "audio",
    config_name: str | None = None,
    streaming: bool = False,
) -> Dataset | IterableDataset:
    """Open `source` (see the module docstring) with its audio in a column named `audio` that
    `modeling_audiomosaic.decode_audio` can read."""
    path = Path(source)
    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        dataset = load_from_disk(str(path))
        if isinstance(dataset, DatasetDict):
            dataset = dataset[split]
    elif path.is_dir():
        dataset = _folder_dataset(path, audio_column)
    elif path.is_file():
        builder = TABLE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"{path}: expected a .csv, .json, .jsonl or .parquet list of audio files.")
        dataset = load_dataset(builder, data_files=str(path), split="train")
        if audio_column not in dataset.column_names:
            raise ValueError(f"{path} has no column `{audio_column}`; its columns are {dataset.column_names}.")
        dataset = _absolute_paths(dataset, audio_column, path)
    elif path.suffix or source.startswith((".", "/")):
        raise FileNotFoundError(f"Dataset source {source} does not exist.")
    else:
        dataset = load_dataset(source, config_name, split=split, streaming=streaming)
    if audio_column != "audio" and audio_column in (dataset.column_names or []):
        dataset = dataset.rename_column(audio_column, "audio")
    if "audio" not in (dataset.column_names or []):
        raise ValueError(f"{source} has no audio column `{audio_column}`; columns: {dataset.column_names}.")
    if isinstance(dataset.features["audio"], Audio):
        dataset = dataset.cast_column("audio", Audio(decode=False))
    if streaming and isinstance(dataset, Dataset):
        dataset = dataset.to_iterable_dataset()
    return dataset


def fold_set(folds: str) -> set[str]:
    """"1, 2,3" -> {"1", "2", "3"} (folds compare as text)."""
    return {fold.strip() for fold in folds.split(",") if fold.strip()}


def select_folds(dataset: Dataset | IterableDataset, fold_column: str | None, folds: str | None, source: str,
                 split_name: str, exclude: bool = False) -> Dataset | IterableDataset:
    """Rows whose `fold_column` is one of `folds` (or, with `exclude`, none of them); a clear error when the column is
    missing or nothing is left."""
    if folds is None:
        return dataset
    if not fold_column:
        raise ValueError(f"Selecting {split_name} folds ({folds}) needs --fold_column (the column holding each row's "
                         "fold).")
    if fold_column not in (dataset.column_names or []):
        raise ValueError(f"{source} has no fold column `{fold_column}`; its columns are {dataset.column_names}.")
    wanted = fold_set(folds)
    selected = dataset.filter(lambda row: (str(row[fold_column]) in wanted) != exclude)
    if isinstance(selected, Dataset) and len(selected) == 0:
        present = sorted({str(v) for v in dataset[fold_column]})
        action = "excluding" if exclude else "keeping"
        raise ValueError(f"The {split_name} split of {source} is empty after {action} fold(s) {folds} of column "
                         f"`{fold_column}`; the folds present are {present}.")
    return selected


def subsample(dataset: Dataset | IterableDataset, limit: int | None, seed: int) -> Dataset | IterableDataset:
    """A seeded random subset of `limit` rows (the first `limit` of a stream)."""
    if limit is None:
        return dataset
    if isinstance(dataset, IterableDataset):
        return dataset.take(limit)
    if limit >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))


def open_train_split(data_args, seed: int = 0, streaming: bool = False,
                     exclude_folds: str | None = None) -> Dataset | IterableDataset:
    """The training rows of `data_args` (an `AudioDataArguments`): the source's `--train_split`, its
    `--train_folds` (or every fold but `exclude_folds`), at most `--max_train_samples` of them."""
    dataset = open_audio_dataset(data_args.dataset, data_args.train_split, data_args.audio_column,
                                 data_args.dataset_config_name, streaming)
    if data_args.fold_column and data_args.fold_column not in (dataset.column_names or []):
        raise ValueError(f"{data_args.dataset} has no fold column `{data_args.fold_column}`; its columns are "
                         f"{dataset.column_names}.")
    if data_args.train_folds is not None:
        dataset = select_folds(dataset, data_args.fold_column, data_args.train_folds, data_args.dataset, "train")
    elif exclude_folds is not None:
        dataset = select_folds(dataset, data_args.fold_column, exclude_folds, data_args.dataset, "train", exclude=True)
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise ValueError(f"The train split of {data_args.dataset} is empty.")
    return subsample(dataset, data_args.max_train_samples, seed)


def cut_batches(order: list[int], batch_size: int, drop_last: bool, num_processes: int = 1,
                process_index: int = 0) -> list[list[int]]:
    """This process's batches of an epoch's `order`: global batches of `batch_size * num_processes`, each split
    contiguously by process. The last incomplete global batch is dropped with `drop_last`, else kept (single process
    only: processes must get equal batches)."""
    if not drop_last and num_processes > 1:
        raise ValueError("Keeping an incomplete last batch needs a single process.")
    global_batch = batch_size * num_processes
    start = process_index * batch_size
    count = len(order) // global_batch if drop_last else -(-len(order) // global_batch)
    return [order[b * global_batch + start: b * global_batch + start + batch_size] for b in range(count)]
