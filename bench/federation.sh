#!/usr/bin/env bash
# Cooperating sites in network namespaces. Every site is a bridge of its own
# with a tracker, a gateway and WORKERS_PER_SITE workers; the first site also
# holds the master and the endorser's HTTP source. The sites' bridges meet
# at a core bridge through one WAN link each, capped both ways at WAN_MBIT
# with `tc tbf`; every host's link to its site's bridge is capped both ways
# at LAN_MBIT. Every node reads one federation file (`node --federation`),
# with a credential of its own site's authority (the gateways' of role
# gateway). Runs the real binaries and prints, for each site, the seconds
# until its last host holds the verified image (and that as a ratio to the
# bound for the federation) and the bytes that crossed its WAN link into the
# site, read from the link's counters, divided by the image size (headers
# included: a single copy reads about 1.04). Then the same with every site
# fetching from the masters on its own: each other site's file names only
# the first site and itself, so no two other sites trade.
#
#   bash bench/federation.sh [SITES=3] [WORKERS_PER_SITE=3] [WAN_MBIT=100] [LAN_MBIT=400] [MIB=64]
#
# KILL=1 gives every site two gateways and, when the sites cooperate, kills
# site 2's first one with `kill -9` once it holds at least a quarter of the image: the
# site completes through its other gateway.
#
# Needs root (ip netns); touches nothing outside the namespaces it creates,
# and removes them on exit. KEEP=DIR keeps every node's log in DIR (RUST_LOG
# sets what they log). A host that does not hold the image within
# WAIT_SECS (default 300) is reported, and its site's time is "inf".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sites=${1:-3}
per_site=${2:-3}
wan=${3:-100}
lan=${4:-400}
size_mib=${5:-64}
limit=${WAIT_SECS:-300}
[ "$sites" -ge 2 ] || { echo "SITES must be at least 2" >&2; exit 2; }
# shellcheck source=bench/site.sh
source "$root/bench/site.sh"
work=$(mktemp -d -t imageswarm-federation.XXXXXX)
tag="isf$$"
namespaces=("$tag-core")

cleanup() {
  jobs -p | xargs -r kill 2>/dev/null || true
  for ns in "${namespaces[@]}"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
  sleep 0.3
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM

# The hosts of site S: its tracker (t), the master (m, first site only), its
# gateway (g), with KILL=1 a second gateway (h), and workers (w1...).
site_hosts() {
  echo t
  [ "$1" -gt 1 ] || echo m
  echo g
  [ -z "${KILL:-}" ] || echo h
  seq -f 'w%g' "$per_site"
}

# A bridge in namespace $1.
bridge() {
  ip netns add "$1"
  namespaces+=("$1")
  ip -n "$1" link add br0 type bridge
  ip -n "$1" link set br0 up
}

# A veth from namespace $1 (device $2) to a port ($4) of the bridge in
# namespace $3, each end's egress capped at $5 Mbit/s.
cable() {
  local ns=$1 dev=$2 sw=$3 port=$4 rate=$5
  ip link add "$dev" netns "$ns" type veth peer name "$port" netns "$sw"
  ip -n "$ns" link set "$dev" up
  ip -n "$sw" link set "$port" master br0 up
  ip netns exec "$ns" tc qdisc add dev "$dev" root tbf rate "${rate}mbit" burst 256kb latency 50ms
  ip netns exec "$sw" tc qdisc add dev "$port" root tbf rate "${rate}mbit" burst 256kb latency 50ms
}

bridge "$tag-core"
ends=()
for s in $(seq "$sites"); do
  bridge "$tag-sw$s"
  # The site's WAN link: u$s is the site's side, c$s the core's.
  cable "$tag-sw$s" "u$s" "$tag-core" "c$s" "$wan"
  ip -n "$tag-sw$s" link set "u$s" master br0
  k=1
  for h in $(site_hosts "$s"); do
    ns="$tag-s$s-$h"
    ip netns add "$ns"
    namespaces+=("$ns")
    ip -n "$ns" link set lo up
    cable "$ns" eth0 "$tag-sw$s" "p$k" "$lan"
    ip -n "$ns" addr add "10.78.$s.$k/16" dev eth0
    ends+=("$ns:eth0")
    eval "ip_s${s}_$h=10.78.$s.$k"
    k=$((k + 1))
  done
done
in_ns() { local s=$1 h=$2; shift 2; ip netns exec "$tag-s$s-$h" "$@"; }
resolved "${ends[@]}"
ip_of() { eval echo "\$ip_s$1_$2"; }
wan_in() { ip netns exec "$tag-core" cat "/sys/class/net/c$1/statistics/tx_bytes"; }
wan_out() { ip netns exec "$tag-core" cat "/sys/class/net/c$1/statistics/rx_bytes"; }

cd "$work"
url="http://$(ip_of 1 t):8000"
make_site "$size_mib" "$url"
in_ns 1 t python3 -m http.server 8000 --bind "$(ip_of 1 t)" --directory www >/dev/null 2>&1 &
sleep 0.5
for s in $(seq "$sites"); do "$bin" site init --name "s$s" -o "auth-s$s" >/dev/null; done
site_cas=()
for s in $(seq "$sites"); do site_cas+=(--site-ca "auth-s$s/ca.pem"); done
for s in $(seq "$sites"); do
  in_ns "$s" t "$trk" --listen "/ip4/$(ip_of "$s" t)/tcp/4000" "${site_cas[@]}" > "tracker-s$s.out" 2>/dev/null &
done
for s in $(seq "$sites"); do
  for _ in $(seq 50); do [ -s "tracker-s$s.out" ] && break; sleep 0.1; done
  eval "tracker_s$s=$(head -n1 "tracker-s$s.out")"
done
# federation FILE SITE...: a federation file naming these sites.
federation() {
  local file=$1 s
  shift
  : > "$file"
  for s in "$@"; do
    printf '[[site]]\nname = "s%s"\nca = "auth-s%s/ca.pem"\ntrackers = ["%s"]\n\n' "$s" "$s" "$(eval echo "\$tracker_s$s")" >> "$file"
  done
}
federation all.toml $(seq "$sites")
for s in $(seq 2 "$sites"); do federation "alone-s$s.toml" 1 "$s"; done

# host DIR SITE ROLE: a data directory that takes the list at $url, with a
# credential of ROLE from its site's authority in DIR.cred.
host() {
  local dir=$1 s=$2 role=$3
  "$bin" --data-dir "$dir" init --ca-file pki/ca.pem --crl pki/crl.pem >/dev/null
  "$bin" --data-dir "$dir" endorser add --dn "/DC=org/DC=imageswarm-test/OU=Endorsers/CN=Alice Endorser" \
    --issuer "/DC=org/DC=imageswarm-test/CN=imageswarm Test CA" >/dev/null
  in_ns 1 t "$bin" --data-dir "$dir" subscribe "$url/list.smime" --new-images cache >/dev/null
  "$bin" site issue --site-dir "auth-s$s" --peer-id "$("$bin" --data-dir "$dir" peer-id)" --role "$role" \
    -o "$dir.cred" >/dev/null
}

# node CASE SITE HOST FILE: runs the node of HOST at SITE, as the federation
# file FILE arranges it.
node() {
  local case=$1 s=$2 h=$3 file=$4 dir="$1/s$2-$3" extra=()
  case $h in g | h) extra=(--metrics "$(ip_of "$s" "$h"):9100") ;; esac
  in_ns "$s" "$h" "$bin" --data-dir "$dir" node --listen "/ip4/$(ip_of "$s" "$h")/tcp/4001" \
    --credential "$dir.cred" --site-ca "auth-s$s/ca.pem" --federation "$file" --site "s$s" \
    --announce-interval 1 "${extra[@]}" 2>"$dir.err" >/dev/null &
}

# gateway_metric SITE HOST NAME: the sum of the metric NAME at the gateway
# HOST of SITE (0 when it has none, or does not answer).
gateway_metric() {
  in_ns "$1" "$2" python3 -c 'import sys, urllib.request
t = urllib.request.urlopen(sys.argv[1], timeout=2).read().decode()
print(sum(int(float(l.rsplit(" ", 1)[1])) for l in t.splitlines() if l.startswith(sys.argv[2] + "{")))' \
    "http://$(ip_of "$1" "$2"):9100/metrics" "$3" 2>/dev/null || echo 0
}

# run CASE: the master, then every site's gateway and workers, each site
# reading all.toml (CASE=federated) or its alone file (CASE=alone). Writes
# CASE/result: per site, the seconds until its last host held the image and
# the bytes into and out of its WAN link.
run() {
  local case=$1 s h file
  mkdir "$case"
  host "$case/s1-m" 1 master
  for s in $(seq "$sites"); do
    host "$case/s$s-g" "$s" gateway
    [ -z "${KILL:-}" ] || host "$case/s$s-h" "$s" gateway
    for i in $(seq "$per_site"); do host "$case/s$s-w$i" "$s" worker; done
  done
  node "$case" 1 m all.toml
  "$bin" --data-dir "$case/s1-m" wait "$uuid" --timeout 600 >/dev/null
  local before=()
  for s in $(seq "$sites"); do before+=("$(wan_in "$s"):$(wan_out "$s")"); done
  t0=$(date +%s.%N)
  for s in $(seq "$sites"); do
    file=all.toml
    [ "$case" = federated ] || [ "$s" = 1 ] || file="alone-s$s.toml"
    for h in $(site_hosts "$s"); do
      [ "$h" = t ] || [ "$h" = m ] || node "$case" "$s" "$h" "$file"
    done
  done
  local waits=() killed=
  if [ -n "${KILL:-}" ] && [ "$case" = federated ]; then
    # kill -9 site 2's first gateway once it holds a quarter of the image.
    killed=s2-g
    for _ in $(seq 3000); do
      [ "$(gateway_metric 2 g imageswarm_chunks_verified_total)" -lt $((${chunking%% *} / 4)) ] || break
      sleep 0.01
    done
    echo "killed site s2's gateway g (kill -9) holding $(gateway_metric 2 g imageswarm_chunks_verified_total) chunks"
    ip netns pids "$tag-s2-g" | xargs -r kill -9
  fi
  for s in $(seq "$sites"); do
    for h in $(site_hosts "$s"); do
      [ "$h" = t ] || [ "$h" = m ] || [ "s$s-$h" = "$killed" ] || {
        ( if "$bin" --data-dir "$case/s$s-$h" wait "$uuid" --timeout "$limit" >/dev/null; then
            date +%s.%N > "$case/done-s$s-$h"
          else
            echo "site s$s: host $h did not hold the image within $limit s" >&2
            echo inf > "$case/done-s$s-$h"
          fi ) &
        waits+=($!)
      }
    done
  done
  for p in "${waits[@]}"; do wait "$p"; done
  : > "$case/result"
  for s in $(seq "$sites"); do
    local last
    last=$(cat "$case"/done-s"$s"-* | sort -g | tail -n1)
    local metric=0 h
    for h in g ${KILL:+h}; do
      [ "s$s-$h" = "$killed" ] || metric=$((metric + $(gateway_metric "$s" "$h" imageswarm_site_bytes_in_total)))
    done
    IFS=: read -r in0 out0 <<< "${before[$((s - 1))]}"
    echo "$s $(awk -v a="$last" -v b="$t0" 'BEGIN { print (a == "inf" ? "inf" : a - b) }') $(($(wan_in "$s") - in0)) $(($(wan_out "$s") - out0)) $metric" >> "$case/result"
  done
  local exact=0 total=0
  for d in "$case"/s*-g "$case"/s*-h "$case"/s*-w*; do
    [ -d "$d" ] && [ "$d" != "$case/$killed" ] || continue
    total=$((total + 1))
    cmp -s www/image.img "$d/images/$uuid" && exact=$((exact + 1))
  done
  echo "$exact $total" > "$case/exact"
  for s in $(seq "$sites"); do
    for h in $(site_hosts "$s"); do
      [ "$h" = t ] || ip netns pids "$tag-s$s-$h" | xargs -r kill 2>/dev/null || true
    done
  done
  sleep 0.5
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP/$case" && cp "$case"/*.err "$KEEP/$case/"; fi
}

echo "== $sites sites of $([ -n "${KILL:-}" ] && echo "two gateways" || echo "a gateway") and $per_site workers, WAN ${wan} Mbit/s, LAN ${lan} Mbit/s, ${size_mib} MiB in $chunking"
run federated
run alone

python3 - "$sites" "$per_site" "$wan" "$lan" "$size_mib" <<'PY'
import sys
sites, per_site, wan, lan, mib = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
size = mib * 2**20
f = size * 8 / 1e6  # megabits in the image
hosts = sites * (1 + per_site)
# What no schedule beats (netsim's bound for the same shape): the master
# sends the image and every host takes it in over its LAN link; every site
# but the first takes one copy in over its WAN link; all the copies come
# from the master's and the hosts' uplinks.
bound = max(f / lan, f / wan, hosts * f / (lan * (hosts + 1)))
print(f"federation bound: {bound:.2f} s (every host of every site holds the image)")
for case, title in [("federated", "one federation file"), ("alone", "every site from the masters on its own")]:
    exact, total = map(int, open(f"{case}/exact").read().split())
    print(f"-- {case}: {title} ({exact} of {total} hosts hold the image byte-exact)")
    wan_max, last = 0.0, 0.0
    for line in open(f"{case}/result"):
        s, secs, into, out, metric = line.split()
        secs, into, out, metric = float(secs), int(into), int(out), int(metric)
        last = max(last, secs)
        if int(s) > 1:
            wan_max = max(wan_max, into / size)
        print(f"site s{s}: {secs:.2f} s = {secs / bound:.2f}x the bound; WAN in {into / size:.3f} copies "
              f"(the gateway's metrics: {metric / size:.3f}), WAN out {out / size:.3f} copies")
    print(f"{case}: every host in {last:.2f} s = {last / bound:.2f}x the bound; wan_max {wan_max:.3f} copies into a site")
PY
