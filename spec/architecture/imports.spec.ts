/**
 * The import directions docs/ARCHITECTURE.md's map states: each product folder imports only the
 * folders its row allows (relative imports of the TypeScript sources; cli/, scripts/ and spec/
 * may import any product folder).
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';

const root = path.resolve(__dirname, '..', '..', '..');

/** Folder -> the other product folders it may import. */
const ALLOWED: Record<string, string[]> = {
  core: [],
  model: ['core'],
  data: ['core'],
  analysis: ['core'],
  parallel: ['core', 'model'],
  trainer: ['core', 'model', 'data', 'parallel'],
  inference: ['core', 'model', 'data'],
  cli: ['core', 'model', 'data', 'analysis', 'parallel', 'trainer', 'inference'],
};

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** `import ... from '<rel>'`, `export ... from '<rel>'`, `import('<rel>')` and `require('<rel>')` of relative paths. */
function relativeImports(text: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s+|\bimport\s*\(\s*|\brequire\s*\(\s*|^\s*import\s+)['"](\.{1,2}\/[^'"]*)['"]/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push(m[1]);
  return out;
}

/** Violations in folder `top`: "file -> target folder". */
function violations(top: string): string[] {
  const bad: string[] = [];
  const folders = Object.keys(ALLOWED);
  for (const file of sources(path.join(root, top))) {
    for (const rel of relativeImports(fs.readFileSync(file, 'utf8'))) {
      const target = path.relative(root, path.resolve(path.dirname(file), rel)).split(path.sep)[0];
      if (target === top || !folders.includes(target)) continue;
      if (!ALLOWED[top].includes(target)) bad.push(`${path.relative(root, file)} -> ${target}/`);
    }
  }
  return bad;
}

describe('architecture: import directions', () => {
  it('finds the relative imports of a source text (static, dynamic, require, side-effect)', () => {
    const text = "import { a } from '../core/x';\nexport { b } from './y';\nconst c = await import('../model/z');\nconst d = require('../data/w');\nimport '../trainer/side';\nimport e from 'tfjs';";
    assert.deepEqual(relativeImports(text), ['../core/x', './y', '../model/z', '../data/w', '../trainer/side']);
  });

  for (const top of Object.keys(ALLOWED)) {
    it(`${top}/ imports only ${ALLOWED[top].length ? ALLOWED[top].map((f) => `${f}/`).join(', ') : 'itself'}`, () => {
      assert.ok(fs.existsSync(path.join(root, top)), `${top}/ is missing`);
      assert.deepEqual(violations(top), []);
    });
  }
});
