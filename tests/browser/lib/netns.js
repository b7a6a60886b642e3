// A network of its own for one browser: a Linux network namespace the test creates, joined
// to the host by a veth pair, whose traffic the test can then degrade with an nftables rule
// inside the namespace (random packet loss on UDP, where WebRTC media flows). Nothing on the
// host's own network changes. Needs root, `ip` and `nft` (Debian's iproute2 and nftables;
// CI runs as root); `available()` says whether this machine can.
//
// The browser runs in the namespace through a wrapper executable (`ip netns exec NS
// chromium ...`), which the driver takes as CHROMIUM_PATH.

import { execFile } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export async function available() {
  if (process.getuid?.() !== 0) return false;
  try {
    await run('ip', ['-V']);
    await run('nft', ['--version']);
    return true;
  } catch {
    return false;
  }
}

/** Turns IPv6 off through `path` with `write`; a kernel without IPv6 has nothing to turn off. */
async function noIpv6(path, write) {
  try {
    await write(path);
  } catch (e) {
    if (!/No such file|ENOENT/.test(String(e?.stderr ?? e))) throw e;
  }
}

export class Netns {
  /** `index` picks a /30 of 10.231.x.0 of its own, so two tests never share one. */
  constructor(index = Math.floor(Math.random() * 200) + 1) {
    this.name = `bedside-q${process.pid}-${index}`;
    this.hostVeth = `bq${index}h`;
    this.nsVeth = `bq${index}n`;
    this.hostAddress = `10.231.${index}.1`;
    this.nsAddress = `10.231.${index}.2`;
  }

  async create() {
    const sh = async (...args) => run('ip', args);
    await sh('netns', 'add', this.name);
    await sh('link', 'add', this.hostVeth, 'type', 'veth', 'peer', 'name', this.nsVeth);
    await sh('link', 'set', this.nsVeth, 'netns', this.name);
    // IPv4 only. Left on, each end gains an IPv6 link-local address about a second after it
    // comes up (duplicate address detection), and Chromium, which watches the host's
    // addresses, takes that for a network change and fails the requests in flight with
    // ERR_NETWORK_CHANGED: the doctor's page, loading just then, lost its modules and never
    // showed "Start the visit" (quality.test.mjs, now and then).
    await noIpv6(`/proc/sys/net/ipv6/conf/${this.hostVeth}/disable_ipv6`, (path) => writeFile(path, '1'));
    await noIpv6(`/proc/sys/net/ipv6/conf/${this.nsVeth}/disable_ipv6`, (path) => this.exec('sh', '-c', `echo 1 > ${path}`));
    await sh('addr', 'add', `${this.hostAddress}/30`, 'dev', this.hostVeth);
    await sh('link', 'set', this.hostVeth, 'up');
    await this.exec('ip', 'addr', 'add', `${this.nsAddress}/30`, 'dev', this.nsVeth);
    await this.exec('ip', 'link', 'set', this.nsVeth, 'up');
    await this.exec('ip', 'link', 'set', 'lo', 'up');
    await this.exec('ip', 'route', 'add', 'default', 'via', this.hostAddress);
    this.dir = await mkdtemp(join(tmpdir(), 'bedside-netns-'));
    return this;
  }

  exec(...args) {
    return run('ip', ['netns', 'exec', this.name, ...args]);
  }

  /** An executable that runs `program` inside the namespace with the arguments it gets. */
  async wrapper(program) {
    const path = join(this.dir, 'in-netns');
    await writeFile(path, `#!/bin/sh\nexec ip netns exec ${this.name} ${program} "$@"\n`);
    await chmod(path, 0o755);
    return path;
  }

  /** Drops `percent` of the UDP packets leaving and entering the namespace. */
  async loseUdp(percent) {
    const nft = (...args) => this.exec('nft', ...args);
    await nft('add', 'table', 'inet', 'degrade');
    for (const [chain, hook] of [['in', 'input'], ['out', 'output']]) {
      await nft('add', 'chain', 'inet', 'degrade', chain, `{ type filter hook ${hook} priority 0 ; }`);
      await nft('add', 'rule', 'inet', 'degrade', chain, 'meta', 'l4proto', 'udp', 'numgen', 'random', 'mod', '100', '<', String(percent), 'drop');
    }
  }

  async destroy() {
    await run('ip', ['link', 'del', this.hostVeth]).catch(() => {});
    await run('ip', ['netns', 'del', this.name]).catch(() => {});
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}
