/**
 * The few WebGPU shapes moecat touches, declared here so the project compiles where the
 * optional packages (`webgpu`, `@tensorflow/tfjs-backend-webgpu`, `@webgpu/types`) are absent.
 */
export interface GpuAdapterInfo {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  isFallbackAdapter?: boolean;
}

export interface GpuLimits {
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupsPerDimension: number;
  maxComputeWorkgroupSizeX: number;
  maxStorageBuffersPerShaderStage: number;
}

export interface GpuBuffer {
  size: number;
  mapState: 'unmapped' | 'pending' | 'mapped';
  mapAsync(mode: number, offset?: number, size?: number): Promise<void>;
  getMappedRange(offset?: number, size?: number): ArrayBuffer;
  unmap(): void;
  destroy(): void;
}

export interface GpuCommandEncoder {
  copyBufferToBuffer(src: GpuBuffer, srcOffset: number, dst: GpuBuffer, dstOffset: number, size: number): void;
  finish(): unknown;
}

export interface GpuDevice {
  createBuffer(desc: { size: number; usage: number; mappedAtCreation?: boolean }): GpuBuffer;
  createCommandEncoder(): GpuCommandEncoder;
  queue: { submit(cmds: unknown[]): void; writeBuffer(b: GpuBuffer, offset: number, data: ArrayBufferView): void };
  features: { has(name: string): boolean };
  lost: Promise<unknown>;
  destroy(): void;
}

export interface GpuAdapter {
  info?: GpuAdapterInfo;
  features: { has(name: string): boolean };
  limits: GpuLimits;
  requestDevice(desc?: Record<string, unknown>): Promise<GpuDevice>;
}

export interface Gpu {
  requestAdapter(opts?: { powerPreference?: 'high-performance' | 'low-power'; forceFallbackAdapter?: boolean }): Promise<GpuAdapter | null>;
}

/** Buffer usage and map-mode bits (WebGPU spec values). */
export const BufferUsage = { MAP_READ: 0x0001, COPY_SRC: 0x0004, COPY_DST: 0x0008, STORAGE: 0x0080 } as const;
export const MapMode = { READ: 0x0001 } as const;
