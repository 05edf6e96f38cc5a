"""
Feature extractor class for AudioMosaic.

AudioMosaic consumes 128-bin Kaldi log-Mel filterbanks computed exactly as in the authors' training code
(`dataset/audioset.py`): waveform mean removed, `torchaudio.compliance.kaldi.fbank(htk_compat=True,
use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)`, zero-padded or
truncated in the log-Mel domain to a fixed number of frames, then normalised with `(x - mean) / (2 * std)`.

This file and its sibling `kaldi_audiomosaic.py` (the Kaldi window and Mel bank, which the Hub copies beside it) can be
shipped as Hugging Face Hub remote code: they only import torch, numpy, soundfile, transformers and the standard
library. torchaudio is not needed: the Kaldi Mel bank and the authors' resampler (`torchaudio.functional.resample`
defaults) are reproduced bit for bit.
"""

import functools
import io
import math
import numbers
import os
from typing import NamedTuple

import numpy as np
import soundfile
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PaddingStrategy, TensorType, logging

from .kaldi_audiomosaic import FRAME_LENGTH_MS, LOG_FLOOR, PREEMPHASIS, KaldiConstants, kaldi_constants


logger = logging.get_logger(__name__)

AudioInput = np.ndarray | torch.Tensor | list | tuple | str | os.PathLike

# Frames processed per step. On CPU a block of 1024 frames keeps every intermediate (~2 MiB each) in cache, which
# made the batched computation several times faster than one pass over the whole batch on a 2-core machine
# (benchmarks/RESULTS.md); on GPU the blocks only bound the scratch memory (~0.6 GiB).
_CPU_CHUNK_FRAMES = 1024
_GPU_CHUNK_FRAMES = 65536

# A 2-D array inside a list is read as one multi-channel clip when its smaller dimension is at most this.
_MAX_CHANNELS = 8

# Normalisation statistics and training lengths of the released checkpoints (official `dataset/options.py`).
PRESETS: dict[str, dict[str, float | int]] = {
    "audioset": {"max_length": 1024, "mean": -4.2677393, "std": 4.5689974},
    "esc50": {"max_length": 512, "mean": -6.6268077, "std": 5.358466},
    "speechcommands": {"max_length": 128, "mean": -6.845978, "std": 5.5654526},
}


# Sinc resampling parameters of `torchaudio.functional.resample`'s defaults, which the authors' loader uses.
_RESAMPLE_ZERO_CROSSINGS = 6
_RESAMPLE_ROLLOFF = 0.99


@functools.lru_cache(maxsize=16)
def _sinc_resample_kernel(
    orig_freq: int, new_freq: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, int]:
    """Hann-windowed sinc kernels (new_freq, 1, taps) for rates already divided by their gcd, and the padding width.

    Same float operations as torchaudio's `_get_sinc_resample_kernel` (method "sinc_interp_hann"): one kernel per
    output phase, applied with a strided convolution.
    """
    base_freq = min(orig_freq, new_freq) * _RESAMPLE_ROLLOFF
    width = math.ceil(_RESAMPLE_ZERO_CROSSINGS * orig_freq / base_freq)
    idx = torch.arange(-width, width + orig_freq, dtype=dtype, device=device)[None, None] / orig_freq
    t = torch.arange(0, -new_freq, -1, dtype=dtype, device=device)[:, None, None] / new_freq + idx
    t *= base_freq
    t = t.clamp_(-_RESAMPLE_ZERO_CROSSINGS, _RESAMPLE_ZERO_CROSSINGS)
    window = torch.cos(t * math.pi / _RESAMPLE_ZERO_CROSSINGS / 2) ** 2
    t *= math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels *= window * (base_freq / orig_freq)
    return kernels, width


def resample(waveform: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """Resample `waveform` (..., samples) from `orig_freq` to `new_freq` Hz, as the authors' loader does.

    Band-limited sinc interpolation with a Hann window, 6 zero crossings and roll-off 0.99: the algorithm and the
    float operations of `torchaudio.functional.resample` with its default arguments, so outputs are identical to it
    (benchmarks/bench_frontend_choices.py compares it with torchaudio and soxr). Kernels are cached per rate pair.
    """
    orig_freq = _check_positive_int(orig_freq, "orig_freq")
    new_freq = _check_positive_int(new_freq, "new_freq")
    if not waveform.is_floating_point():
        raise ValueError(f"`waveform` must be a floating-point tensor, got dtype {waveform.dtype}.")
    if orig_freq == new_freq:
        return waveform
    target_length = _resampled_length(waveform.shape[-1], orig_freq, new_freq)
    gcd = math.gcd(orig_freq, new_freq)
    orig_freq, new_freq = orig_freq // gcd, new_freq // gcd
    kernel, width = _sinc_resample_kernel(orig_freq, new_freq, waveform.device, waveform.dtype)
    flat = waveform.reshape(-1, waveform.shape[-1])
    padded = torch.nn.functional.pad(flat, (width, width + orig_freq))
    resampled = torch.nn.functional.conv1d(padded[:, None], kernel, stride=orig_freq)
    resampled = resampled.transpose(1, 2).reshape(flat.shape[0], -1)
    return resampled[..., :target_length].reshape(*waveform.shape[:-1], -1)


class _Scratch(NamedTuple):
    centred: torch.Tensor
    scaled: torch.Tensor
    padded: torch.Tensor
    power: torch.Tensor
    mel: torch.Tensor


def _power_spectrum_block(frames: torch.Tensor, constants: KaldiConstants, scratch: _Scratch) -> torch.Tensor:
    """Kaldi power spectrum of `frames` (..., window_length) in `scratch.power[:n]` (n frames, fft_length // 2).

    The time-domain steps repeat torchaudio's operations in the same order so that the windowed frames are
    bit-identical to `kaldi.fbank`'s: the power of weak FFT bins is computed from a difference of large numbers,
    so any reordering there moves low-energy log-Mel values by up to a few 1e-4. After the FFT, rounding
    differences only change values relatively (~1e-7), so cheaper formulations are used there.
    """
    n = frames.numel() // frames.shape[-1]
    fft_length = constants.fft_length
    centred = scratch.centred[:n]
    torch.sub(frames, frames.mean(dim=-1, keepdim=True), out=centred.view(frames.shape))
    # Pre-emphasis, Kaldi style: y[j] = x[j] - 0.97 x[j - 1], and the first sample uses itself as predecessor.
    scaled = torch.mul(centred, PREEMPHASIS, out=scratch.scaled[:n])
    padded = scratch.padded[:n]
    emphasised = padded[:, : constants.window_length]
    torch.sub(centred[:, 1:], scaled[:, :-1], out=emphasised[:, 1:])
    torch.sub(centred[:, :1], scaled[:, :1], out=emphasised[:, :1])
    emphasised.mul_(constants.window)
    # The tail of `padded` beyond window_length stays zero: that is the zero-padding to fft_length.
    spectrum = torch.view_as_real(torch.fft.rfft(padded)).flatten(1).square_()
    # Interleaved (re^2, im^2) pairs summed through strided views: much faster than a sum over a size-2 dim.
    return torch.add(spectrum[:, 0:fft_length:2], spectrum[:, 1:fft_length:2], out=scratch.power[:n])


def _log_mel_block(frames: torch.Tensor, out: torch.Tensor, constants: KaldiConstants, scratch: _Scratch) -> None:
    """Kaldi log-Mel energies of `frames` (..., window_length) written into the contiguous `out` (..., num_mel_bins)."""
    n = out.numel() // out.shape[-1]
    _power_spectrum_block(frames, constants, scratch)
    # The product always runs over every scratch row (rows past n are stale but finite): BLAS picks different
    # kernels for small row counts, and a fixed shape keeps each frame's result independent of how many frames
    # share its block, i.e. of the rest of the batch.
    for start, end, low, high, block in constants.mel_groups:
        torch.matmul(scratch.power[:, low:high], block, out=scratch.mel[:, start:end])
    mel = out.view(n, out.shape[-1])
    torch.clamp_min(scratch.mel[:n], LOG_FLOOR, out=mel).log_()


def _read_with_soundfile(source: str | io.BytesIO, name: str) -> tuple[np.ndarray, int]:
    try:
        data, file_rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"Could not decode audio {name}: {error}") from error
    if data.size == 0:
        raise ValueError(f"Audio {name} contains no samples.")
    return data.T, file_rate


def _mono_at_rate(channels: np.ndarray, rate: int, sampling_rate: int) -> np.ndarray:
    """As the authors' loader: resample every channel of (channels, samples) first, then average the channels."""
    waveform = torch.from_numpy(np.ascontiguousarray(channels, dtype=np.float32))
    if rate != sampling_rate:
        waveform = resample(waveform, rate, sampling_rate)
    return waveform.mean(dim=0).numpy()


def load_audio(path: str | os.PathLike, sampling_rate: int = 16000) -> np.ndarray:
    """Read an audio file with soundfile (wav, flac, ogg, ...) as float32 mono at `sampling_rate`.

    Follows the authors' loader: resample every channel with `resample` (torchaudio's default sinc resampling)
    when the file rate differs, then average the channels.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the path is not a regular file, cannot be decoded, or holds no samples.
    """
    path = os.fspath(path)
    sampling_rate = _check_positive_int(sampling_rate, "sampling_rate")
    if not os.path.exists(path):
        raise FileNotFoundError(f"Audio file not found: {path!r}.")
    if not os.path.isfile(path):
        raise ValueError(f"Audio path {path!r} is not a regular file.")
    channels, file_rate = _read_with_soundfile(path, f"file {path!r}")
    return _mono_at_rate(channels, file_rate, sampling_rate)


def decode_audio(value: str | os.PathLike | dict, sampling_rate: int = 16000) -> np.ndarray:
    """Mono float32 waveform at `sampling_rate` from a path, a `datasets` audio dict with `path` and/or `bytes`
    (an undecoded `Audio` column), or a decoded `{"array", "sampling_rate"}` dict ((samples,) or (channels,
    samples)). Raises `ValueError`/`FileNotFoundError` naming the file on failure."""
    sampling_rate = _check_positive_int(sampling_rate, "sampling_rate")
    if isinstance(value, (str, os.PathLike)):
        return load_audio(value, sampling_rate=sampling_rate)
    if isinstance(value, dict) and value.get("array") is not None:
        if value.get("sampling_rate") is None:
            raise ValueError("A decoded audio dict needs both `array` and `sampling_rate`.")
        channels = np.asarray(value["array"], dtype=np.float32)
        return _mono_at_rate(channels[None] if channels.ndim == 1 else channels, int(value["sampling_rate"]),
                             sampling_rate)
    if isinstance(value, dict) and value.get("bytes"):
        channels, rate = _read_with_soundfile(io.BytesIO(value["bytes"]), repr(value.get("path") or "<bytes>"))
        return _mono_at_rate(channels, rate, sampling_rate)
    if isinstance(value, dict) and value.get("path"):
        return load_audio(value["path"], sampling_rate=sampling_rate)
    raise ValueError(
        f"Cannot read audio from a {type(value).__name__} ({str(value)[:200]}); expected a file path, a dict with "
        "`path`/`bytes`, or a dict with `array` and `sampling_rate`."
    )


def average_windows(
    values: torch.Tensor, window_clip_index: torch.Tensor, num_clips: int | None = None
) -> torch.Tensor:
    """Average per-window outputs (e.g. logits of shape (num_windows, num_classes)) into per-clip outputs.

    `window_clip_index` is the `window_clip_index` returned with `long_audio="window"`; the result has shape
    (num_clips, *values.shape[1:]) with `num_clips` defaulting to `window_clip_index.max() + 1`.
    """
    window_clip_index = window_clip_index.to(values.device)
    if num_clips is None:
        num_clips = int(window_clip_index.max()) + 1
    sums = values.new_zeros((num_clips, *values.shape[1:])).index_add_(0, window_clip_index, values)
    counts = torch.bincount(window_clip_index, minlength=num_clips).to(values.dtype)
    return sums / counts.view(-1, *([1] * (values.dim() - 1)))


class _Clip(NamedTuple):
    samples: torch.Tensor  # float32, (samples,) or (channels, samples)
    sampling_rate: int
    name: str  # used in error messages
    from_file: bool = False


class AudioMosaicFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Constructs an AudioMosaic feature extractor.

    This feature extractor inherits from [`~feature_extraction_sequence_utils.SequenceFeatureExtractor`] which
    contains most of the main methods. Users should refer to this superclass for more information regarding those
    methods.

    It computes the Kaldi log-Mel filterbank the AudioMosaic checkpoints were trained on (numerically equal to
    `torchaudio.compliance.kaldi.fbank` on the mean-removed waveform) for a whole batch at once, on CPU or CUDA,
    pads/truncates it in the log-Mel domain and normalises it with `(x - mean) / (2 * std)`.

    Use [`~AudioMosaicFeatureExtractor.from_preset`] for the statistics of the released checkpoints.

    Args:
        feature_size (`int`, *optional*, defaults to 128):
            The feature dimension of the extracted features, i.e. the number of Mel bins.
        sampling_rate (`int`, *optional*, defaults to 16000):
            The sampling rate (Hz) the model expects; other rates are resampled to it.
        num_mel_bins (`int`, *optional*, defaults to 128):
            Number of Mel-frequency bins. Must equal `feature_size`.
        max_length (`int`, *optional*, defaults to 1024):
            Number of frames (10 ms each) to pad/truncate the features to.
        padding_value (`float`, *optional*, defaults to 0.0):
            Log-Mel value of padded frames *before* normalisation, as in the authors' training data; with
            `do_normalize=True` a padded frame therefore holds `(padding_value - mean) / (2 * std)`.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to apply `(x - mean) / (2 * std)`.
        mean (`float`, *optional*, defaults to -4.2677393):
            Mean of the log-Mel features (AudioSet statistics by default).
        std (`float`, *optional*, defaults to 4.5689974):
            Standard deviation of the log-Mel features (AudioSet statistics by default).
        return_attention_mask (`bool`, *optional*, defaults to `False`):
            Whether [`~AudioMosaicFeatureExtractor.__call__`] returns the frame-level `attention_mask` by default
            (it is always returned with `padding="longest"` or `long_audio="window"`).
    """

    model_input_names = ["input_values", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 128,
        sampling_rate: int = 16000,
        num_mel_bins: int = 128,
        max_length: int = 1024,
        padding_value: float = 0.0,
        do_normalize: bool = True,
        mean: float = -4.2677393,
        std: float = 4.5689974,
        return_attention_mask: bool = False,
        **kwargs,
    ):
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        if num_mel_bins != feature_size:
            raise ValueError(
                f"`feature_size` ({feature_size}) is the number of Mel bins and must equal `num_mel_bins` "
                f"({num_mel_bins})."
            )
        if self.padding_side != "right":
            raise ValueError(
                f"AudioMosaic pads at the end of the clip, as in training; `padding_side` must be 'right', "
                f"got {self.padding_side!r}."
            )
        # Checked here so that a bad preprocessor_config.json fails when it is loaded, not at the first clip.
        _check_positive_int(sampling_rate, "sampling_rate")
        _check_positive_int(feature_size, "feature_size")
        for name, value in (("mean", mean), ("padding_value", padding_value), ("std", std)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
        if not std > 0:
            raise ValueError(f"`std` must be positive, got {std}.")
        self.num_mel_bins = num_mel_bins
        self.max_length = _check_positive_int(max_length, "max_length")
        self.do_normalize = do_normalize
        self.mean = mean
        self.std = std

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "AudioMosaicFeatureExtractor":
        """Feature extractor matching a released checkpoint family: "audioset", "esc50" or "speechcommands".

        `kwargs` override the preset (e.g. `return_attention_mask=True`).
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **kwargs})

    def power_spectrum(self, frames: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
        """Kaldi power spectrum (num_frames, fft_length // 2) of waveform frames (num_frames, window_length).

        The steps of the features before the Mel bank (per-frame DC removal, pre-emphasis, Hann window, |rfft|^2;
        the Nyquist bin, which the bank does not weigh, is left out), with the same operations, on the frames'
        device. Spectral-domain augmentation (`audiomosaic_training.spectral_augment`) uses it to filter and warp the
        spectrum before its own Mel product; the features themselves do not go through this method.

        `chunk_frames` frames are processed at a time (default: the extractor's own blocks for the device); larger
        chunks issue fewer operations for more scratch memory (~8.3 KB per frame).
        """
        constants = kaldi_constants(self.num_mel_bins, self.sampling_rate, frames.device)
        if frames.dim() != 2 or frames.shape[1] != constants.window_length or frames.dtype != torch.float32:
            raise ValueError(
                f"`frames` must be a float32 tensor (num_frames, {constants.window_length}), got "
                f"{frames.dtype} {tuple(frames.shape)}."
            )
        chunk = chunk_frames or (_CPU_CHUNK_FRAMES if frames.device.type == "cpu" else _GPU_CHUNK_FRAMES)
        rows = min(chunk, frames.shape[0])
        scratch = _Scratch(
            centred=frames.new_empty(rows, constants.window_length),
            scaled=frames.new_empty(rows, constants.window_length),
            padded=frames.new_zeros(rows, constants.fft_length),
            power=frames.new_empty(rows, constants.fft_length // 2),
            mel=frames.new_empty(0),  # no Mel product here
        )
        if rows == frames.shape[0]:  # one chunk: its scratch is the result
            return _power_spectrum_block(frames, constants, scratch)
        power = frames.new_empty(frames.shape[0], constants.fft_length // 2)
        for start in range(0, frames.shape[0], chunk):
            block = frames[start : start + chunk]
            power[start : start + chunk] = _power_spectrum_block(block, constants, scratch)
        return power

    def __call__(
        self,
        raw_speech: AudioInput,
        sampling_rate: int | None = None,
        padding: bool | str | PaddingStrategy = "max_length",
        max_length: int | None = None,
        truncation: bool | None = None,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | TensorType | None = None,
        device: str | torch.device | None = None,
        long_audio: str | None = None,
        window_hop: int | None = None,
    ) -> BatchFeature:
        """
        Featurize one or several clips.

        Args:
            raw_speech (`np.ndarray`, `torch.Tensor`, `list`, `str` or `os.PathLike`):
                - one clip: a 1-D numpy array / torch tensor / list of floats, or an audio file path;
                - a batch: a 2-D array or tensor (batch, samples), or a list whose items are 1-D clips, file
                  paths, or 2-D multi-channel clips. A 2-D item of a list is one multi-channel clip whose smaller
                  dimension (at most 8) is the channel axis; channels are averaged as in the authors' loader. A
                  top-level 2-D array is always a batch of mono clips: wrap a single multi-channel clip in a list.
                float16/32/64 samples are used as they are; int16 and int32 arrays are scaled to [-1, 1] by 2**15
                and 2**31. Python lists are read as float sample values.
            sampling_rate (`int`, *optional*):
                Rate of the array inputs; they are resampled to `self.sampling_rate` with `resample` (torchaudio's
                default sinc resampling, without torchaudio) when it differs. File paths are read at their own rate.
                It is strongly recommended to pass it to prevent silent errors.
            padding (`str`, `bool` or [`~utils.PaddingStrategy`], *optional*, defaults to `"max_length"`):
                `"max_length"`: every clip is padded/truncated to `max_length` frames (how the checkpoints were
                trained). `"longest"` (or `True`): pad to the longest clip of the batch (still truncated to
                `max_length` unless `truncation=False`); the attention mask is then returned.
            max_length (`int`, *optional*):
                Overrides `self.max_length` for this call.
            truncation (`bool`, *optional*):
                Keep at most `max_length` frames per clip (the default). With `False` no frame is dropped and the
                output length is at least the longest clip. Left unset, cutting a clip logs a warning once (e.g. a
                long recording given to `pipeline("audio-classification")`, which only sees the first `max_length`
                frames); pass `True` to truncate silently.
            pad_to_multiple_of (`int`, *optional*):
                Round the number of frames up to a multiple of this (e.g. 16, the patch size).
            return_attention_mask (`bool`, *optional*):
                Return `attention_mask` (batch, frames), 1 for real frames and 0 for padding. Defaults to
                `self.return_attention_mask`, and to `True` with `padding="longest"` or `long_audio="window"`.
            return_tensors (`str` or [`~utils.TensorType`], *optional*):
                `"pt"` for torch tensors (left on the compute device), `"np"` or `None` for numpy arrays.
            device (`str` or `torch.device`, *optional*):
                Device to compute on. Defaults to the device of the input tensors (CPU for anything else).
            long_audio (`str`, *optional*):
                `"window"` splits every clip into overlapping windows of `max_length` frames, `window_hop` frames
                apart; `input_values` is then (num_windows_total, max_length, num_mel_bins) and
                `window_clip_index` (num_windows_total,) gives the clip of each window. The last window of a clip
                is padded (see `attention_mask`). `padding`, `truncation` and `pad_to_multiple_of` do not apply.
                Average per-window logits per clip with [`average_windows`], i.e.
                `torch.zeros(B, C).index_add_(0, idx, logits) / counts[:, None]`.
            window_hop (`int`, *optional*):
                Hop between windows in frames, in [1, max_length]; defaults to `max_length // 2`.

        Returns:
            [`BatchFeature`] with `input_values` (float32, (batch, frames, num_mel_bins)) and, when requested,
            `attention_mask` (int32, (batch, frames)) and `window_clip_index` (int64).
        """
        max_length = self.max_length if max_length is None else _check_positive_int(max_length, "max_length")
        padding_strategy = _padding_strategy(padding)
        if pad_to_multiple_of is not None:
            _check_positive_int(pad_to_multiple_of, "pad_to_multiple_of")
        if return_tensors not in (None, "np", "pt", TensorType.NUMPY, TensorType.PYTORCH):
            raise ValueError(f"`return_tensors` must be 'pt', 'np' or None, got {return_tensors!r}.")
        if long_audio not in (None, "window"):
            raise ValueError(f"`long_audio` must be None or 'window', got {long_audio!r}.")
        if long_audio == "window":
            window_hop = max_length // 2 if window_hop is None else _check_positive_int(window_hop, "window_hop")
            if window_hop > max_length:
                raise ValueError(
                    f"`window_hop` ({window_hop}) must not exceed `max_length` ({max_length}): frames would be "
                    "skipped."
                )
        elif window_hop is not None:
            raise ValueError("`window_hop` only applies with `long_audio='window'`.")
        if sampling_rate is not None:
            sampling_rate = _check_positive_int(sampling_rate, "sampling_rate")
        if device is not None:
            device = check_device(device)

        clips = self._parse_inputs(raw_speech, sampling_rate)
        if sampling_rate is None and any(not clip.from_file for clip in clips):
            logger.warning(
                f"It is strongly recommended to pass the `sampling_rate` argument to `{self.__class__.__name__}()`. "
                "Failing to do so can result in silent errors that might be hard to debug."
            )
        if device is None:
            device = next((clip.samples.device for clip in clips if clip.samples.device.type != "cpu"), None)
            device = device or torch.device("cpu")

        waveforms, means = self._prepare_waveforms(clips)
        constants = kaldi_constants(self.num_mel_bins, self.sampling_rate, device)
        num_frames = [1 + (w.shape[0] - constants.window_length) // constants.window_shift for w in waveforms]

        window_clip_index = None
        if long_audio == "window":
            windows_per_clip = [1 + math.ceil(max(frames - max_length, 0) / window_hop) for frames in num_frames]
            num_rows = max((count - 1) * window_hop + max_length for count in windows_per_clip)
            features, valid = self._log_mel(waveforms, means, num_frames, num_rows, device)
            counts = torch.tensor(windows_per_clip, device=device)
            window_clip_index = torch.repeat_interleave(torch.arange(len(waveforms), device=device), counts)
            first_window = torch.cumsum(counts, 0) - counts
            starts = (
                torch.arange(len(window_clip_index), device=device) - first_window[window_clip_index]
            ) * window_hop
            frame_index = starts[:, None] + torch.arange(max_length, device=device)
            input_values = features[window_clip_index[:, None], frame_index]
            attention_mask = valid[window_clip_index[:, None], frame_index]
        else:
            if truncation is None and max(num_frames) > max_length:
                logger.warning_once(
                    f"{self.__class__.__name__}: audio longer than max_length ({max_length} frames = "
                    f"{max_length / 100:g} s) is truncated to its first {max_length} frames; only they are classified "
                    "or embedded (this is what pipeline('audio-classification') does with long audio). For long "
                    "recordings use long_audio='window' with average_windows, or the segment timeline of "
                    "modeling_audiomosaic.embeddings.classify_segments / `audiomosaic classify --timeline`. Pass "
                    "truncation=True to truncate without this warning."
                )
            if truncation is not False:
                num_frames = [min(frames, max_length) for frames in num_frames]
            longest = max(num_frames)
            num_rows = longest if padding_strategy == PaddingStrategy.LONGEST else max(max_length, longest)
            if pad_to_multiple_of is not None:
                num_rows = math.ceil(num_rows / pad_to_multiple_of) * pad_to_multiple_of
            input_values, attention_mask = self._log_mel(waveforms, means, num_frames, num_rows, device)

        if return_attention_mask is None:
            return_attention_mask = (
                self.return_attention_mask or padding_strategy == PaddingStrategy.LONGEST or long_audio == "window"
            )
        outputs = {"input_values": input_values}
        if return_attention_mask:
            outputs["attention_mask"] = attention_mask.to(torch.int32)
        if window_clip_index is not None:
            outputs["window_clip_index"] = window_clip_index
        if return_tensors in ("pt", TensorType.PYTORCH):
            return BatchFeature(outputs, tensor_type="pt")
        return BatchFeature({key: value.cpu().numpy() for key, value in outputs.items()})

    def _parse_inputs(self, raw_speech: AudioInput, sampling_rate: int | None) -> list[_Clip]:
        """Split the input into float32 clips (mono or multi-channel), validating types, shapes and dtypes."""
        array_rate = self.sampling_rate if sampling_rate is None else sampling_rate
        if raw_speech is None:
            raise ValueError("`raw_speech` is None; expected audio samples, a file path, or a list of them.")
        if isinstance(raw_speech, (str, os.PathLike)):
            return [self._load_file(raw_speech, 0)]
        if isinstance(raw_speech, (np.ndarray, torch.Tensor)):
            if raw_speech.ndim == 1:
                return [_Clip(_to_float_tensor(raw_speech, "clip 0"), array_rate, "clip 0")]
            if raw_speech.ndim == 2:
                if raw_speech.shape[0] == 0:
                    raise ValueError("Empty batch: the input array has shape (0, samples).")
                return [
                    _Clip(_to_float_tensor(row, f"clip {i}"), array_rate, f"clip {i}")
                    for i, row in enumerate(raw_speech)
                ]
            raise ValueError(
                f"Got a {raw_speech.ndim}-D array of shape {tuple(raw_speech.shape)}; expected a 1-D clip, a 2-D "
                "batch (batch, samples), or a list of (channels, samples) arrays for multi-channel audio."
            )
        if isinstance(raw_speech, (list, tuple)):
            if len(raw_speech) == 0:
                raise ValueError("Empty input list; expected at least one clip.")
            if all(isinstance(value, numbers.Number) for value in raw_speech):
                return [_Clip(_list_to_tensor(raw_speech, "clip 0"), array_rate, "clip 0")]
            clips = []
            for i, item in enumerate(raw_speech):
                name = f"clip {i}"
                if isinstance(item, (str, os.PathLike)):
                    clips.append(self._load_file(item, i))
                elif isinstance(item, (np.ndarray, torch.Tensor)):
                    clips.append(_Clip(_to_float_tensor(item, name, allow_channels=True), array_rate, name))
                elif isinstance(item, (list, tuple)):
                    clips.append(_Clip(_list_to_tensor(item, name), array_rate, name))
                else:
                    raise ValueError(
                        f"{name} has unsupported type {type(item).__name__}; expected a numpy array, a torch tensor, "
                        "a list of floats or an audio file path."
                    )
            return clips
        raise ValueError(
            f"Unsupported input type {type(raw_speech).__name__}; expected a numpy array, a torch tensor, a list of "
            "floats, an audio file path, or a list of those."
        )

    def _load_file(self, path: str | os.PathLike, index: int) -> _Clip:
        samples = torch.from_numpy(load_audio(path, self.sampling_rate))
        return _Clip(samples, self.sampling_rate, f"clip {index} ({os.fspath(path)!r})", from_file=True)

    def _prepare_waveforms(self, clips: list[_Clip]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Resample, downmix and compute the mean of every clip, after checking them all.

        Every check happens before any signal processing so that bad input fails with a clear message.
        """
        window_length = int(self.sampling_rate * FRAME_LENGTH_MS / 1000)
        # A clip's mean is finite exactly when all its samples are (barring float32 overflow), which is ~10x cheaper
        # than an element-wise check. One stacked test keeps CUDA inputs to a single synchronisation.
        raw_means = [clip.samples.mean() for clip in clips]
        finite = torch.stack([mean.to(raw_means[0].device) for mean in raw_means]).isfinite().tolist()
        for clip, is_finite in zip(clips, finite, strict=True):
            if not is_finite:
                bad = int((~clip.samples.isfinite()).sum())
                if bad == 0:
                    raise ValueError(
                        f"{clip.name}: sample values are so large that their sum overflows float32; expected "
                        "audio roughly in [-1, 1]."
                    )
                raise ValueError(
                    f"{clip.name} contains {bad} non-finite sample(s) (NaN or ±Inf) out of {clip.samples.shape[-1]}; "
                    "expected finite audio samples."
                )
        for clip in clips:
            length = _resampled_length(clip.samples.shape[-1], clip.sampling_rate, self.sampling_rate)
            if length < window_length:
                resampled = (
                    f" (after resampling from {clip.sampling_rate} Hz)"
                    if clip.sampling_rate != self.sampling_rate
                    else ""
                )
                raise ValueError(
                    f"{clip.name} is too short: {length} samples at {self.sampling_rate} Hz{resampled}; "
                    f"expected at least one {FRAME_LENGTH_MS:g} ms frame = {window_length} samples."
                )

        waveforms, means = [], []
        for clip, raw_mean in zip(clips, raw_means, strict=True):
            samples = clip.samples
            if clip.sampling_rate != self.sampling_rate:
                samples = resample(samples, clip.sampling_rate, self.sampling_rate)
            # As in the authors' loader: resample first, then average the channels.
            if samples.dim() == 2:
                samples = samples.mean(dim=0)
            waveforms.append(samples)
            # The mean the authors subtract is that of the final mono clip; reuse the one computed above if unchanged.
            means.append(raw_mean if samples is clip.samples else samples.mean())
        return waveforms, means

    def _log_mel(
        self,
        waveforms: list[torch.Tensor],
        means: list[torch.Tensor],
        num_frames: list[int],
        num_rows: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised, padded log-Mel features (batch, num_rows, num_mel_bins) and the valid-frame mask.

        `num_frames[i] <= num_rows` is the number of real frames kept for clip i. The mean-removed clips are laid
        out in one zero-filled buffer, each in a slot just long enough for `num_rows` frames, so that the frames of
        the whole batch are one strided view (batch, num_rows, window_length). A real frame only reads its own
        clip's samples, so it does not depend on the rest of the batch; the other rows are overwritten with padding.
        """
        constants = kaldi_constants(self.num_mel_bins, self.sampling_rate, device)
        batch_size = len(waveforms)
        shift, window_length = constants.window_shift, constants.window_length
        slot = (num_rows - 1) * shift + window_length
        # The buffer lives on the compute device: host clips are copied straight into it, which on GPU avoids
        # filling and copying a host-side buffer first.
        buffer = torch.zeros(batch_size * slot, device=device)
        for i, (waveform, mean, frames) in enumerate(zip(waveforms, means, num_frames, strict=True)):
            used = (frames - 1) * shift + window_length
            # Per-clip mean removal as the authors do (`waveform - waveform.mean()`, mean over the whole clip even
            # when it is truncated); Kaldi's per-frame DC removal then follows in `_log_mel_block`.
            torch.sub(waveform[:used].to(device), mean.to(device), out=buffer[i * slot : i * slot + used])
        frames_view = buffer.as_strided((batch_size, num_rows, window_length), (slot, shift, 1))

        valid = torch.arange(num_rows, device=device) < torch.tensor(num_frames, device=device)[:, None]
        # Padding is the log-Mel value `padding_value` (0 in training) *before* normalisation, exactly like the
        # authors' zero-padded training data; compute its normalised value with the same float32 operations.
        pad = torch.tensor(self.padding_value, dtype=torch.float32)
        if self.do_normalize:
            pad = (pad - self.mean) / (2 * self.std)
        pad = float(pad)

        # Blocks of about `chunk` frames: several whole clips when they are short, else part of one clip. Each block
        # is a contiguous slice of the output.
        chunk = _CPU_CHUNK_FRAMES if device.type == "cpu" else _GPU_CHUNK_FRAMES
        if num_rows >= chunk:
            blocks = [
                (i, i + 1, r, min(r + chunk, num_rows)) for i in range(batch_size) for r in range(0, num_rows, chunk)
            ]
        else:
            clips_per_block = chunk // num_rows
            blocks = [
                (i, min(i + clips_per_block, batch_size), 0, num_rows) for i in range(0, batch_size, clips_per_block)
            ]
        # On CPU the scratch always has `chunk` rows so that the Mel product has a fixed shape (see
        # `_log_mel_block`); on GPU it is sized to the largest block to save memory.
        rows = max((end - start) * (row_end - row_start) for start, end, row_start, row_end in blocks)
        rows = chunk if device.type == "cpu" else rows
        scratch = _Scratch(
            centred=torch.empty(rows, window_length, device=device),
            scaled=torch.empty(rows, window_length, device=device),
            padded=torch.zeros(rows, constants.fft_length, device=device),
            power=torch.zeros(rows, constants.fft_length // 2, device=device),
            mel=torch.empty(rows, self.num_mel_bins, device=device),
        )
        features = torch.empty(batch_size, num_rows, self.num_mel_bins, device=device)
        for start, end, row_start, row_end in blocks:
            block = features[start:end, row_start:row_end]
            _log_mel_block(frames_view[start:end, row_start:row_end], block, constants, scratch)
            # Normalise and pad while the block is still in cache.
            if self.do_normalize:
                block.sub_(self.mean).div_(2 * self.std)
            block.masked_fill_(~valid[start:end, row_start:row_end, None], pad)
        return features, valid


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value).is_integer() or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def check_device(device: str | torch.device) -> torch.device:
    """`torch.device(device)`, with a clear `ValueError` for an unknown name or cuda without a GPU."""
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"Invalid `device` {device!r}: {error}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device={device}` was requested but torch.cuda.is_available() is False.")
    if device.type == "cuda" and device.index is None:
        # Input tensors report "cuda:N"; resolve the index so devices compare (and cache) consistently.
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _padding_strategy(padding: bool | str | PaddingStrategy) -> PaddingStrategy:
    if padding is True or padding in ("longest", PaddingStrategy.LONGEST):
        return PaddingStrategy.LONGEST
    if padding in ("max_length", PaddingStrategy.MAX_LENGTH):
        return PaddingStrategy.MAX_LENGTH
    raise ValueError(
        f"Unknown `padding` value {padding!r}; expected 'max_length' (fixed length, the default), 'longest' or True "
        "(pad to the longest clip). Features of a batch always share one length, so 'do_not_pad' is not supported."
    )


def _resampled_length(length: int, orig_freq: int, new_freq: int) -> int:
    """Output length of `resample`, with its float32 arithmetic."""
    if orig_freq == new_freq:
        return length
    gcd = math.gcd(orig_freq, new_freq)
    return int(torch.ceil(torch.as_tensor(new_freq // gcd * length / (orig_freq // gcd))))


def _list_to_tensor(values: list | tuple, name: str) -> torch.Tensor:
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} could not be read as a list of float samples: {error}") from error
    return _to_float_tensor(array, name, allow_channels=True)


def _to_float_tensor(samples: np.ndarray | torch.Tensor, name: str, allow_channels: bool = False) -> torch.Tensor:
    """float32 tensor of shape (samples,) or (channels, samples); int16/int32 are scaled to [-1, 1]."""
    if samples.ndim == 0 or samples.ndim > 2 or (samples.ndim == 2 and not allow_channels):
        raise ValueError(
            f"{name} has shape {tuple(samples.shape)}; expected a 1-D clip (samples,) or, inside a list, a 2-D "
            f"multi-channel clip with at most {_MAX_CHANNELS} channels."
        )
    if samples.ndim == 2:
        if min(samples.shape) > _MAX_CHANNELS:
            raise ValueError(
                f"{name} has shape {tuple(samples.shape)}: neither dimension looks like channels (at most "
                f"{_MAX_CHANNELS}); pass a batch as a 2-D array or a list of 1-D clips, or multi-channel clips as "
                "(channels, samples) / (samples, channels)."
            )
        if samples.shape[0] > samples.shape[1]:
            # Copy to the (channels, samples) layout the authors' loader produces: the channel mean is then
            # summed in the same order, and even 1-ulp differences in the waveform show in weak log-Mel bins.
            samples = samples.T.copy() if isinstance(samples, np.ndarray) else samples.T.contiguous()
    if samples.shape[-1] == 0:
        raise ValueError(f"{name} is empty (0 samples); expected at least one 25 ms frame of audio.")

    if isinstance(samples, torch.Tensor):
        samples = samples.detach()
        if samples.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            return samples.float()
        if samples.dtype == torch.int16:
            return samples.float() / 2**15
        if samples.dtype == torch.int32:
            return (samples.double() / 2**31).float()
        raise ValueError(f"{name} has unsupported dtype {samples.dtype}; expected a float, int16 or int32 tensor.")

    if samples.dtype.kind == "f":
        array = samples.astype(np.float32, copy=False)
    elif samples.dtype == np.int16:
        array = samples.astype(np.float32) / np.float32(2**15)
    elif samples.dtype == np.int32:
        array = (samples / 2**31).astype(np.float32)
    else:
        raise ValueError(f"{name} has unsupported dtype {samples.dtype}; expected a float, int16 or int32 array.")
    # torch.from_numpy warns on read-only arrays (e.g. np.frombuffer); nothing here writes to them, but copy anyway
    # rather than hide the warning.
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


__all__ = ["AudioMosaicFeatureExtractor", "PRESETS", "average_windows", "decode_audio", "load_audio", "resample"]
