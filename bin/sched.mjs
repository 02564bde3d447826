#!/usr/bin/env node
// The `sched` command (package.json "bin"): registers tsx so the CLI's TypeScript runs as it is in
// the repository (no build step), then runs api/cli/main.ts.
import { register as registerEsm } from 'tsx/esm/api';
import { register as registerCjs } from 'tsx/cjs/api';

registerCjs();
registerEsm();
await import('../api/cli/main.ts');
