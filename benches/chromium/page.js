// One side of a Chromium-to-Chromium call for `sotto-bench run --peer chromium`, loaded
// into a page by pair.mjs, which drives both sides and carries their SDP (no signaling
// server: the two pages are in one browser). The caller speaks its fake microphone (the
// reference WAV); the callee records what it hears through an AudioWorklet, at 48 kHz.
// With video the caller also sends its fake camera (the test-pattern Y4M) and the callee
// reads every picture it decodes (frame code, size, arrival; some pictures whole).
// Chromium runs with its defaults except that the microphone's processing (echo
// cancellation, noise suppression, gain control) is off, as it is for the Sotto side.
// Recording is examples/tests/browser/recorder.js's, loaded into the page first.
(() => {
  'use strict';

  const MIC = { audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } };
  // The fake camera plays the test-pattern Y4M at its own size and rate.
  const CAMERA = { width: 640, height: 360, frameRate: 30 };
  // The frame code's geometry (engine/src/video/code.rs): 16 columns, 4 rows, a cell
  // 1/16 of the width and 1/24 of the height; a cell's middle half is averaged.
  const COLUMNS = 16;
  const ROWS = 4;
  const CELL_HEIGHT_DIVISOR = 24;
  const THRESHOLD = (16 + 235) / 2;

  // The 64 bits of a picture's frame code, as 16 hex digits (the CRC is checked by the
  // bench), read from its luma plane (`stride` bytes a row).
  function readCode(luma, stride, width, height) {
    const middle = (a, b) => {
      const quarter = Math.floor((b - a) / 4);
      const lo = a + quarter;
      const hi = b - quarter;
      return hi > lo ? [lo, hi] : [a, a + 1];
    };
    let hex = '';
    let nibble = 0;
    let count = 0;
    for (let row = 0; row < ROWS; row++) {
      for (let column = 0; column < COLUMNS; column++) {
        const x0 = Math.floor((column * width) / COLUMNS);
        const x1 = Math.floor(((column + 1) * width) / COLUMNS);
        const y0 = Math.floor((row * height) / CELL_HEIGHT_DIVISOR);
        const y1 = Math.max(Math.floor(((row + 1) * height) / CELL_HEIGHT_DIVISOR), y0 + 1);
        const [mx0, mx1] = middle(x0, x1);
        const [my0, my1] = middle(y0, y1);
        let sum = 0;
        let n = 0;
        for (let y = my0; y < my1; y++) {
          for (let x = mx0; x < mx1; x++) {
            sum += luma[y * stride + x];
            n++;
          }
        }
        nibble = (nibble << 1) | (Math.floor(sum / Math.max(n, 1)) > Math.floor(THRESHOLD) ? 1 : 0);
        if (++count % 4 === 0) {
          hex += nibble.toString(16);
          nibble = 0;
        }
      }
    }
    return hex;
  }

  const b64 = (bytes) => {
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s);
  };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  const side = {
    pc: null,
    transceiver: null,
    candidates: [],
    gathered: false,
    remote: null,
    recording: null,
    videoTransceiver: null,
    remoteVideo: null,
    watching: null,
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
    async init(video) {
      const probe = await navigator.mediaDevices.getUserMedia(MIC);
      probe.getTracks().forEach((t) => t.stop());
      side.pc = new RTCPeerConnection({ iceServers: [] });
      side.pc.onicecandidate = (e) => {
        if (e.candidate && e.candidate.candidate) side.candidates.push(e.candidate.toJSON());
        else side.gathered = true;
      };
      side.pc.ontrack = (e) => {
        if (e.track.kind === 'video') side.remoteVideo = e.track;
        else side.remote = new MediaStream([e.track]);
      };
      side.transceiver = side.pc.addTransceiver('audio', { direction: 'sendrecv' });
      if (video) side.videoTransceiver = side.pc.addTransceiver('video', { direction: 'sendrecv' });
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
      const constraints = side.videoTransceiver ? { ...MIC, video: CAMERA } : MIC;
      const stream = await navigator.mediaDevices.getUserMedia(constraints);
      const at = Date.now();
      await side.transceiver.sender.replaceTrack(stream.getAudioTracks()[0]);
      if (side.videoTransceiver) {
        await side.videoTransceiver.sender.replaceTrack(stream.getVideoTracks()[0]);
      }
      return at;
    },
    // Reads every picture the remote video track delivers (WebCodecs frames from a
    // MediaStreamTrackProcessor: Chrome's decoded pictures, before any scaling for
    // display): when it came, its size, its frame code; and every `keepEvery`-th
    // picture's planes, for PSNR and SSIM.
    async watch(seconds, keepEvery) {
      await until('the remote video track', () => side.remoteVideo !== null, seconds);
      const reader = new MediaStreamTrackProcessor({ track: side.remoteVideo }).readable.getReader();
      const watching = { frames: [], pictures: [], formats: {}, stop: false, done: null };
      side.watching = watching;
      watching.done = (async () => {
        while (!watching.stop) {
          const { value: frame, done } = await reader.read();
          if (done) break;
          const at = Date.now();
          try {
            const width = frame.visibleRect.width;
            const height = frame.visibleRect.height;
            const format = frame.format;
            watching.formats[format] = (watching.formats[format] || 0) + 1;
            const buffer = new Uint8Array(frame.allocationSize());
            const layout = await frame.copyTo(buffer);
            const luma = buffer.subarray(layout[0].offset);
            const code = readCode(luma, layout[0].stride, width, height);
            watching.frames.push([at, width, height, code]);
            if (watching.frames.length % keepEvery === 1 && (format === 'I420' || format === 'NV12')) {
              const plane = (index, w, h, step, pick) => {
                const out = new Uint8Array(w * h);
                const { offset, stride } = layout[index];
                for (let y = 0; y < h; y++) {
                  for (let x = 0; x < w; x++) out[y * w + x] = buffer[offset + y * stride + x * step + pick];
                }
                return out;
              };
              const cw = (width + 1) >> 1;
              const ch = (height + 1) >> 1;
              const y = plane(0, width, height, 1, 0);
              const [u, v] = format === 'I420'
                ? [plane(1, cw, ch, 1, 0), plane(2, cw, ch, 1, 0)]
                : [plane(1, cw, ch, 2, 0), plane(1, cw, ch, 2, 1)];
              watching.pictures.push({ width, height, y: b64(y), u: b64(u), v: b64(v) });
            }
          } finally {
            frame.close();
          }
        }
      })();
    },
    async stopWatching() {
      const watching = side.watching;
      if (!watching) return null;
      watching.stop = true;
      side.remoteVideo.stop();
      await Promise.race([watching.done, sleep(2000)]);
      return { frames: watching.frames, pictures: watching.pictures, formats: watching.formats };
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
        } else if (s.type === 'inbound-rtp' && s.kind === 'video') {
          out.video_inbound = {
            packets_received: s.packetsReceived,
            packets_lost: s.packetsLost,
            frames_received: s.framesReceived,
            frames_decoded: s.framesDecoded,
            key_frames_decoded: s.keyFramesDecoded,
            frames_dropped: s.framesDropped,
            freeze_count: s.freezeCount,
            total_freezes_duration: s.totalFreezesDuration,
            nack_count: s.nackCount,
            pli_count: s.pliCount,
            frame_width: s.frameWidth,
            frame_height: s.frameHeight,
            codec: stats.get(s.codecId)?.mimeType,
          };
        } else if (s.type === 'outbound-rtp' && s.kind === 'video') {
          out.video_outbound = {
            bytes_sent: s.bytesSent,
            frames_encoded: s.framesEncoded,
            key_frames_encoded: s.keyFramesEncoded,
            frame_width: s.frameWidth,
            frame_height: s.frameHeight,
            quality_limitation_reason: s.qualityLimitationReason,
            target_bitrate: s.targetBitrate,
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
