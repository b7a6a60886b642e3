// Embed mode: the visit page inside an <iframe> of a clinic's portal tells the portal how
// the visit goes, with postMessage: {source: 'bedside', type, ...} for `joined`, `waiting`,
// `admitted` and `ended`. No name, token or chat ever goes to the portal.
//
// Who may receive them is the server's `embed_origins` setting, which it sends as this
// page's CSP `frame-ancestors`: the browser refuses to show the page inside any other
// origin, and the page reads the same header to address its messages. Each message goes
// to every allowed origin as postMessage's targetOrigin, so the browser delivers it only
// if the parent is one of them.

export function reportToEmbedder(visit) {
  if (window.parent === window) return;
  // Listening starts now, so no event is missed while the header is read; the messages
  // wait for it, in order.
  const origins = allowedParents();
  const post = (type, fields = {}) =>
    origins.then((list) => {
      for (const origin of list) window.parent.postMessage({ source: 'bedside', type, ...fields }, origin);
    });
  // After a reconnect `joined` (and `admitted`) may come again; the portal sees each.
  visit.on('joined', (frame) => post('joined', { visit_id: frame.visit?.id, participant_id: frame.participant_id, role: frame.role }));
  visit.on('waiting', () => post('waiting'));
  visit.on('admitted', () => post('admitted'));
  // Only the outcome and, for an ended visit, its reason code: a doctor's words when
  // turning someone away are for that person alone.
  visit.on('ended', ({ outcome, reason }) => post('ended', outcome === 'ended' && reason ? { outcome, reason } : { outcome }));
}

/** The origins in this page's own `frame-ancestors` directive (none if it says 'none'). */
export async function allowedParents() {
  try {
    const response = await fetch(location.pathname, { method: 'HEAD', cache: 'no-store' });
    return frameAncestors(response.headers.get('content-security-policy'));
  } catch {
    return [];
  }
}

export function frameAncestors(csp) {
  const directive = (csp ?? '')
    .split(';')
    .map((d) => d.trim().split(/\s+/))
    .find(([name]) => name.toLowerCase() === 'frame-ancestors');
  // Exact origins only: keywords ('none', 'self') and wildcards are no postMessage target.
  return (directive ?? []).slice(1).filter((source) => /^https?:\/\/[^/*\s]+$/.test(source));
}
