/** Lap times as the HUD shows them: m:ss.mmm from whole microseconds. */
export function lapClock(us: number): string {
  if (!Number.isFinite(us) || us < 0) return "—";
  const ms = Math.floor(us / 1000);
  const m = Math.floor(ms / 60000);
  const s = ((ms % 60000) / 1000).toFixed(3).padStart(6, "0");
  return `${m}:${s}`;
}
