"""Batched two-view pretraining augmentation in the power-spectrum domain (issue 10).

[`TwoViewTransform`] runs the audiomentations chain of paper Table 8 on each waveform (~57 ms per 5 s view on one
core), yet the model only sees the Kaldi log-Mel spectrum. [`SpectralTwoViewTransform`] applies the same recipes
(same transforms, probabilities and parameter distributions) where they are cheap, on a whole batch at once, on CPU
or CUDA. For one view of a mean-removed clip, in the order of the audiomentations chain:

- roll/magnitude ("R"): the waveform path's own draws (`roll_and_scale_draws`), the roll as a gather (exact);
- PolarityInversion: no effect on the power spectrum (exact);
- TimeStretch (rate r, length kept): output frame j is the Kaldi frame of the rolled clip centred at r times its
  own centre, i.e. the magnitude a phase vocoder resynthesises there; sped-up clips end in silent frames as the
  zero-padded waveform does (approximate: a frame shows the source's 25 ms, not 25 r ms, around that time);
- AddGaussianSNR: white Gaussian noise of the chain's standard deviation (from the RMS of the stretched, zero-padded
  clip) added to the frames before the FFT, framed like the output (exact: noise follows the stretch in the chain);
- Gain, HighPassFilter, BandStopFilter: the power factor and the squared magnitude response of the same
  Butterworth filters (scipy's bilinear design), folded into a per-view Mel bank (exact in steady state);
- PitchShift (ratio a = 2^(semitones / 12)): the power spectrum is resampled on the frequency axis (output bin k
  collects the source band [k - 1/2, k + 1/2] / a, power-conserving) before the extractor's own Mel bank, both
  folded into one per-view bank, and the Kaldi pre-emphasis gain is moved from f to a * f, so a partial at f lands
  where the shifted partial would, at its level (approximate: its window main lobe is scaled by a too, which can
  move a tone's peak by one Mel bin); content pushed above Nyquist is dropped as by resampling.

The power spectrum of each view is computed by the feature extractor's own code (`power_spectrum`) and the Mel
product is one batched matmul, so the cost is about that of computing the features of both views. Randomness is
explicit as in [`TwoViewTransform`]: a clip's views depend only on its seed and its audio, not on the batch, the
worker, the device or the resume point. Two paths draw it:

- `__call__` (the CPU path, in the DataLoader worker that collates a batch): NumPy generators per view, the same
  roll/magnitude draws as the waveform path, noise from `torch.Generator` on CPU;
- `views_from_batch` (the device path, for GPU runs): one padded batch tensor on the device, every draw a hash of
  (clip seed, view, stream, counter) (`counter_uniforms`, `counter_normals`), batched and static in shape, so the
  training process only queues kernels. Same distributions, other numbers (README, "Pretraining on GPUs").
"""

import functools
import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from modeling_audiomosaic import AudioMosaicFeatureExtractor
from modeling_audiomosaic.kaldi_audiomosaic import (
    LOG_FLOOR,
    MEL_GROUPS,
    PREEMPHASIS,
    KaldiConstants,
    kaldi_constants,
    kaldi_mel_bank,
)

from .augment import (
    MIN_CLIP_SECONDS,
    TIME_STRETCH_MIN_RATE,
    TRANSFORM_PROBABILITIES,
    centred_clip,
    recipe_transforms,
    roll_and_scale_draws,
    time_stretch_max_rate_for,
)


# audiomentations' default ranges, which `build_augmentation` uses (tests compare them with the library's).
SNR_DB_RANGE = (5.0, 40.0)
GAIN_DB_RANGE = (-12.0, 12.0)
HIGHPASS_CUTOFF_HZ_RANGE = (20.0, 2400.0)  # drawn uniformly on the mel scale 2595 log10(1 + f / 700)
BANDSTOP_CENTRE_HZ_RANGE = (200.0, 4000.0)  # idem
BANDSTOP_BANDWIDTH_FRACTION_RANGE = (0.5, 1.99)  # bandwidth = fraction * centre
BUTTERWORTH_ORDER_RANGE = (2, 4)  # roll-off 12-24 dB/octave in steps of 6 dB, i.e. the order of `scipy.signal.butter`
PITCH_SEMITONES_RANGE = (-4.0, 4.0)
# Columns of each transform in a view's uniform draws: whether it applies, then one per random parameter.
_UNIFORM_COLUMNS = {"polarity": 0, "stretch": 1, "snr": 3, "gain": 5, "highpass": 7, "bandstop": 10, "pitch": 14}
_NUM_UNIFORMS = 16
# Frames per block of views on CPU: keeps the intermediates of a block in cache (as the feature extractor does); on
# other devices, bounds the memory of a block (~3 GB for 256 clips of 10 s, plus the spectrum chunks' scratch) while
# issuing few operations.
_CPU_BLOCK_FRAMES = 4096
_DEVICE_BLOCK_FRAMES = 2**19
# Frames per power-spectrum chunk on other devices: 2 chunks per block (8 with the extractor's default), ~2.2 GB of
# scratch; every chunk costs ~27 queued operations, which bound the device path's host time.
_DEVICE_SPECTRUM_CHUNK_FRAMES = 2**18


@dataclass
class ViewParameters:
    """Spectral-chain parameters of a batch of views, one tensor entry per view (float64, int64 for the shift,
    orders and noise seeds); identity values mean "not applied" (shift 0, magnitude 1, rate 1, snr_db inf, gain_db 0,
    order 0 for a filter, semitones 0)."""

    shift: torch.Tensor  # roll (samples) of the view's clip
    magnitude: torch.Tensor  # the roll/magnitude gain factor
    rate: torch.Tensor
    snr_db: torch.Tensor
    gain_db: torch.Tensor
    highpass_hz: torch.Tensor
    highpass_order: torch.Tensor
    bandstop_low_hz: torch.Tensor
    bandstop_high_hz: torch.Tensor
    bandstop_order: torch.Tensor
    semitones: torch.Tensor
    noise_seed: torch.Tensor

    @classmethod
    def identity(cls, num_views: int, device: str | torch.device = "cpu") -> "ViewParameters":
        """Parameters that apply nothing (the views are then the plain features of the view waveforms)."""
        def full(value: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
            return torch.full((num_views,), value, dtype=dtype, device=device)

        return cls(
            shift=full(0, torch.int64), magnitude=full(1.0), rate=full(1.0), snr_db=full(math.inf), gain_db=full(0.0),
            highpass_hz=full(0.0), highpass_order=full(0, torch.int64), bandstop_low_hz=full(0.0),
            bandstop_high_hz=full(0.0), bandstop_order=full(0, torch.int64), semitones=full(0.0),
            noise_seed=full(0, torch.int64),
        )

    def __getitem__(self, index: slice) -> "ViewParameters":
        if index.indices(len(self.rate)) == (0, len(self.rate), 1):  # all views: no slicing operations to queue
            return self
        return ViewParameters(**{field.name: getattr(self, field.name)[index] for field in fields(self)})

    def to(self, device: torch.device) -> "ViewParameters":
        return ViewParameters(**{field.name: getattr(self, field.name).to(device) for field in fields(self)})


# ----------------------------------------------------------------------------------------------------------------------
# Counter-based random stream of the device path
# ----------------------------------------------------------------------------------------------------------------------
# Every draw is a hash of (clip seed, view, stream, counter): batched, on any device, and the same for a clip whatever
# the batch, the worker or the resume point. 32-bit values are held in int64 tensors, so that no operation overflows.

_MASK32 = 0xFFFFFFFF
# Streams of a view's draws: the chain's uniforms, the roll/magnitude draws, the noise key.
_NUM_STREAMS = 3
_STREAM_CHAIN, _STREAM_ROLL, _STREAM_NOISE = range(_NUM_STREAMS)
# Beta(10, 10) is the 10th smallest of 19 uniforms (an order statistic: exact, and static in shape).
_BETA_UNIFORMS = 19


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash with good avalanche (Wellons' "lowbias32") of int64 tensors in [0, 2^32).
    The products wrap around in int64; their low 32 bits, all that is kept, are exact."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


@functools.lru_cache(maxsize=8)
def _hashed_counters(count: int, device: torch.device) -> torch.Tensor:
    return hash32(torch.arange(count, device=device))


def stream_keys(seeds: torch.Tensor) -> torch.Tensor:
    """32-bit keys (clips, 2 views, streams) of every stream of both views of clips with 63-bit seeds (clips,)."""
    low, high = seeds & _MASK32, (seeds >> 32) & _MASK32
    view_streams = _hashed_counters(2 * _NUM_STREAMS, seeds.device).view(1, 2, _NUM_STREAMS)
    return hash32(hash32(hash32(low[:, None, None] ^ view_streams) ^ high[:, None, None]))


def counter_bits(keys: torch.Tensor, count: int) -> torch.Tensor:
    """32-bit draws (keys..., count) in int64: element j of key k is hash32(k ^ hash32(j))."""
    return hash32(keys[..., None] ^ _hashed_counters(count, keys.device))


def counter_uniforms(keys: torch.Tensor, count: int) -> torch.Tensor:
    """Uniforms in (0, 1) (keys..., count), float64, from `counter_bits`."""
    return (counter_bits(keys, count).double() + 0.5) / 2.0**32


def counter_normals(keys: torch.Tensor, count: int) -> torch.Tensor:
    """Standard normal samples (keys..., count), float32: Box-Muller, two samples from each pair of draws."""
    half = (count + 1) // 2
    uniforms = (counter_bits(keys, 2 * half).float() + 0.5) * 2.0**-32
    radius = torch.sqrt(uniforms[..., :half].log_().mul_(-2.0))
    angle = uniforms[..., half:].mul_(2.0 * math.pi)
    return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)[..., :count]


def pad_clips(clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """One zero-padded float32 batch (clips, longest) and the lengths (clips,) int64 of a list of mono clips."""
    lengths = torch.tensor([clip.shape[0] for clip in clips], dtype=torch.int64)
    batch = torch.zeros(len(clips), int(lengths.max()), dtype=torch.float32)
    for row, clip in zip(batch, clips, strict=True):
        row[: clip.shape[0]] = torch.as_tensor(clip)
    return batch, lengths


def _hz_to_mel(hz: float | np.ndarray) -> float | np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: float | np.ndarray) -> float | np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def butterworth_power_response(
    frequencies: torch.Tensor, order: torch.Tensor, sampling_rate: int, cutoff: torch.Tensor | None = None,
    band: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """|H(f)|^2 (views, bins) of digital Butterworth high-pass (`cutoff`) or band-stop (`band` = (low, high)) filters.

    `scipy.signal.butter(order, ..., fs=sampling_rate)` designs them from the analog prototype with pre-warped edges
    and the bilinear transform, whose magnitude is the analog one at w = tan(pi f / fs). A view with order 0 gets 1.
    All tensors are float64: (views,) parameters and (bins,) frequencies.
    """
    def warp(hz: torch.Tensor) -> torch.Tensor:
        return torch.tan(torch.pi * hz / sampling_rate)

    w = warp(frequencies)[None]
    if cutoff is not None:
        ratio = warp(cutoff)[:, None] / w  # inf at 0 Hz: fully stopped
    else:
        low, high = warp(band[0])[:, None], warp(band[1])[:, None]
        ratio = w * (high - low) / (low * high - w**2)  # inf at the centre sqrt(low * high)
    response = 1.0 / (1.0 + ratio.abs() ** (2 * order[:, None]))
    return torch.where(order[:, None] > 0, response, torch.ones_like(response))


def _preemphasis_power(hz: torch.Tensor, sampling_rate: int) -> torch.Tensor:
    """|1 - c e^(-i w)|^2 of Kaldi's pre-emphasis y[n] = x[n] - c x[n - 1] at frequencies `hz`."""
    return 1.0 + PREEMPHASIS**2 - 2.0 * PREEMPHASIS * torch.cos(2.0 * torch.pi * hz / sampling_rate)


@functools.lru_cache(maxsize=8)
def _transposed_mel_bank(num_mel_bins: int, fft_length: int, sampling_rate: int, device: torch.device) -> torch.Tensor:
    return kaldi_mel_bank(num_mel_bins, fft_length, sampling_rate).T.to(device)


def warped_mel_bank(semitones: torch.Tensor, num_mel_bins: int, fft_length: int, sampling_rate: int) -> torch.Tensor:
    """Per-view Mel banks (views, fft_length // 2, num_mel_bins), float32, for the power spectrum of a clip shifted by
    a = 2^(semitones / 12): output bin k collects the power of the source band [k - 1/2, k + 1/2] / a (each source
    bin's power split over the output bins in proportion to the overlap, so power is conserved and a flat spectrum
    gets density 1 / a), and Kaldi's bank, sampled on the output bins exactly as the extractor samples it, is folded
    into those weights. Semitones 0 gives the extractor's bank. Content beyond Nyquist is dropped, as by resampling.
    Shifts must lie within PITCH_SEMITONES_RANGE.

    Reading the triangles at a * f instead would sample the narrow low filters (narrower than a 31 Hz bin below about
    300 Hz at 128 bins) at other points for every shift: filters the extractor leaves empty or dim (3, 1, 5 ...) would
    light up and lit ones go dark, a texture in the kick-drum bands that no real pitch shift makes.
    """
    device = semitones.device
    bins = fft_length // 2
    bank = _transposed_mel_bank(num_mel_bins, fft_length, sampling_rate, device)  # (bins, filters)
    padded = torch.cat([bank, bank.new_zeros(1, num_mel_bins)])  # row `bins`: output bins outside the spectrum
    ratio = torch.pow(2.0, semitones.double() / 12.0)[:, None]  # (views, 1)
    source = torch.arange(bins, dtype=torch.float64, device=device)[None]
    first = torch.floor(ratio * (source - 0.5) + 0.5)  # the first output bin source bin j reaches
    # Output bins one source bin can overlap (offsets from `first`), from the recipe's largest shift: a bound known
    # without asking the device. All offsets at once: (offsets, views, bins).
    offsets = torch.arange(math.ceil(2.0 ** (PITCH_SEMITONES_RANGE[1] / 12.0)) + 1, dtype=torch.float64, device=device)
    output = first + offsets[:, None, None]
    overlap = (torch.minimum((output + 0.5) / ratio, source + 0.5)
               - torch.maximum((output - 0.5) / ratio, source - 0.5)).clamp_min(0.0)
    rows = torch.where((output >= 0) & (output < bins), output, bins).long()
    return (padded[rows] * overlap.float()[..., None]).sum(dim=0)


# The chain's drawn parameters, in the order `chain_parameters` unpacks them: (transform, its uniform column after the
# "applies" one, low, high). Orders are uniform integers in BUTTERWORTH_ORDER_RANGE (floor of a uniform in
# [low, high + 1)); filter frequencies are uniform on the mel scale. Stretch's high is the recipe's max rate.
_DRAWN = (
    ("stretch", 1, TIME_STRETCH_MIN_RATE, None),
    ("snr", 1, *SNR_DB_RANGE),
    ("gain", 1, *GAIN_DB_RANGE),
    ("highpass", 1, BUTTERWORTH_ORDER_RANGE[0], BUTTERWORTH_ORDER_RANGE[1] + 1),
    ("highpass", 2, *map(_hz_to_mel, HIGHPASS_CUTOFF_HZ_RANGE)),
    ("bandstop", 1, BUTTERWORTH_ORDER_RANGE[0], BUTTERWORTH_ORDER_RANGE[1] + 1),
    ("bandstop", 2, *map(_hz_to_mel, BANDSTOP_CENTRE_HZ_RANGE)),
    ("bandstop", 3, *BANDSTOP_BANDWIDTH_FRACTION_RANGE),
    ("pitch", 1, *PITCH_SEMITONES_RANGE),
)
# The fields `chain_parameters` derives from them, each with the transform it belongs to and its identity value.
_FIELDS = (("stretch", 1.0), ("snr", math.inf), ("gain", 0.0), ("highpass", 0.0), ("highpass", 0.0),
           ("bandstop", 0.0), ("bandstop", 0.0), ("bandstop", 0.0), ("pitch", 0.0))
_APPLIABLE = ("stretch", "snr", "gain", "highpass", "bandstop", "pitch")


@dataclass(eq=False)  # hashed by identity: `to` caches per device
class _ChainDraws:
    """The index and scale tensors that turn a view's uniforms into its chain parameters in a few batched operations
    (float64; a transform the recipe lacks has probability 0, so it never applies)."""

    applied_columns: torch.Tensor
    probabilities: torch.Tensor
    value_columns: torch.Tensor
    low: torch.Tensor
    span: torch.Tensor
    transform_of_field: torch.Tensor
    identity: torch.Tensor

    @classmethod
    def of(cls, probabilities: dict[str, float], time_stretch_max_rate: float) -> "_ChainDraws":
        highs = [time_stretch_max_rate if high is None else high for _, _, _, high in _DRAWN]
        lows = [low for _, _, low, _ in _DRAWN]
        return cls(
            applied_columns=torch.tensor([_UNIFORM_COLUMNS[name] for name in _APPLIABLE]),
            probabilities=torch.tensor([probabilities.get(name, 0.0) for name in _APPLIABLE], dtype=torch.float64),
            value_columns=torch.tensor([_UNIFORM_COLUMNS[name] + offset for name, offset, _, _ in _DRAWN]),
            low=torch.tensor(lows, dtype=torch.float64),
            span=torch.tensor([high - low for low, high in zip(lows, highs)], dtype=torch.float64),
            transform_of_field=torch.tensor([_APPLIABLE.index(name) for name, _ in _FIELDS]),
            identity=torch.tensor([value for _, value in _FIELDS], dtype=torch.float64),
        )

    @functools.lru_cache(maxsize=4)
    def to(self, device: torch.device) -> "_ChainDraws":
        return _ChainDraws(**{field.name: getattr(self, field.name).to(device) for field in fields(self)})


class SpectralTwoViewTransform:
    """Batch of waveforms -> the two normalised log-Mel views of every clip, augmented in the spectral domain.

    Same recipes and conventions as [`TwoViewTransform`] (see the module docstring for what is exact and what is
    approximated): views are (batch, max_length, num_mel_bins), padded with the extractor's normalised padding value
    and truncated to `max_length` frames.

    Args:
        feature_extractor: an `AudioMosaicFeatureExtractor` (its `max_length`, `mean` and `std` set the length and
            normalisation).
        augmentation: a recipe name of [`build_augmentation`].
        roll_magnitude: apply the roll/magnitude augmentation first.
        time_stretch_max_rate: see [`build_augmentation`].
    """

    def __init__(
        self,
        feature_extractor: AudioMosaicFeatureExtractor,
        augmentation: str = "official",
        roll_magnitude: bool = True,
        time_stretch_max_rate: float | None = None,
    ):
        self.feature_extractor = feature_extractor
        self.sampling_rate = feature_extractor.sampling_rate
        self.augmentation = augmentation
        self.roll_magnitude = roll_magnitude
        self.transforms = recipe_transforms(augmentation)
        self.probabilities = {name: TRANSFORM_PROBABILITIES[name] for name in self.transforms}
        self.time_stretch_max_rate = time_stretch_max_rate_for(augmentation, time_stretch_max_rate)
        self.min_samples = int(self.sampling_rate * MIN_CLIP_SECONDS)
        self._groups: list[tuple[int, int, int, int]] | None = None
        self._chain_draws = _ChainDraws.of(self.probabilities, self.time_stretch_max_rate)

    def __call__(
        self,
        waveforms: list[np.ndarray] | list[torch.Tensor],
        seeds: list[int],
        device: str | torch.device | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(view 0, view 1), each (batch, max_length, num_mel_bins) on `device` (default CPU), from mono clips.

        `seeds[i]` is clip i's seed (`sample_seed(run seed, epoch, index)`), as `TwoViewTransform(waveform, seed)`:
        the draws are NumPy's, the same as the waveform path's for roll/magnitude. `views_from_batch` is the device
        path (its own counter-based draws, from one padded batch tensor).
        """
        device = torch.device("cpu") if device is None else torch.device(device)
        clips, parameters = self.draw(waveforms, seeds)
        if self.augmentation == "none" and not self.roll_magnitude:
            # Nothing to augment: the features themselves, as TwoViewTransform.features.
            features = self.feature_extractor(
                clips, sampling_rate=self.sampling_rate, padding="max_length", truncation=True,
                return_tensors="pt", device=device,
            )["input_values"]
            return features, features.clone()
        batch, lengths = pad_clips(clips)
        features = self.render_clips(batch.to(device), lengths.to(device), parameters.to(device), views_per_clip=2)
        return features[0::2], features[1::2]

    def draw(
        self, waveforms: list[np.ndarray] | list[torch.Tensor], seeds: list[int]
    ) -> tuple[list[np.ndarray], ViewParameters]:
        """The clips (mean removed, padded to one frame) and the parameters of every clip's two views, in the order
        (clip 0 view 0, clip 0 view 1, clip 1 view 0, ...), drawn with NumPy as `TwoViewTransform` does."""
        if len(waveforms) == 0:
            raise ValueError("Empty batch: expected at least one waveform.")
        if len(seeds) != len(waveforms):
            raise ValueError(f"Got {len(waveforms)} waveforms but {len(seeds)} seeds; expected one seed per waveform.")
        clips, rolls, uniforms, noise_seeds = [], [], [], []
        for i, (waveform, seed) in enumerate(zip(waveforms, seeds, strict=True)):
            if isinstance(waveform, torch.Tensor):
                waveform = waveform.detach().cpu().numpy()
            try:
                clip = centred_clip(waveform, self.min_samples)
            except ValueError as error:
                raise ValueError(f"waveform {i}: {error}") from None
            if not np.isfinite(clip.sum()):
                raise ValueError(f"waveform {i} contains non-finite samples; expected finite audio.")
            clips.append(clip)
            # As TwoViewTransform: one generator per view, roll/magnitude first (the same draws), then the chain.
            for view_seed in np.random.SeedSequence(int(seed)).generate_state(2, np.uint64).tolist():
                rng = np.random.default_rng(view_seed)
                rolls.append(roll_and_scale_draws(clip.shape[0], rng) if self.roll_magnitude else (0, 1.0))
                uniforms.append(rng.random(_NUM_UNIFORMS))
                noise_seeds.append(int(rng.integers(2**63)))
        shift, magnitude = zip(*rolls, strict=True)
        return clips, self.chain_parameters(
            torch.from_numpy(np.stack(uniforms)), torch.tensor(noise_seeds, dtype=torch.int64),
            torch.tensor(shift, dtype=torch.int64), torch.tensor(magnitude, dtype=torch.float64),
        )

    def device_draw(self, seeds: torch.Tensor, lengths: torch.Tensor) -> ViewParameters:
        """The parameters of every clip's two views (clip 0 view 0, clip 0 view 1, ...) from the counter-based stream
        keyed by the clips' seeds (clips,) int64, on their device: batched, static in shape, no host round trip.
        Same distributions as `draw` (roll uniform in [0, N), magnitude Beta(10, 10) + 0.5, the chain's uniforms),
        other numbers."""
        lengths = lengths.clamp_min(self.min_samples).repeat_interleave(2)
        keys = stream_keys(seeds).flatten(0, 1)  # (views, streams)
        # The chain's and the roll's streams in one call (a draw depends on its key and counter only, not on how many
        # are drawn): (views, 2, 1 + _BETA_UNIFORMS), the chain's uniforms first in their row.
        chain_and_roll = counter_uniforms(keys[:, [_STREAM_CHAIN, _STREAM_ROLL]], max(_NUM_UNIFORMS, 1 + _BETA_UNIFORMS))
        chain = chain_and_roll[:, 0, :_NUM_UNIFORMS]
        noise_keys = keys[:, _STREAM_NOISE]
        if self.roll_magnitude:
            roll = chain_and_roll[:, 1]
            shift = (roll[:, 0] * lengths).floor().long().clamp_max_(lengths - 1)
            magnitude = roll[:, 1:].median(dim=1).values + 0.5
        else:
            shift, magnitude = torch.zeros_like(lengths), torch.ones_like(lengths, dtype=torch.float64)
        return self.chain_parameters(chain, noise_keys, shift, magnitude)

    def views_from_batch(
        self, waveforms: torch.Tensor, lengths: torch.Tensor, seeds: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The device path: (view 0, view 1) of a padded batch (clips, samples) with its `lengths` (clips,) and
        `seeds` (clips,) int64, all on the training device: mean removal, roll/magnitude, the chain's draws and the
        noise are batched tensor operations there (`device_draw`), with no data-dependent shapes, so the training
        process only queues work. The clips must be finite (the DataLoader workers check it, where a bad clip can
        be replaced)."""
        lengths = lengths.to(torch.int64)
        samples = torch.arange(waveforms.shape[1], device=waveforms.device)
        inside = samples < lengths[:, None]
        # The mean over each clip's own samples, in float64 so that it does not depend on the batch's padding.
        mean = waveforms.sum(dim=1, dtype=torch.float64) / lengths.clamp_min(1)
        clips = torch.where(inside, waveforms - mean.float()[:, None], 0.0)
        if clips.shape[1] < self.min_samples:  # clips shorter than one frame are zero-padded to it
            clips = torch.nn.functional.pad(clips, (0, self.min_samples - clips.shape[1]))
        features = self.render_clips(clips, lengths.clamp_min(self.min_samples), self.device_draw(seeds, lengths),
                                     views_per_clip=2, counter_noise=True)
        return features[0::2], features[1::2]

    def chain_parameters(self, uniforms: torch.Tensor, noise_seeds: torch.Tensor, shift: torch.Tensor,
                         magnitude: torch.Tensor) -> ViewParameters:
        """Chain parameters of views from their uniform draws (views, 16) float64: a transform of the recipe applies
        when its first uniform is below its Table 8 probability; its parameters follow audiomentations'
        distributions through the inverse CDFs of its other uniforms (each transform has its own columns). All draws
        are one batched product (`_ChainDraws`), so the device path issues a few operations, not one per parameter."""
        draws = self._chain_draws.to(uniforms.device)
        applied = uniforms[:, draws.applied_columns] < draws.probabilities  # (views, transforms of _DRAWN)
        values = draws.low + draws.span * uniforms[:, draws.value_columns]  # (views, len(_DRAWN)), by _DRAWN's order
        stretch, snr, gain, highpass_order, highpass_mel, bandstop_order, centre_mel, fraction, semitones = \
            values.unbind(1)
        nyquist = self.sampling_rate // 2 * 0.9999  # audiomentations' clamp of a filter edge above Nyquist
        cutoff, centre = _mel_to_hz(torch.stack([highpass_mel, centre_mel])).unbind(0)
        bandwidth = centre * fraction
        derived = torch.stack([
            stretch, snr, gain, cutoff.clamp_max(nyquist), highpass_order.floor(), centre - bandwidth / 2,
            (centre + bandwidth / 2).clamp_max(nyquist), bandstop_order.floor(), semitones], dim=1)
        # Identity values where a transform does not apply (an order of 0 means no filter).
        parameters = torch.where(applied[:, draws.transform_of_field], derived, draws.identity).unbind(1)
        rate, snr_db, gain_db, highpass_hz, highpass_order, low_hz, high_hz, bandstop_order, semitones = parameters
        return ViewParameters(
            shift=shift, magnitude=magnitude, rate=rate, snr_db=snr_db, gain_db=gain_db, highpass_hz=highpass_hz,
            highpass_order=highpass_order.long(), bandstop_low_hz=low_hz, bandstop_high_hz=high_hz,
            bandstop_order=bandstop_order.long(), semitones=semitones, noise_seed=noise_seeds,
        )

    def render(
        self, views: list[np.ndarray], parameters: ViewParameters, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        """Normalised log-Mel features (views, max_length, num_mel_bins) of mean-removed view waveforms, one view per
        waveform, under the chain `parameters` (one entry per view, roll/magnitude included)."""
        device = torch.device(device)
        batch, lengths = pad_clips(views)
        return self.render_clips(batch.to(device), lengths.to(device), parameters.to(device), views_per_clip=1)

    def render_clips(
        self, clips: torch.Tensor, lengths: torch.Tensor, parameters: ViewParameters, views_per_clip: int,
        counter_noise: bool = False,
    ) -> torch.Tensor:
        """Normalised log-Mel features (views, max_length, num_mel_bins) of `views_per_clip` views of each mean-removed
        clip of the padded batch `clips` (clips, samples) with `lengths` (clips,), under `parameters` (one entry per
        view: view v is of clip v // views_per_clip). Every view computes all `max_length` frames (padding frames
        are filled afterwards), so shapes depend only on the batch's size: nothing waits for the device.

        Noise is drawn per view from `torch.Generator(noise_seed)` on CPU (the CPU path: the same noise on every
        device), or with `counter_noise` from the counter-based stream keyed by `noise_seed` on the clips' device."""
        device = clips.device
        extractor = self.feature_extractor
        max_length = extractor.max_length
        constants = kaldi_constants(extractor.num_mel_bins, self.sampling_rate, device)
        window_length, shift = constants.window_length, constants.window_shift
        num_views = len(parameters.rate)
        lengths = lengths.repeat_interleave(views_per_clip)
        num_frames = torch.clamp(1 + (lengths - window_length) // shift, max=max_length)
        pad = torch.tensor(extractor.padding_value, dtype=torch.float32)
        if extractor.do_normalize:
            pad = (pad - extractor.mean) / (2 * extractor.std)
        frame_index = torch.arange(max_length, device=device)

        block = max(1, (_CPU_BLOCK_FRAMES if device.type == "cpu" else _DEVICE_BLOCK_FRAMES) // max_length)
        features = torch.empty(num_views, max_length, extractor.num_mel_bins, device=device)
        # On CPU each block makes its own banks (they stay in cache); elsewhere one call makes all of them.
        all_banks = self._mel_banks(parameters, constants, device) if device.type != "cpu" else None
        for first in range(0, num_views, block):
            part = slice(first, first + block)
            clip_index = torch.arange(num_views, device=device)[part] // views_per_clip
            views = self._view_waveforms(clips[clip_index], lengths[part], parameters[part], window_length)
            power = self._power(views, lengths[part], parameters[part], constants, counter_noise)
            banks = all_banks[part] if all_banks is not None else self._mel_banks(parameters[part], constants, device)
            out = features[part]
            if device.type == "cpu":
                # Each group of Mel filters only multiplies the FFT bins it can reach at any pitch shift (about a
                # quarter of the dense product); the groups are fixed, so every view's product has the same shapes in
                # any batch.
                for start, end, low, high in self._mel_groups(constants):
                    out[:, :, start:end] = torch.bmm(power[:, :, low:high], banks[:, low:high, start:end])
            else:  # one dense product: an accelerator's arithmetic is cheaper than the operations the groups issue
                torch.bmm(power, banks, out=out)
            out.clamp_min_(LOG_FLOOR).log_()
            if extractor.do_normalize:
                out.sub_(extractor.mean).div_(2 * extractor.std)
            out.masked_fill_((frame_index >= num_frames[part, None])[..., None], float(pad))
        return features

    def _view_waveforms(self, clips: torch.Tensor, lengths: torch.Tensor, parameters: ViewParameters,
                        window_length: int) -> torch.Tensor:
        """Each view's waveform (views, samples + 2 window_length): its clip rolled by `shift` within its own length
        and scaled by `magnitude`, between window_length zeros on either side (frames reaching before or past the
        clip read silence, as the zero-padded waveform has)."""
        samples = torch.arange(clips.shape[1], device=clips.device)
        inside = samples < lengths[:, None]
        # np.roll(clip, shift)[t] = clip[(t - shift) mod N]
        source = torch.remainder(samples - parameters.shift[:, None], lengths[:, None])
        rolled = torch.where(inside, clips.gather(1, source), 0.0) * parameters.magnitude.float()[:, None]
        return torch.nn.functional.pad(rolled, (window_length, window_length))

    def _power(
        self, views: torch.Tensor, lengths: torch.Tensor, parameters: ViewParameters, constants: KaldiConstants,
        counter_noise: bool,
    ) -> torch.Tensor:
        """Kaldi power spectra (views, max_length, bins) of the frames of the (time-stretched) views, with
        AddGaussianSNR's noise on the output frame grid added to the frames. `views` come from `_view_waveforms`."""
        window_length, shift = constants.window_length, constants.window_shift
        max_length = self.feature_extractor.max_length
        num_views, padded = views.shape
        # Time stretch: output frame j shows the source frame centred at rate * (its centre); frames starting at or
        # past the end of the clip read the silence after it (the stretched clip is zero-padded).
        half = window_length / 2
        centres = torch.arange(max_length, device=views.device, dtype=torch.float64) * shift + half
        starts = torch.round(parameters.rate[:, None] * centres - half).long()
        starts = torch.minimum(starts, lengths[:, None]) + window_length  # offset of the leading zeros
        starts = starts + torch.arange(num_views, device=views.device)[:, None] * padded
        every_frame = views.flatten().as_strided((views.numel() - window_length + 1, window_length), (1, 1))
        frames = every_frame[starts.flatten()].view(num_views, max_length, window_length)
        noise_std = self._noise_std(views[:, window_length:-window_length], lengths, parameters)
        noise_length = (max_length - 1) * shift + window_length
        if counter_noise:
            noise = counter_normals(parameters.noise_seed, noise_length)
        else:
            noise = torch.zeros(num_views, noise_length)
            for i in torch.nonzero(noise_std.cpu() > 0).flatten().tolist():
                generator = torch.Generator().manual_seed(int(parameters.noise_seed[i]))
                noise[i] = torch.randn(noise_length, generator=generator)
            noise = noise.to(views.device)
        noise = noise.mul_(noise_std.float()[:, None])
        frames = frames + noise.as_strided((num_views, max_length, window_length), (noise_length, shift, 1))
        chunk = None if views.device.type == "cpu" else _DEVICE_SPECTRUM_CHUNK_FRAMES
        power = self.feature_extractor.power_spectrum(frames.view(-1, window_length), chunk)
        return power.view(num_views, max_length, constants.fft_length // 2)

    def _noise_std(self, views: torch.Tensor, lengths: torch.Tensor, parameters: ViewParameters) -> torch.Tensor:
        """AddGaussianSNR's noise std per view (0 without noise), float64: RMS of the stretched, zero-padded clip
        divided by 10^(snr / 20). The stretched clip holds the first min(N, N r) source samples, each lasting 1 / r
        samples."""
        rate = parameters.rate
        kept = torch.minimum(lengths, torch.round(lengths * rate).long())
        samples = torch.arange(views.shape[1], device=views.device)
        energy = torch.where(samples < kept[:, None], views, 0.0).square().sum(dim=1, dtype=torch.float64)
        mean_square = energy / (lengths * rate)
        noisy = torch.isfinite(parameters.snr_db)
        return torch.where(noisy, mean_square.sqrt() / 10.0 ** (parameters.snr_db.clamp_max(1e9) / 20.0), 0.0)

    def _mel_groups(self, constants: KaldiConstants) -> list[tuple[int, int, int, int]]:
        """(first filter, end filter, first bin, end bin) of contiguous groups of Mel filters: the bins any of the
        group's filters covers at the recipe's extreme pitch shifts (the support moves monotonically in between)."""
        if self._groups is None:
            semitones = PITCH_SEMITONES_RANGE if "pitch" in self.transforms else (0.0, 0.0)
            banks = warped_mel_bank(torch.tensor([*semitones, 0.0]), self.feature_extractor.num_mel_bins,
                                    constants.fft_length, self.sampling_rate)
            used = banks.sum(dim=0) > 0  # (bins, filters)
            self._groups = []
            for group in torch.arange(used.shape[1]).tensor_split(MEL_GROUPS):
                start, end = int(group[0]), int(group[-1]) + 1
                bins = used[:, start:end].any(dim=1).nonzero().flatten().tolist()
                low, high = (bins[0], bins[-1] + 1) if bins else (0, 1)
                self._groups.append((start, end, low, high))
        return self._groups

    def _mel_banks(self, parameters: ViewParameters, constants: KaldiConstants, device: torch.device) -> torch.Tensor:
        """Per-view Mel banks (views, bins, num_mel_bins): gain and filter power responses on the source bins, Mel
        filters read at the pitch-shifted frequency."""
        def as_tensor(values: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float64, device=device)

        bins = constants.fft_length // 2
        frequencies = torch.arange(bins, dtype=torch.float64, device=device) * self.sampling_rate / constants.fft_length
        response = (10.0 ** (as_tensor(parameters.gain_db) / 10.0))[:, None]
        response = response * butterworth_power_response(
            frequencies, as_tensor(parameters.highpass_order), self.sampling_rate,
            cutoff=as_tensor(parameters.highpass_hz),
        )
        response = response * butterworth_power_response(
            frequencies, as_tensor(parameters.bandstop_order), self.sampling_rate,
            band=(as_tensor(parameters.bandstop_low_hz), as_tensor(parameters.bandstop_high_hz)),
        )
        # The power spectrum holds Kaldi's pre-emphasis at the source frequency; a shifted partial is pre-emphasised
        # at its new frequency (a factor ~ratio^2 below 1 kHz).
        shifted = frequencies * 2.0 ** (as_tensor(parameters.semitones) / 12.0)[:, None]
        response = response * _preemphasis_power(shifted, self.sampling_rate) / _preemphasis_power(
            frequencies, self.sampling_rate
        )
        bank = warped_mel_bank(
            as_tensor(parameters.semitones), self.feature_extractor.num_mel_bins, constants.fft_length,
            self.sampling_rate,
        )
        return bank.mul_(response.float()[..., None])


__all__ = ["SpectralTwoViewTransform", "ViewParameters", "butterworth_power_response", "counter_normals",
           "counter_uniforms", "hash32", "pad_clips", "stream_keys", "warped_mel_bank"]
