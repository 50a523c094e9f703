/**
 * A seeded PRNG whose whole state is one 32-bit integer, so a session's randomness travels in
 * its JSON snapshot and a resumed session draws exactly what it would have drawn (mulberry32).
 */
export interface Prng {
  state: number;
}

export function seedPrng(seed: number): Prng {
  // Mix the seed once so nearby seeds start far apart.
  let h = (seed ^ 0x9e3779b9) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return { state: (h ^ (h >>> 16)) >>> 0 };
}

/** Uniform in [0, 1). */
export function nextFloat(p: Prng): number {
  p.state = (p.state + 0x6d2b79f5) >>> 0;
  let t = p.state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

export function chance(p: Prng, probability: number): boolean {
  return nextFloat(p) < probability;
}
