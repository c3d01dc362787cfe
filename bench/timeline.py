"""Per-worker timelines of a testbed run, from the node logs that
`KEEP=DIR bash bench/testbed.sh` leaves in DIR.

    python3 bench/timeline.py DIR BOUND_SECONDS

For each worker, in units of the Kumar-Ross bound from the start of the
swarm phase: when its process logged first (start), verified its list
(list), met its first peer (peer), held the manifest (manifest), received
its first and last chunk (first, last) and installed the image (done).
The last lines give the median and the latest of each column. The logs
need `hello received` and `chunk received`, which the node traces at
RUST_LOG=info,node::net::event_loop::peers=trace (testbed.sh sets it when
KEEP is given and RUST_LOG is not).
"""
import datetime
import glob
import os
import re
import statistics
import sys

COLUMNS = ["start", "list", "peer", "manifest", "first", "last", "done"]
MARKS = [
    ("list", "list accepted"),
    ("peer", "hello received"),
    ("manifest", "manifest received"),
    ("first", "chunk received"),
    ("done", "image available"),
]


def stamp(line):
    return datetime.datetime.strptime(line[:27], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def timeline(path, t0):
    seen = {}
    with open(path, errors="replace") as f:
        for line in f:
            try:
                t = stamp(line) - t0
            except ValueError:
                continue
            seen.setdefault("start", t)
            for col, text in MARKS:
                if text in line:
                    seen.setdefault(col, t)
            if "chunk received" in line:
                seen["last"] = t
    return seen


def main():
    d, bound = sys.argv[1], float(sys.argv[2])
    t0 = float(open(os.path.join(d, "phase")).read().split()[0])
    paths = sorted(glob.glob(os.path.join(d, "w*.err")), key=lambda p: int(re.sub(r"\D", "", os.path.basename(p))))
    rows = [(os.path.basename(p)[:-4], timeline(p, t0)) for p in paths]
    print("worker " + " ".join(f"{c:>8}" for c in COLUMNS) + "   (x the bound)")
    cell = lambda v: f"{v / bound:8.3f}" if v is not None else "       -"
    for name, seen in rows:
        print(f"{name:6} " + " ".join(cell(seen.get(c)) for c in COLUMNS))
    for label, f in (("median", statistics.median), ("latest", max)):
        vals = [[s[c] for _, s in rows if c in s] for c in COLUMNS]
        print(f"{label:6} " + " ".join(cell(f(v)) if v else "       -" for v in vals))


if __name__ == "__main__":
    main()
