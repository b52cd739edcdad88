#!/usr/bin/env node
// Entry point of the `seal` CLI. In a source checkout (lib/ present) the TypeScript sources run
// through tsx, so `npm ci && npx seal …` works without a build step; a published package runs dist/.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const source = `${root}lib/cli/main.ts`;
if (existsSync(source)) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(pathToFileURL(source).href);
} else {
  await import(pathToFileURL(`${root}dist/cli/main.js`).href);
}
