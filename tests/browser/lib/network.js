// A browser's network path to Bedside: a TCP relay on its own loopback port. Each page
// loads the client through its own path, so a test can cut one person's connection (every
// TCP connection through the relay is destroyed and new ones are refused), which the page
// sees exactly like a real network drop: its WebSocket closes abnormally (1006). Media does
// not go through it: WebRTC flows directly between the browsers, as it would in a visit.

import net from 'node:net';

export class NetworkPath {
  #server = net.createServer((client) => this.#accept(client));
  #target = null;
  #pairs = new Set();
  #down = false;

  async listen() {
    await new Promise((done) => this.#server.listen(0, '127.0.0.1', done));
    this.origin = `http://127.0.0.1:${this.#server.address().port}`;
    return this.origin;
  }

  /** Where to relay to, e.g. the server's "http://127.0.0.1:PORT". */
  target(url) {
    const { hostname, port } = new URL(url);
    this.#target = { host: hostname, port: Number(port) };
  }

  cut() {
    this.#down = true;
    for (const [a, b] of this.#pairs) {
      a.destroy();
      b.destroy();
    }
    this.#pairs.clear();
  }

  restore() {
    this.#down = false;
  }

  get openConnections() {
    return this.#pairs.size;
  }

  async close() {
    this.cut();
    await new Promise((done) => this.#server.close(done));
  }

  #accept(client) {
    if (this.#down || !this.#target) {
      client.destroy();
      return;
    }
    const upstream = net.connect(this.#target);
    const pair = [client, upstream];
    this.#pairs.add(pair);
    const end = () => {
      this.#pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of pair) {
      socket.setNoDelay(true);
      socket.on('error', end);
      socket.on('close', end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
