#!/usr/bin/env python3
"""Reference Kaldi fbank values for kernels/src/fbank.rs, computed independently with numpy.

Written from Kaldi's documented algorithm (feature-window.cc / mel-computations.cc semantics,
as torchaudio.compliance.kaldi.fbank exposes them), in float64, with numpy's FFT:
  frames of 400 samples every 160 (snip_edges), dither 0, DC removal, pre-emphasis 0.97,
  povey window, zero-pad to 512, power spectrum, 80 triangular mel bins between 20 Hz and
  Nyquist on the mel scale 1127 ln(1 + f/700), natural log floored at float32 epsilon.

Usage: python3 make_fbank_ref.py CLIP.wav > fbank_ref.json
Takes the first 0.5 s of a 16 kHz mono 16-bit WAV, scaled to [-1, 1]; the samples go into
the JSON too, so the Rust test needs no model store.
"""
import json
import sys
import wave

import numpy as np

SR = 16000
FRAME, SHIFT, NFFT, NMEL = 400, 160, 512, 80
EPS = float(np.finfo(np.float32).eps)


def read_clip(path, seconds=0.5):
    with wave.open(path, "rb") as w:
        assert w.getframerate() == SR and w.getnchannels() == 1 and w.getsampwidth() == 2
        raw = w.readframes(int(SR * seconds))
    return np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0


def mel(f):
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def mel_matrix():
    lo, hi = mel(20.0), mel(SR / 2)
    step = (hi - lo) / (NMEL + 1)
    bins_mel = mel(np.arange(NFFT // 2 + 1) * SR / NFFT)
    mat = np.zeros((NMEL, NFFT // 2 + 1))
    for m in range(NMEL):
        l, c, r = lo + m * step, lo + (m + 1) * step, lo + (m + 2) * step
        rising = (bins_mel - l) / (c - l)
        falling = (r - bins_mel) / (r - c)
        mat[m] = np.clip(np.minimum(rising, falling), 0.0, None)
    mat[:, NFFT // 2] = 0.0  # Kaldi never gives the Nyquist bin weight
    return mat


def fbank(x):
    n = 1 + (len(x) - FRAME) // SHIFT
    idx = np.arange(FRAME)[None, :] + SHIFT * np.arange(n)[:, None]
    frames = x[idx]
    frames = frames - frames.mean(axis=1, keepdims=True)
    shifted = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - 0.97 * shifted
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FRAME) / (FRAME - 1))
    frames = frames * hann ** 0.85
    spec = np.abs(np.fft.rfft(frames, n=NFFT, axis=1)) ** 2
    energies = spec @ mel_matrix().T
    return np.log(np.maximum(energies, EPS))


def main():
    path = sys.argv[1]
    x = read_clip(path)
    feats = fbank(x)
    json.dump(
        {
            "source": path.split("/")[-1],
            "seconds": 0.5,
            "scale": "int16 / 32768",
            "samples_i16": [int(round(v * 32768.0)) for v in x],
            "frames": int(feats.shape[0]),
            "bins": int(feats.shape[1]),
            "fbank": [[round(float(v), 6) for v in row] for row in feats],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
