#!/usr/bin/env python3
"""Draws the dashboards' panels from a running Prometheus as one SVG picture (no Grafana needed),
for the README: each panel's queries over the last minutes, one line per series.

    scripts/panels.py --prometheus 127.0.0.1:9090 [--minutes 10] [--var manifest=lap-performance]
                      [--var version=1] --out docs/dashboards.svg k8s/monitoring/dashboards/*.json

Standard library only. Exit 1 naming a query Prometheus refuses."""
import argparse
import html
import json
import re
import sys
import time
import urllib.parse
import urllib.request

W, H, COLS, PAD, HEAD = 420, 190, 3, 14, 34
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def query_range(prom, expr, start, end, step):
    qs = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"http://{prom}/api/v1/query_range?{qs}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        sys.exit(f"panels: Prometheus refused {expr}: {body}")
    return body["data"]["result"]


def legend(fmt, metric):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt or "") or json.dumps(metric)


def panel_svg(x, y, title, unit, series):
    out = [f'<g transform="translate({x},{y})">', f'<rect width="{W}" height="{H}" fill="#fff" stroke="#ccc"/>',
           f'<text x="8" y="16" font-size="12" font-weight="bold">{html.escape(title)}</text>']
    points = [(t, v) for _, vals in series for t, v in vals]
    if not points:
        out.append('<text x="8" y="40" font-size="11" fill="#999">no data</text></g>')
        return out
    t0, t1 = min(p[0] for p in points), max(p[0] for p in points)
    v1 = max(max(p[1] for p in points), 1e-9)
    left, top, pw, ph = 46, 26, W - 56, H - 64
    out.append(f'<text x="4" y="{top + 8}" font-size="9" fill="#666">{v1:.3g}</text>')
    out.append(f'<text x="4" y="{top + ph}" font-size="9" fill="#666">0 {html.escape(unit)}</text>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#ddd"/>')
    for i, (name, vals) in enumerate(series[:8]):
        pts = " ".join(f"{left + pw * (t - t0) / max(t1 - t0, 1):.1f},{top + ph - ph * v / v1:.1f}" for t, v in vals)
        color = COLORS[i % len(COLORS)]
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>')
        if i < 4:
            out.append(f'<text x="{left + (i % 2) * 180}" y="{H - 22 + (i // 2) * 12}" font-size="9" fill="{color}">{html.escape(name[:34])}</text>')
    out.append("</g>")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", required=True, help="host:port of the Prometheus to query")
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--var", action="append", default=[], help="NAME=VALUE for $NAME in the queries")
    ap.add_argument("--out", required=True)
    ap.add_argument("dashboards", nargs="+")
    a = ap.parse_args()
    end = time.time()
    start, step = end - 60 * a.minutes, max(5, a.minutes * 60 // 120)
    vars_ = dict(v.split("=", 1) for v in a.var)
    body, y = [], 0
    for path in a.dashboards:
        d = json.load(open(path))
        body.append(f'<text x="{PAD}" y="{y + 24}" font-size="16" font-weight="bold">{html.escape(d["title"])}</text>')
        y += HEAD
        for i, p in enumerate(d["panels"]):
            series = []
            for t in p.get("targets", []):
                expr = t["expr"].replace("$__rate_interval", "1m")
                for k, v in vars_.items():
                    expr = expr.replace(f"${k}", v)
                for r in query_range(a.prometheus, expr, start, end, step):
                    vals = [(float(ts), float(v)) for ts, v in r["values"] if v not in ("NaN", "+Inf", "-Inf")]
                    series.append((legend(t.get("legendFormat"), r["metric"]), vals))
            body += panel_svg(PAD + (i % COLS) * (W + PAD), y + (i // COLS) * (H + PAD), p["title"], p["fieldConfig"]["defaults"].get("unit", ""), series)
        y += ((len(d["panels"]) + COLS - 1) // COLS) * (H + PAD)
    width = PAD + COLS * (W + PAD)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + PAD}" font-family="sans-serif">',
           f'<rect width="{width}" height="{y + PAD}" fill="#f7f7f7"/>'] + body + ["</svg>"]
    open(a.out, "w").write("\n".join(svg) + "\n")
    print(f"panels: {a.out}: {sum(len(json.load(open(p))['panels']) for p in a.dashboards)} panels over {a.minutes} min from {a.prometheus}")


main()
