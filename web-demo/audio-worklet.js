// AudioWorklet processors of the Antiphon web demo. Both run on the audio rendering thread.
//
// - "antiphon-capture": microphone -> 24 kHz mono pcm16 frames posted to the page.
// - "antiphon-player": queue of 24 kHz pcm16 reply chunks -> speakers, gapless, with played-sample
//   accounting per conversation item (for `conversation.item.truncate` after a barge-in).
//
// The page asks for a 24 kHz AudioContext, so normally no resampling happens here; when a
// browser gives another rate, both processors convert with linear interpolation (with a
// one-pole low-pass in front when capturing from a higher rate, against aliasing).

const WIRE_RATE = 24000;
// After the queue ran dry mid-reply, wait for 160 ms of audio before resuming, so a stream that
// arrives just in time pauses once and gains headroom instead of clicking at every chunk. The first chunk of a
// reply plays at once (that is the latency that matters).
const REBUFFER_SAMPLES = (WIRE_RATE * 160) / 1000;

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const frameMs = (options.processorOptions && options.processorOptions.frameMs) || 20;
    this.frameLen = Math.round((WIRE_RATE * frameMs) / 1000);
    this.frame = new Int16Array(this.frameLen);
    this.fill = 0;
    // Source samples advanced per wire sample.
    this.step = sampleRate / WIRE_RATE;
    this.pos = 0; // fractional read position into the current block, in source samples
    this.prev = 0; // last source sample of the previous block (for interpolation across blocks)
    this.lp = 0; // low-pass state
    this.lpAlpha = this.step > 1 ? Math.min(1, 1 / this.step) : 1;
    this.sumSquares = 0;
    this.peak = 0;
    this.port.onmessage = () => {};
  }

  pushSample(x) {
    const s = Math.max(-1, Math.min(1, x));
    this.frame[this.fill++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    this.sumSquares += s * s;
    const a = Math.abs(s);
    if (a > this.peak) this.peak = a;
    if (this.fill === this.frameLen) {
      const rms = Math.sqrt(this.sumSquares / this.frameLen);
      const out = this.frame;
      this.port.postMessage({ type: "frame", pcm: out.buffer, rms, peak: this.peak }, [out.buffer]);
      this.frame = new Int16Array(this.frameLen);
      this.fill = 0;
      this.sumSquares = 0;
      this.peak = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    // Mono: average the channels.
    const n = input[0].length;
    const mono = new Float32Array(n);
    for (let c = 0; c < input.length; c++) {
      const ch = input[c];
      for (let i = 0; i < n; i++) mono[i] += ch[i];
    }
    if (input.length > 1) for (let i = 0; i < n; i++) mono[i] /= input.length;

    if (this.step === 1) {
      for (let i = 0; i < n; i++) this.pushSample(mono[i]);
      return true;
    }
    if (this.lpAlpha < 1) {
      let y = this.lp;
      for (let i = 0; i < n; i++) {
        y += this.lpAlpha * (mono[i] - y);
        mono[i] = y;
      }
      this.lp = y;
    }
    // Read positions run from -1 (the previous block's last sample) up to, not including, n-1:
    // a position in [n-1, n) needs the next block's first sample and is read there as [-1, 0).
    while (this.pos < n - 1) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i < 0 ? this.prev : mono[i];
      const b = mono[i + 1];
      this.pushSample(a + (b - a) * frac);
      this.pos += this.step;
    }
    this.pos -= n;
    this.prev = mono[n - 1];
    return true;
  }
}

class PlayerProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    // Queue of {itemId, responseId, samples: Float32Array (24 kHz), offset}
    this.queue = [];
    this.step = WIRE_RATE / sampleRate; // wire samples per output sample
    this.frac = 0;
    this.current = null; // item id being played
    this.played = {}; // itemId -> wire samples rendered
    this.started = {}; // itemId -> true once its first sample was rendered
    this.ended = {}; // itemId -> server said the item's audio is complete
    this.playing = false;
    this.underruns = 0;
    this.rebuffering = false;
    this.blocks = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(msg) {
    switch (msg.type) {
      case "chunk": {
        const pcm = new Int16Array(msg.pcm);
        const f = new Float32Array(pcm.length);
        for (let i = 0; i < pcm.length; i++) f[i] = pcm[i] / 0x8000;
        this.queue.push({ itemId: msg.itemId, responseId: msg.responseId, samples: f, offset: 0 });
        break;
      }
      case "end":
        this.ended[msg.itemId] = true;
        break;
      case "clear": {
        // Barge-in: drop everything queued, report what was rendered per item.
        const dropped = this.queue.reduce((n, c) => n + c.samples.length - c.offset, 0);
        this.queue = [];
        this.frac = 0;
        this.rebuffering = false;
        const wasPlaying = this.playing;
        this.playing = false;
        this.port.postMessage({
          type: "cleared",
          token: msg.token,
          itemId: this.current,
          played: Object.assign({}, this.played),
          droppedSamples: dropped,
          wasPlaying,
        });
        break;
      }
      default:
        break;
    }
  }

  // The wire sample k positions after the read head (k = 0 or 1), across chunk boundaries;
  // `null` past the end of the queue.
  peek(k) {
    let idx = 0;
    let off = this.queue.length ? this.queue[0].offset + k : 0;
    while (idx < this.queue.length && off >= this.queue[idx].samples.length) {
      off -= this.queue[idx].samples.length;
      idx++;
      if (idx < this.queue.length) off += this.queue[idx].offset;
    }
    return idx < this.queue.length ? this.queue[idx].samples[off] : null;
  }

  advance() {
    const head = this.queue[0];
    const item = head.itemId;
    if (this.current !== item) {
      this.current = item;
      if (!this.started[item]) {
        this.started[item] = true;
        this.port.postMessage({ type: "started", itemId: item, responseId: head.responseId, time: currentTime });
      }
    }
    this.played[item] = (this.played[item] || 0) + 1;
    head.offset++;
    if (head.offset >= head.samples.length) this.queue.shift();
  }

  canResume() {
    let queued = 0;
    for (const c of this.queue) {
      if (c.itemId !== this.current || this.ended[c.itemId]) return true;
      queued += c.samples.length - c.offset;
    }
    return queued >= REBUFFER_SAMPLES;
  }

  process(_inputs, outputs) {
    const out = outputs[0];
    const ch0 = out[0];
    const n = ch0.length;
    if (this.rebuffering && this.queue.length && this.canResume()) this.rebuffering = false;
    for (let i = 0; i < n; i++) {
      if (this.queue.length === 0 || this.rebuffering) {
        ch0[i] = 0;
        continue;
      }
      if (this.step === 1) {
        ch0[i] = this.queue[0].samples[this.queue[0].offset];
        this.advance();
      } else {
        const a = this.peek(0);
        const b = this.peek(1);
        ch0[i] = b === null ? a : a + (b - a) * this.frac;
        this.frac += this.step;
        while (this.frac >= 1 && this.queue.length) {
          this.frac -= 1;
          this.advance();
        }
      }
    }
    for (let c = 1; c < out.length; c++) out[c].set(ch0);

    const nowPlaying = this.queue.length > 0 && !this.rebuffering;
    if (this.playing && this.queue.length === 0) {
      // Ran dry before the server marked the item complete: the network or TTS fell behind.
      if (!this.ended[this.current]) {
        this.underruns++;
        this.rebuffering = true;
      }
      this.port.postMessage({
        type: "drained",
        itemId: this.current,
        complete: !!this.ended[this.current],
        played: Object.assign({}, this.played),
        underruns: this.underruns,
      });
    }
    this.playing = nowPlaying;
    // Progress about every 21 ms (4 render quanta at 24 kHz) while playing.
    if (nowPlaying && ++this.blocks % 4 === 0) {
      this.port.postMessage({ type: "progress", itemId: this.current, played: this.played[this.current] || 0 });
    }
    return true;
  }
}

registerProcessor("antiphon-capture", CaptureProcessor);
registerProcessor("antiphon-player", PlayerProcessor);
