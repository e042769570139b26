// Live listening: the call's fan-out socket (raw PCM s16le, interleaved) played through Web Audio.

const START_LATENCY = 0.3; // seconds of audio buffered before playback starts (absorbs network jitter)
const CLOSE_REASONS = {
  1000: "The call ended.",
  4404: "This call is not live here (ended, or recorded by another replica).",
  4408: "The connection fell too far behind; listen again.",
};

/** Plays one call's live audio; `onState(text, listening)` reports what is happening. */
export class LivePlayer {
  constructor(onState) {
    this.onState = onState;
    this.socket = null;
    this.context = null;
    this.seconds = 0;
  }

  get listening() {
    return this.socket !== null;
  }

  /** Start listening; `format` is {sampleRate, channels} of the call's PCM, `key` the API key. */
  async start(callId, key, format) {
    this.format = format;
    this.seconds = 0;
    this.context = new AudioContext();
    await this.context.resume();
    this.playAt = 0;
    const url = new URL(`/v1/calls/${encodeURIComponent(callId)}/listen`, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", key); // browsers cannot set headers on a WebSocket
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", () => this.onState("Connected; waiting for audio…", true));
    socket.addEventListener("message", (event) => {
      if (event.data instanceof ArrayBuffer) this.play(event.data);
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      this.release();
      this.onState(CLOSE_REASONS[event.code] || `Listening stopped (code ${event.code}).`, false);
    });
    this.socket = socket;
    this.onState("Connecting…", true);
  }

  play(data) {
    const { sampleRate, channels } = this.format;
    const frames = Math.floor(data.byteLength / (2 * channels));
    if (frames === 0) return;
    const samples = new Int16Array(data, 0, frames * channels);
    const buffer = this.context.createBuffer(channels, frames, sampleRate);
    for (let channel = 0; channel < channels; channel += 1) {
      const out = buffer.getChannelData(channel);
      for (let i = 0; i < frames; i += 1) out[i] = samples[i * channels + channel] / 32768;
    }
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    const now = this.context.currentTime;
    if (this.playAt < now) this.playAt = now + START_LATENCY; // first frame, or after a stall
    source.start(this.playAt);
    this.playAt += buffer.duration;
    this.seconds += buffer.duration;
    this.onState(`Listening: ${this.seconds.toFixed(1)} s received`, true);
  }

  stop() {
    const socket = this.socket;
    this.release();
    socket?.close(1000);
    this.onState("Stopped.", false);
  }

  release() {
    this.socket = null;
    this.context?.close();
    this.context = null;
  }
}
