#!/usr/bin/env python3
"""Heap bytes per connection by allocation site, from two dhat runs (scripts/bench-memory).

    dhat-per-connection.py [--top N] [--at gmax|end] SMALL.json N_SMALL LARGE.json N_LARGE

For each run, the bytes live at the heap's peak (dhat's t-gmax) are grouped by site: the
innermost stack frame that is not allocator plumbing (malloc, alloc::*, RawVec, Box::new,
Arc::new, hashbrown's table growth...), named by its function without generic arguments. The
difference between the runs, divided by the difference in connections, is what one more
connection holds; sites whose difference is below half a byte per connection are summed in
"(other)". The "caller" column is the innermost frame in Bedside's own crates (or the relay's)
above the site, which says who asked for the memory.
"""
import argparse
import json
import re
from collections import defaultdict

# Named sites: the first rule (in this order) matching a frame of the stack names the
# allocation; the specific rules come first, as a connection task's own frames are in the
# stack of everything allocated while it runs.
RULES = [
    (r"WebSocketContext::new|FrameCodec::new|from_partially_read", "tungstenite read buffer (ws read_buffer_size)"),
    (r"FrameCodec::buffer_frame", "tungstenite write buffer (kept at the largest frame written)"),
    (r"IncompleteMessage", "tungstenite incomplete message"),
    (r"task::core::Cell<.*connection::serve|spawn<bedside_loadtest::baseline::connection", "connection task (tokio task cell: the future)"),
    (r"task::core::Cell<|LocalOwnedTasks<S>::bind", "other tokio tasks"),
    (r"ScheduledIo", "tokio I/O registration (per socket)"),
    (r"mpsc::chan::Chan<bedside_rooms::registry::Outgoing|mpsc::chan::channel<bedside_rooms::registry::Outgoing|channel<bedside_rooms::registry::Outgoing", "tokio mpsc outbox (channel + first 32-slot block)"),
    (r"block::Block<bedside_rooms::registry::Outgoing", "tokio mpsc outbox (channel + first 32-slot block)"),
    (r"futures_channel::mpsc", "futures-channel queue (outbox / relay queue)"),
    (r"LocalOutbox::new", "Arc<LocalOutbox>, Alarm"),
    (r"sqlite3|sqlx_sqlite|libsqlite", "SQLite (page cache, statements: bounded, not per connection)"),
    (r"storage::writer", "storage writer queue (transient)"),
    (r"(push_mut|reserve_exact|reserve|grow_one)<bedside_visit::visit::Participant|Vec<bedside_visit::visit::Participant", "visit: participant records (Vec<Participant>)"),
    (r"ArcInner<lock_api::mutex::Mutex<.*registry::Inner", "visit: registry entry (Arc<Mutex<Inner>>, the Visit)"),
    (r"registry::Inner|outboxes", "visit: outbox map and held notices"),
    (r"bedside_visit", "visit: other state"),
    (r"governor|dashmap", "limiters / dashmap maps"),
    (r"tokio_tungstenite::compat::AllowStd", "tokio-tungstenite wakers (AllowStd)"),
    (r"hyper", "hyper (HTTP connection, upgrade)"),
    (r"axum", "axum"),
    (r"bedside_auth|jsonwebtoken|ring::", "tokens (mint, verify)"),
    (r"bedside_rooms::registry", "registry: other"),
    (r"bedside_signaling::connection", "connection: other"),
    (r"baseline::", "relay: other"),
]
RULES = [(re.compile(r), label) for r, label in RULES]
# Frames that only pass an allocation through: skipped when no rule names the site.
PLUMBING = re.compile(
    r"^(0x[0-9A-Fa-f]+: )?(malloc|calloc|realloc|free|posix_memalign|aligned_alloc|memalign|"
    r"UnknownInlinedFun|alloc|alloc_impl|alloc_impl_runtime|allocate|box_new_uninit|"
    r"__rust_|__rdl_|__rustc::|__rg_|aligned_malloc|with_capacity|with_capacity_in|new<|new |"
    r"grow_|finish_grow|reserve|do_reserve|push|alloc::|<alloc::|core::|<core::|std::alloc|"
    r"hashbrown::|<hashbrown)"
)
OWN = re.compile(r"(bedside_\w+|baseline_relay)::")


def func(frame: str) -> str:
    """`0x1234: name (file:line)` -> `name (file:line)`, generic arguments cut short."""
    m = re.match(r"^0x[0-9A-Fa-f]+: (.*)$", frame)
    name = m.group(1) if m else frame
    return re.sub(r"<[^()]{60,}>", "<..>", name)


def load(path: str, at: str):
    d = json.load(open(path))
    ftbl = d["ftbl"]
    key_bytes, key_blocks = ("gb", "gbk") if at == "gmax" else ("eb", "ebk")
    sites = defaultdict(lambda: [0, 0])
    callers = {}
    for pp in d["pps"]:
        b = pp.get(key_bytes, 0)
        if not b:
            continue
        frames = [ftbl[i] for i in pp["fs"]]
        stack = "\n".join(frames)
        site = next((label for r, label in RULES if r.search(stack)), None)
        if site is None:
            names = [func(f) for f in frames]
            site = next((n for n in names if not PLUMBING.match(n)), names[0] if names else "?")
        caller = next((func(f) for f in frames if OWN.search(f)), "")
        sites[site][0] += b
        sites[site][1] += pp.get(key_blocks, 0)
        callers.setdefault(site, defaultdict(int))[caller] += b
    total = sum(v[0] for v in sites.values())
    return sites, callers, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--at", choices=["gmax", "end"], default="gmax")
    ap.add_argument("small")
    ap.add_argument("n_small", type=int)
    ap.add_argument("large")
    ap.add_argument("n_large", type=int)
    a = ap.parse_args()
    s_sites, _, s_total = load(a.small, a.at)
    l_sites, l_callers, l_total = load(a.large, a.at)
    dn = a.n_large - a.n_small
    rows = []
    for site in set(s_sites) | set(l_sites):
        db = l_sites.get(site, [0, 0])[0] - s_sites.get(site, [0, 0])[0]
        dk = l_sites.get(site, [0, 0])[1] - s_sites.get(site, [0, 0])[1]
        callers = l_callers.get(site, {})
        caller = max(callers, key=callers.get) if callers else ""
        rows.append((db / dn, dk / dn, site, caller))
    rows.sort(key=lambda r: -r[0])
    print(f"heap at the peak: {s_total:,} bytes ({a.n_small} connections), "
          f"{l_total:,} bytes ({a.n_large}); per connection: {(l_total - s_total) / dn:,.0f} bytes")
    print(f"{'bytes/conn':>10} {'blocks/conn':>11}  site  [caller]")
    other_b = other_k = 0.0
    shown = 0
    for b, k, site, caller in rows:
        if shown < a.top and abs(b) >= 0.5:
            shown += 1
            tail = f"  [{caller}]" if caller and caller != site else ""
            print(f"{b:10.1f} {k:11.2f}  {site[:110]}{tail[:90]}")
        else:
            other_b += b
            other_k += k
    print(f"{other_b:10.1f} {other_k:11.2f}  (other)")
    print(f"{(l_total - s_total) / dn:10.1f} {'':11}  total")


if __name__ == "__main__":
    main()
