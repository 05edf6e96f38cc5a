"""Why the feature extractor carries its own Kaldi Mel bank and resampler instead of a library's (issue 8).

The authors computed features with torchaudio: `kaldi.fbank` (its float32 Mel bank) on clips resampled with
`torchaudio.functional.resample` (default sinc interpolation). Without torchaudio the alternatives are:

* Mel bank: ours (torchaudio's float32 arithmetic, a few lines) vs transformers' `audio_utils.mel_filter_bank(
  mel_scale="kaldi", triangularize_in_mel_space=True)` (float64). Compared: filter weights, and log-Mel features of
  real clips against `kaldi.fbank`.
* Resampler: ours (torchaudio's algorithm) vs soxr (`VHQ`, the well-kept library) vs torchaudio itself. Compared: the
  resampled waveform and its log-Mel features against the authors' path, and the time per clip, side by side.

Needs torchaudio (the reference) and soxr:

    python benchmarks/bench_frontend_choices.py ../shared/data --clips 200
"""

import argparse
import csv
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import soundfile
import soxr
import torch
import torchaudio
from transformers.audio_utils import mel_filter_bank

from modeling_audiomosaic import AudioMosaicFeatureExtractor, resample
from modeling_audiomosaic import kaldi_audiomosaic as kaldi


def read_clips(data_dir: Path, count: int) -> list[np.ndarray]:
    clips = []
    for name in ("speechcommands_test", "drumkits", "fsdd"):
        with open(data_dir / name / "meta.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows[:: max(1, len(rows) // (count // 3))][: count // 3]:
            clips.append(soundfile.read(data_dir / name / row["filename"], dtype="float32")[0])
    return clips


def kaldi_fbank(waveform: torch.Tensor) -> torch.Tensor:
    return torchaudio.compliance.kaldi.fbank(waveform[None] - waveform.mean(), htk_compat=True, sample_frequency=16000,
                                             use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0,
                                             frame_shift=10)


def log_mel(extractor: AudioMosaicFeatureExtractor, clip: np.ndarray) -> torch.Tensor:
    return extractor(clip, sampling_rate=16000, padding="longest", return_tensors="pt")["input_values"][0]


def compare_mel_banks(clips: list[np.ndarray]) -> None:
    ours = kaldi.kaldi_mel_bank(128, 512, 16000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "at least one mel filter has all zero values": Kaldi's filter 3 is empty
        library = torch.from_numpy(mel_filter_bank(num_frequency_bins=257, num_mel_filters=128, min_frequency=20,
                                                   max_frequency=8000, sampling_rate=16000, norm=None,
                                                   mel_scale="kaldi", triangularize_in_mel_space=True)[:256].T).float()
    reference, _ = torchaudio.compliance.kaldi.get_mel_banks(128, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
    print("Mel bank weights, max |difference| to torchaudio's (what kaldi.fbank used):")
    print(f"  ours                         {(ours - reference).abs().max().item():.2e}")
    print(f"  transformers mel_filter_bank {(library - reference).abs().max().item():.2e}")

    extractor = AudioMosaicFeatureExtractor(do_normalize=False)
    errors = {}
    for name, bank in (("ours", ours), ("transformers", library)):
        # Route the extractor through this bank (its constants are cached per configuration, so clear them).
        with mock.patch.object(kaldi, "kaldi_mel_bank", lambda *args, bank=bank: bank):
            kaldi.kaldi_constants.cache_clear()
            errors[name] = max((log_mel(extractor, clip) - kaldi_fbank(torch.from_numpy(clip))).abs().max().item()
                               for clip in clips)
        kaldi.kaldi_constants.cache_clear()
    print(f"log-Mel of {len(clips)} real clips, max |difference| to kaldi.fbank (parity goal 1e-5):")
    for name, error in errors.items():
        print(f"  with {name:<12} bank {error:.2e}")


def compare_resamplers(clips: list[np.ndarray], rate: int) -> None:
    """Each 16 kHz clip is first brought to `rate` (a recording at that rate), then back to 16 kHz by each method."""
    recordings = [torchaudio.functional.resample(torch.from_numpy(clip), 16000, rate) for clip in clips]
    methods = {
        "torchaudio (authors)": lambda x: torchaudio.functional.resample(x, rate, 16000),
        "ours": lambda x: resample(x, rate, 16000),
        "soxr VHQ": lambda x: torch.from_numpy(soxr.resample(x.numpy(), rate, 16000, quality="VHQ")),
    }
    outputs, seconds = {}, {}
    for name, method in methods.items():
        method(recordings[0])  # warm-up (ours caches its kernels per rate pair, as torchaudio's Resample would)
        start = time.perf_counter()
        outputs[name] = [method(x) for x in recordings]
        seconds[name] = time.perf_counter() - start
    extractor = AudioMosaicFeatureExtractor(do_normalize=False)
    reference = outputs["torchaudio (authors)"]
    reference_mel = [log_mel(extractor, x.numpy()) for x in reference]
    print(f"\nResampling {len(clips)} real clips {rate} Hz -> 16 kHz ({sum(len(x) for x in recordings) / rate:.0f} s "
          "of audio), against the authors' torchaudio path:")
    print(f"  {'method':<22} {'max |Δ wave|':>13} {'max |Δ log-Mel|':>16} {'mean |Δ log-Mel|':>17} {'time':>9} "
          f"{'× torchaudio':>12}")
    for name, out in outputs.items():
        lengths = [min(len(a), len(b)) for a, b in zip(out, reference)]  # soxr may differ by a sample
        wave = max((a[:n] - b[:n]).abs().max().item() for a, b, n in zip(out, reference, lengths))
        mels = [log_mel(extractor, x.numpy()) for x in out]
        frames = [min(len(a), len(b)) for a, b in zip(mels, reference_mel)]
        mel_max = max((a[:n] - b[:n]).abs().max().item() for a, b, n in zip(mels, reference_mel, frames))
        mel_mean = np.mean([(a[:n] - b[:n]).abs().mean().item() for a, b, n in zip(mels, reference_mel, frames)])
        print(f"  {name:<22} {wave:>13.2e} {mel_max:>16.2e} {mel_mean:>17.2e} {seconds[name]:>8.3f}s "
              f"{seconds[name] / seconds['torchaudio (authors)']:>12.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="../shared/data (speechcommands_test, drumkits, fsdd)")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clips = read_clips(args.data_dir, args.clips)
    print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, soxr {soxr.__version__}, "
          f"{args.threads} thread(s)\n")
    compare_mel_banks(clips)
    for rate in (44100, 48000, 22050):
        compare_resamplers(clips, rate)


if __name__ == "__main__":
    main()
