/** The webgpu benches' start: select the backend and report the adapter, or report that there is none. */
import { selectBackend } from '../../core/backend';
import { describeAdapter } from '../../core/webgpu';
import { emit } from './args';

/** True with webgpu selected and an `adapter` row written; false (a row saying why) without one. */
export async function selectWebgpuOrReport(): Promise<boolean> {
  let info;
  try {
    info = await selectBackend('webgpu');
  } catch (e) {
    emit({ bench: 'adapter', adapter: 'none', note: String((e as Error).message).split('\n')[0] });
    return false;
  }
  emit({ bench: 'adapter', adapter: describeAdapter(info.adapter!) });
  return true;
}
