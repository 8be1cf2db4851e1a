#!/usr/bin/env node
/** The `moecat` command: one module per subcommand, registered here. */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import type { CommandModule } from 'yargs';

// Subcommands load lazily so `moecat --help` stays fast and one broken module can't block others.
const modules = ['train', 'generate', 'prepare', 'tokenizer', 'serve', 'launch', 'audit', 'verify', 'report', 'curve', 'domains', 'sweep', 'transfer', 'grow', 'calibrate'];

function load(name: string): CommandModule | null {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require(`./${name}`) as { command: CommandModule }).command;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' && String((e as Error).message).includes(`./${name}`)) return null;
    throw e;
  }
}

let y = yargs(hideBin(process.argv)).scriptName('moecat').strict().demandCommand(1, 'give a command; see moecat --help').recommendCommands();
for (const m of modules) {
  const cmd = load(m);
  if (cmd) y = y.command(cmd);
}
void y.help().wrap(Math.min(110, process.stdout.columns ?? 100)).parseAsync();
