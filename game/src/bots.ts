/**
 * Bots: N players in one Node process, each with its own API session, driving real laps in real
 * time with the autopilot through the same telemetry client as the page (memory storage, gzip).
 *
 *   npm run bots -- --players 500 --api http://127.0.0.1:PORT [--gateway URL] [--seed 1]
 *                   [--laps 3] [--duration 60s] [--hz 60]
 *
 * One timer ticks every bot, so 500 bots cost one timer, not 500. Each tick runs the physics
 * steps that catch the sim up with real time and sends one sample, as a page frame does. Prints
 * a status line each second and a summary JSON line at the end.
 */
import { CARS, TRACKS } from "./sim/data.js";
import { newAutopilot } from "./sim/autopilot.js";
import { startSession, STEP_HZ } from "./sim/session.js";
import { FrameMeter } from "./live/frame_meter.js";
import { LiveSession } from "./live/live_session.js";
import { createSessionPatiently, sourceOf, wallStartUs } from "./telemetry/api.js";
import { TelemetryClient } from "./telemetry/client.js";
import { gzip, systemClock, type HttpFetch } from "./telemetry/ports.js";

interface Args {
  players: number;
  api: string;
  gateway: string | null;
  seed: number;
  laps: number;
  durationS: number;
  hz: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { players: 10, api: "http://127.0.0.1:8090", gateway: null, seed: 1, laps: 3, durationS: 60, hz: 60 };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case "--players": a.players = Number(v); i++; break;
      case "--api": a.api = v.replace(/\/$/, ""); i++; break;
      case "--gateway": a.gateway = v.replace(/\/$/, ""); i++; break;
      case "--seed": a.seed = Number(v); i++; break;
      case "--laps": a.laps = Number(v); i++; break;
      case "--duration": a.durationS = parseDuration(v); i++; break;
      case "--hz": a.hz = Number(v); i++; break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  return a;
}

function parseDuration(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v);
  if (!m) throw new Error(`bad duration ${v}`);
  return Number(m[1]) * ({ ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] ?? "s"] ?? 1);
}

interface Bot {
  live: LiveSession;
  started: number;
  lastTick: number;
  meter: FrameMeter;
  lastHealth: number;
  done: boolean;
}

const nodeFetch: HttpFetch = (url, init) => fetch(url, init as RequestInit);

function percentile(xs: number[], q: number): number {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const bots: Bot[] = [];
  const errors: string[] = [];
  const log = (m: string) => errors.length < 50 && errors.push(m);
  const t0 = Date.now();

  // Sessions are asked for with bounded concurrency so the API's rate limit is met politely.
  let next = 0;
  const opening = Array.from({ length: Math.min(32, args.players) }, async () => {
    while (next < args.players) {
      const i = next++;
      const track = TRACKS[(args.seed + i) % TRACKS.length].name;
      const car = CARS[(args.seed + i) % CARS.length].name;
      const player = `bot-${args.seed}-${i}`;
      try {
        const grant = await createSessionPatiently(nodeFetch, args.api, { player, track, car });
        const route = { sessionId: grant.session_id, gateway: args.gateway ?? grant.gateway.replace(/\/$/, ""), token: grant.token };
        const { state, events } = startSession({ track, car, player, laps: args.laps, seed: args.seed * 100_003 + i });
        const client = new TelemetryClient({ fetch: nodeFetch, clock: systemClock, compress: gzip, log });
        const identity = { sessionId: grant.session_id, wallStartUs: wallStartUs(grant), dims: { player, track, car }, source: sourceOf(grant) };
        const live = new LiveSession(route, identity, state, client, newAutopilot(args.seed * 7919 + i));
        live.report(events);
        const now = performance.now();
        bots.push({ live, started: now, lastTick: now, meter: new FrameMeter(1000 / args.hz), lastHealth: now, done: false });
      } catch (e) {
        log(`session for ${player}: ${(e as Error).message}`);
      }
    }
  });

  let sentEvents = 0;
  let lastSent = 0;
  // Every acknowledgement time of the run (one per batch: bounded by players × seconds).
  const allAcks: number[] = [];
  let prev = { r202: 0, r503: 0 };
  const deadline = t0 + args.durationS * 1000;
  const tick = setInterval(() => {
    const now = performance.now();
    const ending = Date.now() >= deadline;
    for (const b of bots) {
      if (b.done) continue;
      const live = b.live;
      b.meter.record(now - b.lastTick);
      b.lastTick = now;
      if (ending) {
        sentEvents += live.end().length;
        b.done = true;
        live.client.flush();
        continue;
      }
      const due = Math.floor(((now - b.started) / 1000) * STEP_HZ);
      const steps = Math.min(due - live.sim.step, STEP_HZ);
      sentEvents += live.frame(steps, live.driver({ inputs: () => ({ throttle: 0, brake: 0, steer: 0, pit: false }) })).length;
      if (now - b.lastHealth >= 1000) {
        b.lastHealth = now;
        live.health(b.meter.take());
        sentEvents++;
      }
      if (live.sim.phase === "ended") {
        b.done = true;
        live.client.flush();
      }
    }
  }, 1000 / args.hz);

  const status = setInterval(() => {
    let r202 = 0;
    let r503 = 0;
    const acks: number[] = [];
    for (const b of bots) {
      const s = b.live.client.stats;
      r202 += s.responses202;
      r503 += s.responses503;
      acks.push(...b.live.client.takeAckTimes());
    }
    for (const a of acks) allAcks.push(a);
    const line = {
      t_s: Math.round((Date.now() - t0) / 1000), players: bots.filter((b) => !b.done).length, events_per_s: sentEvents - lastSent,
      r202: r202 - prev.r202, r503: r503 - prev.r503, ack_p50_ms: Math.round(percentile(acks, 0.5)), ack_p99_ms: Math.round(percentile(acks, 0.99)),
    };
    lastSent = sentEvents;
    prev = { r202, r503 };
    console.log(Object.entries(line).map(([k, v]) => `${k}=${v}`).join(" "));
  }, 1000);

  await Promise.all(opening);
  while (!(Date.now() >= deadline || (bots.length > 0 && bots.every((b) => b.done))) && !(bots.length === 0 && next >= args.players)) {
    await new Promise((r) => setTimeout(r, 100));
  }
  clearInterval(tick);
  for (const b of bots) if (!b.done) { sentEvents += b.live.end().length; b.done = true; }
  await Promise.all(bots.map((b) => b.live.client.drain(30_000)));
  clearInterval(status);
  for (const b of bots) for (const a of b.live.client.takeAckTimes()) allAcks.push(a);
  let accepted = 0, rejected = 0, r202 = 0, r503 = 0, unsent = 0, dropped = 0, laps = 0;
  for (const b of bots) {
    const s = b.live.client.stats;
    accepted += s.accepted; rejected += s.rejected; r202 += s.responses202; r503 += s.responses503;
    unsent += b.live.client.outbox.batches.reduce((n, x) => n + x.count, 0);
    dropped += b.live.client.outbox.dropped;
    laps += b.live.sim.completed.length;
    b.live.client.close();
  }
  console.log(JSON.stringify({
    summary: true, players: bots.length, requested: args.players, duration_s: (Date.now() - t0) / 1000, events_sent: sentEvents,
    accepted, rejected, responses_202: r202, responses_503: r503, unsent_events: unsent, dropped_batches: dropped, laps_completed: laps,
    ack_p50_ms: percentile(allAcks, 0.5), ack_p99_ms: percentile(allAcks, 0.99), batches_acked: allAcks.length,
    errors: errors.slice(0, 10),
  }));
  process.exit(unsent === 0 && bots.length === args.players ? 0 : 1);
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
