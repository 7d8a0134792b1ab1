"""Whisper log-mel features of 30 s clips: qwen2audio's C++ front end beside NumPy (and torch, when installed)
computing the same transformers formula in the same process.

    .venv/bin/python bench/bench_log_mel.py [--clips 1 8 32] [--repeats 5]

NumPy baseline: transformers' formula vectorised over frames (np.fft.rfft of all frames at once, dense mel
matrix product, log10, clamp) - what a careful NumPy port does, not transformers' frame-by-frame loop. Its
speed depends on the BLAS NumPy links; the script prints which. Torch baseline: transformers' own torch path
(torch.stft, the one the reference features were made with), with torch.set_num_threads(threads).
Timings are the best of --repeats runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from qwen2audio import _core
from qwen2audio.audio import WhisperFeatureExtractor

N_SAMPLES, N_FFT, HOP = 480000, 400, 160


def numpy_log_mel(clip: np.ndarray, mel_filters: np.ndarray, window: np.ndarray) -> np.ndarray:
    """transformers' WhisperFeatureExtractor formula for one clip, in NumPy (float32 like its torch path)."""
    padded = np.zeros(N_SAMPLES, np.float32)
    padded[: min(clip.size, N_SAMPLES)] = clip[:N_SAMPLES]
    padded = np.pad(padded, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    spectrum = np.fft.rfft(frames * window, axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)[:-1].T  # drop the last frame
    mel = mel_filters @ power
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def torch_log_mel(torch, clip, mel_filters, window):
    """transformers' _torch_extract_fbank_features for one clip."""
    waveform = torch.zeros(N_SAMPLES)
    waveform[: min(clip.numel(), N_SAMPLES)] = clip[:N_SAMPLES]
    stft = torch.stft(waveform, N_FFT, HOP, window=window, return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    log_spec = torch.clamp(mel_filters @ magnitudes, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def best_ms(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def blas_name() -> str:
    try:
        return np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]  # NumPy >= 1.25
    except TypeError:
        info = np.__config__.get_info("blas_opt_info") or np.__config__.get_info("blas_info")
        return ",".join(info.get("libraries", ["?"]))
    except Exception:  # informational only
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-repeats", type=int, default=2)
    args = parser.parse_args()

    all_threads = os.cpu_count() or 1
    extractor = WhisperFeatureExtractor(feature_size=128)
    mel_filters = extractor.mel_filters.T.astype(np.float32)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
    try:
        import torch

        torch_filters, torch_window = torch.from_numpy(mel_filters), torch.hann_window(N_FFT)
    except ImportError:
        torch = None

    # Full-length clips (no padding to skip): speech-like noise bursts at varying levels.
    generator = np.random.default_rng(0)
    clips = []
    for _ in range(max(args.clips)):
        envelope = np.repeat(generator.uniform(0.01, 0.5, N_SAMPLES // 1600), 1600)
        clips.append((generator.standard_normal(N_SAMPLES) * envelope).astype(np.float32))

    ours = extractor(clips[:1])["input_features"][0]
    reference = numpy_log_mel(clips[0], mel_filters, window)
    print(f"CPU: {platform.processor() or platform.machine()}, {all_threads} threads; "
          f"kernel ISA: {_core.cpu_lane_isa()}; NumPy {np.__version__} BLAS: {blas_name()}"
          + (f"; torch {torch.__version__}" if torch else ""))
    print(f"same formula check: max |ours - numpy| = {np.abs(ours - reference).max():.2e}\n")

    header = f"{'clips':>5} {'threads':>7} {'ours ms':>9} {'numpy ms':>9} {'speedup':>8}"
    if torch:
        header += f" {'torch ms':>9} {'speedup':>8}"
    print(header)
    for count in args.clips:
        batch = clips[:count]
        numpy_ms = best_ms(lambda: [numpy_log_mel(clip, mel_filters, window) for clip in batch], args.baseline_repeats)
        for threads in sorted({1, all_threads}):
            ours_ms = best_ms(lambda: extractor(batch, num_threads=threads), args.repeats)
            line = f"{count:>5} {threads:>7} {ours_ms:>9.1f} {numpy_ms:>9.1f} {numpy_ms / ours_ms:>7.1f}x"
            if torch:
                torch.set_num_threads(threads)
                torch_batch = [torch.from_numpy(clip) for clip in batch]
                torch_ms = best_ms(
                    lambda: [torch_log_mel(torch, clip, torch_filters, torch_window) for clip in torch_batch],
                    args.baseline_repeats,
                )
                line += f" {torch_ms:>9.1f} {torch_ms / ours_ms:>7.1f}x"
            print(line)
    print("(NumPy runs single-threaded here at both thread settings: one baseline per row pair.)")

    print("\nDFT kernel variants, 1 clip, 1 thread (default: double):")
    isas = ["sse", "avx2", "avx512"]
    for precision in ("double", "float"):
        for isa in isas[: isas.index(_core.cpu_lane_isa()) + 1]:
            log_mel = _core.WhisperLogMel(precision=precision, isa=isa)
            variant_ms = best_ms(lambda: log_mel(clips[:1], num_threads=1), args.repeats)
            print(f"  {precision:>6} {isa:>6}: {variant_ms:6.2f} ms")


if __name__ == "__main__":
    main()
