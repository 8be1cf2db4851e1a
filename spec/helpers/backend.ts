/**
 * The compute backend the tests run on: env MOECAT_TEST_BACKEND (wasm, cpu, ...), default wasm.
 * `withBackend` runs a block on another backend and switches back, so a spec that compares
 * backends leaves the next spec on the backend it expects.
 */
import { BackendName, BackendInfo, selectBackend } from '../../core/backend';

export function testBackendName(): BackendName {
  return (process.env.MOECAT_TEST_BACKEND as BackendName | undefined) ?? 'wasm';
}

export function useTestBackend(): Promise<BackendInfo> {
  return selectBackend(testBackendName());
}

export async function withBackend<T>(name: BackendName, fn: () => T | Promise<T>): Promise<T> {
  await selectBackend(name);
  try {
    return await fn();
  } finally {
    await useTestBackend();
  }
}
