#!/usr/bin/env bash
# The endorser's walk-through on a throw-away CA: create a list, add an image,
# sign it, verify it as a subscriber would, and show it. Everything happens in
# a temporary directory on this machine only, removed at the end (KEEP=1
# keeps it, and prints where).
#
#   bash scripts/walkthrough.sh [IMAGE_SIZE_MIB]     (default 64)
#
# The imageswarm binary: $IMAGESWARM if set; else, in a checkout, a release
# build of it; else the one on PATH. The test CA comes from pki.sh, in the
# checkout (tests/src/pki.sh) or beside this script.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
size_mib=${1:-64}

if [ -n "${IMAGESWARM:-}" ]; then
  bin=$IMAGESWARM
elif [ -f "$root/Cargo.toml" ] && command -v cargo >/dev/null; then
  echo "== building imageswarm"
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p imageswarm-node
  bin="$root/target/release/imageswarm"
elif command -v imageswarm >/dev/null; then
  bin=$(command -v imageswarm)
else
  echo "no imageswarm binary: set IMAGESWARM, install it on PATH, or run this from a checkout" >&2
  exit 2
fi
pki_sh=""
for p in "$root/tests/src/pki.sh" "$here/pki.sh"; do
  if [ -f "$p" ]; then pki_sh=$p; break; fi
done
if [ -z "$pki_sh" ]; then
  echo "no pki.sh (the test CA's script): run this from a checkout, or put tests/src/pki.sh beside it" >&2
  exit 2
fi
echo "== using $bin ($("$bin" --version))"

work=$(mktemp -d -t imageswarm-walkthrough.XXXXXX)
finish() {
  if [ "${KEEP:-0}" = 1 ]; then echo "files kept in $work"; else rm -rf "$work"; fi
}
trap finish EXIT
cd "$work"

step() { printf '\n== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

echo "== a test CA, an endorser certificate and a CRL (openssl), in $work/pki"
mkdir pki && bash "$pki_sh" "$work/pki" >/dev/null
echo "== a ${size_mib} MiB random image"
head -c "$((size_mib << 20))" /dev/urandom > disk.img

step "start a list endorsed by the certificate's holder" \
  "$bin" list new -o list.json --cert pki/endorser.pem --title "Demo images" \
  --description "imageswarm walk-through" --source "example.org" --uri "https://lists.example.org/demo.list"
step "add the image: size, SHA-512 and BLAKE3 manifest root" \
  "$bin" list add-image list.json disk.img --uri "https://images.example.org/disk.img" \
  --title "Demo disk" --image-version 1.0 --os Linux --osversion 12 --arch x86_64 --format raw
step "sign it (bumps hv:version, sets the dates)" \
  "$bin" list sign list.json --cert pki/endorser.pem --key pki/endorser.key -o list.smime
step "verify it as a subscriber: chain, CRL, endorser, dates" \
  "$bin" list verify list.smime --ca-file pki/ca.pem --crl pki/crl.pem \
  --endorser "/DC=org/DC=imageswarm-test/OU=Endorsers/CN=Alice Endorser"
step "the same with an IGTF-style CA directory" "$bin" list verify list.smime --ca-dir pki/igtf
step "openssl accepts it too" openssl smime -verify -in list.smime -CAfile pki/ca.pem -out /dev/null
step "show it" "$bin" list show list.smime

printf '\n== a list signed by a revoked certificate is refused (exit status 1)\n'
"$bin" list new -o revoked.json --cert pki/revoked.pem --title R --description R --source R --uri https://x.example.org/r >/dev/null
"$bin" list sign revoked.json --cert pki/revoked.pem --key pki/revoked.key -o revoked.smime >/dev/null
if "$bin" list verify revoked.smime --ca-file pki/ca.pem --crl pki/crl.pem; then
  echo "unexpected: a revoked endorser was accepted" >&2
  exit 1
fi
printf '\nwalk-through complete\n'
