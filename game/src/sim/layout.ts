/**
 * Drawing geometry of a circuit. The listed segments do not close (Monza turns −445° in total),
 * so for drawing only the curvature is scaled to turn exactly ±360° and the remaining position
 * error is spread linearly along the lap; physics keeps the raw curvature (`track.ts`).
 */
import type { Circuit } from "./track.js";

export interface Layout {
  /** Centre line, one point per metre: x, y interleaved (metres, y up). */
  points: Float64Array;
  /** Heading per metre, radians, 0 = +x, counter-clockwise positive. */
  heading: Float64Array;
  /** +1 when the lap turns counter-clockwise overall; the pit lane is drawn on the inside. */
  winding: number;
  bounds: { minX: number; minY: number; maxX: number; maxY: number };
}

export function buildLayout(c: Circuit): Layout {
  const n = c.length;
  let total = 0;
  for (let i = 0; i < n; i++) total += c.curvature[i];
  const winding = total >= 0 ? 1 : -1;
  const scale = (winding * 2 * Math.PI) / total;
  const heading = new Float64Array(n);
  const points = new Float64Array(2 * n);
  let h = 0;
  let x = 0;
  let y = 0;
  for (let i = 0; i < n; i++) {
    heading[i] = h;
    points[2 * i] = x;
    points[2 * i + 1] = y;
    x += Math.cos(h + 0.5 * c.curvature[i] * scale);
    y += Math.sin(h + 0.5 * c.curvature[i] * scale);
    h += c.curvature[i] * scale;
  }
  // (x, y) is where the lap ends; pull each point back by its share of the miss.
  const bounds = { minX: Infinity, minY: Infinity, maxX: -Infinity, maxY: -Infinity };
  for (let i = 0; i < n; i++) {
    const f = i / n;
    points[2 * i] -= x * f;
    points[2 * i + 1] -= y * f;
    bounds.minX = Math.min(bounds.minX, points[2 * i]);
    bounds.maxX = Math.max(bounds.maxX, points[2 * i]);
    bounds.minY = Math.min(bounds.minY, points[2 * i + 1]);
    bounds.maxY = Math.max(bounds.maxY, points[2 * i + 1]);
  }
  return { points, heading, winding, bounds };
}

/** World position and heading at lap distance `s` with lateral offset `d` (positive left). */
export function placeOnLayout(l: Layout, s: number, d: number): { x: number; y: number; heading: number } {
  const n = l.heading.length;
  const x0 = ((s % n) + n) % n;
  const i = Math.floor(x0) % n;
  const j = (i + 1) % n;
  const f = x0 - Math.floor(x0);
  const px = l.points[2 * i] * (1 - f) + l.points[2 * j] * f;
  const py = l.points[2 * i + 1] * (1 - f) + l.points[2 * j + 1] * f;
  let dh = l.heading[j] - l.heading[i];
  if (j === 0) dh = 0;
  const h = l.heading[i] + dh * f;
  return { x: px - Math.sin(h) * d, y: py + Math.cos(h) * d, heading: h };
}
