/**
 * A flat layout of all parameters (spec order): one Float32Array holds the master weights, and
 * the same offsets index gradients and optimizer moments. Collectives and the optimizer then
 * work on single contiguous buffers.
 */
import { ParamSpec, numel } from './params';

export interface FlatLayout {
  specs: ParamSpec[];
  offsets: Map<string, number>;
  total: number;
}

export function flatLayout(specs: ParamSpec[]): FlatLayout {
  const offsets = new Map<string, number>();
  let total = 0;
  for (const s of specs) {
    offsets.set(s.name, total);
    total += numel(s.shape);
  }
  return { specs, offsets, total };
}

export function flatten(layout: FlatLayout, values: Map<string, Float32Array>): Float32Array {
  const out = new Float32Array(layout.total);
  for (const s of layout.specs) out.set(values.get(s.name)!, layout.offsets.get(s.name)!);
  return out;
}

/** Views (no copies) of each parameter inside a flat buffer. */
export function views(layout: FlatLayout, flat: Float32Array): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const s of layout.specs) {
    const o = layout.offsets.get(s.name)!;
    out.set(s.name, flat.subarray(o, o + numel(s.shape)));
  }
  return out;
}
