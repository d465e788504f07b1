// Runs one browser participant of a Sotto group room: launches Debian's Chromium through
// playwright-core (inside a network namespace when `netns` is given: Chromium ignores
// 127.0.0.1 ICE candidates), with a WAV file as its fake microphone, loads
// participant.js into a page on http://localhost/ (served by playwright itself, so the
// page is a secure context and nothing is fetched), joins the room and records every
// stream it hears to `<out_dir>/<participant>.wav`.
//
// Usage: node run.mjs '<json options>'
//   { "signaling": "ws://10.99.0.1:PORT/v1/ws", "room_id": "...", "invite_token": "...",
//     "input": "/abs/speech.wav", "out_dir": "/abs/dir", "record_seconds": 13,
//     "timeout_seconds": 60, "chromium": "/usr/bin/chromium", "netns": "sotto-br",
//     "video": "/abs/pattern.y4m" }
// With `video`, Chromium also publishes that file as its camera in three simulcast layers,
// shows every video it receives, and grabs a few pictures of each: their luma goes to
// `<out_dir>/<participant>.<n>.luma` (width and height in the `done` line).
// Progress goes to stdout as one JSON object per line ({"event": ...}); the last line is
// {"event":"done", ...} with the recordings' paths and WebRTC's statistics. Exit code 1
// (and the reason on stderr) on any failure.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { chromiumArgs, inNetns, pageHtml, readOptions, writeWav } from './launch.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const opts = readOptions('run.mjs', ['signaling', 'room_id', 'invite_token', 'input', 'out_dir']);
opts.record_seconds ??= 13;
opts.timeout_seconds ??= 60;

const emit = (event) => console.log(JSON.stringify(event));

// The whole run's failure guard (not a speed assertion).
const guard = setTimeout(() => {
  console.error(`run.mjs: gave up after ${opts.timeout_seconds + opts.record_seconds + 30} s`);
  process.exit(1);
}, (opts.timeout_seconds + opts.record_seconds + 30) * 1000);

const scratch = mkdtempSync(join(tmpdir(), 'sotto-chromium-'));
const executablePath = opts.netns ? inNetns(scratch, opts.netns, opts.chromium) : opts.chromium;

let browser;
let status = 0;
try {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: chromiumArgs(opts.input, opts.video),
  });
  // The page (origin http://localhost, served by playwright, so no address of its own)
  // reaches signaling on a private address: Chromium's Local Network Access checks ask
  // the user for that, and here the permission is granted up front.
  const context = await browser.newContext({ permissions: ['local-network-access'] });
  const page = await context.newPage();
  page.on('console', (msg) => console.error(`page ${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => console.error(`page error: ${err.message}`));
  await page.exposeFunction('sottoReport', (event) => emit(event));
  const body = pageHtml(join(here, 'participant.js'), 'Sotto');
  await page.route('http://localhost/**', (route) => route.fulfill({ contentType: 'text/html', body }));
  await page.goto('http://localhost/sotto.html');
  const result = await page.evaluate(
    (o) =>
      window.sottoJoin({
        signaling: o.signaling,
        room_id: o.room_id,
        invite_token: o.invite_token,
        record_seconds: o.record_seconds,
        timeout_seconds: o.timeout_seconds,
        video: Boolean(o.video),
        video_codec: o.video_codec ?? 'vp8',
      }),
    opts,
  );
  const recordings = [];
  for (const { participant, samples } of result.recordings) {
    const pcm = Buffer.from(samples, 'base64url');
    const path = join(opts.out_dir, `${participant}.wav`);
    writeWav(path, pcm, result.sample_rate);
    recordings.push({ participant, path, seconds: pcm.length / 2 / result.sample_rate });
  }
  const grabs = [];
  for (const [n, { participant, width, height, luma }] of result.grabs.entries()) {
    const path = join(opts.out_dir, `${participant}.${n}.luma`);
    writeFileSync(path, Buffer.from(luma, 'base64url'));
    grabs.push({ participant, path, width, height });
  }
  emit({ event: 'done', identity: result.identity, recordings, grabs, stats: result.stats, ended: result.ended });
} catch (err) {
  console.error(`run.mjs: ${err.stack || err}`);
  status = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  rmSync(scratch, { recursive: true, force: true });
  clearTimeout(guard);
}
process.exit(status);
