/** The pitgun-envelope/v1 document (schemas/pitgun-envelope/v1.json) built from a sim event. */
import type { EventKind, SimEvent } from "../sim/metrics.js";
import { encodeChannels, SOURCE } from "./channels.js";

export interface Envelope {
  schema: "pitgun-envelope/v1";
  event_id: string;
  source: { kind: string; id: string; version: string };
  session_id: string;
  seq: number;
  time_us: number;
  kind: EventKind;
  channels: Record<string, number | boolean>;
  dims: { player: string; track: string; car: string };
}

export interface SessionIdentity {
  sessionId: string;
  /** Wall-clock start, whole µs since the epoch; event time = this + sim µs. */
  wallStartUs: number;
  dims: { player: string; track: string; car: string };
  source?: Envelope["source"];
}

export function toEnvelope(id: SessionIdentity, e: SimEvent): Envelope {
  return {
    schema: "pitgun-envelope/v1",
    event_id: `${id.sessionId}-${e.seq}`,
    source: id.source ?? { ...SOURCE },
    session_id: id.sessionId,
    seq: e.seq,
    time_us: id.wallStartUs + e.simUs,
    kind: e.kind,
    channels: encodeChannels(e.values),
    dims: id.dims,
  };
}
