// Recording a remote WebRTC stream in the page as 48 kHz 16-bit PCM through an
// AudioWorklet. Shared by the browser interop test (participant.js) and the call-quality
// bench's Chromium peer (benches/chromium/page.js); loaded into the page before either.
(() => {
  'use strict';

  const WORKLET = `
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

  window.sottoRecorder = {
    // Loads the worklet into `ctx` (once per context, before `record`).
    async prepare(ctx) {
      await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([WORKLET], { type: 'text/javascript' })));
    },

    // Starts recording `stream`. (It also plays, muted, in an <audio> element: Chromium
    // pulls remote WebRTC audio through its renderer.) `stop()` gives the samples.
    record(ctx, stream) {
      const element = new Audio();
      element.muted = true;
      element.srcObject = stream;
      element.play().catch(() => {});
      const source = ctx.createMediaStreamSource(stream);
      const node = new AudioWorkletNode(ctx, 'sotto-recorder', { numberOfOutputs: 1 });
      const chunks = [];
      node.port.onmessage = (ev) => chunks.push(ev.data);
      const mute = ctx.createGain();
      mute.gain.value = 0;
      source.connect(node).connect(mute).connect(ctx.destination);
      return {
        element,
        stop() {
          source.disconnect();
          node.disconnect();
          element.srcObject = null;
          const samples = new Int16Array(chunks.reduce((n, c) => n + c.length, 0));
          let at = 0;
          for (const c of chunks) {
            for (let i = 0; i < c.length; i++) {
              samples[at++] = Math.max(-32768, Math.min(32767, Math.round(c[i] * 32768)));
            }
          }
          return samples;
        },
      };
    },

    // Bytes as base64url (no padding), for handing samples to node.
    base64url(bytes) {
      let text = '';
      for (let i = 0; i < bytes.length; i += 0x8000) {
        text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
      }
      return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    },
  };
})();
