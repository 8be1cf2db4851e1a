/**
 * The Kubernetes indexed-Job manifest that the project ships, checked against the batch/v1 Job
 * and v1 Service JSON schemas (kubeconform-style, no cluster), and against what moecat itself
 * reads from a Job's pods (parallel/env.ts): a broken copy must be refused with the field named.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import YAML from 'yaml';
import { discoverEnv } from '../../parallel/env';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const MANIFEST = path.join(ROOT, 'scripts', 'cluster', 'moecat-job.yaml');
const VALIDATE = path.join(ROOT, 'scripts', 'cluster', 'validate-k8s.mjs');

function validate(file: string) {
  const r = spawnSync(process.execPath, [VALIDATE, file], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

/** A parsed manifest document: free-form YAML, checked by the schemas, not by TypeScript. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the test walks parsed YAML of any shape
type Doc = any;

describe('Kubernetes indexed Job manifest (scripts/cluster/moecat-job.yaml)', function () {
  this.timeout(60_000);
  let tmp: string;
  let docs: Doc[];
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-k8s-'));
    docs = YAML.parseAllDocuments(fs.readFileSync(MANIFEST, 'utf8')).map((d) => d.toJS());
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  function broken(name: string, edit: (job: Doc, svc: Doc) => void): string {
    const copy = structuredClone(docs);
    edit(copy.find((d: Doc) => d.kind === 'Job'), copy.find((d: Doc) => d.kind === 'Service'));
    const file = path.join(tmp, `${name}.yaml`);
    fs.writeFileSync(file, copy.map((d: Doc) => YAML.stringify(d)).join('---\n'));
    return file;
  }

  it('validates against the batch/v1 Job and v1 Service schemas', () => {
    const r = validate(MANIFEST);
    assert.equal(r.status, 0, r.err);
    assert.match(r.out, /^ok Service moecat \(v1\)$/m);
    assert.match(r.out, /^ok Job moecat \(batch\/v1\)$/m);
  });

  it('refuses schema violations with the field named, one line each, exit 2', () => {
    const cases: [string, (job: Doc, svc: Doc) => void, RegExp][] = [
      ['mode', (job) => (job.spec.completionMode = 'Indexd'), /Job moecat\): .*spec\/completionMode must be equal to one of the allowed values/],
      ['envtype', (job) => (job.spec.template.spec.containers[0].env[0].value = 2), /containers\/0\/env\/0\/value must be string/],
      ['nocontainers', (job) => delete job.spec.template.spec.containers, /must have required property 'containers'|required property containers/],
      ['port', (_job, svc) => (svc.spec.ports[0].port = 'rendezvous'), /Service moecat\): .*ports\/0\/port must be integer/],
    ];
    for (const [name, edit, want] of cases) {
      const r = validate(broken(name, edit));
      assert.equal(r.status, 2, `${name}: ${r.out}${r.err}`);
      assert.match(r.err, want, name);
      assert.match(r.err, /^error: .*\(fix the manifest\)$/m, name);
    }
  });

  it('refuses a kind it has no schema for instead of passing it unchecked', () => {
    const r = validate(broken('kind', (job) => (job.apiVersion = 'batch/v2')));
    assert.equal(r.status, 2);
    assert.match(r.err, /no schema here for apiVersion batch\/v2 kind Job/);
  });

  it('gives each pod the rank, world size and master that moecat reads (parallel/env.ts)', () => {
    const job = docs.find((d: Doc) => d.kind === 'Job');
    const svc = docs.find((d: Doc) => d.kind === 'Service');
    const env: Record<string, string> = Object.fromEntries(
      job.spec.template.spec.containers[0].env.filter((e: Doc) => 'value' in e).map((e: Doc) => [e.name, e.value]),
    );
    assert.equal(Number(env.WORLD_SIZE), job.spec.completions, 'WORLD_SIZE must equal completions');
    assert.equal(job.spec.parallelism, job.spec.completions, 'all ranks must run at once');
    // Index 0's stable name is <job>-0.<subdomain>, and the headless Service must carry the subdomain.
    assert.equal(env.MASTER_ADDR, `${job.metadata.name}-0.${job.spec.template.spec.subdomain}`);
    assert.equal(svc.metadata.name, job.spec.template.spec.subdomain);
    assert.equal(svc.spec.clusterIP, 'None');
    assert.equal(svc.spec.ports[0].port, Number(env.MASTER_PORT));
    for (let i = 0; i < job.spec.completions; i++) {
      const e = discoverEnv({ ...env, MOECAT_SECRET: 's', JOB_COMPLETION_INDEX: String(i) });
      assert.deepEqual([e.source, e.rank, e.worldSize, e.masterAddr, e.masterPort], ['kubernetes', i, 2, 'moecat-0.moecat', 29500]);
    }
    assert.ok(job.spec.template.spec.containers[0].command.includes('--auto-resume'), 'restarted pods must resume');
  });
});
