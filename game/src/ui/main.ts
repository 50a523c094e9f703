/**
 * The page: start screen, race loop, HUD and results. The sim runs in fixed 60 Hz steps; each
 * animation frame runs the steps that catch up with wall time (or K steps with `?speed=K`, until
 * the race is MAX_AHEAD_MS ahead of the server's clock) and sends one sample. Event times are sim
 * times, so fast-forward and pauses never bend lap times.
 *
 * Query: `?api=` API base (default: same origin), `?autopilot=SEED&speed=K`,
 * `?player=&track=&car=&laps=` preselect and start.
 */
import { newAutopilot } from "../sim/autopilot.js";
import { CARS, TRACKS } from "../sim/data.js";
import { currentLapUs, startSession, STEP_HZ, type LapRecord } from "../sim/session.js";
import { circuit } from "../sim/track.js";
import { FrameMeter } from "../live/frame_meter.js";
import { LiveSession, notResumable, type Snapshot } from "../live/live_session.js";
import { clockOffsetMs, createSessionPatiently, sourceOf, wallStartUs } from "../telemetry/api.js";
import { TelemetryClient } from "../telemetry/client.js";
import { gzip, systemClock, type HttpFetch } from "../telemetry/ports.js";
import { lapClock } from "./format.js";
import { PlayerControls } from "./input.js";
import { TrackView } from "./render.js";
import { showResults } from "./results.js";

const RUN_KEY = "pitgun.run";
const RACE_LOCK = "pitgun.race";
const params = new URLSearchParams(location.search);
const api = (params.get("api") ?? "").replace(/\/$/, "");
const autopilotSeed = params.has("autopilot") ? Number(params.get("autopilot")) || 1 : null;
const speed = Math.max(1, Math.min(600, Number(params.get("speed") ?? 1) || 1));
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const httpFetch: HttpFetch = (url, init) => fetch(url, init as RequestInit);

type PageState = "elsewhere" | "start" | "connecting" | "racing" | "finishing" | "results" | "error";
let pageState: PageState = "start";
let live: LiveSession | null = null;

function saveSnapshot(): void {
  if (!live || live.sim.phase !== "running") return;
  try {
    localStorage.setItem(RUN_KEY, JSON.stringify(live.snapshot()));
  } catch (e) {
    console.warn("snapshot not saved", e);
  }
}

/** Opened when this tab takes a race (`takeRace`): it reads and writes the stored outbox. */
let client: TelemetryClient | null = null;

function openClient(): TelemetryClient {
  return new TelemetryClient({
    fetch: httpFetch,
    clock: systemClock,
    storage: localStorage,
    compress: typeof CompressionStream === "function" ? gzip : null,
    beacon: (url, body) => navigator.sendBeacon(url, body),
    onFlush: saveSnapshot,
    log: (m) => console.warn(`[pitgun] ${m}`),
  });
}

(window as unknown as { pitgun: unknown }).pitgun = {
  state: () => pageState,
  sessionId: () => live?.route.sessionId ?? null,
  laps: () => live?.sim.completed.map((l) => ({ lap: l.lap, us: l.endUs - l.startUs })) ?? [],
  telemetry: () => {
    const c = live?.client ?? client;
    return c ? { ...c.stats, queuedBatches: c.outbox.size, droppedBatches: c.outbox.dropped } : null;
  },
};

addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden") client?.flush();
});
addEventListener("pagehide", () => client?.pagehide());

/** Frees the race lock this tab holds; resolves once it is free. */
let letGo: (() => Promise<void>) | null = null;

/**
 * A race and the stored outbox are one origin's: two tabs would each resume the saved race, send
 * events for one session and overwrite each other's outbox. A tab drives a race, and opens the
 * outbox, only while it holds the Web Lock `pitgun.race`, from its start (or resume) to its
 * drained results. Resolves whether the lock was taken: at once or not at all, or (`wait`) when
 * the tab holding it lets it go. Web Locks exist only in secure contexts (https, localhost);
 * elsewhere every tab drives.
 */
function takeRace(wait: boolean): Promise<boolean> {
  const locks = (navigator as Navigator & { locks?: LockManager }).locks;
  if (!locks) return Promise.resolve(true);
  return new Promise((taken) => {
    let done = (): void => {};
    const free = locks.request(RACE_LOCK, wait ? {} : { ifAvailable: true }, (lock) => {
      if (!lock) {
        taken(false);
        return null;
      }
      letGo = async () => {
        done();
        await free;
      };
      taken(true);
      return new Promise<void>((d) => (done = d));
    });
  });
}

/** Ends this tab's hold on the race: the outbox is no longer its to write, and the lock is free
 * when this resolves (so this tab can take it again at once). */
async function letRaceGo(): Promise<void> {
  client?.close();
  client = null;
  const go = letGo;
  letGo = null;
  await go?.();
}

function fillStartForm(): void {
  $<HTMLSelectElement>("track").replaceChildren(...TRACKS.map((t) => new Option(`${t.name} (${(t.length_m / 1000).toFixed(3)} km)`, t.name)));
  $<HTMLSelectElement>("car").replaceChildren(...CARS.map((c) => new Option(c.name, c.name)));
  for (const k of ["player", "track", "car", "laps"]) {
    const v = params.get(k);
    if (v) ($(k) as HTMLInputElement).value = v;
  }
}

async function start(player: string, track: string, car: string, laps: number): Promise<void> {
  $("start-error").textContent = "";
  if (!(await takeRace(false))) {
    $("start").hidden = false;
    $("start-error").textContent = "A race is running in another tab of this browser: finish or close it first.";
    return;
  }
  pageState = "connecting";
  $("start").hidden = true;
  client?.close();
  const telemetry = (client = openClient());
  try {
    const grant = await createSessionPatiently(httpFetch, api, { player, track, car });
    const gateway = grant.gateway.replace(/\/$/, "");
    const seed = autopilotSeed ?? Math.floor(Math.random() * 2 ** 31);
    const { state, events } = startSession({ track, car, player, laps, seed });
    // Event times on the server's clock: a browser's clock may be minutes off.
    const nowMs = Date.now();
    const identity = { sessionId: grant.session_id, wallStartUs: wallStartUs(grant, nowMs), dims: { player, track, car }, source: sourceOf(grant) };
    live = new LiveSession({ sessionId: grant.session_id, gateway, token: grant.token }, identity, state, telemetry,
      autopilotSeed !== null ? newAutopilot(autopilotSeed) : null, grant.expires_at, clockOffsetMs(grant, nowMs));
    live.report(events);
    // Into the outbox first, then the snapshot (the flush saves it): a reload resumes after
    // events that are stored, never past a session_start still in memory.
    telemetry.flush();
    race();
  } catch (e) {
    await letRaceGo();
    pageState = "error";
    $("start").hidden = false;
    $("start-error").textContent = (e as Error).message;
  }
}

function race(): void {
  const session = live!;
  pageState = "racing";
  $("start").hidden = true;
  $("results").hidden = true;
  $("race").hidden = false;
  const canvas = $<HTMLCanvasElement>("view");
  const ctx = canvas.getContext("2d")!;
  const view = new TrackView(circuit(session.sim.track));
  const controls = new PlayerControls();
  controls.attach($("touch"));
  const human = controls.driver();
  const meter = new FrameMeter(1000 / STEP_HZ);
  const lapList = $("lap-times");
  lapList.replaceChildren(...session.sim.completed.map(lapItem));
  let last = performance.now();
  let lastHealth = last;
  let owedMs = 0;

  const frame = (now: number) => {
    const dtMs = now - last;
    last = now;
    meter.record(dtMs);
    controls.update(Math.min(dtMs, 100) / 1000);
    // A hidden tab or a long stall pauses the race rather than jumping it forward.
    owedMs = Math.min(owedMs + dtMs, 250);
    let steps = Math.floor((owedMs * STEP_HZ) / 1000);
    owedMs -= (steps * 1000) / STEP_HZ;
    if (session.autopilot) steps = session.stepsThisFrame(steps, speed, Date.now());
    const events = session.frame(steps, session.driver(human));
    for (const e of events) if (e.kind === "lap") lapList.append(lapItem(session.sim.completed[session.sim.completed.length - 1]));
    if (now - lastHealth >= 1000) {
      lastHealth = now;
      session.health(meter.take());
    }
    resize(canvas);
    view.draw(ctx, session.sim.carState, canvas.width, canvas.height);
    hud(session);
    if (session.sim.phase === "ended") void finish(session);
    else requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

function lapItem(l: LapRecord): HTMLLIElement {
  const li = document.createElement("li");
  const us = l.endUs - l.startUs;
  li.dataset.lap = String(l.lap);
  li.dataset.us = String(us);
  li.dataset.ms = (us / 1000).toFixed(3);
  li.textContent = `Lap ${l.lap}: ${lapClock(us)}`;
  return li;
}

function resize(canvas: HTMLCanvasElement): void {
  const dpr = Math.min(2, devicePixelRatio || 1);
  const w = Math.round(canvas.clientWidth * dpr);
  const h = Math.round(canvas.clientHeight * dpr);
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
}

function hud(session: LiveSession): void {
  const s = session.sim;
  const car = s.carState;
  $("hud-speed").textContent = String(Math.round(car.v * 3.6));
  $("hud-gear").textContent = car.gear === 0 ? "N" : String(car.gear);
  $("hud-lap").textContent = `${Math.min(s.lap, s.lapsTarget)}/${s.lapsTarget}`;
  $("hud-timer").textContent = lapClock(currentLapUs(s));
  const times = s.completed.map((l) => l.endUs - l.startUs);
  $("hud-last").textContent = times.length ? lapClock(times[times.length - 1]) : "—";
  $("hud-best").textContent = times.length ? lapClock(Math.min(...times)) : "—";
  $("hud-sectors").textContent = s.sectorsUs.map((us, i) => `S${i + 1} ${(us / 1e6).toFixed(3)}`).join("  ");
  $("hud-pit").textContent = car.pit === "stopped" ? "PIT STOP — servicing" : car.pit !== "out" ? "PIT LIMITER 80" : car.pitRequested ? "PIT this lap" : car.offTrack ? "OFF TRACK" : "";
  const telemetry = session.client;
  const st = telemetry.stats;
  const net = $("hud-net");
  net.textContent = `telemetry: ${telemetry.outbox.size} batches queued · rtt ${Math.round(st.lastRttMs)} ms${telemetry.outbox.dropped ? ` · ${telemetry.outbox.dropped} dropped` : ""}${st.rejected ? ` · ${st.rejected} refused by the gateway` : ""}${st.fatal ? ` · ${st.fatal}` : ""}`;
  net.classList.toggle("bad", !!st.fatal || !!st.rejected || telemetry.outbox.size > 5);
}

async function finish(session: LiveSession): Promise<void> {
  pageState = "finishing";
  localStorage.removeItem(RUN_KEY);
  await session.client.drain(60_000);
  // What is left stays stored for the next race; this page no longer writes the outbox, which
  // the tab taking the race next owns.
  await letRaceGo();
  $("race").hidden = true;
  pageState = "results";
  await showResults(httpFetch, api, session.route.sessionId, session.sim.track, session.sim.car, session.sim.completed);
}

function resumeSaved(telemetry: TelemetryClient): boolean {
  const raw = localStorage.getItem(RUN_KEY);
  if (!raw) return false;
  try {
    const snap = JSON.parse(raw) as Snapshot;
    const why = notResumable(snap, Date.now());
    if (why) {
      $("start-error").textContent = `The race left unfinished was not resumed: ${why}. Start a new one.`;
      throw new Error(why);
    }
    live = LiveSession.resume(snap, telemetry);
    race();
    return true;
  } catch {
    localStorage.removeItem(RUN_KEY);
    return false;
  }
}

fillStartForm();
$("start-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const v = (id: string) => ($(id) as HTMLInputElement).value;
  void start(v("player").trim() || "player", v("track"), v("car"), Math.max(1, Number(v("laps")) || 3));
});
$("again").addEventListener("click", () => location.assign(location.pathname + (api ? `?api=${encodeURIComponent(api)}` : "")));

/** A saved race is resumed by the tab that takes it; a tab opened beside it waits. */
async function begin(): Promise<void> {
  if (localStorage.getItem(RUN_KEY)) {
    let waited = false;
    if (!(await takeRace(false))) {
      pageState = "elsewhere";
      $("elsewhere").hidden = false;
      await takeRace(true);
      $("elsewhere").hidden = true;
      waited = true;
    }
    client = openClient();
    if (resumeSaved(client)) return;
    await letRaceGo();
    pageState = "start";
    // The other tab finished its race: this one offers a new one rather than starting it.
    if (waited) return void ($("start").hidden = false);
  }
  if (params.has("player") || params.has("track") || params.has("car") || autopilotSeed !== null) {
    void start(params.get("player") ?? `auto-${autopilotSeed ?? 1}`, params.get("track") ?? TRACKS[0].name, params.get("car") ?? CARS[0].name, Math.max(1, Number(params.get("laps") ?? 3) || 3));
  } else {
    $("start").hidden = false;
  }
}

void begin();
