import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DataError } from '../../../core/errors';
import { loadBundledCorpus } from '../../../data/domains/corpus';
import { fitDomainModel, parseDomainModel, tagDocuments } from '../../../data/domains/tagger';
import { command } from '../../../cli/domains';

describe('data/domains/tagger (moecat domains fit|tag)', () => {
  const docs = loadBundledCorpus({ perDomain: 60, seed: 2 });
  const fitDocs = docs.slice(0, 120).map((d, i) => ({ text: d.text, id: `doc${i}` }));
  const newDocs = docs.slice(120);
  const labels = fitDocs.slice(0, 24).map((d, i) => (i % 2 ? { id: d.id, domain: docs[i].domain } : { index: i, domain: docs[i].domain }));

  it('fit writes a valid model that survives a JSON round trip; tag labels new documents', () => {
    const { model, tags } = fitDomainModel(fitDocs, labels, { anchors: 30, seed: 2 });
    assert.equal(tags.length, 120);
    assert.equal(model.labelled.length, 24);
    const again = parseDomainModel(JSON.parse(JSON.stringify(model)));
    const out = tagDocuments(again, newDocs.map((d) => ({ text: d.text })));
    assert.equal(out.length, newDocs.length);
    let ok = 0;
    out.forEach((t, k) => {
      assert.ok(t.probability > 0 && t.probability <= 1);
      assert.ok(Math.abs(Object.values(t.probabilities).reduce((a, b) => a + b, 0) - 1) < 1e-9);
      if (t.domain === newDocs[k].domain) ok++;
    });
    assert.ok(ok / out.length >= 0.75, `tag accuracy ${ok / out.length}`);
  });

  it('refuses a label that points at no document, and a file that is not a model', () => {
    assert.throws(() => fitDomainModel(fitDocs, [{ index: 500, domain: 'x' }, { index: 1, domain: 'y' }]), (e: unknown) => e instanceof DataError && /refers to no document/.test(e.message));
    assert.throws(() => parseDomainModel({ format: 'other' }, 'm.json'), (e: unknown) => e instanceof DataError && /m\.json/.test(e.message));
  });

  it('the CLI module is a yargs command "domains <command>" that runs fit then tag on files', async () => {
    assert.equal(command.command, 'domains <command>');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-domains-'));
    const data = path.join(dir, 'docs.jsonl');
    fs.writeFileSync(data, fitDocs.map((d) => JSON.stringify(d)).join('\n'));
    fs.writeFileSync(path.join(dir, 'labels.jsonl'), labels.map((l) => JSON.stringify(l)).join('\n'));
    fs.writeFileSync(path.join(dir, 'new.jsonl'), newDocs.slice(0, 10).map((d, i) => JSON.stringify({ id: i, text: d.text })).join('\n'));
    const yargs = (await import('yargs')).default;
    const run = (args: string[]) => yargs(args).command(command).strict().fail((msg, err) => { throw err ?? new Error(msg); }).parseAsync();
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = (() => true) as typeof process.stdout.write;
    const writeErr = process.stderr.write.bind(process.stderr);
    process.stderr.write = (() => true) as typeof process.stderr.write;
    try {
      await run(['domains', 'fit', '--data', data, '--labels', path.join(dir, 'labels.jsonl'), '--out', path.join(dir, 'model.json'), '--anchors', '30', '--seed', '2']);
      await run(['domains', 'tag', '--model', path.join(dir, 'model.json'), '--data', path.join(dir, 'new.jsonl'), '--out', path.join(dir, 'tags.jsonl')]);
    } finally {
      process.stdout.write = write;
      process.stderr.write = writeErr;
    }
    const lines = fs.readFileSync(path.join(dir, 'tags.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: number; domain: string; probability: number });
    assert.equal(lines.length, 10);
    assert.deepEqual(lines.map((l) => l.id), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for (const l of lines) assert.ok(['prose', 'speeches', 'code'].includes(l.domain) && l.probability > 0);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
