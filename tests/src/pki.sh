#!/usr/bin/env bash
# Builds a throw-away PKI for imageswarm's tests in directory $1, with the
# openssl command line, the way a site operator would:
#   ca.pem / ca.key                 test root CA
#   endorser.pem / .key             endorser (emailProtection, digitalSignature)
#   bob.pem / .key                  a second, valid endorser (not approved by tests)
#   revoked.pem / .key              an endorser listed on crl.pem
#   server.pem / .key               serverAuth-only certificate for localhost
#                                   (wrong purpose for lists; HTTPS tests)
#   impostor.pem / .key             self-signed, with the endorser's exact DN
#   crl.pem                         current CRL of the CA (lists revoked.pem)
#   crl-expired.pem                 CRL of the CA whose nextUpdate has passed
#   crl-endorser-revoked.pem        a later CRL of the CA that also lists endorser.pem
#   other/ca.pem, other-crl.pem     a second CA and its CRL
#   igtf/                           the CA and CRL in IGTF layout (<hash>.0, <hash>.r0)
# Certificates are valid from one day ago for 3650 days.
set -euo pipefail
out=$1
cd "$out"

stamp() { date -u -d "$1" +%Y%m%d%H%M%SZ; }
START=$(stamp '-1 day')
END=$(stamp '+3650 days')

ENDORSER_DN='/DC=org/DC=imageswarm-test/OU=Endorsers/CN=Alice Endorser'
export SAN='email:alice@example.org'

mkca() {
  local dir=$1 subj=$2
  mkdir -p "$dir/newcerts"
  : > "$dir/index.txt"
  echo 1000 > "$dir/serial"
  echo 1000 > "$dir/crlnumber"
  cat > "$dir/ca.cnf" <<EOF
[ ca ]
default_ca = ca_default
[ ca_default ]
dir = $PWD/$dir
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
serial = \$dir/serial
crlnumber = \$dir/crlnumber
certificate = \$dir/ca.pem
private_key = \$dir/ca.key
default_md = sha256
default_crl_days = 30
policy = policy_any
unique_subject = no
copy_extensions = none
[ policy_any ]
commonName = supplied
[ endorser ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth, emailProtection
subjectAltName = \${ENV::SAN}
[ server ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
EOF
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 7300 \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" -subj "$subj" \
    -addext 'basicConstraints=critical,CA:TRUE' \
    -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>/dev/null
}

issue() {
  local ca=$1 name=$2 subj=$3 ext=$4
  openssl req -new -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
  openssl ca -batch -config "$ca/ca.cnf" -preserveDN -notext -extensions "$ext" \
    -startdate "$START" -enddate "$END" -in "$name.csr" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr"
}

mkca ca-dir '/DC=org/DC=imageswarm-test/CN=imageswarm Test CA'
mkca other '/DC=org/DC=elsewhere/CN=Other Test CA'
cp ca-dir/ca.pem ca.pem
cp ca-dir/ca.key ca.key

issue ca-dir endorser "$ENDORSER_DN" endorser
SAN='email:bob@example.org' issue ca-dir bob '/DC=org/DC=imageswarm-test/OU=Endorsers/CN=Bob Endorser' endorser
SAN='email:mallory@example.org' issue ca-dir revoked '/DC=org/DC=imageswarm-test/OU=Endorsers/CN=Revoked Endorser' endorser
issue ca-dir server '/DC=org/DC=imageswarm-test/CN=host.example.org' server

openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout impostor.key -out impostor.pem \
  -subj "$ENDORSER_DN" -addext 'extendedKeyUsage=emailProtection' \
  -addext 'keyUsage=critical,digitalSignature' 2>/dev/null

openssl ca -config ca-dir/ca.cnf -revoke revoked.pem 2>/dev/null
openssl ca -config ca-dir/ca.cnf -gencrl -out crl.pem 2>/dev/null
openssl ca -config ca-dir/ca.cnf -gencrl -out crl-expired.pem \
  -crl_lastupdate "$(stamp '-60 days')" -crl_nextupdate "$(stamp '-30 days')" 2>/dev/null
openssl ca -config other/ca.cnf -gencrl -out other-crl.pem 2>/dev/null

mkdir -p igtf
hash=$(openssl x509 -in ca.pem -noout -hash)
cp ca.pem "igtf/$hash.0"
cp crl.pem "igtf/$hash.r0"
printf 'access_id_CA X509 %s\n' "'/DC=org/DC=imageswarm-test/CN=imageswarm Test CA'" > "igtf/$hash.signing_policy"

# Last, as it changes the CA's database: a later CRL that also lists the
# endorser, as when an endorser's certificate is revoked after it signed.
openssl ca -config ca-dir/ca.cnf -revoke endorser.pem 2>/dev/null
openssl ca -config ca-dir/ca.cnf -gencrl -out crl-endorser-revoked.pem 2>/dev/null
