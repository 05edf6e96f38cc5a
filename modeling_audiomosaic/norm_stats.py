"""Log-Mel normalisation statistics for new data, computed the way the authors' were.

The authors' statistics (AudioSet -4.2677393 / 4.5689974, ESC-50 -6.6268077 / 5.358466, Speech Commands
-6.845978 / 5.5654526) are AST's, from AST's `get_norm_stats.py`: the training clips through the training data
loader with normalisation skipped, i.e. Kaldi log-Mel features zero-padded or truncated to the model's length (the
padding frames count), then the mean over batches of each batch's mean and of each batch's standard deviation
(`torch.mean`, `torch.std` over all values of the batch). AST's loader also applied its training SpecAugment while
doing so; here nothing random is applied, so the result is deterministic. With one batch (`batch_size` >= the number
of clips) the two are simply the mean and the standard deviation over all frames.

    audiomosaic norm-stats clips/ --max_length 128 --output_dir my_feature_extractor/
"""

import hashlib
import json
import logging
import math
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .caching import atomic_write, fingerprint
from .feature_extraction_audiomosaic import AudioMosaicFeatureExtractor, decode_audio
from .validation import check_value, integer


logger = logging.getLogger(__name__)

# AST's get_norm_stats.py loads 1000 clips per batch; the statistics are means over such batches.
STATISTICS_BATCH_SIZE = 1000
# Clips featurised at once (memory only; does not change the result).
FEATURIZE_CHUNK = 32


@dataclass(frozen=True)
class NormStats:
    mean: float
    std: float
    num_clips: int
    max_length: int


def subsample(clips: Sequence, max_samples: int | None, seed: int = 0) -> list:
    """At most `max_samples` clips, drawn at random (seeded) but kept in their original order, so that a sorted
    folder (one class after another) is not cut to its first classes."""
    if max_samples is None:
        return list(clips)
    max_samples = check_value("max_samples", max_samples, integer(minimum=1))
    if max_samples >= len(clips):
        return list(clips)
    keep = sorted(random.Random(seed).sample(range(len(clips)), max_samples))
    return [clips[i] for i in keep]


@torch.no_grad()
def compute_norm_stats(
    clips: Sequence,
    max_length: int,
    sampling_rate: int = 16000,
    batch_size: int = STATISTICS_BATCH_SIZE,
    progress: bool = True,
) -> NormStats:
    """Mean and std of the un-normalised log-Mel features of `clips` (paths, `datasets` audio dicts or 1-D arrays at
    `sampling_rate`) padded / truncated to `max_length` frames, averaged over batches of `batch_size` clips."""
    if not len(clips):
        raise ValueError("No clips to compute statistics on.")
    max_length = check_value("max_length", max_length, integer(minimum=1))
    batch_size = check_value("batch_size", batch_size, integer(minimum=1))
    sampling_rate = check_value("sampling_rate", sampling_rate, integer(minimum=1))
    feature_extractor = AudioMosaicFeatureExtractor(max_length=max_length, sampling_rate=sampling_rate,
                                                    do_normalize=False)
    from tqdm.auto import tqdm

    batch_means, batch_stds = [], []
    with tqdm(total=len(clips), desc="log-Mel statistics", unit="clip", disable=not progress) as bar:
        for batch_start in range(0, len(clips), batch_size):
            batch = clips[batch_start: batch_start + batch_size]
            total, total_squares, count = 0.0, 0.0, 0
            for start in range(0, len(batch), FEATURIZE_CHUNK):
                waveforms = [clip if isinstance(clip, np.ndarray) else decode_audio(clip, sampling_rate)
                             for clip in batch[start: start + FEATURIZE_CHUNK]]
                features = feature_extractor(waveforms, sampling_rate=sampling_rate, padding="max_length",
                                             truncation=True, return_tensors="pt")["input_values"].double()
                total += features.sum().item()
                total_squares += features.square().sum().item()
                count += features.numel()
                bar.update(len(waveforms))
            mean = total / count
            batch_means.append(mean)
            # torch.std's unbiased estimate over the batch's values, from float64 sums.
            batch_stds.append(math.sqrt(max(total_squares - count * mean * mean, 0.0) / (count - 1)))
    return NormStats(float(np.mean(batch_means)), float(np.mean(batch_stds)), len(clips), max_length)


# `--feature_preset auto` / `--feature_extractor_preset auto` in the training scripts: statistics of the training split.
AUTO_PRESET = "auto"
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "audiomosaic" / "norm_stats"


def _clip_identity(clip) -> str:
    """What a clip is, for the cache key: its path, else a digest of its bytes or samples."""
    if isinstance(clip, (str, os.PathLike)):
        return str(clip)
    if isinstance(clip, dict) and clip.get("path") and not clip.get("bytes") and clip.get("array") is None:
        return str(clip["path"])
    if isinstance(clip, dict):
        payload = clip.get("bytes") or np.asarray(clip.get("array")).tobytes()
        return hashlib.sha1(payload).hexdigest()
    return hashlib.sha1(np.asarray(clip).tobytes()).hexdigest()


def cached_norm_stats(
    clips: Sequence,
    max_length: int,
    cache_dir: str | os.PathLike | None = None,
    sampling_rate: int = 16000,
    progress: bool = True,
) -> NormStats:
    """`compute_norm_stats`, stored as JSON in `cache_dir` (default `~/.cache/audiomosaic/norm_stats`) under a key of
    the clips (their paths, or digests of in-memory audio), `max_length` and `sampling_rate`; the same data at the same
    length is read back instead of recomputed."""
    identity = [[_clip_identity(clip) for clip in clips], max_length, sampling_rate]
    path = Path(cache_dir or DEFAULT_CACHE_DIR) / f"norm_stats_{fingerprint(identity)}.json"
    if path.is_file():
        try:
            stats = NormStats(**json.loads(path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as error:
            # Only a cache: a damaged entry is recomputed and replaced.
            logger.warning("%s is corrupt (%s); recomputing the statistics.", path, error)
        else:
            logger.info("Normalisation statistics from %s: mean %.6f, std %.6f", path, stats.mean, stats.std)
            return stats
    stats = compute_norm_stats(clips, max_length, sampling_rate=sampling_rate, progress=progress)
    with atomic_write(path) as partial:
        partial.write_text(json.dumps(asdict(stats)))
    logger.info("Normalisation statistics over %d clips: mean %.6f, std %.6f (cached in %s)", stats.num_clips,
                stats.mean, stats.std, path)
    return stats


def feature_extractor_from_data(
    clips: Sequence,
    max_length: int,
    sampling_rate: int = 16000,
    cache_dir: str | os.PathLike | None = None,
    **kwargs,
) -> AudioMosaicFeatureExtractor:
    """A feature extractor normalised with the statistics of `clips` (the training split) at `max_length` frames,
    computed once and cached (`cached_norm_stats`); `kwargs` go to the feature extractor."""
    stats = cached_norm_stats(clips, max_length, cache_dir=cache_dir, sampling_rate=sampling_rate)
    return AudioMosaicFeatureExtractor(max_length=max_length, sampling_rate=sampling_rate, mean=stats.mean,
                                       std=stats.std, **kwargs)
