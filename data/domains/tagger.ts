/**
 * Domain tagging of documents with FLGP (DESIGN.md section 9): the file format behind
 * `moecat domains fit` / `moecat domains tag`, and the two operations.
 *
 * FLGP is transductive, so a "model" is the labelled documents (plus, optionally, a capped set of
 * unlabelled context documents that shape the graph) and the options. Tagging embeds the union of
 * those and the new documents, fits FLGP on it, and reads off the new documents' probabilities.
 */
import { z } from 'zod';
import { DataError } from '../../core/errors';
import { embedDocuments } from './embed';
import { fitFLGP, FLGPModel } from './flgp';

export const DomainOptionsSchema = z
  .object({
    anchors: z.number().int().min(2).default(300),
    r: z.number().int().min(1).max(16).default(3),
    K: z.number().int().min(1).default(100),
    affinity: z.enum(['se', 'lae']).default('se'),
    seed: z.number().int().default(0),
    dim: z.number().int().min(2).max(4096).default(100),
    hashBits: z.number().int().min(4).max(26).default(18),
  })
  .strict();
export type DomainOptions = z.infer<typeof DomainOptionsSchema>;

export const DomainModelSchema = z
  .object({
    format: z.literal('moecat-flgp-domains'),
    version: z.literal(1),
    domains: z.array(z.string().min(1)).min(2),
    options: DomainOptionsSchema,
    labelled: z.array(z.object({ text: z.string(), domain: z.string() }).strict()).min(2),
    context: z.array(z.string()),
    fit: z
      .object({
        n: z.number().int(),
        t: z.array(z.number()),
        bandwidth: z.number().nullable(),
        logEvidence: z.number(),
        counts: z.record(z.string(), z.number().int()),
      })
      .strict(),
  })
  .strict();
export type DomainModel = z.infer<typeof DomainModelSchema>;

export interface InputDoc {
  text: string;
  id?: string | number;
}

/** A label refers to a document by its 0-based record index in the data, or by its `id`. */
export interface InputLabel {
  index?: number;
  id?: string | number;
  domain: string;
}

export interface Tagged {
  index: number;
  id?: string | number;
  domain: string;
  probability: number;
  probabilities: Record<string, number>;
}

function runFLGP(texts: string[], labelled: { index: number; domain: number }[], nDomains: number, o: DomainOptions): FLGPModel {
  const X = embedDocuments(texts, { seed: o.seed, dim: o.dim, hashDim: 2 ** o.hashBits });
  const s = Math.max(2, Math.min(o.anchors, Math.floor(texts.length / 2)));
  return fitFLGP({
    X,
    labels: new Map(labelled.map((l) => [l.index, l.domain])),
    nClasses: nDomains,
    anchors: s,
    r: Math.min(o.r, s),
    K: Math.min(o.K, s),
    affinity: o.affinity,
    seed: o.seed,
  });
}

function tagsFor(model: FLGPModel, domains: string[], rows: number[], docs: InputDoc[]): Tagged[] {
  const pred = model.predict();
  const C = domains.length;
  return rows.map((row, k) => {
    const probabilities: Record<string, number> = {};
    for (let c = 0; c < C; c++) probabilities[domains[c]] = pred.probs[row * C + c];
    const out: Tagged = { index: k, domain: domains[pred.classes[row]], probability: pred.confidence[row], probabilities };
    if (docs[k].id !== undefined) out.id = docs[k].id;
    return out;
  });
}

/**
 * Fits FLGP on `docs` with `labels` and returns the model file plus the tags of every input
 * document. At most `contextCap` unlabelled documents are kept in the model as graph context.
 */
export function fitDomainModel(docs: InputDoc[], labels: InputLabel[], options: Partial<DomainOptions> = {}, contextCap = 2000): { model: DomainModel; tags: Tagged[] } {
  const o = DomainOptionsSchema.parse(options);
  const byId = new Map<string, number>();
  docs.forEach((d, i) => {
    if (d.id !== undefined) byId.set(String(d.id), i);
  });
  const domainIndex = new Map<string, number>();
  const labelled = new Map<number, number>();
  labels.forEach((l, k) => {
    const where = `labels record ${k + 1}`;
    let i: number | undefined;
    if (l.index !== undefined) i = l.index;
    else if (l.id !== undefined) i = byId.get(String(l.id));
    if (i === undefined || !Number.isInteger(i) || i < 0 || i >= docs.length) {
      throw new DataError(`refers to no document (index ${String(l.index)}, id ${String(l.id)}; the data has ${docs.length} records)`, { where, hint: 'index is the 0-based record number in --data; id matches a record\'s "id"' });
    }
    if (!domainIndex.has(l.domain)) domainIndex.set(l.domain, domainIndex.size);
    const c = domainIndex.get(l.domain)!;
    if (labelled.has(i) && labelled.get(i) !== c) throw new DataError(`document ${i} is labelled with two different domains`, { where });
    labelled.set(i, c);
  });
  const domains = [...domainIndex.keys()];
  if (domains.length < 2) throw new DataError(`labels name ${domains.length} domain(s); at least 2 are needed`, { where: 'labels' });
  const texts = docs.map((d) => d.text);
  const model = runFLGP(texts, [...labelled].map(([index, domain]) => ({ index, domain })), domains.length, o);
  const tags = tagsFor(model, domains, docs.map((_, i) => i), docs);
  const counts: Record<string, number> = Object.fromEntries(domains.map((d) => [d, 0]));
  for (const t of tags) counts[t.domain]++;
  const unlabelled = docs.map((_, i) => i).filter((i) => !labelled.has(i));
  const step = Math.max(1, Math.ceil(unlabelled.length / Math.max(contextCap, 1)));
  const context = contextCap > 0 ? unlabelled.filter((_, k) => k % step === 0).slice(0, contextCap).map((i) => texts[i]) : [];
  return {
    model: {
      format: 'moecat-flgp-domains',
      version: 1,
      domains,
      options: o,
      labelled: [...labelled].sort((a, b) => a[0] - b[0]).map(([i, c]) => ({ text: texts[i], domain: domains[c] })),
      context,
      fit: { n: docs.length, t: model.fits.map((f) => f.t), bandwidth: model.bandwidth?.multiplier ?? null, logEvidence: model.logEvidence, counts },
    },
    tags,
  };
}

/** Parses and validates a model file's JSON. */
export function parseDomainModel(json: unknown, where = 'model'): DomainModel {
  const r = DomainModelSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new DataError(`not a moecat FLGP domain model: ${issue.message}`, { where: `${where}: ${issue.path.join('.') || '(root)'}`, hint: 'create one with moecat domains fit' });
  }
  for (const l of r.data.labelled) {
    if (!r.data.domains.includes(l.domain)) throw new DataError(`labelled domain "${l.domain}" is not in domains`, { where: `${where}: labelled` });
  }
  return r.data;
}

/** Tags new documents: FLGP on labelled ∪ context ∪ docs, probabilities for docs only. */
export function tagDocuments(model: DomainModel, docs: InputDoc[]): Tagged[] {
  if (docs.length === 0) return [];
  const texts = [...model.labelled.map((l) => l.text), ...model.context, ...docs.map((d) => d.text)];
  const labelled = model.labelled.map((l, i) => ({ index: i, domain: model.domains.indexOf(l.domain) }));
  const fitted = runFLGP(texts, labelled, model.domains.length, model.options);
  const offset = model.labelled.length + model.context.length;
  return tagsFor(fitted, model.domains, docs.map((_, k) => offset + k), docs);
}
