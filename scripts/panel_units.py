#!/usr/bin/env python3
"""A dashboard panel drawn in bytes plots only byte counts: a panel in `Bps` once showed two
changelog chain restarts as "2 B/s" beside the real throughput. A query of another kind needs an
override (by its refId) giving it a unit of its own. Usage: panel_units.py DASHBOARD.json...
Exit 1 naming each such query."""
import json
import re
import sys

BYTE_UNITS = {"bytes", "decbytes", "Bps", "binBps", "KBs", "MBs"}
problems = []
for f in sys.argv[1:]:
    for panel in json.load(open(f)).get("panels", []):
        config = panel.get("fieldConfig", {})
        if config.get("defaults", {}).get("unit") not in BYTE_UNITS:
            continue
        own_unit = {
            o["matcher"]["options"]
            for o in config.get("overrides", [])
            if o.get("matcher", {}).get("id") == "byFrameRefID" and any(p.get("id") == "unit" for p in o.get("properties", []))
        }
        for t in panel.get("targets", []):
            metrics = re.findall(r"\bpitgun_[a-z0-9_]+", t.get("expr", ""))
            if t.get("refId") not in own_unit and not all("bytes" in m for m in metrics):
                problems.append(f"{f}: panel {panel.get('title')!r}: query {t.get('refId')} ({', '.join(metrics)}) is not in bytes; give it an override with its own unit")
for p in problems:
    print(f"panel_units: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
