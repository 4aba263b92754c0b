"""Front ends of real speech models: Kaldi filter banks, Whisper's log-mel, the AST patch grid.

Every speech model starts from the log-mel pipeline of ``course_lib.audio``, with its own choices:

- **Kaldi** (``fbank``; the front end of the Audio Spectrogram Transformer): 25 ms frames every
  10 ms with no centring ("snip edges"), DC removal, pre-emphasis ``x[n] - 0.97 x[n-1]``, the
  "povey" window, an FFT rounded up to 512 points, and mel filters whose triangles are linear
  in *mel* (HTK's and torchaudio's are linear in Hz). ``kaldi_fbank`` matches
  ``torchaudio.compliance.kaldi.fbank``.
- **Whisper** (Radford et al., 2022): ``log10`` of the mel power, floored at its maximum - 8
  (80 dB of dynamic range), then ``(x + 4) / 4`` so the values sit roughly in [-1, 1].
- **AST** (Gong et al., 2021): Kaldi features with 128 bands, normalised with AudioSet's mean and
  std, read as a 1-channel image and cut into 16 x 16 patches with stride 10 (overlapping: lesson
  01's patches, with a stride smaller than the patch).

Shapes as in ``course_lib.audio``: ``(..., M, T)`` spectrograms, ``N`` patches of ``P x P``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_lib.audio import (_check_positive_int, _check_sample_rate, as_waveform, centered_frames, frame_signal,
                              hz_to_mel, mel_filterbank, power_spectrum, window_function)

FLOAT32_EPS = torch.finfo(torch.float32).eps  # Kaldi's log floor, 1.19e-07
AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974  # AST's normalisation statistics


def kaldi_mel_filterbank(sample_rate: float, n_fft: int, n_mels: int, low_freq: float = 20.0,
                         high_freq: float | None = None) -> torch.Tensor:
    """Kaldi's mel filters: triangles *linear in mel*, ``(M, F)`` with ``F = n_fft // 2 + 1``.

    Edges are evenly spaced in mel as in ``mel_filterbank``, but each bin's weight is computed from
    its mel value: ``up = (mel(f) - left) / (center - left)``, ``down = (right - mel(f)) / (right -
    center)``. The Nyquist bin gets weight 0, as in Kaldi.
    """
    _check_sample_rate(sample_rate)
    high_freq = sample_rate / 2 if high_freq is None else high_freq
    edges_mel = torch.linspace(hz_to_mel(low_freq), hz_to_mel(high_freq), n_mels + 2, dtype=torch.float64)
    left, center, right = edges_mel[:-2, None], edges_mel[1:-1, None], edges_mel[2:, None]  # (M, 1) each
    bin_mels = hz_to_mel(torch.arange(n_fft // 2, dtype=torch.float64) * sample_rate / n_fft)  # (F - 1,)
    rising = (bin_mels - left) / (center - left)  # (M, F - 1), linear in mel
    falling = (right - bin_mels) / (right - center)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return F.pad(filters, (0, 1)).float()  # (M, F): no weight on the Nyquist bin


def kaldi_fbank(waveform: torch.Tensor, sample_rate: float = 16_000, n_mels: int = 23, *,
                frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, window: str = "povey",
                preemphasis: float = 0.97, low_freq: float = 20.0) -> torch.Tensor:
    """Kaldi's log mel filter bank features, ``(..., S)`` -> ``(..., M, T)``.

    Per frame (no centring, ``T = 1 + (S - L) // hop``): subtract the frame's mean (DC), apply
    pre-emphasis ``y[n] = x[n] - preemphasis * x[n-1]`` (``x[-1] = x[0]``), multiply by a symmetric
    window, zero-pad to the next power of two, take the FFT power, apply ``kaldi_mel_filterbank``
    and ``ln(max(., float32 eps))``. Equal to ``torchaudio.compliance.kaldi.fbank(waveform[None],
    num_mel_bins=M, dither=0.0, window_type=window).T`` (which returns ``(T, M)``, one channel only).
    """
    waveform = as_waveform(waveform)
    _check_sample_rate(sample_rate)
    _check_positive_int(n_mels, "n_mels")
    frame_length = int(sample_rate * frame_length_ms / 1000)  # 400 samples at 16 kHz
    hop_length = int(sample_rate * frame_shift_ms / 1000)  # 160
    n_fft = 1 << (frame_length - 1).bit_length()  # next power of two: 512
    frames = frame_signal(waveform, frame_length, hop_length)  # (..., T, L)
    frames = frames - frames.mean(dim=-1, keepdim=True)  # DC removal
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # x[n-1], with x[-1] = x[0]
    frames = (frames - preemphasis * previous) * window_function(window, frame_length, periodic=False)
    power = power_spectrum(frames, n_fft)  # (..., T, F) with F = n_fft // 2 + 1
    filters = kaldi_mel_filterbank(sample_rate, n_fft, n_mels, low_freq).to(power.dtype)  # (M, F)
    mel = torch.matmul(power, filters.T)  # (..., T, F) @ (F, M) -> (..., T, M)
    return mel.clamp_min(FLOAT32_EPS).log().transpose(-1, -2)  # (..., M, T)


def whisper_normalize(mel_power: torch.Tensor) -> torch.Tensor:
    """Whisper's scaling of a mel power spectrogram ``(..., M, T)``.

    ``x = log10(max(mel, 1e-10))``, then ``x = max(x, x.max() - 8)`` (keep 80 dB below the loudest
    value of each example), then ``(x + 4) / 4``.
    """
    log_mel = torch.log10(mel_power.clamp_min(1e-10))
    loudest = log_mel.amax(dim=(-2, -1), keepdim=True)  # (..., 1, 1): per example
    return (torch.maximum(log_mel, loudest - 8.0) + 4.0) / 4.0


def whisper_log_mel(waveform: torch.Tensor, filters: torch.Tensor | None = None, n_mels: int = 80) -> torch.Tensor:
    """Whisper's features of 16 kHz audio: ``(..., S)`` -> ``(..., M, S // 160)``.

    Hann window of 400 (25 ms), hop 160 (10 ms), centred frames with reflect padding, power, the
    last frame dropped, mel filters, then ``whisper_normalize``. Whisper's filters are librosa's
    Slaney-style ones (``librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)``); pass them as
    ``filters`` ``(M, 201)`` to get Whisper's exact values, else the course's HTK filters are used.
    (Whisper also pads every input to 30 s first; this function does not.)
    """
    waveform = as_waveform(waveform)
    filters = mel_filterbank(16_000, 400, n_mels) if filters is None else filters  # (M, F)
    frames = centered_frames(waveform, 400, 160)[..., :-1, :]  # (..., T, 400), last frame dropped
    power = power_spectrum(frames * window_function("hann", 400))  # (..., T, F)
    mel = torch.matmul(power, filters.to(power.dtype).T).transpose(-1, -2)  # (..., M, T)
    return whisper_normalize(mel)


def ast_features(waveform: torch.Tensor, sample_rate: float = 16_000, n_mels: int = 128,
                 target_frames: int = 1024) -> torch.Tensor:
    """The AST input: Kaldi features (Hann window), cut or zero-padded to ``target_frames``, normalised.

    ``(x - mean) / (2 std)`` with AudioSet's statistics, so the values sit roughly in [-1, 1].
    Returns ``(..., M, target_frames)``: 128 x 1024 is 10.24 s of audio.
    """
    waveform = as_waveform(waveform)
    waveform = waveform - waveform.mean(dim=-1, keepdim=True)
    features = kaldi_fbank(waveform, sample_rate, n_mels, window="hann")  # (..., M, T)
    num_frames = features.shape[-1]
    features = F.pad(features, (0, max(target_frames - num_frames, 0)))[..., :target_frames]  # (..., M, target)
    return (features - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)


def ast_patch_grid(n_mels: int, n_frames: int, patch_size: int = 16, stride: int = 10) -> tuple[int, int]:
    """How many patches fit: ``rows = 1 + (M - P) // stride`` over frequency, ``cols = 1 + (T - P) // stride``.

    Example:
        >>> ast_patch_grid(128, 1024)      # 12 x 101 = 1212 patches
        (12, 101)
    """
    for value, name in ((n_mels, "n_mels"), (n_frames, "n_frames"), (patch_size, "patch_size"), (stride, "stride")):
        _check_positive_int(value, name)
    if n_mels < patch_size or n_frames < patch_size:
        raise ValueError(f"a {n_mels} x {n_frames} spectrogram is smaller than one {patch_size} x {patch_size} "
                         "patch; pad it (ast_features pads to 1024 frames) or use a smaller patch")
    return 1 + (n_mels - patch_size) // stride, 1 + (n_frames - patch_size) // stride


def ast_patches(spectrogram: torch.Tensor, patch_size: int = 16, stride: int = 10) -> torch.Tensor:
    """Cut ``(..., M, T)`` into overlapping ``P x P`` patches, row-major over the grid, each flattened row by row.

    Returns ``(..., N, P * P)`` with ``N = rows * cols`` from ``ast_patch_grid``. With
    ``stride == patch_size`` this is lesson 01's ``patchify`` of a one-channel image; AST's
    ``Conv2d(1, D, P, stride)`` equals ``patches @ weight.reshape(D, P * P).T + bias``.
    """
    *batch_shape, n_mels, n_frames = spectrogram.shape
    rows, cols = ast_patch_grid(n_mels, n_frames, patch_size, stride)
    grid = spectrogram.unfold(-2, patch_size, stride).unfold(-2, patch_size, stride)  # (..., rows, cols, P, P)
    return grid.reshape(*batch_shape, rows * cols, patch_size * patch_size)  # (..., N, P * P)
