/**
 * The webgpu specs run where Dawn finds an adapter: a GPU, or the software Vulkan driver that
 * scripts/webgpu/software-adapter.sh installs and selects (VK_ICD_FILENAMES). Elsewhere they
 * skip, saying why, once.
 */
import { selectBackend, BackendInfo } from '../../core/backend';
import { errorMessage } from '../../core/errors';

let probed: { info?: BackendInfo; reason?: string } | null = null;
let said = false;

export async function webgpuOrSkip(ctx: Mocha.Context): Promise<BackendInfo> {
  if (!probed) {
    try {
      probed = { info: await selectBackend('webgpu') };
    } catch (e) {
      probed = { reason: errorMessage(e).split('\n')[0] };
    }
  }
  if (!probed.info) {
    if (!said) {
      said = true;
      console.log(`    (webgpu specs skipped: ${probed.reason}; run: eval "$(scripts/webgpu/software-adapter.sh)")`);
    }
    ctx.skip();
  }
  return selectBackend('webgpu');
}

/** The node and env to run the CLI with the webgpu backend. */
export function webgpuEnv(): NodeJS.ProcessEnv {
  return { ...process.env, MOECAT_BACKEND: 'webgpu' };
}
