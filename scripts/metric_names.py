#!/usr/bin/env python3
"""Every metric the alert rules and dashboards name is one a Pitgun service exports, so a renamed
metric cannot leave a silent alert or an empty panel behind. Usage: metric_names.py FILE...
(rule files and dashboard JSON). Exit 1 naming each unknown metric."""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
# Where each service registers its metrics, and the prefix its registry adds (none: full names).
SOURCES = {
    "pitgun_processor_": (root / "processor/src/metrics.rs", True),
    "pitgun_sink_": (root / "sink/src/metrics.rs", True),
    "pitgun_gateway_": (root / "ingest/src/metrics.rs", False),
    "pitgun_api_": (root / "api/src", False),
}


def registered(name):
    for prefix, (path, prefixed) in SOURCES.items():
        if name.startswith(prefix):
            files = [path] if path.is_file() else sorted(path.rglob("*.rs"))
            text = "".join(f.read_text() for f in files)
            return f'"{name.removeprefix(prefix) if prefixed else name}"' in text
    return False


names = set()
for f in sys.argv[1:]:
    for name in re.findall(r"\bpitgun_[a-z0-9_]+", open(f).read()):
        names.add(re.sub(r"_(bucket|sum|count)$", "", name))
unknown = sorted(n for n in names if not registered(n))
for n in unknown:
    print(f"metric_names: {n} is named in {' '.join(sys.argv[1:])} but no service exports it", file=sys.stderr)
if not names:
    print("metric_names: no metric found; wrong files?", file=sys.stderr)
print(f"metric_names: {len(names) - len(unknown)} of {len(names)} metrics named are exported")
sys.exit(1 if unknown or not names else 0)
