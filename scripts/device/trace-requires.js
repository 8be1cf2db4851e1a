// Preloaded (node -r) by pack.sh: on exit, appends every file Node loaded through require
// (the project's dist and node_modules, native addons included) to $MOECAT_TRACE_OUT.
const fs = require('fs');
process.on('exit', () => {
  fs.appendFileSync(process.env.MOECAT_TRACE_OUT, Object.keys(require.cache).join('\n') + '\n');
});
