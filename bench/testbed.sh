#!/usr/bin/env bash
# The testbed: one master and N workers in network namespaces, every host on
# its own veth link to a bridge, each link capped in both directions with
# `tc tbf`. Runs the real binaries and reports the time until every worker
# holds the verified image, as a ratio to the Kumar–Ross bound, next to a
# central HTTP server (the master's host serving every worker) on the same
# testbed. Every host holds the others' MAC addresses from the start, as on
# a LAN that answers ARP (`resolved` in bench/site.sh says why). It also
# prints how much TCP sent again, summed over the hosts. Needs root
# (ip netns); touches nothing outside the namespaces it creates, and removes
# them on exit.
#
#   bash bench/testbed.sh [N=8] [RATE_MBIT=200] [SIZE_MIB=128] [CHUNK_BYTES]
#
# Without CHUNK_BYTES the image is cut as `imageswarm list add-image` cuts it
# by default (64 MiB: 128 KiB chunks). NO_CENTRAL=1 skips the central HTTP
# baseline (it does not change between builds), for quick comparisons.
# LINKS=DIR samples every port of the switch during the swarm phase (see
# bench/links.py), reports how busy the master's uplink and the workers'
# downlinks were, and leaves the samples and a 50 ms timeline in DIR.
# KEEP=DIR copies every node's log (stderr; RUST_LOG sets what they log, by
# default what bench/timeline.py reads) and the swarm phase's start and end
# times into DIR, and prints each worker's timeline (bench/timeline.py).
# PROFILE=DIR records the whole machine with `perf record -a -g` during the
# swarm phase into DIR/perf.data (`perf report -i DIR/perf.data --sort
# comm,dso,sym`; kernel call chains are whole, the binaries' are not). perf
# takes CPU of its own, so a profiled run is slower than the figures.
# ARIA2=1 also runs BitTorrent on the same testbed: opentracker on the
# infrastructure host, aria2c seeding from the master's host and fetching on
# every worker (every worker keeps seeding once done), pieces of 256 KiB
# (apt-get install aria2 opentracker mktorrent).
# The site is closed (every host holds a credential of the site's authority;
# see bench/site.sh); OPEN=1 runs it open, to measure what admission costs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-8}
rate=${2:-200}
size_mib=${3:-128}
chunk=${4:-}
# shellcheck source=bench/site.sh
source "$root/bench/site.sh"
if [ -n "${ARIA2:-}" ]; then
  for c in aria2c opentracker mktorrent; do
    command -v "$c" >/dev/null || { echo "ARIA2=1 needs $c: apt-get install aria2 opentracker mktorrent" >&2; exit 1; }
  done
fi
work=$(mktemp -d -t imageswarm-testbed.XXXXXX)
tag="isw$$"
hosts=(infra master)
for i in $(seq "$n"); do hosts+=("w$i"); done

cleanup() {
  for h in "${hosts[@]}"; do ip netns pids "$tag-$h" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
  sleep 0.3
  for h in "${hosts[@]}" sw; do ip netns del "$tag-$h" 2>/dev/null || true; done
  rm -rf "$work" "$work.whitelist"
}
trap cleanup EXIT

# The switch: a bridge in a namespace of its own.
ip netns add "$tag-sw"
ip -n "$tag-sw" link add br0 type bridge
ip -n "$tag-sw" link set br0 up
k=1
ends=()
for h in "${hosts[@]}"; do
  ns="$tag-$h"
  ip netns add "$ns"
  ip link add "v$k" netns "$ns" type veth peer name "p$k" netns "$tag-sw"
  ip -n "$ns" addr add "10.77.0.$k/24" dev "v$k"
  ip -n "$ns" link set "v$k" up
  ip -n "$ns" link set lo up
  ip -n "$tag-sw" link set "p$k" master br0 up
  if [ "$h" != infra ]; then
    # Egress of the host and egress of the switch port towards it: both ways capped.
    ip netns exec "$ns" tc qdisc add dev "v$k" root tbf rate "${rate}mbit" burst 256kb latency 50ms
    ip netns exec "$tag-sw" tc qdisc add dev "p$k" root tbf rate "${rate}mbit" burst 256kb latency 50ms
  fi
  eval "ip_$h=10.77.0.$k"
  ends+=("$ns:v$k")
  k=$((k + 1))
done
in_ns() { local h=$1; shift; ip netns exec "$tag-$h" "$@"; }
resolved "${ends[@]}"

if [ -n "${KEEP:-}" ] && [ -z "${RUST_LOG:-}" ]; then
  export RUST_LOG=info,node::net::event_loop::peers=trace
fi

cd "$work"
url="http://$ip_infra:8000"
make_site "$size_mib" "$url" "$chunk"
in_ns infra python3 -m http.server 8000 --bind "$ip_infra" --directory www >/dev/null 2>&1 &
sleep 0.5
for h in "${hosts[@]:1}"; do
  init_host "$h" "$url" in_ns "$h"
done
member master master
in_ns infra "$trk" --listen "/ip4/$ip_infra/tcp/4000" $(tracker_trust) > tracker.out 2>/dev/null &
for _ in $(seq 50); do [ -s tracker.out ] && break; sleep 0.1; done
tracker=$(head -n1 tracker.out)

# The master fetches the image from the source (over its capped link); the
# clock starts once it holds the image.
in_ns master "$bin" --data-dir master node --listen "/ip4/$ip_master/tcp/4001" --tracker "$tracker" \
  $(closed master) $([ -n "${OPEN:-}" ] || echo --site-crl authority/crl.pem) --master --announce-interval 1 2>master.err >/dev/null &
"$bin" --data-dir master wait "$uuid" --timeout 600 >/dev/null

links_pid=
if [ -n "${LINKS:-}" ]; then
  mkdir -p "$LINKS"
  ip netns exec "$tag-sw" python3 "$root/bench/links.py" sample "$LINKS/samples" 900 &
  links_pid=$!
  sleep 0.3
fi

echo "== imageswarm: $n workers at $rate Mbit/s, ${size_mib} MiB in $chunking"
# The machine's CPU counters (jiffies: all, idle + iowait) around the swarm phase.
cpu_now() { awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat; }
cpu0=$(cpu_now)
perf_pid=
if [ -n "${PROFILE:-}" ]; then
  mkdir -p "$PROFILE"
  perf record -a -g -F 499 -o "$PROFILE/perf.data" 2>"$PROFILE/perf.err" &
  perf_pid=$!
fi
t0=$(date +%s.%N)
for i in $(seq "$n"); do
  in_ns "w$i" "$bin" --data-dir "w$i" node --listen "/ip4/$(eval echo \$ip_w$i)/tcp/4001" --tracker "$tracker" \
    $(closed "w$i") --announce-interval 1 2>"w$i.err" >/dev/null &
done
waits=()
for i in $(seq "$n"); do
  ( "$bin" --data-dir "w$i" wait "$uuid" --timeout 900 >/dev/null && date +%s.%N > "done-$i" ) &
  waits+=($!)
done
for p in "${waits[@]}"; do wait "$p"; done
t1=$(date +%s.%N)
cpu1=$(cpu_now)
if [ -n "$perf_pid" ]; then
  kill -INT "$perf_pid"
  wait "$perf_pid" || true
fi
done_at=$(for i in $(seq "$n"); do cat "done-$i"; done | tr '\n' ' ')
echo "$t0 $t1 $done_at" > phase
if [ -n "$links_pid" ]; then
  sleep 0.2
  kill "$links_pid"
fi
for h in "${hosts[@]:1}"; do ip netns pids "$tag-$h" | xargs -r kill 2>/dev/null || true; done
# Every host's TCP counters, summed over the hosts (the namespaces are new, so
# they count the set-up and the swarm phase).
tcp=$(for h in "${hosts[@]:1}"; do
  in_ns "$h" nstat -saz TcpExtTCPOrigDataSent TcpRetransSegs TcpExtTCPTimeouts TcpExtTCPSynRetrans
done | awk '!/^#/ {s[$1] += $2} END {print s["TcpExtTCPOrigDataSent"] + 0, s["TcpRetransSegs"] + 0, s["TcpExtTCPTimeouts"] + 0, s["TcpExtTCPSynRetrans"] + 0}')
exact=0
for i in $(seq "$n"); do cmp -s www/image.img "w$i/images/$uuid" && exact=$((exact + 1)); done

h0=0 h1=0
if [ -z "${NO_CENTRAL:-}" ]; then
  echo "== central HTTP: the master's host serves all $n workers"
  in_ns master python3 -m http.server 8001 --bind "$ip_master" --directory www >/dev/null 2>&1 &
  sleep 0.5
  h0=$(date +%s.%N)
  fetches=()
  for i in $(seq "$n"); do
    in_ns "w$i" python3 -c "import urllib.request,sys; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])" \
      "http://$ip_master:8001/image.img" "central-$i.img" &
    fetches+=($!)
  done
  for p in "${fetches[@]}"; do wait "$p"; done
  h1=$(date +%s.%N)
fi

a0=0 a1=0
if [ -n "${ARIA2:-}" ]; then
  echo "== aria2 + opentracker: the master's host seeds, every worker fetches and seeds"
  mktorrent -a "http://$ip_infra:6969/announce" -l 18 -o image.torrent www/image.img >/dev/null
  # Debian's opentracker serves whitelisted torrents only. It runs from /
  # (it chroots to its working directory) as nobody, so the whitelist must be
  # readable by all, outside the private $work.
  aria2c -S image.torrent | sed -n 's/^Info Hash: //p' > "$work.whitelist"
  chmod 644 "$work.whitelist"
  (cd / && in_ns infra opentracker -i "$ip_infra" -p 6969 -P 6969 -w "$work.whitelist" >/dev/null 2>&1) &
  aria_opts=(--enable-dht=false --bt-enable-lpd=false --disable-ipv6=true --seed-ratio=0.0 --file-allocation=none
    --bt-tracker-interval=1 --summary-interval=0 --console-log-level=error --quiet=true)
  sleep 0.3
  in_ns master aria2c "${aria_opts[@]}" --dir=www --check-integrity=true --listen-port=6881 image.torrent >/dev/null 2>&1 &
  sleep 2
  a0=$(date +%s.%N)
  for i in $(seq "$n"); do
    mkdir "aria-$i"
    in_ns "w$i" aria2c "${aria_opts[@]}" --dir="aria-$i" --listen-port=6881 \
      --on-bt-download-complete="$root/bench/stamp.sh" image.torrent >/dev/null 2>&1 &
  done
  aria_done() { find . -maxdepth 2 -path './aria-*/image.img.done' | wc -l; }
  for _ in $(seq 6000); do
    [ "$(aria_done)" -ge "$n" ] && break
    sleep 0.1
  done
  if [ "$(aria_done)" -ge "$n" ]; then
    a1=$(cat aria-*/image.img.done | sort -n | tail -n1)
    for i in $(seq "$n"); do cmp -s www/image.img "aria-$i/image.img" || echo "aria2: worker $i's copy differs" >&2; done
  else
    echo "aria2: only $(aria_done) of $n workers finished within 600 s; no figure" >&2
  fi
fi

python3 - "$n" "$rate" "$size_mib" "$t0" "$t1" "$h0" "$h1" "$done_at" "$cpu0" "$cpu1" "$exact" "$a0" "$a1" "$tcp" <<'PY'
import sys
n, rate, mib = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
t0, t1, h0, h1 = map(float, sys.argv[4:8])
exact, a0, a1 = int(sys.argv[11]), float(sys.argv[12]), float(sys.argv[13])
(all0, idle0), (all1, idle1) = (map(int, a.split()) for a in sys.argv[9:11])
each = sorted(float(t) - t0 for t in sys.argv[8].split())
f = mib * 2**20 * 8 / (rate * 1e6)  # seconds for one copy at the link rate
bound = max(f, f, n * f / (1 + n))
swarm, central = t1 - t0, h1 - h0
print(f"kumar-ross bound: {bound:.2f} s")
open("bound", "w").write(f"{bound}\n")
print("imageswarm per worker: " + " ".join(f"{t / bound:.2f}" for t in each) + " (x the bound)")
print(f"imageswarm: {swarm:.2f} s = {swarm / bound:.2f}x the bound (goal <= 1.15)")
print(f"byte-exact: {exact} of {n} workers hold the image as the source has it")
print(f"cpu: {100 * (1 - (idle1 - idle0) / max(1, all1 - all0)):.0f} % of the machine busy during the swarm phase")
sent, again, rtos, syns = map(int, sys.argv[14].split())
print(
    f"tcp: {100 * again / max(1, sent + again):.2f} % of data segments sent again, {rtos} retransmission timeouts, "
    f"{syns} connection attempts (SYNs) sent again"
)
if central > 0:
    print(f"central HTTP: {central:.2f} s = {central / bound:.2f}x the bound")
if a1 > 0:
    print(f"aria2 + opentracker: {a1 - a0:.2f} s = {(a1 - a0) / bound:.2f}x the bound")
PY
if [ -n "${KEEP:-}" ]; then
  mkdir -p "$KEEP"
  cp ./*.err phase "$KEEP"/
  python3 "$root/bench/timeline.py" "$KEEP" "$(cat bound)"
fi
if [ -n "$links_pid" ]; then
  # shellcheck disable=SC2086  # one argument per worker
  python3 "$root/bench/links.py" report "$LINKS/samples" "$t0" "$rate" 2 $done_at --ports $(seq 3 $((n + 2))) \
    --table "$LINKS/timeline.txt"
fi
