import assert from "node:assert/strict";
import { test } from "node:test";
import { newAutopilot, autopilotDriver } from "../src/sim/autopilot.js";
import { CARS, PIT_LANE, TRACKS } from "../src/sim/data.js";
import type { SimEvent } from "../src/sim/metrics.js";
import { advanceFrame, startSession, stepUs, type SessionState } from "../src/sim/session.js";
import { circuit } from "../src/sim/track.js";
import { buildLayout } from "../src/sim/layout.js";
import { toEnvelope } from "../src/telemetry/envelope.js";
import { referenceLapTimes } from "./reference.js";

function drive(opts: { track?: string; car?: string; laps?: number; seed?: number; skill?: number; pitOnLap?: number; stepsPerFrame?: number }) {
  const { state, events } = startSession({ track: opts.track ?? "monza", car: opts.car ?? "gt3", player: "t", laps: opts.laps ?? 2, seed: opts.seed ?? 1 });
  const ap = newAutopilot(opts.seed ?? 1, { skill: opts.skill ?? 0.8, pitOnLap: opts.pitOnLap });
  const d = autopilotDriver(ap);
  const all: SimEvent[] = [...events];
  const trace: { s: number; v: number; pit: string }[] = [];
  let frames = 0;
  while (state.phase === "running" && frames < 60 * 60 * 20) {
    all.push(...advanceFrame(state, opts.stepsPerFrame ?? 1, d));
    trace.push({ s: state.carState.s, v: state.carState.v, pit: state.carState.pit });
    frames++;
  }
  return { state, events: all, trace, ap };
}

test("lap and sector events sit at the exact crossing microsecond and agree with the page timer", () => {
  const { state, events } = drive({ laps: 2, stepsPerFrame: 3 });
  assert.equal(state.completed.length, 2);
  const laps = events.filter((e) => e.kind === "lap");
  assert.equal(laps.length, 2);
  for (const [i, e] of laps.entries()) {
    const rec = state.completed[i];
    assert.equal(e.simUs, rec.endUs);
    assert.equal(e.values.lap, rec.lap + 1);
    assert.equal(Math.round(e.values.lap_time_last! * 1e6), rec.endUs - rec.startUs);
    assert.equal(rec.sectorsUs.reduce((a, b) => a + b, 0), rec.endUs - rec.startUs);
    assert.ok(Number.isInteger(e.simUs));
  }
  // Crossings fall between steps, not on them: interpolated, not quantised to 1/60 s.
  assert.ok(laps.some((e) => ![0, 1, 2, 3].some((k) => e.simUs === stepUs(Math.round((e.simUs * 60) / 1e6) + k - 1))));
  const sectors = events.filter((e) => e.kind === "sector");
  assert.equal(sectors.length, 6);
  // Events are in time order and seq is 1..n.
  events.forEach((e, i) => assert.equal(e.seq, i + 1));
  for (let i = 1; i < events.length; i++) assert.ok(events[i].simUs >= events[i - 1].simUs, `event ${i} goes back in time`);
});

test("the lap-performance rule on the envelopes gives the page's lap times within 1 µs", () => {
  const { state, events } = drive({ laps: 3, track: "spa", car: "lmp2", seed: 9 });
  const wallStartUs = 1_767_225_600_123_456;
  const envs = events.map((e) => toEnvelope({ sessionId: "web-t", wallStartUs, dims: { player: "t", track: "spa", car: "lmp2" } }, e));
  const ref = referenceLapTimes(envs);
  for (const rec of state.completed) {
    const page = (rec.endUs - rec.startUs) / 1e6;
    assert.ok(Math.abs(ref.get(rec.lap)! - page) < 1e-6, `lap ${rec.lap}: ${ref.get(rec.lap)} vs ${page}`);
    const lapEnv = envs.find((e) => e.kind === "lap" && e.channels.lap === rec.lap + 1)!;
    assert.equal(lapEnv.channels.last_lap_ms, (rec.endUs - rec.startUs) / 1000);
  }
});

test("pit lane: entry and exit at their distances, limiter, a stop of a few seconds, the lap still counts", () => {
  const { state, events, trace } = drive({ laps: 2, pitOnLap: 1, seed: 3 });
  const L = circuit("monza").length;
  const pin = events.filter((e) => e.kind === "pit_in");
  const pout = events.filter((e) => e.kind === "pit_out");
  assert.equal(pin.length, 1);
  assert.equal(pout.length, 1);
  assert.equal(pin[0].values.lap_distance, L - PIT_LANE.entry_before_line_m);
  assert.equal(pin[0].values.lap, 1);
  assert.equal(pout[0].values.lap_distance, PIT_LANE.exit_after_line_m);
  assert.equal(pout[0].values.lap, 2);
  const inLane = trace.filter((t) => t.pit !== "out");
  assert.ok(inLane.every((t) => t.v <= PIT_LANE.speed_limit_kmh / 3.6 + 0.5));
  const stoppedFrames = trace.filter((t) => t.pit === "stopped").length;
  assert.ok(stoppedFrames / 60 > 2 && stoppedFrames / 60 < 15, `stop ${stoppedFrames / 60} s`);
  assert.equal(state.completed.length, 2);
  assert.equal(state.carState.pitStops, 1);
});

test("the autopilot completes laps on every track with every car", () => {
  for (const t of TRACKS) {
    for (const c of CARS) {
      const { state } = drive({ track: t.name, car: c.name, laps: 1, seed: 5 });
      assert.equal(state.completed.length, 1, `${t.name} ${c.name}`);
      const s = (state.completed[0].endUs - state.completed[0].startUs) / 1e6;
      assert.ok(s > 60 && s < 200, `${t.name} ${c.name}: ${s} s`);
    }
  }
});

test("weak drivers make seeded mistakes (off the track) and still finish", () => {
  let offTrack = 0;
  for (let seed = 1; seed <= 6; seed++) {
    const { state, events } = drive({ laps: 2, seed, skill: 0.05 });
    assert.equal(state.completed.length, 2);
    offTrack += events.filter((e) => e.kind === "sample" && (e.values.damage_floor ?? 0) > 0).length;
  }
  assert.ok(offTrack > 0, "no off-track moment in 12 laps of a weak driver");
});

test("a seed determines the session; another seed changes it", () => {
  const a = drive({ laps: 1, seed: 42, skill: 0.5 });
  const b = drive({ laps: 1, seed: 42, skill: 0.5 });
  const c = drive({ laps: 1, seed: 43, skill: 0.5 });
  assert.deepEqual(a.events, b.events);
  assert.notDeepEqual(a.events, c.events);
});

test("a session resumed from its JSON snapshot continues exactly", () => {
  const { state } = startSession({ track: "suzuka", car: "f3", player: "t", laps: 1, seed: 8 });
  const ap = newAutopilot(8);
  for (let i = 0; i < 3000; i++) advanceFrame(state, 1, autopilotDriver(ap));
  const saved = JSON.stringify({ state, ap });
  const restored = JSON.parse(saved) as { state: SessionState; ap: typeof ap };
  const rest1: SimEvent[] = [];
  const rest2: SimEvent[] = [];
  while (state.phase === "running") rest1.push(...advanceFrame(state, 1, autopilotDriver(ap)));
  while (restored.state.phase === "running") rest2.push(...advanceFrame(restored.state, 1, autopilotDriver(restored.ap)));
  assert.deepEqual(rest2, rest1);
});

test("the drawn ribbon closes and turns exactly once", () => {
  for (const t of TRACKS) {
    const l = buildLayout(circuit(t.name));
    const n = l.heading.length;
    const gap = Math.hypot(l.points[2 * (n - 1)] - l.points[0], l.points[2 * (n - 1) + 1] - l.points[1]);
    assert.ok(gap < 2, `${t.name}: gap ${gap} m`);
  }
});
