// The join token: read from the link's fragment (`/#token=...`), kept for this tab, and
// decoded for display only (role, name). Bedside verifies it; the page never trusts it.

const STORAGE_KEY = 'bedside.token';

/**
 * The token of this tab. A token in the fragment is moved to sessionStorage and removed
 * from the address bar, so a shared screen or a copied URL does not leak it, while a
 * reload of the same tab still works.
 */
export function takeToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const fromLink = params.get('token');
  if (fromLink) {
    try {
      sessionStorage.setItem(STORAGE_KEY, fromLink);
    } catch {
      // Storage can be disabled (private modes); the token then lives in memory only.
    }
    history.replaceState(null, '', location.pathname + location.search);
    return fromLink;
  }
  try {
    return sessionStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

/** The claims of a JWT without verifying it, or null if it is not shaped like one. */
export function readClaims(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (!['doctor', 'patient', 'guest', 'provider'].includes(claims.role)) return null;
    return claims;
  } catch {
    return null;
  }
}
