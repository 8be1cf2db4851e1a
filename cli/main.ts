#!/usr/bin/env node
/** The `moecat` command: one module per subcommand, registered here. */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import type { CommandModule } from 'yargs';
import { editDistance } from '../core/editDistance';

// Subcommands load lazily so `moecat --help` stays fast and one broken module can't block others.
const modules = ['train', 'generate', 'prepare', 'tokenizer', 'serve', 'launch', 'audit', 'verify', 'report', 'curve', 'domains', 'sweep', 'transfer', 'grow', 'calibrate', 'export', 'import'];

function load(name: string): CommandModule | null {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require(`./${name}`) as { command: CommandModule }).command;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' && String((e as Error).message).includes(`./${name}`)) return null;
    throw e;
  }
}

const argv = hideBin(process.argv);
const names: string[] = [];
let y = yargs(argv).scriptName('moecat').strict().demandCommand(1, 'give a command').recommendCommands();
for (const m of modules) {
  const cmd = load(m);
  if (cmd) {
    y = y.command(cmd);
    names.push(String(cmd.command).split(' ')[0]);
  }
}

/** The closest command name to a mistyped one (edit distance <= 2), if any. */
function nearest(word: string): string | null {
  let best: string | null = null;
  let bestD = 3;
  for (const n of names) {
    const d = editDistance(word, n);
    if (d < bestD) [best, bestD] = [n, d];
  }
  return best;
}

y = y
  .example('$0 train --config configs/tiny.yaml --out runs/tiny', 'train the tiny model (configs/ holds tiny, small, sft, midtrain, longctx)')
  .example('$0 generate --checkpoint runs/tiny --prompt "Once upon"', 'sample text from the latest checkpoint of a run')
  .example('$0 serve --checkpoint runs/tiny --port 8080', 'serve it over the OpenAI HTTP API')
  .example('$0 audit runs/tiny', 'recompute the run and compare it bit for bit with what it recorded')
  .epilogue('New here? `npm run demo` prepares bundled real text, trains configs/tiny.yaml into runs/demo and generates from it (README.md, "Two commands on a fresh machine"). `moecat <command> --help` lists a command\'s flags.')
  // Parser errors (unknown command or flag, a missing required flag): one line, exit 2, no help dump.
  .fail((msg, err) => {
    if (err) throw err;
    const cmd = argv.find((x) => !x.startsWith('-'));
    const known = cmd !== undefined && names.includes(cmd);
    let text = msg ?? 'invalid arguments';
    let hint = known ? `see moecat ${cmd} --help` : 'see moecat --help';
    if (cmd !== undefined && !known) {
      const near = nearest(cmd);
      text = `unknown command '${cmd}'`;
      if (near) hint = `did you mean ${near}? ${hint}`;
    }
    process.stderr.write(`error: ${known ? `moecat ${cmd}` : 'moecat'}: ${text.replace(/\s*\n\s*/g, '; ')} (${hint})\n`);
    process.exit(2);
  });
void y.help().wrap(Math.min(110, process.stdout.columns ?? 100)).parseAsync();
