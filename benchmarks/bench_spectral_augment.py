#!/usr/bin/env python
"""Spectral-domain two-view augmentation (`SpectralTwoViewTransform`) against the waveform reference
(`TwoViewTransform`, audiomentations) on real clips: output distributions per transform, and throughput per core.

(a) `--part distribution`: for each Table-8 transform alone (applied with probability 1, same parameter
distributions, no roll/magnitude) and for the whole `official` recipe (with roll/magnitude), both views of every clip
are made by the waveform reference and by the spectral path; per Mel band, the mean and std of the normalised
log-Mel values (real frames only) are compared, and the 1-Wasserstein distance between the two value distributions
is averaged over bands. The noise floor is the same distance between two waveform-reference runs with other seeds.

`--part view_match`: how hard each transform makes the contrastive task for a fixed feature (every view's band
means and stds): top-1 accuracy of finding a clip's other view among all clips' other views, and the mean distance
between a clip's two views over that between different clips, for the waveform reference and the spectral path.
`--clips 0 --drum_clips 200 --max_length 208 --preset esc50` looks at percussive clips only.

`--part bias`: the mean offset (spectral - waveform) of the two approximate transforms at fixed parameters (time
stretch rates 0.75 and 1.25, pitch shifts of -4 and +4 semitones), with audiomentations' two methods.

(b) `--part throughput`: two-view data path (decoded mono waveform in, two normalised views out) in samples/s on one
thread: `TwoViewTransform` clip by clip vs `SpectralTwoViewTransform` on batches of `--batch_size`, same clips and
seeds, same process, recipe `official`, alternating passes (median); for scale, the extractor alone on both views.

    python benchmarks/bench_spectral_augment.py --part all --clips 200 --drum_clips 56
    python benchmarks/bench_spectral_augment.py --part throughput --clips 640 --drum_clips 0 --concatenate 10 \
        --max_length 1024    # 64 examples of 10 s, AudioSet length

Needs ../shared/data next to the repository (Speech Commands test set and drum kits), audiomentations and scipy.
"""

import argparse
import csv
import time
from pathlib import Path

import audiomentations as am
import numpy as np
import torch
from scipy.stats import wasserstein_distance
from tqdm import tqdm

from audiomosaic_training.augment import TwoViewTransform, centred_clip, sample_seed
from audiomosaic_training.spectral_augment import SpectralTwoViewTransform, ViewParameters
from modeling_audiomosaic import AudioMosaicFeatureExtractor, load_audio


DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Each transform alone with p = 1 and the parameters `build_augmentation` uses (library defaults otherwise).
SINGLE = {
    "stretch": lambda: am.TimeStretch(min_rate=0.7, max_rate=1.3, p=1.0),
    "snr": lambda: am.AddGaussianSNR(p=1.0),
    "gain": lambda: am.Gain(p=1.0),
    "highpass": lambda: am.HighPassFilter(p=1.0),
    "bandstop": lambda: am.BandStopFilter(p=1.0),
    "pitch": lambda: am.PitchShift(p=1.0),
    "polarity": lambda: am.PolarityInversion(p=1.0),
}


def load_clips(clips: int, drum_clips: int, data_dir: Path = DATA) -> list[np.ndarray]:
    """The first `clips` Speech Commands test clips of a fixed shuffle, and `drum_clips` drum-kit hits."""
    waveforms = []
    for folder, count in (("speechcommands_test", clips), ("drumkits", drum_clips)):
        if count == 0:
            continue
        with open(data_dir / folder / "meta.csv") as handle:
            rows = list(csv.DictReader(handle))
        order = np.random.default_rng(0).permutation(len(rows))[:count]
        waveforms += [load_audio(data_dir / folder / rows[i]["filename"]) for i in order]
    return waveforms


def waveform_views(transform: TwoViewTransform, clips: list[np.ndarray], run: int) -> torch.Tensor:
    views = []
    for index, clip in enumerate(tqdm(clips, desc=f"waveform run {run}", leave=False)):
        views += transform(clip, sample_seed(run, 0, index))
    return torch.stack(views)


def spectral_views(transform: SpectralTwoViewTransform, clips: list[np.ndarray], run: int, batch: int) -> torch.Tensor:
    views = []
    for start in range(0, len(clips), batch):
        part = clips[start : start + batch]
        view0, view1 = transform(part, [sample_seed(run, 0, start + i) for i in range(len(part))])
        views += [torch.stack(pair) for pair in zip(view0, view1, strict=True)]
    return torch.cat(views)


def compare(reference: torch.Tensor, other: torch.Tensor, real: torch.Tensor) -> tuple[float, float, float]:
    """(mean |difference of band means|, mean |difference of band stds|, mean per-band W1) over real frames."""
    a, b = reference[real], other[real]  # (values, bands)
    mean_gap = (a.mean(0) - b.mean(0)).abs().mean().item()
    std_gap = (a.std(0) - b.std(0)).abs().mean().item()
    distance = np.mean([wasserstein_distance(a[:, k].numpy(), b[:, k].numpy()) for k in range(a.shape[1])])
    return mean_gap, std_gap, float(distance)


# Each Table-8 transform alone (no roll/magnitude), then the whole `official` recipe with roll/magnitude.
CASES = [(name, False) for name in SINGLE] + [("official", True)]


def transform_pair(extractor: AudioMosaicFeatureExtractor, name: str,
                   roll: bool) -> tuple[TwoViewTransform, SpectralTwoViewTransform]:
    """The waveform reference and the spectral path for one of `CASES`."""
    reference = TwoViewTransform(extractor, augmentation="official", roll_magnitude=roll)
    spectral = SpectralTwoViewTransform(extractor, augmentation="official", roll_magnitude=roll)
    if name in SINGLE:
        reference.compose = am.Compose([SINGLE[name]()])
        spectral.transforms, spectral.probabilities = (name,), {name: 1.0}
    return reference, spectral


def distribution(clips: list[np.ndarray], extractor: AudioMosaicFeatureExtractor, batch: int,
                 cases: list[tuple[str, bool]] = CASES) -> None:
    num_frames = torch.tensor([min(1 + (len(clip) - 400) // 160, extractor.max_length) for clip in clips])
    real = (torch.arange(extractor.max_length) < num_frames.repeat_interleave(2)[:, None])
    rows = []
    for name, roll in tqdm(cases, desc="transforms"):
        reference, spectral = transform_pair(extractor, name, roll)
        first, second = waveform_views(reference, clips, 0), waveform_views(reference, clips, 1)
        ours = spectral_views(spectral, clips, 2, batch)
        rows.append((name, compare(first, second, real), compare(first, ours, real)))
    print("\n| transform (p = 1) | W1 wave vs wave (floor) | W1 spectral vs wave | ratio "
          "| |Δ band mean| floor / spectral | |Δ band std| floor / spectral |")
    print("|---|---|---|---|---|---|")
    for name, floor, ours in rows:
        ratio = f"{ours[2] / floor[2]:.1f}" if floor[2] > 0 else "-"
        print(f"| {name} | {floor[2]:.4f} | {ours[2]:.4f} | {ratio} | {floor[0]:.4f} / {ours[0]:.4f} "
              f"| {floor[1]:.4f} / {ours[1]:.4f} |")


def view_statistics(views: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(views, 2 x bands): each view's band means and stds over its real frames (roll-invariant), standardised over
    the views."""
    weights = real[..., None].float()
    count = weights.sum(1).clamp_min(1)
    mean = (views * weights).sum(1) / count
    std = (((views - mean[:, None]) ** 2 * weights).sum(1) / count).sqrt()
    statistics = torch.cat([mean, std], dim=1)
    return (statistics - statistics.mean(0)) / statistics.std(0).clamp_min(1e-6)


def view_matching(views: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    """How hard the contrastive task of these views is for a fixed feature: (top-1 accuracy of finding a clip's
    other view among every clip's other view by cosine similarity of `view_statistics`, both directions; mean
    distance of a clip's two views over the mean distance between views of different clips)."""
    statistics = torch.nn.functional.normalize(view_statistics(views, real), dim=1)
    first, second = statistics[0::2], statistics[1::2]
    similarity = first @ second.T
    targets = torch.arange(len(first))
    accuracy = ((similarity.argmax(1) == targets).float().mean() + (similarity.argmax(0) == targets).float().mean()) / 2
    distances = torch.cdist(first, second)
    positive = distances.diagonal().mean()
    negative = (distances.sum() - distances.diagonal().sum()) / (len(first) * (len(first) - 1))
    return float(accuracy), float(positive / negative)


def view_match(clips: list[np.ndarray], extractor: AudioMosaicFeatureExtractor, batch: int,
               cases: list[tuple[str, bool]] = CASES) -> None:
    """The views' contrastive difficulty for a fixed feature (band means and stds), per transform, waveform vs
    spectral: an augmentation whose spectral approximation makes the two views of a clip much more (or less) alike
    than the waveform reference does changes what pretraining learns, even when the value distributions agree."""
    num_frames = torch.tensor([min(1 + (len(clip) - 400) // 160, extractor.max_length) for clip in clips])
    real = (torch.arange(extractor.max_length) < num_frames.repeat_interleave(2)[:, None])
    print("\n| transform (p = 1) | top-1 view match: waveform | spectral | positive / negative distance: waveform "
          "| spectral |")
    print("|---|---|---|---|---|")
    for name, roll in tqdm(cases, desc="view match"):
        reference, spectral = transform_pair(extractor, name, roll)
        wave_accuracy, wave_ratio = view_matching(waveform_views(reference, clips, 0), real)
        ours_accuracy, ours_ratio = view_matching(spectral_views(spectral, clips, 0, batch), real)
        print(f"| {name} | {100 * wave_accuracy:.1f} % | {100 * ours_accuracy:.1f} % | {wave_ratio:.3f} | "
              f"{ours_ratio:.3f} |", flush=True)


def bias(clips: list[np.ndarray], extractor: AudioMosaicFeatureExtractor) -> None:
    """Mean (spectral - waveform) for fixed stretch rates and pitch shifts, with both audiomentations methods."""
    clips = [centred_clip(clip, 400) for clip in clips]
    num_frames = torch.tensor([min(1 + (len(clip) - 400) // 160, extractor.max_length) for clip in clips])
    real = torch.arange(extractor.max_length) < num_frames[:, None]
    spectral = SpectralTwoViewTransform(extractor)
    print("\n| fixed parameter | mean (spectral - waveform), signalsmith | idem, librosa phase vocoder |")
    print("|---|---|---|")
    cases = [("rate", rate) for rate in (0.75, 1.25)] + [("semitones", semitones) for semitones in (-4.0, 4.0)]
    for name, value in tqdm(cases, desc="bias"):
        parameters = ViewParameters.identity(len(clips))
        getattr(parameters, name)[:] = value
        ours = spectral.render(clips, parameters)
        gaps = []
        for method in ("signalsmith_stretch", "librosa_phase_vocoder"):
            if name == "rate":
                transform = am.TimeStretch(min_rate=value, max_rate=value, method=method, p=1.0)
            else:
                transform = am.PitchShift(min_semitones=value, max_semitones=value, method=method, p=1.0)
            waveforms = [transform(clip, extractor.sampling_rate) for clip in clips]
            reference = extractor(waveforms, sampling_rate=extractor.sampling_rate, truncation=True,
                                  return_tensors="pt")["input_values"]
            gaps.append((ours - reference)[real].mean().item())
        print(f"| {name} {value:g} | {gaps[0]:+.4f} | {gaps[1]:+.4f} |")


def throughput(clips: list[np.ndarray], extractor: AudioMosaicFeatureExtractor, batch: int, repeats: int) -> None:
    """Alternate `repeats` timed passes of each path over the clips (the machine may be shared); report medians."""
    reference = TwoViewTransform(extractor, augmentation="official")
    spectral = SpectralTwoViewTransform(extractor, augmentation="official")
    spectral(clips[:batch], list(range(len(clips[:batch]))))  # warm-up (caches, allocator)
    waveform_seconds, spectral_seconds, plain_seconds = [], [], []
    for repeat in tqdm(range(repeats), desc="throughput"):
        seeds = [sample_seed(repeat, 0, index) for index in range(len(clips))]
        start = time.perf_counter()
        for clip, seed in zip(clips, seeds, strict=True):
            reference(clip, seed)
        waveform_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        for first in range(0, len(clips), batch):
            spectral(clips[first : first + batch], seeds[first : first + batch])
        spectral_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        for first in range(0, len(clips), batch):
            part = [centred_clip(clip, 400) for clip in clips[first : first + batch]]
            extractor(part + part, sampling_rate=extractor.sampling_rate, truncation=True, return_tensors="pt")
        plain_seconds.append(time.perf_counter() - start)
    waveform_rate = len(clips) / np.median(waveform_seconds)
    spectral_rate = len(clips) / np.median(spectral_seconds)
    seconds = np.mean([len(clip) for clip in clips]) / extractor.sampling_rate
    print(f"\n| data path (official, 1 thread, {len(clips)} clips of {seconds:.1f} s on average, "
          f"{extractor.max_length} frames) | clips/s (two views each) | ms per clip |")
    print("|---|---|---|")
    print(f"| waveform TwoViewTransform (audiomentations {am.__version__}) | {waveform_rate:.1f} | "
          f"{1000 / waveform_rate:.2f} |")
    print(f"| spectral SpectralTwoViewTransform, batch {batch} | {spectral_rate:.1f} | {1000 / spectral_rate:.2f} |")
    plain_rate = len(clips) / np.median(plain_seconds)
    print(f"| no augmentation: the extractor on both (identical) views, batch {batch} | {plain_rate:.1f} | "
          f"{1000 / plain_rate:.2f} |")
    print(f"\nspectral / waveform throughput: {spectral_rate / waveform_rate:.1f}x (median of {repeats} alternating passes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("distribution", "view_match", "bias", "throughput", "all"), default="all")
    parser.add_argument("--clips", type=int, default=200, help="Speech Commands test clips")
    parser.add_argument("--drum_clips", type=int, default=56, help="drum-kit hits")
    parser.add_argument("--max_length", type=int, default=128, help="frames per view")
    parser.add_argument("--preset", default="speechcommands", help="feature extractor normalisation")
    parser.add_argument("--data_dir", type=Path, default=DATA, help="folder of speechcommands_test and drumkits")
    parser.add_argument("--cases", default=None, help="distribution / view_match: comma-separated rows (all)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--concatenate", type=int, default=1,
                        help="join this many consecutive clips into one example (e.g. 10 for 10 s examples)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each path (throughput)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    extractor = AudioMosaicFeatureExtractor.from_preset(args.preset, max_length=args.max_length)
    clips = load_clips(args.clips, args.drum_clips, args.data_dir)
    clips = [np.concatenate(clips[i : i + args.concatenate]) for i in range(0, len(clips), args.concatenate)]
    cases = [case for case in CASES if args.cases is None or case[0] in args.cases.split(",")]
    if args.part in ("distribution", "all"):
        distribution(clips, extractor, args.batch_size, cases)
    if args.part in ("view_match", "all"):
        view_match(clips, extractor, args.batch_size, cases)
    if args.part in ("bias", "all"):
        bias(clips, extractor)
    if args.part in ("throughput", "all"):
        throughput(clips, extractor, args.batch_size, args.repeats)


if __name__ == "__main__":
    main()
