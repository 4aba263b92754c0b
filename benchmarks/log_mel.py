"""Benchmark: course_lib's log-mel features vs torchaudio and librosa on 60 s of 16 kHz speech.

All three compute the same thing: a periodic Hann window of 400 samples (25 ms), hop 160 (10 ms),
centred frames with reflect padding, power spectrum, 80 HTK mel filters without area
normalisation, then ``ln(max(mel, 1e-10))``. The input is the shipped espeak-ng clips
(``data/audio``) repeated to 60 s.

Timing: every implementation runs once per round, in a shuffled order, for many rounds; we keep
each one's best time (the least disturbed by whatever else the machine is doing) and report the
median too. Ratios are course_lib's time divided by the other library's (below 1: faster). We
measure with torch's default number of threads (the headline figures) and again with one thread,
which a busy machine disturbs less.

Agreement: the largest absolute difference of the log-mel values from torchaudio's, and from
librosa's. Two sources of difference, both float32 rounding: torchaudio builds its mel filters in
float32 (weights off by up to ~5e-6, which is ~3e-4 relative on a small edge weight), while ours
and librosa's are computed in float64; and in the quietest bands of a loud frame (70 dB or more
below its peak) every float32 FFT, ours and torchaudio's alike, is off by ~1e-3 in the log from
the same pipeline run in float64. We report each of these.

Run: ``.venv/bin/python benchmarks/log_mel.py`` (the last line printed is one JSON object).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

import librosa
import numpy as np
import torch
import torchaudio

from course_lib.audio import load_audio, log_mel_spectrogram, mel_filterbank

SAMPLE_RATE, N_FFT, HOP_LENGTH, N_MELS, SECONDS = 16_000, 400, 160, 80, 60
ROUNDS = 100
DATA = Path(__file__).resolve().parent.parent / "data" / "audio"


def sixty_seconds_of_speech() -> torch.Tensor:
    clips = [load_audio(DATA / f"{name}.wav")[0] for name in ("baby", "sentence", "digits")]
    speech = torch.cat(clips)  # (S,)
    repeats = SECONDS * SAMPLE_RATE // len(speech) + 1
    return speech.repeat(repeats)[: SECONDS * SAMPLE_RATE].contiguous()  # (960000,)


def measure(implementations: dict) -> tuple[dict[str, float], dict[str, float]]:
    """Best and median seconds of each implementation over ``ROUNDS`` shuffled rounds."""
    times: dict[str, list[float]] = {name: [] for name in implementations}
    order = list(implementations)
    rng = random.Random(0)
    for _ in range(ROUNDS):
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            implementations[name]()
            times[name].append(time.perf_counter() - start)
    return ({name: min(values) for name, values in times.items()},
            {name: statistics.median(values) for name, values in times.items()})


def main() -> None:
    waveform = sixty_seconds_of_speech()
    samples = waveform.numpy()
    torchaudio_transform = torchaudio.transforms.MelSpectrogram(  # built once, outside the timing
        SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS)  # defaults: htk, no norm, reflect

    implementations = {
        "course_lib": lambda: log_mel_spectrogram(waveform, SAMPLE_RATE, N_FFT, HOP_LENGTH, N_MELS),
        "torchaudio": lambda: torchaudio_transform(waveform).clamp_min(1e-10).log(),
        "librosa": lambda: np.log(np.maximum(librosa.feature.melspectrogram(
            y=samples, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS, htk=True,
            norm=None, pad_mode="reflect"), 1e-10)),  # librosa pads with zeros unless told to reflect
    }
    outputs = {name: torch.as_tensor(run()) for name, run in implementations.items()}  # also warms up
    default_threads = torch.get_num_threads()
    best, median = measure(implementations)
    torch.set_num_threads(1)
    best_1_thread, _ = measure(implementations)
    torch.set_num_threads(default_threads)

    ours, reference = outputs["course_lib"], outputs["torchaudio"]
    exact = log_mel_spectrogram(waveform.double(), SAMPLE_RATE, N_FFT, HOP_LENGTH, N_MELS)  # float64
    filters = mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS)  # (M, F)
    librosa_filters = torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS,
                                                           htk=True, norm=None))
    report = {
        "ratio_vs_torchaudio": best["course_lib"] / best["torchaudio"],
        "ratio_vs_librosa": best["course_lib"] / best["librosa"],
        "max_abs_diff_log": (ours - reference).abs().max().item(),
        "max_abs_diff_log_vs_librosa": (ours - outputs["librosa"]).abs().max().item(),
        "course_lib_vs_float64": (ours - exact).abs().max().item(),
        "torchaudio_vs_float64": (reference - exact).abs().max().item(),
        "filterbank_max_abs_diff_vs_torchaudio": (filters - torchaudio_transform.mel_scale.fb.T).abs().max().item(),
        "filterbank_max_abs_diff_vs_librosa": (filters - librosa_filters).abs().max().item(),
        "seconds_course_lib": best["course_lib"],
        "seconds_torchaudio": best["torchaudio"],
        "seconds_librosa": best["librosa"],
        "median_ratio_vs_torchaudio": median["course_lib"] / median["torchaudio"],
        "ratio_vs_torchaudio_1_thread": best_1_thread["course_lib"] / best_1_thread["torchaudio"],
        "ratio_vs_librosa_1_thread": best_1_thread["course_lib"] / best_1_thread["librosa"],
        "audio_seconds": SECONDS,
        "rounds": ROUNDS,
        "torch_threads": default_threads,
    }

    print(f"log-mel of {SECONDS} s at {SAMPLE_RATE} Hz: n_fft {N_FFT}, hop {HOP_LENGTH}, {N_MELS} mels, "
          f"{ROUNDS} rounds")
    print(f"{'implementation':<12} {'best (ms)':>10} {'median (ms)':>12} {'course_lib / it':>16} "
          f"{'1 thread: best (ms)':>20} {'course_lib / it':>16}")
    for name in implementations:
        print(f"{name:<12} {best[name] * 1e3:>10.2f} {median[name] * 1e3:>12.2f} "
              f"{best['course_lib'] / best[name]:>16.2f} {best_1_thread[name] * 1e3:>20.2f} "
              f"{best_1_thread['course_lib'] / best_1_thread[name]:>16.2f}")
    print(f"(first columns with torch's default {default_threads} threads; librosa's FFT is single-threaded numpy)")
    print(f"max |log-mel difference| vs torchaudio: {report['max_abs_diff_log']:.2e}; "
          f"vs librosa: {report['max_abs_diff_log_vs_librosa']:.2e}")
    print(f"mel filters: max |difference| vs torchaudio {report['filterbank_max_abs_diff_vs_torchaudio']:.1e}, "
          f"vs librosa {report['filterbank_max_abs_diff_vs_librosa']:.1e}")
    print(f"distance from float64: course_lib {report['course_lib_vs_float64']:.2e}, "
          f"torchaudio {report['torchaudio_vs_float64']:.2e}")
    target_met = report["ratio_vs_torchaudio"] <= 1.2 and report["max_abs_diff_log"] <= 1e-4
    print(f"target (<= 1.2x torchaudio's time, <= 1e-4 in the log): {'met' if target_met else 'NOT met'}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
