#!/usr/bin/env python3
# SPDX-FileCopyrightText: 2026 The attn authors
# SPDX-License-Identifier: Apache-2.0
"""Turns attn_bench's JSON (--benchmark_out) into README's markdown tables.

Every ratio is computed between rows of the same run: attn against the naive
Eigen attention and against the Eigen GEMM of the same FLOP count, causal
against non-causal, two threads against one, a sparse variant against dense
attention over the same tokens.

  attn_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
             --benchmark_out=bench.json --benchmark_out_format=json
  python3 bench/report.py bench.json
"""
import json
import re
import sys


def load(path):
    with open(path) as f:
        data = json.load(f)
    rows = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name", "median") != "median":
            continue
        name = re.sub(r"(_median)?$", "", b["run_name"] if "run_name" in b else b["name"])
        name = name.replace("/real_time", "").replace("/manual_time", "")
        rows[name] = b
    return data.get("context", {}), rows


def lookup(by_key, family, **args):
    """The row of `family` with exactly these arguments, or None."""
    return by_key.get((family, tuple(sorted((k, str(v)) for k, v in args.items()))))


def parse(name):
    family, *args = name.split("/")
    return family, dict(a.split(":") for a in args)


def ms(b):
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
    return b["real_time"] * scale


def main(path):
    context, rows = load(path)
    by_key = {}
    for name, b in rows.items():
        family, args = parse(name)
        by_key[(family, tuple(sorted(args.items())))] = b
    attn_families = sorted({f for f, _ in by_key if f.startswith("prefill_attn<")})
    decode_families = sorted({f for f, _ in by_key if f.startswith("decode_attn<")})

    print(f"Machine: {context.get('num_cpus', '?')} CPUs at {context.get('mhz_per_cpu', '?')} MHz "
          f"(as Google Benchmark reports it); {context.get('date', '')}\n")
    if attn_families:
        prefill(by_key, attn_families)
    if decode_families:
        decode(by_key, decode_families)
    masks(by_key)
    neighborhood(by_key)
    latent(by_key)
    serving(by_key)
    paired(by_key)


def prefill(by_key, attn_families):
    print("Prefill, B=1, H=8, fp32 (median ms, GFLOP/s on allowed pairs; ratios from the same run)\n")
    print("| backend | N | d | causal | threads | attn ms | GFLOP/s | naive Eigen ms | × naive | "
          "Eigen GEMM GFLOP/s | attn / GEMM | causal / dense time | 2T / 1T |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for fam in attn_families:
        backend = fam[len("prefill_attn<"):-1]
        for (f, key), b in sorted(by_key.items(), key=lambda kv: (
                int(dict(kv[0][1]).get("threads", 0)), int(dict(kv[0][1]).get("N", 0)),
                int(dict(kv[0][1]).get("d", 0)), dict(kv[0][1]).get("causal", "0"))):
            if f != fam:
                continue
            a = dict(key)
            naive = by_key.get(("prefill_naive_eigen", key))
            gemm = by_key.get(("prefill_eigen_gemm", key))
            dense = by_key.get((fam, tuple(sorted({**a, "causal": "0"}.items()))))
            one = by_key.get((fam, tuple(sorted({**a, "threads": "1"}.items()))))
            gf = b.get("GFLOP/s", 0) / 1e9 if b.get("GFLOP/s", 0) > 1e6 else b.get("GFLOP/s", 0)
            ggf = 0
            if gemm:
                ggf = gemm["GFLOP/s"] / 1e9 if gemm["GFLOP/s"] > 1e6 else gemm["GFLOP/s"]
            cols = [backend, a["N"], a["d"], a["causal"], a["threads"], f"{ms(b):.1f}", f"{gf:.1f}",
                    f"{ms(naive):.1f}" if naive else "–",
                    f"{ms(naive) / ms(b):.2f}" if naive else "–",
                    f"{ggf:.1f}" if gemm else "–",
                    f"{gf / ggf:.2f}" if gemm and ggf else "–",
                    f"{ms(b) / ms(dense):.2f}" if dense and a["causal"] == "1" else "",
                    f"{ms(one) / ms(b):.2f}" if one and a["threads"] == "2" else ""]
            print("| " + " | ".join(cols) + " |")


def decode(by_key, decode_families):
    print("\nDecode, Nq=1, Hq=32, Hkv=8, d=128, fp32 (median ms; K+V GB/s)\n")
    print("| backend | Nkv | threads | attn ms | K/V GB/s | read roofline GB/s | attn / roofline | "
          "naive Eigen ms | naive GB/s | × naive |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for fam in decode_families:
        backend = fam[len("decode_attn<"):-1]
        for (f, key), b in sorted(by_key.items(), key=lambda kv: (
                int(dict(kv[0][1]).get("threads", 0)), int(dict(kv[0][1]).get("Nkv", 0)))):
            if f != fam:
                continue
            a = dict(key)
            naive = by_key.get(("decode_naive_eigen", key))
            roof = by_key.get(("decode_read_roofline", key))
            gbs = lambda r: r["GB/s"] / 1e9 if r["GB/s"] > 1e6 else r["GB/s"]
            cols = [backend, a["Nkv"], a["threads"], f"{ms(b):.2f}", f"{gbs(b):.2f}",
                    f"{gbs(roof):.1f}" if roof else "–",
                    f"{gbs(b) / gbs(roof):.2f}" if roof else "–",
                    f"{ms(naive):.2f}" if naive else "–", f"{gbs(naive):.2f}" if naive else "–",
                    f"{ms(naive) / ms(b):.2f}" if naive else "–"]
            print("| " + " | ".join(cols) + " |")


def masks(by_key):
    """Tables of bench/mask_bench.cpp: speed of light against dense causal."""
    def get(family, **args):
        return lookup(by_key, family, **args)

    def gflops(b):
        return rate(b, "GFLOP/s")

    def sol(masked, causal):  # (t_causal / t_masked) / (causal pairs / masked pairs)
        return (ms(causal) / ms(masked)) / (causal["pairs"] / masked["pairs"])

    windows = sorted({(int(dict(k)["d"]), int(dict(k)["W"])) for f, k in by_key if f == "window_attn"})
    if windows:
        print("\nSliding window {W-1, 0} against dense causal, N=16384, H=8, 2 threads "
              "(median ms; speed of light = (t_causal / t_window) / (causal pairs / window pairs))\n")
        print("| d | W | window ms | GFLOP/s | causal ms | causal GFLOP/s | speed of light |")
        print("|---|---|---|---|---|---|---|")
        for d, w in windows:
            b, c = get("window_attn", N=16384, d=d, W=w), get("window_attn", N=16384, d=d, W=0)
            if w == 0 or not c:
                continue
            print(f"| {d} | {w} | {ms(b):.1f} | {gflops(b):.1f} | {ms(c):.0f} | {gflops(c):.1f} | "
                  f"{sol(b, c):.2f} |")
    docs = sorted({int(dict(k)["d"]) for f, k in by_key if f == "document_attn"})
    if docs:
        print("\nPacked documents (8 seeded random lengths summing to 16384, causal inside each), "
              "H=8, 2 threads (median ms)\n")
        print("| d | one call with document ids | 8 separate causal calls | ratio | "
              "GFLOP/s | dense causal ms | speed of light |")
        print("|---|---|---|---|---|---|---|")
        for d in docs:
            b, sep = get("document_attn", N=16384, d=d), get("document_separate_calls", N=16384, d=d)
            c = get("window_attn", N=16384, d=d, W=0)
            print(f"| {d} | {ms(b):.1f} | {ms(sep):.1f} | {ms(b) / ms(sep):.2f} | {gflops(b):.1f} | "
                  + (f"{ms(c):.0f} | {sol(b, c):.2f} |" if c else "– | – |"))
    mods = sorted({int(dict(k)["mode"]) for f, k in by_key if f == "modifier_attn"})
    if mods:
        names = {0: "plain causal", 1: "softcap 30", 2: "ALiBi", 3: "softcap 30 + ALiBi"}
        print("\nScore modifiers on causal attention, N=4096, d=128, H=8, 2 threads (median ms)\n")
        print("| modifier | ms | GFLOP/s | time / plain causal |")
        print("|---|---|---|---|")
        plain = get("modifier_attn", N=4096, d=128, mode=0)
        for m in mods:
            b = get("modifier_attn", N=4096, d=128, mode=m)
            print(f"| {names[m]} | {ms(b):.1f} | {gflops(b):.1f} | {ms(b) / ms(plain):.3f} |")
    builtin, user = get("user_mask_attn", N=16384, d=128, user=0), get("user_mask_attn", N=16384, d=128, user=1)
    if builtin and user:
        print("\nThe same causal window 2048 + ALiBi, N=16384, d=128, H=8, 2 threads: built-in options "
              f"{ms(builtin):.0f} ms, user-written predicate + classifier + score function "
              f"{ms(user):.0f} ms ({ms(user) / ms(builtin):.2f}x)")


def neighborhood(by_key):
    """Table of bench/neighborhood_bench.cpp: each problem beside dense
    attention over the same tokens; speed of light = (t_dense / t_na) /
    (dense pairs / allowed pairs), which equals the GFLOP/s ratio."""
    problems = {
        "na1d_32768_k2049": "1-D N = 32768, K = 2049",
        "na2d_96_k7": "2-D 96 × 96, K = 7",
        "na2d_96_k13": "2-D 96 × 96, K = 13",
        "na2d_96_k31": "2-D 96 × 96, K = 31",
        "na2d_128_k13_d2": "2-D 128 × 128, K = 13, dilation 2",
        "na3d_16x32x32_k377": "3-D 16 × 32 × 32, K = (3, 7, 7)",
    }
    present = [f for f in problems if lookup(by_key, f, dense=0) and lookup(by_key, f, dense=1)]
    if not present:
        return
    print("\nNeighborhood attention beside dense attention over the same tokens, H=8, d=64, 2 threads (median ms; "
          "GFLOP/s of the pairs each computes; speed of light = (t_dense / t_na) / (dense pairs / allowed pairs))\n")
    print("| problem | neighborhood ms | GFLOP/s | dense ms | dense GFLOP/s | speed of light |")
    print("|---|---|---|---|---|---|")
    for f in present:
        na, dense = lookup(by_key, f, dense=0), lookup(by_key, f, dense=1)
        sol = (ms(dense) / ms(na)) / (dense["pairs"] / na["pairs"])
        print(f"| {problems[f]} | {ms(na):.1f} | {rate(na, 'GFLOP/s'):.1f} | {ms(dense):.0f} | "
              f"{rate(dense, 'GFLOP/s'):.1f} | {sol:.2f} |")


def rate(b, counter):
    x = b.get(counter, 0)
    return x / 1e9 if x > 1e6 else x


def latent(by_key):
    """Table of bench/latent_bench.cpp: MLA decode against the read roofline,
    the FMA peak, the naive Eigen form and GQA over up-projected K/V."""
    families = sorted({f for f, _ in by_key if f.startswith("latent_decode<")})
    if not families:
        return
    peak = {t: by_key.get(("fma_peak", (("threads", str(t)),))) for t in (1, 2)}
    print("\nLatent (MLA) decode, Nq=1, Dc=512, Dr=64, fp32 (median ms; cache GB/s; "
          "ratios from the same run)\n")
    print("| backend | B | H | Nk | threads | attn ms | cache GB/s | read roofline GB/s | "
          "attn / roofline | GFLOP/s | / FMA peak | paged ms | paged / contiguous | "
          "naive Eigen ms | × naive | up-projected GQA ms | × up-projected | bytes saved |")
    print("|" + "---|" * 18)
    for fam in families:
        backend = fam[len("latent_decode<"):-1]
        for (f, key), b in sorted(by_key.items(), key=lambda kv: tuple(
                int(dict(kv[0][1]).get(x, 0)) for x in ("threads", "B", "H", "Nk"))):
            if f != fam:
                continue
            a = dict(key)
            roof = by_key.get(("latent_read_roofline", tuple(sorted({**a, "H": "1"}.items()))))
            paged = by_key.get((f"latent_decode_paged<{backend}>", key))
            naive = by_key.get(("latent_naive_eigen", key))
            up = by_key.get(("latent_as_upprojected", key))
            fp = peak.get(int(a["threads"]))
            cols = [backend, a["B"], a["H"], a["Nk"], a["threads"], f"{ms(b):.2f}",
                    f"{rate(b, 'GB/s'):.1f}",
                    f"{rate(roof, 'GB/s'):.1f}" if roof else "–",
                    f"{rate(b, 'GB/s') / rate(roof, 'GB/s'):.2f}" if roof else "–",
                    f"{rate(b, 'GFLOP/s'):.1f}",
                    f"{rate(b, 'GFLOP/s') / rate(fp, 'GFLOP/s'):.2f}" if fp else "–",
                    f"{ms(paged):.2f}" if paged else "–",
                    f"{ms(paged) / ms(b):.2f}" if paged else "–",
                    f"{ms(naive):.2f}" if naive else "–",
                    f"{ms(naive) / ms(b):.2f}" if naive else "–",
                    f"{ms(up):.2f}" if up else "–",
                    f"{ms(up) / ms(b):.2f}" if up else "–",
                    f"{rate(up, 'GB/s') * ms(up) / (rate(b, 'GB/s') * ms(b)):.1f}x" if up else "–"]
            print("| " + " | ".join(cols) + " |")


def serving(by_key):
    """Table of bench/serving_bench.cpp: GQA decode over a contiguous and a
    paged cache (one sequence, or 8 ragged ones) against the read roofline
    over the same K/V bytes and the naive Eigen form."""
    families = sorted({f for f, _ in by_key if f.startswith("serving_decode<")})
    if not families:
        return
    print("\nServing decode, Nq=1, Hq=32, Hkv=8, d=128, fp32; B=8 ragged: len_b = Nkv (b+1)/8 "
          "rounded down to 64, at least 1024; paged: 64-token pages in shuffled order "
          "(median ms; GB/s of the K/V bytes read; ratios from the same run)\n")
    print("| backend | B | Nkv | threads | attn ms | GB/s | read roofline GB/s | attn / roofline | "
          "paged ms | paged / contiguous time | naive Eigen ms | × naive |")
    print("|" + "---|" * 12)
    for fam in families:
        backend = fam[len("serving_decode<"):-1]
        for (f, key), b in sorted(by_key.items(), key=lambda kv: tuple(
                int(dict(kv[0][1]).get(x, 0)) for x in ("threads", "B", "Nkv"))):
            if f != fam:
                continue
            a = dict(key)
            roof = by_key.get(("serving_read_roofline", key))
            paged = by_key.get((f"serving_decode_paged<{backend}>", key))
            naive = by_key.get(("serving_naive_eigen", key))
            cols = [backend, a["B"], a["Nkv"], a["threads"], f"{ms(b):.2f}", f"{rate(b, 'GB/s'):.1f}",
                    f"{rate(roof, 'GB/s'):.1f}" if roof else "–",
                    f"{rate(b, 'GB/s') / rate(roof, 'GB/s'):.2f}" if roof else "–",
                    f"{ms(paged):.2f}" if paged else "–",
                    f"{ms(paged) / ms(b):.2f}" if paged else "–",
                    f"{ms(naive):.2f}" if naive else "–",
                    f"{ms(naive) / ms(b):.2f}" if naive else "–"]
            print("| " + " | ".join(cols) + " |")


def counter(b, name):
    return float(b[name]) if name in b else float("nan")


def paired(by_key):
    """Tables of the paired benchmarks (serving_decode_paired,
    precision_decode_paired): each iteration ran the call and its reference
    (the read pass; the same decode over fp32 K/V) in turn, and the ratio of
    their summed times is the benchmark's own counter."""
    def table(prefix, title, header, sort_key, columns):
        keys = sorted((k for k in by_key if k[0].startswith(prefix)), key=sort_key)
        if not keys:
            return
        print(f"\n{title}\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for f, key in keys:
            print("| " + " | ".join(columns(f[len(prefix):-1], dict(key), by_key[(f, key)])) + " |")

    table("serving_decode_paired<",
          "Serving decode paired with the read pass in every iteration (median ms; "
          "read fraction = decode GB/s / read-pass GB/s, summed over the same iterations)",
          ["backend", "B", "Nkv", "threads", "attn ms", "GB/s", "read pass GB/s", "read fraction"],
          lambda k: (k[0], int(dict(k[1])["threads"]), int(dict(k[1])["B"])),
          lambda backend, a, b: [backend, a["B"], a["Nkv"], a["threads"], f"{ms(b):.2f}",
                                 f"{rate(b, 'GB/s'):.1f}", f"{rate(b, 'GB/s') / counter(b, 'read_fraction'):.1f}",
                                 f"{counter(b, 'read_fraction'):.2f}"])
    table("precision_decode_paired<",
          "Decode over 16-bit and int8 K/V paired with fp32 K/V in every iteration (median ms; "
          "× fp32 = fp32's time / this type's, summed over the same iterations)",
          ["backend", "K/V", "Nkv", "threads", "ms", "GB/s (bytes stored)", "× fp32"],
          lambda k: (k[0].split(",")[0], int(dict(k[1])["threads"]), k[0]),
          lambda name, a, b: [*name.split(","), a["Nkv"], a["threads"], f"{ms(b):.2f}",
                              f"{rate(b, 'GB/s'):.1f}", f"{counter(b, 'x_fp32'):.2f}"])

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench.json")
