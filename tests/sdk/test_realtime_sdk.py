#!/usr/bin/env python3
"""One spoken turn through `antiphon serve` with the official OpenAI Python SDK's Realtime client.

Connects with `AsyncOpenAI(...).realtime.connect` (GA dialect) or
`AsyncOpenAI(...).beta.realtime.connect` (beta dialect, header `OpenAI-Beta: realtime=v1`),
updates the session (instructions, voice `joe`, pcm16 24 kHz both ways, server VAD, input
transcription), streams a LibriVox clip as a microphone would (20 ms frames at real-time pace,
then silence) and checks that the turn is detected, transcribed and answered with speech.

Every server event is parsed by the SDK and then validated strictly against the SDK's own
pydantic model for its type, so a field the SDK requires but the server leaves out fails here.

Usage: test_realtime_sdk.py --port PORT --dialect {ga,beta} [--clip NAME] [--timeout S]
Exit status 0 when the turn passed, 1 when it failed.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import math
import os
import re
import sys
import time
import wave
from collections import Counter
from pathlib import Path

import pydantic
from openai import AsyncOpenAI

API_KEY = "antiphon-demo-key"
RATE = 24_000
FRAME = RATE // 50  # 20 ms
TRAILING_SILENCE_S = 1.5
# Reply audio whose RMS is below this (full scale 1.0, about -50 dBFS) counts as silence.
RMS_FLOOR = 0.003
MIN_WORD_RECALL = 0.70
DEFAULT_CLIP = "sense_and_sensibility_01_austen_64kb-0880"

# Event names that differ between the dialects; everything else used here is shared.
NAMES = {
    "ga": {
        "audio_delta": "response.output_audio.delta",
        "audio_done": "response.output_audio.done",
        "transcript_delta": "response.output_audio_transcript.delta",
        "transcript_done": "response.output_audio_transcript.done",
    },
    "beta": {
        "audio_delta": "response.audio.delta",
        "audio_done": "response.audio.done",
        "transcript_delta": "response.audio_transcript.delta",
        "transcript_done": "response.audio_transcript.done",
    },
}


class TurnFailed(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise TurnFailed(message)


# ---------------------------------------------------------------- audio

def clip_dir() -> Path:
    root = os.environ.get("ANTIPHON_MODELS")
    base = Path(root) if root else Path.home() / ".cache" / "antiphon" / "models"
    return base / "librivox-clips"


def read_wav_mono16(path: Path) -> tuple[list[int], int]:
    """Samples (int16 values) and rate of a 16-bit PCM WAV; stereo is averaged to mono."""
    with wave.open(str(path), "rb") as w:
        check(w.getsampwidth() == 2, f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        channels, rate = w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    samples = array.array("h")
    samples.frombytes(raw)
    if sys.byteorder == "big":  # WAV is little-endian
        samples.byteswap()
    if channels > 1:
        mono = [sum(samples[i:i + channels]) // channels for i in range(0, len(samples), channels)]
        return mono, rate
    return samples.tolist(), rate


def resample_linear(samples: list[int], src: int, dst: int) -> list[int]:
    """Linear interpolation: enough for an upsampling (16 -> 24 kHz) that adds no content."""
    if src == dst or not samples:
        return list(samples)
    n_out = (len(samples) * dst) // src
    last = len(samples) - 1
    out = []
    for i in range(n_out):
        t = i * src / dst
        j = int(t)
        frac = t - j
        a = samples[min(j, last)]
        b = samples[min(j + 1, last)]
        out.append(int(round(a + (b - a) * frac)))
    return out


def pcm16_bytes(samples: list[int]) -> bytes:
    a = array.array("h", samples)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


def rms_of_pcm16(data: bytes) -> float:
    a = array.array("h")
    a.frombytes(data[: len(data) - len(data) % 2])
    if sys.byteorder == "big":
        a.byteswap()
    if not a:
        return 0.0
    return math.sqrt(sum(x * x for x in a) / len(a)) / 32768.0


# ---------------------------------------------------------------- text

def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_recall(reference: str, heard: str) -> float:
    """Share of the reference words (as a multiset) found in what was heard."""
    ref, got = Counter(words(reference)), Counter(words(heard))
    total = sum(ref.values())
    return sum(min(n, got[w]) for w, n in ref.items()) / total if total else 0.0


# ---------------------------------------------------------------- session

def session_config(dialect: str, vad_type: str) -> dict:
    instructions = "You are a friendly voice assistant. Answer in one short sentence."
    transcription = {"model": "moonshine-base-en"}
    if vad_type == "semantic_vad":
        vad = {"type": "semantic_vad", "eagerness": "auto"}
    else:
        vad = {"type": "server_vad", "silence_duration_ms": 500}
    if dialect == "ga":
        return {
            "type": "realtime",
            "instructions": instructions,
            "output_modalities": ["audio"],
            "max_output_tokens": 40,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "transcription": transcription,
                    "turn_detection": vad,
                },
                "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": "joe"},
            },
        }
    return {
        "instructions": instructions,
        "modalities": ["audio", "text"],
        "max_response_output_tokens": 40,
        "voice": "joe",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": transcription,
        "turn_detection": vad,
    }


class Events:
    """Receives, parses and strictly validates server events; keeps a log of their types."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.seen: list[str] = []
        self.invalid: list[str] = []

    async def next(self, deadline: float):
        remaining = deadline - time.monotonic()
        check(remaining > 0, f"timed out; events so far: {summary(self.seen)}")
        try:
            raw = await asyncio.wait_for(self.conn.recv_bytes(), remaining)
        except asyncio.TimeoutError:
            raise TurnFailed(f"timed out waiting for an event; events so far: {summary(self.seen)}")
        event = self.conn.parse_event(raw)
        kind = getattr(event, "type", None) or (event.get("type") if isinstance(event, dict) else None)
        self.seen.append(str(kind))
        model = type(event)
        # Antiphon's own `antiphon.*` extension events are not in the SDK's union.
        if isinstance(kind, str) and not kind.startswith("antiphon.") and issubclass(model, pydantic.BaseModel):
            try:
                model.model_validate_json(raw)
            except pydantic.ValidationError as e:
                problems = [err for err in e.errors() if not is_model_name_literal(err)]
                if problems:
                    self.invalid.append(f"{kind} as {model.__name__}: {problems}")
        if kind == "error":
            err = getattr(event, "error", None)
            raise TurnFailed(f"server sent error: {getattr(err, 'code', None)}: {getattr(err, 'message', err)}")
        return kind, event


def is_model_name_literal(err: dict) -> bool:
    """The beta SDK types `session.model` as a Literal of OpenAI's own model names; a
    self-hosted server names its own model there, which the SDK itself accepts (it parses
    without validating), so this one mismatch is not a protocol fault."""
    return err.get("type") == "literal_error" and tuple(err.get("loc", ()))[-1:] == ("model",)


def summary(seen: list[str]) -> str:
    """Event types in order, with runs of the same type collapsed to `type xN`."""
    out: list[str] = []
    for kind in seen:
        if out and out[-1].split(" x")[0] == kind:
            base, _, n = out[-1].partition(" x")
            out[-1] = f"{base} x{int(n or 1) + 1}"
        else:
            out.append(kind)
    return ", ".join(out)


async def microphone(conn, clip: list[int], state: dict) -> None:
    """Sends the clip, then silence, one 20 ms frame every 20 ms, until cancelled."""
    silence = bytes(2 * FRAME)
    pcm = pcm16_bytes(clip)
    step = 2 * FRAME
    next_at = time.monotonic()
    pos = 0
    while True:
        if pos < len(pcm):
            frame = pcm[pos:pos + step]
            pos += step
            if pos >= len(pcm):
                state["clip_sent_at"] = time.monotonic()
        else:
            frame = silence
            state["silence_frames"] = state.get("silence_frames", 0) + 1
        await conn.input_audio_buffer.append(audio=base64.b64encode(frame).decode("ascii"))
        next_at += 0.020
        now = time.monotonic()
        if next_at < now - 0.2:  # fell far behind on a loaded box: resynchronise, don't burst
            next_at = now
        await asyncio.sleep(max(0.0, next_at - now))


async def run_turn(port: int, dialect: str, vad_type: str, clip_name: str, timeout: float) -> dict:
    names = NAMES[dialect]
    wav_path = clip_dir() / f"{clip_name}.wav"
    reference = (clip_dir() / f"{clip_name}.txt").read_text().strip()
    samples, rate = read_wav_mono16(wav_path)
    clip = resample_linear(samples, rate, RATE)

    client = AsyncOpenAI(api_key=API_KEY, websocket_base_url=f"ws://127.0.0.1:{port}/v1")
    started = time.monotonic()
    deadline = started + timeout
    if dialect == "ga":
        # No silent reconnects: a dropped connection must fail the test.
        manager = client.realtime.connect(model="antiphon", max_retries=0)
    else:
        manager = client.beta.realtime.connect(model="antiphon")
    result: dict = {"dialect": dialect}
    async with manager as conn:
        events = Events(conn)
        kind, _ = await events.next(deadline)
        check(kind == "session.created", f"first event is {kind!r}, expected session.created")

        await conn.session.update(session=session_config(dialect, vad_type))
        while True:
            kind, updated = await events.next(deadline)
            if kind == "session.updated":
                break
        s = updated.session
        if dialect == "ga":
            voice = s.audio.output.voice
            check(s.audio.input.turn_detection is not None
                  and s.audio.input.turn_detection.type == vad_type,
                  f"turn detection not {vad_type}: {s.audio.input.turn_detection}")
            check(s.audio.input.transcription is not None, "input transcription is off")
            check(s.audio.input.format.rate == RATE and s.audio.output.format.rate == RATE,
                  "audio formats are not 24 kHz pcm")
        else:
            voice = s.voice
            check(s.turn_detection is not None and s.turn_detection.type == vad_type,
                  f"turn detection not {vad_type}: {s.turn_detection}")
            check(s.input_audio_transcription is not None, "input transcription is off")
            check(s.input_audio_format == "pcm16" and s.output_audio_format == "pcm16",
                  f"formats {s.input_audio_format}/{s.output_audio_format}, expected pcm16")
        check(voice == "joe", f"session voice is {voice!r}, expected 'joe'")

        state: dict = {}
        mic = asyncio.create_task(microphone(conn, clip, state))
        user_transcript = None
        reply_pcm = bytearray()
        reply_deltas = 0
        transcript_deltas: list[str] = []
        transcript_done = None
        done = None
        t_stopped = t_first_audio = None
        try:
            while done is None:
                check(not mic.done() or mic.cancelled(), f"microphone stopped: {mic.exception() if mic.done() else ''}")
                kind, ev = await events.next(deadline)
                if kind == "input_audio_buffer.speech_stopped":
                    t_stopped = t_stopped or time.monotonic()
                elif kind == "conversation.item.input_audio_transcription.completed":
                    user_transcript = ev.transcript
                elif kind == names["audio_delta"]:
                    t_first_audio = t_first_audio or time.monotonic()
                    reply_deltas += 1
                    reply_pcm += base64.b64decode(ev.delta)
                elif kind == names["transcript_delta"]:
                    transcript_deltas.append(ev.delta)
                elif kind == names["transcript_done"]:
                    transcript_done = ev.transcript
                elif kind == "response.done":
                    done = ev
        finally:
            mic.cancel()
            try:
                await mic
            except (asyncio.CancelledError, Exception):
                pass

    seen = events.seen
    result.update(
        events=summary(seen),
        user_transcript=user_transcript,
        reference=reference,
        reply_transcript=transcript_done,
        reply_audio_s=len(reply_pcm) / 2 / RATE,
        reply_deltas=reply_deltas,
        turn_s=time.monotonic() - started,
    )
    if state.get("clip_sent_at") and t_first_audio:
        result["clip_end_to_first_audio_ms"] = (t_first_audio - state["clip_sent_at"]) * 1000
    if t_stopped and t_first_audio:
        result["speech_stopped_to_first_audio_ms"] = (t_first_audio - t_stopped) * 1000

    check(not events.invalid, "events the SDK's models reject:\n  " + "\n  ".join(events.invalid))
    check("input_audio_buffer.speech_started" in seen, f"no speech_started; events: {summary(seen)}")
    check("input_audio_buffer.speech_stopped" in seen, f"no speech_stopped; events: {summary(seen)}")
    check(seen.index("input_audio_buffer.speech_started") < seen.index("input_audio_buffer.speech_stopped"),
          "speech_stopped came before speech_started")
    check(user_transcript is not None,
          f"no conversation.item.input_audio_transcription.completed; events: {summary(seen)}")
    recall = word_recall(reference, user_transcript)
    result["word_recall"] = recall
    check(recall >= MIN_WORD_RECALL,
          f"user transcript {user_transcript!r} has {recall:.0%} of the reference words of "
          f"{reference!r} (need {MIN_WORD_RECALL:.0%})")
    check(reply_deltas >= 1, f"no {names['audio_delta']}; events: {summary(seen)}")
    rms = rms_of_pcm16(bytes(reply_pcm))
    result["reply_rms"] = rms
    check(rms > RMS_FLOOR, f"reply audio is silent: RMS {rms:.5f} <= {RMS_FLOOR}")
    joined = "".join(transcript_deltas)
    check(joined.strip() != "", f"no reply transcript deltas ({names['transcript_delta']})")
    check(transcript_done is not None and transcript_done.strip() != "",
          f"no non-empty {names['transcript_done']}")
    check(joined.strip() == transcript_done.strip(),
          f"transcript deltas {joined!r} differ from the done transcript {transcript_done!r}")
    check(done.response.status == "completed",
          f"response.done status {done.response.status!r}: {done.response.status_details}")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dialect", choices=["ga", "beta"], required=True)
    p.add_argument("--turn-detection", choices=["server_vad", "semantic_vad"],
                   default="server_vad")
    p.add_argument("--clip", default=DEFAULT_CLIP, help="LibriVox clip name (wav + txt)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole turn")
    args = p.parse_args()
    label = f"sdk {args.dialect} {args.turn_detection}"
    try:
        r = asyncio.run(run_turn(args.port, args.dialect, args.turn_detection, args.clip,
                                 args.timeout))
    except TurnFailed as e:
        print(f"{label}: FAIL: {e}", flush=True)
        return 1
    except Exception as e:  # connection refused, protocol errors: a failure, with its cause
        print(f"{label}: FAIL: {type(e).__name__}: {e}", flush=True)
        return 1
    print(f"{label}: events: {r['events']}")
    print(f"{label}: user said {r['reference']!r}; heard {r['user_transcript']!r} "
          f"({r['word_recall']:.0%} of the words)")
    print(f"{label}: reply {r['reply_transcript']!r}: {r['reply_audio_s']:.2f} s of audio in "
          f"{r['reply_deltas']} deltas, RMS {r['reply_rms']:.3f}")
    timing = ", ".join(f"{k} {r[k]:.0f} ms" for k in ("speech_stopped_to_first_audio_ms",
                                                       "clip_end_to_first_audio_ms") if k in r)
    print(f"{label}: {timing}; whole turn {r['turn_s']:.1f} s")
    print(f"{label}: PASS", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
