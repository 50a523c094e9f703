/**
 * One autopilot session without a browser or a server, written as NDJSON envelopes, with the
 * page timer's lap times on stderr: for `pitgun replay` against lap-performance.v1.yaml.
 *
 *   npm run headless -- [--track monza] [--car gt3] [--laps 1] [--seed 1] > session.ndjson
 */
import { autopilotDriver, newAutopilot } from "./sim/autopilot.js";
import { advanceFrame, startSession } from "./sim/session.js";
import { toEnvelope } from "./telemetry/envelope.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const track = arg("track", "monza");
const car = arg("car", "gt3");
const seed = Number(arg("seed", "1"));
const { state, events } = startSession({ track, car, player: "headless", laps: Number(arg("laps", "1")), seed });
const driver = autopilotDriver(newAutopilot(seed));
const id = { sessionId: `web-headless-${seed}`, wallStartUs: Date.UTC(2026, 0, 1) * 1000, dims: { player: "headless", track, car } };
const lines = events.map((e) => JSON.stringify(toEnvelope(id, e)));
while (state.phase === "running") for (const e of advanceFrame(state, 1, driver)) lines.push(JSON.stringify(toEnvelope(id, e)));
process.stdout.write(lines.join("\n") + "\n");
for (const l of state.completed) console.error(JSON.stringify({ lap: l.lap, page_lap_time_s: (l.endUs - l.startUs) / 1e6 }));
