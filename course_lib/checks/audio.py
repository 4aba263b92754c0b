"""Checks for lesson 06 (log-mel features): framing, the mel filter bank, the log-mel pipeline.

Each check runs the student's function on a few small cases and compares it with torchaudio
(or, for framing, with ``course_lib.audio.frame_signal``, which is what Kaldi's "snip edges"
framing does). When the answer is wrong in a familiar way (magnitude instead of power, log10
instead of ln, frames not centred, ...) the message says which.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from course_lib import audio
from course_lib.checks import CheckFailure, CheckResult, expect_close, expect_shape, expect_type, run_check

# (num_samples, frame_length, hop_length): a hand-sized case, 25/10 ms at 16 kHz, a last frame that
# ends exactly on the last sample, and a hop longer than the frame.
FRAME_CASES = [(10, 4, 3), (1000, 400, 160), (880, 400, 160), (50, 8, 10)]
# (sample_rate, n_fft, n_mels, f_min, f_max): the lecture's 80 bands, telephone speech, fewer wider bands.
FILTERBANK_CASES = [(16000, 400, 80, 0.0, None), (8000, 256, 40, 100.0, 3800.0), (22050, 1024, 64, 0.0, 8000.0)]
# (n_fft, hop_length, n_mels): the lecture's 25 ms / 10 ms / 80 bands, and other settings.
LOG_MEL_CASES = [(400, 160, 80), (512, 128, 40)]


def _vowel(num_samples: int, sample_rate: int = 16000) -> torch.Tensor:
    """A vowel-like test signal: harmonics of 120 Hz, falling off with frequency, plus a little noise."""
    generator = torch.Generator().manual_seed(6)
    time = torch.arange(num_samples, dtype=torch.float64) / sample_rate
    harmonics = torch.arange(1, 40, dtype=torch.float64)[:, None]  # (K, 1)
    tone = (torch.cos(2 * math.pi * 120 * harmonics * time + harmonics) / harmonics).sum(dim=0)  # (S,)
    noise = 0.01 * torch.randn(num_samples, generator=generator, dtype=torch.float64)
    return (0.1 * tone + noise).float()


def check_frame_signal(student_frame_signal: Callable[[torch.Tensor, int, int], torch.Tensor]) -> CheckResult:
    """Compare ``frame_signal(waveform, frame_length, hop_length)`` -> ``(T, L)`` with the reference."""

    def body() -> str:
        for num_samples, frame_length, hop_length in FRAME_CASES:
            waveform = torch.arange(num_samples, dtype=torch.float32)  # sample n has value n: easy to read
            got = student_frame_signal(waveform.clone(), frame_length, hop_length)
            expected = audio.frame_signal(waveform, frame_length, hop_length)
            num_frames = expected.shape[0]
            what = (f"frame_signal(waveform of {num_samples} samples, frame_length={frame_length}, "
                    f"hop_length={hop_length})")
            expect_type(got, torch.Tensor, what)
            expect_shape(got, expected.shape, what, hint=(
                f"(T, L) with T = 1 + (S - L) // hop = 1 + ({num_samples} - {frame_length}) // {hop_length} = "
                f"{num_frames}: the last frame must fit entirely inside the waveform"))
            starts = got[:, 0].tolist()
            expect_close(got, expected, what, atol=0, rtol=0, hint=(
                f"frame t is waveform[t * hop_length : t * hop_length + frame_length]; here sample n has value n, "
                f"so your frames start at {starts[:4]} but should start at {expected[:4, 0].tolist()}"))
        return f"T = 1 + (S - L) // hop frames, right samples, on {len(FRAME_CASES)} cases"

    return run_check("frame_signal", body)


def check_mel_filterbank(student_mel_filterbank: Callable[..., torch.Tensor]) -> CheckResult:
    """Compare ``mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)`` with torchaudio's HTK filters."""
    import torchaudio.functional

    def body() -> str:
        for sample_rate, n_fft, n_mels, f_min, f_max in FILTERBANK_CASES:
            num_bins = n_fft // 2 + 1
            expected = torchaudio.functional.melscale_fbanks(
                num_bins, f_min, f_max or sample_rate / 2, n_mels, sample_rate, norm=None, mel_scale="htk").T  # (M, F)
            got = student_mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)
            what = f"mel_filterbank({sample_rate}, n_fft={n_fft}, n_mels={n_mels}, f_min={f_min}, f_max={f_max})"
            expect_type(got, torch.Tensor, what)
            hint = f"one row per filter: (n_mels, n_fft // 2 + 1) = ({n_mels}, {num_bins})"
            if tuple(got.shape) == (num_bins, n_mels):
                hint = f"you return (F, M) = {tuple(got.shape)}; rows are filters: transpose it"
            expect_shape(got, expected.shape, what, hint=hint)
            if not torch.allclose(got.float(), expected, atol=1e-4):
                raise CheckFailure(_filterbank_diagnosis(got.float(), expected, what, sample_rate, n_fft, n_mels, f_min,
                                                          f_max or sample_rate / 2))
            expect_close(got.float(), expected, what, atol=1e-4, rtol=1e-3)
        return (f"equals torchaudio.functional.melscale_fbanks(..., norm=None, mel_scale='htk') "
                f"on {len(FILTERBANK_CASES)} settings")

    return run_check("mel_filterbank", body)


def _filterbank_diagnosis(got: torch.Tensor, expected: torch.Tensor, what: str, sample_rate: int, n_fft: int,
                          n_mels: int, f_min: float, f_max: float) -> str:
    """Say where ``got`` differs first, and name the mistake if it is a usual one."""
    import torchaudio.functional

    num_bins = n_fft // 2 + 1
    edges_mel = torch.linspace(audio.hz_to_mel(f_min), audio.hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    bin_mels = audio.hz_to_mel(torch.arange(num_bins, dtype=torch.float64) * sample_rate / n_fft)  # (F,)
    left, center, right = edges_mel[:-2, None], edges_mel[1:-1, None], edges_mel[2:, None]
    linear_in_mel = torch.minimum((bin_mels - left) / (center - left), (right - bin_mels) / (right - center))
    candidates = {
        "your triangles are straight lines in mel; the HTK filters are straight lines in Hz: compute the slopes "
        "from the edges converted back to Hz, at the bin frequencies k * sample_rate / n_fft":
            linear_in_mel.clamp(min=0).float(),
        "your filters are area-normalised (Slaney norm); HTK filters are not: each triangle peaks at 1":
            torchaudio.functional.melscale_fbanks(num_bins, f_min, f_max, n_mels, sample_rate, "slaney", "htk").T,
        "that is the Slaney mel scale (linear below 1 kHz); the lecture's is mel(f) = 1127 ln(1 + f / 700)":
            torchaudio.functional.melscale_fbanks(num_bins, f_min, f_max, n_mels, sample_rate, None, "slaney").T,
    }
    hint = next((hint for hint, candidate in candidates.items() if torch.allclose(got, candidate, atol=1e-4)), (
        f"the {n_mels + 2} edges are evenly spaced in mel from hz_to_mel(f_min) to hz_to_mel(f_max), then "
        "converted back to Hz; filter m rises linearly in Hz from 0 at edge m to 1 at edge m+1 and falls to 0 "
        "at edge m+2, sampled at the bin frequencies k * sample_rate / n_fft"))
    column = int((got - expected).abs().amax(dim=0).argmax())  # the bin with the largest error
    row = int((got - expected)[:, column].abs().argmax())
    return (f"{what}: filter {row} at bin {column} ({column * sample_rate / n_fft:.1f} Hz) is "
            f"{got[row, column].item():.4g}, expected {expected[row, column].item():.4g}\n   Hint: {hint}")


def check_log_mel(student_log_mel: Callable[..., torch.Tensor]) -> CheckResult:
    """Compare ``log_mel(waveform, sample_rate, n_fft, hop_length, n_mels)`` with torchaudio's MelSpectrogram + log."""
    import torchaudio

    def body() -> str:
        sample_rate = 16000
        waveform = _vowel(4000, sample_rate)  # 0.25 s
        for n_fft, hop_length, n_mels in LOG_MEL_CASES:
            transform = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop_length,
                                                             n_mels=n_mels)
            expected = transform(waveform).clamp_min(1e-10).log()  # (M, T)
            got = student_log_mel(waveform.clone(), sample_rate, n_fft, hop_length, n_mels)
            what = f"log_mel(0.25 s of audio, n_fft={n_fft}, hop_length={hop_length}, n_mels={n_mels})"
            expect_type(got, torch.Tensor, what)
            num_mels, num_frames = expected.shape
            if tuple(got.shape) == (num_frames, num_mels):
                hint = f"you return (T, M) = {tuple(got.shape)}; the course's layout is (M, T): transpose it"
            elif got.ndim == 2 and got.shape[0] == num_mels and got.shape[1] != num_frames:
                hint = (f"{got.shape[1]} frames instead of 1 + S // hop = {num_frames}: centre the frames by padding "
                        f"n_fft // 2 = {n_fft // 2} reflected samples at each end before framing, e.g. "
                        "torch.nn.functional.pad(waveform[None], (pad, pad), mode='reflect')[0]")
            else:
                hint = f"(n_mels, frames) = ({num_mels}, {num_frames})"
            expect_shape(got, expected.shape, what, hint=hint)
            if not torch.allclose(got, expected, atol=1e-3):
                mistake = _log_mel_diagnosis(got, waveform, sample_rate, n_fft, hop_length, n_mels)
                if mistake:
                    raise CheckFailure(f"{what} has the right shape but different values.\n   Hint: {mistake}")
            expect_close(got, expected, what, atol=1e-3, rtol=1e-4, hint=(
                "centred frames (reflect padding), periodic Hann window, |FFT|^2, mel filters, ln(max(x, 1e-10))"))
        return ("equals torchaudio.transforms.MelSpectrogram(...) followed by clamp_min(1e-10).log() "
                f"on {len(LOG_MEL_CASES)} settings")

    return run_check("log_mel", body)


def _log_mel_diagnosis(got: torch.Tensor, waveform: torch.Tensor, sample_rate: int, n_fft: int, hop_length: int,
                       n_mels: int) -> str | None:
    """Name the mistake if ``got`` is one of the usual wrong pipelines."""
    filters = audio.mel_filterbank(sample_rate, n_fft, n_mels)  # (M, F)
    frames = audio.centered_frames(waveform, n_fft, hop_length)  # (T, n_fft)

    def pipeline(window: torch.Tensor, power: float = 2.0) -> torch.Tensor:
        magnitude = torch.fft.rfft(frames * window).abs()  # (T, F)
        return (magnitude**power @ filters.T).T.clamp_min(1e-10)  # (M, T)

    hann = audio.window_function("hann", n_fft)
    mel = pipeline(hann)
    candidates = {
        "the values are log10, not the natural log ln: use torch.log": mel.log10(),
        "you used the magnitude |X|, not the power |X|^2": pipeline(hann, power=1.0).log(),
        "no window (rectangular): multiply each frame by a Hann window first": pipeline(torch.ones(n_fft)).log(),
        "your Hann window is symmetric; use the periodic one, torch.hann_window(n_fft) "
        "(0.5 - 0.5 cos(2 pi n / N) with N = n_fft)": pipeline(torch.hann_window(n_fft, periodic=False)).log(),
        "that is the mel power spectrum: take its log": mel,
    }
    for hint, candidate in candidates.items():
        if torch.allclose(got, candidate, atol=1e-3):
            return hint
    if bool(torch.isinf(got).any()):
        return "some values are -inf: clamp the mel power below at 1e-10 before the log"
    return None
