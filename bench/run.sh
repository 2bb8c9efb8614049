#!/usr/bin/env bash
# postern vs Postfix as relays, side by side, on loopback (see bench/README.md).
#
#   bench/run.sh                 build postern (release) and run the whole benchmark
#   bench/run.sh resumption      postern alone: TLS session resumption on/off, one message per connection
#   bench/run.sh deep            postern alone: a queue of 1,000,000 deferred messages vs an empty one,
#                                and a backlog of 100,000 due at once (bench/README.md: deep queue)
#   bench/run.sh many            postern and Postfix relaying to 200 destination domains of the test world
#                                (DANE, MTA-STS, signed, unsigned); holds /tmp/postern-world.lock
#
# Environment:
#   BENCH_MESSAGES=5000   messages per run (smtp-source -m)
#   BENCH_RUNS=3          runs per relay and outbound leg (the table shows median [min-max])
#   BENCH_SESSIONS=20     parallel smtp-source sessions (-s)
#   BENCH_SIZE=4096       message size in bytes (-l)
#   BENCH_LEGS=plain,starttls      outbound legs to measure
#   BENCH_RELAYS=postern,postfix   relays to measure
#   BENCH_STALL=60        fail a run when the sink count does not move for this many seconds
#   BENCH_KEEP=1          keep the work dir (logs, configs) under /var/tmp
#   BENCH_JSON=FILE       also write every run's raw numbers as JSON
#   BENCH_RESUMPTION_MESSAGES=1000  messages per run of `resumption`
#   BENCH_TLS_VERSIONS=1.3,1.2      TLS versions of `resumption` (the sink allows only that one)
#   BENCH_DEEP=1000000    deferred messages of `deep` (kept in BENCH_DEEP_DIR-N, filled anew after 12 h)
#   BENCH_DEEP_SIZE=1024  their size in bytes
#   BENCH_DEEP_DIR=/var/tmp/postern-deep   where the filled store is kept between invocations
#   BENCH_DEEP_PHASES=empty,deep,drain     what `deep` measures
#   BENCH_IDLE=60         seconds of idle CPU measurement in `deep`
#   BENCH_DRAIN=100000    messages of the backlog drain in `deep`
#   BENCH_FILL_BIN=PATH   postern binary with `fill-queue` (default POSTERN_BIN)
#   BENCH_MANY_DOMAINS=200         destination domains of `many` (WORLD_EXTRA_DOMAINS of the test world)
#   BENCH_MANY_PER_DOMAIN=10       messages per domain and run of `many` (one recipient each)
#   BENCH_STS_VENV=/var/tmp/mta-sts-venv   venv of postfix-mta-sts-resolver (installed there if missing)
#   POSTERN_BIN=PATH      use this binary and skip the build
#   CARGO_TARGET_DIR      release build dir (default /var/cache/postern-release)
#
# Needs root: binds port 25 on 127.0.4.x and runs Postfix instances. Nothing leaves loopback;
# every process it starts is stopped by PID at the end, also on failure or Ctrl-C.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { printf 'bench: error: %s\n' "$*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (port 25 on 127.0.4.x, Postfix instances)"

# ---- packages: Postfix (smtp-source, smtp-sink, postfix), openssl, python3
missing=()
for pair in postfix:postfix smtp-sink:postfix smtp-source:postfix openssl:openssl python3:python3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get"
  printf 'bench: installing %s\n' "${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # never let the package start the system-wide Postfix (it would take *:25)
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
  fi
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
  rc=0
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >&2 || rc=$?
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || die "apt-get install ${missing[*]} failed"
fi

# ---- postern, release build in its own target dir (does not disturb debug builds)
if [ -z "${POSTERN_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/postern-release}"
  bash scripts/deps.sh build >&2 || die "scripts/deps.sh build failed"
  printf 'bench: building postern (release) in %s\n' "$CARGO_TARGET_DIR" >&2
  nice -n 19 cargo build --release --quiet >&2 || die "cargo build --release failed"
  export POSTERN_BIN="$CARGO_TARGET_DIR/release/postern"
fi

py=$(command -v python3)
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
# `many` brings up the test world: like every world user it holds the world's lock throughout
# (another user waits), and bench.py takes the world down at the end, also on failure
if [ "${1:-}" = many ]; then
  command -v flock >/dev/null || die "flock (util-linux) is needed"
  exec flock /tmp/postern-world.lock "$py" bench/bench.py "$@"
fi
exec "$py" bench/bench.py "$@"
