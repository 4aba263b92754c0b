"""The lesson 06 checks pass on the reference, fail precisely on wrong answers, say 'todo' on stubs."""

import math

import torch
import torchaudio

from course_lib import audio
from course_lib.audio_variants import kaldi_mel_filterbank
from course_lib.checks.audio import check_frame_signal, check_log_mel, check_mel_filterbank


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


def test_checks_pass_on_reference():
    assert check_frame_signal(audio.frame_signal).passed
    assert check_mel_filterbank(audio.mel_filterbank).passed
    assert check_log_mel(audio.log_mel_spectrogram).passed


def test_checks_report_stubs_as_todo():
    for check in (check_frame_signal, check_mel_filterbank, check_log_mel):
        result = check(stub)
        assert result.status == "todo" and "not implemented yet" in repr(result)


def test_frame_signal_check_gives_the_frame_count_formula():
    drops_last_frame = lambda waveform, L, hop: waveform.unfold(0, L, hop)[:-1]
    result = check_frame_signal(drops_last_frame)
    assert result.status == "fail"
    assert "shape (2, 4), expected (3, 4)" in result.message and "1 + (10 - 4) // 3 = 3" in result.message


def test_frame_signal_check_shows_where_frames_start():
    reversed_frames = lambda waveform, L, hop: waveform.unfold(0, L, hop).flip(0)
    result = check_frame_signal(reversed_frames)
    assert result.status == "fail" and "start at [6.0, 3.0, 0.0] but should start at [0.0, 3.0, 6.0]" in result.message


def test_mel_filterbank_check_names_the_mistake():
    transposed = check_mel_filterbank(lambda *args: audio.mel_filterbank(*args).T)
    assert transposed.status == "fail" and "(F, M) = (201, 80)" in transposed.message
    linear_in_mel = check_mel_filterbank(kaldi_mel_filterbank)  # same arguments: (sr, n_fft, n_mels, f_min, f_max)
    assert linear_in_mel.status == "fail" and "straight lines in mel" in linear_in_mel.message
    slaney_norm = check_mel_filterbank(lambda sr, n_fft, n_mels, lo, hi: torchaudio.functional.melscale_fbanks(
        n_fft // 2 + 1, lo, hi or sr / 2, n_mels, sr, "slaney", "htk").T)
    assert slaney_norm.status == "fail" and "area-normalised" in slaney_norm.message


def test_mel_filterbank_check_points_at_the_first_wrong_filter():
    scaled = check_mel_filterbank(lambda *args: 1.5 * audio.mel_filterbank(*args))
    assert scaled.status == "fail"
    assert "filter 29 at bin 27 (1080.0 Hz) is 1.498, expected 0.9986" in scaled.message
    assert "evenly spaced in mel" in scaled.message


def test_log_mel_check_names_the_mistake():
    cases = {
        "log10, not the natural log": lambda *args: audio.log_mel_spectrogram(*args) / math.log(10),
        "take its log": audio.mel_spectrogram,
        "no window (rectangular)": lambda *args: audio.log_mel_spectrogram(*args, window="rectangular"),
        "(T, M) = (26, 80)": lambda *args: audio.log_mel_spectrogram(*args).T,
    }
    for words, wrong in cases.items():
        result = check_log_mel(wrong)
        assert result.status == "fail" and words in result.message, (words, result.message)


def test_log_mel_check_detects_frames_not_centred():
    def not_centred(waveform, sample_rate, n_fft, hop_length, n_mels):
        frames = audio.frame_signal(waveform, n_fft, hop_length) * torch.hann_window(n_fft)  # (T, n_fft)
        power = audio.power_spectrum(frames) @ audio.mel_filterbank(sample_rate, n_fft, n_mels).T  # (T, M)
        return power.T.clamp_min(1e-10).log()
    result = check_log_mel(not_centred)
    assert result.status == "fail" and "23 frames instead of 1 + S // hop = 26" in result.message
    assert "reflect" in result.message


def test_log_mel_check_reports_an_unknown_difference_precisely():
    result = check_log_mel(lambda *args: audio.log_mel_spectrogram(*args) + 0.01)
    assert result.status == "fail" and "differs at 2080 of 2080 elements; first at index (0, 0)" in result.message


def test_crash_in_student_code_is_a_failure_not_an_exception():
    result = check_log_mel(lambda waveform, *args: waveform.reshape(7, -1))
    assert result.status == "fail" and "RuntimeError" in result.message
