#!/usr/bin/env python3
"""Headless browser check of the web demo: real Chromium, a WAV file as the microphone.

Drives Debian's chromium + chromedriver over plain WebDriver HTTP (stdlib only, no browser
download), opens `/?autostart=1` on a running `antiphon serve`, lets the WAV play once as the
microphone, then reads `window.antiphonDemo` and writes a screenshot.

    python3 web-demo/headless_check.py --base http://127.0.0.1:18080 \
        --wav ~/.cache/antiphon/models/librivox-clips/<clip>.wav --seconds 12 \
        --screenshot /tmp/webdemo.png --json /tmp/webdemo.json [--expect-reply]

Exit status 0 when the page connected, got a session, streamed microphone audio and (with
--expect-reply) played reply audio and showed a latency waterfall; with --expect-webrtc also
that the reply arrived as RTP/Opus on the WebRTC track and was not silent (the browser's own
getStats); 1 otherwise. --until-reply ends the run once the first reply has finished playing.
"""

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriver:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        self.session = None

    def call(self, method, path, body=None, timeout=60):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"{}").get("value")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"webdriver {method} {path}: {e.code} {e.read()[:500]!r}") from None

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.call("GET", "/status", timeout=2).get("ready"):
                    return
            except (OSError, RuntimeError):
                pass
            time.sleep(0.2)
        raise RuntimeError("chromedriver did not become ready")

    def start(self, chromium, args):
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": chromium, "args": args},
                    "goog:loggingPrefs": {"browser": "ALL"},
                }
            }
        }
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def s(self, path):
        return f"/session/{self.session}{path}"

    def get(self, url):
        self.call("POST", self.s("/url"), {"url": url})

    def js(self, script, *args):
        return self.call("POST", self.s("/execute/sync"), {"script": script, "args": list(args)})

    def screenshot(self, path):
        png = base64.b64decode(self.call("GET", self.s("/screenshot")))
        with open(path, "wb") as f:
            f.write(png)

    def console(self):
        try:
            return self.call("POST", self.s("/se/log"), {"type": "browser"}) or []
        except RuntimeError:
            return []

    def quit(self):
        if self.session:
            try:
                self.call("DELETE", self.s(""), timeout=10)
            except (OSError, RuntimeError):
                pass


SNAPSHOT_JS = """
const d = window.antiphonDemo;
if (!d) return null;
return JSON.parse(JSON.stringify({
  state: d.state, statusText: d.statusText, connected: d.connected, sessionReady: d.sessionReady,
  sessionId: d.sessionId, mode: d.mode, voice: d.voice, transport: d.transport, webrtc: d.webrtc,
  waterfalls: document.querySelectorAll('#turns .turn .wf').length,
  sessionVoice: d.session && d.session.audio ? d.session.audio.output.voice : null,
  turnDetection: d.session && d.session.audio ? d.session.audio.input.turn_detection : null,
  transcription: d.session && d.session.audio ? d.session.audio.input.transcription : null,
  transcripts: d.transcripts.map(t => ({role: t.role, itemId: t.itemId, text: t.text, final: t.final,
                                       speaker: t.speaker, interrupted: t.interrupted})),
  turns: d.turns, latency: d.latency, audio: d.audio, errors: d.errors,
  eventCounts: d.eventCounts, sentCounts: d.sentCounts, closed: d.closed,
  alert: document.getElementById('alert').hidden ? null : document.getElementById('alert').textContent,
}));
"""


def first_reply_done(snap):
    """A reply finished (response.done) and its audio was heard and measured by the page."""
    return any(
        t["status"] != "in_progress" and t["page"]["firstAudioHeardMs"] is not None and t["latency"]
        for t in snap["turns"]
    ) and snap["state"] not in ("speaking", "thinking")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="http://127.0.0.1:18080", help="server base URL, or the page's URL (…/index.html)")
    ap.add_argument("--query", default="autostart=1", help="page query string")
    ap.add_argument("--wav", required=True, help="WAV played once as the microphone")
    ap.add_argument("--seconds", type=float, default=12.0, help="how long to let the session run")
    ap.add_argument("--screenshot", default="/tmp/webdemo.png")
    ap.add_argument("--json", default=None, help="write the final antiphonDemo snapshot here")
    ap.add_argument("--ptt", type=float, default=0.0, metavar="S",
                    help="push-to-talk: press Talk once the session is ready, press again after S s")
    ap.add_argument("--window", default="1280,900", help="window size W,H")
    ap.add_argument("--dark", action="store_true", help="render with prefers-color-scheme: dark")
    ap.add_argument("--deny-mic", action="store_true", help="deny the microphone permission")
    ap.add_argument("--expect-error", default=None, metavar="SOURCE",
                    help="pass only if antiphonDemo.errors has an entry from SOURCE (auth, network, microphone, server)")
    ap.add_argument("--expect-reply", action="store_true", help="also require reply audio + latency")
    ap.add_argument("--expect-webrtc", action="store_true",
                    help="require the reply as non-silent RTP audio on the WebRTC track (getStats)")
    ap.add_argument("--until-reply", action="store_true",
                    help="stop (and take the screenshot) once the first reply finished playing")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--chromedriver", default=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    a = ap.parse_args()

    wav = os.path.abspath(os.path.expanduser(a.wav))
    if not os.path.isfile(wav):
        sys.exit(f"no such WAV: {wav}")
    profile = tempfile.mkdtemp(prefix="webdemo-chromium-")
    args = [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={a.window}",
        "--autoplay-policy=no-user-gesture-required",
        # Hosts with no network but loopback (CI containers): let WebRTC use 127.0.0.1.
        "--allow-loopback-in-peer-connection",
        "--deny-permission-prompts" if a.deny_mic else "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
    ] + (["--force-dark-mode", "--blink-settings=preferredColorScheme=0"] if a.dark else [])
    port = free_port()
    driver_proc = subprocess.Popen(
        [a.chromedriver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wd = WebDriver(port)
    snap = None
    try:
        wd.wait_ready()
        wd.start(a.chromium, args)
        page = a.base if a.base.endswith(".html") else a.base.rstrip("/") + "/"
        url = f"{page}?{a.query}" if a.query else page
        t0 = time.time()
        wd.get(url)
        first_frame_at = None
        talk_pressed_at = None
        talk_done = False
        while time.time() - t0 < a.seconds:
            snap = wd.js(SNAPSHOT_JS)
            if snap and first_frame_at is None and snap["audio"]["framesSent"] > 0:
                first_frame_at = time.time() - t0
            if a.ptt and snap and snap["sessionReady"] and not talk_done:
                if talk_pressed_at is None:
                    wd.js("document.getElementById('talk').click()")
                    talk_pressed_at = time.time()
                elif time.time() - talk_pressed_at >= a.ptt:
                    wd.js("document.getElementById('talk').click()")
                    talk_done = True
            if a.until_reply and snap and first_reply_done(snap):
                time.sleep(1.0)  # let the last stats poll and the waterfall render
                break
            time.sleep(0.25 if a.ptt else 0.5)
        snap = wd.js(SNAPSHOT_JS)
        wd.screenshot(a.screenshot)
        console = wd.console()
    finally:
        wd.quit()
        driver_proc.terminate()
        try:
            driver_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            driver_proc.kill()
        shutil.rmtree(profile, ignore_errors=True)

    if snap is None:
        print("window.antiphonDemo missing: the page did not load its script", file=sys.stderr)
        return 1
    if a.json:
        with open(a.json, "w") as f:
            json.dump(snap, f, indent=2)
    audio = snap["audio"]
    print(f"state: {snap['state']} ({snap['statusText']})  session: {snap['sessionId']}")
    print(f"session voice: {snap['sessionVoice']}  turn_detection: {json.dumps(snap['turnDetection'])}")
    print(
        f"mic: {audio['framesSent']} frames / {audio['bytesSent']} bytes sent"
        f" (first frame {first_frame_at and round(first_frame_at, 2)} s after load);"
        f" reply: {audio['chunksReceived']} chunks / {audio['msReceived']} ms received;"
        f" barge-ins {audio['bargeIns']}, underruns {audio['underruns']}"
    )
    print("server events:", json.dumps(snap["eventCounts"], sort_keys=True))
    print("client events:", json.dumps(snap["sentCounts"], sort_keys=True))
    for t in snap["transcripts"]:
        print(f"  {t['role']:9} {t['itemId']}: {t['text']!r}{'' if t['final'] else ' (partial)'}")
    for t in snap["turns"]:
        print(f"  turn {t['responseId']} {t['status']} latency={json.dumps(t['latency'])} page={json.dumps(t['page'])}")
    if snap.get("webrtc") and snap["transport"] == "webrtc":
        w = snap["webrtc"]
        print(f"webrtc: ice {w['iceState']} / {w['connectionState']}, reply track stats: {json.dumps(w['stats'])}")
    for e in snap["errors"]:
        print(f"  error [{e['source']}] {e['code']}: {e['message']}")
    if snap["alert"]:
        print("alert:", snap["alert"])
    for entry in console:
        if entry.get("level") in ("SEVERE", "WARNING"):
            print("console:", entry.get("level"), entry.get("message"))
    print("screenshot:", a.screenshot)

    problems = []
    if a.expect_error:
        if not any(e["source"] == a.expect_error for e in snap["errors"]):
            problems.append(f"expected an error from {a.expect_error}")
        if not snap["alert"] and a.expect_error != "server":
            problems.append("no alert shown")
        for p in problems:
            print("FAIL:", p, file=sys.stderr)
        return 1 if problems else 0
    if not snap["sessionReady"]:
        problems.append("no ready session at the end of the run (see state/alert above)")
    if audio["framesSent"] == 0:
        problems.append("no microphone audio was sent")
    if a.expect_reply:
        if snap["transport"] == "websocket" and audio["chunksReceived"] == 0:
            problems.append("no reply audio received")
        if not any(t["page"]["firstAudioHeardMs"] is not None for t in snap["turns"]):
            problems.append("no reply audio was played")
        if not snap["latency"]:
            problems.append("no antiphon.turn.latency event")
        if snap["waterfalls"] == 0:
            problems.append("no latency waterfall rendered")
    if a.expect_webrtc:
        st = (snap.get("webrtc") or {}).get("stats") or {}
        if snap["transport"] != "webrtc":
            problems.append(f"the page used {snap['transport']}, not webrtc")
        if not st.get("packetsReceived") or not st.get("bytesReceived"):
            problems.append(f"no RTP audio received on the WebRTC track: {st}")
        if not (st.get("totalAudioEnergy") or 0) > 0:
            problems.append(f"the received WebRTC audio is silent (totalAudioEnergy): {st}")
    for p in problems:
        print("FAIL:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
