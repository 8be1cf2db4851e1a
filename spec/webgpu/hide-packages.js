// Preloaded by selection.spec (node -r): makes the optional webgpu packages unresolvable, as on
// an install where they are absent.
const Module = require('module');
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request === 'webgpu' || request.startsWith('@tensorflow/tfjs-backend-webgpu')) {
    const e = new Error(`Cannot find module '${request}'`);
    e.code = 'MODULE_NOT_FOUND';
    throw e;
  }
  return resolve.call(this, request, ...rest);
};
