/**
 * A naive reference of the lap-performance manifest's lap time (manifests/pipelines/
 * lap-performance.v1.yaml): a lap runs from the first event carrying its number to the first
 * event of the next lap, over kinds session_start, sample, lap, session_end.
 */
import type { Envelope } from "../src/telemetry/envelope.js";

export function referenceLapTimes(envelopes: Envelope[]): Map<number, number> {
  const firstUs = new Map<number, number>();
  const seen = new Set<string>();
  for (const e of envelopes) {
    if (seen.has(e.event_id)) continue;
    seen.add(e.event_id);
    if (!["session_start", "sample", "lap", "session_end"].includes(e.kind)) continue;
    const lap = e.channels.lap;
    if (typeof lap !== "number") continue;
    const t = firstUs.get(lap);
    if (t === undefined || e.time_us < t) firstUs.set(lap, e.time_us);
  }
  const out = new Map<number, number>();
  for (const [lap, t] of firstUs) {
    const next = firstUs.get(lap + 1);
    if (next !== undefined) out.set(lap, (next - t) / 1e6);
  }
  return out;
}
