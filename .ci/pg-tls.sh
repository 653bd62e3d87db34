#!/usr/bin/env bash
# Makes the local PostgreSQL serve a certificate signed by a throw-away test
# CA, so the tests can connect with sslmode=verify-full (tests/api/pg_tls.rs).
# Idempotent: a CA and certificate that are still good are kept, and
# PostgreSQL is only told to reload when its settings change. Never restarts
# PostgreSQL: ssl_cert_file, ssl_key_file and ssl are reloadable, and clients
# that do not ask for TLS keep connecting in plain (pg_hba's `host` lines
# allow both).
#
# Prints the CA's path on standard output (everything else goes to standard
# error), for HUNTAZE_TEST_PG_CA_FILE:
#   export HUNTAZE_TEST_PG_CA_FILE="$(.ci/pg-tls.sh)"
set -euo pipefail

dir=/var/lib/postgresql/huntaze-ci-tls
psql_admin=(psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5432 -U postgres -d postgres)

say() { printf 'pg-tls: %s\n' "$*" >&2; }

# Whether the certificate in $1 is one the tests can use: signed by the CA,
# valid for 30 more days, for localhost and 127.0.0.1.
usable() {
  local d="$1"
  [ -s "$d/ca.pem" ] && [ -s "$d/server.crt" ] && [ -s "$d/server.key" ] || return 1
  openssl verify -CAfile "$d/ca.pem" "$d/server.crt" >/dev/null 2>&1 || return 1
  openssl x509 -in "$d/server.crt" -noout -checkend $((30 * 86400)) >/dev/null 2>&1 || return 1
  local san
  san="$(openssl x509 -in "$d/server.crt" -noout -ext subjectAltName 2>/dev/null)" || return 1
  grep -q 'DNS:localhost' <<<"$san" && grep -q 'IP Address:127.0.0.1' <<<"$san"
}

make_pair() {
  local d="$1"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$d/ca.key" -out "$d/ca.pem" -days 3650 \
    -subj "/CN=huntaze CI PostgreSQL CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/server.key" 2>/dev/null
  openssl req -new -key "$d/server.key" -out "$d/server.csr" -subj "/CN=localhost" 2>/dev/null
  printf '%s\n' \
    "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
    -CAcreateserial -days 825 -sha256 -extfile "$d/server.ext" -out "$d/server.crt" 2>/dev/null
  rm -f "$d/server.csr" "$d/server.ext" "$d/ca.srl"
}

mkdir -p "$(dirname "$dir")"
# One run at a time: two CI jobs on one machine must not swap the files
# under each other.
exec 9>"$(dirname "$dir")/.huntaze-ci-tls.lock"
flock 9

if usable "$dir"; then
  say "keeping the certificate in $dir"
else
  say "making a test CA and a certificate for localhost and 127.0.0.1 in $dir"
  staging="$(mktemp -d "$(dirname "$dir")/.huntaze-ci-tls.XXXXXX")"
  make_pair "$staging"
  usable "$staging" || { say "the new certificate does not verify"; exit 1; }
  # The previous set moves aside whole, so PostgreSQL never reads a key
  # that does not match its certificate.
  if [ -e "$dir" ]; then rm -rf "$dir.old" && mv "$dir" "$dir.old"; fi
  mv "$staging" "$dir"
  rm -rf "$dir.old"
fi
# PostgreSQL refuses a key that others can read; the CA is public.
chown -R postgres:postgres "$dir"
chmod 0755 "$dir"
chmod 0600 "$dir/server.key" "$dir/ca.key"
chmod 0644 "$dir/server.crt" "$dir/ca.pem"

current="$("${psql_admin[@]}" -c "SELECT current_setting('ssl') || ' ' || current_setting('ssl_cert_file') || ' ' || current_setting('ssl_key_file')")"
wanted="on $dir/server.crt $dir/server.key"
if [ "$current" != "$wanted" ]; then
  say "pointing PostgreSQL at it (was: $current) and reloading"
  "${psql_admin[@]}" \
    -c "ALTER SYSTEM SET ssl_cert_file = '$dir/server.crt'" \
    -c "ALTER SYSTEM SET ssl_key_file = '$dir/server.key'" \
    -c "ALTER SYSTEM SET ssl = on" \
    -c "SELECT pg_reload_conf()" >/dev/null
else
  # The files may have been replaced above: a reload reads them again.
  "${psql_admin[@]}" -c "SELECT pg_reload_conf()" >/dev/null
fi

# The reload is asynchronous: wait until a verified connection succeeds
# (and say why when it never does), then check that plain still works.
verified=false
for _ in $(seq 1 50); do
  if psql -X -q -A -t "host=localhost port=5432 user=postgres dbname=postgres sslmode=verify-full sslrootcert=$dir/ca.pem" \
    -c "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()" 2>/dev/null | grep -qx t; then
    verified=true
    break
  fi
  sleep 0.2
done
if ! $verified; then
  say "PostgreSQL does not serve the new certificate; its log says why:"
  psql -X "host=localhost port=5432 user=postgres dbname=postgres sslmode=verify-full sslrootcert=$dir/ca.pem" -c "SELECT 1" >&2 || true
  exit 1
fi
psql -X -q -A -t "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=verify-full sslrootcert=$dir/ca.pem" -c "SELECT 1" >/dev/null
plain="$(psql -X -q -A -t "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable" \
  -c "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")"
[ "$plain" = "f" ] || { say "a plain connection was not plain ($plain)"; exit 1; }
say "verify-full works for localhost and 127.0.0.1; plain connections still work"
printf '%s\n' "$dir/ca.pem"
