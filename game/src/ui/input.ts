/**
 * Keyboard and touch into car inputs. Keys are digital; steering ramps towards full lock so a
 * tap is a small correction, and returns to centre when released.
 */
import type { Inputs } from "../sim/car.js";
import type { Driver } from "../sim/session.js";

type Control = "throttle" | "brake" | "left" | "right" | "pit";

const KEYS: Record<string, Control> = {
  ArrowUp: "throttle", KeyW: "throttle", ArrowDown: "brake", KeyS: "brake",
  ArrowLeft: "left", KeyA: "left", ArrowRight: "right", KeyD: "right", KeyP: "pit",
};

const STEER_RATE_PER_S = 3.5;

export class PlayerControls {
  private held = new Set<Control>();
  private steer = 0;

  attach(touchRoot: HTMLElement): void {
    addEventListener("keydown", (e) => {
      const c = KEYS[e.code];
      if (c) {
        this.held.add(c);
        e.preventDefault();
      }
    });
    addEventListener("keyup", (e) => {
      const c = KEYS[e.code];
      if (c) this.held.delete(c);
    });
    addEventListener("blur", () => this.held.clear());
    for (const b of touchRoot.querySelectorAll<HTMLButtonElement>("button[data-key]")) {
      const c = b.dataset.key as Control;
      b.addEventListener("pointerdown", (e) => { this.held.add(c); b.setPointerCapture(e.pointerId); e.preventDefault(); });
      const up = () => this.held.delete(c);
      b.addEventListener("pointerup", up);
      b.addEventListener("pointercancel", up);
    }
  }

  /** Called once per frame with the frame's wall time, before the steps. */
  update(dtS: number): void {
    const target = (this.held.has("left") ? 1 : 0) - (this.held.has("right") ? 1 : 0);
    const step = STEER_RATE_PER_S * dtS;
    if (target === 0) this.steer = Math.abs(this.steer) <= 2 * step ? 0 : this.steer - Math.sign(this.steer) * 2 * step;
    else this.steer = Math.max(-1, Math.min(1, this.steer + Math.sign(target - this.steer) * Math.min(step, Math.abs(target - this.steer))));
  }

  inputs(): Inputs {
    return { throttle: this.held.has("throttle") ? 1 : 0, brake: this.held.has("brake") ? 1 : 0, steer: this.steer, pit: this.held.has("pit") };
  }

  driver(): Driver {
    return { inputs: () => this.inputs() };
  }
}
