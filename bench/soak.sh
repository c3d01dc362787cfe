#!/usr/bin/env bash
# Soak: a closed site on loopback (a tracker, one master, WORKERS workers;
# real release binaries) takes distribution after distribution for
# SOAK_SECONDS. Each round the endorser adds a new random image to the list,
# withdraws the oldest once three are listed, and signs a new version; while
# the round distributes, up to two random hosts (the master among them, but
# never worker 1 or the tracker, which run throughout so that their growth
# shows) are killed with SIGKILL and restarted. Every worker must hold each
# round's image within ROUND_TIMEOUT seconds.
#
#   SOAK_SECONDS=1800 bash bench/soak.sh [WORKERS=8] [SIZE_MIB=32]
#
# After each round it samples every node's RSS, descriptors and threads
# (/proc) and the size of its store (DATA_DIR/meta); at the end it stops the
# nodes and checks every store, independently of imageswarm where it can:
# every available image is on the last list, its file's SHA-512 is the
# list's, `imageswarm verify` finds it intact, no partial file stands for an
# available image, and every worker holds the last round's image. It prints
# the rounds, kills, round times, the checks and, for the processes that ran
# throughout, RSS, descriptors, threads and store size in each tenth of the
# run. SOAK_SEED replays a kill schedule; KEEP=DIR
# keeps the logs and samples. Exits 1 if a round or a check failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-8}
size_mib=${2:-32}
duration=${SOAK_SECONDS:-1800}
round_timeout=${ROUND_TIMEOUT:-300}
seed=${SOAK_SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$seed
# shellcheck source=bench/site.sh
source "$root/bench/site.sh"
work=$(mktemp -d -t imageswarm-soak.XXXXXX)
hosts=(master)
for i in $(seq "$n"); do hosts+=("w$i"); done
killable=(master "${hosts[@]:2}")
declare -A pid port
tracker_pid=
server=

cleanup() {
  for h in "${hosts[@]}"; do [ -n "${pid[$h]:-}" ] && kill -9 "${pid[$h]}" 2>/dev/null || true; done
  [ -n "$tracker_pid" ] && kill "$tracker_pid" 2>/dev/null || true
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    cp "$work"/*.err "$work"/samples.tsv "$work"/rounds.tsv "$KEEP"/ 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

serve_site "$size_mib"
for h in "${hosts[@]}"; do
  init_host "$h" "$url"
  port[$h]=$(free_port)
done
member master master
"$trk" --listen "/ip4/127.0.0.1/tcp/$(free_port)" $(tracker_trust) > tracker.out 2>tracker.err &
tracker_pid=$!
for _ in $(seq 50); do [ -s tracker.out ] && break; sleep 0.1; done
tracker=$(head -n1 tracker.out)

start_node() {
  local h=$1 role=()
  [ "$h" = master ] && role=(--master --site-crl authority/crl.pem)
  "$bin" --data-dir "$h" node --listen "/ip4/127.0.0.1/tcp/${port[$h]}" --tracker "$tracker" $(closed "$h") \
    "${role[@]}" --update-interval 2 --announce-interval 1 2>>"$h.err" >/dev/null &
  pid[$h]=$!
}

# sample ROUND: one line per running process of samples.tsv.
sample() {
  local r=$1 h p
  for h in "${hosts[@]}" tracker; do
    if [ "$h" = tracker ]; then p=$tracker_pid; else p=${pid[$h]}; fi
    [ -d "/proc/$p" ] || continue
    local rss threads fds store=0
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status")
    threads=$(awk '/^Threads:/ {print $2}' "/proc/$p/status")
    fds=$(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    [ "$h" = tracker ] || store=$(du -sk "$h/meta" | cut -f1)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$(($(date +%s) - t_start))" "$h" "$p" "$rss" "$fds" "$threads" "$store" >> samples.tsv
  done
}

# until_held HOST UUID SECONDS: `wait` until HOST holds UUID; asked again
# while the host has not taken the list naming it yet (`wait` exits 2 at once
# for an image of no list in force).
until_held() {
  local deadline=$(($(date +%s) + $3)) rc
  while true; do
    rc=0
    "$bin" --data-dir "$1" wait "$2" --timeout "$((deadline - $(date +%s)))" >/dev/null 2>&1 || rc=$?
    [ "$rc" = 2 ] && [ "$(date +%s)" -lt "$deadline" ] || return "$rc"
    sleep 0.5
  done
}

for h in "${hosts[@]}"; do start_node "$h"; done
"$bin" --data-dir master wait "$uuid" --timeout 600 >/dev/null
printf 'round\telapsed\thost\tpid\trss_kib\tfds\tthreads\tstore_kib\n' > samples.tsv
printf 'round\tseconds\tkilled\tok\n' > rounds.tsv
echo "== soak: $n workers, ${size_mib} MiB images in $chunking, ${duration} s, seed $seed"
t_start=$(date +%s)
listed=("$uuid")
round=0 kills=0 failed=0
while [ $(($(date +%s) - t_start)) -lt "$duration" ]; do
  round=$((round + 1))
  if [ "$round" -gt 1 ]; then
    head -c "$((size_mib << 20))" /dev/urandom > "www/image-$round.img"
    uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    "$bin" list add-image list.json "www/image-$round.img" --uri "$url/image-$round.img" --identifier "$uuid" \
      --title "Disk $round" --image-version 1 --os Linux --osversion 12 --arch x86_64 >/dev/null
    listed+=("$uuid")
    if [ "${#listed[@]}" -gt 3 ]; then
      "$bin" list remove-image list.json "${listed[0]}" >/dev/null
      rm -f "www/image-$((round - 3)).img"
      listed=("${listed[@]:1}")
    fi
    "$bin" list sign list.json --cert pki/endorser.pem --key pki/endorser.key -o www/list.smime.new >/dev/null
    mv www/list.smime.new www/list.smime
  fi
  r0=$(date +%s.%N)
  # Up to two victims among the master and workers 2..n, killed a random
  # 0-3 s into the round and restarted 0.5-2.5 s later.
  victims=()
  for _ in $(seq $((RANDOM % 3))); do
    v=${killable[$((RANDOM % ${#killable[@]}))]}
    [[ " ${victims[*]:-} " == *" $v "* ]] || victims+=("$v")
  done
  if [ "${#victims[@]}" -gt 0 ]; then
    sleep "$((RANDOM % 3)).$((RANDOM % 10))"
    for v in "${victims[@]}"; do kill -9 "${pid[$v]}" 2>/dev/null || true; wait "${pid[$v]}" 2>/dev/null || true; done
    kills=$((kills + ${#victims[@]}))
    sleep "$((RANDOM % 2)).$((5 + RANDOM % 5))"
    for v in "${victims[@]}"; do start_node "$v"; done
  fi
  waits=()
  for i in $(seq "$n"); do
    until_held "w$i" "$uuid" "$round_timeout" &
    waits+=($!)
  done
  ok=1
  for w in "${waits[@]}"; do wait "$w" || ok=0; done
  [ "$ok" = 1 ] || failed=$((failed + 1))
  secs=$(python3 -c "import sys,time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$r0")
  printf '%s\t%s\t%s\t%s\n' "$round" "$secs" "${victims[*]:--}" "$ok" >> rounds.tsv
  echo "round $round: ${secs} s, killed ${victims[*]:-none}$([ "$ok" = 1 ] || echo ', NOT EVERY WORKER COMPLETED')"
  sample "$round"
done

# Stop everything, then check every store from outside.
for h in "${hosts[@]}"; do kill "${pid[$h]}" 2>/dev/null || true; done
for h in "${hosts[@]}"; do wait "${pid[$h]}" 2>/dev/null || true; done
"$bin" list show www/list.smime --json > final.json
problems=0
for h in "${hosts[@]}"; do
  "$bin" --data-dir "$h" images --json > "images-$h.json"
  if ! "$bin" --data-dir "$h" verify >/dev/null 2>"verify-$h.err"; then
    echo "check: $h: imageswarm verify found a changed image: $(cat "verify-$h.err")"
    problems=$((problems + 1))
  fi
  bad=$(python3 - "$h" "$uuid" final.json "images-$h.json" <<'PY'
import hashlib, json, os, sys
host, last, final, mine = sys.argv[1:5]
listed = {i["hv:image"]["dc:identifier"]: i["hv:image"]["sl:checksum:sha512"]
          for i in json.load(open(final))["hv:imagelist"]["hv:images"]}
problems = []
available = {i["uuid"] for i in json.load(open(mine)) if i["state"] == "available"}
for u in available:
    path = os.path.join(host, "images", u)
    if u not in listed:
        problems.append(f"{u} is available but not on the last list")
    elif hashlib.sha512(open(path, "rb").read()).hexdigest() != listed[u]:
        problems.append(f"{u}: the file's SHA-512 is not the list's")
    if os.path.exists(path + ".partial"):
        problems.append(f"{u}: a partial file stands beside the available one")
if host != "master" and last not in available:
    problems.append(f"the last round's image {last} is not available")
print("; ".join(problems))
PY
)
  if [ -n "$bad" ]; then echo "check: $h: $bad"; problems=$((problems + 1)); fi
done

python3 - "$round" "$kills" "$failed" "$problems" "$n" <<'PY'
import csv, statistics, sys
rounds, kills, failed, problems, n = map(int, sys.argv[1:6])
times = [float(r["seconds"]) for r in csv.DictReader(open("rounds.tsv"), delimiter="\t")]
print(f"rounds: {rounds}, hosts killed: {kills}, rounds where a worker did not complete: {failed}")
if times:
    print(f"round time: p50 {statistics.median(times):.1f} s, max {max(times):.1f} s")
print(f"stores checked: {n + 1}, with a problem: {problems}")
rows = list(csv.DictReader(open("samples.tsv"), delimiter="\t"))
span = max((int(r["elapsed"]) for r in rows), default=0)
for host in ["w1", "tracker"]:
    mine = [r for r in rows if r["host"] == host]
    if len(mine) < 4:
        continue
    tenth = max(1, len(mine) // 10)
    tenths = [mine[i * tenth:(i + 1) * tenth] for i in range(10)]
    cols = ["rss_kib", "fds", "threads"] + (["store_kib"] if host != "tracker" else [])
    print(f"{host} over {span} s, medians of each tenth of the run:")
    for k in cols:
        print(f"  {k}: " + " ".join(f"{statistics.median(int(r[k]) for r in t):.0f}" for t in tenths if t))
stores = {}
for r in rows:
    if r["host"] != "tracker":
        stores.setdefault(r["host"], []).append(int(r["store_kib"]))
if stores:
    print("store size at the end, KiB: " + " ".join(f"{h}={v[-1]}" for h, v in sorted(stores.items()))
          + f"; largest ever {max(max(v) for v in stores.values())}")
sys.exit(1 if failed or problems else 0)
PY
