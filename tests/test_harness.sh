#!/usr/bin/env bash
# The harness end to end on stories260K and real data: a sweep into SQLite,
# resumption after SIGKILL with results identical to an uninterrupted run,
# two shards in parallel merged and compared with the unsharded run, merge
# refusing conflicts, report and plot, and malformed experiment files each
# giving a precise error and writing nothing.
# usage: test_harness.sh KVBENCH_BINARY TMPDIR
set -u
kv=$1
tmp=$2
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
rm -rf "$tmp" && mkdir -p "$tmp"
. "$(cd "$(dirname "$0")" && pwd)/testlib.sh"
ini=$here/experiments/tiny.ini

count() { $py -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from samples').fetchone()[0])" "$1" 2>/dev/null || echo 0; }

# --- dry run: the expanded sweep and its size, nothing written
export KVBENCH_TEST_DB=$tmp/dry.db
out=$("$kv" run "$ini" --dry-run 2>&1)
if echo "$out" | grep -q "total: 35 runs, 75 units" && [ ! -e "$tmp/dry.db" ]; then ok "dry-run"; else bad "dry-run" "$out"; fi
out=$("$kv" run "$ini" --dry-run --only policy=h2o,budget=64 2>&1)
if echo "$out" | grep -q "total: 7 runs, 15 units"; then ok "dry-run --only"; else bad "dry-run --only" "$out"; fi

# --- every shipped experiment is valid (a dry run parses, validates and expands it)
for f in "$here"/../experiments/*.ini; do
  out=$("$kv" run "$f" --dry-run 2>&1)
  if [ $? = 0 ] && echo "$out" | grep -qE "^total: [0-9]+ runs, [0-9]+ units"; then ok "shipped $(basename "$f") is valid"; else bad "shipped $(basename "$f")" "$out"; fi
done

# --- a one-shot policy cannot stream
sed 's/^policy = window$/policy = snapkv/' "$ini" >"$tmp/oneshot.ini"
out=$("$kv" run "$tmp/oneshot.ini" --dry-run 2>&1)
if [ $? = 2 ] && echo "$out" | grep -q "window compresses a prompt once, and task pg19 streams its text"; then ok "one-shot policy on a stream refused"; else bad "one-shot on a stream" "$out"; fi

# --- one-shot is an instance's: knorm schedule=prompt (its default) is refused on a stream, every_step runs
sed 's/^policy = window$/policy = knorm/' "$ini" >"$tmp/knorm.ini"
out=$("$kv" run "$tmp/knorm.ini" --dry-run 2>&1)
sed 's/^policy = window$/policy = knorm\nschedule = every_step/' "$ini" >"$tmp/knorm2.ini"
out2=$("$kv" run "$tmp/knorm2.ini" --dry-run 2>&1)
if echo "$out" | grep -q "window compresses a prompt once" && echo "$out2" | grep -q "^total: 35 runs"; then
  ok "knorm schedule=prompt refused on a stream, schedule=every_step allowed"; else bad "knorm schedule on a stream" "$out $out2"; fi

# --- Keyformer, SnapKV and PyramidKV through the harness: budgets held at every step
sed 's/^tasks = .*/tasks = cnndm, passkey/; s/^policies = .*/policies = full, keyformer, snapkv, pyramidkv/' "$ini" >"$tmp/new.ini"
printf '[policy keyformer]\n[policy snapkv]\n[policy pyramidkv]\n' >>"$tmp/new.ini"
export KVBENCH_TEST_DB=$tmp/new.db
out=$("$kv" run "$tmp/new.ini" --threads 1 2>&1)
chk=$($py -c "
import sqlite3, sys
d = sqlite3.connect(sys.argv[1])
n = d.execute('select count(*) from samples').fetchone()[0]
over = d.execute(\"select count(*) from metrics where name='budget_exceeded' and value != 0\").fetchone()[0]
kf = d.execute(\"select params from runs where policy='keyformer' limit 1\").fetchone()[0]
print(n, over, kf)" "$tmp/new.db" 2>&1)
if echo "$chk" | grep -q "^49 0 recent=30,tau_init=1,tau_end=2,steps=24,noise=gumbel,selection=authors,positions=original,prefill=whole$"; then ok "keyformer, snapkv, pyramidkv runs within budget (steps = max_new_tokens)"; else bad "new policies" "$chk $out"; fi

# --- a model run in another weight type with architecture overrides: converted once, beside the database
sed 's/^tasks = .*/tasks = cnndm/; s/^policies = .*/policies = full, h2o/; s#^tokenizer = stories260K/tok512.bin#tokenizer = stories260K/tok512.bin\ndtype = q8_0\nctx_len = 1024\nrope_base = 20000#' "$ini" >"$tmp/dtype.ini"
export KVBENCH_TEST_DB=$tmp/dtype/d.db
out1=$("$kv" run "$tmp/dtype.ini" --threads 1 2>&1)
rm -f "$tmp"/dtype/d.db*
out2=$("$kv" run "$tmp/dtype.ini" --threads 1 2>&1)
spec=$($py -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select spec from runs limit 1').fetchone()[0])" "$tmp/dtype/d.db" 2>&1)
if echo "$out1" | grep -q "converted to q8_0" && ! echo "$out2" | grep -q "converted" && ls "$tmp"/dtype/cache/stories260K-*-q8_0.gguf >/dev/null 2>&1 &&
   echo "$spec" | grep -q " arch=20000/1024/"; then ok "dtype conversion cached, overrides in the run spec"; else bad "dtype" "$out1 $out2 $spec"; fi

# --- kernels = int8 on that model: its own runs (the spec names the mode), other logits, apart in the report
sed 's#^dtype = q8_0#dtype = q8_0\nkernels = int8#' "$tmp/dtype.ini" >"$tmp/int8.ini"
out=$("$kv" run "$tmp/int8.ini" --threads 1 2>&1)
rep=$("$kv" report --db "$tmp/dtype/d.db" 2>&1)
chk=$($py -c "
import sqlite3, sys
d = sqlite3.connect(sys.argv[1])
runs = d.execute(\"select count(*), sum(instr(spec, '/kernels=int8') > 0) from runs where policy='full'\").fetchone()
kl = lambda k: [r[0] for r in d.execute(\"select m.value from metrics m join runs r on r.id=m.run where r.policy='h2o' and m.name='fid_kl' and (instr(r.spec, '/kernels=int8') > 0) = ? order by r.budget_value, m.sample\", (k,))]
a, b = kl(1), kl(0)
print(runs[0], runs[1], len(a), 'differ' if a != b and all(abs(x - y) < 0.05 for x, y in zip(a, b)) else 'same')" "$tmp/dtype/d.db" 2>&1)
bogus=$(KVBENCH_KERNELS=int7 "$kv" run "$tmp/dtype.ini" --dry-run 2>&1; echo "rc=$?")
if [ "$chk" = "2 1 6 differ" ] && echo "$rep" | grep -q "^> stories260K: int8 kernels" &&
   echo "$rep" | grep -q "^### stories260K \[20000/1024/1e-05/kernels=int8\] / cnndm" && echo "$rep" | grep -q "^### stories260K \[20000/1024/1e-05\] / cnndm" &&
   echo "$bogus" | grep -q "KVBENCH_KERNELS: expected int8 or float, got 'int7'" && echo "$bogus" | grep -q "rc=2"; then
  ok "kernels = int8: runs of their own, other logits, apart in the report; a bad KVBENCH_KERNELS refused"
else bad "kernels = int8" "$chk | $rep | $bogus | $out"; fi
# settings longer than the report's field (a long window list before /kernels=int8) still apart
long=$(seq -s, 0 2 120)
$py -c "
import sqlite3, sys
d = sqlite3.connect(sys.argv[1])
d.execute(\"update runs set spec = replace(spec, ' arch=20000/1024/1e-05', ' arch=20000/1024/1e-05/swa=64:' || ?)\", (sys.argv[2],))
d.commit()" "$tmp/dtype/d.db" "$long"
n=$("$kv" report --db "$tmp/dtype/d.db" 2>/dev/null | sed -n 's/^### \(stories260K #[0-9a-f]*\) \/ cnndm (summarization): rouge1_f.*/\1/p' | sort -u | wc -l)
if [ "$n" = 2 ]; then ok "settings longer than the report shows: still two models, named by hash"; else bad "long settings" "$n"; fi

# --- the uninterrupted reference run
export KVBENCH_TEST_DB=$tmp/full.db
if "$kv" run "$ini" --threads 1 -q && [ "$(count "$tmp/full.db")" = 75 ]; then ok "run"; else bad "run"; fi
dump "$tmp/full.db" >"$tmp/full.txt"
# every task kind stored its metrics; no policy exceeded its budget; each sample started empty
$py - "$tmp/full.db" >"$tmp/check.txt" 2>&1 <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
def names(kind):
    return {r[0] for r in db.execute("select distinct m.name from metrics m join runs r on r.id=m.run where r.task_kind=?", (kind,))}
assert {"rouge1_f", "rouge2_f", "rougeL_f", "rougeLsum_f", "fid_kl", "fid_top1_agree", "attn_mass_lost"} <= names("summarization"), names("summarization")
# attention mass lost: a fraction; positive where the policy evicted (cnndm prompts are ~200 tokens, budget 64)
lost = db.execute("""select m.value from metrics m join runs r on r.id=m.run where m.name='attn_mass_lost'
  and r.task='cnndm' and r.policy='window' and r.budget='64'""").fetchall()
assert len(lost) == 3 and all(0 < v < 1 for (v,) in lost), lost
assert db.execute("select count(*) from metrics where name='attn_mass_lost' and (value < 0 or value > 1)").fetchone()[0] == 0
assert {"rouge1_f", "fid_kl"} <= names("conversation")
assert {"accuracy"} <= names("passkey")
assert {"ppl", "nll"} <= names("perplexity")
assert {"accuracy"} <= names("needle") and {"accuracy"} <= names("ruler")
assert {"fid_kl", "fid_top1_agree", "fid_prefix_match", "fid_rougeL_f"} <= names("fidelity")
# llama-perplexity's KL statistics of each compressed sample: ordered percentiles, the mean KL
# of the same steps as fid_kl, same top as top-1 agreement (greedy reference: its argmax)
kld = ["fid_kl_max", "fid_kl_p999", "fid_kl_p99", "fid_kl_median", "fid_kl_p10", "fid_kl_p5", "fid_kl_p1", "fid_kl_min",
       "fid_dp_mean", "fid_dp_rms", "fid_same_top", "fid_ln_ppl_ratio"]
assert set(kld) <= names("fidelity") and set(kld) <= names("summarization")
rows = db.execute("select m.run, m.sample, m.name, m.value from metrics m where m.name like 'fid_%'").fetchall()
per = {}
for run, sample, name, value in rows:
    per.setdefault((run, sample), {})[name] = value
n_kld = 0
for k, m in per.items():
    if "fid_kl_max" not in m:
        continue
    n_kld += 1
    order = [m[x] for x in ["fid_kl_min", "fid_kl_p1", "fid_kl_p5", "fid_kl_p10", "fid_kl_median", "fid_kl_p99", "fid_kl_p999", "fid_kl_max"]]
    assert all(a <= b + 1e-12 for a, b in zip(order, order[1:])), (k, m)
    assert order[0] <= m["fid_kl"] <= order[-1] + 1e-12, (k, m)
    assert abs(m["fid_same_top"] - m["fid_top1_agree"]) < 1e-9 and m["fid_dp_rms"] >= abs(m["fid_dp_mean"]) - 1e-12, (k, m)
assert n_kld > 20, n_kld
# every prompt fits its budget; the RULER prompt kept its question (middle cut)
cut = db.execute("select count(*) from samples s join runs r on r.id=s.run where r.task='ruler' and s.cut_chars > 0").fetchone()[0]
assert cut == 5, cut
over = db.execute("select count(*) from samples where budget_slots >= 0 and kv_slots_max > budget_slots").fetchone()[0]
assert over == 0, over
bad = db.execute("select count(*) from metrics where name='budget_exceeded' and value != 0").fetchone()[0]
assert bad == 0
# compressed runs really hold fewer bytes than the full cache on the same
# sample: never more, and less wherever the full cache holds a third more
# slots than the budget (the cache keeps up to 25% headroom)
pairs = db.execute("""select s.kv_bytes_final, f.kv_bytes_final, s.kv_slots_max, f.kv_slots_max from samples s
  join runs r on r.id=s.run join samples f on f.sample=s.sample join runs rf on rf.id=f.run and rf.policy='full'
  and rf.task=r.task where r.policy!='full'""").fetchall()
assert len(pairs) == 60, len(pairs)
for sb, fb, ss, fs in pairs:
    assert sb <= fb, (sb, fb)
    if fs > ss * 4 / 3: assert sb < fb, (sb, fb, ss, fs)
# the full cache's fidelity reference: a policy holding everything agrees perfectly
print("ok")
PY
if grep -q "^ok" "$tmp/check.txt"; then ok "stored metrics, budgets held, memory freed"; else bad "stored metrics" "$(cat "$tmp/check.txt")"; fi

# --- a budget above every sequence: each policy must equal the full cache exactly
sed 's/^budgets = 64, 128/budgets = 1000/; s/^tasks = .*/tasks = cnndm, dialog, wiki/' "$ini" >"$tmp/big.ini"
export KVBENCH_TEST_DB=$tmp/big.db
"$kv" run "$tmp/big.ini" --threads 1 -q
out=$($py - "$tmp/big.db" 2>&1 <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
n = 0
for name, v in db.execute("select m.name, m.value from metrics m join runs r on r.id=m.run where r.policy!='full' "
                          "and m.name in ('fid_kl','attn_mass_lost','fid_top1_agree','fid_prefix_match')"):
    want = 1.0 if name in ('fid_top1_agree', 'fid_prefix_match') else 0.0
    assert v == want, (name, v)
    n += 1
diff = db.execute("""select count(*) from samples s join runs r on r.id=s.run join samples f on f.sample=s.sample
  join runs rf on rf.id=f.run and rf.policy='full' and rf.task=r.task where r.policy!='full' and s.output != f.output""").fetchone()[0]
assert diff == 0, diff
print("ok", n)
PY
)
if echo "$out" | grep -q "^ok 56$"; then ok "budget above the sequence = full cache (KL 0, no mass lost, same text)"; else bad "large budget" "$out"; fi

# --- fidelity's shared passes (a policy's prompt state from its generation
# run, the full cache's prompt from the sample's first policy) change nothing
if KVBENCH_TEST_DB=$tmp/noshare.db "$kv" run "$ini" --threads 1 -q --no-share &&
   dump "$tmp/noshare.db" >"$tmp/noshare.txt" && cmp -s "$tmp/full.txt" "$tmp/noshare.txt"; then
  ok "shared fidelity passes give the same rows as --no-share"
else
  bad "shared fidelity passes" "$(diff "$tmp/full.txt" "$tmp/noshare.txt" | head -5)"
fi

# --- one prompt pass for every policy of a sample: every method, each
# positions= mode, two Keyformer reductions, cascade's own pass, a question
# after compression, fidelity's reference; the same rows as a pass each
share_ini=$here/experiments/share.ini
if KVBENCH_TEST_DB=$tmp/share1.db "$kv" run "$share_ini" --threads 2 -q &&
   KVBENCH_TEST_DB=$tmp/share0.db "$kv" run "$share_ini" --threads 1 -q --no-share &&
   dump "$tmp/share1.db" >"$tmp/share1.txt" && dump "$tmp/share0.db" >"$tmp/share0.txt" &&
   [ -s "$tmp/share1.txt" ] && cmp -s "$tmp/share1.txt" "$tmp/share0.txt"; then
  ok "one prompt pass per sample gives the same rows as a pass per policy (--no-share)"
else
  bad "shared prompt pass" "$(diff "$tmp/share1.txt" "$tmp/share0.txt" | head -5)"
fi
# the passes were shared (22 runs: the reference, full and 10 methods x 2
# budgets), cascade read its own, the two Keyformers apart; none with --no-share
q1() { $py -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' "$@"; }
pp="select group_concat(distinct r.policy_label || '=' || cast(m.value as int)) from metrics m join runs r on r.id=m.run
    where m.name='prompt_pass_runs' and r.task='cnndm' and r.policy_label in ('h2o','casc','kf','kfc','full')"
got1=$(q1 "$tmp/share1.db" "$pp"); got0=$(q1 "$tmp/share0.db" "select group_concat(distinct cast(value as int)) from metrics where name='prompt_pass_runs'")
if [ "$(echo "$got1" | tr ',' '\n' | sort | tr '\n' ' ')" = "casc=1 full=22 h2o=22 kf=22 kfc=2 " ] && [ "$got0" = 1 ]; then
  ok "the prompt pass served 22 runs of a sample, cascade its own, Keyformer's other noise apart"
else
  bad "prompt_pass_runs" "shared: $got1; --no-share: $got0"
fi

# --- a rerun does nothing new
export KVBENCH_TEST_DB=$tmp/full.db
out=$("$kv" run "$ini" --threads 1 2>&1)
if echo "$out" | grep -q "75 units done (75 already stored)"; then ok "rerun skips stored samples"; else bad "rerun" "$out"; fi

# --- SIGKILL partway, rerun, compare
export KVBENCH_TEST_DB=$tmp/killed.db
"$kv" run "$ini" --threads 1 -q &
pid=$!
for _ in $(seq 1 400); do
  n=$(count "$tmp/killed.db")
  [ "$n" -ge 20 ] && break
  sleep 0.05
done
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
n=$(count "$tmp/killed.db")
if [ "$n" -ge 1 ] && [ "$n" -lt 75 ]; then ok "killed partway ($n of 75 stored)"; else bad "kill partway (stored $n)"; fi
"$kv" run "$ini" --threads 1 -q
dump "$tmp/killed.db" >"$tmp/killed.txt"
if cmp -s "$tmp/full.txt" "$tmp/killed.txt"; then ok "resumed run equals the uninterrupted one"; else bad "resume" "$(diff "$tmp/full.txt" "$tmp/killed.txt" | head)"; fi

# --- two shards in parallel, merged
export KVBENCH_TEST_DB=$tmp/unused.db
"$kv" run "$ini" --threads 1 -q --shard 0/2 --db "$tmp/s0.db" &
p0=$!
"$kv" run "$ini" --threads 1 -q --shard 1/2 --db "$tmp/s1.db"
r1=$?
wait $p0
r0=$?
n0=$(count "$tmp/s0.db")
n1=$(count "$tmp/s1.db")
if [ $r0 = 0 ] && [ $r1 = 0 ] && [ $((n0 + n1)) = 75 ] && [ "$n0" -gt 0 ] && [ "$n1" -gt 0 ]; then ok "shards ($n0 + $n1)"; else bad "shards ($r0 $r1 $n0 $n1)"; fi
if "$kv" merge "$tmp/merged.db" "$tmp/s0.db" "$tmp/s1.db" >/dev/null; then
  dump "$tmp/merged.db" >"$tmp/merged.txt"
  if cmp -s "$tmp/full.txt" "$tmp/merged.txt"; then ok "merged shards equal the unsharded run"; else bad "merge" "$(diff "$tmp/full.txt" "$tmp/merged.txt" | head)"; fi
else bad "merge ran"; fi

# --- merge refuses a conflicting row and leaves OUT untouched
cp "$tmp/s0.db" "$tmp/conflict.db"
$py -c "import sqlite3,sys; d=sqlite3.connect(sys.argv[1]); d.execute(\"update samples set output='changed' where rowid=(select min(rowid) from samples)\"); d.commit()" "$tmp/conflict.db"
before=$(count "$tmp/merged.db")
out=$("$kv" merge "$tmp/merged.db" "$tmp/conflict.db" 2>&1)
rc=$?
if [ $rc != 0 ] && echo "$out" | grep -q "conflict" && [ "$(count "$tmp/merged.db")" = "$before" ] && cmp -s <(dump "$tmp/merged.db") "$tmp/full.txt"; then
  ok "merge refuses conflicts"; else bad "merge conflict (rc $rc)" "$out"; fi

# --- runs of one model name from two model files: merge refuses them, report shows them apart
# (other.db: s0.db's runs as if made from another file: another model hash, spec and run id)
cp "$tmp/s0.db" "$tmp/other.db"
cp "$tmp/full.db" "$tmp/twofiles.db"
$py - "$tmp/other.db" "$tmp/twofiles.db" <<'PY'
import sqlite3, sys
H = 'f' * 32
d = sqlite3.connect(sys.argv[1])
for t in ('samples', 'metrics', 'curves', 'kv_trace', 'experiment_runs'):
    d.execute("update %s set run = 'h' || substr(run, 2)" % t)
d.execute("update runs set id = 'h' || substr(id, 2), model_hash = ?, spec = spec || ' other-file'", (H,))
d.commit()
d = sqlite3.connect(sys.argv[2])
cols = [r[1] for r in d.execute('pragma table_info(runs)')]
sel = ', '.join({'id': "'h' || substr(id, 2)", 'model_hash': "'%s'" % H, 'spec': "spec || ' other-file'"}.get(c, c) for c in cols)
d.execute("insert into runs select %s from runs" % sel)
for t in ('samples', 'metrics', 'experiment_runs'):
    tc = [r[1] for r in d.execute('pragma table_info(%s)' % t)]
    d.execute("insert into %s select %s from %s" % (t, ', '.join("'h' || substr(run, 2)" if c == 'run' else c for c in tc), t))
d.commit()
PY
before=$(count "$tmp/merged.db")
hash0=$($py -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select model_hash from runs limit 1').fetchone()[0])" "$tmp/s0.db")
out=$("$kv" merge "$tmp/merged.db" "$tmp/other.db" 2>&1)
rc=$?
if [ $rc != 0 ] && echo "$out" | grep -q "runs from two different model files" && echo "$out" | grep -q "$hash0" &&
   echo "$out" | grep -q "ffffffffffffffffffffffffffffffff" && [ "$(count "$tmp/merged.db")" = "$before" ] &&
   [ ${#hash0} = 32 ]; then ok "merge refuses runs of one model name from two files"; else bad "merge two model files (rc $rc, hash $hash0)" "$out"; fi
out=$("$kv" report --db "$tmp/twofiles.db" 2>&1)
if echo "$out" | grep -q "note: experiment .* holds runs of model stories260K made from 2 different files" &&
   echo "$out" | grep -q "### stories260K@${hash0:0:8} / cnndm" && echo "$out" | grep -q "### stories260K@ffffffff / cnndm" &&
   ! echo "$out" | grep -q "### stories260K / "; then ok "report shows one model name's two files apart"; else bad "report two model files" "$out"; fi

# --- report and plot
export KVBENCH_TEST_DB=$tmp/full.db
out=$("$kv" report --db "$tmp/full.db" 2>&1)
if echo "$out" | grep -q "### stories260K / cnndm (summarization): rouge1_f x100" &&
   echo "$out" | grep -qE "^\| h2o \| [0-9.]+ \[[0-9.]+, [0-9.]+\] [0-9]+% \|" &&
   echo "$out" | grep -q "passkey (passkey): accuracy" && echo "$out" | grep -q "pg19 (perplexity): ppl"; then
  ok "report (markdown)"; else bad "report" "$out"; fi
out=$("$kv" report --db "$tmp/full.db" --format csv --metric ppl 2>&1)
if echo "$out" | head -1 | grep -q "^experiment,model,task,metric,policy,budget,n,mean,ci_lo,ci_hi,ratio_to_full$" &&
   [ "$(echo "$out" | grep -c ",pg19,ppl,")" = 5 ]; then ok "report (csv)"; else bad "report csv" "$out"; fi
if command -v gnuplot >/dev/null; then
  out=$("$kv" plot --db "$tmp/full.db" --out "$tmp/plots" 2>&1)
  if [ -s "$tmp/plots/stories260K_cnndm_rougeLsum_f_tokens.png" ] && [ -s "$tmp/plots/stories260K_pg19_nll_64.svg" ] &&
     ls "$tmp"/plots/stories260K_passkey_heatmap_h2o_64.png >/dev/null 2>&1; then ok "plot"; else bad "plot" "$out"; fi
else
  out=$(PATH=/nonexistent "$kv" plot --db "$tmp/full.db" --out "$tmp/plots" 2>&1)
  if echo "$out" | grep -q "gnuplot was not found"; then ok "plot without gnuplot"; else bad "plot without gnuplot" "$out"; fi
fi

# --- malformed experiment files: a precise error, nothing written
export KVBENCH_TEST_DB=$tmp/never.db
# expect_bad NAME PATTERN SED-SCRIPT: applies the edit to tiny.ini and runs it
expect_bad() {
  local name=$1 pat=$2 edit=$3
  sed "$edit" "$ini" >"$tmp/bad.ini"
  local out rc
  out=$("$kv" run "$tmp/bad.ini" 2>&1)
  rc=$?
  if [ $rc = 2 ] && echo "$out" | grep -qE "$pat" && [ ! -e "$tmp/never.db" ]; then ok "bad experiment: $name"; else bad "bad experiment: $name (rc $rc)" "$out"; fi
}
line_of() { grep -n "^$1" "$ini" | head -1 | cut -d: -f1; }
L_samples=$(line_of "samples = 3")
L_recent=$(line_of "recent = 0.5")
L_budgets=$(line_of "budgets = 64, 128")
expect_bad "unknown section" "bad.ini:[0-9]+: unknown section \[modle x\]" 's/^\[model stories260K\]/[modle x]/'
expect_bad "unknown key" "bad.ini:$L_samples: \[task cnndm\] unknown key 'sample'" 's/^samples = 3/sample = 3/'
expect_bad "unknown policy" "bad.ini:[0-9]+: \[policy h2o\] policy: unknown policy 'h2oo'" 's/^policy = h2o$/policy = h2oo/'
expect_bad "unknown parameter" "bad.ini:$L_recent: \[policy h2o\] policy h2o: unknown parameter 'recnt'" 's/^recent = 0.5/recnt = 0.5/'
expect_bad "parameter out of range" "bad.ini:$L_recent: \[policy h2o\] policy h2o: parameter recent = 7 is outside" 's/^recent = 0.5/recent = 7/'
expect_bad "bad budget" "bad.ini:$L_budgets: \[sweep\] budgets: budget '12x'" 's/^budgets = 64, 128/budgets = 64, 12x/'
expect_bad "bad budget range" "bad.ini:$L_budgets: \[sweep\] budgets: budget range" 's/^budgets = 64, 128/budgets = 20%..90% step 10/'
expect_bad "percent budget on a stream" "streams its text .* budgets must be token counts" 's/^budgets = 64, 128/budgets = 50%/'
expect_bad "missing data file" "bad.ini:[0-9]+: \[task cnndm\] data: 'nope.csv' not found" 's#^data = cnn_dailymail/cnndm_test_500.csv#data = nope.csv#'
expect_bad "missing model file" "\[model stories260K\] path: 'nope.bin' not found" 's#^path = stories260K/stories260K.bin#path = nope.bin#'
expect_bad "undefined sweep name" "\[sweep\] policies: 'tova' is not defined" 's/^policies = full, window, h2o/policies = full, tova/'
expect_bad "bad integer" "\[task passkey\] depths: expected an integer in 0..100, got '150'" 's/^depths = 0, 50/depths = 0, 150/'
expect_bad "unknown task kind" "\[task cnndm\] kind: unknown kind 'summarisation'" 's/^kind = summarization/kind = summarisation/'
expect_bad "unknown template" "\[task cnndm\] template: unknown template 'plainsumm'" 's/^template = plain-summ/template = plainsumm/'
expect_bad "unset variable" "environment variable \\\$NOPE_NOT_SET is not set" 's/^db = .*/db = ${NOPE_NOT_SET}\/x.db/'
expect_bad "bad dtype" "\\[model stories260K\\] dtype: expected f32, f16, bf16, q8_0 or q4_0, got 'q9'" 's#^tokenizer = stories260K/tok512.bin#tokenizer = stories260K/tok512.bin\ndtype = q9#'
expect_bad "bad gelu" "\\[model stories260K\\] gelu: expected tanh or erf, got 'exact'" 's#^tokenizer = stories260K/tok512.bin#tokenizer = stories260K/tok512.bin\ngelu = exact#'
expect_bad "bad kernels" "\\[model stories260K\\] kernels: expected float or int8, got 'int4'" 's#^tokenizer = stories260K/tok512.bin#tokenizer = stories260K/tok512.bin\nkernels = int4#'
expect_bad "bad kv_type" "\\[model stories260K\\] kv_type: expected f32, f16 or q8_0, got 'q4_0'" 's#^tokenizer = stories260K/tok512.bin#tokenizer = stories260K/tok512.bin\nkv_type = q4_0#'
expect_bad "not key = value" "bad.ini:[0-9]+: expected 'key = value'" 's/^per_cell = 1/per_cell/'
expect_bad "question with no question part" "\[task cnndm\] question = after_compression: template plain-summ@1 has no question part" 's/^kind = summarization/kind = summarization\nquestion = after_compression/'
expect_bad "bad question mode" "\[task passkey\] question: expected in_prompt or after_compression, got 'later'" 's/^kind = passkey/kind = passkey\nquestion = later/'
expect_bad "streaming without chunk" "\[policy h2o\] policy h2o: prefill=streaming needs chunk=N" 's/^recent = 0.5/recent = 0.5\nprefill = streaming/'

# --- lines of any length are read whole: a long comment stays a comment (its
# tail is no setting), a long value is one value, a NUL byte is an error
base=$("$kv" run "$ini" --dry-run 2>&1)
long_comment="; $(printf 'x%.0s' $(seq 1 260)) recent = 0.9"
sed "s/^recent = 0.5/recent = 0.5\n$long_comment/" "$ini" >"$tmp/long.ini"
sed -i "s/^budgets = 64, 128/budgets = 64,$(printf ' %.0s' $(seq 1 250))128/" "$tmp/long.ini"
out=$(KVBENCH_TEST_DB=$tmp/dry.db "$kv" run "$tmp/long.ini" --dry-run 2>&1)
if [ "$(echo "$out" | grep -c '^  run ')" -gt 0 ] && [ "$(echo "$out" | grep '^  run ')" = "$(echo "$base" | grep '^  run ')" ]; then ok "long comment and long value lines read whole"; else bad "long lines" "$out"; fi
L_nul=$(grep -n "^samples = 3" "$ini" | cut -d: -f1)
$py -c "import sys; t=open(sys.argv[1],'rb').read().replace(b'samples = 3', b'samples = 3\x00 0', 1); open(sys.argv[2],'wb').write(t)" "$ini" "$tmp/nul.ini"
out=$("$kv" run "$tmp/nul.ini" --dry-run 2>&1)
if [ $? = 2 ] && echo "$out" | grep -q "nul.ini:$L_nul: a NUL byte at column 12"; then ok "NUL byte in a value refused with its line"; else bad "NUL byte" "$out"; fi

# --- chat templates: the prompt wrapped (the spec names the family, the wrap's tokens are
# stored and account for the whole difference from the plain prompt), the reason each
# generation stopped stored; chat = auto without a template and an unknown family refused
sed -n '1,/^\[task passkey\]/p' "$ini" | sed '$d' >"$tmp/chat.ini"
cat >>"$tmp/chat.ini" <<'EOF2'
[task pk_chat]
kind = passkey
lengths = 200
depths = 50
max_new_tokens = 8
chat = llama2
system = You are a helpful assistant.
question = after_compression

[task pk_plain]
kind = passkey
lengths = 200
depths = 50
max_new_tokens = 8

[policy full]
[policy window]

[sweep]
models = stories260K
tasks = pk_chat, pk_plain
policies = full, window
budgets = 64
EOF2
out=$(KVBENCH_TEST_DB=$tmp/chat.db "$kv" run "$tmp/chat.ini" --threads 1 -q 2>&1)
chk=$($py - "$tmp/chat.db" <<'PY' 2>&1
import sqlite3, sys
d = sqlite3.connect(sys.argv[1])
n = {t: p for t, p in d.execute("select r.task, s.prompt_tokens from runs r join samples s on s.run = r.id where r.policy = 'full'")}
wrap = d.execute("select m.value from metrics m join runs r on r.id = m.run where r.task = 'pk_chat' and m.name = 'chat_wrap_tokens'").fetchall()
spec = d.execute("select spec from runs where task = 'pk_chat' limit 1").fetchone()[0]
stops = [s for (s,) in d.execute("select stop_reason from samples")]
ok_stop = all(s == 'max_new_tokens' or s == 'newline' or s.startswith('end ') for s in stops) and len(stops) == 4
print(len(wrap) == 2 and all(w == n['pk_chat'] - n['pk_plain'] for (w,) in wrap) and wrap[0][0] > 20,
      ' chat=llama2@1 system=[You are a helpful assistant.] ' in spec, ok_stop)
PY
)
if [ "$chk" = "True True True" ]; then ok "chat = llama2: wrapped prompt, recorded family, wrap tokens, stop reasons"; else bad "chat wrap" "$chk $out"; fi
sed 's/^chat = llama2$/chat = auto/' "$tmp/chat.ini" >"$tmp/chat_auto.ini"
out=$(KVBENCH_TEST_DB=$tmp/chat2.db "$kv" run "$tmp/chat_auto.ini" -q 2>&1)
if [ $? != 0 ] && echo "$out" | grep -q "chat = auto: the model has no chat template"; then ok "chat = auto on a model without a template refused"; else bad "chat = auto" "$out"; fi
sed 's/^chat = llama2$/chat = llama9/' "$tmp/chat.ini" >"$tmp/chat_bad.ini"
out=$("$kv" run "$tmp/chat_bad.ini" --dry-run 2>&1)
if [ $? = 2 ] && echo "$out" | grep -q "\[task pk_chat\] chat: chat = llama9: no such chat template family; one of: auto, none, qwen3"; then ok "unknown chat family refused with the list"; else bad "chat = llama9" "$out"; fi

# --- several questions on one context (kvpress's RULER layout): the context is read and
# compressed once and each question continues from it; every stored figure equals that of
# the same rows in an order where no two consecutive rows share a context (nothing reused)
$py - "$tmp" <<'PY'
import json, sys
hay = "The grass is green. The sky is blue. Here we go. " * 2
rows = []
for c, (name, num) in enumerate([("alpha", 7051), ("beta", 3320)]):
    ctx = hay + "One of the special magic numbers for %s is: %d. " % (name, num) + hay
    for q, (qn, ans) in enumerate([(name, num), ("gamma" if c == 0 else "delta", 1000 + c)]):
        rows.append({"context": ctx, "question": " What is the special magic number for %s mentioned in the provided text?" % qn,
                     "answer_prefix": " The special magic number for %s mentioned in the provided text is" % qn,
                     "answer": ["%d-%d%d" % (ans, c, q)], "max_new_tokens": 8, "task": "niah_single_1"})
open(sys.argv[1] + "/consec.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in rows))
open(sys.argv[1] + "/inter.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in [rows[0], rows[2], rows[1], rows[3]]))
PY
sed -n '1,/^\[task cnndm\]/p' "$ini" | sed '$d' >"$tmp/reuse.ini"
cat >>"$tmp/reuse.ini" <<EOF2
[task consec]
kind = ruler
data = $tmp/consec.jsonl
question = after_compression
max_new_tokens = 16

[task inter]
kind = ruler
data = $tmp/inter.jsonl
question = after_compression
max_new_tokens = 16

[policy full]
[policy h2o]
[policy snapkv]

[sweep]
models = stories260K
tasks = consec, inter
policies = full, h2o, snapkv
budgets = 50%
EOF2
out=$(KVBENCH_TEST_DB=$tmp/reuse.db "$kv" run "$tmp/reuse.ini" --threads 1 -q 2>&1)
chk=$($py - "$tmp/reuse.db" <<'PY' 2>&1
import sqlite3, sys
d = sqlite3.connect(sys.argv[1])
skip = ('ttft_ms', 'decode_tokens_per_s', 'latency_p50_ms', 'latency_p95_ms', 'latency_p99_ms', 'context_reused', 'prompt_pass_runs')
rows = {}
for task, pol, ref, out, n in d.execute("select r.task, r.policy_label, s.reference, s.output, s.prompt_tokens "
                                        "from runs r join samples s on s.run = r.id"):
    rows[(task, pol, ref)] = (out, n)
met = {}
for task, pol, ref, name, v in d.execute("select r.task, r.policy_label, s.reference, m.name, m.value from runs r "
                                         "join samples s on s.run = r.id join metrics m on m.run = s.run and m.sample = s.sample"):
    if name not in skip:
        met.setdefault((task, pol, ref), {})[name] = v
same = all(rows[('consec',) + k[1:]] == rows[('inter',) + k[1:]] and met[('consec',) + k[1:]] == met[('inter',) + k[1:]]
           for k in rows if k[0] == 'consec')
reused = dict(d.execute("select r.task, sum(m.value) from runs r join metrics m on m.run = r.id "
                        "where m.name = 'context_reused' group by r.task").fetchall())
print(len(rows), same, reused.get('consec'), reused.get('inter'))
PY
)
if [ "$chk" = "24 True 6.0 0.0" ]; then ok "several questions on one context: compressed once, results as if read each time"; else bad "context reuse" "$chk $out"; fi

# --- RULER tasks generated: each task its own runs (the task is in the run's spec), one
# sample per length, scored by RULER's rule with its nulls counted
sed -n '1,/^\[task cnndm\]/p' "$ini" | sed '$d' >"$tmp/rg.ini"
cat >>"$tmp/rg.ini" <<'EOF2'
[task s1]
kind = ruler
ruler_task = niah_single_1
lengths = 700, 900
max_prompt_tokens = 1024
max_new_tokens = 16

[task mk1]
kind = ruler
ruler_task = niah_multikey_1
lengths = 700
max_prompt_tokens = 1024
max_new_tokens = 16

[policy full]
[policy snapkv]

[sweep]
models = stories260K
tasks = s1, mk1
policies = full, snapkv
budgets = 64
EOF2
out=$(KVBENCH_TEST_DB=$tmp/rg.db "$kv" run "$tmp/rg.ini" --threads 1 -q 2>&1)
chk=$($py - "$tmp/rg.db" <<'PY' 2>&1
import sqlite3, sys
d = sqlite3.connect(sys.argv[1])
runs = d.execute("select task, count(distinct id) from runs group by task").fetchall()
per = dict(d.execute("select r.task, count(*) from runs r join samples s on s.run = r.id group by r.task").fetchall())
names = {n for (n,) in d.execute("select distinct name from metrics")}
specs = [sp for (sp,) in d.execute("select spec from runs where task = 's1'")]
print(sorted(runs), per, {"accuracy", "ruler_empty"} <= names, all(" ruler_task=niah_single_1 " in sp for sp in specs))
PY
)
if [ "$chk" = "[('mk1', 2), ('s1', 2)] {'mk1': 2, 's1': 4} True True" ]; then ok "RULER tasks generated, their own runs, RULER's scores"; else bad "RULER generated" "$chk $out"; fi

# --- a database of schema version 1 (results not comparable) is refused, naming why and the fix
$py -c "import sqlite3,sys; d=sqlite3.connect(sys.argv[1]); d.execute('create table meta(key text primary key, value text not null)'); d.execute(\"insert into meta values('schema_version','1')\"); d.commit()" "$tmp/v1.db"
out=$(KVBENCH_TEST_DB=$tmp/v1.db "$kv" run "$ini" --only task=cnndm 2>&1)
if [ $? != 0 ] && echo "$out" | grep -q "v1.db: schema version 1, .*not comparable.*new database"; then ok "schema version 1 refused with the reason"; else bad "schema version 1" "$out"; fi

# --- the question asked after the context is compressed: the same tokens as
# in_prompt (the full cache gives the same answers both ways), the mode in the
# run's spec, and a policy that sees the question only after compressing
# differs from the one that sees it inside the prompt; prompt-phase KV peaks
# are whole prompts, steady-state ones are the budget's
sed -n '1,/^\[task passkey\]/p' "$ini" | sed '$d' >"$tmp/q.ini"
cat >>"$tmp/q.ini" <<'EOF2'
[task pk_in]
kind = passkey
lengths = 240
depths = 0, 50, 100
per_cell = 2
max_new_tokens = 8

[task pk_after]
kind = passkey
lengths = 240
depths = 0, 50, 100
per_cell = 2
max_new_tokens = 8
question = after_compression

[policy full]
[policy snapkv]
[policy window]

[sweep]
models = stories260K
tasks = pk_in, pk_after
policies = full, snapkv, window
budgets = 64
EOF2
export KVBENCH_TEST_DB=$tmp/q.db
out=$("$kv" run "$tmp/q.ini" --threads 1 -q 2>&1)
chk=$($py - "$tmp/q.db" <<'PY' 2>&1
import sqlite3, sys
d = sqlite3.connect(sys.argv[1])
out = {}
for task, pol, sample, o in d.execute("select r.task, r.policy_label, s.sample, s.output from runs r join samples s on s.run = r.id"):
    out[(task, pol, sample)] = o
samples = sorted({k[2] for k in out})
same_full = all(out[('pk_in', 'full', s)] == out[('pk_after', 'full', s)] for s in samples)
differ_snap = sum(out[('pk_in', 'snapkv', s)] != out[('pk_after', 'snapkv', s)] for s in samples)
specs = [r[0] for r in d.execute("select spec from runs where task = 'pk_after'")]
modes = all(' question=after_compression ' in sp for sp in specs) and len(specs) == 3
m = {(t, p, n): v for t, p, n, v in d.execute("select r.task, r.policy_label, m.name, max(m.value) from runs r join metrics m on m.run = r.id group by 1, 2, 3")}
peaks = m[('pk_in', 'window', 'kv_bytes_prompt_peak')] > m[('pk_in', 'window', 'kv_bytes_steady_peak')] and \
        m[('pk_in', 'window', 'kv_bytes_steady_peak')] < m[('pk_in', 'full', 'kv_bytes_steady_peak')]
print(len(samples), same_full, differ_snap > 0, modes, peaks)
PY
)
if [ "$chk" = "6 True True True True" ]; then ok "question after compression: same tokens, recorded, changes snapkv; KV peaks by phase"; else bad "question after compression" "$chk $out"; fi
rep=$("$kv" report --db "$tmp/q.db" --metric fid_kl 2>&1)
rows=$(echo "$rep" | sed -n '/the question in the prompt (task pk_in) vs after compression (task pk_after)/,/^### /p' | grep -cE '^[|] (snapkv|window) [|] 64 [|] [0-9.]+ [[]' )
if [ "$rows" = 2 ]; then ok "report: the two question modes side by side"; else bad "report side by side ($rows rows)" "$rep"; fi

# --- LongBench tasks (kind = longbench) from a LongBench folder written here: pred.py's
# truncation in the middle (a long row cut, a short one not), samsum's stop token kept at
# the end of its output, the task in the run's spec, and every stored longbench_score and
# bucket equal to what `kvbench score longbench` gives on the stored predictions
mkdir -p "$tmp/lb"
$py - "$tmp/lb" <<'PY'
import json, sys
d = sys.argv[1]
long_ctx = " ".join("Tom said the dog ran to the park and then it sat down." for _ in range(40))
rows = {
    "samsum": [dict(input="Dialogue: Ann: Hi Bob!\nBob: Hi.\nSummary: ", context=long_ctx, answers=["Ann greets Bob."],
                    length=5000, all_classes=None, _id="s-long"),
               dict(input='Dialogue: Sue: "Lunch?" said Sue.\nTim: "Yes," said Tim.\nSummary: ', context="Dialogue: A: x\nSummary: A says x.",
                    answers=["Sue and Tim go to lunch."], length=100, all_classes=None, _id="s-short")],
    "trec": [dict(input="Question: Where is the park?\nType:", context="Question: Who ran?\nType: Human being",
                  answers=["Location"], length=9000, all_classes=["Location", "Human being", "Number"], _id="t1"),
             dict(input="Question: How many dogs?\nType:", context=long_ctx, answers=["Number"], length=3999,
                  all_classes=["Location", "Human being", "Number"], _id="t2")],
}
for task, rs in rows.items():
    with open(f"{d}/{task}.jsonl", "w") as f:
        for r in rs: f.write(json.dumps(r) + "\n")
PY
cat >"$tmp/lb.ini" <<INI
[experiment]
name = lb
seed = 7
db = $tmp/lb.db
[model s]
path = stories260K/stories260K.bin
tokenizer = stories260K/tok512.bin
[task samsum]
kind = longbench
longbench_task = samsum
data = $tmp/lb
max_prompt_tokens = 200
max_new_tokens = 64
[task trec]
kind = longbench
longbench_task = trec
data = $tmp/lb/trec.jsonl
max_prompt_tokens = 200
max_new_tokens = 12
[policy full]
[policy window]
[sweep]
models = s
tasks = *
policies = *
budgets = 48
INI
out=$("$kv" run "$tmp/lb.ini" -q 2>&1)
chk=$($py - "$tmp/lb.db" "$tmp/lb" "$kv" <<'PY'
import json, sqlite3, subprocess, sys
db, d, kv = sqlite3.connect(sys.argv[1]), sys.argv[2], sys.argv[3]
data = {t: {r["_id"]: r for r in map(json.loads, open(f"{d}/{t}.jsonl"))} for t in ("samsum", "trec")}
rows = db.execute("select r.task, r.spec, s.run, s.sample, s.prompt_tokens, s.cut_chars, s.output, s.stop_reason, s.length "
                  "from runs r join samples s on s.run = r.id order by r.task, s.run, s.idx").fetchall()
m = {(r, s, n): v for r, s, n, v in db.execute("select run, sample, name, value from metrics where name like 'longbench%'")}
bad = []
for task in ("samsum", "trec"):
    sel = [x for x in rows if x[0] == task]
    if len(sel) != 4: bad.append(f"{task}: {len(sel)} rows")
    if not all(f" longbench_task={task} " in x[1] for x in sel): bad.append(f"{task}: spec")
    for run in sorted({x[2] for x in sel}):
        rs = [x for x in sel if x[2] == run]
        with open(f"{d}/pred.jsonl", "w") as f:
            for x in rs:
                r = data[task][x[3]]
                f.write(json.dumps(dict(pred=x[6], answers=r["answers"], all_classes=r["all_classes"], length=r["length"])) + "\n")
        got = [json.loads(l) for l in subprocess.run([kv, "score", "longbench", "--task", task, "--pred", f"{d}/pred.jsonl",
                                                     "--format", "jsonl", "--e"], capture_output=True, text=True).stdout.splitlines()]
        for x, g in zip(rs, got):
            if abs(m[(run, x[3], "longbench_score")] - 100 * g["score"]) > 1e-9: bad.append(f"score {run} {x[3]}")
            if ["0-4k", "4-8k", "8k+"][int(m[(run, x[3], "longbench_bucket")])] != g["bucket"]: bad.append(f"bucket {x[3]}")
    for x in sel:
        if x[8] != data[task][x[3]]["length"]: bad.append(f"length {x[3]}")
        long = data[task][x[3]]["context"].startswith("Tom said")
        # pred.py: 200 tokens kept (BOS counted), re-encoded after decoding: a token or two either way
        if long and not (x[5] > 0 and 194 <= x[4] <= 206): bad.append(f"long row not cut: {x[4]} {x[5]}")
        if not long and (x[5] != 0 or x[4] > 200): bad.append(f"short row cut: {x[4]} {x[5]}")
        if task == "samsum":
            o = x[6]
            if "\n" in o[:-1] or o.startswith("\n") or (x[7] == "stop token") != o.endswith("\n"): bad.append(f"samsum stop: {o!r} {x[7]}")
# stories260K ends a quoted sentence with a newline: the stop is met here, not only allowed
if sum(x[7] == "stop token" for x in rows if x[0] == "samsum") < 2: bad.append("samsum never stopped at its newline")
print(" ".join(bad) or "good")
PY
)
if [ "$chk" = good ]; then ok "longbench: pred.py's truncation and samsum stop, eval.py's scores and buckets as 'score longbench' gives them"; else bad "longbench" "$chk $out"; fi
# samsum's min_length: after this input stories260K's most likely token is the newline, which
# may not come first (pred.py's min_length = prompt + 1): it comes second, and ends the output
mkdir -p "$tmp/lb1"
$py -c 'import json, sys; print(json.dumps(dict(input="Dialogue: Sue: \"Lunch?\" said Sue.\nSummary: We can see your shoes and share them with your shoes. You can have a shoe.\"", context="Dialogue: A: x\nSummary: A says x.", answers=["Sue goes to lunch."], length=10, all_classes=None, _id="nl")))' >"$tmp/lb1/samsum.jsonl"
sed "s|^db = .*|db = $tmp/lb1.db|; s|^data = $tmp/lb\$|data = $tmp/lb1|; s|^policies = \*|policies = full|; s|^tasks = \*|tasks = samsum|" "$tmp/lb.ini" >"$tmp/lb1.ini"
out=$("$kv" run "$tmp/lb1.ini" -q 2>&1)
got=$($py -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("select generated_tokens >= 2, stop_reason, output = char(10) from samples").fetchall())' "$tmp/lb1.db" 2>&1)
if [ "$got" = "[(1, 'stop token', 1)]" ]; then ok "longbench samsum: the newline is barred from the first step"; else bad "samsum min_length" "$got $out"; fi

# refused by name: a jieba task, a stop setting, a missing task file, an unknown task
lb_bad() {
  sed "$3" "$tmp/lb.ini" >"$tmp/lb_bad.ini"
  out=$("$kv" run "$tmp/lb_bad.ini" --dry-run 2>&1)
  if [ $? != 0 ] && echo "$out" | grep -qF "$2"; then ok "longbench refuses $1"; else bad "longbench refuses $1" "$out"; fi
}
lb_bad "a jieba task" "dureader is refused: its scorer rouge_zh_score segments Chinese with jieba" 's/^longbench_task = samsum/longbench_task = dureader/'
lb_bad "a stop setting" "stop: a longbench task stops as LongBench's pred.py does" 's/^max_new_tokens = 64/stop = newline/'
lb_bad "a folder without the task's file" "lb/samsum_e.jsonl' not found" 's/^longbench_task = samsum/longbench_task = samsum\nlongbench_e = yes/'
lb_bad "an unknown task" "unknown LongBench task 'samsum2'" 's/^longbench_task = samsum/longbench_task = samsum2/'

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
