#!/usr/bin/env bash
# A master under load through the real libp2p stack, on loopback: PEERS peers
# (default 64), each with its own key and connection, ask it for chunks of a
# SIZE_MIB image (default 64) without pause for DURATION seconds (default
# 600), as tests/examples/node_load.rs describes. The master runs on one core
# (taskset -c 0), the load on the other. It prints the load's `result:` line
# and whether the master's RSS, descriptors and threads stayed flat, the last
# minute against the first (after every peer connected): the medians of RSS
# (within 10%) and descriptors (within 5%), and the most threads, within the
# 4 that disk work may add to tokio's blocking pool at once.
#
#   bash bench/node-load.sh [PEERS] [SIZE_MIB]
#   DURATION=120 bash bench/node-load.sh 64
#
# The site is open (the load's peers hold no credential) and the master's
# per-IP cap is raised to take every peer from 127.0.0.1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${1:-64}
size_mib=${2:-64}
duration=${DURATION:-600}
export OPEN=1
# shellcheck source=bench/site.sh
source "$root/bench/site.sh"
cargo build --release --locked -q --manifest-path "$root/Cargo.toml" -p imageswarm-tests --example node_load
work=$(mktemp -d -t imageswarm-node-load.XXXXXX)
master_pid=""
cleanup() {
  [ -n "$master_pid" ] && kill "$master_pid" 2>/dev/null
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

serve_site "$size_mib"
init_host master "$url"
port=$(free_port)
id=$("$bin" --data-dir master peer-id)
taskset -c 0 "$bin" --data-dir master node --listen "/ip4/127.0.0.1/tcp/$port" $(closed master) --master \
  --max-per-ip "$((peers + 16))" 2>master.err >/dev/null &
master_pid=$!
"$bin" --data-dir master wait "$uuid" --timeout 600 >/dev/null
echo "master /ip4/127.0.0.1/tcp/$port/p2p/$id (pid $master_pid) on core 0 holds $size_mib MiB in $chunking;" \
  "$peers peers for ${duration}s"
taskset -c 1 "$root/target/release/examples/node_load" "/ip4/127.0.0.1/tcp/$port/p2p/$id" "$master_pid" list.json \
  "$peers" "$duration" 2>load.log | tee result
awk 'NR % 6 == 0' load.log >&2
kill -0 "$master_pid" 2>/dev/null || { echo "the master died: $(tail -n 5 master.err)" >&2; exit 1; }
python3 - result <<'PY'
import re, sys
f = {k: float(v) for k, v in re.findall(r'(\w+)=([\d.]+)', open(sys.argv[1]).read())}
ok = True
for name, first, last, slack in [("RSS, MiB", "rss_first_mib", "rss_last_mib", 0.10 * f["rss_first_mib"]),
                                  ("descriptors", "fds_first", "fds_last", 0.05 * f["fds_first"]),
                                  ("threads at most", "threads_first", "threads_last", 4)]:
    a, b = f[first], f[last]
    flat = b <= a + slack
    ok &= flat
    print(f"{name}: {a:.0f} -> {b:.0f} (flat, up to {slack:.0f} more: {'holds' if flat else 'missed'})")
print(f"threads over the run: {f['threads_min']:.0f} to {f['threads_max']:.0f}")
print(f"served {f['mib_per_s']:.1f} MiB/s to {f['connected']:.0f} peers at {f['node_cpu']:.2f} of a core")
sys.exit(0 if ok else 1)
PY
