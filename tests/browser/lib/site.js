// A clinic's own web site on its own loopback origin, for the tests of what integrators
// build: pages given as text, and the SDK's files copied from web-client/sdk/ (as a clinic
// copies the folder onto its site: the SDK has no build step and no dependency).

import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { dirname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const SDK_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../../web-client/sdk');

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.ts': 'text/plain; charset=utf-8' };

/** Serves `pages` ({path: html}) and /sdk/* on 127.0.0.1; resolves to {origin, close}. */
export async function startSite(pages = {}) {
  const server = http.createServer(async (req, res) => {
    const path = new URL(req.url, 'http://site').pathname;
    try {
      if (path in pages) return send(res, 200, TYPES['.html'], pages[path]);
      if (path.startsWith('/sdk/')) {
        const file = normalize(join(SDK_DIR, path.slice('/sdk/'.length)));
        if (!file.startsWith(SDK_DIR)) return send(res, 404, 'text/plain', 'not found');
        return send(res, 200, TYPES[file.slice(file.lastIndexOf('.'))] ?? 'application/octet-stream', await readFile(file));
      }
      send(res, 404, 'text/plain', 'not found');
    } catch {
      send(res, 404, 'text/plain', 'not found');
    }
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', done));
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((done) => server.close(done)),
  };
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}
