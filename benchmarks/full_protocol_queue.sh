#!/usr/bin/env bash
# Run the full-protocol benchmarks (docs/full_protocols.md) one after another, in the
# background, at the lowest priority, so that they only take a shared machine's idle cycles.
#
#   setsid nohup benchmarks/full_protocol_queue.sh /work/bench25 > /work/bench25/queue.log 2>&1 &
#
# ROOT/queue.txt holds one job per line, "NAME COMMAND..." ('#' starts a comment). The file is
# read again before each job, so jobs may be appended while the queue runs. A job that ended
# with status 0 gets ROOT/done/NAME and is skipped from then on; a failed one gets
# ROOT/failed/NAME (its status) and the queue goes on: delete that file to run it again.
# Every benchmark resumes (one JSON per finished unit, run folders with --resume), so a job
# killed half-way continues where it stopped when the queue is started again. The output of
# each job goes to ROOT/logs/NAME.log. One runner at a time (ROOT/.queue.lock).
set -u
ROOT=${1:-/work/bench25}
QUEUE=$ROOT/queue.txt
mkdir -p "$ROOT/logs" "$ROOT/done" "$ROOT/failed"
exec 9>"$ROOT/.queue.lock"
flock -n 9 || { echo "another runner holds $ROOT/.queue.lock"; exit 1; }
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TORCHINDUCTOR_COMPILE_THREADS=1
# `setsid` puts the queue in its own autogroup, and Linux shares the CPU fairly between
# autogroups whatever the nice value of their processes: lower the group's priority too, or
# a "nice 19" benchmark takes a whole core from an interactive session (measured: 47 %).
echo 19 > /proc/self/autogroup 2>/dev/null || true
echo "$(date -Is) runner $$ started on $QUEUE"
while true; do
  name="" cmd=""
  while read -r n c; do
    [[ -z "$n" || "$n" == \#* ]] && continue
    [[ -e "$ROOT/done/$n" || -e "$ROOT/failed/$n" ]] && continue
    name=$n cmd=$c
    break
  done < "$QUEUE"
  if [[ -z "$name" ]]; then
    echo "$(date -Is) queue empty: runner $$ ends"
    exit 0
  fi
  echo "$(date -Is) start $name: $cmd"
  start=$(date +%s)
  echo "=== $(date -Is) start: $cmd" >> "$ROOT/logs/$name.log"
  nice -n 19 bash -c "$cmd" >> "$ROOT/logs/$name.log" 2>&1
  rc=$?
  if [[ $rc == 0 ]]; then
    date -Is > "$ROOT/done/$name"
  else
    echo "status $rc at $(date -Is)" > "$ROOT/failed/$name"
  fi
  echo "$(date -Is) end $name: status $rc after $(( $(date +%s) - start )) s"
done
