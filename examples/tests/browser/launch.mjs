// What the browser interop test's driver (run.mjs) and the call-quality bench's Chromium
// peer (benches/chromium/pair.mjs) share: Chromium's flags, running it inside a network
// namespace, the page they load, and writing a WAV file.

import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

// The JSON options in argv[2]: exits with code 2 and a message naming `script` when one
// of `required` is missing or the `input` WAV is not there. `input` comes back absolute
// (Chromium plays silence, without a word, from a fake-capture path with `..` in it);
// `chromium` defaults to Debian's.
export function readOptions(script, required) {
  const opts = JSON.parse(process.argv[2] || '{}');
  const fail = (message) => {
    console.error(`${script}: ${message}`);
    process.exit(2);
  };
  for (const key of required) {
    if (!opts[key]) fail(`option "${key}" is missing`);
  }
  opts.input = resolve(opts.input);
  if (!existsSync(opts.input)) fail(`no such input file: ${opts.input}`);
  opts.chromium ??= '/usr/bin/chromium';
  return opts;
}

// Headless, a fake microphone playing `input` once (and, with `video`, a fake camera
// looping that Y4M file), no prompts, nothing fetched.
export function chromiumArgs(input, video) {
  return [
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${input}%noloop`,
    ...(video ? [`--use-file-for-fake-video-capture=${video}`] : []),
    '--autoplay-policy=no-user-gesture-required',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ];
}

// A script in `scratch` that runs `chromium` inside the namespace `netns`.
export function inNetns(scratch, netns, chromium) {
  const path = join(scratch, 'chromium-in-netns');
  writeFileSync(path, `#!/bin/sh\nexec ip netns exec '${netns}' '${chromium}' "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

// The page: recorder.js, then `script` (a path).
export function pageHtml(script, title) {
  const recorder = readFileSync(join(here, 'recorder.js'), 'utf8');
  const main = readFileSync(script, 'utf8');
  return `<!doctype html><meta charset="utf-8"><title>${title}</title><script>${recorder}</script><script>${main}</script>`;
}

// 16-bit mono PCM as a WAV file.
export function wavFile(pcm, sampleRate) {
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + pcm.length, 4);
  header.write('WAVE', 8);
  header.write('fmt ', 12);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // mono
  header.writeUInt32LE(sampleRate, 24);
  header.writeUInt32LE(sampleRate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(pcm.length, 40);
  return Buffer.concat([header, pcm]);
}

export function writeWav(path, pcm, sampleRate) {
  writeFileSync(path, wavFile(pcm, sampleRate));
}
