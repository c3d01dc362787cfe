#!/usr/bin/env bash
# Pair throughput and worker memory, with the real binaries on loopback.
#
# A master holds a SIZE_MIB image (default 1024); one worker fetches it through
# the swarm. Reported in the same run:
#   * a plain TCP copy of the same file over loopback (python sendfile to a
#     receiver that writes it to disk), the baseline, after an untimed one;
#   * the worker's time from start to `imageswarm wait` returning (list fetch,
#     connection, manifest, every chunk verified and synced);
#   * the ratio of the two throughputs, and the worker's peak RSS (VmHWM);
#   * CPU seconds (user + system) per GiB: the master's per GiB sent, the
#     worker's per GiB received, and the plain copy's (both ends together),
#     read from /proc over the transfer.
#
#   bash bench/pair.sh [SIZE_MIB] [CHUNK_BYTES=4194304]
#   PROFILE=DIR bash bench/pair.sh     # also perf-record the worker into DIR/perf.data
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-1024}
chunk=${2:-4194304}
# shellcheck source=bench/site.sh
source "$root/bench/site.sh"
work=$(mktemp -d -t imageswarm-pair.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"

serve_site "$size_mib" "$chunk"

# cpu_secs PID: the user + system CPU seconds the process has used so far.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
pids+=("$server")

for h in master worker; do
  init_host "$h" "$url"
done
member master master

"$trk" --listen /ip4/127.0.0.1/tcp/0 $(tracker_trust) > tracker.out &
pids+=($!)
for _ in $(seq 50); do [ -s tracker.out ] && break; sleep 0.1; done
tracker=$(head -n1 tracker.out)

"$bin" --data-dir master node --listen /ip4/127.0.0.1/tcp/0 --tracker "$tracker" $(closed master) --master \
  --announce-interval 1 > master.out 2> master.err &
master=$!
pids+=($master)
"$bin" --data-dir master wait "$uuid" --timeout 600 >/dev/null

# tcp_copy DST: copies the image over loopback TCP into DST; prints the seconds.
tcp_copy() {
  /usr/bin/time -f "%U %S" -o tcp-cpu python3 - "$(free_port)" www/image.img "$1" <<'PY'
import socket, sys, threading, time
port, src, dst = int(sys.argv[1]), sys.argv[2], sys.argv[3]
srv = socket.socket(); srv.bind(("127.0.0.1", port)); srv.listen(1)
def receive():
    conn, _ = srv.accept()
    buf = bytearray(1 << 20); view = memoryview(buf)
    with open(dst, "wb") as out:
        while True:
            n = conn.recv_into(buf)
            if n == 0: break
            out.write(view[:n])
done = threading.Thread(target=receive); done.start()
t0 = time.perf_counter()
with socket.create_connection(("127.0.0.1", port)) as s, open(src, "rb") as f:
    s.sendfile(f)
done.join()
print(time.perf_counter() - t0)
PY
}

echo "== baseline: plain TCP copy of ${size_mib} MiB over loopback"
# On a virtual machine whose host takes back free memory, the first GiB a run
# writes lands on pages still warm from the set-up and copies 3-4 times as
# fast as anything written after it (0.7 s against 2.2-3.5 s here). An untimed
# first copy takes those pages, so that the timed copy and the worker write
# onto the same kind of page.
warm_secs=$(tcp_copy warm-copy.img)
tcp_secs=$(tcp_copy tcp-copy.img)

echo "== imageswarm: one worker fetches it from the master"
wrap=()
if [ -n "${PROFILE:-}" ]; then
  mkdir -p "$PROFILE"
  wrap=(perf record -F 499 -g -o "$PROFILE/perf.data" --)
fi
master_cpu0=$(cpu_secs "$master")
t0=$(date +%s.%N)
"${wrap[@]}" "$bin" --data-dir worker node --listen /ip4/127.0.0.1/tcp/0 --tracker "$tracker" $(closed worker) \
  --announce-interval 1 > worker.out 2> worker.err &
worker=$!
pids+=($worker)
"$bin" --data-dir worker wait "$uuid" --timeout 600 >/dev/null
t1=$(date +%s.%N)
master_cpu=$(python3 -c "print($(cpu_secs "$master") - $master_cpu0)")
if [ -n "${PROFILE:-}" ]; then
  worker=$(pgrep -P "$worker" imageswarm || echo "$worker")
fi
worker_cpu=$(cpu_secs "$worker")
tcp_cpu=$(awk '{print $1 + $2}' tcp-cpu)
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$worker/status")
swarm_secs=$(python3 -c "print($t1 - $t0)")

python3 - "$size_mib" "$tcp_secs" "$swarm_secs" "$rss_kib" "$warm_secs" "$master_cpu" "$worker_cpu" "$tcp_cpu" <<'PY'
import sys
mib, tcp, swarm, rss, warm = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
master_cpu, worker_cpu, tcp_cpu = map(float, sys.argv[6:9])
gib = mib / 1024
print(f"plain TCP copy: {tcp:.2f} s = {mib / tcp:.0f} MiB/s (an untimed first copy: {warm:.2f} s)")
print(f"imageswarm pair: {swarm:.2f} s = {mib / swarm:.0f} MiB/s")
print(f"ratio: {tcp / swarm:.3f} (goal >= 0.4)")
print(f"worker peak RSS: {rss / 1024:.1f} MiB (goal <= 100 MiB)")
print(f"CPU per GiB: master {master_cpu / gib:.2f} s sent, worker {worker_cpu / gib:.2f} s received "
      f"(start-up included); plain TCP copy {tcp_cpu / gib:.2f} s, both ends")
PY
