/** tfjs-backend-webgpu's dispatch-layout helpers, shared by the WGSL programs of core/webgpu. */

export interface WebgpuUtil {
  flatDispatchLayout(shape: number[]): { x: number[] };
  computeDispatch(layout: { x: number[] }, shape: number[], wg: [number, number, number]): [number, number, number];
}
/** Loaded lazily: the package is an optional dependency. */
export function webgpuUtil(): WebgpuUtil {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('@tensorflow/tfjs-backend-webgpu') as { webgpu_util: WebgpuUtil }).webgpu_util;
}
