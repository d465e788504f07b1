// One side of a Chromium-to-Chromium call for `sotto-bench run --peer chromium`, loaded
// into a page by pair.mjs, which drives both sides and carries their SDP (no signaling
// server: the two pages are in one browser). The caller speaks its fake microphone (the
// reference WAV); the callee records what it hears through an AudioWorklet, at 48 kHz.
// Chromium runs with its defaults except that the microphone's processing (echo
// cancellation, noise suppression, gain control) is off, as it is for the Sotto side.
// Recording is examples/tests/browser/recorder.js's, loaded into the page first.
(() => {
  'use strict';

  const MIC = { audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  const side = {
    pc: null,
    transceiver: null,
    candidates: [],
    gathered: false,
    remote: null,
    recording: null,
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
      await window.sottoRecorder.prepare(ctx);
      side.recording = window.sottoRecorder.record(ctx, side.remote);
      return Date.now();
    },
    // Stops recording; the samples as base64url 16-bit little-endian PCM.
    stopRecording() {
      if (!side.recording) return '';
      const samples = side.recording.stop();
      return window.sottoRecorder.base64url(new Uint8Array(samples.buffer));
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
