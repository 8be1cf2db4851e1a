/**
 * Mixture config and stage schedule (DESIGN.md section 7). A mixture weights named sources; an
 * optional list of stages switches the weights (and sequence length, RoPE base) once a global
 * token count is reached, as in pre-training stages, mid-training and long-context extension.
 *
 * Rows are assigned to sources by a deterministic low-discrepancy chain (source 1 vs the rest
 * by a Beatty sequence, then source 2 vs the rest of the rest, ...). Unlike an independent draw
 * per row, every prefix of rows then holds each source's share to within one row, and the
 * number of rows any source got before row n has a closed form, so a source's read cursor is a
 * pure O(sources) function of the row index: no history to replay, O(1) resume.
 */
import { z } from 'zod';
import { ConfigError } from '../core/errors';
import { RngStream } from '../core/rng';

const weightsSchema = z.record(z.string().min(1), z.number().finite().nonnegative());

export const mixtureStageSchema = z
  .object({
    name: z.string().min(1),
    startTokens: z.number().int().nonnegative(),
    weights: weightsSchema,
    seqLen: z.number().int().positive().optional(),
    ropeBase: z.number().positive().optional(),
  })
  .strict();

export const mixtureSchema = z
  .object({ sources: weightsSchema, stages: z.array(mixtureStageSchema).optional() })
  .strict()
  .superRefine((m, ctx) => {
    const positive = (w: Record<string, number>) => Object.values(w).some((v) => v > 0);
    if (!positive(m.sources)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['sources'], message: 'at least one source needs a positive weight' });
    const names = new Set<string>();
    (m.stages ?? []).forEach((s, i) => {
      if (!positive(s.weights)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['stages', i, 'weights'], message: 'at least one source needs a positive weight' });
      for (const k of Object.keys(s.weights)) {
        if (!(k in m.sources)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['stages', i, 'weights', k], message: `"${k}" is not one of the mixture's sources` });
      }
      if (names.has(s.name)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['stages', i, 'name'], message: `stage name "${s.name}" is used twice` });
      names.add(s.name);
      if (i > 0 && s.startTokens <= m.stages![i - 1].startTokens) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['stages', i, 'startTokens'], message: 'stages must start at strictly increasing token counts' });
      }
    });
  });

export type MixtureConfig = z.infer<typeof mixtureSchema>;
export type MixtureStageConfig = z.infer<typeof mixtureStageSchema>;

/** Validates a mixture; errors name the key (prefixed by `where`, e.g. `data.mixture`). */
export function parseMixture(raw: unknown, where = 'mixture'): MixtureConfig {
  const r = mixtureSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new ConfigError(issue.message, { where: [where, ...issue.path].join('.') });
  }
  return r.data;
}

/** One level of the source chain: rows not taken by earlier sources split q : 1-q here. */
interface ChainLink {
  source: string;
  q: number;
  phase: number;
}

/** Rows among the first n (of this level) that go to this link: floor(n q + phase). */
function taken(l: ChainLink, n: number): number {
  return l.q >= 1 ? n : Math.floor(n * l.q + l.phase);
}

export class SourceChain {
  private readonly links: ChainLink[];

  /** Sources with zero weight are left out; order is by name so config key order is irrelevant. */
  constructor(weights: Record<string, number>, seed: number, stageIndex: number) {
    const names = Object.keys(weights).filter((k) => weights[k] > 0).sort();
    let rest = names.reduce((a, k) => a + weights[k], 0);
    this.links = names.map((source, i) => {
      const q = i === names.length - 1 ? 1 : weights[source] / rest;
      rest -= weights[source];
      return { source, q, phase: RngStream.of(seed, 'mixture:phase', stageIndex, i).next() };
    });
  }

  /** The source of row g and how many rows that source got before it (its ordinal). */
  assign(g: number): { source: string; ordinal: number } {
    let m = g;
    for (const l of this.links) {
      const before = taken(l, m);
      if (l.q >= 1 || taken(l, m + 1) > before) return { source: l.source, ordinal: before };
      m -= before;
    }
    throw new Error('unreachable: the last chain link takes every row');
  }

  /** Rows per source among the first n rows. */
  counts(n: number): Map<string, number> {
    const out = new Map<string, number>();
    let m = n;
    for (const l of this.links) {
      const c = taken(l, m);
      out.set(l.source, c);
      m -= c;
    }
    return out;
  }
}

export interface Stage {
  index: number;
  name: string;
  /** Configured start (global tokens). */
  startTokens: number;
  /** Tokens actually consumed before this stage's first step (>= startTokens: steps are whole). */
  startTokensActual: number;
  startStep: number;
  /** Steps in this stage (Infinity for the last). */
  steps: number;
  weights: Record<string, number>;
  seqLen: number;
  ropeBase?: number;
  tokensPerStep: number;
  chain: SourceChain;
  /** Token position in each source's stream where this stage starts reading. */
  cursorBase: Map<string, number>;
}

/**
 * Lays the stages out on the step axis: a stage starts at the first step whose preceding token
 * count reaches its startTokens. Each stage's per-source starting cursor continues where the
 * previous stage stopped, so a stage switch never re-reads data.
 */
export function planStages(m: MixtureConfig, o: { seed: number; rowsPerStep: number; seqLen: number }): Stage[] {
  const cfgs: MixtureStageConfig[] = [...(m.stages ?? [])];
  if (cfgs.length === 0 || cfgs[0].startTokens > 0) cfgs.unshift({ name: 'base', startTokens: 0, weights: m.sources });
  const stages: Stage[] = [];
  let step = 0;
  let tokens = 0;
  let cursor = new Map<string, number>(Object.keys(m.sources).map((k) => [k, 0]));
  cfgs.forEach((c, i) => {
    const seqLen = c.seqLen ?? o.seqLen;
    const tps = o.rowsPerStep * seqLen;
    const next = cfgs[i + 1];
    const steps = next ? Math.max(0, Math.ceil((next.startTokens - tokens) / tps)) : Infinity;
    const chain = new SourceChain(c.weights, o.seed, i);
    stages.push({ index: i, name: c.name, startTokens: c.startTokens, startTokensActual: tokens, startStep: step, steps, weights: c.weights, seqLen, ropeBase: c.ropeBase, tokensPerStep: tps, chain, cursorBase: cursor });
    if (!next) return;
    const used = chain.counts(steps * o.rowsPerStep);
    cursor = new Map([...cursor].map(([k, v]) => [k, v + (used.get(k) ?? 0) * seqLen]));
    step += steps;
    tokens += steps * tps;
  });
  return stages;
}
