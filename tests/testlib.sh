# testlib.sh - what the shell tests share (sourced): the pass/fail counters,
# ok/bad, expect_fail, and dump (the rows two databases must agree on).

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && echo "$2" | head -20; }

# expect_fail NAME EXPECTED_RC PATTERN -- command...: the command exits with
# EXPECTED_RC and its stderr matches PATTERN.
expect_fail() {
  local name=$1 want=$2 pat=$3
  shift 4
  local out rc
  out=$("$@" 2>&1 >/dev/null)
  rc=$?
  if [ "$rc" = "$want" ] && echo "$out" | grep -qE "$pat"; then ok "$name"; else bad "$name (rc $rc)" "$out"; fi
}

# dump DB: every column but timings (and when a sample finished), every
# metric but timings (and prompt_pass_runs, which explains them), curves, KV traces and the runs' specs, in a fixed order.
dump() {
  /usr/bin/python3 - "$1" 2>/dev/null <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for r in db.execute("select run, sample, idx, length, depth, prompt_tokens, generated_tokens, cut_chars, "
                    "kv_bytes_peak, kv_bytes_final, kv_slots_max, budget_slots, output, reference, stop_reason from samples "
                    "order by run, sample"):
    print(r)
for r in db.execute("select run, sample, name, value from metrics where name not in "
                    "('ttft_ms','decode_tokens_per_s','tokens_per_s','latency_p50_ms','latency_p95_ms','latency_p99_ms','prompt_pass_runs') "
                    "order by run, sample, name"):
    print(r)
for t in ("curves", "kv_trace"):
    for r in db.execute("select * from %s order by run, sample, pos" % t):
        print(t, r)
for r in db.execute("select id, spec from runs order by id"):
    print(r)
PY
}
