/** Small pieces every bench script uses: `--name value` arguments, medians, one JSON row per line. */

/** The value after `--name` on the command line, else `dflt`. */
export function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : dflt;
}

/** The upper median (the middle element of the sorted copy). */
export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** One result row on stdout (bench-results/*.jsonl). */
export const emit = (row: Record<string, unknown>): void => {
  process.stdout.write(JSON.stringify(row) + '\n');
};
