#!/usr/bin/env bash
# README's sharding recipe on a real Slurm: a one-node cluster on this
# machine (munged, slurmctld and slurmd from a generated slurm.conf in a
# temporary directory, no systemd), `sbatch --array=0-3` running
# tests/experiments/tiny.ini in 4 shards, `kvbench merge` of the 4 shard
# databases, and the merged database compared with the unsharded run on
# every non-timing column (tests/testlib.sh's dump, as tests/test_harness.sh
# compares its shards). If Slurm itself cannot run here, the same 4 shards
# run under GNU parallel instead, and the script says why.
# Ends with "proved with: ..." and "slurm: N passed, M failed".
# Installs slurm-wlm and munge (and parallel, when needed) as root; without
# root and without them it fails, it never passes silently.
# usage: scripts/test_slurm.sh (from anywhere; builds build/ if needed)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
repo=$(pwd)
kv=$repo/build/kvbench
ini=$repo/tests/experiments/tiny.ini
# shellcheck source=SCRIPTDIR/../tests/testlib.sh
. "$repo/tests/testlib.sh"

shards=4
node_timeout=30  # seconds for slurmd to register and its node to be idle
smoke_timeout=60 # seconds for a one-command job to run to completion
array_timeout=180
daemon_pids=()
daemon_names=() # munged, slurmctld, slurmd: DIR/NAME.out (or .log) holds their words
jobs_started=()
tmp=""
sl_why="" # why Slurm could not run here
proved="" # what ran the shards: slurm, or GNU parallel and why

sl_finish() { # prints the closing lines and exits with their verdict
  echo "slurm: $pass passed, $fail failed"
  [ "$fail" -eq 0 ] && exit 0
  exit 1
}

# Removes what this script started, newest first: jobs before the slurmd that
# runs them (slurmd leaves a running job's slurmstepd behind), then daemons.
sl_cleanup() {
  local id pid i
  for id in "${jobs_started[@]}"; do scancel "$id" 2>/dev/null; done
  for ((i = ${#daemon_pids[@]} - 1; i >= 0; i--)); do
    pid=${daemon_pids[$i]}
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  [ -n "$tmp" ] && rm -rf "$tmp"
}
trap sl_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sl_installed() { # PACKAGE: it is installed
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# sl_install PACKAGE...: installs the missing ones; root only (CI is root).
sl_install() {
  local p missing=()
  for p in "$@"; do sl_installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} = 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "test_slurm: ${missing[*]} not installed, and installing needs root: apt-get install ${missing[*]}" >&2
    return 1
  fi
  echo "test_slurm: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null &&
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

sl_free_ports() { # prints two TCP ports free on this machine now
  /usr/bin/python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])'
}

# sl_wait SECONDS COMMAND...: retries COMMAND every half second until it
# succeeds (0), says it never will (2, returned), or SECONDS pass (1).
sl_wait() {
  local end=$((SECONDS + $1)) rc
  shift
  while true; do
    "$@"
    rc=$?
    [ $rc = 0 ] || [ $rc = 2 ] && return $rc
    [ "$SECONDS" -ge "$end" ] && return 1
    sleep 0.5
  done
}

# sl_daemon NAME COMMAND...: starts a daemon in the foreground of a background
# job, its output in $tmp/NAME.out, and records it for sl_cleanup.
sl_daemon() {
  local name=$1
  shift
  "$@" >>"$tmp/$name.out" 2>&1 &
  daemon_pids+=($!)
  daemon_names+=("$name")
}

# sl_daemons_alive: 0 while every daemon started runs; else 2 with sl_why
# naming the first that exited, its status and its last words.
sl_daemons_alive() {
  local i rc last
  for i in "${!daemon_pids[@]}"; do
    kill -0 "${daemon_pids[$i]}" 2>/dev/null && continue
    wait "${daemon_pids[$i]}"
    rc=$?
    last=$(tail -n 1 "$tmp/${daemon_names[$i]}.out" 2>/dev/null)
    [ -n "$last" ] || last=$(tail -n 1 "$tmp/${daemon_names[$i]}.log" 2>/dev/null)
    sl_why="${daemon_names[$i]} exited with status $rc: '$last'"
    return 2
  done
}

sl_write_conf() { # DIR CTLD_PORT SLURMD_PORT
  local dir=$1 node user
  # The node's real CPUs and memory, as slurmd itself detects them.
  node=$(slurmd -C 2>/dev/null | head -n 1)
  case $node in NodeName=*) ;; *) echo "slurmd -C printed no NodeName line: '$node'"; return 1 ;; esac
  user=$(id -un)
  cat >"$dir/slurm.conf" <<EOF
ClusterName=kvbench
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$2
SlurmdPort=$3
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$dir/munge.sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=kvbench Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

sl_node_idle() {
  sl_daemons_alive || return 2
  [ "$(sinfo -h -o %t 2>/dev/null)" = idle ]
}
sl_munge_answers() {
  sl_daemons_alive || return 2
  munge -S "$tmp/munge.sock" -n -o /dev/null 2>/dev/null
}
sl_job_gone() { [ -z "$(squeue -h -j "$1" -o %i 2>/dev/null)" ]; }

# sl_job_states JOBID: one "TASK STATE EXIT" line per job (TASK is the array
# task, or "-" for a plain job), from the controller's memory of finished
# jobs (MinJobAge, 300 s by default; no accounting database needed).
sl_job_states() {
  local line task state code
  scontrol -o show job "$1" 2>/dev/null | while read -r line; do
    task=- state='?' code='?'
    [[ $line =~ ArrayTaskId=([0-9]+) ]] && task=${BASH_REMATCH[1]}
    [[ $line =~ JobState=([A-Z_]+) ]] && state=${BASH_REMATCH[1]}
    [[ $line =~ ExitCode=([0-9:]+) ]] && code=${BASH_REMATCH[1]}
    echo "$task $state $code"
  done | sort
}

# sl_cluster_start DIR: munged, slurmctld and slurmd on this machine, up to
# an idle node and one finished test job. On failure sets sl_why (one line)
# and returns 1. Not to be run in a subshell: it records the daemons' pids.
sl_cluster_start() {
  local dir=$1 ports cport dport jid states
  # munged refuses a socket directory that others cannot enter.
  if ! chmod 755 "$dir" || ! mkdir -p "$dir/state" "$dir/spool"; then sl_why="cannot prepare $dir"; return 1; fi
  if ! head -c 1024 /dev/urandom >"$dir/munge.key" || ! chmod 400 "$dir/munge.key"; then
    sl_why="cannot write $dir/munge.key"; return 1
  fi
  ports=$(sl_free_ports) || { sl_why="no free TCP ports"; return 1; }
  read -r cport dport <<<"$ports"
  sl_why=$(sl_write_conf "$dir" "$cport" "$dport") || return 1
  export SLURM_CONF=$dir/slurm.conf

  sl_daemon munged munged -F --key-file="$dir/munge.key" --socket="$dir/munge.sock" \
    --pid-file="$dir/munged.pid" --seed-file="$dir/munge.seed" --log-file="$dir/munged.log"
  sl_wait 10 sl_munge_answers
  case $? in
    1) sl_why="munged did not answer within 10 s: '$(tail -n 1 "$dir/munged.log")'"; return 1 ;;
    2) return 1 ;;
  esac
  sl_daemon slurmctld slurmctld -D -f "$dir/slurm.conf"
  sl_daemon slurmd slurmd -D -f "$dir/slurm.conf"
  sl_wait "$node_timeout" sl_node_idle
  case $? in
    1)
      sl_why="node not idle within $node_timeout s (sinfo: '$(sinfo -h -o '%t %E' 2>&1 | head -n 1)'"
      sl_why+="; slurmctld.log: '$(tail -n 1 "$dir/slurmctld.log" 2>/dev/null)'"
      sl_why+="; slurmd.log: '$(tail -n 1 "$dir/slurmd.log" 2>/dev/null)')"
      return 1 ;;
    2) return 1 ;;
  esac
  # Slurm itself must run a job here before kvbench's shards are blamed for
  # anything: a job that fails after this is kvbench's.
  jid=$(sbatch --parsable --output=/dev/null --wrap true 2>&1) || { sl_why="sbatch refused a test job: $jid"; return 1; }
  jobs_started+=("$jid")
  if ! sl_wait "$smoke_timeout" sl_job_gone "$jid"; then
    sl_why="a test job (sbatch --wrap true) did not finish within $smoke_timeout s: $(squeue -h -j "$jid" -o '%T %r' 2>&1)"; return 1
  fi
  states=$(sl_job_states "$jid")
  [ "$states" = "- COMPLETED 0:0" ] || { sl_why="a test job (sbatch --wrap true) ended as '$states'"; return 1; }
}

# sl_slurm_shards DIR: README's sbatch line, 4 shards of tiny.ini, waited for.
sl_slurm_shards() {
  local dir=$1 jid states want i
  if ! jid=$(sbatch --parsable --array=0-$((shards - 1)) --cpus-per-task=1 --chdir="$repo" \
    --output="$dir/shard-%a.out" \
    --wrap "build/kvbench run $ini --shard \$SLURM_ARRAY_TASK_ID/$shards --db $dir/shard-\$SLURM_ARRAY_TASK_ID.db -q --threads 1" 2>&1); then
    bad "sbatch --array accepted the shards" "$jid"
    return 1
  fi
  jobs_started+=("$jid")
  if ! sl_wait "$array_timeout" sl_job_gone "$jid"; then
    bad "array job $jid finished within $array_timeout s" "$(squeue -h -j "$jid" -o '%i %T %r' 2>&1)"
    return 1
  fi
  states=$(sl_job_states "$jid")
  want=$(for ((i = 0; i < shards; i++)); do echo "$i COMPLETED 0:0"; done)
  if [ "$states" = "$want" ]; then ok "sbatch --array=0-$((shards - 1)): every task COMPLETED, exit 0"
  else bad "array tasks all COMPLETED with exit 0" "$states"$'\n'"$(cat "$dir"/shard-*.out 2>/dev/null)"; return 1; fi
}

# sl_parallel_shards DIR: the same 4 shards under GNU parallel (README's other line).
sl_parallel_shards() {
  local dir=$1 out
  if out=$(seq 0 $((shards - 1)) | parallel --halt never "$kv" run "$ini" --threads 1 -q \
    --shard {}/$shards --db "$dir/shard-{}.db" 2>&1); then ok "parallel: $shards shards, every one exit 0"
  else bad "parallel: $shards shards, every one exit 0" "$out"; return 1; fi
}

sl_count() { # DB: its samples
  /usr/bin/python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from samples').fetchone()[0])" "$1" 2>/dev/null || echo 0
}

# sl_compare DIR: each shard did a share, merge takes them all, and the merged
# database equals the unsharded run in every column but timings.
sl_compare() {
  local dir=$1 i n total=0 counts="" empty=0 out full
  "$kv" run "$ini" --threads 1 -q --db "$dir/full.db" || { bad "the unsharded run"; return 1; }
  full=$(sl_count "$dir/full.db")
  for ((i = 0; i < shards; i++)); do
    n=$(sl_count "$dir/shard-$i.db")
    counts+="${counts:+ + }$n"
    total=$((total + n))
    [ "$n" -gt 0 ] || empty=1
  done
  if [ "$empty" = 0 ] && [ "$total" = "$full" ] && [ "$full" -gt 0 ]; then ok "shards hold $counts = $full samples, none empty"
  else bad "shards hold $counts, the unsharded run $full"; fi
  if ! out=$("$kv" merge "$dir/merged.db" "$dir"/shard-*.db 2>&1); then bad "kvbench merge of $shards shards" "$out"; return 1; fi
  ok "kvbench merge of $shards shards"
  dump "$dir/full.db" >"$dir/full.txt"
  dump "$dir/merged.db" >"$dir/merged.txt"
  if [ -s "$dir/full.txt" ] && cmp -s "$dir/full.txt" "$dir/merged.txt"; then ok "merged shards equal the unsharded run"
  else bad "merged shards equal the unsharded run" "$(diff "$dir/full.txt" "$dir/merged.txt" | head)"; fi
}

main() {
  if ! bash scripts/build.sh build; then bad "build"; sl_finish; fi
  # tiny.ini names its database by this variable; every run here gives --db.
  export KVBENCH_TEST_DB=/nonexistent/tiny.db
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvslurm.XXXXXX") || { bad "mktemp"; sl_finish; }
  if ! sl_install slurm-wlm munge; then bad "slurm-wlm and munge installed"; sl_finish; fi

  if sl_cluster_start "$tmp"; then
    ok "one-node Slurm cluster up: node idle, a test job completed"
    proved="slurm"
    sl_slurm_shards "$tmp" || sl_finish
  else
    echo "test_slurm: Slurm cannot run here: $sl_why" >&2
    if ! sl_install parallel; then bad "parallel installed"; sl_finish; fi
    proved="GNU parallel, because $sl_why"
    sl_parallel_shards "$tmp" || sl_finish
  fi
  sl_compare "$tmp"
  if [ "$fail" = 0 ]; then echo "proved with: $proved"; else echo "proved nothing (shards ran with: $proved)"; fi
  sl_finish
}

main
