#!/usr/bin/env python3
"""Runs a command, passing its output through, and writes the CPU seconds it used (user and
system, its own children included) to a file:

    python3 bench/cputime.py OUT_FILE COMMAND [ARGS...]

The benchmarks report CPU beside wall time: on a shared 2-core VM wall time moves with the
neighbours, CPU per record much less."""
import resource
import subprocess
import sys

out, command = sys.argv[1], sys.argv[2:]
code = subprocess.call(command)
used = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out, "w") as f:
    f.write(f"{used.ru_utime + used.ru_stime:.2f}\n")
sys.exit(code)
