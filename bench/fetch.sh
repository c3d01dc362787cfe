#!/usr/bin/env bash
# A master's download from the endorser's source: `imageswarm update` of one
# image over loopback (a python HTTP server), every chunk hashed, written and
# committed, then the SHA-512 checked and the image installed. Prints the
# time and throughput for each binary given, in turn, each into a fresh data
# directory (pass two builds alternately to compare them).
#
#   bash bench/fetch.sh [SIZE_MIB=1024] [BIN...]    # default BIN: this build
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-1024}
shift || true
# shellcheck source=bench/site.sh
source "$root/bench/site.sh"
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=("$bin")
work=$(mktemp -d -t imageswarm-fetch.XXXXXX)
srv=
cleanup() { [ -n "$srv" ] && kill "$srv" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
serve_site "$size_mib" 4194304
srv=$server
for b in "${bins[@]}"; do
  rm -rf host
  bin=$b init_host host "$url"
  sync
  t0=$(date +%s.%N)
  "$b" --data-dir host update >/dev/null
  t1=$(date +%s.%N)
  python3 -c 'import sys; t = float(sys.argv[2]) - float(sys.argv[1]); print(f"{sys.argv[3]}: {t:.2f} s = {int(sys.argv[4]) / t:.0f} MiB/s")' \
    "$t0" "$t1" "$b" "$size_mib"
done
