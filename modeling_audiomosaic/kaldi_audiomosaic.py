"""The Kaldi filterbank maths of the AudioMosaic front end: the framing constants, the window and Kaldi's triangular
Mel bank, exactly as `torchaudio.compliance.kaldi.fbank` (which the authors' training code called) computes them.

Shared by the feature extractor (`feature_extraction_audiomosaic.py`, which imports this file relatively: the Hub
copies it beside the extractor as remote code) and by the training package's spectral augmentation
(`training/spectral_augment.py`), which renders augmented views with the same bank. Only torch and the standard
library are needed.
"""

import functools
import math
from typing import NamedTuple

import torch


# Kaldi framing used by the authors (torchaudio defaults): 25 ms windows every 10 ms, FFT size rounded up to a
# power of two, pre-emphasis 0.97, lowest filter edge 20 Hz, highest = Nyquist.
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
PREEMPHASIS = 0.97
LOW_FREQ = 20.0
# Kaldi's (and torchaudio's) floor before the log: std::numeric_limits<float>::epsilon().
LOG_FLOOR = torch.finfo(torch.float32).eps

# Number of contiguous groups of Mel filters multiplied separately: each group only touches the FFT bins under its
# filters (13% of the dense (256 x 128) bank), which made the Mel product ~3x faster on CPU.
MEL_GROUPS = 8


class KaldiConstants(NamedTuple):
    """Framing and Mel bank of one (num_mel_bins, sampling_rate, device) configuration."""

    window_length: int
    window_shift: int
    fft_length: int
    window: torch.Tensor
    # (first filter, end filter, first FFT bin, end FFT bin, (bins, filters) block of the transposed Mel bank)
    mel_groups: tuple[tuple[int, int, int, int, torch.Tensor], ...]


@functools.lru_cache(maxsize=16)
def kaldi_constants(num_mel_bins: int, sampling_rate: int, device: torch.device) -> KaldiConstants:
    """Window and Mel bank for one configuration, cached per device (everything is computed in float32)."""
    window_length = int(sampling_rate * FRAME_LENGTH_MS / 1000)
    window_shift = int(sampling_rate * FRAME_SHIFT_MS / 1000)
    fft_length = 1 << (window_length - 1).bit_length()
    # Kaldi's "hanning" is the symmetric Hann window 0.5 - 0.5 cos(2 pi n / (N - 1)).
    window = torch.hann_window(window_length, periodic=False, dtype=torch.float32, device=device)
    # fft_length // 2 columns: the Nyquist bin gets no weight in Kaldi's bank, so it is never computed below.
    mel_bank = kaldi_mel_bank(num_mel_bins, fft_length, sampling_rate)
    mel_t = mel_bank.T
    groups = []
    for group in torch.arange(num_mel_bins).tensor_split(min(MEL_GROUPS, num_mel_bins)):
        start, end = int(group[0]), int(group[-1]) + 1
        used_bins = mel_t[:, start:end].sum(dim=1).nonzero().flatten().tolist()
        # A group whose filters are all empty (filter 3 of the 128-bin bank is) still needs a non-empty product.
        low, high = (used_bins[0], used_bins[-1] + 1) if used_bins else (0, 1)
        groups.append((start, end, low, high, mel_t[low:high, start:end].contiguous().to(device)))
    return KaldiConstants(window_length, window_shift, fft_length, window, tuple(groups))


def kaldi_mel_bank(num_mel_bins: int, fft_length: int, sampling_rate: int) -> torch.Tensor:
    """Kaldi's triangular Mel filters (num_mel_bins, fft_length // 2), lowest edge 20 Hz, highest the Nyquist.

    The float32 operations are those of `torchaudio.compliance.kaldi.get_mel_banks` in the same order, so the bank is
    bit-identical to the one the authors' `kaldi.fbank` used. transformers' `mel_filter_bank(mel_scale="kaldi",
    triangularize_in_mel_space=True)` computes the same filters in float64, which moves weights by up to 1.4e-5 and
    log-Mel values by more than the rounding of the rest of the pipeline (benchmarks/bench_frontend_choices.py).
    """
    low_mel = 1127.0 * math.log(1.0 + LOW_FREQ / 700.0)
    high_mel = 1127.0 * math.log(1.0 + 0.5 * sampling_rate / 700.0)
    mel_delta = (high_mel - low_mel) / (num_mel_bins + 1)
    filters = torch.arange(num_mel_bins).unsqueeze(1)
    left = low_mel + filters * mel_delta
    centre = low_mel + (filters + 1.0) * mel_delta
    right = low_mel + (filters + 2.0) * mel_delta
    bin_mel = (1127.0 * (1.0 + sampling_rate / fft_length * torch.arange(fft_length / 2) / 700.0).log()).unsqueeze(0)
    up_slope = (bin_mel - left) / (centre - left)
    down_slope = (right - bin_mel) / (right - centre)
    return torch.max(torch.zeros(1), torch.min(up_slope, down_slope))
