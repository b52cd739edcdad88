#!/usr/bin/env node
// Builds the native addon at install time, offline.
//   default            node-gyp (bundled with npm) -> build/Release/sealkit.node (CPU backend)
//   SEALKIT_CUDA=1 / --cuda   cmake-js with -DSEALKIT_CUDA=ON (CPU + CUDA backends)
//   --force            rebuild even if a binary already loads
// Node's headers come from the local Node installation (--nodedir), so nothing is downloaded.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const force = args.includes('--force');
const cuda = args.includes('--cuda') || process.env.SEALKIT_CUDA === '1';
const nodedir = path.resolve(path.dirname(process.execPath), '..');

function run(cmd, cmdArgs) {
  console.error(`[sealkit] ${cmd} ${cmdArgs.join(' ')}`);
  const r = spawnSync(cmd, cmdArgs, { cwd: root, stdio: 'inherit', env: process.env });
  if (r.error) throw r.error;
  if (r.status !== 0) {
    console.error(`[sealkit] native build failed (exit ${r.status}). Needs g++ (C++17), make and python3.`);
    process.exit(r.status ?? 1);
  }
}

function nodeGypScript() {
  // npm exports the path of its bundled node-gyp to scripts; fall back to the usual location.
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ].filter(Boolean);
  for (const c of candidates) if (fs.existsSync(c)) return c;
  throw new Error('cannot find node-gyp (it ships with npm); run the build through `npm run build:native`');
}

if (!force && !cuda) {
  try {
    require('node-gyp-build').path(root);
    console.error('[sealkit] native addon already built; skipping (npm run build:native rebuilds)');
    process.exit(0);
  } catch {
    // not built yet
  }
}

if (cuda) {
  const cmakeJs = path.join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
  if (!fs.existsSync(cmakeJs)) {
    console.error('[sealkit] the CUDA build needs cmake-js (a devDependency): run `npm ci` first');
    process.exit(1);
  }
  run(process.execPath, [cmakeJs, 'compile', '--CDSEALKIT_CUDA=ON', '--out', 'build']);
} else {
  const jobs = String(Math.max(1, require('node:os').availableParallelism?.() ?? 2));
  run(process.execPath, [nodeGypScript(), 'rebuild', `--nodedir=${nodedir}`, `--jobs=${jobs}`]);
}
