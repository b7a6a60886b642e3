// Verifies webhook deliveries with the official Standard Webhooks package (npm
// `standardwebhooks`), as a clinic's receiver would. Reads a JSON list of jobs
// `{secret, raw, headers, body}` on stdin and prints a JSON list of verdicts: true when the
// delivery verifies, false when the library refuses it.
//
// `raw`: the secret is not in the `whsec_<base64>` form, so its own bytes are the key.
import { Webhook, WebhookVerificationError } from "standardwebhooks";

function verdict(job) {
  const webhook = job.raw
    ? new Webhook(new TextEncoder().encode(job.secret), { format: "raw" })
    : new Webhook(job.secret);
  try {
    const event = webhook.verify(job.body, job.headers);
    if (event.id !== job.headers["webhook-id"]) throw new Error("webhook-id is not the event id");
    return true;
  } catch (e) {
    if (e instanceof WebhookVerificationError) return false;
    throw e;
  }
}

let input = "";
for await (const chunk of process.stdin) input += chunk;
console.log(JSON.stringify(JSON.parse(input).map(verdict)));
