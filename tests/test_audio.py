"""Tests for course_lib.audio and audio_variants.

Shapes, agreement with torchaudio / librosa / Kaldi (torchaudio.compliance), invariants, bad input.
"""

import math
import wave
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch
import torchaudio
from torchaudio.compliance import kaldi

from course_lib.audio import (as_waveform, dequantize, frame_signal, hz_to_mel, load_audio, log_mel_spectrogram,
                              mel_filterbank, mel_spectrogram, mel_to_hz, naive_dft, power_spectrum, quantize,
                              resample, to_mono, window_function)
from course_lib.audio_variants import (AUDIOSET_MEAN, AUDIOSET_STD, ast_features, ast_patch_grid, ast_patches,
                                       kaldi_fbank, kaldi_mel_filterbank, whisper_log_mel, whisper_normalize)

DATA = Path(__file__).resolve().parent.parent / "data" / "audio"
CLIPS = ("baby", "sentence", "digits")
torch.manual_seed(0)


@pytest.fixture(scope="module")
def baby():
    return load_audio(DATA / "baby.wav")[0]


@pytest.fixture(scope="module")
def sentence():
    return load_audio(DATA / "sentence.wav")[0]


# ---- loading, sampling, quantization ----

@pytest.mark.parametrize("name", CLIPS)
def test_clips_load_as_16khz_mono_floats(name):
    waveform, sample_rate = load_audio(DATA / f"{name}.wav")
    assert sample_rate == 16000 and waveform.ndim == 1 and waveform.dtype == torch.float32
    assert 0.3 < len(waveform) / sample_rate < 3.0
    assert 0.05 < waveform.abs().max() < 1.0


def test_int16_pcm_is_divided_by_32768(baby):
    with wave.open(str(DATA / "baby.wav")) as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).copy()
    assert torch.equal(baby * 32768, torch.from_numpy(pcm).float())
    assert torch.equal(as_waveform(torch.from_numpy(pcm)), baby)
    assert torch.equal(quantize(baby, 16), torch.from_numpy(pcm).int())  # the file's own codes


def test_uint8_and_int32_pcm_scales():
    unsigned_8_bit = torch.tensor([0, 128, 255], dtype=torch.uint8)  # 8-bit WAV: silence at 128
    assert torch.equal(as_waveform(unsigned_8_bit), torch.tensor([-1.0, 0.0, 127 / 128]))
    assert torch.equal(as_waveform(torch.tensor([-2**31, 2**30], dtype=torch.int32)), torch.tensor([-1.0, 0.5]))


def test_resampling_on_load(tmp_path, baby):
    waveform, sample_rate = load_audio(DATA / "baby.wav", sample_rate=8000)
    assert sample_rate == 8000 and abs(len(waveform) - len(baby) / 2) <= 1
    assert torch.allclose(waveform, torchaudio.functional.resample(baby, 16000, 8000))
    assert torch.allclose(resample(baby, 16000, 8000), waveform)


def test_stereo_file_is_down_mixed_by_averaging(tmp_path):
    left, right = np.array([1000, -2000, 3000], np.int16), np.array([3000, 0, -3000], np.int16)
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2), wav.setsampwidth(2), wav.setframerate(16000)
        wav.writeframes(np.stack([left, right], axis=1).tobytes())  # interleaved L R L R ...
    stereo, _ = load_audio(path, mono=False)
    assert stereo.shape == (2, 3) and torch.equal(stereo[1] * 32768, torch.from_numpy(right).float())
    mono, _ = load_audio(path)
    assert torch.allclose(mono * 32768, torch.tensor([2000.0, -1000.0, 0.0]))


def test_quantization_round_trip_and_six_db_per_bit(sentence):
    for bits in (4, 8, 12):
        restored = dequantize(quantize(sentence, bits), bits)
        assert (restored - sentence).abs().max() <= 0.5 / 2 ** (bits - 1) + 1e-7  # half a step
    noise = {bits: dequantize(quantize(sentence, bits), bits) - sentence for bits in (6, 8, 10)}
    snr = {bits: 10 * math.log10(sentence.square().sum() / noise[bits].square().sum()) for bits in noise}
    assert 10 < snr[8] - snr[6] < 14 and 10 < snr[10] - snr[8] < 14  # ~6.02 dB per bit
    codes = quantize(torch.tensor([-1.0, 0.999, 2.0]), 8)
    assert codes.tolist() == [-128, 127, 127]  # clipped to the 8-bit range


# ---- framing, windows, DFT ----

def test_frame_signal_by_hand():
    frames = frame_signal(torch.arange(10.0), frame_length=4, hop_length=3)
    assert frames.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]


@pytest.mark.parametrize("S, L, hop", [(16000, 400, 160), (880, 400, 160), (400, 400, 160), (1000, 256, 300)])
def test_frame_count_formula(S, L, hop):
    assert frame_signal(torch.randn(3, S), L, hop).shape == (3, 1 + (S - L) // hop, L)


@pytest.mark.parametrize("name, torch_window", [("hann", torch.hann_window), ("hamming", torch.hamming_window)])
@pytest.mark.parametrize("periodic", [True, False])
def test_windows_equal_torch(name, torch_window, periodic):
    for length in (400, 401, 64):
        assert torch.allclose(window_function(name, length, periodic), torch_window(length, periodic), atol=1e-7)


def test_povey_and_rectangular_windows():
    assert torch.allclose(window_function("povey", 400), torch.hann_window(400, periodic=False) ** 0.85)
    assert torch.equal(window_function("rectangular", 5), torch.ones(5))


@pytest.mark.parametrize("n_fft", [None, 16, 25])
def test_naive_dft_equals_fft(n_fft):
    frames = torch.randn(2, 3, 12, dtype=torch.float64)
    expected = torch.fft.rfft(frames, n=n_fft)
    assert naive_dft(frames, n_fft).shape == expected.shape
    assert torch.allclose(naive_dft(frames, n_fft), expected, atol=1e-10)
    assert torch.allclose(power_spectrum(frames, n_fft), naive_dft(frames, n_fft).abs() ** 2, atol=1e-10)


def test_hamming_leaks_less_than_rectangular():
    tone = torch.cos(2 * math.pi * 1012.5 / 16000 * torch.arange(400))  # between two FFT bins
    far = slice(60, None)  # bins 2.4 kHz and up, far from the tone
    rect = power_spectrum(tone * window_function("rectangular", 400))[far].sum()
    hamming = power_spectrum(tone * window_function("hamming", 400))[far].sum()
    assert hamming < rect / 100


# ---- mel scale and filter bank ----

def test_mel_scale_formulas():
    assert hz_to_mel(700.0) == pytest.approx(1127 * math.log(2))
    assert hz_to_mel(1000.0) == pytest.approx(2595 * math.log10(1 + 1000 / 700), rel=1e-5)  # 1127 ~ 2595 / ln 10
    frequencies = torch.linspace(0, 8000, 9, dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(frequencies)), frequencies)
    assert np.allclose(hz_to_mel(np.array([0.0, 700.0])), [0.0, 1127 * math.log(2)])


FILTERBANK_SETTINGS = [(16000, 400, 80, 0.0, None), (16000, 512, 40, 20.0, 7600.0), (8000, 256, 23, 0.0, None),
                       (22050, 2048, 128, 0.0, None)]


@pytest.mark.parametrize("sample_rate, n_fft, n_mels, f_min, f_max", FILTERBANK_SETTINGS)
def test_filterbank_equals_torchaudio_and_librosa(sample_rate, n_fft, n_mels, f_min, f_max):
    filters = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)
    assert filters.shape == (n_mels, n_fft // 2 + 1)
    expected = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, f_min, f_max or sample_rate / 2, n_mels,
                                                     sample_rate, norm=None, mel_scale="htk").T
    assert torch.allclose(filters, expected, atol=2e-5)  # torchaudio builds its filters in float32
    expected = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max,
                                   htk=True, norm=None, dtype=np.float64)
    assert np.allclose(filters.numpy(), expected, atol=1e-6)


def test_filters_peak_near_one_and_overlap_to_one():
    filters = mel_filterbank(16000, 2048, 40)
    peaks = filters.amax(dim=-1)  # a triangle's centre rarely falls exactly on an FFT bin
    assert bool((peaks <= 1).all()) and bool((peaks > 0.9).all())
    bin_hz = torch.arange(1025) * 16000 / 2048
    first_center, last_center = (mel_to_hz(torch.tensor([hz_to_mel(8000.0) / 41 * k for k in (1, 40)])))
    between = (bin_hz >= first_center) & (bin_hz <= last_center)
    assert torch.allclose(filters.sum(dim=0)[between], torch.ones(int(between.sum())), atol=1e-5)


def test_kaldi_triangles_are_linear_in_mel_not_hz():
    htk, kaldi_style = mel_filterbank(16000, 512, 23, 20.0), kaldi_mel_filterbank(16000, 512, 23, 20.0)
    banks, _ = kaldi.get_mel_banks(23, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
    assert torch.allclose(kaldi_style[:, :-1], banks, atol=1e-5) and bool((kaldi_style[:, -1] == 0).all())
    assert (htk - kaldi_style).abs().max() > 0.01  # same edges, different slopes in between


# ---- the log-mel pipeline ----

@pytest.mark.parametrize("name", CLIPS)
def test_log_mel_equals_torchaudio_on_speech(name):
    waveform, _ = load_audio(DATA / f"{name}.wav")
    features = log_mel_spectrogram(waveform, 16000)
    assert features.shape == (80, 1 + len(waveform) // 160)
    expected = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=80)(waveform)
    # float32 rounding of torchaudio's filters (~5e-6) shows up as <= 1e-4 in the quietest bands
    assert torch.allclose(features, expected.clamp_min(1e-10).log(), atol=2e-4)


def test_log_mel_equals_librosa_with_reflect_padding(sentence):
    speech = sentence[1600:].contiguous()  # start inside the speech, where zero and reflect padding differ
    features = log_mel_spectrogram(speech, 16000, n_fft=512, hop_length=128, n_mels=64)
    settings = dict(y=speech.numpy(), sr=16000, n_fft=512, hop_length=128, n_mels=64, htk=True, norm=None)
    reflect = np.log(np.maximum(librosa.feature.melspectrogram(**settings, pad_mode="reflect"), 1e-10))
    assert np.allclose(features.numpy(), reflect, atol=2e-3)  # librosa's float32 FFT: ~1e-3 in the quietest bands
    zeros = np.log(np.maximum(librosa.feature.melspectrogram(**settings), 1e-10))  # librosa's default padding
    assert np.allclose(features.numpy()[:, 3:-3], zeros[:, 3:-3], atol=2e-3)  # same in the middle...
    assert not np.allclose(features.numpy()[:, :2], zeros[:, :2], atol=1e-2)  # ...not in the padded edge frames


def test_batched_input_equals_one_by_one():
    waveforms = torch.randn(2, 3, 4000)
    batched = log_mel_spectrogram(waveforms, 16000, n_mels=40)
    assert batched.shape == (2, 3, 40, 26)
    assert torch.allclose(batched[1, 2], log_mel_spectrogram(waveforms[1, 2], 16000, n_mels=40), atol=1e-5)


def test_log_mel_invariants():
    silence = log_mel_spectrogram(torch.zeros(1600), 16000)
    assert torch.allclose(silence, torch.full_like(silence, math.log(1e-10)))  # the floor, not -inf
    waveform = torch.randn(1600, dtype=torch.float64)
    louder = log_mel_spectrogram(3 * waveform, 16000) - log_mel_spectrogram(waveform, 16000)
    assert torch.allclose(louder, torch.full_like(louder, 2 * math.log(3)))  # gain -> constant shift in the log
    assert log_mel_spectrogram(waveform, 16000).dtype == torch.float64


def test_mel_spectrogram_is_filters_times_power_of_frames():
    waveform = torch.randn(2000)
    frames = torch.nn.functional.pad(waveform[None, None], (200, 200), mode="reflect")[0, 0].unfold(0, 400, 160)
    power = naive_dft(frames * torch.hann_window(400)).abs() ** 2  # (T, F), the slow way
    expected = (mel_filterbank(16000, 400, 80).double() @ power.T).float()  # (M, T)
    assert torch.allclose(mel_spectrogram(waveform, 16000), expected, rtol=1e-4, atol=1e-6)


# ---- Kaldi, Whisper, AST ----

@pytest.mark.parametrize("window", ["povey", "hamming", "hann", "rectangular"])
def test_kaldi_fbank_equals_torchaudio(sentence, window):
    expected = kaldi.fbank(sentence[None], num_mel_bins=23, dither=0.0, sample_frequency=16000,
                           window_type="hanning" if window == "hann" else window)  # (T, M)
    assert torch.allclose(kaldi_fbank(sentence, 16000, 23, window=window), expected.T, atol=1e-4)


def test_kaldi_fbank_shape_and_batch(baby):
    features = kaldi_fbank(torch.stack([baby, baby.flip(0)]), 16000, 40)
    assert features.shape == (2, 40, 1 + (len(baby) - 400) // 160)
    assert torch.allclose(features[1], kaldi_fbank(baby.flip(0), 16000, 40), atol=1e-5)


def test_whisper_log_mel_equals_whisper_recipe(sentence):
    filters = torch.from_numpy(librosa.filters.mel(sr=16000, n_fft=400, n_mels=80))  # Whisper's Slaney filters
    stft = torch.stft(sentence, 400, 160, window=torch.hann_window(400), return_complex=True)  # whisper/audio.py
    log_spec = torch.clamp(filters @ stft[..., :-1].abs() ** 2, min=1e-10).log10()
    log_spec = (torch.maximum(log_spec, log_spec.max() - 8.0) + 4.0) / 4.0
    features = whisper_log_mel(sentence, filters)
    assert features.shape == (80, len(sentence) // 160)
    assert torch.allclose(features, log_spec, atol=1e-5)


def test_whisper_floor_keeps_80_db():
    normalised = whisper_normalize(torch.tensor([[1e-12, 1e-9, 1.0, 100.0]]))
    assert torch.allclose(normalised, (torch.tensor([[-6.0, -6.0, 0.0, 2.0]]) + 4) / 4)


def test_ast_features_equal_the_ast_recipe(sentence):
    centred = sentence - sentence.mean()
    fbank = kaldi.fbank(centred[None], htk_compat=True, sample_frequency=16000, use_energy=False,
                        window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)  # (T, 128)
    fbank = torch.nn.functional.pad(fbank, (0, 0, 0, 1024 - fbank.shape[0]))  # zero-pad to 1024 frames
    expected = ((fbank - AUDIOSET_MEAN) / (AUDIOSET_STD * 2)).T  # (128, 1024)
    assert torch.allclose(ast_features(sentence), expected, atol=1e-4)


def test_ast_patch_count_formula():
    assert ast_patch_grid(128, 1024) == (12, 101)  # 1212 patches, as in the AST paper
    assert ast_patches(torch.randn(128, 1024)).shape == (1212, 256)
    assert ast_patches(torch.randn(2, 128, 300)).shape == (2, 12 * 29, 256)


def test_ast_patches_equal_conv2d_patch_embedding():
    spectrogram = torch.randn(2, 128, 100)
    conv = torch.nn.Conv2d(1, 8, kernel_size=16, stride=10)
    expected = conv(spectrogram[:, None]).flatten(2).transpose(1, 2)  # (B, N, D), row-major over the grid
    got = ast_patches(spectrogram) @ conv.weight.reshape(8, 256).T + conv.bias
    assert torch.allclose(got, expected, atol=1e-5)


def test_ast_patches_without_overlap_equal_lesson_01_patchify():
    patches = pytest.importorskip("course_lib.patches")
    spectrogram = torch.randn(2, 32, 48)
    assert torch.equal(ast_patches(spectrogram, 16, 16), patches.patchify(spectrogram[:, None], 16))


# ---- bad input: clear errors from course_lib ----

@pytest.mark.parametrize("waveform, error, words", [
    (torch.tensor([]), ValueError, "empty"),
    (torch.tensor([0.0, float("nan"), 0.0] * 200), ValueError, "NaN or inf samples, the first at index (1,)"),
    (torch.tensor([0.0] * 600 + [float("inf")]), ValueError, "index (600,)"),
    (torch.zeros(150), ValueError, "150 samples"),
    (torch.zeros(16000, 2), ValueError, "looks like (samples, channels)"),
    ([0.0] * 1000, TypeError, "torch.tensor(samples"),
    (torch.zeros(1000, dtype=torch.int64), TypeError, "no PCM scale"),
    (torch.zeros(1000, dtype=torch.complex64), TypeError, "no PCM scale"),
])
def test_bad_waveforms_raise_clear_errors(waveform, error, words):
    with pytest.raises(error) as raised:
        log_mel_spectrogram(waveform, 16000)
    assert words in str(raised.value)


@pytest.mark.parametrize("sample_rate, error", [(0, ValueError), (-16000, ValueError), (float("nan"), ValueError),
                                                ("16000", TypeError), (True, TypeError)])
def test_bad_sample_rates(sample_rate, error):
    with pytest.raises(error, match="sample_rate"):
        log_mel_spectrogram(torch.zeros(1000), sample_rate)


def test_too_many_mels_names_the_fix():
    with pytest.raises(ValueError, match=r"n_mels=128 is too many for n_fft=400.*n_mels <= 89 or n_fft >= 1024"):
        mel_filterbank(16000, 400, 128)
    with pytest.raises(ValueError, match="n_mels=128"):
        log_mel_spectrogram(torch.zeros(1000), 16000, n_mels=128)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(16000, 400, 80, f_max=9000.0)
    with pytest.raises(ValueError, match="fewer than 400"):
        frame_signal(torch.zeros(399), 400, 160)
    with pytest.raises(ValueError, match="hop_length must be positive"):
        frame_signal(torch.zeros(1000), 400, 0)
    with pytest.raises(TypeError, match="n_fft must be an int"):
        log_mel_spectrogram(torch.zeros(1000), 16000, n_fft=400.0)
    with pytest.raises(ValueError, match="unknown window 'hanning'"):
        window_function("hanning", 400)
    with pytest.raises(ValueError, match="pass waveform.T"):
        to_mono(torch.zeros(48000, 2))
    with pytest.raises(ValueError, match="bits must be between 2 and 24"):
        quantize(torch.zeros(10), 1)
    with pytest.raises(ValueError, match="smaller than one 16 x 16 patch"):
        ast_patch_grid(128, 10)
