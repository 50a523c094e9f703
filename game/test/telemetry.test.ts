import assert from "node:assert/strict";
import { test } from "node:test";
import { newAutopilot } from "../src/sim/autopilot.js";
import { startSession } from "../src/sim/session.js";
import { LiveSession, MAX_AHEAD_MS, notResumable, type Snapshot } from "../src/live/live_session.js";
import { TelemetryClient } from "../src/telemetry/client.js";
import type { Envelope } from "../src/telemetry/envelope.js";
import { MemoryStore } from "../src/telemetry/ports.js";
import { clockOffsetMs, sourceOf } from "../src/telemetry/api.js";
import { SOURCE } from "../src/telemetry/channels.js";
import { ManualClock, scriptedGateway, settle } from "./helpers.js";
import { referenceLapTimes } from "./reference.js";

const route = { sessionId: "web-1", gateway: "http://gw", token: "pgs_x" };

function envelope(seq: number): Envelope {
  return {
    schema: "pitgun-envelope/v1", event_id: `web-1-${seq}`, source: { kind: "game", id: "pitgun-web", version: "1.5.0" },
    session_id: "web-1", seq, time_us: 1_000_000 + seq, kind: "sample", channels: { lap: 1 }, dims: { player: "a", track: "monza", car: "gt3" },
  };
}

function client(clock: ManualClock, fetch: ReturnType<typeof scriptedGateway>["fetch"], extra: Partial<ConstructorParameters<typeof TelemetryClient>[0]> = {}) {
  const c = new TelemetryClient({ fetch, clock, random: () => 1, ...extra });
  c.bind(route);
  return c;
}

test("batches by count: 200 events go at once, as one NDJSON batch with the bearer token", async () => {
  const clock = new ManualClock();
  const gw = scriptedGateway(clock, []);
  const c = client(clock, gw.fetch);
  for (let i = 1; i <= 200; i++) c.push(envelope(i));
  await settle();
  assert.equal(gw.calls.length, 1);
  assert.equal(gw.calls[0].url, "http://gw/v1/envelopes");
  assert.equal(gw.calls[0].headers.Authorization, "Bearer pgs_x");
  assert.equal(gw.calls[0].headers["Content-Type"], "application/x-ndjson");
  assert.equal(gw.calls[0].body.trim().split("\n").length, 200);
  assert.equal(c.outbox.size, 0);
});

test("batches by time: a few events wait at most a second", async () => {
  const clock = new ManualClock();
  const gw = scriptedGateway(clock, []);
  const c = client(clock, gw.fetch);
  for (let i = 1; i <= 5; i++) c.push(envelope(i));
  await clock.advance(999);
  assert.equal(gw.calls.length, 0);
  await clock.advance(1);
  assert.equal(gw.calls.length, 1);
  assert.equal(gw.calls[0].body.trim().split("\n").length, 5);
});

test("503 and network errors resend the same batch with growing backoff, capped", async () => {
  const clock = new ManualClock();
  const gw = scriptedGateway(clock, [503, "network", "network", "network", "network", "network", "network", "network"]);
  const c = client(clock, gw.fetch);
  c.push(envelope(1));
  c.flush();
  await clock.advance(60_000);
  assert.equal(gw.calls.length, 9);
  assert.ok(gw.calls.every((x) => x.body === gw.calls[0].body));
  const gaps = gw.calls.slice(1).map((x, i) => x.at - gw.calls[i].at);
  // Retry-After: 1 on the 503, then 500, 1000, 2000 … capped at 10 s (random() = 1: no jitter).
  assert.deepEqual(gaps, [1000, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
  assert.equal(c.outbox.size, 0);
  assert.equal(c.stats.responses503, 1);
  assert.equal(c.stats.networkErrors, 7);
});

test("413 splits, 422 drops without resending, 401 surfaces an error", async () => {
  const clock = new ManualClock();
  const gw = scriptedGateway(clock, [413, 202, 202, 422, 401]);
  const c = client(clock, gw.fetch);
  for (let i = 1; i <= 4; i++) c.push(envelope(i));
  c.flush();
  await clock.advance(10);
  assert.equal(gw.calls.length, 3);
  assert.equal(gw.calls[1].body.trim().split("\n").length, 2);
  c.push(envelope(5));
  c.flush();
  await clock.advance(10);
  assert.equal(c.outbox.size, 0);
  c.push(envelope(6));
  c.flush();
  await clock.advance(10);
  assert.equal(gw.calls.length, 5);
  assert.match(c.stats.fatal ?? "", /401/);
  await clock.advance(30_000);
  assert.equal(gw.calls.length, 5);
});

test("unsent batches survive a reload and go out from the new page", async () => {
  const store = new MemoryStore();
  const clock = new ManualClock();
  const down = scriptedGateway(clock, [], "network");
  const a = client(clock, down.fetch, { storage: store });
  for (let i = 1; i <= 450; i++) a.push(envelope(i));
  a.flush();
  await clock.advance(100);
  a.close();
  assert.equal(a.outbox.size, 3);
  const up = scriptedGateway(clock, []);
  const b = new TelemetryClient({ fetch: up.fetch, clock, storage: store });
  await clock.advance(100);
  const seqs = up.calls.flatMap((x) => x.body.trim().split("\n").map((l) => (JSON.parse(l) as Envelope).seq));
  assert.deepEqual(seqs, Array.from({ length: 450 }, (_, i) => i + 1));
  assert.equal(b.outbox.size, 0);
});

test("a batch of an earlier session refused 401 is dropped, not fatal to the session being driven", async () => {
  const store = new MemoryStore();
  const clock = new ManualClock();
  const down = scriptedGateway(clock, [], "network");
  const before = client(clock, down.fetch, { storage: store });
  before.push(envelope(1));
  before.flush();
  await clock.advance(10);
  before.close();
  // The next page runs a new session; the old batch's token has expired meanwhile.
  const gw = scriptedGateway(clock, [401], 202);
  const after = new TelemetryClient({ fetch: gw.fetch, clock, storage: store, random: () => 1 });
  after.bind({ sessionId: "web-2", gateway: "http://gw", token: "pgs_y" });
  await clock.advance(10);
  assert.equal(gw.calls.length, 1);
  assert.equal(after.outbox.size, 0, "the stale batch is dropped");
  assert.equal(after.stats.fatal, null, "and the new session is not shown broken");
});

test("a saved race is resumed only while its token is valid and its session still open", () => {
  const { state } = startSession({ track: "monza", car: "gt3", player: "a", laps: 1, seed: 1 });
  const now = Date.parse("2026-12-05T10:00:00Z");
  const snap = (expiresAt: string, savedAtMs: number): Snapshot => ({ version: 1, route, identity: { sessionId: "web-1", wallStartUs: 0, dims: { player: "a", track: "monza", car: "gt3" }, source: SOURCE }, expiresAt, sim: state, autopilot: null, savedAtMs });
  assert.equal(notResumable(snap("2026-12-05T11:00:00Z", now - 5_000), now), null);
  assert.match(notResumable(snap("2026-12-05T09:59:00Z", now - 5_000), now) ?? "", /expired/);
  assert.match(notResumable(snap("2026-12-05T11:00:00Z", now - 11 * 60_000), now) ?? "", /idle/);
});

test("event times follow the server's clock, not a browser clock set wrong", () => {
  const grant = { session_id: "web-1", token: "pgs_x", expires_at: "2026-12-05T12:00:00Z", gateway: "http://gw", issued_at: "2026-12-05T10:00:00.000Z" };
  // The browser's clock is 7 minutes fast: the gateway would refuse every event as future_time.
  assert.equal(clockOffsetMs(grant, Date.parse("2026-12-05T10:07:00Z")), -7 * 60_000);
  // An API that does not say its time leaves the browser's clock as it is.
  assert.equal(clockOffsetMs({ ...grant, issued_at: undefined }, Date.parse("2026-12-05T10:07:00Z")), 0);
});

test("a batch refused whole (422) counts its events as refused", async () => {
  const clock = new ManualClock();
  const gw = scriptedGateway(clock, [422]);
  const c = client(clock, gw.fetch);
  for (let i = 1; i <= 3; i++) c.push(envelope(i));
  c.flush();
  await clock.advance(10);
  assert.equal(c.stats.rejected, 3);
});

test("storage is bounded: the oldest batches are dropped and counted", async () => {
  const store = new MemoryStore();
  const clock = new ManualClock();
  const down = scriptedGateway(clock, [], "network");
  const c = client(clock, down.fetch, { storage: store, maxBatches: 3, log: () => {} });
  for (let b = 0; b < 5; b++) {
    c.push(envelope(b + 1));
    c.flush();
  }
  assert.equal(c.outbox.size, 3);
  assert.equal(c.outbox.dropped, 2);
  assert.equal(store.getItem("pitgun.outbox.dropped"), "2");
  // A byte bound and a storage quota are met the same way.
  const tight = new MemoryStore(2000);
  const d = client(clock, down.fetch, { storage: tight, log: () => {} });
  for (let b = 0; b < 10; b++) {
    c.push(envelope(b));
    d.push(envelope(b));
    d.flush();
  }
  assert.ok(d.outbox.dropped > 0);
  assert.ok((tight.getItem("pitgun.outbox") ?? "").length <= 2000);
});

test("pagehide beacons everything left (token in the query, text/plain) and keeps it stored", async () => {
  const store = new MemoryStore();
  const clock = new ManualClock();
  const down = scriptedGateway(clock, [], "network");
  const beacons: { url: string; type: string; text: string }[] = [];
  const pending: Promise<void>[] = [];
  const c = client(clock, down.fetch, {
    storage: store,
    beacon: (url, blob) => {
      pending.push(blob.text().then((text) => void beacons.push({ url, type: blob.type, text })));
      return true;
    },
  });
  for (let i = 1; i <= 300; i++) c.push(envelope(i));
  c.pagehide();
  await Promise.all(pending);
  assert.ok(beacons.length >= 2);
  assert.ok(beacons.every((b) => b.url === "http://gw/v1/envelopes?access_token=pgs_x" && b.type === "text/plain"));
  assert.ok(beacons.every((b) => b.text.length <= 60_000));
  const seqs = beacons.flatMap((b) => b.text.trim().split("\n").map((l) => (JSON.parse(l) as Envelope).seq)).sort((x, y) => x - y);
  assert.deepEqual(seqs, Array.from({ length: 300 }, (_, i) => i + 1));
  assert.equal(JSON.parse(store.getItem("pitgun.outbox")!).reduce((n: number, b: { count: number }) => n + b.count, 0), 300);
});

test("a reload mid-session resumes at the snapshot: no seq twice, no gap, every lap once, lap times exact", async () => {
  const store = new MemoryStore();
  const clock = new ManualClock();
  const gw = scriptedGateway(clock, []);
  const received: Envelope[] = [];
  const fetch: typeof gw.fetch = async (url, init) => {
    received.push(...String(init.body).trim().split("\n").map((l) => JSON.parse(l) as Envelope));
    return gw.fetch(url, init);
  };
  let snapshot = "";
  let live: LiveSession;
  const onFlush = () => void (snapshot = JSON.stringify(live.snapshot()));
  const page1 = new TelemetryClient({ fetch, clock, storage: store, onFlush });
  const { state, events } = startSession({ track: "monza", car: "lmp2", player: "a", laps: 2, seed: 4 });
  live = new LiveSession(route, { sessionId: route.sessionId, wallStartUs: 1_767_225_600_000_000, dims: { player: "a", track: "monza", car: "lmp2" } }, state, page1, newAutopilot(4));
  live.report(events);
  const driver = live.driver({ inputs: () => ({ throttle: 0, brake: 0, steer: 0, pit: false }) });
  // Drive ~1.5 laps at 4 steps a frame, flushing each simulated second; then the tab dies
  // without pagehide in the middle of a second: what was only in memory is lost.
  for (let f = 0; f < 2700; f++) {
    live.frame(4, driver);
    if (f % 15 === 14) await clock.advance(1000);
  }
  for (let f = 0; f < 7; f++) live.frame(4, driver);
  page1.close();
  const snap = JSON.parse(snapshot) as Snapshot;
  const page2 = new TelemetryClient({ fetch, clock, storage: store, onFlush });
  live = LiveSession.resume(snap, page2);
  const driver2 = live.driver({ inputs: () => ({ throttle: 0, brake: 0, steer: 0, pit: false }) });
  while (live.sim.phase === "running") live.frame(4, driver2);
  page2.flush();
  await clock.advance(5000);
  assert.equal(page2.outbox.size, 0);
  const seqs = received.map((e) => e.seq);
  assert.equal(new Set(received.map((e) => e.event_id)).size, received.length, "an event id sent twice");
  assert.deepEqual([...seqs].sort((a, b) => a - b), Array.from({ length: seqs.length }, (_, i) => i + 1));
  const lapEvents = received.filter((e) => e.kind === "lap").map((e) => e.channels.lap);
  assert.deepEqual(lapEvents, [2, 3]);
  const ref = referenceLapTimes(received);
  for (const rec of live.sim.completed) assert.ok(Math.abs(ref.get(rec.lap)! - (rec.endUs - rec.startUs) / 1e6) < 1e-6);
});

test("envelopes name the source the token was issued for, at the game's own version", () => {
  // The API's grant names kind and id only: a version-less source would fail every envelope.
  const grant = { session_id: "web-1", token: "pgs_x", expires_at: "2026-12-01T00:00:00Z", gateway: "http://gw", source: { kind: "game", id: "pitgun-web" } };
  assert.deepEqual(sourceOf(grant), { kind: "game", id: "pitgun-web", version: SOURCE.version });
  assert.match(SOURCE.version, /^1\.\d+\.\d+$/, "a 1.x version: the dictionary's pitgun-web 1.x aliases apply");
  assert.deepEqual(sourceOf({ ...grant, source: undefined }), SOURCE);
});

test("a fast-forwarded race runs ahead of the server's clock by at most MAX_AHEAD_MS, then in real time", () => {
  // `?autopilot=1&speed=60`: 60 steps a frame is a minute of race a wall-clock second. Event
  // times are the race's, so unchecked they pass the gateway's future skew (5 min) within
  // seconds and every later event is refused as future_time. The browser's clock is 7 min slow.
  const offsetMs = 7 * 60_000;
  let browserMs = Date.parse("2026-12-05T10:00:00Z");
  const serverNowUs = () => (browserMs + offsetMs) * 1000;
  const sent: Envelope[] = [];
  const sink = { bind() {}, push(e: Envelope) { sent.push(e); } } as unknown as TelemetryClient;
  const { state, events } = startSession({ track: "monza", car: "gt3", player: "a", laps: 5, seed: 9 });
  const live = new LiveSession(route, { sessionId: route.sessionId, wallStartUs: serverNowUs(), dims: { player: "a", track: "monza", car: "gt3" } }, state, sink, newAutopilot(9), "", offsetMs);
  live.report(events);
  const driver = live.driver({ inputs: () => ({ throttle: 0, brake: 0, steer: 0, pit: false }) });
  let worstAheadUs = 0;
  let frames = 0;
  const firstSecond: number[] = [];
  while (live.sim.phase === "running") {
    browserMs += 1000 / 60;
    const steps = live.stepsThisFrame(1, 60, browserMs);
    if (frames < 60) firstSecond.push(steps);
    const from = sent.length;
    live.frame(steps, driver);
    for (const e of sent.slice(from)) worstAheadUs = Math.max(worstAheadUs, e.time_us - serverNowUs());
    frames++;
  }
  assert.deepEqual(firstSecond, Array(60).fill(60), "fast-forward runs at the speed asked while far from the limit");
  assert.ok(worstAheadUs <= MAX_AHEAD_MS * 1000, `an event ${worstAheadUs / 1e6} s ahead of the server's clock`);
  assert.ok(worstAheadUs > MAX_AHEAD_MS * 1000 - 2_000_000, `held back too early: at most ${worstAheadUs / 1e6} s ahead`);
  assert.equal(live.sim.completed.length, 5);
  // A resumed race keeps the offset: still held to the server's clock.
  const again = LiveSession.resume(live.snapshot(browserMs), sink);
  assert.equal(again.stepsThisFrame(1, 60, browserMs), 1);
  // A snapshot of an earlier page has no offset: its race goes on in real time.
  const { clockOffsetMs: _, ...earlier } = live.snapshot(browserMs);
  const fresh = startSession({ track: "monza", car: "gt3", player: "a", laps: 1, seed: 9 }).state;
  const old = LiveSession.resume({ ...earlier, sim: fresh, identity: { ...earlier.identity, wallStartUs: serverNowUs() } }, sink);
  assert.equal(old.stepsThisFrame(0, 60, browserMs), 0);
});

test("a closed client no longer writes the stored outbox: the page that took the race over owns it", async () => {
  const store = new MemoryStore();
  const clock = new ManualClock();
  const gw = scriptedGateway(clock, [503, 503]);
  const c = new TelemetryClient({ fetch: gw.fetch, clock, storage: store, random: () => 1 });
  c.bind(route);
  for (let i = 1; i <= 3; i++) c.push(envelope(i));
  c.flush();
  assert.equal(gw.calls.length, 1, "a send is in flight");
  c.close();
  store.setItem("pitgun.outbox", "[]");
  await clock.advance(10_000);
  assert.equal(store.getItem("pitgun.outbox"), "[]", "the closed client wrote its batches over the other page's outbox");
});
