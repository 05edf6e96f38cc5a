"""Batched two-view pretraining augmentation in the power-spectrum domain (issue 10).

[`TwoViewTransform`] runs the audiomentations chain of paper Table 8 on each waveform (~57 ms per 5 s view on one
core), yet the model only sees the Kaldi log-Mel spectrum. [`SpectralTwoViewTransform`] applies the same recipes
(same transforms, probabilities and parameter distributions) where they are cheap, on a whole batch at once, on CPU
or CUDA. For one view of a mean-removed clip, in the order of the audiomentations chain:

- roll/magnitude ("R"): the waveform path's own `roll_and_scale`, with the same draws (exact);
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
worker or the device (noise is drawn on CPU).
"""

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from modeling_audiomosaic import AudioMosaicFeatureExtractor
from modeling_audiomosaic.feature_extraction_audiomosaic import (
    _LOG_FLOOR,
    _PREEMPHASIS,
    _kaldi_constants,
    _kaldi_mel_bank,
    _KaldiConstants,
)

from .augment import (
    MIN_CLIP_SECONDS,
    TIME_STRETCH_MIN_RATE,
    TRANSFORM_PROBABILITIES,
    centred_clip,
    recipe_transforms,
    roll_and_scale,
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
# Contiguous groups of Mel filters multiplied separately (as the feature extractor does).
_MEL_GROUPS = 8
# Frames per block of views on CPU: keeps the intermediates of a block in cache (as the feature extractor does).
_CPU_BLOCK_FRAMES = 4096


@dataclass
class ViewParameters:
    """Spectral-chain parameters of a batch of views, one array entry per view; identity values mean "not applied"
    (rate 1, snr_db inf, gain_db 0, order 0 for a filter, semitones 0)."""

    rate: np.ndarray
    snr_db: np.ndarray
    gain_db: np.ndarray
    highpass_hz: np.ndarray
    highpass_order: np.ndarray
    bandstop_low_hz: np.ndarray
    bandstop_high_hz: np.ndarray
    bandstop_order: np.ndarray
    semitones: np.ndarray
    noise_seed: np.ndarray

    @classmethod
    def identity(cls, num_views: int) -> "ViewParameters":
        """Parameters that apply nothing (the views are then the plain features of the view waveforms)."""
        return cls(
            rate=np.ones(num_views), snr_db=np.full(num_views, np.inf), gain_db=np.zeros(num_views),
            highpass_hz=np.zeros(num_views), highpass_order=np.zeros(num_views, np.int64),
            bandstop_low_hz=np.zeros(num_views), bandstop_high_hz=np.zeros(num_views),
            bandstop_order=np.zeros(num_views, np.int64), semitones=np.zeros(num_views),
            noise_seed=np.zeros(num_views, np.uint64),
        )

    def __getitem__(self, index: slice) -> "ViewParameters":
        return ViewParameters(**{field.name: getattr(self, field.name)[index] for field in fields(self)})


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
    return 1.0 + _PREEMPHASIS**2 - 2.0 * _PREEMPHASIS * torch.cos(2.0 * torch.pi * hz / sampling_rate)


def warped_mel_bank(semitones: torch.Tensor, num_mel_bins: int, fft_length: int, sampling_rate: int) -> torch.Tensor:
    """Per-view Mel banks (views, fft_length // 2, num_mel_bins), float32, for the power spectrum of a clip shifted by
    a = 2^(semitones / 12): output bin k collects the power of the source band [k - 1/2, k + 1/2] / a (each source
    bin's power split over the output bins in proportion to the overlap, so power is conserved and a flat spectrum
    gets density 1 / a), and Kaldi's bank, sampled on the output bins exactly as the extractor samples it, is folded
    into those weights. Semitones 0 gives the extractor's bank. Content beyond Nyquist is dropped, as by resampling.

    Reading the triangles at a * f instead would sample the narrow low filters (narrower than a 31 Hz bin below about
    300 Hz at 128 bins) at other points for every shift: filters the extractor leaves empty or dim (3, 1, 5 ...) would
    light up and lit ones go dark, a texture in the kick-drum bands that no real pitch shift makes.
    """
    device = semitones.device
    bins = fft_length // 2
    bank = _kaldi_mel_bank(num_mel_bins, fft_length, sampling_rate).T.to(device)  # (bins, filters)
    padded = torch.cat([bank, bank.new_zeros(1, num_mel_bins)])  # row `bins`: output bins outside the spectrum
    ratio = torch.pow(2.0, semitones.double() / 12.0)[:, None]  # (views, 1)
    source = torch.arange(bins, dtype=torch.float64, device=device)[None]
    first = torch.floor(ratio * (source - 0.5) + 0.5)  # the first output bin source bin j reaches
    warped = torch.zeros(len(ratio), bins, num_mel_bins, device=device)
    for offset in range(math.ceil(float(ratio.max())) + 1):  # output bins one source bin can overlap
        output = first + offset
        overlap = (torch.minimum((output + 0.5) / ratio, source + 0.5)
                   - torch.maximum((output - 0.5) / ratio, source - 0.5)).clamp_min(0.0)
        rows = torch.where((output >= 0) & (output < bins), output, bins).long()
        warped.addcmul_(padded[rows], overlap.float()[..., None])
    return warped


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

    def __call__(
        self,
        waveforms: list[np.ndarray] | list[torch.Tensor],
        seeds: list[int],
        device: str | torch.device | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(view 0, view 1), each (batch, max_length, num_mel_bins) on `device` (default CPU), from mono clips.

        `seeds[i]` is clip i's seed (`sample_seed(run seed, epoch, index)`), as `TwoViewTransform(waveform, seed)`.
        """
        device = torch.device("cpu") if device is None else torch.device(device)
        views, parameters = self.draw(waveforms, seeds)
        if self.augmentation == "none" and not self.roll_magnitude:
            # Nothing to augment: the features themselves, as TwoViewTransform.features.
            features = self.feature_extractor(
                views[0::2], sampling_rate=self.sampling_rate, padding="max_length", truncation=True,
                return_tensors="pt", device=device,
            )["input_values"]
            return features, features.clone()
        features = self.render(views, parameters, device)
        return features[0::2], features[1::2]

    def draw(
        self, waveforms: list[np.ndarray] | list[torch.Tensor], seeds: list[int]
    ) -> tuple[list[np.ndarray], ViewParameters]:
        """The view waveforms (mean removed, rolled and scaled) and chain parameters of every clip's two views, in
        the order (clip 0 view 0, clip 0 view 1, clip 1 view 0, ...)."""
        if len(waveforms) == 0:
            raise ValueError("Empty batch: expected at least one waveform.")
        if len(seeds) != len(waveforms):
            raise ValueError(f"Got {len(waveforms)} waveforms but {len(seeds)} seeds; expected one seed per waveform.")
        views, uniforms, noise_seeds = [], [], []
        for i, (waveform, seed) in enumerate(zip(waveforms, seeds, strict=True)):
            if isinstance(waveform, torch.Tensor):
                waveform = waveform.detach().cpu().numpy()
            try:
                clip = centred_clip(waveform, self.min_samples)
            except ValueError as error:
                raise ValueError(f"waveform {i}: {error}") from None
            if not np.isfinite(clip.sum()):
                raise ValueError(f"waveform {i} contains non-finite samples; expected finite audio.")
            # As TwoViewTransform: one generator per view, roll/magnitude first (the same draws), then the chain.
            for view_seed in np.random.SeedSequence(int(seed)).generate_state(2, np.uint64).tolist():
                rng = np.random.default_rng(view_seed)
                views.append(roll_and_scale(clip, rng) if self.roll_magnitude else clip)
                uniforms.append(rng.random(_NUM_UNIFORMS))
                noise_seeds.append(int(rng.integers(2**63)))
        return views, self.chain_parameters(np.stack(uniforms), np.array(noise_seeds, dtype=np.uint64))

    def chain_parameters(self, uniforms: np.ndarray, noise_seeds: np.ndarray) -> ViewParameters:
        """Chain parameters of views from their uniform draws (views, 16): a transform of the recipe applies when
        its first uniform is below its Table 8 probability; its parameters follow audiomentations' distributions
        through the inverse CDFs of its other uniforms (each transform has its own columns)."""
        def draw(name: str, offset: int, low: float, high: float) -> np.ndarray:
            return low + (high - low) * uniforms[:, _UNIFORM_COLUMNS[name] + offset]

        def applied(name: str) -> np.ndarray:
            if name not in self.probabilities:
                return np.zeros(len(uniforms), dtype=bool)
            return uniforms[:, _UNIFORM_COLUMNS[name]] < self.probabilities[name]

        def order(name: str) -> np.ndarray:  # uniform integer in BUTTERWORTH_ORDER_RANGE, 0 when not applied
            low, high = BUTTERWORTH_ORDER_RANGE
            return np.where(applied(name), np.floor(draw(name, 1, low, high + 1)), 0).astype(np.int64)

        nyquist = self.sampling_rate // 2 * 0.9999  # audiomentations' clamp of a filter edge above Nyquist
        cutoff = _mel_to_hz(draw("highpass", 2, *map(_hz_to_mel, HIGHPASS_CUTOFF_HZ_RANGE)))
        centre = _mel_to_hz(draw("bandstop", 2, *map(_hz_to_mel, BANDSTOP_CENTRE_HZ_RANGE)))
        bandwidth = centre * draw("bandstop", 3, *BANDSTOP_BANDWIDTH_FRACTION_RANGE)
        band_stopped = applied("bandstop")
        rate = draw("stretch", 1, TIME_STRETCH_MIN_RATE, self.time_stretch_max_rate)
        return ViewParameters(
            rate=np.where(applied("stretch"), rate, 1.0),
            snr_db=np.where(applied("snr"), draw("snr", 1, *SNR_DB_RANGE), np.inf),
            gain_db=np.where(applied("gain"), draw("gain", 1, *GAIN_DB_RANGE), 0.0),
            highpass_hz=np.where(applied("highpass"), np.minimum(cutoff, nyquist), 0.0),
            highpass_order=order("highpass"),
            bandstop_low_hz=np.where(band_stopped, centre - bandwidth / 2, 0.0),
            bandstop_high_hz=np.where(band_stopped, np.minimum(centre + bandwidth / 2, nyquist), 0.0),
            bandstop_order=order("bandstop"),
            semitones=np.where(applied("pitch"), draw("pitch", 1, *PITCH_SEMITONES_RANGE), 0.0),
            noise_seed=noise_seeds,
        )

    def render(
        self, views: list[np.ndarray], parameters: ViewParameters, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        """Normalised log-Mel features (views, max_length, num_mel_bins) of mean-removed (and rolled) view waveforms
        under the spectral chain `parameters` (one entry per view)."""
        device = torch.device(device)
        extractor = self.feature_extractor
        max_length = extractor.max_length
        constants = _kaldi_constants(extractor.num_mel_bins, self.sampling_rate, device)
        lengths = np.array([view.shape[0] for view in views])
        num_frames = np.minimum(1 + (lengths - constants.window_length) // constants.window_shift, max_length)
        # Time stretch: output frame j shows the source frame centred at rate * (its centre).
        half = constants.window_length / 2
        centres = np.arange(max_length) * constants.window_shift + half
        starts = np.rint(parameters.rate[:, None] * centres - half).astype(np.int64)
        real = np.arange(max_length) < num_frames[:, None]
        noise_std = self._noise_std(views, parameters)
        # Frames starting at or past the end of the clip are silent (the stretched clip is zero-padded): they only
        # need a spectrum when noise is added, and then read the silence after the clip.
        computed = real & ((starts < lengths[:, None]) | (noise_std > 0)[:, None])
        starts = np.minimum(starts, lengths[:, None])
        pad = torch.tensor(extractor.padding_value, dtype=torch.float32)
        if extractor.do_normalize:
            pad = (pad - extractor.mean) / (2 * extractor.std)

        block = len(views) if device.type != "cpu" else max(1, _CPU_BLOCK_FRAMES // max_length)
        features = torch.empty(len(views), max_length, extractor.num_mel_bins, device=device)
        for first in range(0, len(views), block):
            part = slice(first, first + block)
            noise = (noise_std[part], parameters.noise_seed[part])
            power = self._power(views[part], starts[part], computed[part], noise, constants, device)
            banks = self._mel_banks(parameters[part], constants, device)
            out = features[part]
            # Each group of Mel filters only multiplies the FFT bins it can reach at any pitch shift (about a quarter
            # of the dense product); the groups are fixed, so every view's product has the same shapes in any batch.
            for start, end, low, high in self._mel_groups(constants):
                out[:, :, start:end] = torch.bmm(power[:, :, low:high], banks[:, low:high, start:end])
            out.clamp_min_(_LOG_FLOOR).log_()
            if extractor.do_normalize:
                out.sub_(extractor.mean).div_(2 * extractor.std)
            padding = torch.from_numpy(np.arange(max_length) >= num_frames[part, None]).to(device)
            out.masked_fill_(padding[..., None], float(pad))
        return features

    def _power(
        self, views: list[np.ndarray], starts: np.ndarray, computed: np.ndarray, noise: tuple[np.ndarray, np.ndarray],
        constants: _KaldiConstants, device: torch.device,
    ) -> torch.Tensor:
        """Kaldi power spectra (views, max_length, bins) of the frames at `starts` (zero where not `computed`), with
        `noise` = (std, seed) per view: white Gaussian noise on the output frame grid added to the frames."""
        window_length, shift = constants.window_length, constants.window_shift
        # Each view sits between window_length zeros, so that frames reaching before or past the clip read silence.
        slots, offsets, offset = [np.zeros(window_length, np.float32)], [], window_length
        for view in views:
            offsets.append(offset)
            slots += [view, np.zeros(window_length, np.float32)]
            offset += view.shape[0] + window_length
        buffer = torch.from_numpy(np.concatenate(slots)).to(device)
        every_frame = buffer.as_strided((buffer.shape[0] - window_length + 1, window_length), (1, 1))
        frames = every_frame[torch.from_numpy((np.array(offsets)[:, None] + starts)[computed]).to(device)]
        # A noisy view computes all its real frames: noise frames are framed like the output (overlapping), drawn
        # on CPU so that every device adds the same noise.
        first_rows = np.cumsum(computed.sum(axis=1)) - computed.sum(axis=1)
        for i in np.flatnonzero(noise[0] > 0):
            count = int(computed[i].sum())
            generator = torch.Generator().manual_seed(int(noise[1][i]))
            samples = torch.randn((count - 1) * shift + window_length, generator=generator).mul_(float(noise[0][i]))
            frames[first_rows[i] : first_rows[i] + count] += samples.as_strided((count, window_length), (shift, 1)).to(
                device
            )
        bins = constants.fft_length // 2
        power = torch.zeros(len(views) * starts.shape[1], bins, device=device)
        if frames.shape[0]:
            rows = torch.from_numpy(np.flatnonzero(computed)).to(device)
            power.index_copy_(0, rows, self.feature_extractor.power_spectrum(frames))
        return power.view(len(views), starts.shape[1], bins)

    def _noise_std(self, views: list[np.ndarray], parameters: ViewParameters) -> np.ndarray:
        """AddGaussianSNR's noise std per view (0 without noise): RMS of the stretched, zero-padded clip divided by
        10^(snr / 20)."""
        std = np.zeros(len(views))
        for i in np.flatnonzero(np.isfinite(parameters.snr_db)):
            view, rate = views[i], parameters.rate[i]
            # The stretched clip holds the first min(N, N r) source samples, each lasting 1 / r samples.
            kept = view[: min(view.shape[0], round(view.shape[0] * rate))]
            mean_square = float(np.einsum("i,i->", kept, kept, dtype=np.float64)) / (view.shape[0] * rate)
            std[i] = math.sqrt(mean_square) / 10.0 ** (parameters.snr_db[i] / 20.0)
        return std

    def _mel_groups(self, constants: _KaldiConstants) -> list[tuple[int, int, int, int]]:
        """(first filter, end filter, first bin, end bin) of contiguous groups of Mel filters: the bins any of the
        group's filters covers at the recipe's extreme pitch shifts (the support moves monotonically in between)."""
        if self._groups is None:
            semitones = PITCH_SEMITONES_RANGE if "pitch" in self.transforms else (0.0, 0.0)
            banks = warped_mel_bank(torch.tensor([*semitones, 0.0]), self.feature_extractor.num_mel_bins,
                                    constants.fft_length, self.sampling_rate)
            used = banks.sum(dim=0) > 0  # (bins, filters)
            self._groups = []
            for group in torch.arange(used.shape[1]).tensor_split(_MEL_GROUPS):
                start, end = int(group[0]), int(group[-1]) + 1
                bins = used[:, start:end].any(dim=1).nonzero().flatten().tolist()
                low, high = (bins[0], bins[-1] + 1) if bins else (0, 1)
                self._groups.append((start, end, low, high))
        return self._groups

    def _mel_banks(self, parameters: ViewParameters, constants: _KaldiConstants, device: torch.device) -> torch.Tensor:
        """Per-view Mel banks (views, bins, num_mel_bins): gain and filter power responses on the source bins, Mel
        filters read at the pitch-shifted frequency."""
        def as_tensor(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(values, dtype=np.float64)).to(device)

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


__all__ = ["SpectralTwoViewTransform", "ViewParameters", "butterworth_power_response", "warped_mel_bank"]
