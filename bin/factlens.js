#!/usr/bin/env node
// Launcher for the `factlens` command: runs the engine bundle built by `npm run build`.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { requireWithCodeCache } = require('./code-cache.js');

const bundle = path.join(__dirname, '..', 'dist', 'engine', 'cli.js');
if (!fs.existsSync(bundle)) {
  process.stderr.write(`factlens: ${path.relative(process.cwd(), bundle) || bundle} is missing; run npm run build first\n`);
  process.exit(1);
}
requireWithCodeCache(bundle).cli();
