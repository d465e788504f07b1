// A Chromium-to-Chromium call for `sotto-bench run --peer chromium`: one headless Debian
// Chromium (driven by playwright-core, installed by `npm ci` in examples/tests/browser/)
// inside the bench's network namespace, two pages, the caller speaking the reference WAV
// as its fake microphone and the callee recording what arrives. Every datagram goes
// through the bench's relay: the caller is given no candidate of the callee's but the
// relay's address, and the callee none of the caller's (it answers the relay, which it
// learns from the checks that come through it).
//
// Usage: node pair.mjs '<json options>'
//   { "input": "/abs/speech.wav", "out_wav": "/abs/rec.wav", "seconds": 12,
//     "inner_addr": "10.98.N.2", "netns": "sotto-bb-PID", "chromium": "/usr/bin/chromium",
//     "timeout_seconds": 30, "video": "/abs/pattern.y4m", "keep_every": 15 }
// With "video", the caller's fake camera plays that Y4M too and the callee reads every
// picture it decodes; "done" then carries them under "video" (see page.js's watch).
// Talks JSON lines: prints {"event":"callee_candidate","address":"IP:PORT"}, then reads
// {"relay":"IP:PORT"} on stdin, then prints {"event":"done", ...} with the wall-clock
// times capture and recording started and both sides' WebRTC statistics. Exit code 1
// (and the reason on stderr) on any failure.

import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromiumArgs, inNetns, pageHtml, readOptions, writeWav } from '../../examples/tests/browser/launch.mjs';

const here = dirname(fileURLToPath(import.meta.url));
// One install of playwright-core serves the browser test and the bench.
const require = createRequire(join(here, '../../examples/tests/browser/package.json'));
const { chromium } = require('playwright-core');


const opts = readOptions('pair.mjs', ['input', 'out_wav', 'inner_addr', 'netns']);
opts.seconds ??= 12;
opts.timeout_seconds ??= 30;

const emit = (event) => console.log(JSON.stringify(event));
const guard = setTimeout(() => {
  console.error('pair.mjs: gave up');
  process.exit(1);
}, (opts.timeout_seconds * 2 + opts.seconds + 30) * 1000);

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const scratch = mkdtempSync(join(tmpdir(), 'sotto-pair-'));
const executablePath = inNetns(scratch, opts.netns, opts.chromium);

let browser;
let status = 0;
try {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: chromiumArgs(opts.input, opts.video),
  });
  const context = await browser.newContext();
  const body = pageHtml(join(here, 'page.js'), 'Sotto bench');
  await context.route('http://localhost/**', (route) => route.fulfill({ contentType: 'text/html', body }));
  const open = async (name) => {
    const page = await context.newPage();
    page.on('console', (msg) => console.error(`${name} ${msg.type()}: ${msg.text()}`));
    page.on('pageerror', (err) => console.error(`${name} error: ${err.message}`));
    await page.goto(`http://localhost/${name}.html`);
    await page.evaluate((video) => window.sottoSide.init(video), Boolean(opts.video));
    return page;
  };
  const caller = await open('caller');
  const callee = await open('callee');
  const t = opts.timeout_seconds;

  const offer = await caller.evaluate(() => window.sottoSide.offer());
  const answer = await callee.evaluate((sdp) => window.sottoSide.answer(sdp), offer);
  const candidates = await callee.evaluate((s) => window.sottoSide.candidatesGathered(s), t);
  // The callee's host candidate on the namespace's address, UDP.
  const mine = candidates
    .map((c) => c.candidate.split(' '))
    .find((f) => f[2].toLowerCase() === 'udp' && f[4] === opts.inner_addr);
  if (!mine) throw new Error(`no UDP candidate on ${opts.inner_addr}: ${JSON.stringify(candidates)}`);
  emit({ event: 'callee_candidate', address: `${mine[4]}:${mine[5]}` });

  const reply = await stdinLines.next();
  if (reply.done) throw new Error('no relay address on stdin');
  const relay = JSON.parse(reply.value).relay;
  const [relayIp, relayPort] = relay.split(':');
  const started = Date.now();
  await caller.evaluate((sdp) => window.sottoSide.accept(sdp), answer);
  await caller.evaluate(
    (c) => window.sottoSide.addCandidate(c),
    { candidate: `candidate:1 1 udp 2122260223 ${relayIp} ${relayPort} typ host`, sdpMid: '0', sdpMLineIndex: 0 },
  );
  await caller.evaluate((s) => window.sottoSide.connected(s), t);
  await callee.evaluate((s) => window.sottoSide.connected(s), t);
  const setupMs = Date.now() - started;

  // Record from before the first word: start the recorder, then the microphone.
  const recordingStarted = await callee.evaluate((s) => window.sottoSide.record(s), t);
  const captureStarted = await caller.evaluate(() => window.sottoSide.speak());
  if (opts.video) {
    await callee.evaluate(([s, every]) => window.sottoSide.watch(s, every), [t, opts.keep_every ?? 15]);
  }
  await new Promise((r) => setTimeout(r, opts.seconds * 1000));
  const samples = await callee.evaluate(() => window.sottoSide.stopRecording());
  const video = opts.video ? await callee.evaluate(() => window.sottoSide.stopWatching()) : null;
  const callerStats = await caller.evaluate(() => window.sottoSide.stats());
  const calleeStats = await callee.evaluate(() => window.sottoSide.stats());
  await caller.evaluate(() => window.sottoSide.close());
  await callee.evaluate(() => window.sottoSide.close());
  writeWav(opts.out_wav, Buffer.from(samples, 'base64url'), 48000);
  emit({
    event: 'done',
    setup_ms: setupMs,
    capture_started_ms: captureStarted,
    recording_started_ms: recordingStarted,
    speaking_seconds: (Date.now() - captureStarted) / 1000,
    caller: callerStats,
    callee: calleeStats,
    video,
  });
} catch (err) {
  console.error(`pair.mjs: ${err.stack || err}`);
  status = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  rmSync(scratch, { recursive: true, force: true });
  clearTimeout(guard);
}
process.exit(status);
