// Command-line flags of the bench's helper processes: `--name value`.

const argv = process.argv.slice(2);

/** The value after `name`, or `dflt`. */
export function arg(name, dflt) {
  const i = argv.indexOf(name);
  return i === -1 ? dflt : argv[i + 1];
}

export const hasFlag = (name) => argv.includes(name);

/** --target, which must be an http://127.0.0.1:PORT origin; exits 2 with `usage` otherwise. */
export function loopbackTarget(usage) {
  const target = arg('--target');
  if (!target || !/^http:\/\/127\.0\.0\.1:\d+\/?$/.test(target)) {
    process.stderr.write(`usage: ${usage}\n`);
    process.exit(2);
  }
  return target;
}
