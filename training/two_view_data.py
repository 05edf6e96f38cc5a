"""The two-view data pipeline of pretraining: clips decoded in DataLoader workers, made into the two augmented views
of every clip by one of two backends, batched for map-style and streamed sources.

* `WaveformViews`: the authors' pipeline, each clip's views made in the worker that loads it (`TwoViewTransform`:
  roll/magnitude, audiomentations chain, Kaldi fbank);
* `SpectralViews`: the views of a whole batch at once (`SpectralTwoViewTransform`), in the worker that collates the
  batch when training on CPU; for a GPU run the workers only decode, the batch travels as one padded tensor with its
  lengths and seeds, and its views are made on the device (`views_from_batch`).

Each clip's augmentation seed is `sample_seed(run seed, epoch, index)`, so the views depend neither on the workers nor
on where a run was resumed. A map-style run has one DataLoader for all its epochs (`RunBatchSampler`), so its workers
never restart and keep prefetching across epoch boundaries; `DeviceBatches` keeps the next batch's copy to the device
one step ahead.
"""

import zlib
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from datasets import Dataset, IterableDataset, Value

from modeling_audiomosaic import AudioMosaicFeatureExtractor
from modeling_audiomosaic.feature_extraction_audiomosaic import decode_audio

from .augment import TwoViewTransform, centred_clip, sample_seed, unaugmented_features
from .data import cut_batches
from .spectral_augment import SpectralTwoViewTransform, pad_clips


AUGMENTATION_BACKENDS = ("waveform", "spectral")


def audio_name(value: str | dict) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return str(value.get("path") or "<audio bytes>")
    return f"<{type(value).__name__}>"


class WaveformViews:
    """The authors' pipeline: each clip's two views made in the DataLoader workers, one clip at a time
    (`TwoViewTransform`: roll/magnitude, audiomentations chain, Kaldi fbank)."""

    item_keys = ("view0", "view1")

    def __init__(self, transform: TwoViewTransform):
        self.transform = transform

    def item(self, waveform: np.ndarray, seed: int) -> dict:
        view0, view1 = self.transform(waveform, seed)
        return {"view0": view0, "view1": view1}

    def collate(self, items: list[dict]) -> dict:
        return {"input_values": torch.stack([item["view0"] for item in items]),
                "input_values_view1": torch.stack([item["view1"] for item in items])}

    def make_views(self, batch: dict) -> dict:
        return batch


class SpectralViews:
    """The two views of a whole batch at once (`SpectralTwoViewTransform`): made by the DataLoader worker that collates
    the batch when training on CPU (NumPy draws); for any other device the workers only decode and the batch carries
    one padded waveform tensor with its lengths and seeds, whose views `make_views` makes on the device (counter-based
    draws, no host work per clip)."""

    item_keys = ("waveform", "seed")

    def __init__(self, transform: SpectralTwoViewTransform, device: torch.device):
        self.transform = transform
        self.in_workers = device.type == "cpu"

    def item(self, waveform: np.ndarray, seed: int) -> dict:
        # Refuse a bad clip here, where the dataset can replace it, rather than failing its whole batch later.
        if not np.isfinite(centred_clip(waveform, self.transform.min_samples).sum()):
            raise ValueError("the clip has non-finite samples")
        return {"waveform": waveform, "seed": seed}

    def collate(self, items: list[dict]) -> dict:
        waveforms, seeds = [item["waveform"] for item in items], [item["seed"] for item in items]
        if not self.in_workers:
            batch, lengths = pad_clips(waveforms)
            return {"waveforms": batch, "lengths": lengths, "seeds": torch.tensor(seeds, dtype=torch.int64)}
        view0, view1 = self.transform(waveforms, seeds)
        return {"input_values": view0, "input_values_view1": view1}

    def make_views(self, batch: dict) -> dict:
        """The model's inputs from a batch already on the training device."""
        if "waveforms" not in batch:
            return batch
        view0, view1 = self.transform.views_from_batch(batch.pop("waveforms"), batch.pop("lengths"),
                                                       batch.pop("seeds"))
        return {**batch, "input_values": view0, "input_values_view1": view1}


class Views(Protocol):
    """How a run makes the model's two views: per item in the workers, per batch when collating, on the device."""

    item_keys: tuple[str, ...]

    def item(self, waveform: np.ndarray, seed: int) -> dict: ...

    def collate(self, items: list[dict]) -> dict: ...

    def make_views(self, batch: dict) -> dict: ...


class TwoViewDataset(torch.utils.data.Dataset):
    """Map-style two-view dataset over a `datasets.Dataset` whose `audio` column `decode_audio` reads.

    Items are requested as `(epoch, index)`; the augmentation seed is `sample_seed(seed, epoch, index)` and `views`
    (`WaveformViews` / `SpectralViews`) makes the item. An item that cannot be read is logged and replaced by the
    next index (a deterministic substitute, so batches keep their size on every process and the run stays
    reproducible); the failure travels with the batch so the main process counts it. After `max_retries` failures in
    a row it raises, naming the files.
    """

    def __init__(self, dataset: Dataset, views: Views, sampling_rate: int, seed: int,
                 max_retries: int = 10):
        self.dataset = dataset.select_columns(["audio"])
        # Plain path strings are cheap to hold in memory; audio dicts (possibly with bytes) stay in Arrow.
        feature = self.dataset.features["audio"]
        is_path = isinstance(feature, Value) and feature.dtype in ("string", "large_string")
        self.paths = self.dataset["audio"] if is_path else None
        self.views = views
        self.sampling_rate = sampling_rate
        self.seed = seed
        self.max_retries = max_retries
        self.known_bad: set[int] = set()  # per worker process: do not decode a bad file twice

    def __len__(self) -> int:
        return len(self.dataset)

    def audio(self, index: int) -> str | dict:
        return self.paths[index] if self.paths is not None else self.dataset[index]["audio"]

    def load(self, index: int) -> np.ndarray:
        return decode_audio(self.audio(index), self.sampling_rate)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        failures = []
        for attempt in range(self.max_retries):
            current = (index + attempt) % len(self)
            try:
                if current in self.known_bad:
                    raise ValueError("unreadable earlier in this run")
                item = self.views.item(self.load(current), sample_seed(self.seed, epoch, current))
                return {**item, "index": current, "failures": failures}
            except Exception as error:  # noqa: BLE001 - any bad clip is skipped, never fatal on its own
                self.known_bad.add(current)
                failures.append({"index": current, "name": audio_name(self.audio(current)), "error": str(error)[:300]})
        listed = "; ".join(f"{f['name']}: {f['error']}" for f in failures[-3:])
        raise RuntimeError(
            f"{self.max_retries} clips in a row could not be read or augmented (indices {index}..{current}); "
            f"last errors: {listed}. Check the dataset or raise --max_load_retries."
        )

    def collate(self, items: list[dict]) -> dict:
        return {**self.views.collate(items), "failures": [failure for item in items for failure in item["failures"]]}


def epoch_batches(num_samples: int, epoch: int, seed: int, per_device_batch: int, num_processes: int,
                  process_index: int) -> list[list[int]]:
    """This process's batches of one epoch: a permutation seeded by (seed, epoch), cut into global batches of
    `per_device_batch * num_processes` (the last incomplete one dropped), each split contiguously by process."""
    generator = torch.Generator().manual_seed(sample_seed(seed, epoch, 0x5EED))
    order = torch.randperm(num_samples, generator=generator).tolist()
    return cut_batches(order, per_device_batch, True, num_processes, process_index)


def _worker_init(_):
    torch.set_num_threads(1)


class RunBatchSampler:
    """This process's batches of (epoch, index) keys for a whole run: `num_batches` batches from batch `start_step`
    of epoch `start_epoch` on, epoch after epoch (each cut by `epoch_batches`). One DataLoader over it serves every
    epoch, so its workers never restart and prefetch the next epoch's first batches while this one ends; resuming
    starts it at the saved position, so a resumed run sees the same batches as an uninterrupted one."""

    def __init__(self, num_samples: int, seed: int, per_device_batch: int, num_processes: int, process_index: int,
                 start_epoch: int, start_step: int, num_batches: int):
        self.num_samples, self.seed = num_samples, seed
        self.per_device_batch, self.num_processes, self.process_index = per_device_batch, num_processes, process_index
        self.start_epoch, self.start_step, self.num_batches = start_epoch, start_step, num_batches

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, skip, left = self.start_epoch, self.start_step, self.num_batches
        while left > 0:
            batches = epoch_batches(self.num_samples, epoch, self.seed, self.per_device_batch, self.num_processes,
                                    self.process_index)[skip : skip + left]
            if not batches:
                raise ValueError(f"Epoch {epoch} has no batch from position {skip} on ({self.num_samples} clips).")
            for batch in batches:
                yield [(epoch, index) for index in batch]
            epoch, skip, left = epoch + 1, 0, left - len(batches)


def map_style_loader(dataset: TwoViewDataset, sampler: RunBatchSampler, num_workers: int,
                     pin_memory: bool = False) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=dataset.collate,
        num_workers=num_workers,
        worker_init_fn=_worker_init,
        # Its own generator: creating the iterator must not consume the global torch RNG (the masks use it).
        generator=torch.Generator(),
        pin_memory=pin_memory,
    )


class DeviceBatches:
    """The model's inputs on `device`, from host batches (pinned on CUDA): the copy of the next batch is queued on a
    side stream as soon as the current one is handed out, so it overlaps the current step; the views are made on the
    compute stream when the batch is taken (`views.make_views`). Non-tensor entries (the failures) travel as they are.
    """

    def __init__(self, batches: Iterator[dict], views: Views, device: torch.device):
        self.batches, self.views, self.device = batches, views, device
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.pending = self._copy_next()

    def _copy_next(self) -> tuple[dict, torch.cuda.Event | None] | None:
        batch = next(self.batches, None)
        if batch is None:
            return None
        if self.copy_stream is None:
            return {key: value.to(self.device) if isinstance(value, torch.Tensor) else value
                    for key, value in batch.items()}, None
        with torch.cuda.stream(self.copy_stream):
            moved = {key: value.to(self.device, non_blocking=True) if isinstance(value, torch.Tensor) else value
                     for key, value in batch.items()}
            done = torch.cuda.Event()
            done.record()
        return moved, done

    def __iter__(self) -> "DeviceBatches":
        return self

    def __next__(self) -> dict:
        if self.pending is None:
            raise StopIteration
        batch, copied = self.pending
        if copied is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(copied)
            for value in batch.values():
                if isinstance(value, torch.Tensor):
                    value.record_stream(compute)  # allocated on the copy stream, used on this one
        batch = self.views.make_views(batch)  # queued before the next batch is fetched: the device stays busy
        self.pending = self._copy_next()
        return batch


def stream_example(example: dict, views: Views, sampling_rate: int, seed: int,
                   epoch: int) -> dict:
    """Map function of a streamed source (runs lazily in the DataLoader workers): the item `views` makes, or the
    reason there is none."""
    value = example["audio"]
    name = audio_name(value)
    bytes_only = isinstance(value, dict) and value.get("bytes") and not value.get("path")
    key = value["bytes"][:4096] if bytes_only else name
    try:
        item = views.item(decode_audio(value, sampling_rate),
                          sample_seed(seed, epoch, zlib.crc32(key if isinstance(key, bytes) else key.encode())))
        return {**item, "ok": True, "name": name, "error": ""}
    except Exception as error:  # noqa: BLE001
        return {**dict.fromkeys(views.item_keys), "ok": False, "name": name, "error": str(error)[:300]}


def collate_stream(items: list[dict]) -> dict:
    return {
        "items": [item for item in items if item["ok"]],
        "failures": [{"index": -1, "name": item["name"], "error": item["error"]} for item in items if not item["ok"]],
    }


class StreamBatches:
    """Fixed-size batches from a streamed source: this process's share (`split_dataset_by_node`), shuffled with a
    buffer seeded by (seed, epoch), items made lazily in the workers (and, with the spectral backend, the views of a
    batch in the main process); dropped clips are refilled from the stream.
    Resuming skips the examples the interrupted epoch had consumed (exact with `dataloader_num_workers` 0; with
    workers, datasets hands shards to workers, so the skipped examples are the same number but not always the same)."""

    def __init__(self, dataset: IterableDataset, views: Views, sampling_rate: int, seed: int,
                 batch_size: int, num_workers: int, shuffle_buffer_size: int, max_retries: int):
        self.dataset, self.views, self.sampling_rate, self.seed = dataset, views, sampling_rate, seed
        self.batch_size, self.num_workers, self.buffer = batch_size, num_workers, shuffle_buffer_size
        self.max_retries = max_retries
        self.consumed = 0  # examples of the current epoch consumed (used or failed)

    def iterate(self, epoch: int, skip_examples: int = 0) -> Iterator[dict]:
        stream = self.dataset.shuffle(seed=self.seed, buffer_size=self.buffer) if self.buffer > 1 else self.dataset
        stream.set_epoch(epoch)
        if skip_examples:
            stream = stream.skip(skip_examples)
        stream = stream.map(stream_example, fn_kwargs={"views": self.views, "sampling_rate": self.sampling_rate,
                                                       "seed": self.seed, "epoch": epoch})
        loader = DataLoader(stream, batch_size=self.batch_size, collate_fn=collate_stream,
                            num_workers=self.num_workers, worker_init_fn=_worker_init, generator=torch.Generator())
        self.consumed = skip_examples
        items, failures, failed_in_a_row = [], [], 0
        for chunk in loader:
            for failure in chunk["failures"]:
                failures.append(failure)
                failed_in_a_row += 1
                if failed_in_a_row >= self.max_retries:
                    raise RuntimeError(f"{failed_in_a_row} streamed clips in a row could not be read; last: "
                                       f"{failure['name']}: {failure['error']}")
            if chunk["items"]:
                failed_in_a_row = 0
            items.extend(chunk["items"])
            while len(items) >= self.batch_size:
                self.consumed += self.batch_size + len(failures)
                yield {**self.views.collate(items[: self.batch_size]), "failures": failures}
                items, failures = items[self.batch_size :], []


def probe_features(dataset: Dataset | IterableDataset, feature_extractor: AudioMosaicFeatureExtractor,
                   size: int) -> torch.Tensor | None:
    """Un-augmented features of the first `size` readable clips: the fixed effective-rank probe batch."""
    features = []
    iterator = iter(dataset.select_columns(["audio"]))
    for example in iterator:
        if len(features) >= size:
            break
        try:
            features.append(unaugmented_features(feature_extractor,
                                                 decode_audio(example["audio"], feature_extractor.sampling_rate)))
        except Exception:  # noqa: BLE001 - bad clips are reported by the training loader
            continue
    return torch.stack(features) if len(features) >= 2 else None
