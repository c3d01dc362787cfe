#!/usr/bin/env bash
# A tracker under a site's announcements, through the real libp2p stack on
# loopback.
#
# PEERS peers (default 10,000), each with its own key and connection,
# announce IMAGES images (default 10) every PERIOD seconds (default 30).
# The tracker runs on one core (taskset -c 0), the load on the other. After
# the peers joined and one more period, the load measures for the rest of
# DURATION seconds (default 150) and prints one line:
#   result: ... announces_per_s=… p50_ms=… p99_ms=… max_ms=… failed=…
#           tracker_cpu=… rss_start_mib=… rss_end_mib=…
# tracker_cpu is the tracker's CPU seconds per second of the window (1.0 is
# one core busy), so announces_per_s / tracker_cpu is what one core serves.
# Then it prints that capacity and the goal: 5,000 announces/s on one core,
# p99 under 10 ms, RSS flat.
#
#   bash bench/tracker-load.sh [PEERS] [IMAGES] [PERIOD]
#   DURATION=300 bash bench/tracker-load.sh 10000 10 15
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${1:-10000}
images=${2:-10}
period=${3:-30}
duration=${DURATION:-150}
cd "$root"
cargo build --release --locked -q -p imageswarm-tracker --bin imageswarm-tracker
cargo build --release --locked -q -p imageswarm-tests --example tracker_load
# One descriptor per connection in each process, and some to spare.
want=$((peers + 1024))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want" ]; then
  echo "needs $want open files per process; the hard limit is $(ulimit -Hn)" >&2
  exit 1
fi
ulimit -n "$want"
work=$(mktemp -d -t imageswarm-tracker-load.XXXXXX)
tracker_pid=""
cleanup() { [ -n "$tracker_pid" ] && kill "$tracker_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

taskset -c 0 target/release/imageswarm-tracker --listen /ip4/127.0.0.1/tcp/0 --open-site \
  --max-connections $((peers + 100)) --max-per-ip $((peers + 100)) >"$work/addr" 2>"$work/tracker.log" &
tracker_pid=$!
for _ in $(seq 100); do [ -s "$work/addr" ] && break; sleep 0.1; done
addr=$(head -n1 "$work/addr")
[ -n "$addr" ] || { cat "$work/tracker.log" >&2; echo "the tracker did not start" >&2; exit 1; }
echo "tracker $addr (pid $tracker_pid) on core 0; $peers peers x $images images every ${period}s, ${duration}s"
taskset -c 1 target/release/examples/tracker_load "$addr" "$tracker_pid" "$peers" "$images" "$period" "$duration" \
  2>"$work/load.log" | tee "$work/result"
grep -E 'answers/s' "$work/load.log" | awk 'NR % 10 == 0' >&2
python3 - "$work/result" <<'PY'
import re, sys
f = dict(re.findall(r'(\w+)=([\d.]+|nan)', open(sys.argv[1]).read()))
rate, cpu, p99 = float(f['announces_per_s']), float(f['tracker_cpu']), float(f['p99_ms'])
rss0, rss1 = float(f['rss_start_mib']), float(f['rss_end_mib'])
per_core = rate / cpu if cpu > 0 else float('inf')
print(f"one core serves about {per_core:.0f} announces/s (goal >= 5000: {'holds' if per_core >= 5000 else 'missed'})")
print(f"p99 {p99:.2f} ms (goal < 10 ms: {'holds' if p99 < 10 else 'missed'})")
grow = rss1 - rss0
print(f"RSS {rss0:.0f} -> {rss1:.0f} MiB over the window (flat within 10%: {'holds' if abs(grow) <= 0.1 * rss0 else 'missed'})")
PY
