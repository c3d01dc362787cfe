# Shared by the benchmark scripts (source it; needs $root): builds the release
# binaries and sets $bin and $trk to them (IMAGESWARM_BIN=PATH runs another
# imageswarm binary, to compare two builds); an endorsed list of a random image,
# and hosts set up to take it.

cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p imageswarm-node -p imageswarm-tracker
bin="${IMAGESWARM_BIN:-$root/target/release/imageswarm}"
trk="$root/target/release/imageswarm-tracker"

# make_site SIZE_MIB URL [CHUNK_BYTES]: in the current directory, a test PKI
# in pki/, a random image and the signed list naming it in www/ (to be served
# at URL), in chunks of CHUNK_BYTES or, without it, of the size `list
# add-image` picks by default. Sets $uuid to the image's identifier and
# $chunking to how the image is cut ("512 chunks of 128 KiB").
make_site() {
  local size_mib=$1 url=$2 chunk=${3:-}
  mkdir pki www
  bash "$root/tests/src/pki.sh" "$PWD/pki" >/dev/null
  head -c "$((size_mib << 20))" /dev/urandom > www/image.img
  "$bin" list new -o list.json --cert pki/endorser.pem --title Bench --description "imageswarm benchmark" \
    --source bench --uri "$url/list.smime" >/dev/null
  chunking=$("$bin" list add-image list.json www/image.img --uri "$url/image.img" --title Disk --image-version 1 \
    --os Linux --osversion 12 --arch x86_64 ${chunk:+--chunk-size "$chunk"} |
    sed -n 's/^manifest root: .* (\(.*\))$/\1/p')
  "$bin" list sign list.json --cert pki/endorser.pem --key pki/endorser.key -o www/list.smime >/dev/null
  uuid=$("$bin" list show www/list.smime --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["hv:imagelist"]["hv:images"][0]["hv:image"]["dc:identifier"])')
}

# init_host DIR URL [PREFIX...]: a data directory that trusts the test CA,
# approves its endorser and caches the list at URL; PREFIX runs each command
# (e.g. `ip netns exec NS`). The host gets a worker credential of the site
# in DIR.cred (`member`); `member DIR master` issues it another role.
init_host() {
  local dir=$1 url=$2
  shift 2
  member "$dir" worker
  "$@" "$bin" --data-dir "$dir" init --ca-file pki/ca.pem --crl pki/crl.pem >/dev/null
  "$@" "$bin" --data-dir "$dir" endorser add --dn "/DC=org/DC=imageswarm-test/OU=Endorsers/CN=Alice Endorser" \
    --issuer "/DC=org/DC=imageswarm-test/CN=imageswarm Test CA" >/dev/null
  "$@" "$bin" --data-dir "$dir" subscribe "$url/list.smime" --new-images cache >/dev/null
}

# member DIR ROLE: issues the host at DIR (its key made if missing) a
# credential of ROLE in DIR.cred, making the site's authority (authority/)
# first if need be; nothing with OPEN=1.
member() {
  [ -z "${OPEN:-}" ] || return 0
  [ -d authority ] || "$bin" site init --name bench -o authority >/dev/null
  local id
  id=$("$bin" --data-dir "$1" peer-id)
  rm -f "$1.cred"
  "$bin" site issue --site-dir authority --peer-id "$id" --role "$2" -o "$1.cred" >/dev/null
}

# closed DIR: the flags that run the host at DIR as a member of the closed
# site; with OPEN=1, of an open site instead (to measure what admission
# costs).
closed() {
  if [ -n "${OPEN:-}" ]; then echo --site bench --open-site; return; fi
  echo --site bench --credential "$1.cred" --site-ca authority/ca.pem
}

# tracker_trust: the tracker's flags for the site (see `closed`).
tracker_trust() {
  if [ -n "${OPEN:-}" ]; then echo --open-site; else echo --site-ca authority/ca.pem; fi
}

# free_port: an unused TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# serve_site SIZE_MIB [CHUNK_BYTES]: make_site in the current directory, its
# www/ served over HTTP on a free port of 127.0.0.1. Sets $url and $server
# (the server's pid, for the caller to stop).
serve_site() {
  local port
  port=$(free_port)
  url="http://127.0.0.1:$port"
  make_site "$1" "$url" "${2:-}"
  python3 -m http.server "$port" --bind 127.0.0.1 --directory www >/dev/null 2>&1 &
  server=$!
  sleep 0.5
}

# resolved NS:DEV...: gives each namespace a permanent neighbour entry for
# the address and MAC of every other one, as hosts on a LAN that answers ARP
# have. On the testbeds a host's capped link is a `tbf` FIFO that its own
# uploads keep full, and that queue drops ARP requests and replies too: a
# busy host then cannot resolve, and so cannot reach, a host it has not met
# yet (at N = 32 the master reached 17-20 of the 32 workers, those it met
# before its uplink filled). Real switches and NIC queues do not starve ARP so.
resolved() {
  local e ns dev table=""
  for e in "$@"; do
    ns=${e%%:*} dev=${e#*:}
    table+="$(ip -n "$ns" -br -4 addr show dev "$dev" | awk '{sub(/\/.*/, "", $3); print $3}') "
    table+="$(ip -n "$ns" -br link show dev "$dev" | awk '{print $3}') $dev $ns"$'\n'
  done
  for e in "$@"; do
    ns=${e%%:*} dev=${e#*:}
    awk -v ns="$ns" -v dev="$dev" 'NF == 4 && $4 != ns {print "neigh replace " $1 " lladdr " $2 " dev " dev " nud permanent"}' \
      <<<"$table" | ip -n "$ns" -batch -
  done
}
