/**
 * `--kv a2ats --kv-ratio r` for serve/generate: validates the flags and loads the codebooks
 * that calibration wrote beside the checkpoint, with the key mode (meta `keys`; absent: wrope)
 * and the WRoPE b they were calibrated for.
 */
import * as path from 'path';
import { CheckpointError, ConfigError } from '../../core/errors';
import { A2ATSOptions, DEFAULT_A2ATS, KEY_MODES, KeyMode } from './attention';
import { A2ATS_FILE, loadCodebooks } from './calibrate';
import { Codebook } from './quantizer';

export type KvMode = 'full' | 'a2ats';
export const KV_MODES: readonly KvMode[] = ['full', 'a2ats'];

export interface A2ATSServing {
  codebooks: Map<string, Codebook>;
  opts: A2ATSOptions;
}

/** null for `--kv full`; the codebooks and options for `--kv a2ats`. Errors name the flag. */
export function loadKvMode(checkpoint: string, kv: string, ratio: number, extra: Partial<Pick<A2ATSOptions, 'window' | 'sinks'>> = {}): A2ATSServing | null {
  if (!KV_MODES.includes(kv as KvMode)) throw new ConfigError(`--kv must be one of ${KV_MODES.join(', ')}, got '${kv}'`, { where: '--kv' });
  if (kv === 'full') return null;
  if (!(ratio > 0 && ratio <= 1)) throw new ConfigError(`--kv-ratio must be in (0, 1], got ${ratio}`, { where: '--kv-ratio' });
  const loaded = loadCodebooks(checkpoint);
  if (!loaded || loaded.codebooks.size === 0) {
    throw new ConfigError(`the checkpoint has no ${A2ATS_FILE}`, { where: '--kv', hint: `run \`moecat calibrate --method a2ats --checkpoint ${checkpoint}\` first` });
  }
  const keys = (loaded.meta.keys ?? 'wrope') as KeyMode;
  if (!KEY_MODES.includes(keys)) {
    throw new CheckpointError(`unknown key mode '${keys}' in the codebook metadata (known: ${KEY_MODES.join(', ')})`, { where: path.join(checkpoint, A2ATS_FILE), hint: 'rerun calibration' });
  }
  const b = Number(loaded.meta.b ?? DEFAULT_A2ATS.b);
  return { codebooks: loaded.codebooks, opts: { ...DEFAULT_A2ATS, ...extra, b, ratio, keys } };
}
