/**
 * Canvas 2D: a top-down chase view of the track ribbon around the car (heading up), the pit lane
 * on the inside of the main straight, start and sector lines, and a minimap. The ribbon is built
 * once per track as Path2D in world metres; each frame only sets a transform and strokes it.
 */
import { type CarState, HALF_WIDTH_M, inPitLane } from "../sim/car.js";
import { PIT_LANE } from "../sim/data.js";
import { buildLayout, placeOnLayout, type Layout } from "../sim/layout.js";
import type { Circuit } from "../sim/track.js";

/** Pit lane centre, metres from the track centre line, on the inside of the lap. */
const PIT_OFFSET_M = HALF_WIDTH_M + 11;

export class TrackView {
  readonly layout: Layout;
  private readonly ribbon: Path2D;
  private readonly pitLane: Path2D;
  private readonly marks: { s: number; color: string }[];

  constructor(readonly circuit: Circuit) {
    this.layout = buildLayout(circuit);
    const L = circuit.length;
    this.ribbon = new Path2D();
    for (let s = 0; s < L; s += 3) {
      const p = placeOnLayout(this.layout, s, 0);
      if (s === 0) this.ribbon.moveTo(p.x, p.y);
      else this.ribbon.lineTo(p.x, p.y);
    }
    this.ribbon.closePath();
    this.pitLane = new Path2D();
    const side = this.pitSide();
    const from = L - PIT_LANE.entry_before_line_m;
    const to = L + PIT_LANE.exit_after_line_m;
    for (let s = from; s <= to; s += 3) {
      // Ramps in and out over 60 m so the lane visibly leaves and rejoins the track.
      const ramp = Math.min(1, (s - from) / 60, (to - s) / 60);
      const p = placeOnLayout(this.layout, s, side * PIT_OFFSET_M * ramp);
      if (s === from) this.pitLane.moveTo(p.x, p.y);
      else this.pitLane.lineTo(p.x, p.y);
    }
    this.marks = [
      { s: 0, color: "#fff" },
      { s: circuit.spec.sector_ends[0], color: "#fd4" },
      { s: circuit.spec.sector_ends[1], color: "#fd4" },
      { s: L - PIT_LANE.box_before_line_m, color: "#4cf" },
    ];
  }

  pitSide(): number {
    return this.layout.winding;
  }

  /** Where the car is drawn: in the pit lane it sits on the lane. */
  carPose(car: CarState): { x: number; y: number; heading: number } {
    const L = this.circuit.length;
    let d = car.d;
    if (inPitLane(car)) {
      const from = L - PIT_LANE.entry_before_line_m;
      const sIn = car.s >= from ? car.s : car.s + L;
      const ramp = Math.max(0, Math.min(1, (sIn - from) / 60, (L + PIT_LANE.exit_after_line_m - sIn) / 60));
      d = this.pitSide() * PIT_OFFSET_M * ramp;
    }
    const p = placeOnLayout(this.layout, car.s, d);
    return { ...p, heading: p.heading + car.psi };
  }

  draw(ctx: CanvasRenderingContext2D, car: CarState, w: number, h: number): void {
    const pose = this.carPose(car);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#2f5a2a";
    ctx.fillRect(0, 0, w, h);
    const zoom = Math.max(2.2, 6 - car.v * 0.05) * Math.min(w, h) / 700;
    ctx.setTransform(1, 0, 0, 1, w / 2, h * 0.66);
    ctx.scale(zoom, -zoom);
    ctx.rotate(-(pose.heading - Math.PI / 2));
    ctx.translate(-pose.x, -pose.y);
    this.strokeWorld(ctx);
    this.drawCar(ctx, pose);
    this.drawMinimap(ctx, pose, w);
  }

  private strokeWorld(ctx: CanvasRenderingContext2D): void {
    ctx.lineJoin = "round";
    ctx.lineCap = "butt";
    ctx.strokeStyle = "#c8c8c8";
    ctx.lineWidth = 2 * HALF_WIDTH_M + 1.6;
    ctx.setLineDash([4, 4]);
    ctx.stroke(this.ribbon);
    ctx.setLineDash([]);
    ctx.strokeStyle = "#d33";
    ctx.lineWidth = 2 * HALF_WIDTH_M + 1.6;
    ctx.setLineDash([4, 4]);
    ctx.lineDashOffset = 4;
    ctx.stroke(this.ribbon);
    ctx.setLineDash([]);
    ctx.lineDashOffset = 0;
    ctx.strokeStyle = "#555";
    ctx.lineWidth = 2 * HALF_WIDTH_M;
    ctx.stroke(this.ribbon);
    ctx.strokeStyle = "#6d6d6d";
    ctx.lineWidth = 8;
    ctx.stroke(this.pitLane);
    ctx.strokeStyle = "#fd4";
    ctx.lineWidth = 0.4;
    ctx.setLineDash([3, 3]);
    ctx.stroke(this.pitLane);
    ctx.setLineDash([]);
    for (const m of this.marks) {
      const a = placeOnLayout(this.layout, m.s, -HALF_WIDTH_M);
      const b = placeOnLayout(this.layout, m.s, HALF_WIDTH_M);
      ctx.strokeStyle = m.color;
      ctx.lineWidth = 1.2;
      ctx.beginPath();
      if (m.color === "#4cf") {
        const p = placeOnLayout(this.layout, m.s, this.pitSide() * PIT_OFFSET_M);
        ctx.arc(p.x, p.y, 3, 0, 2 * Math.PI);
      } else {
        ctx.moveTo(a.x, a.y);
        ctx.lineTo(b.x, b.y);
      }
      ctx.stroke();
    }
  }

  private drawCar(ctx: CanvasRenderingContext2D, pose: { x: number; y: number; heading: number }): void {
    ctx.save();
    ctx.translate(pose.x, pose.y);
    ctx.rotate(pose.heading);
    ctx.fillStyle = "#e22";
    ctx.fillRect(-2.3, -1, 4.6, 2);
    ctx.fillStyle = "#fff";
    ctx.fillRect(1.2, -0.8, 0.9, 1.6);
    ctx.restore();
  }

  private drawMinimap(ctx: CanvasRenderingContext2D, pose: { x: number; y: number }, w: number): void {
    const b = this.layout.bounds;
    const size = Math.min(220, w * 0.3);
    const k = size / Math.max(b.maxX - b.minX, b.maxY - b.minY);
    ctx.setTransform(k, 0, 0, -k, w - size - 16 - b.minX * k, 16 + size - (size - (b.maxY - b.minY) * k) / 2 + b.minY * k);
    ctx.strokeStyle = "rgba(255,255,255,.7)";
    ctx.lineWidth = 3 / k;
    ctx.stroke(this.ribbon);
    ctx.fillStyle = "#e22";
    ctx.beginPath();
    ctx.arc(pose.x, pose.y, 5 / k, 0, 2 * Math.PI);
    ctx.fill();
  }
}
