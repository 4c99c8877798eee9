// Antiphon web demo: talks to `antiphon serve` over WebRTC (default: Opus audio both ways, the
// Realtime API's GA JSON events on a data channel; `POST /v1/webrtc` with the SDP offer) or over
// the Realtime WebSocket (`?transport=websocket`: pcm16 in JSON events). No framework, no build
// step. Everything the page knows is mirrored in `window.antiphonDemo` so automated browser
// tests can read results.
"use strict";

(() => {
  const WIRE_RATE = 24000; // pcm16 mono, both directions
  const FRAME_MS = 20; // microphone frame per input_audio_buffer.append
  const BYTES_PER_MS = (WIRE_RATE * 2) / 1000;
  // Matches the server's default `session.echo_guard_ms`: speech that starts this soon after the
  // first reply audio only interrupts if the server decides it is real (response cancelled).
  const ECHO_GUARD_MS = 300;
  const SESSION_TIMEOUT_MS = 5000;
  const LOG_LIMIT = 400;
  const DEFAULT_KEY = "antiphon-demo-key";
  const VOICES = ["joe", "af_heart", "am_adam", "bf_emma", "bm_george"];
  const SCRIPT_URL = document.currentScript ? document.currentScript.src : location.href;

  const params = new URLSearchParams(location.search);
  // WebRTC unless asked for the WebSocket (or given a ws:// server URL).
  const TRANSPORT =
    params.get("transport") === "websocket" || /^wss?:/.test(params.get("server") || "") ? "websocket" : "webrtc";
  // Reply audio louder than this (RMS, full scale 1) counts as heard; the microphone above
  // MIC_SPEECH_RMS counts as speech (for the page's own end-of-speech -> first-audio time).
  const REPLY_AUDIBLE_RMS = 0.003;
  const MIC_SPEECH_RMS = 0.01;
  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"),
    statusText: $("status-text"),
    connect: $("connect"),
    talk: $("talk"),
    voice: $("voice"),
    instructions: $("instructions"),
    serverUrl: $("server-url"),
    apiKey: $("api-key"),
    hint: $("hint"),
    alert: $("alert"),
    transcript: $("transcript"),
    turns: $("turns"),
    log: $("log"),
    eventCount: $("event-count"),
    micLevel: $("mic-level"),
    outLevel: $("out-level"),
  };

  // ---------------------------------------------------------------------------------------
  // Public state (read by tests; the UI renders from it)

  const demo = {
    state: "idle", // idle | connecting | listening | ptt_idle | user_speaking | thinking | speaking | ended | error
    statusText: "Not connected",
    connected: false,
    sessionReady: false,
    sessionId: null,
    session: null, // last session.created/updated payload
    mode: "handsfree", // handsfree | ptt
    transport: TRANSPORT, // webrtc | websocket
    // WebRTC only: connection states, the Location of the session, and the browser's own
    // receive statistics of the reply track (RTCPeerConnection.getStats, inbound-rtp audio).
    webrtc: { iceState: null, connectionState: null, location: null, stats: null, onsets: 0 },
    voice: "joe",
    talking: false,
    muted: false,
    transcripts: [], // {role, itemId, responseId, text, final, speaker, interrupted, audioEndMs}
    turns: [], // {responseId, status, statusDetails, origin, latency, page}
    latency: [], // raw antiphon.turn.latency payloads, in arrival order
    audio: {
      framesSent: 0,
      bytesSent: 0,
      chunksReceived: 0,
      bytesReceived: 0,
      msReceived: 0,
      underruns: 0,
      bargeIns: 0,
      truncations: 0,
      contextRate: null,
    },
    errors: [], // {at, source, type, code, message, param, eventId, inReplyTo}
    eventCounts: {}, // server event type -> count
    sentCounts: {}, // client event type -> count
    closed: null, // {code, reason, byClient, wasOpen}
    start: () => start(),
    stop: () => stop("Session ended by you."),
  };
  window.antiphonDemo = demo;

  // ---------------------------------------------------------------------------------------
  // Settings from the URL

  const defaultServer = () => {
    const host = location.host || "127.0.0.1:8080";
    if (TRANSPORT === "webrtc") return `${location.protocol === "https:" ? "https" : "http"}://${host}`;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${host}/v1/realtime?model=antiphon`;
  };
  ui.serverUrl.value = params.get("server") || defaultServer();
  ui.apiKey.value = params.get("key") || DEFAULT_KEY;
  if (params.get("instructions")) ui.instructions.value = params.get("instructions");
  if (VOICES.includes(params.get("voice"))) ui.voice.value = params.get("voice");
  if (params.get("mode") === "ptt") document.querySelector('input[name="mode"][value="ptt"]').checked = true;
  demo.voice = ui.voice.value;
  demo.mode = document.querySelector('input[name="mode"]:checked').value;
  document.getElementById("transport-label").textContent =
    TRANSPORT === "webrtc" ? "Realtime API over WebRTC" : "Realtime API over WebSocket";

  // ---------------------------------------------------------------------------------------
  // Connection state

  let ws = null;
  let closingByClient = false;
  let sessionTimer = null;
  let clientEventSeq = 0;
  const sentIds = new Map(); // event_id -> type, for "error in reply to ..." (bounded)

  let ctx = null; // AudioContext
  let player = null; // AudioWorkletNode "antiphon-player"
  let outAnalyser = null;
  let mic = null; // {stream, source, node, sink}
  let clearToken = 0;
  const pendingClears = new Map(); // token -> callback

  // Turn tracking
  let pendingOrigin = null; // {at: performance.now(), kind}
  let activeResponseId = null;
  let lastCommittedItem = null;
  let speechActive = false;
  const turnsById = new Map(); // response_id -> turn
  const itemsById = new Map(); // item_id -> transcript entry
  const playback = {
    items: new Map(), // item_id -> {responseId, enqueued, played, done, drained, firstAudioAt}
    playingItem: null,
    active: false,
  };
  const silencedResponses = new Set(); // replies cut off by a barge-in
  let talkFrames = 0;
  let lastIdleClear = 0; // performance.now() of the last idle input_audio_buffer.clear (WebRTC push-to-talk)
  let lastMicSpeechAt = null; // performance.now() of the last microphone frame above MIC_SPEECH_RMS

  // ---------------------------------------------------------------------------------------
  // Small helpers

  const now = () => performance.now();

  function setState(state, text, kind) {
    demo.state = state;
    demo.statusText = text;
    ui.statusText.textContent = text;
    ui.status.dataset.kind = kind || "";
  }

  function showAlert(title, detail) {
    ui.alert.hidden = false;
    ui.alert.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = title;
    ui.alert.append(strong);
    if (detail) ui.alert.append(document.createTextNode(detail));
  }

  function clearAlert() {
    ui.alert.hidden = true;
    ui.alert.replaceChildren();
  }

  // A server with its own API keys refuses the public demo key: open Settings at the key field
  // so the user can type the server's key, instead of leaving them at a bare error.
  function askForKey() {
    const details = ui.apiKey.closest("details");
    if (details) details.open = true;
    if (ui.apiKey.value.trim() === DEFAULT_KEY) ui.apiKey.value = "";
    ui.apiKey.placeholder = "this server needs its API key";
    ui.apiKey.focus();
  }

  function recordError(source, err) {
    const e = {
      at: new Date().toISOString(),
      source,
      type: err.type || null,
      code: err.code || null,
      message: err.message || String(err),
      param: err.param || null,
      eventId: err.event_id || null,
      inReplyTo: err.event_id ? sentIds.get(err.event_id) || null : null,
    };
    demo.errors.push(e);
    return e;
  }

  function bytesToBase64(bytes) {
    let s = "";
    const CHUNK = 0x8000;
    for (let i = 0; i < bytes.length; i += CHUNK) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + CHUNK));
    }
    return btoa(s);
  }

  function base64ToPcm16(b64) {
    const bin = atob(b64);
    const n = bin.length >> 1;
    const out = new Int16Array(n);
    for (let i = 0; i < n; i++) {
      const lo = bin.charCodeAt(2 * i);
      const hi = bin.charCodeAt(2 * i + 1);
      out[i] = (hi << 8) | lo | (hi & 0x80 ? ~0xffff : 0); // little-endian, sign-extended
    }
    return out;
  }

  // ---------------------------------------------------------------------------------------
  // Event log (collapsed panel)

  let lastLog = null;
  let eventTotal = 0;
  const AGGREGATED = new Set([
    "input_audio_buffer.append",
    "response.output_audio.delta",
    "response.output_audio_transcript.delta",
    "conversation.item.input_audio_transcription.delta",
  ]);

  function log(dir, type, detail, isError) {
    eventTotal++;
    ui.eventCount.textContent = `(${eventTotal})`;
    if (lastLog && lastLog.type === type && lastLog.dir === dir && AGGREGATED.has(type)) {
      lastLog.count++;
      lastLog.countEl.textContent = ` ×${lastLog.count}`;
      return;
    }
    const li = document.createElement("li");
    const t = document.createElement("span");
    t.className = "t";
    t.textContent = new Date().toISOString().slice(11, 23);
    const d = document.createElement("span");
    d.className = "dir";
    d.textContent = dir === "out" ? "→" : dir === "in" ? "←" : "·";
    const body = document.createElement("span");
    if (isError) body.className = "err";
    body.textContent = type + (detail ? "  " + detail : "");
    const count = document.createElement("span");
    count.className = "muted";
    li.append(t, d, body, count);
    ui.log.append(li);
    while (ui.log.childElementCount > LOG_LIMIT) ui.log.firstElementChild.remove();
    lastLog = { type, dir, count: 1, countEl: count };
  }

  // ---------------------------------------------------------------------------------------
  // Sending

  function send(event) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    const id = `evt_c${++clientEventSeq}`;
    event.event_id = id;
    sentIds.set(id, event.type);
    if (sentIds.size > 500) sentIds.delete(sentIds.keys().next().value);
    ws.send(JSON.stringify(event));
    demo.sentCounts[event.type] = (demo.sentCounts[event.type] || 0) + 1;
    log("out", event.type, event.type === "input_audio_buffer.append" ? "" : summarizeOut(event));
    return true;
  }

  function summarizeOut(event) {
    if (event.type === "session.update") {
      const a = event.session.audio;
      const td = a.input.turn_detection;
      return `voice=${a.output.voice} turn_detection=${td ? td.type : "null (manual)"}`;
    }
    if (event.type === "conversation.item.truncate") return `${event.item_id} at ${event.audio_end_ms} ms`;
    return "";
  }

  function sessionConfig() {
    const ev = {
      type: "session.update",
      session: {
        type: "realtime",
        instructions: ui.instructions.value,
        output_modalities: ["audio"],
        audio: {
          input: {
            format: { type: "audio/pcm", rate: WIRE_RATE },
            transcription: {},
            turn_detection: demo.mode === "handsfree" ? { type: "semantic_vad", eagerness: "auto" } : null,
          },
          output: {
            format: { type: "audio/pcm", rate: WIRE_RATE },
            voice: ui.voice.value,
          },
        },
      },
    };
    if (TRANSPORT === "webrtc") {
      // Over WebRTC the audio is Opus on the media track; the server owns the session formats.
      delete ev.session.audio.input.format;
      delete ev.session.audio.output.format;
    }
    return ev;
  }

  // ---------------------------------------------------------------------------------------
  // Audio graph

  async function ensureAudio() {
    if (!ctx) {
      try {
        ctx = new AudioContext({ sampleRate: WIRE_RATE, latencyHint: "interactive" });
      } catch (_) {
        ctx = new AudioContext({ latencyHint: "interactive" }); // the worklets resample
      }
      demo.audio.contextRate = ctx.sampleRate;
      await ctx.audioWorklet.addModule(new URL("audio-worklet.js", SCRIPT_URL).href);
      player = new AudioWorkletNode(ctx, "antiphon-player", {
        numberOfInputs: 0,
        numberOfOutputs: 1,
        outputChannelCount: [1],
      });
      outAnalyser = ctx.createAnalyser();
      outAnalyser.fftSize = 512;
      player.connect(outAnalyser);
      outAnalyser.connect(ctx.destination);
      player.port.onmessage = (e) => onPlayerMessage(e.data);
      requestAnimationFrame(drawOutLevel);
    }
    if (ctx.state !== "running") {
      // Resume may hang without a user gesture (autoplay policy): don't wait forever.
      await Promise.race([ctx.resume(), new Promise((r) => setTimeout(r, 500))]);
    }
    if (ctx.state !== "running") {
      showAlert("Audio is blocked by the browser.", " Click anywhere on the page to enable the microphone and playback.");
      const resume = () => {
        ctx.resume().then(() => {
          if (ctx.state === "running") clearAlert();
        });
      };
      document.addEventListener("click", resume, { once: true });
    }
  }

  const levelBuf = new Float32Array(512);
  function drawOutLevel() {
    if (outAnalyser) {
      outAnalyser.getFloatTimeDomainData(levelBuf);
      let sum = 0;
      for (let i = 0; i < levelBuf.length; i++) sum += levelBuf[i] * levelBuf[i];
      const rms = Math.sqrt(sum / levelBuf.length);
      ui.outLevel.style.width = `${Math.min(100, rms * 300)}%`;
    }
    requestAnimationFrame(drawOutLevel);
  }

  class MicError extends Error {
    constructor(kind, message) {
      super(message);
      this.kind = kind;
    }
  }

  async function openMic() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new MicError(
        "insecure",
        "This page cannot use a microphone here: browsers allow it only on https:// or http://localhost."
      );
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (e) {
      if (e.name === "NotAllowedError" || e.name === "SecurityError") {
        throw new MicError("denied", "Microphone access was denied. Allow it in the address bar and start again.");
      }
      if (e.name === "NotFoundError" || e.name === "OverconstrainedError") {
        throw new MicError("missing", "No microphone was found.");
      }
      if (e.name === "NotReadableError") {
        throw new MicError("busy", "The microphone is in use by another application.");
      }
      throw new MicError("other", `Microphone error: ${e.name}: ${e.message}`);
    }
    // Firefox cannot connect a microphone to a context at another rate than the device's: capture
    // then runs in a second context at the device rate and the worklet resamples to 24 kHz.
    let micCtx = ctx;
    let source;
    try {
      source = ctx.createMediaStreamSource(stream);
    } catch (e) {
      if (e.name !== "NotSupportedError") throw e;
      micCtx = new AudioContext({ latencyHint: "interactive" });
      await micCtx.audioWorklet.addModule(new URL("audio-worklet.js", SCRIPT_URL).href);
      source = micCtx.createMediaStreamSource(stream);
    }
    const node = new AudioWorkletNode(micCtx, "antiphon-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      processorOptions: { frameMs: FRAME_MS },
    });
    // A silent sink keeps the capture node in the rendered graph.
    const sink = micCtx.createGain();
    sink.gain.value = 0;
    source.connect(node);
    node.connect(sink);
    sink.connect(micCtx.destination);
    node.port.onmessage = (e) => onMicFrame(e.data);
    stream.getAudioTracks().forEach((t) => {
      t.onended = () => {
        if (ws) {
          showAlert("The microphone stopped.", " It was unplugged or taken by another application.");
          stop("Microphone stopped.");
        }
      };
    });
    return { stream, source, node, sink, ctx: micCtx };
  }

  function closeMic() {
    if (!mic) return;
    mic.stream.getTracks().forEach((t) => {
      t.onended = null;
      t.stop();
    });
    mic.source.disconnect();
    mic.node.disconnect();
    mic.sink.disconnect();
    mic.node.port.onmessage = null;
    if (mic.ctx !== ctx) mic.ctx.close();
    mic = null;
    ui.micLevel.style.width = "0%";
  }

  function micShouldSend() {
    if (!demo.sessionReady) return false;
    return demo.mode === "handsfree" ? !demo.muted : demo.talking;
  }

  function onMicFrame(msg) {
    if (msg.type !== "frame") return;
    const sending = micShouldSend();
    ui.micLevel.style.width = sending ? `${Math.min(100, msg.rms * 400)}%` : "0%";
    if (msg.rms > MIC_SPEECH_RMS) lastMicSpeechAt = now();
    if (TRANSPORT === "webrtc") {
      // The microphone track itself goes over RTP; this frame only feeds the meter. Muting
      // (hands-free) and push-to-talk gate the track.
      if (mic) mic.stream.getAudioTracks().forEach((t) => (t.enabled = sending));
      if (sending) {
        demo.audio.framesSent++;
        talkFrames++;
      }
      // Push-to-talk: the track keeps sending (silence) between turns and the server buffers
      // it until a commit; drop that now and then so the buffer never fills.
      if (demo.mode === "ptt" && !demo.talking && demo.sessionReady && now() - lastIdleClear > 30000) {
        lastIdleClear = now();
        send({ type: "input_audio_buffer.clear" });
      }
      return;
    }
    if (!sending) return;
    const bytes = new Uint8Array(msg.pcm);
    if (send({ type: "input_audio_buffer.append", audio: bytesToBase64(bytes) })) {
      demo.audio.framesSent++;
      demo.audio.bytesSent += bytes.length;
      talkFrames++;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Playback

  function playbackItem(itemId, responseId) {
    let p = playback.items.get(itemId);
    if (!p) {
      p = { responseId, enqueued: 0, played: 0, done: false, drained: false, segments: [], lastChunkStart: 0 };
      playback.items.set(itemId, p);
    }
    return p;
  }

  function enqueueAudio(ev) {
    if (silencedResponses.has(ev.response_id)) return;
    const pcm = base64ToPcm16(ev.delta);
    demo.audio.chunksReceived++;
    demo.audio.bytesReceived += pcm.length * 2;
    demo.audio.msReceived = Math.round(demo.audio.bytesReceived / BYTES_PER_MS);
    const p = playbackItem(ev.item_id, ev.response_id);
    p.lastChunkStart = p.enqueued;
    p.enqueued += pcm.length;
    p.drained = false;
    const turn = turnsById.get(ev.response_id);
    if (turn && turn.page.firstAudioReceivedAt == null) {
      turn.page.firstAudioReceivedAt = now();
      turn.page.firstAudioReceivedMs = turn.origin ? round1(turn.page.firstAudioReceivedAt - turn.origin.at) : null;
      renderTurn(turn);
    }
    if (!player) return;
    playback.active = true;
    player.port.postMessage({ type: "chunk", itemId: ev.item_id, responseId: ev.response_id, pcm: pcm.buffer }, [
      pcm.buffer,
    ]);
    if (demo.state !== "speaking" && demo.state !== "user_speaking") setState("speaking", "Agent speaking…", "live");
  }

  function onPlayerMessage(msg) {
    switch (msg.type) {
      case "started": {
        const p = playback.items.get(msg.itemId);
        const turn = p && turnsById.get(p.responseId);
        if (turn && turn.page.firstAudioHeardAt == null) {
          turn.page.firstAudioHeardAt = contextTimeToPerf(msg.time);
          turn.page.firstAudioHeardMs = turn.origin ? round1(turn.page.firstAudioHeardAt - turn.origin.at) : null;
          turn.page.micEndToHeardMs =
            lastMicSpeechAt != null ? round1(turn.page.firstAudioHeardAt - lastMicSpeechAt) : null;
          renderTurn(turn);
        }
        playback.playingItem = msg.itemId;
        break;
      }
      case "progress": {
        const p = playback.items.get(msg.itemId);
        if (p) {
          p.played = msg.played;
          revealSpoken(msg.itemId);
        }
        break;
      }
      case "drained": {
        demo.audio.underruns = msg.underruns;
        for (const [id, n] of Object.entries(msg.played)) {
          const p = playback.items.get(id);
          if (p) p.played = n;
        }
        const p = playback.items.get(msg.itemId);
        if (p) {
          p.drained = true;
          revealSpoken(msg.itemId);
        }
        playback.active = false;
        if (demo.state === "speaking") setIdleState();
        break;
      }
      case "cleared": {
        for (const [id, n] of Object.entries(msg.played)) {
          const p = playback.items.get(id);
          if (p) p.played = n;
        }
        playback.active = false;
        const cb = pendingClears.get(msg.token);
        pendingClears.delete(msg.token);
        if (cb) cb(msg);
        break;
      }
      default:
        break;
    }
  }

  // When a context-time sample is heard, in performance.now() time.
  function contextTimeToPerf(contextTime) {
    if (ctx.getOutputTimestamp) {
      const ts = ctx.getOutputTimestamp();
      if (ts && ts.performanceTime > 0) return ts.performanceTime + (contextTime - ts.contextTime) * 1000;
    }
    return now() + ((ctx.outputLatency || 0) + (ctx.baseLatency || 0)) * 1000;
  }

  // Stops reply playback at once and tells the server how much of the reply was heard.
  function bargeIn(why) {
    if (!player || !playback.active) return;
    demo.audio.bargeIns++;
    playback.active = false;
    // Audio of these replies still in flight from the server must not start playing again.
    for (const p of playback.items.values()) if (!p.drained) silencedResponses.add(p.responseId);
    const token = ++clearToken;
    pendingClears.set(token, (msg) => {
      // Truncate every reply item that had audio not yet heard.
      for (const [itemId, p] of playback.items) {
        if (p.drained || p.truncated) continue;
        if (p.played >= p.enqueued && p.done) continue;
        p.truncated = true;
        const audioEndMs = Math.floor((p.played * 1000) / WIRE_RATE);
        const entry = itemsById.get(itemId);
        if (entry) {
          entry.interrupted = true;
          entry.audioEndMs = audioEndMs;
          renderEntry(entry);
        }
        if (send({ type: "conversation.item.truncate", item_id: itemId, content_index: 0, audio_end_ms: audioEndMs })) {
          demo.audio.truncations++;
        }
      }
      log("note", `barge-in (${why})`, `dropped ${Math.round((msg.droppedSamples * 1000) / WIRE_RATE)} ms of queued reply`);
    });
    player.port.postMessage({ type: "clear", token });
  }

  // ---------------------------------------------------------------------------------------
  // Transcript

  function transcriptEntry(itemId, role, responseId) {
    let entry = itemsById.get(itemId);
    if (entry) return entry;
    entry = {
      role,
      itemId,
      responseId: responseId || null,
      text: "",
      final: false,
      speaker: null,
      interrupted: false,
      untranscribed: false,
      audioEndMs: null,
      segments: [], // assistant: [{at (wire sample), text}]
      el: null,
    };
    itemsById.set(itemId, entry);
    const { el, ...pub } = entry; // eslint-disable-line no-unused-vars
    demo.transcripts.push(pub);
    entry.pub = pub;
    renderEntry(entry);
    return entry;
  }

  function speakerOf(obj) {
    if (!obj) return null;
    return obj.speaker || obj.speaker_label || obj.speaker_id || null;
  }

  function revealSpoken(itemId) {
    const entry = itemsById.get(itemId);
    if (entry && entry.role === "assistant") renderEntry(entry);
  }

  // Assistant text is revealed as its audio plays; what the user never heard shows struck out.
  function assistantTextParts(entry) {
    // Over WebRTC the server releases the words as their audio goes out: all text is spoken.
    if (TRANSPORT === "webrtc") return { spoken: entry.text, unspoken: "" };
    const p = playback.items.get(entry.itemId);
    const audioLive = ctx && ctx.state === "running";
    if (!p || !audioLive || entry.segments.length === 0) {
      return { spoken: entry.text, unspoken: "" };
    }
    if (p.drained && p.done && !p.truncated) return { spoken: entry.text, unspoken: "" };
    let spoken = "";
    let unspoken = "";
    for (const s of entry.segments) {
      if (p.played > s.at) spoken += s.text;
      else unspoken += s.text;
    }
    return { spoken, unspoken: p.truncated ? unspoken : "" };
  }

  function renderEntry(entry) {
    const pub = entry.pub;
    if (!entry.el) {
      const empty = ui.transcript.querySelector(".empty");
      if (empty) empty.remove();
      entry.el = document.createElement("li");
      entry.el.className = entry.role;
      ui.transcript.append(entry.el);
    }
    const stick = nearBottom(ui.transcript);
    const el = entry.el;
    el.classList.toggle("partial", !entry.final);
    el.replaceChildren();
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = (entry.role === "user" ? "You" : "Agent") + (entry.speaker ? ` · ${entry.speaker}` : "");
    el.append(who);
    const text = document.createElement("span");
    text.className = "text";
    if (entry.role === "assistant") {
      const { spoken, unspoken } = assistantTextParts(entry);
      text.textContent = spoken || (unspoken ? "" : "…");
      el.append(text);
      if (unspoken) {
        const u = document.createElement("span");
        u.className = "unspoken";
        u.textContent = unspoken;
        el.append(u);
      }
    } else {
      text.textContent =
        entry.text || (entry.untranscribed ? "(audio sent, not transcribed)" : entry.final ? "(no words recognised)" : "listening…");
      el.append(text);
    }
    if (entry.interrupted) {
      const note = document.createElement("span");
      note.className = "note";
      note.textContent = `interrupted after ${(entry.audioEndMs / 1000).toFixed(2)} s of audio`;
      el.append(note);
    }
    Object.assign(pub, {
      text: entry.text,
      final: entry.final,
      speaker: entry.speaker,
      interrupted: entry.interrupted,
      audioEndMs: entry.audioEndMs,
      responseId: entry.responseId,
    });
    if (stick) ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  function nearBottom(el) {
    return el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  }

  let lastInlineError = null;
  function inlineError(e) {
    const key = `${e.code}|${e.message}`;
    if (lastInlineError && lastInlineError.key === key && lastInlineError.el.isConnected) {
      lastInlineError.count++;
      lastInlineError.countEl.textContent = ` (×${lastInlineError.count})`;
      return;
    }
    const empty = ui.transcript.querySelector(".empty");
    if (empty) empty.remove();
    const li = document.createElement("li");
    li.className = "error";
    const code = document.createElement("code");
    code.textContent = e.code || e.type || "error";
    const msg = document.createTextNode(`: ${e.message}`);
    li.append(code, msg);
    if (e.inReplyTo) {
      const note = document.createElement("span");
      note.className = "note";
      note.textContent = `in reply to ${e.inReplyTo}`;
      li.append(note);
    }
    const countEl = document.createElement("span");
    li.append(countEl);
    ui.transcript.append(li);
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
    lastInlineError = { key, el: li, count: 1, countEl };
  }

  function systemNote(text) {
    const li = document.createElement("li");
    li.className = "system";
    li.textContent = text;
    ui.transcript.append(li);
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  // ---------------------------------------------------------------------------------------
  // Turns and latency

  const round1 = (x) => Math.round(x * 10) / 10;

  function turnFor(responseId) {
    let turn = turnsById.get(responseId);
    if (!turn) {
      turn = {
        responseId,
        status: "in_progress",
        statusDetails: null,
        origin: null, // {kind, at (performance.now())}
        latency: null,
        page: {
          firstAudioReceivedAt: null,
          firstAudioReceivedMs: null,
          firstAudioHeardAt: null,
          firstAudioHeardMs: null,
          micEndToHeardMs: null,
        },
        el: null,
      };
      turnsById.set(responseId, turn);
      const { el, ...pub } = turn; // eslint-disable-line no-unused-vars
      turn.pub = pub;
      demo.turns.push(pub);
    }
    return turn;
  }

  const STAGES = [
    ["speculation_started_ms", "Reply begun (on the pause)"],
    ["asr_final_ms", "ASR final"],
    ["llm_first_token_ms", "LLM first token"],
    ["first_clause_ms", "First clause"],
    ["tts_first_audio_ms", "TTS first audio"],
    ["first_audio_sent_ms", "First byte sent"],
  ];

  function renderTurn(turn) {
    Object.assign(turn.pub, {
      status: turn.status,
      statusDetails: turn.statusDetails,
      origin: turn.origin ? turn.origin.kind : null,
      latency: turn.latency,
      page: {
        firstAudioReceivedMs: turn.page.firstAudioReceivedMs,
        firstAudioHeardMs: turn.page.firstAudioHeardMs,
        micEndToHeardMs: turn.page.micEndToHeardMs,
      },
    });
    if (!turn.el) {
      const empty = ui.turns.querySelector(".empty");
      if (empty) empty.remove();
      turn.el = document.createElement("article");
      turn.el.className = "turn";
      ui.turns.prepend(turn.el);
    }
    const lat = turn.latency || {};
    const originLabel =
      lat.origin === "response_create" || (turn.origin && turn.origin.kind === "response_create")
        ? "response.create"
        : "VAD speech stop";
    const rows = [[originLabel, 0, "server"]];
    for (const [key, label] of STAGES) rows.push([label, lat[key] == null ? null : lat[key], "server"]);
    rows.push(["Received (page)", turn.page.firstAudioReceivedMs, "page"]);
    rows.push(["Heard (page)", turn.page.firstAudioHeardMs, "page"]);
    const max = Math.max(1, ...rows.map((r) => (r[1] == null ? 0 : r[1])));

    const head = document.createElement("header");
    const headline = document.createElement("span");
    headline.className = "headline";
    const heard = turn.page.firstAudioHeardMs;
    const sent = lat.first_audio_sent_ms;
    headline.textContent =
      heard != null ? `Heard after ${Math.round(heard)} ms` : sent != null ? `First byte after ${Math.round(sent)} ms` : statusWord(turn);
    const meta = document.createElement("span");
    meta.textContent = `${turn.responseId} · ${statusWord(turn)}`;
    head.append(headline, meta);
    const ttfb = document.createElement("p");
    ttfb.className = "ttfb";
    if (turn.page.micEndToHeardMs != null) {
      const td = demo.session && demo.session.audio && demo.session.audio.input.turn_detection;
      let wait = "";
      if (td && td.type === "semantic_vad") {
        const p = lat.end_of_turn_probability;
        wait = ` (includes the pause judged the end of your turn${p == null ? "" : `, P(done) ${p.toFixed(2)}`})`;
      } else if (td) {
        wait = ` (includes the ${td.silence_duration_ms} ms of silence that ends a turn)`;
      }
      ttfb.textContent = `You went quiet → reply heard: ${Math.round(turn.page.micEndToHeardMs)} ms at this page${wait}`;
      ttfb.title = "From the last microphone frame above the speech level to the first audible reply sample at this page";
    }

    const grid = document.createElement("div");
    grid.className = "wf";
    grid.setAttribute("role", "table");
    grid.setAttribute("aria-label", `Latency of ${turn.responseId}`);
    let prev = 0;
    for (const [label, value, kind] of rows) {
      const l = document.createElement("span");
      l.className = "label";
      l.textContent = label;
      l.title =
        kind === "page"
          ? "Measured by this page from the end of speech at its microphone (else from when it got speech_stopped, or sent response.create)"
          : "Reported by the server in antiphon.turn.latency";
      const track = document.createElement("div");
      track.className = "track";
      if (value != null) {
        const v = Math.max(0, value);
        const from = Math.min(prev, v);
        const seg = document.createElement("div");
        seg.className = "seg" + (kind === "page" ? " page" : "");
        seg.style.left = `${(from / max) * 100}%`;
        seg.style.width = `${((v - from) / max) * 100}%`;
        track.append(seg);
        prev = Math.max(prev, v);
      }
      const ms = document.createElement("span");
      ms.className = "ms" + (value == null ? " none" : "");
      ms.textContent = value == null ? "—" : `${Math.round(value)}`;
      grid.append(l, track, ms);
    }
    turn.el.replaceChildren(head, grid);
    if (ttfb.textContent) turn.el.append(ttfb);
  }

  function statusWord(turn) {
    if (turn.status === "cancelled") {
      const reason = turn.statusDetails && turn.statusDetails.reason;
      return reason === "turn_detected" ? "interrupted" : "cancelled";
    }
    if (turn.status === "failed") return "failed";
    if (turn.status === "completed") return "completed";
    return "in progress";
  }

  // ---------------------------------------------------------------------------------------
  // Server events

  function onServerEvent(ev) {
    const type = ev.type;
    demo.eventCounts[type] = (demo.eventCounts[type] || 0) + 1;
    if (type !== "error") log("in", type, summarizeIn(ev));
    switch (type) {
      case "session.created":
        clearTimeout(sessionTimer);
        demo.sessionId = ev.session && ev.session.id;
        demo.session = ev.session;
        send(sessionConfig());
        break;
      case "session.updated": {
        demo.session = ev.session;
        const first = !demo.sessionReady;
        demo.sessionReady = true;
        if (first) {
          systemNote(`Session ${demo.sessionId || ""} ready · voice ${sessionVoice(ev.session)}`);
          ui.talk.disabled = false;
        }
        setIdleState();
        break;
      }
      case "input_audio_buffer.speech_started": {
        dropGhostSpeech();
        speechActive = true;
        const entry = transcriptEntry(ev.item_id, "user");
        entry.speaker = speakerOf(ev) || entry.speaker;
        renderEntry(entry);
        maybeBargeIn();
        setState("user_speaking", "Hearing you…", "live");
        break;
      }
      case "input_audio_buffer.speech_stopped":
        speechActive = false;
        // The server measures from the end of speech, not from when its VAD was sure (one
        // silence_duration later): so does the page, from its own microphone level.
        pendingOrigin =
          lastMicSpeechAt != null && now() - lastMicSpeechAt < 3000
            ? { kind: "speech_end", at: lastMicSpeechAt, fromMic: true }
            : { kind: "speech_end", at: now(), fromMic: false };
        setState("thinking", "Thinking…", "busy");
        break;
      case "input_audio_buffer.committed":
        transcriptEntry(ev.item_id, "user").committed = true;
        lastCommittedItem = ev.item_id;
        break;
      case "conversation.item.added":
      case "conversation.item.done":
      case "conversation.item.created":
        onItem(ev.item, type !== "conversation.item.added" && type !== "conversation.item.created");
        break;
      case "conversation.item.input_audio_transcription.delta": {
        const entry = transcriptEntry(ev.item_id, "user");
        // Deltas append (OpenAI semantics); an engine that re-sends its whole hypothesis is
        // also shown correctly.
        if (entry.text && ev.delta.startsWith(entry.text)) entry.text = ev.delta;
        else entry.text += ev.delta;
        entry.speaker = speakerOf(ev) || entry.speaker;
        renderEntry(entry);
        break;
      }
      case "conversation.item.input_audio_transcription.completed": {
        const entry = transcriptEntry(ev.item_id, "user");
        entry.text = ev.transcript || "";
        entry.final = true;
        entry.speaker = speakerOf(ev) || entry.speaker;
        renderEntry(entry);
        break;
      }
      case "conversation.item.input_audio_transcription.failed": {
        const entry = transcriptEntry(ev.item_id, "user");
        entry.final = true;
        renderEntry(entry);
        inlineError(recordError("transcription", ev.error || { message: "transcription failed" }));
        break;
      }
      case "conversation.item.truncated": {
        // Over WebRTC the server stops playout itself and reports what was heard.
        const entry = itemsById.get(ev.item_id);
        if (entry && TRANSPORT === "webrtc") {
          entry.interrupted = true;
          entry.audioEndMs = ev.audio_end_ms;
          renderEntry(entry);
        }
        break;
      }
      case "output_audio_buffer.started": {
        // WebRTC: the server started sending this reply's audio on the media track.
        replyOnset.playing = ev.response_id;
        const turn = turnFor(ev.response_id);
        if (turn.page.firstAudioReceivedAt == null) {
          turn.page.firstAudioReceivedAt = now();
          turn.page.firstAudioReceivedMs = turn.origin ? round1(turn.page.firstAudioReceivedAt - turn.origin.at) : null;
          renderTurn(turn);
        }
        if (demo.state !== "user_speaking") setState("speaking", "Agent speaking…", "live");
        break;
      }
      case "output_audio_buffer.stopped":
      case "output_audio_buffer.cleared":
        if (type === "output_audio_buffer.cleared") demo.audio.bargeIns++;
        if (replyOnset.playing === ev.response_id) replyOnset.playing = null;
        if (demo.state === "speaking") setIdleState();
        break;
      case "response.created": {
        const r = ev.response;
        activeResponseId = r.id;
        const turn = turnFor(r.id);
        turn.origin = pendingOrigin || { kind: "response_create", at: now() };
        pendingOrigin = null;
        renderTurn(turn);
        if (demo.state !== "user_speaking") setState("thinking", "Thinking…", "busy");
        break;
      }
      case "response.output_item.added":
        if (ev.item && ev.item.type === "message") {
          const entry = transcriptEntry(ev.item.id, ev.item.role || "assistant", ev.response_id);
          entry.speaker = speakerOf(ev.item) || entry.speaker;
          renderEntry(entry);
        }
        break;
      case "response.output_audio.delta":
        enqueueAudio(ev);
        break;
      case "response.output_audio.done": {
        const p = playbackItem(ev.item_id, ev.response_id);
        p.done = true;
        if (player) player.port.postMessage({ type: "end", itemId: ev.item_id });
        break;
      }
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta": {
        const entry = transcriptEntry(ev.item_id, "assistant", ev.response_id);
        entry.text += ev.delta;
        if (type === "response.output_audio_transcript.delta") {
          // The server sends each audio chunk before the words it speaks.
          const p = playbackItem(ev.item_id, ev.response_id);
          entry.segments.push({ at: p.lastChunkStart, text: ev.delta });
        } else {
          entry.segments.push({ at: 0, text: ev.delta });
        }
        entry.speaker = speakerOf(ev) || entry.speaker;
        renderEntry(entry);
        break;
      }
      case "response.output_audio_transcript.done":
      case "response.output_text.done": {
        const entry = transcriptEntry(ev.item_id, "assistant", ev.response_id);
        const full = ev.transcript != null ? ev.transcript : ev.text;
        if (full != null && full !== entry.text && entry.segments.length === 0) entry.text = full;
        entry.final = true;
        renderEntry(entry);
        break;
      }
      case "response.done": {
        const r = ev.response;
        const turn = turnFor(r.id);
        turn.status = r.status;
        turn.statusDetails = r.status_details || null;
        renderTurn(turn);
        if (activeResponseId === r.id) activeResponseId = null;
        for (const item of r.output || []) {
          const entry = itemsById.get(item.id);
          if (entry) {
            entry.final = true;
            renderEntry(entry);
          }
        }
        if (r.status === "failed") {
          const err = (r.status_details && r.status_details.error) || { message: "response failed" };
          inlineError(recordError("response", err));
        }
        if (r.status === "cancelled" && r.status_details && r.status_details.reason === "turn_detected") {
          bargeIn("response cancelled: turn detected");
        }
        if (!playback.active && demo.state !== "user_speaking") setIdleState();
        break;
      }
      case "antiphon.turn.latency": {
        demo.latency.push(stripType(ev));
        const turn = turnFor(ev.response_id);
        turn.latency = stripType(ev);
        renderTurn(turn);
        break;
      }
      case "error": {
        const e = recordError("server", ev.error || {});
        log("in", "error", `${e.code}: ${e.message}`, true);
        inlineError(e);
        // A refused commit or response leaves nothing to wait for.
        if (e.inReplyTo === "input_audio_buffer.commit" && lastCommittedItem) {
          const entry = itemsById.get(lastCommittedItem);
          if (entry && !entry.text) {
            entry.final = true;
            entry.untranscribed = true;
            renderEntry(entry);
          }
        }
        if (demo.state === "thinking" && !activeResponseId) setIdleState();
        break;
      }
      default:
        break;
    }
  }

  function stripType(ev) {
    const { type, event_id, ...rest } = ev; // eslint-disable-line no-unused-vars
    return rest;
  }

  function sessionVoice(s) {
    if (!s) return "?";
    if (s.audio && s.audio.output) return s.audio.output.voice;
    return s.voice || "?";
  }

  function summarizeIn(ev) {
    switch (ev.type) {
      case "session.created":
      case "session.updated":
        return ev.session ? `${ev.session.id} voice=${sessionVoice(ev.session)}` : "";
      case "response.created":
      case "response.done":
        return `${ev.response.id} ${ev.response.status}`;
      case "input_audio_buffer.speech_started":
        return `${ev.item_id} at ${ev.audio_start_ms} ms`;
      case "input_audio_buffer.speech_stopped":
        return `${ev.item_id} at ${ev.audio_end_ms} ms`;
      case "conversation.item.input_audio_transcription.completed":
        return JSON.stringify(ev.transcript);
      case "antiphon.turn.latency":
        return STAGES.map(([k]) => `${k.replace(/_ms$/, "")}=${ev[k]}`).join(" ");
      default:
        return ev.item_id || "";
    }
  }

  // Speech the server set aside as echo (it began inside the echo guard and ended there) gets no
  // speech_stopped; its placeholder goes when the next speech starts.
  function dropGhostSpeech() {
    for (const [id, entry] of itemsById) {
      if (entry.role !== "user" || entry.committed || entry.text || entry.final) continue;
      itemsById.delete(id);
      if (entry.el) entry.el.remove();
      const i = demo.transcripts.indexOf(entry.pub);
      if (i >= 0) demo.transcripts.splice(i, 1);
    }
  }

  function onItem(item, done) {
    if (!item || item.type !== "message") return;
    const entry = transcriptEntry(item.id, item.role);
    entry.committed = true;
    entry.speaker = speakerOf(item) || entry.speaker;
    for (const c of item.content || []) {
      if (item.role === "user" && (c.type === "input_text" || (c.type === "input_audio" && c.transcript))) {
        entry.text = c.text || c.transcript;
        entry.final = true;
      }
      if (done && item.role === "assistant" && !entry.text && (c.transcript || c.text)) {
        entry.text = c.transcript || c.text;
      }
    }
    if (done) entry.final = true;
    renderEntry(entry);
  }

  // Speech during reply playback: stop at once, unless the reply only just began (then the
  // server's echo guard decides, and a cancelled response.done triggers the barge-in).
  function maybeBargeIn() {
    if (!playback.active) return;
    const turn = activeResponseId && turnsById.get(activeResponseId);
    const firstAt = turn && turn.page.firstAudioReceivedAt;
    if (firstAt != null && now() - firstAt < ECHO_GUARD_MS) return;
    bargeIn("speech started");
  }

  function setIdleState() {
    if (!ws) return;
    if (!demo.sessionReady) {
      setState("connecting", "Setting up session…", "busy");
    } else if (demo.mode === "handsfree") {
      if (demo.muted) setState("listening", "Microphone muted", "ok");
      else setState("listening", "Listening — just talk", "live");
    } else if (demo.talking) {
      setState("user_speaking", "Talking — press again to send", "live");
    } else {
      setState("ptt_idle", "Press Talk to speak", "ok");
    }
  }

  // ---------------------------------------------------------------------------------------
  // WebRTC transport: microphone track out, reply track in (Opus), events on a data channel.

  class ConnectError extends Error {
    constructor(kind, message, status) {
      super(message);
      this.kind = kind; // unreachable | auth | busy | http | webrtc
      this.status = status || null;
    }
  }

  // The surface of a WebSocket the page uses (readyState, send, close, onopen, onmessage,
  // onclose) over an RTCPeerConnection, so the session logic is the same for both transports.
  class RtcConnection {
    constructor(base, key) {
      this.base = base;
      this.key = key;
      this.readyState = 0; // 0 connecting, 1 open, 3 closed
      this.pc = null;
      this.dc = null;
      this.location = null;
      this.onopen = null;
      this.onmessage = null;
      this.onclose = null;
      this.ontrack = null;
    }

    async request(method, path, body) {
      const headers = { Authorization: `Bearer ${this.key}` };
      if (body != null) headers["Content-Type"] = "application/sdp";
      let r;
      try {
        r = await fetch(new URL(path, this.base).href, { method, headers, body, cache: "no-store" });
      } catch (e) {
        throw new ConnectError("unreachable", `Nothing answered at ${this.base}. Is \`antiphon serve\` running?`);
      }
      if (r.ok) return r;
      let msg = "";
      try {
        const j = await r.json();
        msg = (j.error && j.error.message) || "";
      } catch (_) {
        /* not JSON */
      }
      if (r.status === 401) throw new ConnectError("auth", msg || "API key refused", 401);
      if (r.status === 503) throw new ConnectError("busy", msg || "The server refused the session.", 503);
      if (r.status === 404) throw new ConnectError("http", "This server has no WebRTC endpoint (/v1/webrtc). Try ?transport=websocket.", 404);
      throw new ConnectError("http", `HTTP ${r.status}${msg ? `: ${msg}` : ""}`, r.status);
    }

    async connect(stream) {
      const cfg = await (await this.request("GET", "/v1/webrtc/config")).json();
      const pc = new RTCPeerConnection({ iceServers: cfg.ice_servers || [] });
      this.pc = pc;
      for (const t of stream.getAudioTracks()) pc.addTrack(t, stream);
      // The Realtime events travel here, as with OpenAI's WebRTC API.
      const dc = pc.createDataChannel("oai-events");
      this.dc = dc;
      dc.onopen = () => {
        this.readyState = 1;
        if (this.onopen) this.onopen();
      };
      dc.onmessage = (e) => this.onmessage && this.onmessage(e);
      dc.onclose = () => this.closed(this.readyState === 1 ? 1000 : 1006, "the server ended the session");
      pc.ontrack = (e) => this.ontrack && this.ontrack(e.streams[0] || new MediaStream([e.track]));
      pc.oniceconnectionstatechange = () => (demo.webrtc.iceState = pc.iceConnectionState);
      pc.onconnectionstatechange = () => {
        demo.webrtc.connectionState = pc.connectionState;
        if (pc.connectionState === "failed") {
          this.closed(1006, this.readyState === 1 ? "media connection lost" : "ICE/DTLS did not connect");
        } else if (pc.connectionState === "disconnected" && this.readyState === 1) {
          // No answer to the browser's consent checks: the server or the path went away. The
          // browser only calls it "failed" after ~30 s; give a brief outage 5 s to recover.
          setState("connecting", "Connection interrupted…", "busy");
          setTimeout(() => {
            if (pc.connectionState === "disconnected") this.closed(1006, "media connection lost");
          }, 5000);
        } else if (pc.connectionState === "connected" && this.readyState === 1) {
          setIdleState();
        }
      };
      await pc.setLocalDescription(await pc.createOffer());
      // The server is ICE-lite and learns our address from our checks: no need to wait for
      // candidate gathering before sending the offer.
      const r = await this.request("POST", "/v1/webrtc", pc.localDescription.sdp);
      const loc = r.headers.get("Location");
      this.location = loc ? new URL(loc, this.base).href : null;
      demo.webrtc.location = this.location;
      await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
    }

    send(text) {
      if (this.dc && this.dc.readyState === "open") this.dc.send(text);
    }

    closed(code, reason) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      if (this.pc) this.pc.close();
      if (this.onclose) this.onclose({ code, reason });
    }

    close() {
      if (this.location) {
        fetch(this.location, { method: "DELETE", headers: { Authorization: `Bearer ${this.key}` }, keepalive: true }).catch(
          () => {}
        );
      }
      this.closed(1000, "bye");
    }
  }

  let rtcAnalyser = null;
  let rtcMonitor = null; // setInterval ids {onset, stats}
  const replyOnset = { audible: false, quietSince: null, playing: null };

  async function startWebRtc() {
    const base = ui.serverUrl.value.trim();
    const key = ui.apiKey.value.trim();
    const conn = new RtcConnection(base, key);
    ws = conn;
    wireConnection(conn, base, key);
    conn.ontrack = onRemoteStream;
    let m;
    try {
      m = await openMic();
    } catch (e) {
      recordError("microphone", { code: e.kind || "error", message: e.message });
      fail("Microphone unavailable.", " " + e.message, "mic");
      return;
    }
    if (ws !== conn) {
      m.stream.getTracks().forEach((t) => t.stop());
      return;
    }
    mic = m;
    try {
      await conn.connect(m.stream);
    } catch (e) {
      if (ws !== conn) return;
      const kind = e.kind || "webrtc";
      if (kind === "unreachable") {
        recordError("network", { code: "unreachable", message: e.message });
        fail("Server unreachable.", " " + e.message, "mic");
        setState("error", "Server unreachable", "error");
      } else if (kind === "auth") {
        recordError("auth", { code: "invalid_api_key", message: e.message });
        fail("Authentication refused.", ` The server did not accept the API key (${e.message}). Check Settings › API key.`, "mic");
        setState("error", "API key refused", "error");
        askForKey();
      } else if (kind === "busy") {
        recordError("capacity", { code: "unavailable", message: e.message });
        fail("Server busy.", " " + e.message, "mic");
      } else {
        fail("WebRTC setup failed.", ` ${e.name === "Error" || !e.name ? "" : e.name + ": "}${e.message}`, "webrtc");
      }
      return;
    }
    startRtcMonitor(conn);
  }

  function onRemoteStream(stream) {
    const el = document.getElementById("remote-audio");
    el.srcObject = stream;
    el.play().catch(() => showAlert("Audio is blocked by the browser.", " Click anywhere on the page to hear the agent."));
    document.addEventListener("click", () => el.play().catch(() => {}), { once: true });
    // Chromium feeds a remote track to Web Audio only while a media element plays it: the
    // element plays, the analyser only listens (through a muted sink).
    const src = ctx.createMediaStreamSource(stream);
    rtcAnalyser = ctx.createAnalyser();
    rtcAnalyser.fftSize = 512;
    const sink = ctx.createGain();
    sink.gain.value = 0;
    src.connect(rtcAnalyser);
    rtcAnalyser.connect(sink);
    sink.connect(ctx.destination);
    outAnalyser = rtcAnalyser; // the "out" meter shows the reply track
  }

  const onsetBuf = new Float32Array(512);
  function startRtcMonitor(conn) {
    stopRtcMonitor();
    // Reply onset at the page: the first 10 ms poll where the reply track is audible after at
    // least 300 ms of quiet. That is when the first reply audio is heard (after the browser's
    // jitter buffer), in the page's own clock.
    const onset = setInterval(() => {
      if (!rtcAnalyser) return;
      rtcAnalyser.getFloatTimeDomainData(onsetBuf);
      let sum = 0;
      for (let i = 0; i < onsetBuf.length; i++) sum += onsetBuf[i] * onsetBuf[i];
      const rms = Math.sqrt(sum / onsetBuf.length);
      const t = now();
      if (rms > REPLY_AUDIBLE_RMS) {
        replyOnset.quietSince = null;
        if (!replyOnset.audible) {
          replyOnset.audible = true;
          onReplyAudible(t);
        }
      } else if (replyOnset.audible) {
        if (replyOnset.quietSince == null) replyOnset.quietSince = t;
        else if (t - replyOnset.quietSince > 300) replyOnset.audible = false;
      }
    }, 10);
    const stats = setInterval(async () => {
      if (!conn.pc || conn.readyState === 3) return;
      try {
        const report = await conn.pc.getStats();
        report.forEach((r) => {
          if (r.type === "inbound-rtp" && r.kind === "audio") {
            demo.webrtc.stats = {
              packetsReceived: r.packetsReceived,
              packetsLost: r.packetsLost,
              bytesReceived: r.bytesReceived,
              totalAudioEnergy: r.totalAudioEnergy,
              audioLevel: r.audioLevel,
              totalSamplesReceived: r.totalSamplesReceived,
              concealedSamples: r.concealedSamples,
              jitterBufferDelay: r.jitterBufferDelay,
              jitterBufferEmittedCount: r.jitterBufferEmittedCount,
              jitter: r.jitter,
              codec: r.codecId || null,
            };
          }
        });
      } catch (_) {
        /* closed meanwhile */
      }
    }, 500);
    rtcMonitor = { onset, stats };
  }

  function stopRtcMonitor() {
    if (!rtcMonitor) return;
    clearInterval(rtcMonitor.onset);
    clearInterval(rtcMonitor.stats);
    rtcMonitor = null;
  }

  // The reply track became audible: the first audio of the reply now playing was heard.
  function onReplyAudible(t) {
    demo.webrtc.onsets++;
    const turn = replyOnset.playing && turnsById.get(replyOnset.playing);
    if (!turn || turn.page.firstAudioHeardAt != null) return;
    turn.page.firstAudioHeardAt = t;
    turn.page.firstAudioHeardMs = turn.origin ? round1(t - turn.origin.at) : null;
    // The page's own figure: the microphone went quiet -> the reply was heard.
    turn.page.micEndToHeardMs = lastMicSpeechAt != null ? round1(t - lastMicSpeechAt) : null;
    renderTurn(turn);
  }

  // ---------------------------------------------------------------------------------------
  // Session lifecycle

  async function start() {
    if (ws) return;
    clearAlert();
    closingByClient = false;
    demo.closed = null;
    demo.sessionReady = false;
    demo.talking = false;
    demo.muted = false;
    setState("connecting", "Connecting…", "busy");
    ui.connect.textContent = "End session";
    ui.connect.classList.add("stop");
    updateTalkButton();

    try {
      await ensureAudio();
    } catch (e) {
      fail("Audio could not start.", ` ${e.name || "Error"}: ${e.message}`, "audio");
      return;
    }
    if (TRANSPORT === "webrtc") {
      await startWebRtc();
      return;
    }
    const micPromise = openMic().then(
      (m) => m,
      (e) => e
    );
    if (!openSocket()) return;
    const m = await micPromise;
    if (m instanceof Error) {
      recordError("microphone", { code: m.kind || "error", message: m.message });
      fail("Microphone unavailable.", " " + m.message, "mic");
      return;
    }
    if (!ws) {
      // The session ended while the microphone was opening.
      m.stream.getTracks().forEach((t) => t.stop());
      return;
    }
    mic = m;
  }

  function openSocket() {
    const url = ui.serverUrl.value.trim();
    const key = ui.apiKey.value.trim();
    try {
      ws = new WebSocket(url, ["realtime", `openai-insecure-api-key.${key}`]);
    } catch (e) {
      fail("Cannot connect.", ` ${e.message} (check the server URL and that the key has no spaces).`, "config");
      return false;
    }
    wireConnection(ws, url, key);
    return true;
  }

  // The page's one connection (a WebSocket, or an RtcConnection with the same surface): what
  // its events mean for the session.
  function wireConnection(sock, url, key) {
    let opened = false;
    log("note", "connecting", url);
    sock.onopen = () => {
      opened = true;
      demo.connected = true;
      setState("connecting", "Connected — waiting for session…", "busy");
      sessionTimer = setTimeout(() => {
        if (!demo.sessionId) fail("No session.", " The server accepted the connection but sent no session.created.", "protocol");
      }, SESSION_TIMEOUT_MS);
    };
    sock.onmessage = (e) => {
      if (typeof e.data !== "string") return;
      let ev;
      try {
        ev = JSON.parse(e.data);
      } catch (_) {
        log("in", "unparseable message", String(e.data).slice(0, 80), true);
        return;
      }
      onServerEvent(ev);
    };
    sock.onclose = (e) => {
      if (ws !== sock) return;
      const byClient = closingByClient;
      demo.closed = { code: e.code, reason: e.reason, byClient, wasOpen: opened };
      log("note", "socket closed", `code ${e.code}${e.reason ? " " + e.reason : ""}`, !byClient);
      teardown();
      if (byClient) return;
      if (!opened && TRANSPORT === "websocket") {
        diagnoseHandshake(url, key);
      } else if (!opened) {
        setState("error", "Media connection failed", "error");
        recordError("media", { code: "connection_failed", message: e.reason });
        showAlert(
          "Media connection failed.",
          ` ${e.reason}. The browser could not reach the server's UDP media port: a firewall or NAT is in the way (the server's webrtc.candidate_ips and a TURN server fix that; see docs/WEBRTC.md).`
        );
      } else {
        const lost = e.code === 1006;
        const why = e.reason ? `${e.reason} (code ${e.code})` : lost ? "connection lost" : `code ${e.code}`;
        setState("ended", lost ? "Connection lost" : "Session ended", "error");
        showAlert(
          lost ? "Connection lost." : "The server ended the session.",
          lost ? " The server stopped or the network failed. Start a new session to continue." : ` ${why}.`
        );
        systemNote(`Session ended: ${why}`);
      }
    };
  }

  // A browser reports no HTTP status for a refused WebSocket handshake, so ask the same URL over
  // plain HTTP: 401 means the key was refused; no answer means the server is unreachable.
  async function diagnoseHandshake(wsUrl, key) {
    setState("error", "Connection failed", "error");
    let httpUrl;
    try {
      const u = new URL(wsUrl);
      u.protocol = u.protocol === "wss:" ? "https:" : "http:";
      u.searchParams.set("api_key", key);
      httpUrl = u.href;
    } catch (_) {
      showAlert("Cannot connect.", " The server URL is not valid.");
      return;
    }
    try {
      const r = await fetch(httpUrl, { cache: "no-store" });
      let body = null;
      try {
        body = await r.json();
      } catch (_) {
        /* not JSON */
      }
      const msg = body && body.error ? body.error.message : "";
      if (r.status === 401) {
        recordError("auth", { code: "invalid_api_key", message: msg || "API key refused" });
        setState("error", "API key refused", "error");
        showAlert("Authentication refused.", ` The server did not accept the API key${msg ? ` (${msg})` : ""}. Check Settings › API key.`);
        askForKey();
      } else if (r.status === 503) {
        recordError("capacity", { code: (body && body.error && body.error.code) || "unavailable", message: msg });
        showAlert("Server busy.", ` ${msg || "The server refused the session."}`);
      } else {
        recordError("handshake", { code: `http_${r.status}`, message: msg || "WebSocket handshake failed" });
        showAlert(
          "WebSocket handshake failed.",
          ` The server answered but did not open a Realtime session (HTTP ${r.status} without upgrade; it may be at capacity).`
        );
      }
    } catch (_) {
      // Cross-origin servers send no CORS headers: an opaque answer still proves it is up.
      let answered = false;
      try {
        await fetch(httpUrl, { cache: "no-store", mode: "no-cors" });
        answered = true;
      } catch (_) {
        /* unreachable */
      }
      if (answered) {
        recordError("handshake", { code: "refused", message: `server at ${wsUrl} refused the WebSocket` });
        setState("error", "Connection refused", "error");
        showAlert(
          "Connection refused.",
          " The server answered but refused the session: check Settings › API key (or the server is at capacity)."
        );
        return;
      }
      recordError("network", { code: "unreachable", message: `server unreachable at ${wsUrl}` });
      setState("error", "Server unreachable", "error");
      showAlert("Server unreachable.", ` Nothing answered at ${wsUrl}. Is \`antiphon serve\` running?`);
    }
  }

  function fail(title, detail, source) {
    if (source !== "mic") recordError(source, { code: source, message: title + detail });
    showAlert(title, detail);
    const sock = ws;
    if (sock) {
      closingByClient = true;
      sock.close(1000, "client error");
    }
    teardown();
    setState("error", title.replace(/\.$/, ""), "error");
  }

  function stop(note) {
    if (!ws) return;
    closingByClient = true;
    demo.closed = { code: 1000, reason: "bye", byClient: true, wasOpen: demo.connected };
    ws.close(1000, "bye");
    teardown();
    setState("ended", "Session ended", "");
    if (note) systemNote(note);
  }

  function teardown() {
    clearTimeout(sessionTimer);
    stopRtcMonitor();
    if (rtcAnalyser) {
      rtcAnalyser = null;
      outAnalyser = null;
      const el = document.getElementById("remote-audio");
      if (el) el.srcObject = null;
    }
    replyOnset.playing = null;
    if (player && playback.active) player.port.postMessage({ type: "clear", token: 0 });
    playback.active = false;
    closeMic();
    ws = null;
    demo.connected = false;
    demo.sessionReady = false;
    demo.talking = false;
    activeResponseId = null;
    ui.connect.textContent = "Start session";
    ui.connect.classList.remove("stop");
    ui.talk.disabled = true;
    updateTalkButton();
  }

  // ---------------------------------------------------------------------------------------
  // Controls

  function updateTalkButton() {
    const t = ui.talk;
    if (demo.mode === "ptt") {
      t.textContent = demo.talking ? "Stop & send" : "Talk";
      t.setAttribute("aria-pressed", String(demo.talking));
      t.setAttribute("aria-label", demo.talking ? "Stop talking and send" : "Start talking");
      ui.hint.textContent = "Push-to-talk: press Talk, speak, press again to send. Talking interrupts the agent.";
    } else {
      t.textContent = demo.muted ? "Unmute mic" : "Mute mic";
      t.setAttribute("aria-pressed", String(demo.muted));
      t.setAttribute("aria-label", demo.muted ? "Unmute microphone" : "Mute microphone");
      ui.hint.textContent =
        "Hands-free: the server detects when you stop speaking. Headphones avoid the agent hearing itself.";
    }
  }

  function toggleTalk() {
    if (!demo.sessionReady) return;
    if (demo.mode === "handsfree") {
      demo.muted = !demo.muted;
      updateTalkButton();
      setIdleState();
      return;
    }
    if (!demo.talking) {
      // A new manual turn: interrupt the agent and start from an empty buffer.
      if (playback.active) bargeIn("talk pressed");
      // Over WebRTC the server plays the reply: ask it to stop (it truncates what was unheard).
      if (TRANSPORT === "webrtc" && replyOnset.playing) send({ type: "output_audio_buffer.clear" });
      if (activeResponseId) send({ type: "response.cancel" });
      send({ type: "input_audio_buffer.clear" });
      talkFrames = 0;
      demo.talking = true;
    } else {
      demo.talking = false;
      if (talkFrames > 0) {
        const commit = () => {
          send({ type: "input_audio_buffer.commit" });
          pendingOrigin = { kind: "speech_end", at: now() };
          send({ type: "response.create" });
        };
        // Over WebRTC the last words are still on their way as RTP when the button is
        // released (the commit takes the faster data channel): let them arrive first.
        if (TRANSPORT === "webrtc") setTimeout(commit, 150);
        else commit();
        setState("thinking", "Thinking…", "busy");
      }
    }
    updateTalkButton();
    if (demo.talking || demo.state !== "thinking") setIdleState();
  }

  ui.connect.addEventListener("click", () => (ws ? stop("Session ended by you.") : start()));
  ui.talk.addEventListener("click", toggleTalk);
  ui.voice.addEventListener("change", () => {
    demo.voice = ui.voice.value;
    if (demo.sessionReady) send(sessionConfig());
  });
  for (const r of document.querySelectorAll('input[name="mode"]')) {
    r.addEventListener("change", () => {
      demo.mode = r.value;
      demo.talking = false;
      demo.muted = false;
      if (demo.sessionReady) {
        send({ type: "input_audio_buffer.clear" });
        send(sessionConfig());
      }
      updateTalkButton();
      setIdleState();
    });
  }
  ui.instructions.addEventListener("change", () => {
    if (demo.sessionReady) send(sessionConfig());
  });
  updateTalkButton();

  if (params.get("autostart") === "1") {
    demo.mode = params.get("mode") === "ptt" ? "ptt" : "handsfree";
    start();
  }
})();
