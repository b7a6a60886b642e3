#!/usr/bin/env python3
"""Verify Bedside webhook signatures: a tiny receiver, or a one-off check.

    # Receive on port 9000 and print verified events (reject anything else with 400):
    python3 verify_webhook.py serve 9000 "$WEBHOOK_SECRET"

    # Check one delivery: exit 0 if the signature is valid and fresh, 1 otherwise.
    python3 verify_webhook.py check "$WEBHOOK_SECRET" "$BEDSIDE_SIGNATURE_HEADER" body.json

This checks the older `Bedside-Signature: t=UNIX,v1=HEX` header, HEX being HMAC-SHA256 of
`UNIX.BODY` (the raw request body, byte for byte) under the tenant's webhook secret as written;
while the secret is being rotated there are two `v1` entries, and either may match. New
receivers should verify the Standard Webhooks headers with the official `standardwebhooks`
package instead (docs/webhooks.md). Reject timestamps older
than a few minutes to stop replays; deduplicate on the `id` field (deliveries are at least
once); order by `sequence` within a visit (a gap means an event is still coming).
"""
import hashlib
import hmac
import http.server
import json
import sys
import time

TOLERANCE_SECONDS = 300


def verify(secret: str, header: str, body: bytes, now: float | None = None) -> bool:
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    try:
        t = int(dict(parts)["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - t) > TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for k, v in parts if k == "v1")


def serve(port: int, secret: str) -> None:
    seen = set()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not verify(secret, self.headers.get("Bedside-Signature", ""), body):
                self.send_response(400)
                self.end_headers()
                return
            event = json.loads(body)
            if event["id"] not in seen:  # at least once: the same id may come again
                seen.add(event["id"])
                print(event["visit_id"], event["sequence"], event["type"], json.dumps(event["data"]), flush=True)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "check":
        with open(sys.argv[4], "rb") as f:
            sys.exit(0 if verify(sys.argv[2], sys.argv[3], f.read()) else 1)
    else:
        print(__doc__)
        sys.exit(2)
