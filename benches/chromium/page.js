// One side of a Chromium-to-Chromium call for `sotto-bench run --peer chromium`, loaded
// into a page by pair.mjs, which drives both sides and carries their SDP (no signaling
// server: the two pages are in one browser). The caller speaks its fake microphone (the
// reference WAV); the callee records what it hears through an AudioWorklet, at 48 kHz.
// Chromium runs with its defaults except that the microphone's processing (echo
// cancellation, noise suppression, gain control) is off, as it is for the Sotto side.
(() => {
  'use strict';

  const RECORDER = `
    class SottoRecorder extends AudioWorkletProcessor {
      constructor() { super(); this.chunk = new Float32Array(4800); this.n = 0; }
      process(inputs) {
        const channel = inputs[0] && inputs[0][0];
        if (!channel) return true;
        for (let i = 0; i < channel.length; i++) {
          this.chunk[this.n++] = channel[i];
          if (this.n === this.chunk.length) {
            this.port.postMessage(this.chunk, [this.chunk.buffer]);
            this.chunk = new Float32Array(4800);
            this.n = 0;
          }
        }
        return true;
      }
    }
    registerProcessor('sotto-recorder', SottoRecorder);
  `;

  const MIC = { audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  const side = {
    pc: null,
    transceiver: null,
    candidates: [],
    gathered: false,
    remote: null,
    recorder: null,
    chunks: [],
  };

  async function until(what, test, seconds) {
    const end = Date.now() + seconds * 1000;
    while (!test()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await sleep(20);
    }
  }

  window.sottoSide = {
    // A connection with one send-and-receive audio transceiver and no track yet. Asks for
    // the microphone once (and stops it): Chromium shows real host addresses, not mDNS
    // names, only to pages allowed to capture.
    async init() {
      const probe = await navigator.mediaDevices.getUserMedia(MIC);
      probe.getTracks().forEach((t) => t.stop());
      side.pc = new RTCPeerConnection({ iceServers: [] });
      side.pc.onicecandidate = (e) => {
        if (e.candidate && e.candidate.candidate) side.candidates.push(e.candidate.toJSON());
        else side.gathered = true;
      };
      side.pc.ontrack = (e) => {
        side.remote = e.streams[0] || new MediaStream([e.track]);
      };
      side.transceiver = side.pc.addTransceiver('audio', { direction: 'sendrecv' });
    },
    async offer() {
      const offer = await side.pc.createOffer();
      await side.pc.setLocalDescription(offer);
      return offer.sdp;
    },
    async answer(sdp) {
      await side.pc.setRemoteDescription({ type: 'offer', sdp });
      const answer = await side.pc.createAnswer();
      await side.pc.setLocalDescription(answer);
      return answer.sdp;
    },
    async accept(sdp) {
      await side.pc.setRemoteDescription({ type: 'answer', sdp });
    },
    async candidatesGathered(seconds) {
      await until('ICE gathering', () => side.gathered, seconds);
      return side.candidates;
    },
    async addCandidate(candidate) {
      await side.pc.addIceCandidate(candidate);
    },
    async connected(seconds) {
      await until('the connection', () => side.pc.connectionState === 'connected', seconds);
    },
    // Starts the microphone (the fake device plays the WAV from its start) and sends it.
    // Returns when, on the wall clock, capture started.
    async speak() {
      const stream = await navigator.mediaDevices.getUserMedia(MIC);
      const at = Date.now();
      await side.transceiver.sender.replaceTrack(stream.getAudioTracks()[0]);
      return at;
    },
    // Starts recording the remote stream; returns when, on the wall clock.
    async record(seconds) {
      await until('the remote track', () => side.remote !== null, seconds);
      const ctx = new AudioContext({ sampleRate: 48000 });
      const url = URL.createObjectURL(new Blob([RECORDER], { type: 'application/javascript' }));
      await ctx.audioWorklet.addModule(url);
      // Chromium pulls remote WebRTC audio through a media element; it plays muted.
      const element = new Audio();
      element.muted = true;
      element.srcObject = side.remote;
      element.play().catch(() => {});
      const source = ctx.createMediaStreamSource(side.remote);
      const node = new AudioWorkletNode(ctx, 'sotto-recorder', { numberOfOutputs: 1 });
      node.port.onmessage = (ev) => side.chunks.push(ev.data);
      const mute = ctx.createGain();
      mute.gain.value = 0;
      source.connect(node).connect(mute).connect(ctx.destination);
      side.recorder = { ctx, source, node, element };
      return Date.now();
    },
    // Stops recording; the samples as base64url 16-bit little-endian PCM.
    stopRecording() {
      const r = side.recorder;
      if (!r) return '';
      r.source.disconnect();
      r.node.disconnect();
      r.element.srcObject = null;
      const total = side.chunks.reduce((n, c) => n + c.length, 0);
      const bytes = new Uint8Array(total * 2);
      const view = new DataView(bytes.buffer);
      let at = 0;
      for (const c of side.chunks) {
        for (let i = 0; i < c.length; i++) {
          const v = Math.max(-32768, Math.min(32767, Math.round(c[i] * 32768)));
          view.setInt16(at, v, true);
          at += 2;
        }
      }
      let binary = '';
      for (let i = 0; i < bytes.length; i += 0x8000) {
        binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
      }
      return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    },
    // WebRTC's own numbers for the audio streams.
    async stats() {
      const out = {};
      const stats = await side.pc.getStats();
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          out.inbound = {
            packets_received: s.packetsReceived,
            packets_lost: s.packetsLost,
            fec_packets_received: s.fecPacketsReceived,
            concealed_samples: s.concealedSamples,
            total_samples_received: s.totalSamplesReceived,
            jitter_buffer_delay: s.jitterBufferDelay,
            jitter_buffer_emitted_count: s.jitterBufferEmittedCount,
            inserted_samples_for_deceleration: s.insertedSamplesForDeceleration,
            removed_samples_for_acceleration: s.removedSamplesForAcceleration,
            bytes_received: s.bytesReceived,
            codec: stats.get(s.codecId)?.mimeType,
          };
        } else if (s.type === 'outbound-rtp' && s.kind === 'audio') {
          out.outbound = {
            packets_sent: s.packetsSent,
            bytes_sent: s.bytesSent,
            target_bitrate: s.targetBitrate,
            codec: stats.get(s.codecId)?.mimeType,
          };
        }
      });
      return out;
    },
    close() {
      side.pc.close();
    },
  };
})();
