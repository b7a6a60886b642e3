// PeerJS's signaling server (npm `peer`, pinned in package.json) as the load tool compares
// Bedside with it: loopback only, a port the OS picks, and limits raised past the load so
// that none of its defaults refuses a connection the other servers accept.
//
//   node server.mjs            # prints "peerjs listening on http://127.0.0.1:PORT"
//
// No per-connection logging (PeerJS's own CLI logs every connect and disconnect, a cost
// neither Bedside nor the lean relay pays at its default log level).
import { PeerServer } from "peer";

const server = PeerServer(
  {
    host: "127.0.0.1",
    port: 0,
    path: "/",
    // The load holds up to 20,000 connections; PeerJS refuses past 5,000 by default.
    concurrent_limit: 20000,
    // The load's clients do not send PeerJS's HEARTBEAT; without it PeerJS drops a client
    // after alive_timeout. Ten minutes outlasts every bounded step.
    alive_timeout: 600000,
  },
  (http) => {
    const { port } = http.address();
    console.log(`peerjs listening on http://127.0.0.1:${port}`);
  },
);
server.on("error", (e) => console.error(`peerjs error: ${e}`));
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
