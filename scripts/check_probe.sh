#!/usr/bin/env bash
# The shipped probe model (models/probe, docs/PROBE.md) must fail for the
# right reason: on 20 seeded passkey prompts of 1,024 tokens with the key
# at depths 0-40% (held-out keys: the experiment's own seed), the full cache
# finds the key in at least 18, and a window of 10% of the prompt - which
# never holds the key line - in at most 2 (the guessing rate is ~0: keys
# are drawn from 1..50000). Both directions in one sweep of 40 prompts.
# usage: check_probe.sh KVBENCH_BINARY MODEL.gguf TMPDIR
set -u
kv=$1
model=$2
tmp=$3
rm -rf "$tmp" && mkdir -p "$tmp"
# the model ships in the repository: a missing file is a failure, not a skip
if [ ! -f "$model" ]; then echo "FAIL the probe model $model is missing"; exit 1; fi

cat > "$tmp/probe.ini" <<EOF
[experiment]
name = probe_test
seed = 20261206
db = $tmp/probe.db

[model kvprobe]
path = $model
chat = none

[task passkey]
kind = passkey
lengths = 1024
depths = 0, 10, 20, 30, 40
per_cell = 4
max_new_tokens = 8
fidelity = no

[policy full]
policy = full

[policy window]
policy = window

[sweep]
models = kvprobe
tasks = passkey
policies = full, window
budgets = 10%
EOF

if ! out=$("$kv" run "$tmp/probe.ini" -q 2>&1); then echo "FAIL kvbench run: $out"; exit 1; fi

# correct answers and samples per policy
read -r full_ok full_n window_ok window_n <<<"$(/usr/bin/python3 - "$tmp/probe.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
row = {}
for label, ok, n in db.execute("select r.policy_label, sum(m.value), count(*) from runs r join metrics m on m.run = r.id "
                               "where m.name = 'accuracy' group by r.policy_label"):
    row[label] = (int(ok), n)
f, w = row.get('full', (0, 0)), row.get('window', (0, 0))
print(f[0], f[1], w[0], w[1])
PY
)"
echo "full cache: $full_ok/$full_n keys found; window of 10%: $window_ok/$window_n"
rc=0
if [ "$full_n" != 20 ] || [ "$window_n" != 20 ]; then echo "FAIL expected 20 prompts per policy"; rc=1; fi
if [ "$full_ok" -lt 18 ]; then echo "FAIL the full cache found only $full_ok of 20 keys (at least 18 expected)"; rc=1; fi
if [ "$window_ok" -gt 2 ]; then echo "FAIL a window that evicts the key still found $window_ok of 20 (at most 2 expected)"; rc=1; fi
[ $rc = 0 ] && echo "ok   full cache retrieves, the evicting window does not"
exit $rc
