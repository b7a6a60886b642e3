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

# Frames that only pass an allocation through: skipped to find the site.
PLUMBING = re.compile(
    r"^(malloc|calloc|realloc|free|posix_memalign|aligned_alloc|memalign|__rust_|__rdl_|__rg_|"
    r"_?_?rust_alloc|alloc::|<alloc::|core::alloc|std::alloc|<std::alloc|hashbrown::raw::|"
    r"<hashbrown::raw|hashbrown::map::HashMap<.*>::(insert|reserve|with_capacity)|"
    r"<?bytes::bytes_mut::|<?bytes::bytes::|core::ptr::|<core::ptr|"
    r"std::collections::hash::map::HashMap<.*>::(insert|reserve|with_capacity)|"
    r"<?smallvec::|<?alloc_|\?\?\?|mi_|je_|_rjem_|tikv_jemallocator|mimalloc)"
)
OWN = re.compile(r"^<?(bedside_\w+|baseline_relay|bedside)::")


def func(frame: str) -> str:
    """`0x1234: name (file:line)` -> name without generic arguments and hash."""
    m = re.match(r"^0x[0-9A-Fa-f]+: (.*?)(?: \(([^()]*)\))?$", frame)
    name = m.group(1) if m else frame
    # Drop generic arguments (nested <...>) except a leading `<Type as Trait>`.
    out, depth = [], 0
    for i, ch in enumerate(name):
        if ch == "<":
            if depth == 0 and i > 0 and name[i - 1] not in " (":
                depth = 1
                continue
            if depth > 0:
                depth += 1
                continue
        elif ch == ">" and depth > 0:
            depth -= 1
            continue
        if depth == 0:
            out.append(ch)
    name = "".join(out)
    return re.sub(r"::h[0-9a-f]{16}$", "", name)


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
        names = [func(ftbl[i]) for i in pp["fs"]]
        site = next((n for n in names if not PLUMBING.match(n)), names[0] if names else "?")
        caller = next((n for n in names if OWN.match(n)), "")
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
