r"""Symbols/s of the range coder alone (`coding.range_coder` on constriction).

    python benchmarks/range_coder.py [--symbols 500000] [--runs 7]

The codec's 64 Gaussian tables (`coding.tables.gaussian_tables(scale_table())`), symbols
drawn from each table's own quantized distribution (escapes included, at the rate the
overflow bin gives them), a random table per symbol: one `RangeEncoder.encode` call and one
`RangeDecoder.decode` call for all of them, as the codec makes per slice. Prints the median
(range) of `--runs` runs after one warm-up, the size against the ideal code length under
the same tables, and checks that the decode round-trips. Building the tables' models
(`Tables`, once per family and process in the codec) is timed apart.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from tgic_jax.coding import range_coder
from tgic_jax.coding.tables import gaussian_tables, scale_table, split_lookup


def main() -> None:
    """Times encode and decode of `--symbols` symbols from 64 tables; prints medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=500_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    lookup, _ = gaussian_tables(scale_table())
    cdfs = split_lookup(lookup)
    rng = np.random.default_rng(args.seed)
    indexes = rng.integers(0, len(cdfs), args.symbols)
    values = np.empty(args.symbols, np.int64)
    ideal_bits = 0.0
    for k, cdf in enumerate(cdfs):
        at = np.flatnonzero(indexes == k)
        p = np.diff(cdf.astype(np.float64)) / cdf[-1]
        v = rng.choice(len(p), size=len(at), p=p)  # the last bin: escape
        ideal_bits += -np.log2(p[v]).sum()
        esc = v == len(p) - 1  # escaped values: just past the table's top
        v[esc] += rng.integers(0, 20, esc.sum())
        values[at] = v
    n_escaped = int((values >= np.array([len(c) - 2 for c in cdfs])[indexes]).sum())

    t0 = time.perf_counter()
    tables = range_coder.Tables(lookup)
    t_tables = time.perf_counter() - t0

    enc, dec = [], []
    for run in range(args.runs + 1):
        t0 = time.perf_counter()
        e = range_coder.RangeEncoder(tables)
        e.encode(values, indexes)
        data = e.finish()
        t_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        d = range_coder.RangeDecoder(data, tables)
        out = d.decode(indexes)
        ok = d.finish()
        t_dec = time.perf_counter() - t0
        if not (ok and np.array_equal(out, values)):
            raise SystemExit("round trip failed")
        if run:  # the first is a warm-up
            enc.append(t_enc)
            dec.append(t_dec)

    print(
        f"{args.symbols} symbols, {len(cdfs)} tables, {n_escaped} escaped; "
        f"{len(data)} B = {8 * len(data) / ideal_bits - 1:+.2%} over the ideal "
        f"{ideal_bits / 8:.0f} B (escape codes included in the real size only)"
    )
    print(f"building the tables' models: {1e3 * t_tables:.1f} ms")
    for name, t in (("encode", enc), ("decode", dec)):
        m = statistics.median(t)
        print(
            f"{name}: {1e3 * m:6.1f} ms (range {1e3 * min(t):.1f}-{1e3 * max(t):.1f}, "
            f"{len(t)} runs) = {args.symbols / m / 1e6:.1f} M symbols/s"
        )


if __name__ == "__main__":
    main()
