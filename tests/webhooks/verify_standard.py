#!/usr/bin/env python3
"""Verifies webhook deliveries with the official Standard Webhooks package (PyPI
`standardwebhooks`), as a clinic's receiver would. Reads a JSON list of jobs
`{secret, raw, headers, body}` on stdin and prints a JSON list of verdicts: true when the
delivery verifies, false when the library refuses it.

`raw`: the secret is not in the `whsec_<base64>` form, so its own bytes are the key.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def verdict(job) -> bool:
    secret = job["secret"].encode() if job["raw"] else job["secret"]
    try:
        event = Webhook(secret).verify(job["body"].encode(), job["headers"])
    except WebhookVerificationError:
        return False
    assert event["id"] == job["headers"]["webhook-id"], "webhook-id is the event id"
    return True


print(json.dumps([verdict(job) for job in json.load(sys.stdin)]))
