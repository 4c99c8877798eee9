"""Reference probabilities and features for models/tests/smart_turn.rs.

Not run by CI. Regenerate with Python 3, numpy and onnxruntime==1.32.0 (the runtime the model
store pins: the int8 kernels of other versions give probabilities a few hundredths apart):

    pip download pipecat-ai==1.14.0 --no-deps -d /tmp/pipecat && cd /tmp/pipecat && unzip -q *.whl
    python3 smart_turn_reference.py /tmp/pipecat ~/.cache/antiphon/models/librivox-clips \
        > ../fixtures/smart_turn_reference.json

It runs the model with the feature extractor shipped next to it in the pipecat-ai wheel
(`pipecat/audio/turn/smart_turn/_whisper_features.py`), so the Rust port is checked against the
features the model is used with upstream, not against itself.
"""

import json
import pathlib
import sys
import wave

import numpy as np
import onnxruntime as ort

wheel = pathlib.Path(sys.argv[1])
clips = pathlib.Path(sys.argv[2])
sys.path.insert(0, str(wheel))
from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features  # noqa: E402

WINDOW = 8 * 16000
model = wheel / "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])


def read(path):
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def window(turn):
    turn = turn[-WINDOW:]
    return np.concatenate([np.zeros(WINDOW - len(turn), np.float32), turn])


cases = []
for wav in sorted(clips.glob("*.wav")):
    audio = read(wav)
    # The whole clip (the reader's sentence and the room tone after it), and its first half.
    for name, end in (("whole", len(audio)), ("half", len(audio) // 2)):
        feats = compute_whisper_log_mel_features(window(audio[:end]), do_normalize=True)
        prob = session.run(None, {"input_features": feats[None]})[0][0].item()
        # A fixed sample of feature values (mel bin, frame) across the window.
        picks = [(m, t) for m in (0, 7, 23, 40, 61, 79) for t in (0, 399, 700, 750, 799)]
        cases.append(
            {
                "clip": wav.stem,
                "case": name,
                "samples": int(end),
                "probability": prob,
                "feature_mean": float(feats.mean()),
                "features": [[m, t, float(feats[m, t])] for m, t in picks],
            }
        )
json.dump(cases, sys.stdout, indent=1)
print()
