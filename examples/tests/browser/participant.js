// A Sotto group-room participant in the browser, speaking signaling v1
// (signaling/PROTOCOL.md) exactly as the engine does (engine/src/call/group.rs):
//
//   hello -> auth (an Ed25519 key made here, signing the challenge with WebCrypto)
//   room_join -> offer to the room's SFU with the room id as call_id -> its answer;
//   every later SFU offer (a stream added for another participant) is answered.
//
// No trickle ICE: the SFU is ICE-lite and learns our address from our checks, and its
// one candidate is in its answer. The microphone goes on the wire when the first remote
// stream arrives (so both sides' recordings start near the start of each speech file);
// each remote stream is recorded as 48 kHz PCM through an AudioWorklet (recorder.js).
// With `video`, the fake camera goes out too, in three simulcast layers (q/h/f), each
// remote video is shown in a <video> element, and a few of its pictures are grabbed
// (their luma, for the test to read the frame code drawn into them).
// Loaded into the page by run.mjs, after recorder.js, which calls
// `window.sottoJoin(options)` and gets the recordings back.

(() => {
  'use strict';

  const b64url = {
    encode(bytes) {
      let text = '';
      for (const b of bytes) text += String.fromCharCode(b);
      return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    },
    decode(str) {
      const padded = str.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (str.length % 4)) % 4);
      return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    },
  };

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  // "sotto/signaling/auth/v1" || 0x00 || u16_be(len(server_id)) || server_id || challenge
  function authPayload(serverId, challenge) {
    const domain = new TextEncoder().encode('sotto/signaling/auth/v1\0');
    const id = new TextEncoder().encode(serverId);
    return concat(domain, new Uint8Array([id.length >> 8, id.length & 0xff]), id, challenge);
  }

  // One WebSocket: requests carry an id and resolve with the reply that echoes it (an
  // `error` reply rejects); pushed messages go to `onEvent` in arrival order.
  class Signaling {
    constructor(url, log) {
      this.log = log;
      this.nextId = 1;
      this.pending = new Map();
      this.onEvent = () => {};
      this.ws = new WebSocket(url);
      this.closed = new Promise((resolve) => {
        this.ws.onclose = (ev) => {
          for (const { reject } of this.pending.values()) {
            reject(new Error(`signaling closed (${ev.code} ${ev.reason})`));
          }
          this.pending.clear();
          resolve(ev);
        };
      });
      this.hello = new Promise((resolve, reject) => {
        this.ws.onerror = () => reject(new Error(`cannot reach signaling at ${url}`));
        this.ws.onmessage = (ev) => {
          const msg = JSON.parse(ev.data);
          if (msg.type === 'hello') {
            resolve(msg);
            return;
          }
          if (msg.id !== undefined && this.pending.has(msg.id)) {
            const { resolve: ok, reject: fail } = this.pending.get(msg.id);
            this.pending.delete(msg.id);
            if (msg.type === 'error') fail(new Error(`signaling error ${msg.code}: ${msg.message}`));
            else ok(msg);
            return;
          }
          this.onEvent(msg);
        };
      });
    }

    request(msg) {
      const id = this.nextId++;
      return new Promise((resolve, reject) => {
        this.pending.set(id, { resolve, reject });
        this.ws.send(JSON.stringify({ ...msg, id }));
      });
    }

    close() {
      this.ws.close(1000);
    }
  }

  // What WebRTC says about the call (the numbers a person would look at).
  async function summary(pc) {
    const out = { inbound: [], outbound: [] };
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out.inbound.push({
          mid: s.mid,
          packets_received: s.packetsReceived,
          packets_lost: s.packetsLost,
          jitter_ms: Math.round((s.jitter || 0) * 1000),
          concealed_samples: s.concealedSamples,
          total_samples_received: s.totalSamplesReceived,
          codec: stats.get(s.codecId)?.mimeType,
        });
      } else if (s.type === 'outbound-rtp' && s.kind === 'audio') {
        out.outbound.push({
          packets_sent: s.packetsSent,
          bytes_sent: s.bytesSent,
          codec: stats.get(s.codecId)?.mimeType,
        });
      } else if (s.type === 'media-source' && s.kind === 'audio') {
        out.microphone = {
          total_audio_energy: s.totalAudioEnergy,
          total_samples_duration: s.totalSamplesDuration,
        };
      } else if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out.video_inbound = out.video_inbound || [];
        out.video_inbound.push({
          mid: s.mid,
          packets_received: s.packetsReceived,
          packets_lost: s.packetsLost,
          frames_received: s.framesReceived,
          frames_decoded: s.framesDecoded,
          frames_dropped: s.framesDropped,
          key_frames_decoded: s.keyFramesDecoded,
          frame_width: s.frameWidth,
          frame_height: s.frameHeight,
          frames_per_second: s.framesPerSecond,
          freeze_count: s.freezeCount,
          pli_count: s.pliCount,
          nack_count: s.nackCount,
          decoder: s.decoderImplementation,
          codec: stats.get(s.codecId)?.mimeType,
        });
      } else if (s.type === 'outbound-rtp' && s.kind === 'video') {
        out.video_outbound = out.video_outbound || [];
        out.video_outbound.push({
          rid: s.rid,
          frames_encoded: s.framesEncoded,
          frame_width: s.frameWidth,
          frame_height: s.frameHeight,
          bytes_sent: s.bytesSent,
          quality_limitation: s.qualityLimitationReason,
          codec: stats.get(s.codecId)?.mimeType,
        });
      } else if (s.type === 'transport') {
        out.dtls_state = s.dtlsState;
        out.dtls_version = s.tlsVersion;
        out.srtp_cipher = s.srtpCipher;
      }
    });
    return out;
  }

  window.sottoJoin = async function sottoJoin(opts) {
    const report = window.sottoReport || (() => {});
    const log = (event, detail = {}) => report({ event, ...detail });
    const keys = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
    const identity = b64url.encode(new Uint8Array(await crypto.subtle.exportKey('raw', keys.publicKey)));

    const signaling = new Signaling(opts.signaling, log);
    const hello = await signaling.hello;
    if (!hello.versions.includes(1)) throw new Error(`signaling speaks ${hello.versions}, not 1`);
    const challenge = b64url.decode(hello.challenge);
    const signature = new Uint8Array(
      await crypto.subtle.sign({ name: 'Ed25519' }, keys.privateKey, authPayload(hello.server_id, challenge)),
    );
    await signaling.request({
      type: 'auth',
      version: 1,
      identity,
      challenge: hello.challenge,
      signature: b64url.encode(signature),
      display_name: 'chromium',
    });
    const joined = await signaling.request({
      type: 'room_join',
      room_id: opts.room_id,
      invite_token: opts.invite_token,
    });
    const sfu = joined.sfu;
    if (!sfu) throw new Error('the room has no SFU');
    log('joined', { identity, participants: joined.participants.length });

    const ctx = new AudioContext({ sampleRate: 48000 });
    await window.sottoRecorder.prepare(ctx);

    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    // Our send m-line, sendrecv like the engine's; the microphone is attached later.
    const transceiver = pc.addTransceiver('audio', { direction: 'sendrecv' });
    const camera = opts.video
      ? pc.addTransceiver('video', {
          direction: 'sendrecv',
          sendEncodings: [
            { rid: 'q', scaleResolutionDownBy: 4 },
            { rid: 'h', scaleResolutionDownBy: 2 },
            { rid: 'f' },
          ],
        })
      : null;
    if (camera && opts.video_codec === 'h264') {
      // A peer that offers no VP8: H.264 only, packetization mode 1 first.
      const h264 = RTCRtpReceiver.getCapabilities('video').codecs.filter(
        (c) => c.mimeType === 'video/H264' || c.mimeType === 'video/rtx',
      );
      h264.sort((a, b) => {
        const mode1 = (c) => (c.sdpFmtpLine || '').includes('packetization-mode=1') ? 0 : 1;
        return mode1(a) - mode1(b);
      });
      camera.setCodecPreferences(h264);
    }
    const recordings = new Map();
    const videos = new Map();
    let micStarted = null;
    let failure = null;
    let ended = null;
    let resolveSpeaking;
    const speaking = new Promise((resolve) => {
      resolveSpeaking = resolve;
    });

    async function startMic() {
      if (micStarted) return;
      micStarted = performance.now();
      const media = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
      });
      await transceiver.sender.replaceTrack(media.getAudioTracks()[0]);
      if (camera) {
        const video = await navigator.mediaDevices.getUserMedia({
          video: { width: 640, height: 360, frameRate: 30 },
        });
        await camera.sender.replaceTrack(video.getVideoTracks()[0]);
      }
      log('speaking');
      resolveSpeaking();
    }

    pc.onconnectionstatechange = () => {
      log('state', { state: pc.connectionState });
      if (pc.connectionState === 'failed') failure = failure || new Error('the media path to the SFU failed');
    };
    pc.ontrack = (ev) => {
      // The SFU names the publisher in the stream id (msid).
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      const participant = ev.streams[0] ? stream.id : `track-${ev.track.id}`;
      if (ev.track.kind === 'video') {
        if (videos.has(participant)) return;
        const element = document.createElement('video');
        element.muted = true;
        element.autoplay = true;
        element.playsInline = true;
        element.srcObject = new MediaStream([ev.track]);
        document.body.appendChild(element);
        element.play().catch(() => {});
        videos.set(participant, element);
        log('video', { participant });
        return;
      }
      if (recordings.has(participant)) return;
      log('track', { participant });
      recordings.set(participant, window.sottoRecorder.record(ctx, stream));
      startMic().catch((err) => {
        failure = failure || err;
      });
    };

    // Signaling from the SFU, one message at a time.
    let chain = Promise.resolve();
    signaling.onEvent = (msg) => {
      chain = chain
        .then(async () => {
          if (msg.from !== sfu || (msg.call_id !== undefined && msg.call_id !== opts.room_id)) return;
          if (msg.type === 'answer') {
            await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
            log('answered');
          } else if (msg.type === 'offer') {
            await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
            const answer = await pc.createAnswer();
            await pc.setLocalDescription(answer);
            await signaling.request({
              type: 'answer',
              to: sfu,
              call_id: opts.room_id,
              sdp: pc.localDescription.sdp,
            });
            log('renegotiated');
          } else if (msg.type === 'hangup') {
            ended = `the SFU hung up (${msg.reason})`;
          }
        })
        .catch((err) => {
          failure = failure || err;
        });
    };

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await signaling.request({
      type: 'offer',
      to: sfu,
      call_id: opts.room_id,
      sdp: pc.localDescription.sdp,
      ice_restart: false,
    });

    // Speak and listen for record_seconds from the moment the microphone went live.
    const deadline = performance.now() + opts.timeout_seconds * 1000;
    await Promise.race([
      speaking,
      new Promise((resolve) => {
        const poll = setInterval(() => {
          if (failure || ended || performance.now() > deadline) {
            clearInterval(poll);
            resolve();
          }
        }, 100);
      }),
    ]);
    if (!micStarted && !failure) {
      failure = new Error(ended || `no stream from the SFU within ${opts.timeout_seconds} s`);
    }
    if (!failure) {
      const until = micStarted + opts.record_seconds * 1000;
      while (performance.now() < until && !failure) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    // A few pictures of each video, 400 ms apart: their luma (BT.601 from the RGB the
    // element shows), for the test to read the frame codes.
    const grabs = [];
    for (let n = 0; n < 3; n++) {
      for (const [participant, element] of videos) {
        const [width, height] = [element.videoWidth, element.videoHeight];
        if (!width || !height) continue;
        const canvas = document.createElement('canvas');
        canvas.width = width;
        canvas.height = height;
        const g = canvas.getContext('2d', { willReadFrequently: true });
        g.drawImage(element, 0, 0, width, height);
        const rgba = g.getImageData(0, 0, width, height).data;
        const luma = new Uint8Array(width * height);
        for (let i = 0; i < luma.length; i++) {
          const y = 0.257 * rgba[4 * i] + 0.504 * rgba[4 * i + 1] + 0.098 * rgba[4 * i + 2] + 16;
          luma[i] = Math.max(0, Math.min(255, Math.round(y)));
        }
        grabs.push({ participant, width, height, luma: b64url.encode(luma) });
      }
      await new Promise((resolve) => setTimeout(resolve, 400));
    }
    const stats = await summary(pc);
    await signaling
      .request({ type: 'hangup', to: sfu, call_id: opts.room_id, reason: 'normal' })
      .catch(() => {});
    const out = [];
    for (const [participant, recording] of recordings) {
      const samples = recording.stop();
      out.push({ participant, samples: b64url.encode(new Uint8Array(samples.buffer)) });
    }
    pc.close();
    signaling.close();
    await ctx.close();
    if (failure) throw failure;
    return { identity, sample_rate: 48000, recordings: out, grabs, stats, ended };
  };
})();
