"""From a waveform to log-mel features: the speech front end, one step at a time.

The lecture's speech section (after Jurafsky & Martin, *Speech and Language Processing*, ch. 16)
turns a raw wave file into a sequence of 80-dimensional log-mel vectors:

    samples (S,) --frame 25 ms every 10 ms--> frames (T, L) --window, DFT--> power (T, F)
        --mel filter bank (M, F)--> mel power (M, T) --log--> log-mel features (M, T)

Each step is a small function here, written to be read. ``log_mel_spectrogram`` chains them in a
vectorised fast path (no Python loop over frames) that matches ``torchaudio.transforms.MelSpectrogram``
followed by a clamped ``log``. The Kaldi, Whisper and AST front ends are in ``audio_variants``.

Shapes: ``S`` samples, ``T`` frames, ``L`` frame length, ``F = n_fft // 2 + 1`` frequency bins,
``M`` mel bands; a leading ``...`` is any batch shape.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from course_lib.runtime import data_dir

SAMPLE_RATE = 16_000  # Hz; what speech models (Whisper, AST, Qwen2-Audio) expect
CLIPS = ("baby", "sentence", "digits")  # data/audio/<name>.wav: espeak-ng speech, see data/audio/README.md
# Integer PCM -> float in [-1, 1): divide by 2^(bits - 1); 8-bit WAV is unsigned, centred on 128.
PCM_SCALES = {torch.int8: 2.0**7, torch.int16: 2.0**15, torch.int32: 2.0**31}
WINDOWS = ("rectangular", "hamming", "hann", "povey")


# ---- checking input: errors that name the values and the fix ----

def as_waveform(waveform) -> torch.Tensor:
    """``waveform`` as a float tensor ``(..., S)``; integer PCM divided by its scale (``PCM_SCALES``).

    Raises ``TypeError`` for what is not a tensor or array of real samples, ``ValueError`` for an
    empty waveform or NaN/inf samples.
    """
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(waveform)
    if not isinstance(waveform, torch.Tensor):
        raise TypeError(f"waveform must be a torch.Tensor or numpy array of samples, got "
                        f"{type(waveform).__name__}; wrap it: torch.tensor(samples, dtype=torch.float32)")
    if waveform.dtype == torch.uint8:  # 8-bit WAV: 0..255 with silence at 128
        waveform = (waveform.float() - 128.0) / 128.0
    elif waveform.dtype in PCM_SCALES:
        waveform = waveform.float() / PCM_SCALES[waveform.dtype]
    elif waveform.dtype in (torch.float16, torch.bfloat16):
        waveform = waveform.float()  # the CPU FFT wants float32 or float64
    elif not waveform.dtype.is_floating_point:
        raise TypeError(f"waveform has dtype {waveform.dtype}, which has no PCM scale; pass float samples "
                        "in [-1, 1] or int16 PCM, e.g. waveform.float() / 32768 for 16-bit samples")
    if waveform.ndim == 0 or waveform.numel() == 0:
        raise ValueError(f"waveform is empty (shape {tuple(waveform.shape)}); pass at least one frame of samples")
    # A sum of audio samples is finite exactly when every sample is: one cheap reduction.
    if not math.isfinite(waveform.sum().item()):
        bad = (~torch.isfinite(waveform)).nonzero()
        if len(bad):
            raise ValueError(f"waveform has {len(bad)} NaN or inf samples, the first at index "
                             f"{tuple(bad[0].tolist())}; clean it first, e.g. torch.nan_to_num(waveform)")
    return waveform


def _check_sample_rate(sample_rate) -> None:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)):
        raise TypeError(f"sample_rate must be a number in Hz, got {type(sample_rate).__name__}")
    if not (sample_rate > 0 and math.isfinite(sample_rate)):
        raise ValueError(f"sample_rate must be positive, got {sample_rate}; speech is usually 16000 Hz")


def _check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def _check_long_enough(waveform: torch.Tensor, needed: int, why: str) -> None:
    num_samples = waveform.shape[-1]
    if num_samples >= needed:
        return
    message = f"waveform has {num_samples} samples on its last axis, fewer than {needed} ({why})"
    if waveform.ndim >= 2 and waveform.shape[-2] > num_samples:
        message += (f"; shape {tuple(waveform.shape)} looks like (samples, channels): samples go last, "
                    "so pass waveform.T (or down-mix first with to_mono(waveform.T))")
    else:
        message += "; pad it with zeros (torch.nn.functional.pad) or use a shorter frame"
    raise ValueError(message)


# ---- sampling and quantization ----

def load_audio(path: str | Path, sample_rate: int | None = SAMPLE_RATE, mono: bool = True) -> tuple[torch.Tensor, int]:
    """Read a PCM WAV file as float samples in [-1, 1), resampled and down-mixed as asked.

    Args:
        path: a ``.wav`` file of 8-, 16- or 32-bit integer PCM.
        sample_rate: resample to this rate in Hz (band-limited sinc interpolation,
            ``torchaudio.functional.resample``); ``None`` keeps the file's rate.
        mono: average the channels into one (``to_mono``); ``False`` keeps them.

    Returns:
        ``(waveform, sample_rate)``: ``(S,)`` if ``mono`` else ``(C, S)``, and its rate in Hz.

    Example:
        >>> waveform, sample_rate = load_audio("data/audio/baby.wav")   # (S,), 16000
    """
    with wave.open(str(path), "rb") as wav:
        num_channels, sample_width, file_rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    dtypes = {1: np.uint8, 2: np.int16, 4: np.int32}
    if sample_width not in dtypes:
        raise ValueError(f"{path}: {8 * sample_width}-bit samples are not supported; convert the file to "
                         f"16 bits, e.g. sox {path} -b 16 out.wav")
    pcm = np.frombuffer(raw, dtype=dtypes[sample_width]).reshape(-1, num_channels)  # (S, C): interleaved
    waveform = as_waveform(torch.from_numpy(pcm.T.copy()))  # (C, S), scaled to [-1, 1)
    if mono:
        waveform = to_mono(waveform)
    if sample_rate is not None and sample_rate != file_rate:
        waveform = resample(waveform, file_rate, sample_rate)
    return waveform, sample_rate or file_rate


def load_clip(name: str) -> torch.Tensor:
    """One of the course's speech clips (``CLIPS``) as ``(S,)`` float samples at 16 kHz."""
    if name not in CLIPS:
        raise ValueError(f"unknown clip {name!r}; the course ships {', '.join(CLIPS)} (data/audio/)")
    return load_audio(data_dir() / "audio" / f"{name}.wav")[0]


def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """Down-mix ``(C, S)`` channels to ``(S,)`` by averaging them; ``(S,)`` is returned as it is."""
    waveform = as_waveform(waveform)
    if waveform.ndim == 1:
        return waveform
    if waveform.ndim != 2:
        raise ValueError(f"to_mono expects (channels, samples), got shape {tuple(waveform.shape)}")
    num_channels, num_samples = waveform.shape
    if num_channels > num_samples:
        raise ValueError(f"waveform of shape {tuple(waveform.shape)} has more channels than samples; it looks "
                         "like (samples, channels). course_lib (like torchaudio) puts channels first: pass waveform.T")
    return waveform.mean(dim=0)


def resample(waveform: torch.Tensor, orig_sample_rate: int, new_sample_rate: int) -> torch.Tensor:
    """Change the sample rate of ``(..., S)`` samples (torchaudio's band-limited sinc interpolation).

    Going down, frequencies above the new Nyquist frequency ``new_sample_rate / 2`` are filtered out
    first, so they cannot alias.
    """
    import torchaudio.functional  # loaded on first use: reading files does not need it

    for rate in (orig_sample_rate, new_sample_rate):
        _check_sample_rate(rate)
        _check_positive_int(rate, "sample rate")
    return torchaudio.functional.resample(as_waveform(waveform), orig_sample_rate, new_sample_rate)


def quantize(waveform: torch.Tensor, bits: int) -> torch.Tensor:
    """Round samples in [-1, 1) to ``bits``-bit signed integers: ``q = clamp(round(x * 2^(bits-1)))``.

    Returns ``int32`` codes in ``[-2^(bits-1), 2^(bits-1) - 1]`` of the waveform's shape.
    """
    _check_positive_int(bits, "bits")
    if not 2 <= bits <= 24:
        raise ValueError(f"bits must be between 2 and 24, got {bits}; PCM audio uses 8, 16 or 24")
    scale = 2.0 ** (bits - 1)
    codes = torch.round(as_waveform(waveform) * scale).clamp(-scale, scale - 1)
    return codes.to(torch.int32)


def dequantize(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """The float samples that ``bits``-bit codes stand for: ``x = q / 2^(bits-1)``."""
    _check_positive_int(bits, "bits")
    return codes.to(torch.float32) / 2.0 ** (bits - 1)


# ---- framing and windows ----

def frame_signal(waveform: torch.Tensor, frame_length: int, hop_length: int) -> torch.Tensor:
    """Cut samples into overlapping frames: frame ``t`` is ``waveform[..., t*hop : t*hop + frame_length]``.

    No padding ("snip edges"), so there are ``T = 1 + (S - frame_length) // hop_length`` frames.

    Args:
        waveform: ``(..., S)`` samples.
        frame_length: ``L``, samples per frame (25 ms at 16 kHz = 400).
        hop_length: samples between frame starts (10 ms at 16 kHz = 160).

    Returns:
        ``(..., T, L)``, a view into ``waveform`` (no copy).

    Example:
        >>> frame_signal(torch.arange(10.0), frame_length=4, hop_length=3)[:, 0]
        tensor([0., 3., 6.])
    """
    waveform = as_waveform(waveform)
    _check_positive_int(frame_length, "frame_length")
    _check_positive_int(hop_length, "hop_length")
    _check_long_enough(waveform, frame_length, f"one frame of frame_length={frame_length}")
    return waveform.unfold(-1, frame_length, hop_length)  # (..., T, L)


def window_function(name: str, length: int, periodic: bool = True) -> torch.Tensor:
    """A tapering window ``w[n]``, ``n = 0 .. length-1``, with ``N = length`` (periodic) or ``length - 1``.

    - ``rectangular``: ``1`` (an abrupt cut at the edges: strong spectral leakage)
    - ``hann``:        ``0.5 - 0.5 cos(2 pi n / N)``
    - ``hamming``:     ``0.54 - 0.46 cos(2 pi n / N)``
    - ``povey``:       Kaldi's ``hann ** 0.85``, always symmetric

    Periodic windows are what ``torch.stft`` pipelines use; Kaldi uses symmetric ones.
    """
    if name not in WINDOWS:
        raise ValueError(f"unknown window {name!r}; choose one of {', '.join(WINDOWS)}")
    _check_positive_int(length, "window length")
    if name == "rectangular":
        return torch.ones(length)
    period = length if periodic and name != "povey" else max(length - 1, 1)
    cosine = torch.cos(torch.arange(length, dtype=torch.float32) * (2 * math.pi / period))  # cos(2 pi n / N)
    if name == "hamming":
        return 0.54 - 0.46 * cosine
    hann = 0.5 - 0.5 * cosine
    return hann**0.85 if name == "povey" else hann


# ---- the spectrum ----

def naive_dft(frames: torch.Tensor, n_fft: int | None = None) -> torch.Tensor:
    """The DFT straight from its definition, one frame at a time (slow; for teaching).

    ``X[k] = sum_n x[n] exp(-2 pi i k n / N)`` for ``k = 0 .. N // 2`` (the other half mirrors it
    for real input). Frames shorter than ``N = n_fft`` are padded with zeros.

    Args:
        frames: ``(..., T, L)`` real frames.
        n_fft: ``N``, the DFT size (default ``L``).

    Returns:
        ``(..., T, F)`` complex128 spectrum, equal to ``torch.fft.rfft(frames, n=n_fft)``.
    """
    *batch_shape, frame_length = frames.shape
    n_fft = n_fft or frame_length
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    basis = torch.exp(-2j * math.pi * k[:, None] * n[None, :] / n_fft)  # (F, N): one row per frequency
    padded = F.pad(frames.to(torch.float64), (0, n_fft - frame_length))  # (..., T, N)
    spectra = []
    for frame in padded.reshape(-1, n_fft):  # frame by frame, as the lecture's figure draws it
        spectra.append(basis @ frame.to(torch.complex128))  # (F, N) @ (N,) -> (F,)
    return torch.stack(spectra).reshape(*batch_shape, n_fft // 2 + 1)


def power_spectrum(frames: torch.Tensor, n_fft: int | None = None) -> torch.Tensor:
    """``|X[k]|^2`` of each frame by the FFT: ``(..., T, L)`` -> ``(..., T, F)``, ``F = n_fft // 2 + 1``."""
    spectrum = torch.fft.rfft(frames, n=n_fft, dim=-1)  # (..., T, F) complex
    return spectrum.real.square() + spectrum.imag.square()  # cheaper than abs().pow(2): no square root


# ---- the mel scale and its filter bank ----

def hz_to_mel(frequency):
    """``mel(f) = 1127 ln(1 + f / 700)`` for floats, arrays or tensors of frequencies in Hz.

    HTK writes it ``2595 log10(1 + f / 700)``; the two agree to 5 parts per million (1127 is 2595 / ln 10, rounded).
    """
    if isinstance(frequency, torch.Tensor):
        return 1127.0 * torch.log1p(frequency / 700.0)
    return 1127.0 * np.log1p(np.asarray(frequency, dtype=np.float64) / 700.0)


def mel_to_hz(mel):
    """The inverse of ``hz_to_mel``: ``f = 700 (exp(mel / 1127) - 1)``; floats, arrays or tensors."""
    if isinstance(mel, torch.Tensor):
        return 700.0 * torch.expm1(mel / 1127.0)
    return 700.0 * np.expm1(np.asarray(mel, dtype=np.float64) / 1127.0)


def _triangles(sample_rate: float, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    bin_frequencies = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft  # (F,) in Hz
    edges_mel = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    edges = mel_to_hz(edges_mel)  # (M + 2,) Hz: filter m rises from edges[m], peaks at m+1, ends at m+2
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1) each
    rising = (bin_frequencies - left) / (center - left)  # (M, F): 0 at the left edge, 1 at the centre
    falling = (right - bin_frequencies) / (right - center)  # (M, F): 1 at the centre, 0 at the right edge
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()  # (M, F)


def mel_filterbank(sample_rate: float, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular filters spaced evenly on the mel scale, without area normalisation (HTK).

    The ``M + 2`` edges ``mel_to_hz(linspace(mel(f_min), mel(f_max), M + 2))`` define filter ``m``:
    0 at edge ``m``, rising linearly in Hz to 1 at edge ``m + 1``, falling to 0 at edge ``m + 2``,
    sampled at the FFT bin frequencies ``k * sample_rate / n_fft``. Equal to
    ``torchaudio.functional.melscale_fbanks(F, f_min, f_max, M, sample_rate, None, "htk").T`` and
    ``librosa.filters.mel(sr=..., n_fft=..., n_mels=..., htk=True, norm=None)``.

    Args:
        sample_rate: in Hz.
        n_fft: FFT size; the filters have ``F = n_fft // 2 + 1`` taps.
        n_mels: ``M``, number of filters.
        f_min, f_max: lowest and highest frequency in Hz (default ``f_max = sample_rate / 2``).

    Returns:
        ``(M, F)``: row ``m`` is filter ``m``; ``filters @ power`` turns ``(F, T)`` into ``(M, T)``.

    Example:
        >>> mel_filterbank(16000, n_fft=400, n_mels=80).shape
        torch.Size([80, 201])
    """
    _check_sample_rate(sample_rate)
    _check_positive_int(n_fft, "n_fft")
    _check_positive_int(n_mels, "n_mels")
    nyquist = sample_rate / 2
    f_max = nyquist if f_max is None else f_max
    if not 0 <= f_min < f_max <= nyquist:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2 = {nyquist:g} Hz, got f_min={f_min}, "
                         f"f_max={f_max}")
    filters = _triangles(sample_rate, n_fft, n_mels, f_min, f_max)
    if bool((filters.amax(dim=-1) == 0).any()):  # some triangle falls between two FFT bins
        def all_filled(n_fft: int, n_mels: int) -> bool:
            return bool((_triangles(sample_rate, n_fft, n_mels, f_min, f_max).amax(dim=-1) > 0).all())

        most_mels = next((m for m in range(n_mels - 1, 0, -1) if all_filled(n_fft, m)), None)
        fewest_fft = next((2**p for p in range(1, 20) if 2**p > n_fft and all_filled(2**p, n_mels)), None)
        fixes = [f"n_mels <= {most_mels}"] if most_mels else []
        fixes += [f"n_fft >= {fewest_fft}"] if fewest_fft else []
        raise ValueError(f"n_mels={n_mels} is too many for n_fft={n_fft}: some mel filters fall between FFT bins "
                         f"and would be empty; use {' or '.join(fixes) or 'a wider f_min..f_max range'}")
    return filters


# ---- the whole pipeline, vectorised ----

def mel_spectrogram(waveform: torch.Tensor, sample_rate: float, n_fft: int = 400, hop_length: int = 160,
                    n_mels: int = 80, *, window: str = "hann", f_min: float = 0.0,
                    f_max: float | None = None) -> torch.Tensor:
    """Mel power spectrogram: centred frames, window, FFT power, mel filters; no loop over frames.

    Frame ``t`` is centred on sample ``t * hop_length``: the waveform is first padded with
    ``n_fft // 2`` reflected samples at each end, so ``T = 1 + S // hop_length``. Then
    ``mel[m, t] = sum_k filters[m, k] |FFT(window * frame_t)[k]|^2``. Equal to
    ``torchaudio.transforms.MelSpectrogram(sample_rate, n_fft, hop_length=hop_length, n_mels=n_mels)``.

    Args:
        waveform: ``(..., S)`` samples (float, or integer PCM: see ``as_waveform``).
        sample_rate: in Hz.
        n_fft: window length and FFT size in samples (400 = 25 ms at 16 kHz).
        hop_length: samples between frame centres (160 = 10 ms at 16 kHz).
        n_mels: ``M``, number of mel bands.
        window: ``"hann"`` (periodic), ``"hamming"``, ``"rectangular"`` or ``"povey"``.
        f_min, f_max: frequency range of the filters in Hz (default the whole range up to ``sample_rate / 2``).

    Returns:
        ``(..., M, T)`` mel power, in the waveform's float dtype.
    """
    waveform = as_waveform(waveform)
    _check_sample_rate(sample_rate)
    _check_positive_int(n_fft, "n_fft")
    _check_positive_int(hop_length, "hop_length")
    filters = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max).to(waveform.dtype)  # (M, F)
    frames = centered_frames(waveform, n_fft, hop_length)  # (..., T, n_fft)
    power = power_spectrum(frames * window_function(window, n_fft).to(waveform.dtype))  # (..., T, F)
    return torch.matmul(power, filters.T).transpose(-1, -2)  # (..., T, F) @ (F, M) -> (..., M, T)


def centered_frames(waveform: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Frames of ``n_fft`` samples centred every ``hop_length``: reflect-pad ``n_fft // 2``, then frame."""
    *batch_shape, num_samples = waveform.shape
    half = n_fft // 2
    _check_long_enough(waveform, half + 1, f"reflect padding for centred frames needs more than n_fft // 2 = {half}")
    flat = waveform.reshape(-1, 1, num_samples)  # (B, 1, S): F.pad's reflect mode wants a channel axis
    padded = F.pad(flat, (half, half), mode="reflect").reshape(*batch_shape, num_samples + 2 * half)
    return padded.unfold(-1, n_fft, hop_length)  # (..., T, n_fft) with T = 1 + S // hop_length


def log_mel_spectrogram(waveform: torch.Tensor, sample_rate: float, n_fft: int = 400, hop_length: int = 160,
                        n_mels: int = 80, *, window: str = "hann", f_min: float = 0.0,
                        f_max: float | None = None) -> torch.Tensor:
    """Log-mel features: ``ln(max(mel_spectrogram(...), 1e-10))``, ``(..., S)`` -> ``(..., M, T)``.

    Natural log of the mel power spectrum (Hann window, centred frames with reflect padding,
    power 2), clamped below at 1e-10 so that silence gives -23.0 instead of -inf. Arguments as in
    ``mel_spectrogram``; equal to torchaudio's ``MelSpectrogram`` followed by ``.clamp_min(1e-10).log()``.

    Example:
        >>> waveform, sample_rate = load_audio("data/audio/baby.wav")        # (S,) at 16 kHz
        >>> log_mel_spectrogram(waveform, sample_rate).shape                  # 80 bands, 10 ms frames
        torch.Size([80, 57])
    """
    mel = mel_spectrogram(waveform, sample_rate, n_fft, hop_length, n_mels, window=window, f_min=f_min, f_max=f_max)
    return mel.clamp_min_(1e-10).log_()  # in place: ``mel`` is ours, freshly computed
