"""Two-view waveform augmentation for AudioMosaic pretraining (official spec §5.4).

For each clip the authors' `AudiosetCLRDataset` loads the waveform once (mean removed) and then, independently for each
of the two views: rolls it circularly by a uniform offset and scales it by Beta(10, 10) + 0.5 ("R", `_roll_mag_aug`),
applies the audiomentations `Compose` of paper Table 8, removes the mean again, computes the Kaldi filterbank,
pads/truncates it and normalises it. [`TwoViewTransform`] does exactly that with the package's feature extractor.

Randomness is explicit: every call takes a `seed` (derived by the caller from (run seed, epoch, sample index)), so a
view depends only on that seed, never on which DataLoader worker made it or on what that worker did before. That is
what makes a resumed run see the same views as an uninterrupted one. audiomentations draws from the global `random`
and `numpy.random` states; they are seeded for each view and restored afterwards.

Augmentation recipes (`--augmentation`), paper Table 9 / official `dataset/options.py`:

| name       | transforms (probability)                                                                                  |
|------------|-----------------------------------------------------------------------------------------------------------|
| `official` | PolarityInversion .5, TimeStretch(0.7-1.3) .7, AddGaussianSNR .5, Gain .3, HighPassFilter .3,            |
|            | BandStopFilter .5, PitchShift .6 (the released runs; TimeStretch max rate 1.3)                            |
| `paper`    | the same with TimeStretch max rate 1.25, as printed in paper Table 8                                      |
| `aug6`     | `official` without PitchShift (Table 9 "+HPF, +BSF")                                                       |
| `aug4`     | PolarityInversion, TimeStretch, AddGaussianSNR, Gain (Table 9 "+SNR, +Gain")                             |
| `aug2`     | PolarityInversion, TimeStretch (Table 9 "+PI, +TS")                                                        |
| `none`     | no audiomentations (Table 9 "R" row: roll/magnitude only, as the authors' `_NoAug`)                       |

Roll/magnitude is applied in every recipe unless `roll_magnitude=False`. Every library default (SNR 5-40 dB, gain
+-12 dB, high-pass 20-2400 Hz, band-stop centre 200-4000 Hz, pitch +-4 semitones) is as in the authors' code, which
did not pin the audiomentations version: time stretch and pitch shift use the installed library's default method
(`signalsmith_stretch` in 0.43, a phase vocoder in releases before 0.36) unless `stretch_method` says otherwise.
"""

import contextlib
import random
from collections.abc import Callable, Iterator

import numpy as np
import torch

from modeling_audiomosaic import AudioMosaicFeatureExtractor


AUGMENTATIONS = ("official", "paper", "aug6", "aug4", "aug2", "none")
# Transforms of each recipe, in the authors' order (the full list is Table 8).
_RECIPE_TRANSFORMS = {
    "official": ("polarity", "stretch", "snr", "gain", "highpass", "bandstop", "pitch"),
    "paper": ("polarity", "stretch", "snr", "gain", "highpass", "bandstop", "pitch"),
    "aug6": ("polarity", "stretch", "snr", "gain", "highpass", "bandstop"),
    "aug4": ("polarity", "stretch", "snr", "gain"),
    "aug2": ("polarity", "stretch"),
    "none": (),
}
# TimeStretch's min rate and each transform's probability (paper Table 8); every other parameter is the library default.
TIME_STRETCH_MIN_RATE = 0.7
# A clip needs one 25 ms frame; shorter ones are zero-padded (at the end, like the log-Mel padding).
MIN_CLIP_SECONDS = 0.025
TRANSFORM_PROBABILITIES = {
    "polarity": 0.5, "stretch": 0.7, "snr": 0.5, "gain": 0.3, "highpass": 0.3, "bandstop": 0.5, "pitch": 0.6,
}


def build_augmentation(
    name: str = "official",
    time_stretch_max_rate: float | None = None,
    stretch_method: str | None = None,
) -> Callable[[np.ndarray, int], np.ndarray] | None:
    """The audiomentations `Compose` of recipe `name` (see the module docstring), or `None` for `"none"`.

    `time_stretch_max_rate` overrides the recipe's TimeStretch max rate (1.3 for `official`, 1.25 for `paper`).
    """
    transforms = recipe_transforms(name)
    if not transforms:
        return None
    try:
        import audiomentations as am
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"Augmentation {name!r} needs audiomentations (`pip install audiomentations`); use --augmentation none "
            "to pretrain with roll/magnitude only."
        ) from error
    max_rate = time_stretch_max_rate_for(name, time_stretch_max_rate)
    method = {} if stretch_method is None else {"method": stretch_method}
    factories = {
        "polarity": lambda p: am.PolarityInversion(p=p),
        "stretch": lambda p: am.TimeStretch(min_rate=TIME_STRETCH_MIN_RATE, max_rate=max_rate, p=p, **method),
        "snr": lambda p: am.AddGaussianSNR(p=p),
        "gain": lambda p: am.Gain(p=p),
        "highpass": lambda p: am.HighPassFilter(p=p),
        "bandstop": lambda p: am.BandStopFilter(p=p),
        "pitch": lambda p: am.PitchShift(p=p, **method),
    }
    return am.Compose([factories[key](TRANSFORM_PROBABILITIES[key]) for key in transforms])


def recipe_transforms(name: str) -> tuple[str, ...]:
    """The transform keys of recipe `name`, in the authors' order (keys of `TRANSFORM_PROBABILITIES`).

    For ablations a recipe can leave transforms out: `official-pitch` is `official` without PitchShift,
    `official-highpass-bandstop` without both filters.
    """
    base, *left_out = name.split("-")
    if base not in _RECIPE_TRANSFORMS:
        raise ValueError(f"Unknown augmentation {name!r}; expected one of {AUGMENTATIONS}, optionally followed by "
                         "`-transform` for each transform left out (e.g. official-pitch).")
    unknown = [key for key in left_out if key not in _RECIPE_TRANSFORMS[base]]
    if unknown:
        raise ValueError(f"Augmentation {name!r} leaves out {unknown}, which {base!r} does not have; its transforms "
                         f"are {_RECIPE_TRANSFORMS[base]}.")
    return tuple(key for key in _RECIPE_TRANSFORMS[base] if key not in left_out)


def time_stretch_max_rate_for(name: str, time_stretch_max_rate: float | None = None) -> float:
    """TimeStretch max rate of recipe `name` (1.25 for `paper`, else 1.3) unless `time_stretch_max_rate` is given."""
    paper = name.split("-")[0] == "paper"
    max_rate = time_stretch_max_rate if time_stretch_max_rate is not None else (1.25 if paper else 1.3)
    if not TIME_STRETCH_MIN_RATE <= max_rate <= 10:
        raise ValueError(
            f"time_stretch_max_rate must be in [{TIME_STRETCH_MIN_RATE}, 10] (audiomentations' limit), got {max_rate}."
        )
    return max_rate


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed Python's and NumPy's global generators (which audiomentations uses) and restore them afterwards."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def roll_and_scale_draws(length: int, rng: np.random.Generator) -> tuple[int, float]:
    """The draws of the authors' "R" augmentation for a clip of `length` samples: a roll offset uniform in
    [0, length) and a gain Beta(10, 10) + 0.5, in this order."""
    shift = int(rng.integers(0, length))
    return shift, rng.beta(10.0, 10.0) + 0.5


def roll_and_scale(waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The authors' "R" augmentation: circular roll by a uniform offset in [0, N), gain Beta(10, 10) + 0.5."""
    shift, gain = roll_and_scale_draws(waveform.shape[0], rng)
    return (np.roll(waveform, shift) * gain).astype(np.float32, copy=False)


def spec_augment_mask(features: torch.Tensor, max_width: int, dim: int, value: float = 0.0) -> torch.Tensor:
    """One SpecAugment band along `dim` of a (frames, bins) clip, filled with `value`.

    The width is drawn uniformly below `max_width` and the start uniformly over the positions left, with the same two
    `torch.rand` draws as the authors' `torchaudio.transforms.FrequencyMasking` / `TimeMasking` (iid_masks=False), so
    a seeded run masks exactly as theirs without needing torchaudio.
    """
    if max_width < 1:
        return features
    length = features.shape[dim]
    width = torch.rand(1) * max_width
    start = torch.rand(1) * (length - width)
    positions = torch.arange(length, device=features.device)
    band = (positions >= start.long()) & (positions < start.long() + width.long())
    shape = [1] * features.dim()
    shape[dim] = length
    return features.masked_fill(band.view(shape), value)


def centred_clip(waveform: np.ndarray, min_samples: int) -> np.ndarray:
    """A mono float32 clip zero-padded at the end to `min_samples` (one 25 ms frame), with its mean removed once as
    in the authors' loader."""
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim != 1 or waveform.size == 0:
        raise ValueError(f"expected a non-empty mono waveform, got shape {waveform.shape}")
    if waveform.shape[0] < min_samples:
        waveform = np.pad(waveform, (0, min_samples - waveform.shape[0]))
    return waveform - waveform.mean()


def sample_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys such as (run seed, epoch, sample index)."""
    return int(np.random.SeedSequence([int(k) % 2**63 for k in keys]).generate_state(2, np.uint64)[0] >> 1)


class TwoViewTransform:
    """Waveform -> the two normalised log-Mel views of one clip (spec §5.4), reproducible from `seed`.

    Args:
        feature_extractor: an `AudioMosaicFeatureExtractor` (its `max_length`, `mean` and `std` set the fbank length
            and normalisation).
        augmentation: a recipe name of [`build_augmentation`].
        roll_magnitude: apply the roll/magnitude augmentation before the audiomentations chain.
        time_stretch_max_rate / stretch_method: see [`build_augmentation`].
    """

    def __init__(
        self,
        feature_extractor: AudioMosaicFeatureExtractor,
        augmentation: str = "official",
        roll_magnitude: bool = True,
        time_stretch_max_rate: float | None = None,
        stretch_method: str | None = None,
    ):
        self.feature_extractor = feature_extractor
        self.sampling_rate = feature_extractor.sampling_rate
        self.augmentation = augmentation
        self.roll_magnitude = roll_magnitude
        self.compose = build_augmentation(augmentation, time_stretch_max_rate, stretch_method)
        self.min_samples = int(self.sampling_rate * MIN_CLIP_SECONDS)

    def view(self, waveform: np.ndarray, seed: int) -> np.ndarray:
        """One augmented waveform (before the filterbank)."""
        rng = np.random.default_rng(seed)
        if self.roll_magnitude:
            waveform = roll_and_scale(waveform, rng)
        if self.compose is not None:
            with seeded_global_rngs(int(rng.integers(2**62))):
                waveform = self.compose(samples=np.ascontiguousarray(waveform, dtype=np.float32),
                                        sample_rate=self.sampling_rate)
        if not np.all(np.isfinite(waveform)):
            raise ValueError("augmentation produced non-finite samples")
        return np.asarray(waveform, dtype=np.float32)

    def __call__(self, waveform: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(view 0, view 1) features of shape (max_length, num_mel_bins) from a mono float32 waveform."""
        waveform = centred_clip(waveform, self.min_samples)
        seed0, seed1 = np.random.SeedSequence(seed).generate_state(2, np.uint64).tolist()
        views = [self.view(waveform, seed0), self.view(waveform, seed1)]
        features = self.feature_extractor(
            views, sampling_rate=self.sampling_rate, padding="max_length", truncation=True, return_tensors="pt"
        )["input_values"]
        return features[0], features[1]

    def features(self, waveform: np.ndarray) -> torch.Tensor:
        """Un-augmented features (max_length, num_mel_bins), e.g. for the effective-rank probe batch."""
        return unaugmented_features(self.feature_extractor, waveform)


def unaugmented_features(feature_extractor: AudioMosaicFeatureExtractor, waveform: np.ndarray) -> torch.Tensor:
    """A clip's features (max_length, num_mel_bins) prepared as the views are (padded to one frame, mean removed), so
    that un-augmented views equal them."""
    waveform = centred_clip(waveform, int(feature_extractor.sampling_rate * MIN_CLIP_SECONDS))
    return feature_extractor(
        waveform, sampling_rate=feature_extractor.sampling_rate, padding="max_length", truncation=True,
        return_tensors="pt",
    )["input_values"][0]


__all__ = ["AUGMENTATIONS", "TIME_STRETCH_MIN_RATE", "TRANSFORM_PROBABILITIES", "TwoViewTransform",
           "build_augmentation", "centred_clip", "recipe_transforms", "roll_and_scale", "roll_and_scale_draws", "sample_seed",
           "seeded_global_rngs", "time_stretch_max_rate_for", "unaugmented_features"]
