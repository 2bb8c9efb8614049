#!/usr/bin/env bash
# Runs fuzz targets one after the other (never in parallel), each for
# SECONDS_PER_TARGET (default 900), logging to fuzz/logs/<target>.log with
# the CPU time used. Usage: fuzz/run.sh [target…] (default: all).
set -u
cd "$(dirname "$0")"
. ./env.sh
secs=${SECONDS_PER_TARGET:-900}
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(smtp_inbound smtp_reply mta_sts tlsrpt_record tlsrpt_received config trust_anchors rfc2136_answer)
mkdir -p logs
for t in "${targets[@]}"; do
  /usr/bin/time -f "cpu_user_s=%U cpu_sys_s=%S wall_s=%e maxrss_kb=%M" \
    cargo +nightly fuzz run -s none -a "$t" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    > "logs/$t.log" 2>&1
  echo "$t rc=$?" >> logs/summary
done
