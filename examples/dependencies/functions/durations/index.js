// durations: parses a duration with `ms` ("2h" -> 7200000).
// `ms` is not on the device: it comes from the function's dependency layer (package-lock.json),
// which edgefn installs with `npm ci`, packs apart from this code, and puts on NODE_PATH.
const ms = require('ms');

exports.handle = async (event) => ({
  ms: ms(String((event.payload && event.payload.duration) || '1m')),
  version: require('ms/package.json').version,
});
