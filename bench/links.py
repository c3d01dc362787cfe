"""Link use on the testbed, from the switch's port counters.

    links.py sample FILE SECONDS
        Run inside the switch namespace: every 50 ms, appends one line to FILE
        with the time and, for every port pK, the bytes it received (host K's
        upload) and sent (host K's download). Stops after SECONDS.

    links.py report FILE T0 RATE MASTER_PORT DONE... --ports P... [--table OUT]
        Summarises the swarm phase that started at T0 (Unix seconds) on links
        of RATE Mbit/s: when the master's uplink was busy and at what rate,
        and how much of each worker's downlink was used from the master's
        first byte until the worker finished (DONE, Unix seconds, one per
        worker, in the order of --ports). --table writes the rates per step
        (about 50 ms) to OUT.

Bytes are counted on the wire as the veth devices see them (with TCP/IP
headers and, for imageswarm, Noise and yamux framing).
"""

import os
import sys
import time


def sample(path, seconds):
    ports = sorted((d for d in os.listdir("/sys/class/net") if d.startswith("p")), key=lambda d: int(d[1:]))
    files = [
        (d, open(f"/sys/class/net/{d}/statistics/rx_bytes"), open(f"/sys/class/net/{d}/statistics/tx_bytes"))
        for d in ports
    ]
    end = time.time() + seconds
    with open(path, "w") as out:
        while time.time() < end:
            row = [f"{time.time():.4f}"]
            for d, rx, tx in files:
                rx.seek(0)
                tx.seek(0)
                row.append(f"{d}:{rx.read().strip()}:{tx.read().strip()}")
            out.write(" ".join(row) + "\n")
            out.flush()
            time.sleep(0.05)


def report(path, t0, rate_mbit, master, done, ports, table):
    rows = []
    for line in open(path):
        t, *cols = line.split()
        counts = {}
        for c in cols:
            name, rx, tx = c.split(":")
            counts[int(name[1:])] = (int(rx), int(tx))
        rows.append((float(t) - t0, counts))
    before = [r for r in rows if r[0] <= 0]
    if not before or rows[-1][0] < max(done) - t0:
        sys.exit("links: the samples do not cover the swarm phase")
    start = before[-1]
    steps = []  # (end of step, its length, master up, [worker down...]) in Mbit/s
    prev = start
    for r in rows[len(before):]:
        dt = r[0] - prev[0]
        rate = lambda p, k: (r[1][p][k] - prev[1][p][k]) * 8 / dt / 1e6  # noqa: E731
        steps.append((r[0], dt, rate(master, 0), [rate(p, 1) for p in ports]))
        prev = r
    busy = [(t, dt) for t, dt, up, _ in steps if up > rate_mbit / 2]
    first, last = busy[0][0] - busy[0][1], busy[-1][0]
    sent = (rows[-1][1][master][0] - start[1][master][0]) * 8 / 1e6
    use = []
    for i, p in enumerate(ports):
        finished = done[i] - t0
        got = sum(d[i] * dt for t, dt, _, d in steps if first < t <= finished)
        use.append(got / ((finished - first) * rate_mbit) if finished > first else 0)
    print(
        f"links (on the wire): the master sent from {first:.2f} s to {last:.2f} s, "
        f"{sent / (last - first):.0f} Mbit/s while busy; "
        f"worker downlinks {100 * min(use):.0f}–{100 * max(use):.0f} % used from then until each finished; "
        f"the last worker finished "
        f"{max(done) - t0 - last:.2f} s after the master's last byte"
    )
    if table:
        with open(table, "w") as out:
            out.write("t       master-up  " + " ".join(f"{'dn' + str(p):>5}" for p in ports) + "  (Mbit/s per step)\n")
            for t, _, up, down in steps:
                out.write(f"{t:6.2f} {up:9.0f}  " + " ".join(f"{d:5.0f}" for d in down) + "\n")


def main(argv):
    if argv[:1] == ["sample"]:
        sample(argv[1], float(argv[2]))
    elif argv[:1] == ["report"]:
        args, table, ports = argv[1:], None, []
        if "--table" in args:
            k = args.index("--table")
            table = args[k + 1]
            del args[k : k + 2]
        if "--ports" in args:
            k = args.index("--ports")
            ports = [int(p) for p in args[k + 1 :]]
            del args[k:]
        path, t0, rate_mbit, master, *done = args
        report(path, float(t0), float(rate_mbit), int(master), [float(d) for d in done], ports, table)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
