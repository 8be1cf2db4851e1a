import assert from 'assert';
import fs from 'fs';
import path from 'path';
import { spawnSync } from 'child_process';
import { prepareCorpus } from '../../data/prepare';
import { readManifest, MANIFEST_FILE } from '../../data/manifest';
import { loadPrepared } from '../../data/prepared';
import { Tokenizer } from '../../data/tokenizer';
import { DataError } from '../../core/errors';
import { writeBundledCorpora, BUNDLED_EXTS } from '../../scripts/corpus/bundled';
import { preparedFixture, tmpDir } from './fixture';

describe('data/prepare: text, directories and JSONL -> Arrow shards + manifest', () => {
  let work: string;
  let tok: Tokenizer;
  before(async () => {
    work = tmpDir('prep');
    const fx = await preparedFixture();
    tok = Tokenizer.fromJSON(fx.data.tokenizerJson);
  });
  after(() => fs.rmSync(work, { recursive: true, force: true }));

  it('prepares the bundled corpora into per-source shards whose documents decode to the inputs', async () => {
    const fx = await preparedFixture();
    assert.deepStrictEqual(Object.keys(fx.manifest.sources), ['prose', 'speeches', 'code']);
    for (const raw of fx.raw) {
      const s = fx.manifest.sources[raw.name];
      assert.strictEqual(s.documents, raw.documents, raw.name);
      assert.strictEqual(s.bytes, raw.bytes, raw.name);
      assert.ok(s.shards.length >= 2, `${raw.name} has ${s.shards.length} shard(s)`);
      assert.strictEqual(s.shards.reduce((a, sh) => a + sh.rows, 0), s.documents);
      assert.ok(s.shards.every((sh, i) => sh.file === `${raw.name}/shard-${String(i).padStart(5, '0')}.arrow`));
    }
    // First prose chapter and first speech decode back to their exact text.
    const prose = fx.data.sources.get('prose')!;
    const ch0 = fs.readFileSync(path.join(fx.raw[0].path, 'chapter-000.txt'), 'utf8');
    assert.strictEqual(tok.decode(Array.from(prose.tokens.subarray(prose.docOffsets[0], prose.docOffsets[1]))), ch0);
    const sp = fx.data.sources.get('speeches')!;
    const first = JSON.parse(fs.readFileSync(fx.raw[1].path, 'utf8').split('\n')[0]).text;
    assert.strictEqual(tok.decode(Array.from(sp.tokens.subarray(sp.docOffsets[0], sp.docOffsets[1]))), first);
    assert.strictEqual(fx.manifest.tokenizer.sha256, tok.hash());
    assert.strictEqual(fx.manifest.tokenizer.vocabSize, 1024);
  });

  it('is reproducible: the same inputs and tokenizer give byte-identical shards', async () => {
    const fx = await preparedFixture();
    const out = path.join(work, 'again');
    const m = await prepareCorpus({ sources: fx.raw.map((s) => ({ name: s.name, path: s.path })), outDir: out, tokenizer: path.join(fx.prepared, 'tokenizer.json'), exts: BUNDLED_EXTS, shardTokens: 20_000 });
    const shas = (mm: typeof m) => Object.values(mm.sources).flatMap((s) => s.shards.map((sh) => sh.sha256));
    assert.deepStrictEqual(shas(m), shas(fx.manifest));
    assert.strictEqual(m.tokenizer.trained, false);
  });

  it('skips empty, binary, invalid-JSON and missing-field documents and reports exact counts', async () => {
    const src = path.join(work, 'bad');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'good.txt'), 'Call me Ishmael. Some years ago, never mind how long precisely.');
    fs.writeFileSync(path.join(src, 'empty.txt'), '  \n\n ');
    fs.writeFileSync(path.join(src, 'image.txt'), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x00, 0x00, 0x1a, 0x0a, 0xff, 0xd8]));
    const lines = [
      JSON.stringify({ text: 'The whale surfaced.' }),
      '{"text": "unterminated',
      'not json at all',
      JSON.stringify({ body: 'wrong field' }),
      JSON.stringify({ text: 42 }),
      '',
      JSON.stringify({ text: '' }),
      JSON.stringify({ text: 'Another good line.' }),
    ];
    fs.writeFileSync(path.join(src, 'records.jsonl'), lines.join('\n') + '\n');
    const log: string[] = [];
    const m = await prepareCorpus({ sources: [{ name: 'mixed', path: src }], outDir: path.join(work, 'bad-out'), tokenizer: tok, onLog: (l) => log.push(l) });
    assert.deepStrictEqual(m.sources.mixed.skipped, { empty: 2, binary: 1, invalid_json: 2, missing_field: 2 });
    assert.deepStrictEqual(m.skipped, { empty: 2, binary: 1, invalid_json: 2, missing_field: 2 });
    assert.strictEqual(m.sources.mixed.documents, 3);
    const summary = log.find((l) => l.startsWith('source mixed: skipped 7'));
    assert.ok(summary, log.join('\n'));
    assert.match(summary!, /empty 2, binary 1, invalid JSON 2, missing field 2/);
    assert.match(summary!, /records\.jsonl:\d+/);
  });

  it('refuses a source that ends up with no documents, naming the source and the skip counts', async () => {
    const src = path.join(work, 'allbad.jsonl');
    fs.writeFileSync(src, '{oops\n{"title":"no text"}\n');
    await assert.rejects(
      prepareCorpus({ sources: [{ name: 'broken', path: src }], outDir: path.join(work, 'allbad-out'), tokenizer: tok }),
      (e: unknown) => e instanceof DataError && /source "broken" has no usable documents/.test(e.message) && /invalid JSON 1, missing field 1/.test(e.message),
    );
    assert.ok(!fs.existsSync(path.join(work, 'allbad-out')));
  });

  it('refuses a shard whose checksum does not match the manifest, naming the shard', async () => {
    const fx = await preparedFixture();
    const copy = path.join(work, 'corrupt');
    fs.cpSync(fx.prepared, copy, { recursive: true });
    const shard = path.join(copy, 'speeches', 'shard-00001.arrow');
    const buf = fs.readFileSync(shard);
    buf[buf.length >> 1] ^= 0xff;
    fs.writeFileSync(shard, buf);
    assert.throws(() => loadPrepared(copy), (e: unknown) => e instanceof DataError && /shard speeches\/shard-00001\.arrow fails its checksum/.test(e.message));
    // Sources that do not read the bad shard still load.
    assert.strictEqual(loadPrepared(copy, ['prose']).sources.get('prose')!.documents, fx.manifest.sources.prose.documents);
  });

  it('leaves no output (and no manifest) when prepare fails mid-way', async () => {
    const fx = await preparedFixture();
    const out = path.join(work, 'interrupted');
    let shards = 0;
    await assert.rejects(
      prepareCorpus({
        sources: fx.raw.map((s) => ({ name: s.name, path: s.path })),
        outDir: out,
        tokenizer: tok,
        exts: BUNDLED_EXTS,
        shardTokens: 20_000,
        afterShard: () => {
          if (++shards === 3) throw new Error('simulated crash');
        },
      }),
      /simulated crash/,
    );
    assert.ok(!fs.existsSync(out));
    assert.deepStrictEqual(fs.readdirSync(work).filter((n) => n.startsWith('interrupted')), []);
  });

  it('a prepare killed mid-way leaves no manifest; the next run clears its temp dir and succeeds', async () => {
    const fx = await preparedFixture();
    const out = path.join(work, 'killed');
    const prepareJs = path.join(__dirname, '..', '..', 'data', 'prepare');
    const args = { sources: fx.raw.map((s) => ({ name: s.name, path: s.path })), outDir: out, tokenizer: path.join(fx.prepared, 'tokenizer.json'), exts: BUNDLED_EXTS, shardTokens: 20_000 };
    const code = `const o=${JSON.stringify(args)};let n=0;o.afterShard=()=>{if(++n===4)process.kill(process.pid,'SIGKILL')};require(${JSON.stringify(prepareJs)}).prepareCorpus(o)`;
    const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8' });
    assert.strictEqual(r.signal, 'SIGKILL', r.stderr);
    assert.ok(!fs.existsSync(path.join(out, MANIFEST_FILE)));
    const leftovers = fs.readdirSync(work).filter((n) => n.startsWith('killed.tmp-'));
    assert.strictEqual(leftovers.length, 1, 'the killed run left its temp dir');
    assert.ok(!fs.existsSync(path.join(work, leftovers[0], MANIFEST_FILE)));
    assert.throws(() => readManifest(out), DataError);
    const log: string[] = [];
    await prepareCorpus({ ...args, onLog: (l) => log.push(l) });
    assert.ok(log.some((l) => l.includes(`removed ${leftovers[0]}`)), log.join('\n'));
    assert.deepStrictEqual(fs.readdirSync(work).filter((n) => n.startsWith('killed.tmp-')), []);
    assert.strictEqual(readManifest(out).totals.documents, fx.manifest.totals.documents);
  });

  it('refuses to overwrite an existing output unless asked, and replaces it atomically when asked', async () => {
    const src = path.join(work, 'tiny.txt');
    fs.writeFileSync(src, 'A small document about whales.');
    const out = path.join(work, 'exists');
    await prepareCorpus({ sources: [{ name: 'tiny', path: src }], outDir: out, tokenizer: tok });
    await assert.rejects(prepareCorpus({ sources: [{ name: 'tiny', path: src }], outDir: out, tokenizer: tok }), /already exists/);
    fs.writeFileSync(src, 'A different small document about ships.');
    const m = await prepareCorpus({ sources: [{ name: 'tiny', path: src }], outDir: out, tokenizer: tok, overwrite: true });
    assert.strictEqual(readManifest(out).sources.tiny.shards[0].sha256, m.sources.tiny.shards[0].sha256);
  });

  it('trains a tokenizer on a bounded sample when none is given and stores it with the shards', async () => {
    const raw = writeBundledCorpora(path.join(work, 'raw-small'), { maxBytesPerSource: 30_000, sources: ['prose', 'code'] });
    const out = path.join(work, 'trained');
    const m = await prepareCorpus({ sources: raw.map((s) => ({ name: s.name, path: s.path })), outDir: out, vocabSize: 400, exts: BUNDLED_EXTS, trainSampleBytes: 20_000 });
    assert.strictEqual(m.tokenizer.trained, true);
    const t = Tokenizer.load(path.join(out, 'tokenizer.json'));
    assert.strictEqual(t.hash(), m.tokenizer.sha256);
    assert.strictEqual(t.vocabSize, 400);
  });
});
