#!/usr/bin/env bash
# Faults and concurrency with nothing lost, on tests/experiments/tiny.ini:
# report and plot on a database they may only read; read-only, truncated
# and foreign database files named as such; SIGINT and SIGTERM mid-sweep
# (and a second Ctrl-C); two runs sharing one database; damaged databases
# given to merge and report; a real full disk (a small tmpfs, as root);
# kill -9 at 20 seeded points of a sweep. Every
# resumed or shared database must equal an uninterrupted run in every
# column but timings.
# usage: test_faults.sh KVBENCH_BINARY TMPDIR [SECTION...]
# (sections: readonly signals concurrent diskfull merge kills; default all)
set -u
kv=$1
tmp=$2
shift 2
sections=${*:-readonly signals concurrent diskfull merge kills}
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
rm -rf "$tmp" && mkdir -p "$tmp"
. "$(cd "$(dirname "$0")" && pwd)/testlib.sh"
chmod 755 "$tmp"
want() { case " $sections " in *" $1 "*) return 0 ;; esac; return 1; }
ini=$here/experiments/tiny.ini
t0=$(date +%s)

q() { $py -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])" "$1" "$2" 2>/dev/null || echo x; }
count() { q "$1" "select count(*) from samples"; }
healthy() { [ "$(q "$1" "pragma integrity_check")" = ok ]; }
# wait_for DB N PID: until DB holds N samples or PID has exited
wait_for() {
  for _ in $(seq 1 600); do
    kill -0 "$3" 2>/dev/null || return 1
    [ "$(count "$1")" -ge "$2" ] 2>/dev/null && return 0
    sleep 0.02
  done
  return 1
}
# units this process stored: "N units done (M already stored)" -> N - M
stored_by() { sed -n 's/.*: \([0-9]*\) units done (\([0-9]*\) already stored).*/\1 \2/p' "$1" | awk '{print $1 - $2}'; }

# --- the uninterrupted reference
export KVBENCH_TEST_DB=$tmp/full.db
if "$kv" run "$ini" --threads 1 -q && [ "$(count "$tmp/full.db")" = 75 ]; then ok "reference run"; else bad "reference run"; fi
dump "$tmp/full.db" >"$tmp/full.txt"

if want readonly; then
  # As root, permissions do not apply: the read-only cases run as nobody.
  as_user=()
  if [ "$(id -u)" = 0 ]; then
    if command -v setpriv >/dev/null; then as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups); else as_user=(skip); fi
  fi
  if [ "${as_user[0]:-}" = skip ]; then
    echo "skip read-only cases (root without setpriv)"
  else
    mkdir -p "$tmp/ro" "$tmp/plots-ro"
    cp "$tmp/full.db" "$tmp/ro/r.db"
    chmod 644 "$tmp/ro/r.db"
    chmod 555 "$tmp/ro"
    chmod 777 "$tmp/plots-ro"
    sum=$(md5sum <"$tmp/ro/r.db")
    out=$("${as_user[@]}" "$kv" report --db "$tmp/ro/r.db" 2>&1)
    rc=$?
    ref=$("$kv" report --db "$tmp/full.db" 2>&1 | sed 1d)
    if [ $rc = 0 ] && [ "$(echo "$out" | sed 1d)" = "$ref" ] && [ -n "$ref" ] && [ "$(ls "$tmp/ro")" = r.db ] &&
       [ "$(md5sum <"$tmp/ro/r.db")" = "$sum" ]; then ok "report on a database in a read-only directory (nothing written)"; else bad "report read-only (rc $rc)" "$out"; fi
    if command -v gnuplot >/dev/null; then
      out=$("${as_user[@]}" "$kv" plot --db "$tmp/ro/r.db" --out "$tmp/plots-ro" 2>&1)
      if [ $? = 0 ] && [ -s "$tmp/plots-ro/stories260K_cnndm_rougeLsum_f_tokens.png" ]; then ok "plot from a read-only directory"; else bad "plot read-only" "$out"; fi
    fi
    # the directory is read-only but the file is writable: run cannot create the -wal file
    chmod 755 "$tmp/ro" && chmod 666 "$tmp/ro/r.db" && chmod 555 "$tmp/ro"
    out=$("${as_user[@]}" "$kv" run "$ini" --threads 1 -q --db "$tmp/ro/r.db" 2>&1)
    rc=$?
    if [ $rc = 1 ] && echo "$out" | grep -q "the directory $tmp/ro is read-only" && echo "$out" | grep -q "r.db-wal"; then
      ok "run in a read-only directory names the -wal file"; else bad "run read-only directory (rc $rc)" "$out"; fi
    out=$("${as_user[@]}" "$kv" run "$ini" --threads 1 -q --db "$tmp/ro/new.db" 2>&1)
    if [ $? = 1 ] && echo "$out" | grep -q "cannot create the database: the directory $tmp/ro is not writable"; then
      ok "run creating a database in a read-only directory"; else bad "run new db in read-only directory" "$out"; fi
    chmod 755 "$tmp/ro" && chmod 644 "$tmp/ro/r.db"
    out=$("${as_user[@]}" "$kv" run "$ini" --threads 1 -q --db "$tmp/ro/r.db" 2>&1)
    if [ $? = 1 ] && echo "$out" | grep -q "r.db: the database file is read-only"; then ok "run on a read-only file"; else bad "run read-only file" "$out"; fi
    # a -wal file with changes beside it: reading it needs the -shm index, which cannot be made there
    $py - "$tmp/ro/r.db" <<'PY'
import shutil, sqlite3, sys
d = sqlite3.connect(sys.argv[1])
d.execute("pragma wal_autocheckpoint=0")
d.execute("update experiments set description = 'changed'")
d.commit()
shutil.copy(sys.argv[1] + "-wal", sys.argv[1] + ".keep")
PY
    mv "$tmp/ro/r.db.keep" "$tmp/ro/r.db-wal" && rm -f "$tmp/ro/r.db-shm" && chmod 555 "$tmp/ro"
    out=$("${as_user[@]}" "$kv" report --db "$tmp/ro/r.db" 2>&1)
    if [ $? = 1 ] && echo "$out" | grep -q "r.db-wal holds changes not yet in the database, and the directory $tmp/ro is read-only"; then
      ok "report: changes in a -wal file that cannot be read from a read-only directory are named"; else bad "report read-only with -wal" "$out"; fi
    chmod 755 "$tmp/ro"
  fi
  # truncated and foreign files: named as such, by run and by report, and left as they were
  head -c 20000 "$tmp/full.db" >"$tmp/trunc.db"
  head -c 60 "$tmp/full.db" >"$tmp/trunc60.db"
  echo "not a database" >"$tmp/text.db"
  $py -c "import sqlite3,sys; d=sqlite3.connect(sys.argv[1]); d.execute('create table t(x)'); d.commit()" "$tmp/foreign.db"
  for f in trunc trunc60 text foreign; do
    sum=$(md5sum <"$tmp/$f.db")
    o1=$("$kv" report --db "$tmp/$f.db" 2>&1); r1=$?
    o2=$("$kv" run "$ini" --threads 1 -q --db "$tmp/$f.db" 2>&1); r2=$?
    case $f in
      trunc | trunc60) pat="$f.db: the database is damaged \(truncated" ;;
      text) pat="text.db: not an SQLite database" ;;
      foreign) pat="foreign.db: not a kvbench results database" ;;
    esac
    if [ $r1 = 1 ] && echo "$o1" | grep -qE "$pat" && [ $r2 = 1 ] && echo "$o2" | grep -qE "$pat" &&
       [ "$(md5sum <"$tmp/$f.db")" = "$sum" ]; then ok "$f database: the cause named by report and run, file untouched"; else bad "$f database ($r1 $r2)" "$o1 / $o2"; fi
  done
fi

if want signals; then
  # stop_at NAME SIGNALS...: a run stopped after 20 samples by SIGNALS sent back to back
  stop_at() {
    local name=$1
    shift
    export KVBENCH_TEST_DB=$tmp/$name.db
    "$kv" run "$ini" --threads 1 -q 2>"$tmp/$name.err" &
    local pid=$!
    wait_for "$tmp/$name.db" 20 $pid
    for s in "$@"; do kill -s "$s" $pid; done
    wait $pid
    echo $?
  }
  for spec in "sigint:INT:130" "sigterm:TERM:143"; do
    IFS=: read -r name sig code <<<"$spec"
    rc=$(stop_at "$name" "$sig")
    out=$(cat "$tmp/$name.err")
    n=$(count "$tmp/$name.db")
    if [ "$rc" = "$code" ] && echo "$out" | grep -q "stopped by SIG$sig: $n units stored ($n now, 0 before), no partial sample kept" &&
       echo "$out" | grep -q "resume with: kvbench run $ini --threads 1 -q$" && [ "$n" -ge 20 ] && [ "$n" -lt 75 ] &&
       healthy "$tmp/$name.db" && [ "$(q "$tmp/$name.db" "select count(*) from claims")" = 0 ]; then
      ok "SIG$sig: exit $code, $n of 75 stored, summary and resume command, database whole"; else bad "SIG$sig (rc $rc, $n stored)" "$out"; fi
    KVBENCH_TEST_DB=$tmp/$name.db "$kv" run "$ini" --threads 1 -q
    if cmp -s "$tmp/full.txt" <(dump "$tmp/$name.db"); then ok "resumed after SIG$sig equals the uninterrupted run"; else bad "resume after SIG$sig" "$(diff "$tmp/full.txt" <(dump "$tmp/$name.db") 2>&1 | head -5)"; fi
  done
  # a second signal while the first is handled: two SIGINTs sent back to back
  # may merge into one (signals of a kind do not queue), so the second is a
  # SIGTERM; a SIGTERM among them makes the status 143
  rc=$(stop_at twice INT TERM)
  out=$(cat "$tmp/twice.err")
  claims=$(q "$tmp/twice.db" "select count(*) from claims")
  if [ "$rc" = 143 ] && echo "$out" | grep -q "stopped at once" && ! echo "$out" | grep -q "units stored" &&
     healthy "$tmp/twice.db"; then ok "a second signal stops at once ($claims claims left), database whole"; else bad "second signal (rc $rc)" "$out"; fi
  KVBENCH_TEST_DB=$tmp/twice.db "$kv" run "$ini" --threads 1 -q
  if cmp -s "$tmp/full.txt" <(dump "$tmp/twice.db") && [ "$(q "$tmp/twice.db" "select count(*) from claims")" = 0 ]; then
    ok "resumed after a second signal equals the uninterrupted run (the dead run's claims taken over)"; else bad "resume after a second signal"; fi
fi

if want concurrent; then
  # the same experiment twice at once, on a database neither has created yet
  export KVBENCH_TEST_DB=$tmp/shared.db
  "$kv" run "$ini" --threads 1 >"$tmp/a.log" 2>&1 &
  pa=$!
  "$kv" run "$ini" --threads 1 >"$tmp/b.log" 2>&1
  rb=$?
  wait $pa
  ra=$?
  sa=$(stored_by "$tmp/a.log")
  sb=$(stored_by "$tmp/b.log")
  # no unit computed twice (claims), none stored twice, no lock error
  if [ $ra = 0 ] && [ $rb = 0 ] && ! grep -qi "locked\|UNIQUE\|stored first by another" "$tmp/a.log" "$tmp/b.log" && [ $((sa + sb)) = 75 ] &&
     cmp -s "$tmp/full.txt" <(dump "$tmp/shared.db") && [ "$(q "$tmp/shared.db" "select count(*) from claims")" = 0 ] &&
     healthy "$tmp/shared.db"; then ok "two runs of one experiment share the work ($sa + $sb), equal to one run"; else
     bad "two runs at once ($ra $rb, $sa + $sb)" "$(cat "$tmp/a.log" "$tmp/b.log")"; fi
  # two different experiments sharing some runs (full, h2o at 64), at once, against one after the other
  sed 's/^name = tiny$/name = tiny2/; s/^budgets = 64, 128/budgets = 32, 64/; s/^policies = full, window, h2o/policies = full, h2o/' "$ini" >"$tmp/tiny2.ini"
  export KVBENCH_TEST_DB=$tmp/seq.db
  "$kv" run "$ini" --threads 1 -q && "$kv" run "$tmp/tiny2.ini" --threads 1 -q
  export KVBENCH_TEST_DB=$tmp/two.db
  "$kv" run "$tmp/tiny2.ini" --threads 1 >"$tmp/c.log" 2>&1 &
  pc=$!
  "$kv" run "$ini" --threads 1 >"$tmp/d.log" 2>&1
  rd=$?
  wait $pc
  rc=$?
  if [ $rc = 0 ] && [ $rd = 0 ] && ! grep -qi "locked\|UNIQUE\|stored first by another" "$tmp/c.log" "$tmp/d.log" && [ "$(count "$tmp/two.db")" = "$(count "$tmp/seq.db")" ] &&
     cmp -s <(dump "$tmp/seq.db") <(dump "$tmp/two.db") && healthy "$tmp/two.db"; then
    ok "two experiments at once on one database ($(count "$tmp/two.db") samples) equal them run one after the other"; else
    bad "two experiments at once ($rc $rd)" "$(cat "$tmp/c.log" "$tmp/d.log")"; fi
  # a live claim of another host is left alone (and said); once its lease ran out it is taken
  # over; a claim on this host whose pid is now another program's is taken over at once
  cp "$tmp/full.db" "$tmp/claimed.db"
  sleep 60 &
  other=$!
  $py - "$tmp/claimed.db" "$(hostname)" $other <<'PY'
import sqlite3, sys, time
d = sqlite3.connect(sys.argv[1])
rows = d.execute("select run, sample from samples order by run, sample limit 2").fetchall()
for run, sample in rows:
    for t in ("samples", "metrics", "curves", "kv_trace"):
        d.execute("delete from %s where run=? and sample=?" % t, (run, sample))
d.execute("insert into claims values(?,?,'elsewhere',1,'elsewhere:1:0',?)", rows[0] + (int(time.time()) + 3600,))
d.execute("insert into claims values(?,?,?,?,?,?)", rows[1] + (sys.argv[2], int(sys.argv[3]), "%s:%s:0" % (sys.argv[2], sys.argv[3]), int(time.time()) + 3600))
d.commit()
PY
  export KVBENCH_TEST_DB=$tmp/claimed.db
  out=$("$kv" run "$ini" --threads 1 2>&1)
  n1=$(count "$tmp/claimed.db")
  $py -c "import sqlite3,sys; d=sqlite3.connect(sys.argv[1]); d.execute('update claims set expires = 0'); d.commit()" "$tmp/claimed.db"
  out2=$("$kv" run "$ini" --threads 1 2>&1)
  kill $other 2>/dev/null
  wait $other 2>/dev/null
  if [ "$n1" = 74 ] && echo "$out" | grep -q "1 units were claimed by other processes" && [ "$(count "$tmp/claimed.db")" = 75 ] &&
     echo "$out2" | grep -q "75 units done (74 already stored)" && cmp -s "$tmp/full.txt" <(dump "$tmp/claimed.db"); then
    ok "another host's live claim left alone until its lease ran out; one of a pid now another program's taken over"; else bad "claim lease" "$out $out2"; fi
fi

if want diskfull; then
  # A real full disk: a 400 KiB tmpfs, which the sweep outgrows after a few
  # samples. (tests/test_resultsdb_faults.c fails every write and sync in
  # turn through an SQLite VFS shim; this is the file system itself.)
  mnt=$tmp/small
  mkdir -p "$mnt"
  if [ "$(id -u)" != 0 ] || ! mount -t tmpfs -o size=400k tmpfs "$mnt" 2>/dev/null; then
    echo "skip disk-full cases (mounting a tmpfs needs root and a kernel that allows it)"
  else
    trap 'umount "$mnt" 2>/dev/null' EXIT
    export KVBENCH_TEST_DB=$mnt/r.db
    out=$("$kv" run "$ini" --threads 1 -q 2>&1)
    rc=$?
    n=$(count "$mnt/r.db")
    # whole samples or none: every stored sample has its metrics
    bare=$(q "$mnt/r.db" "select count(*) from samples s where not exists (select 1 from metrics m where m.run = s.run and m.sample = s.sample)")
    if [ $rc = 1 ] && echo "$out" | grep -q "$mnt/r.db: committing a sample: database or disk is full (the file system holding $mnt has" &&
       [ "$n" -gt 0 ] && [ "$n" -lt 75 ] && [ "$bare" = 0 ] && healthy "$mnt/r.db"; then
      ok "a full disk stops the run with the database named, $n whole samples kept, the file sound"; else
      bad "full disk (rc $rc, $n samples, $bare without metrics)" "$out"; fi
    mount -o remount,size=16m "$mnt"
    out=$("$kv" run "$ini" --threads 1 2>&1)
    if [ $? = 0 ] && echo "$out" | grep -q "75 units done ($n already stored)" && cmp -s "$tmp/full.txt" <(dump "$mnt/r.db") &&
       [ "$(q "$mnt/r.db" "select count(*) from claims")" = 0 ] && healthy "$mnt/r.db"; then
      ok "with room again the run resumes ($n kept) and equals an uninterrupted one"; else bad "resume after a full disk" "$out"; fi
    umount "$mnt" && trap - EXIT
  fi
fi

if want merge; then
  # damage_db SRC DST PYTHON: DST is SRC with the Python statements applied (d: the connection)
  damage_db() {
    cp "$1" "$2"
    $py -c "import sqlite3,sys; d=sqlite3.connect(sys.argv[1]); exec(sys.argv[2]); d.commit()" "$2" "$3"
  }
  # rows a run could never write: metrics, curves and links of no run or sample, a value of the wrong type
  damage_db "$tmp/full.db" "$tmp/orphans.db" "
d.execute(\"insert into metrics select run, 'ghost-' || sample, name, value * 1000 from metrics\")
d.execute(\"insert into curves select substr('feedface' || run, 1, 16), sample, pos, nll from curves\")
d.execute(\"insert into experiment_runs values('tiny', 'feedfacefeedface')\")
d.execute(\"insert into metrics select run, sample, 'bogus', 'text' from samples limit 1\")"
  out=$("$kv" merge "$tmp/m-orphans.db" "$tmp/orphans.db" 2>&1)
  rc=$?
  norph=$(q "$tmp/orphans.db" "select (select count(*) from metrics where sample like 'ghost-%') + (select count(*) from curves where run like 'feedface%') + 2")
  if [ $rc = 0 ] && echo "$out" | grep -q "orphans.db: left out $norph rows that no run could have written" &&
     cmp -s "$tmp/full.txt" <(dump "$tmp/m-orphans.db"); then ok "merge leaves out $norph orphan and mistyped rows, keeps the rest whole"; else bad "merge orphans (rc $rc)" "$out"; fi
  # report counts only metrics of stored samples: the orphans change nothing
  if [ "$("$kv" report --db "$tmp/orphans.db" --format csv 2>&1)" = "$("$kv" report --db "$tmp/full.db" --format csv 2>&1)" ]; then
    ok "report ignores metrics of no sample"; else bad "report with orphan metrics"; fi
  # a run whose id is not its spec's hash, a sample without its metrics: left out with all they hold
  damage_db "$tmp/full.db" "$tmp/mangled.db" "
r = d.execute(\"select id from runs where task='cnndm' and policy='h2o' and budget='64'\").fetchone()[0]
d.execute(\"update runs set spec = spec || ' budget=32' where id = ?\", (r,))
d.execute(\"delete from metrics where rowid in (select m.rowid from metrics m join runs r on r.id = m.run where r.task = 'pg19' and r.policy = 'full')\")"
  out=$("$kv" merge "$tmp/m-mangled.db" "$tmp/mangled.db" 2>&1)
  rc=$?
  if [ $rc = 0 ] && echo "$out" | grep -qE "left out [0-9]+ rows .*: 1 runs, 1 experiment_runs, 4 samples, [0-9]+ metrics, [0-9]+ curves, [0-9]+ kv_trace" &&
     [ "$(count "$tmp/m-mangled.db")" = 71 ] && [ "$(q "$tmp/m-mangled.db" "select count(*) from runs")" = 34 ]; then
    ok "merge leaves out a run with a forged id and a sample without its metrics"; else bad "merge mangled (rc $rc)" "$out"; fi
  # damaged files: refused whole, OUT as it was
  cp "$tmp/full.db" "$tmp/out.db"
  sum=$(md5sum <"$tmp/out.db")
  cp "$tmp/full.db" "$tmp/pages.db"
  $py -c "
import sys
f = open(sys.argv[1], 'r+b'); f.seek(4096 * 6); f.write(bytes(range(256)) * 32); f.close()" "$tmp/pages.db"
  head -c 30000 "$tmp/full.db" >"$tmp/cut.db"
  for f in pages cut; do
    out=$("$kv" merge "$tmp/out.db" "$tmp/$f.db" 2>&1)
    rc=$?
    if [ $rc = 1 ] && echo "$out" | grep -qE "$f.db: .*damaged" && echo "$out" | grep -q "nothing was merged" &&
       [ "$(md5sum <"$tmp/out.db")" = "$sum" ]; then ok "merge refuses a damaged input ($f), OUT untouched"; else bad "merge damaged $f (rc $rc)" "$out"; fi
  done
  # a failed conflict check says which row and why
  damage_db "$tmp/full.db" "$tmp/metric-conflict.db" "d.execute(\"update metrics set value = value + 0.5 where rowid = (select min(rowid) from metrics where name = 'rouge1_f')\")"
  want_run=$(q "$tmp/metric-conflict.db" "select run || ' sample ' || sample from metrics where rowid = (select min(rowid) from metrics where name = 'rouge1_f')")
  out=$("$kv" merge "$tmp/out.db" "$tmp/metric-conflict.db" 2>&1)
  rc=$?
  if [ $rc = 1 ] && echo "$out" | grep -q "1 metric values conflict with ones already merged; the first: run $want_run metric rouge1_f merged" &&
     [ "$(md5sum <"$tmp/out.db")" = "$sum" ]; then ok "merge names a conflicting metric"; else bad "merge metric conflict (rc $rc)" "$out"; fi
  damage_db "$tmp/full.db" "$tmp/spec-conflict.db" "d.execute(\"update runs set spec = spec || ' x', id = id where rowid = 1\")"
  out=$("$kv" merge "$tmp/out.db" "$tmp/spec-conflict.db" 2>&1)
  if [ $? = 0 ] && echo "$out" | grep -q "spec-conflict.db: left out .* 1 runs" && cmp -s "$tmp/full.txt" <(dump "$tmp/out.db"); then
    ok "merge: a run whose spec no longer hashes to its id is left out"; else bad "merge spec" "$out"; fi
fi

if want kills; then
  # kill -9 at 20 seeded points of one sweep: each kill when the database
  # holds a seeded number of samples, plus a seeded delay into the next one
  export KVBENCH_TEST_DB=$tmp/kills.db
  RANDOM=16
  points=$(for _ in $(seq 1 20); do echo $((RANDOM % 74)); done | sort -n | tr '\n' ' ')
  prev=0
  lost=0
  sick=0
  for p in $points; do
    "$kv" run "$ini" --threads 1 -q 2>/dev/null &
    pid=$!
    wait_for "$tmp/kills.db" "$p" $pid
    sleep "0.0$((RANDOM % 10))"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    n=$(count "$tmp/kills.db")
    [ "$n" -lt "$prev" ] 2>/dev/null && lost=1
    healthy "$tmp/kills.db" || sick=1
    # whole samples only: each with the metrics every run writes, no metric without its sample
    [ "$(q "$tmp/kills.db" "select (select count(*) from samples s where not exists (select 1 from metrics m where m.run = s.run
      and m.sample = s.sample and m.name = 'budget_exceeded')) + (select count(*) from metrics m where not exists (select 1
      from samples s where s.run = m.run and s.sample = m.sample))")" = 0 ] || sick=1
    [ "$n" != x ] && prev=$n
  done
  "$kv" run "$ini" --threads 1 -q
  if [ $lost = 0 ] && [ $sick = 0 ] && cmp -s "$tmp/full.txt" <(dump "$tmp/kills.db"); then
    ok "kill -9 at 20 points ($points): nothing stored lost, resumed equals the uninterrupted run"; else
    bad "kill -9 at 20 points (lost $lost, damaged $sick)" "$(diff "$tmp/full.txt" <(dump "$tmp/kills.db") | head)"; fi
fi

echo "$pass passed, $fail failed ($(($(date +%s) - t0)) s)"
[ $fail = 0 ]
