"""Tests of the spectral-domain two-view augmentation against the waveform path and each transform's definition."""

import math

import numpy as np
import pytest
import torch

from audiomosaic_training.augment import AUGMENTATIONS, TRANSFORM_PROBABILITIES, TwoViewTransform, sample_seed
from audiomosaic_training.spectral_augment import (
    BANDSTOP_BANDWIDTH_FRACTION_RANGE,
    BANDSTOP_CENTRE_HZ_RANGE,
    BUTTERWORTH_ORDER_RANGE,
    GAIN_DB_RANGE,
    HIGHPASS_CUTOFF_HZ_RANGE,
    PITCH_SEMITONES_RANGE,
    SNR_DB_RANGE,
    SpectralTwoViewTransform,
    ViewParameters,
    butterworth_power_response,
    warped_mel_bank,
)
from modeling_audiomosaic import AudioMosaicFeatureExtractor
from modeling_audiomosaic.kaldi_audiomosaic import kaldi_mel_bank


RATE = 16000
CPU = torch.device("cpu")
# Tolerance of the spectral path with nothing applied vs the extractor: a dense (batched) Mel product instead of the
# extractor's grouped one, and a bank computed with other float32 operations; both are relative ~1e-7 on power.
RENDER_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def extractor() -> AudioMosaicFeatureExtractor:
    return AudioMosaicFeatureExtractor.from_preset("speechcommands")


def noise(seconds: float, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def tone(hz: float, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


def render(transform: SpectralTwoViewTransform, clip: np.ndarray, **parameters) -> torch.Tensor:
    """One view of `clip` (mean removed, no roll) under the given chain parameters, everything else identity."""
    values = ViewParameters.identity(1)
    for name, value in parameters.items():
        getattr(values, name)[0] = value
    return transform.render([clip - clip.mean()], values, CPU)[0]


def log_units(features: torch.Tensor, extractor: AudioMosaicFeatureExtractor) -> torch.Tensor:
    """Undo the normalisation: natural-log Mel energies."""
    return features * 2 * extractor.std + extractor.mean


def test_views_follow_two_view_transform_conventions(extractor):
    clips = [noise(0.5, 1), noise(1.0, 2), noise(2.0, 3), noise(0.01, 4)]  # short, 1 s, truncated, below one frame
    seeds = [sample_seed(7, 0, i) for i in range(len(clips))]
    view0, view1 = SpectralTwoViewTransform(extractor)(clips, seeds)
    waveform = TwoViewTransform(extractor, augmentation="none", roll_magnitude=False)
    for views in (view0, view1):
        assert views.shape == (len(clips), extractor.max_length, extractor.num_mel_bins)
        assert views.dtype == torch.float32
    pad = float((torch.tensor(0.0) - extractor.mean) / (2 * extractor.std))
    for i, clip in enumerate(clips):
        padded = (waveform.features(clip) == pad).all(dim=1)
        assert padded.sum() == max(extractor.max_length - (1 + (max(len(clip), 400) - 400) // 160), 0)
        for views in (view0, view1):
            assert torch.equal((views[i] == pad).all(dim=1), padded)
    assert not torch.equal(view0, view1)


def test_no_augmentation_equals_features(extractor):
    clips = [noise(1.0, 1), tone(440.0, 0.7)]
    view0, view1 = SpectralTwoViewTransform(extractor, augmentation="none", roll_magnitude=False)(clips, [1, 2])
    waveform = TwoViewTransform(extractor, augmentation="none", roll_magnitude=False)
    for i, clip in enumerate(clips):
        assert torch.equal(view0[i], waveform.features(clip))
        assert torch.equal(view1[i], waveform.features(clip))


def test_identity_chain_matches_extractor(extractor):
    transform = SpectralTwoViewTransform(extractor)
    clips = [clip - clip.mean() for clip in (noise(1.0, 5), tone(300.0, 1.3))]
    rendered = transform.render(clips, ViewParameters.identity(2), CPU)
    expected = extractor(clips, sampling_rate=RATE, truncation=True, return_tensors="pt")["input_values"]
    torch.testing.assert_close(rendered, expected, atol=RENDER_TOLERANCE, rtol=0)


def test_roll_and_magnitude_match_waveform_path(extractor):
    """With no audiomentations transform, the views are the features of the same rolled, scaled waveforms."""
    clips = [tone(500.0, 0.8) + noise(0.8, 3), noise(1.2, 4)]
    seeds = [11, 12]
    spectral = SpectralTwoViewTransform(extractor, augmentation="none")(clips, seeds)
    waveform = TwoViewTransform(extractor, augmentation="none")
    for i, (clip, seed) in enumerate(zip(clips, seeds, strict=True)):
        for view, reference in zip(spectral, waveform(clip, seed), strict=True):
            torch.testing.assert_close(view[i], reference, atol=RENDER_TOLERANCE, rtol=0)


def test_deterministic_and_independent_of_batch(extractor):
    transform = SpectralTwoViewTransform(extractor, augmentation="official")
    # 18 clips: 36 views, more than one block of views (32 at 128 frames), so blocks are cut differently below.
    clips = [noise(1.0, i) + tone(200.0 * (i + 1)) for i in range(18)]
    seeds = [sample_seed(3, 1, i) for i in range(18)]
    view0, view1 = transform(clips, seeds)
    again0, again1 = transform([torch.from_numpy(clip) for clip in clips], seeds)
    assert torch.equal(view0, again0) and torch.equal(view1, again1)
    subset0, subset1 = transform([clips[17], clips[1]], [seeds[17], seeds[1]])
    assert torch.equal(subset0, view0[[17, 1]]) and torch.equal(subset1, view1[[17, 1]])
    other0, _ = transform(clips[:1], [seeds[0] + 1])
    assert not torch.equal(other0[0], view0[0])


def test_polarity_does_not_change_features(extractor):
    clip = noise(1.0, 9) + tone(700.0)
    clip = clip - clip.mean()
    features = extractor([clip, -clip], sampling_rate=RATE, return_tensors="pt")["input_values"]
    assert torch.equal(features[0], features[1])


@pytest.mark.parametrize("gain_db", [-12.0, -3.5, 7.0])
def test_gain_shifts_log_mel_by_its_power(extractor, gain_db):
    transform = SpectralTwoViewTransform(extractor)
    clip = noise(1.0, 1)
    plain, gained = render(transform, clip), render(transform, clip, gain_db=gain_db)
    plain, gained = log_units(plain[:98], extractor), log_units(gained[:98], extractor)
    floored = math.log(torch.finfo(torch.float32).eps) + 3  # Mel filter 3 is empty; never near the floor otherwise
    shift = (gained - plain)[plain > floored]
    assert shift.numel() > 0.9 * plain.numel()
    torch.testing.assert_close(shift, torch.full_like(shift, math.log(10 ** (gain_db / 10))), atol=1e-4, rtol=0)


def test_filter_responses_match_scipy():
    signal = pytest.importorskip("scipy.signal")
    frequencies = torch.linspace(0, RATE / 2 * 0.999, 300, dtype=torch.float64)
    for order, cutoff, band in ((2, 100.0, (300.0, 900.0)), (3, 1200.0, (1000.0, 5000.0)), (4, 2400.0, (150, 250))):
        as_one = lambda value: torch.tensor([float(value)], dtype=torch.float64)  # noqa: E731
        ours = butterworth_power_response(frequencies, as_one(order), RATE, cutoff=as_one(cutoff))[0]
        sos = signal.butter(order, cutoff, btype="highpass", fs=RATE, output="sos")
        reference = np.abs(signal.sosfreqz(sos, worN=frequencies.numpy(), fs=RATE)[1]) ** 2
        np.testing.assert_allclose(ours.numpy(), reference, atol=1e-9, rtol=1e-6)
        ours = butterworth_power_response(frequencies, as_one(order), RATE, band=(as_one(band[0]), as_one(band[1])))[0]
        sos = signal.butter(order, band, btype="bandstop", fs=RATE, output="sos")
        reference = np.abs(signal.sosfreqz(sos, worN=frequencies.numpy(), fs=RATE)[1]) ** 2
        np.testing.assert_allclose(ours.numpy(), reference, atol=1e-9, rtol=1e-6)


def mel_centres_hz(extractor: AudioMosaicFeatureExtractor) -> np.ndarray:
    low, high = 1127 * np.log(1 + 20 / 700), 1127 * np.log(1 + RATE / 2 / 700)
    centres = low + (np.arange(extractor.num_mel_bins) + 1) * (high - low) / (extractor.num_mel_bins + 1)
    return 700 * (np.exp(centres / 1127) - 1)


def test_high_pass_and_band_stop_attenuate_their_bands(extractor):
    transform = SpectralTwoViewTransform(extractor)
    clip, centres = noise(1.0, 2), mel_centres_hz(extractor)
    plain = log_units(render(transform, clip)[:98], extractor).mean(dim=0)
    high_passed = log_units(render(transform, clip, highpass_hz=2000.0, highpass_order=4)[:98], extractor).mean(dim=0)
    change_db = (high_passed - plain).numpy() * 10 / math.log(10)
    centres[plain.numpy() < math.log(torch.finfo(torch.float32).eps) + 3] = np.nan  # the empty Mel filter 3
    assert (change_db[centres < 800] < -25).all()
    np.testing.assert_allclose(change_db[centres > 5000], 0.0, atol=0.1)
    stopped = render(transform, clip, bandstop_low_hz=1000.0, bandstop_high_hz=2000.0, bandstop_order=3)
    change_db = (log_units(stopped[:98], extractor).mean(dim=0) - plain).numpy() * 10 / math.log(10)
    assert (change_db[(centres > 1300) & (centres < 1550)] < -20).all()
    np.testing.assert_allclose(change_db[(centres < 300) | (centres > 6000)], 0.0, atol=0.1)


def loud_frames(features: torch.Tensor, extractor: AudioMosaicFeatureExtractor) -> int:
    energy = log_units(features[:98], extractor).exp().sum(dim=1)  # the real frames of a 1 s clip
    return int((energy > energy.max() * 1e-3).sum())


@pytest.mark.parametrize("rate", [0.75, 1.25])
def test_time_stretch_scales_content_length(extractor, rate):
    """A 0.5 s noise burst followed by silence lasts 0.5 / rate s after the stretch (length kept)."""
    transform = SpectralTwoViewTransform(extractor)
    clip = np.concatenate([noise(0.5, 4), np.zeros(RATE // 2, np.float32)])
    plain, stretched = render(transform, clip), render(transform, clip, rate=rate)
    assert abs(loud_frames(stretched, extractor) - loud_frames(plain, extractor) / rate) <= 2


@pytest.mark.parametrize("semitones", [-4.0, -2.0, 2.5, 4.0])
def test_pitch_shift_moves_a_tone_to_the_shifted_tones_bin(extractor, semitones):
    """A shifted tone peaks in the Mel bin of the tone at the shifted frequency (within one bin: the window's main
    lobe keeps its width in Hz when a real tone moves, while the warped bank scales it with the tone), with the same
    total Mel power (the pre-emphasis gain follows the tone)."""
    transform = SpectralTwoViewTransform(extractor)

    def peak_and_power(features: torch.Tensor) -> tuple[int, float]:
        power = log_units(features[:98], extractor).exp()
        return int(power.mean(dim=0).argmax()), float(power.sum(dim=1).mean().log())

    for hz in (440.0, 1500.0):
        shifted = peak_and_power(render(transform, tone(hz), semitones=semitones))
        expected = peak_and_power(extractor(tone(hz * 2 ** (semitones / 12)), sampling_rate=RATE,
                                            return_tensors="pt")["input_values"][0])
        assert abs(shifted[0] - expected[0]) <= 1
        assert abs(shifted[1] - expected[1]) < 0.05
        assert abs(expected[0] - peak_and_power(render(transform, tone(hz)))[0]) >= 2  # a shift large enough to tell


def test_warped_bank_without_shift_is_kaldis():
    bank = warped_mel_bank(torch.zeros(1), 128, 512, RATE)[0]
    torch.testing.assert_close(bank, kaldi_mel_bank(128, 512, RATE).T, atol=5e-5, rtol=0)


@pytest.mark.parametrize("semitones", [-4.0, -1.3, 0.7, 4.0])
def test_warped_bank_keeps_the_extractors_filter_weights(semitones):
    """A flat power spectrum shifted by a = 2^(semitones / 12) has density 1 / a wherever content remains: every Mel
    filter there gets the extractor's weight / a. The narrow low filters (below one FFT bin wide) keep the weights the
    extractor gives them, so a shift never lights up a filter the features leave empty or darkens a lit one."""
    ratio = 2 ** (semitones / 12)
    warped = warped_mel_bank(torch.tensor([semitones]), 128, 512, RATE)[0].double().sum(dim=0)
    extractor = kaldi_mel_bank(128, 512, RATE).double().sum(dim=1)
    low, high = 1127 * math.log(1 + 20 / 700), 1127 * math.log(1 + RATE / 2 / 700)  # Kaldi's Mel range
    centres = 700 * (torch.exp((low + (high - low) / 129 * torch.arange(1, 129)) / 1127) - 1)  # filter centres, Hz
    inside = centres < 0.95 * min(1.0, ratio) * RATE / 2  # away from the band edge a downward shift empties
    torch.testing.assert_close(warped[inside], extractor[inside] / ratio, atol=1e-3, rtol=0.02)
    assert warped[3] == 0 and extractor[3] == 0  # the filter Kaldi's 128-bin bank leaves empty stays empty


def test_noise_matches_gaussian_noise_at_the_snr(extractor):
    """AddGaussianSNR at 10 dB on a tone against real Gaussian noise of the same std, 8 realisations each: same
    log-Mel band means and frame-to-frame spread."""
    transform = SpectralTwoViewTransform(extractor)
    clip = tone(1000.0)
    clip = clip - clip.mean()
    snr_db, realisations = 10.0, 8
    sigma = np.sqrt(np.mean(clip.astype(np.float64) ** 2)) / 10 ** (snr_db / 20)
    noisy = [clip + np.random.default_rng(i).normal(0, sigma, clip.shape).astype(np.float32) for i in range(8)]
    reference = log_units(extractor(noisy, sampling_rate=RATE, return_tensors="pt")["input_values"][:, :98], extractor)
    values = ViewParameters.identity(realisations)
    values.snr_db[:], values.noise_seed[:] = snr_db, torch.arange(realisations)
    spectral = log_units(transform.render([clip] * realisations, values, CPU)[:, :98], extractor)
    real = reference.mean(dim=(0, 1)) > math.log(torch.finfo(torch.float32).eps) + 3  # all but the empty filter
    torch.testing.assert_close(spectral.mean(dim=(0, 1))[real], reference.mean(dim=(0, 1))[real], atol=0.25, rtol=0)
    ratio = spectral.std(dim=1).mean(dim=0)[real] / reference.std(dim=1).mean(dim=0)[real]
    assert ((ratio > 0.8) & (ratio < 1.25)).all()
    assert not torch.equal(spectral[0], spectral[1])  # each seed draws its own noise


def test_probabilities_and_parameter_distributions():
    """Over 2000 clips (4000 views) each transform applies with its Table 8 probability (within 4 sigma)."""
    extractor = AudioMosaicFeatureExtractor.from_preset("speechcommands")
    transform = SpectralTwoViewTransform(extractor, augmentation="official")
    clips, seeds = [np.ones(400, np.float32)] * 2000, [sample_seed(1, 2, i) for i in range(2000)]
    _, parameters = transform.draw(clips, seeds)
    parameters = ViewParameters(**{name: value.numpy() for name, value in vars(parameters).items()})
    applied = {
        "stretch": parameters.rate != 1, "snr": np.isfinite(parameters.snr_db), "gain": parameters.gain_db != 0,
        "highpass": parameters.highpass_order > 0, "bandstop": parameters.bandstop_order > 0,
        "pitch": parameters.semitones != 0,
    }
    for name, mask in applied.items():
        p = TRANSFORM_PROBABILITIES[name]
        assert abs(mask.mean() - p) < 4 * math.sqrt(p * (1 - p) / mask.size), name
    rates = parameters.rate[applied["stretch"]]
    assert rates.min() >= 0.7 and rates.max() <= 1.3 and abs(rates.mean() - 1.0) < 0.02
    orders = parameters.highpass_order[applied["highpass"]]
    assert set(np.unique(orders)) == set(range(BUTTERWORTH_ORDER_RANGE[0], BUTTERWORTH_ORDER_RANGE[1] + 1))
    # Cut-offs are uniform on the mel scale: half of them lie below the mel midpoint (575 Hz, not 1210 Hz).
    mel = lambda hz: 2595 * np.log10(1 + np.asarray(hz) / 700)  # noqa: E731
    below = mel(parameters.highpass_hz[applied["highpass"]]) < np.mean(mel(HIGHPASS_CUTOFF_HZ_RANGE))
    assert abs(below.mean() - 0.5) < 4 * math.sqrt(0.25 / below.size)
    semitones = parameters.semitones[applied["pitch"]]
    assert semitones.min() >= -4 and semitones.max() <= 4
    # A recipe without a transform never applies it.
    _, parameters = SpectralTwoViewTransform(extractor, augmentation="aug2").draw(clips[:200], seeds[:200])
    assert torch.isinf(parameters.snr_db).all() and (parameters.semitones == 0).all()


def test_ranges_are_audiomentations_defaults():
    am = pytest.importorskip("audiomentations")
    assert SNR_DB_RANGE == (am.AddGaussianSNR().min_snr_db, am.AddGaussianSNR().max_snr_db)
    assert GAIN_DB_RANGE == (am.Gain().min_gain_db, am.Gain().max_gain_db)
    high_pass, band_stop = am.HighPassFilter(), am.BandStopFilter()
    assert HIGHPASS_CUTOFF_HZ_RANGE == (high_pass.min_cutoff_freq, high_pass.max_cutoff_freq)
    assert BANDSTOP_CENTRE_HZ_RANGE == (band_stop.min_center_freq, band_stop.max_center_freq)
    assert BANDSTOP_BANDWIDTH_FRACTION_RANGE == (band_stop.min_bandwidth_fraction, band_stop.max_bandwidth_fraction)
    for transform in (high_pass, band_stop):
        assert BUTTERWORTH_ORDER_RANGE == (transform.min_rolloff // 6, transform.max_rolloff // 6)
        assert not transform.zero_phase
    assert PITCH_SEMITONES_RANGE == (am.PitchShift().min_semitones, am.PitchShift().max_semitones)
    assert am.TimeStretch().leave_length_unchanged


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_every_recipe_runs(extractor, augmentation):
    view0, view1 = SpectralTwoViewTransform(extractor, augmentation=augmentation)([noise(1.0)], [3])
    assert view0.shape == view1.shape == (1, extractor.max_length, extractor.num_mel_bins)
    assert torch.isfinite(view0).all() and torch.isfinite(view1).all()


def test_bad_input_is_a_clear_error(extractor):
    with pytest.raises(ValueError, match="Unknown augmentation 'aug5'"):
        SpectralTwoViewTransform(extractor, augmentation="aug5")
    with pytest.raises(ValueError, match="time_stretch_max_rate"):
        SpectralTwoViewTransform(extractor, time_stretch_max_rate=0.5)
    transform = SpectralTwoViewTransform(extractor)
    with pytest.raises(ValueError, match="Empty batch"):
        transform([], [])
    with pytest.raises(ValueError, match="2 waveforms but 1 seeds"):
        transform([noise(1.0), noise(1.0)], [1])
    with pytest.raises(ValueError, match=r"waveform 1: expected a non-empty mono waveform, got shape \(0,\)"):
        transform([noise(1.0), np.zeros(0, np.float32)], [1, 2])
    with pytest.raises(ValueError, match=r"waveform 0: expected a non-empty mono waveform, got shape \(2, 16000\)"):
        transform([np.zeros((2, RATE), np.float32)], [1])
    with pytest.raises(ValueError, match="waveform 0 contains non-finite"):
        transform([np.full(RATE, np.nan, np.float32)], [1])
    with pytest.raises(ValueError, match=r"float32 tensor \(num_frames, 400\)"):
        extractor.power_spectrum(torch.zeros(3, 512))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(extractor):
    transform = SpectralTwoViewTransform(extractor, augmentation="official")
    clips = [noise(1.0, i) + tone(300.0 * (i + 1)) for i in range(6)]
    seeds = [sample_seed(5, 0, i) for i in range(6)]
    for on_cpu, on_gpu in zip(transform(clips, seeds), transform(clips, seeds, device="cuda"), strict=True):
        assert on_gpu.device.type == "cuda"
        torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-3, rtol=0)


def python_hash32(x: int) -> int:
    """Wellons' lowbias32 in plain Python integers: the reference of `hash32`."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_counter_stream_is_lowbias32_and_uniform():
    from scipy import stats

    from audiomosaic_training.spectral_augment import counter_normals, counter_uniforms, hash32, stream_keys

    values = torch.cat([torch.tensor([0, 1, 2**31, 2**32 - 1]), torch.randint(0, 2**32, (5000,))])
    assert hash32(values).tolist() == [python_hash32(v) for v in values.tolist()]
    keys = stream_keys(torch.tensor([sample_seed(1, 0, i) for i in range(200)]))
    assert keys.shape == (200, 2, 3) and len(set(keys.flatten().tolist())) == 1200  # every stream its own key
    uniforms = counter_uniforms(keys[:, :, 0].flatten(), 100).flatten().numpy()
    assert uniforms.min() > 0 and uniforms.max() < 1 and stats.kstest(uniforms, "uniform").pvalue > 1e-3
    normals = counter_normals(keys[:, :, 2].flatten(), 101)
    assert normals.shape == (400, 101) and normals.dtype == torch.float32
    assert stats.kstest(normals.flatten().numpy(), "norm").pvalue > 1e-3
    # Counter-based: a key's first draws do not depend on how many are asked for.
    assert torch.equal(counter_uniforms(keys[:3, 0, 0], 7), counter_uniforms(keys[:3, 0, 0], 20)[:, :7])


def test_device_draws_follow_the_cpu_draws_distributions():
    """The device path's counter-based draws and the CPU path's NumPy draws over 2000 clips: every transform applies
    with the same probability, every parameter and the roll/magnitude have the same distribution (two-sample KS)."""
    from scipy import stats

    transform = SpectralTwoViewTransform(AudioMosaicFeatureExtractor.from_preset("speechcommands"), "official")
    seeds = [sample_seed(4, 0, i) for i in range(2000)]
    lengths = torch.full((2000,), 16000)
    _, cpu = transform.draw([np.ones(16000, np.float32)] * 2000, seeds)
    device = transform.device_draw(torch.tensor(seeds), lengths)
    for name in ("rate", "snr_db", "gain_db", "highpass_hz", "bandstop_low_hz", "bandstop_high_hz", "semitones"):
        ours, theirs = getattr(device, name), getattr(cpu, name)
        identity = float(ViewParameters.identity(1).__getattribute__(name)[0])
        applied, applied_cpu = ours != identity, theirs != identity
        assert abs(applied.double().mean() - applied_cpu.double().mean()) < 0.05, name
        assert stats.ks_2samp(ours[applied].numpy(), theirs[applied_cpu].numpy()).pvalue > 1e-3, name
    for name in ("highpass_order", "bandstop_order"):
        assert torch.equal(torch.unique(getattr(device, name)), torch.unique(getattr(cpu, name)))
    assert stats.ks_2samp(device.magnitude.numpy(), cpu.magnitude.numpy()).pvalue > 1e-3
    assert stats.ks_2samp(device.shift.numpy(), cpu.shift.numpy()).pvalue > 1e-3
    assert device.shift.min() >= 0 and device.shift.max() < 16000
    assert len(set(device.noise_seed.tolist())) == 4000


def test_device_path_is_deterministic_and_independent_of_batch(extractor):
    transform = SpectralTwoViewTransform(extractor, augmentation="official")
    clips = [noise(0.3 + 0.1 * i, i) + tone(200.0 * (i + 1), 0.3 + 0.1 * i) for i in range(6)]
    seeds = torch.tensor([sample_seed(3, 1, i) for i in range(6)])
    from audiomosaic_training.spectral_augment import pad_clips

    batch, lengths = pad_clips(clips)
    view0, view1 = transform.views_from_batch(batch, lengths, seeds)
    assert view0.shape == (6, extractor.max_length, extractor.num_mel_bins) and torch.isfinite(view0).all()
    again = transform.views_from_batch(batch.clone(), lengths, seeds)
    assert torch.equal(again[0], view0) and torch.equal(again[1], view1)
    part, part_lengths = pad_clips([clips[4], clips[1]])  # other padding, other neighbours
    subset0, subset1 = transform.views_from_batch(part, part_lengths, seeds[[4, 1]])
    torch.testing.assert_close(subset0, view0[[4, 1]], atol=1e-5, rtol=0)
    torch.testing.assert_close(subset1, view1[[4, 1]], atol=1e-5, rtol=0)
    pad = float((torch.tensor(0.0) - extractor.mean) / (2 * extractor.std))
    for i, clip in enumerate(clips):  # the padding frames are where the CPU path puts them
        real = 1 + (len(clip) - 400) // 160
        assert (view0[i, real:] == pad).all() and not (view0[i, :real] == pad).all(dim=1).any()


def test_device_path_matches_cpu_path_in_distribution(extractor):
    """Per Mel band, the mean and spread of the device path's views against the CPU path's, within the spread between
    two CPU-path runs with other seeds (the distribution benchmark's `--part paths`, on generated clips)."""
    from audiomosaic_training.spectral_augment import pad_clips

    transform = SpectralTwoViewTransform(extractor, augmentation="official")
    clips = [noise(1.0, i, scale=0.02 * (1 + i % 5)) + tone(150.0 * (1 + i % 7)) for i in range(96)]
    batch, lengths = pad_clips(clips)

    def cpu_views(run):
        return torch.cat(transform(clips, [sample_seed(run, 0, i) for i in range(len(clips))]))[:, :98]

    def device_views(run):
        seeds = torch.tensor([sample_seed(run, 0, i) for i in range(len(clips))])
        return torch.cat(transform.views_from_batch(batch, lengths, seeds))[:, :98]

    def band_gaps(a, b):
        return ((a.mean(dim=(0, 1)) - b.mean(dim=(0, 1))).abs().mean(),
                (a.std(dim=(0, 1)) - b.std(dim=(0, 1))).abs().mean())

    reference = cpu_views(0)
    floor, ours = band_gaps(reference, cpu_views(1)), band_gaps(reference, device_views(2))
    assert ours[0] < 2 * floor[0] + 0.01 and ours[1] < 2 * floor[1] + 0.01, (floor, ours)
