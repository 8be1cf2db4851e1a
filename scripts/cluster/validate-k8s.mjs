#!/usr/bin/env node
// Validates Kubernetes manifests (multi-document YAML) against the JSON schemas of the
// Kubernetes API (the kubernetes-models package ships them, generated from the OpenAPI spec),
// the way kubeconform would, without a cluster:
//
//   node scripts/cluster/validate-k8s.mjs scripts/cluster/moecat-job.yaml
//
// Prints one `ok KIND NAME (apiVersion)` line per document, or one
// `error: FILE: document N (KIND NAME): what` line per broken document and exits 2.
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';

// The kinds the project ships; another kind is refused rather than passed unchecked.
const MODELS = {
  'batch/v1 Job': () => import('kubernetes-models/batch/v1/Job').then((m) => m.Job),
  'v1 Service': () => import('kubernetes-models/v1/Service').then((m) => m.Service),
};

async function main(files) {
  if (files.length === 0) {
    console.error('error: validate-k8s: no manifest given (node scripts/cluster/validate-k8s.mjs FILE.yaml...)');
    return 2;
  }
  let bad = 0;
  for (const file of files) {
    let docs;
    try {
      docs = parseAllDocuments(readFileSync(file, 'utf8'));
    } catch (e) {
      console.error(`error: ${file}: ${e.message} (give a readable YAML file)`);
      bad++;
      continue;
    }
    docs.forEach((doc, i) => {
      if (doc.errors.length > 0) throw Object.assign(new Error(doc.errors[0].message.split('\n')[0]), { where: `${file}: document ${i + 1}` });
    });
    for (const [i, doc] of docs.entries()) {
      const obj = doc.toJS();
      const where = `${file}: document ${i + 1} (${obj?.kind ?? '?'} ${obj?.metadata?.name ?? '?'})`;
      const load = obj && MODELS[`${obj.apiVersion} ${obj.kind}`];
      if (!load) {
        console.error(`error: ${where}: no schema here for apiVersion ${obj?.apiVersion} kind ${obj?.kind} (known: ${Object.keys(MODELS).join(', ')})`);
        bad++;
        continue;
      }
      const Model = await load();
      try {
        new Model(obj).validate();
        console.log(`ok ${obj.kind} ${obj.metadata?.name} (${obj.apiVersion})`);
      } catch (e) {
        console.error(`error: ${where}: ${e.message} (fix the manifest)`);
        bad++;
      }
    }
  }
  return bad === 0 ? 0 : 2;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(`error: ${e.where ?? 'validate-k8s'}: ${e.message} (fix the YAML)`);
    process.exit(2);
  },
);
