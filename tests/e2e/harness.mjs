// Browser harness: drives Debian's chromium (headless) with playwright-core through a list of steps read
// as JSON from stdin, and prints one JSON object with every step's result on stdout.
//
//   {"steps": [{"op": "goto", "url": "http://127.0.0.1:8000/watch/demo"},
//              {"op": "wait", "name": "playing", "expr": "window.floodlight.state === 'playing'", "timeout_s": 30},
//              {"op": "throttle", "kbps": 600, "latency_ms": 20}, {"op": "unthrottle"},
//              {"op": "eval", "name": "snap", "expr": "window.floodlight"},
//              {"op": "screenshot", "path": "/tmp/x.png"}, {"op": "hold", "s": 5}]}
//
// A failed "wait" stops the run (later steps are skipped) unless it says "optional": true; the result still
// carries the page state so the caller can say why. Used by tests/e2e and bench/latency.py.
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.FLOODLIGHT_CHROMIUM || '/usr/bin/chromium';
const ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
  '--disable-dev-shm-usage',
];

async function readStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
}

const plan = await readStdin();
const out = { ok: true, steps: [], console: [], pageErrors: [], failedRequests: [], state: null };
const profile = mkdtempSync(join(tmpdir(), 'fl-chromium-'));
let context;
const deadline = Date.now() + (plan.timeout_s || 300) * 1000;

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1280, height: 800 },
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => { if (['error', 'warning'].includes(m.type())) out.console.push(`${m.type()}: ${m.text()}`.slice(0, 400)); });
  page.on('pageerror', (e) => out.pageErrors.push(String(e).slice(0, 400)));
  page.on('requestfailed', (r) => {
    if (out.failedRequests.length < 50) out.failedRequests.push(`${r.url()} ${r.failure()?.errorText}`.slice(0, 300));
  });
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');

  for (const step of plan.steps || []) {
    const t0 = Date.now();
    const res = { op: step.op, name: step.name || step.op };
    try {
      if (step.op === 'goto') {
        await page.goto(step.url, { waitUntil: 'domcontentloaded', timeout: 30000 });
      } else if (step.op === 'wait') {
        const until = Math.min(deadline, Date.now() + (step.timeout_s || 30) * 1000);
        res.ok = false;
        while (Date.now() < until) {
          const v = await page.evaluate(step.expr).catch((e) => ({ evalError: String(e) }));
          if (v && !v.evalError) { res.ok = true; res.value = v; break; }
          res.value = v;
          await page.waitForTimeout(step.poll_ms || 250);
        }
      } else if (step.op === 'throttle') {
        await cdp.send('Network.emulateNetworkConditions', {
          offline: false, latency: step.latency_ms || 0,
          downloadThroughput: (step.kbps * 1000) / 8, uploadThroughput: -1,
        });
      } else if (step.op === 'unthrottle') {
        await cdp.send('Network.emulateNetworkConditions', {
          offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1,
        });
      } else if (step.op === 'eval') {
        res.value = await page.evaluate(step.expr);
      } else if (step.op === 'screenshot') {
        await page.screenshot({ path: step.path });
      } else if (step.op === 'hold') {
        // A measurement window (bench sampling), not synchronisation.
        await page.waitForTimeout(Math.max(0, Math.min(step.s * 1000, deadline - Date.now())));
      } else {
        throw new Error(`unknown op ${step.op}`);
      }
      if (res.ok === undefined) res.ok = true;
    } catch (e) {
      res.ok = false; res.error = String(e).slice(0, 500);
    }
    res.elapsed_s = (Date.now() - t0) / 1000;
    out.steps.push(res);
    if (!res.ok && !step.optional) { out.ok = false; break; }
  }
  out.state = await page.evaluate(() => {
    const fl = window.floodlight;
    const v = document.querySelector('video');
    if (!fl) return null;
    const { engine, goLive, ...rest } = fl; // eslint-disable-line no-unused-vars
    return JSON.parse(JSON.stringify({ ...rest, currentTime: v ? v.currentTime : null }));
  }).catch((e) => ({ evalError: String(e) }));
} catch (e) {
  out.ok = false; out.error = String(e).slice(0, 1000);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(`${JSON.stringify(out)}\n`);
