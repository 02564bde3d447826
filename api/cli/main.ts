// `sched` process entry point (bin/sched.mjs runs it): the real terminal, environment and files.
import fs from 'node:fs';
import { runCli } from './program';

function readFile(path: string): string | undefined {
  try {
    return fs.readFileSync(path === '-' ? 0 : path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

void runCli(process.argv.slice(2), {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  env: process.env,
  readFile,
  now: () => new Date(),
}).then((code) => {
  process.exitCode = code;
});
