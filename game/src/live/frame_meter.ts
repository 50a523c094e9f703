/**
 * Real frame-rate health: the page feeds it requestAnimationFrame intervals, the bots their
 * timer intervals. A frame longer than 1.5× the nominal interval counts as dropped.
 */
export interface HealthReading {
  fps: number;
  frameMs: number;
  dropped: number;
}

export class FrameMeter {
  private frames = 0;
  private sumMs = 0;
  private droppedTotal = 0;

  constructor(private readonly nominalMs: number) {}

  record(intervalMs: number): void {
    this.frames++;
    this.sumMs += intervalMs;
    if (intervalMs > 1.5 * this.nominalMs) this.droppedTotal++;
  }

  /** The reading since the last call; dropped frames are cumulative, like the simulator's. */
  take(): HealthReading {
    const frameMs = this.frames ? this.sumMs / this.frames : 0;
    const reading = { fps: frameMs > 0 ? 1000 / frameMs : 0, frameMs, dropped: this.droppedTotal };
    this.frames = 0;
    this.sumMs = 0;
    return reading;
  }
}
