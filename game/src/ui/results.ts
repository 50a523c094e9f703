/**
 * The results screen: the lap times Pitgun computed (`GET /v1/runs/{session}`, polled until its
 * lap rows cover the laps driven) and the leaderboard, beside the page's own lap timer. Nothing
 * here is computed by the page except its own timer column.
 */
import type { LapRecord } from "../sim/session.js";
import { getLeaderboard, getRun, type Run } from "../telemetry/api.js";
import type { HttpFetch } from "../telemetry/ports.js";
import { lapClock } from "./format.js";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

export async function showResults(fetch: HttpFetch, api: string, sessionId: string, track: string, car: string, laps: LapRecord[]): Promise<void> {
  const root = $("results");
  root.hidden = false;
  root.dataset.state = "loading";
  const status = $("results-status");
  const deadline = Date.now() + 60_000;
  let run: Run | null = null;
  while (Date.now() < deadline) {
    try {
      run = await getRun(fetch, api, sessionId);
    } catch (e) {
      status.textContent = `Pitgun: ${(e as Error).message}`;
    }
    const complete = run ? run.lap_rows.filter((r) => r.complete !== false && r.lap_time !== null && r.lap <= laps.length).length : 0;
    if (run && complete >= laps.length && (run.laps ?? complete) >= laps.length) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  if (!run) {
    root.dataset.state = "timeout";
    status.textContent = "Pitgun has not published this run yet (60 s).";
    return;
  }
  const list = $("results-laps");
  list.replaceChildren();
  for (const row of run.lap_rows) {
    if (row.lap_time === null || row.complete === false) continue;
    const own = laps.find((l) => l.lap === row.lap);
    const li = document.createElement("li");
    li.dataset.lap = String(row.lap);
    li.dataset.lapTimeS = String(row.lap_time);
    li.textContent = `Lap ${row.lap}: ${lapClock(row.lap_time * 1e6)}`;
    if (own) {
      const span = document.createElement("span");
      span.className = "page";
      span.textContent = `(page ${lapClock(own.endUs - own.startUs)})`;
      li.append(span);
    }
    list.append(li);
  }
  $("results-best").textContent = run.best_lap_s !== null ? lapClock(run.best_lap_s * 1e6) : "—";
  try {
    const board = await getLeaderboard(fetch, api, track, car);
    const ol = $("leaderboard");
    ol.replaceChildren(...board.map((e) => {
      const li = document.createElement("li");
      li.dataset.player = e.player;
      li.dataset.bestLapS = String(e.best_lap_s);
      li.textContent = `${e.player} ${lapClock(e.best_lap_s * 1e6)} (${e.car})`;
      if (e.session_id === sessionId) li.style.fontWeight = "700";
      return li;
    }));
  } catch (e) {
    status.textContent = `Leaderboard: ${(e as Error).message}`;
  }
  status.textContent = `Session ${sessionId}`;
  root.dataset.state = "ready";
}
