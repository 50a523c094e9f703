#!/usr/bin/env bash
# The machine a benchmark ran on, printed once at its start: cores, CPU model, memory, and what
# the cores give together. On a VM, "2 cores" need not be two cores' worth: when both are busy
# each may run slower (host hyperthreads, a CPU quota), and that bounds every ratio of a
# two-threaded side to a one-threaded one. So the same busy loop runs for SECONDS alone, then
# once per core at the same time, and the combined rate is printed as a multiple of the one.
#
#   bash bench/machine.sh [SECONDS]      (default 2 per phase)
set -euo pipefail
SECONDS_PER_PHASE="${1:-2}"
CORES="$(nproc)"
echo "machine: $CORES cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
python3 - "$SECONDS_PER_PHASE" "$CORES" <<'PY'
import multiprocessing as mp, sys, time

def spin(seconds, out):
    # An integer loop: no memory traffic, so it measures the cores, not the caches.
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        for i in range(10_000):
            n += i
        out.value += 1

def rate(workers, seconds):
    # fork: the loop is defined in this script read from stdin, which a spawned or forkserver
    # child (Python 3.14's default) could not import.
    ctx = mp.get_context("fork")
    counts = [ctx.Value("q", 0, lock=False) for _ in range(workers)]
    procs = [ctx.Process(target=spin, args=(seconds, c)) for c in counts]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return sum(c.value for c in counts) / seconds

seconds, cores = float(sys.argv[1]), int(sys.argv[2])
one = rate(1, seconds)
all_ = rate(cores, seconds)
print(f"parallel capacity: {cores} busy cores do {all_ / one:.2f}x the work of one (a busy loop, {seconds:g} s each way)")
PY
