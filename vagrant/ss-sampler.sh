#!/usr/bin/env bash
# ss-sampler.sh start LOG | stop LOG: a second reader of the kernel's socket table, on a lab VM.
#
# `make vm-check` starts one on each VM before the labs and stops it after. Independently of
# handshake-lab (its own `ss`, its own process), it appends the TCP table every SS_INTERVAL
# seconds [0.05] to LOG, whenever the table changed: a line `@ <epoch seconds>`, then
# `ss -Htan` lines. ssh (22) and the agent's control port (HSLAB_AGENT_PORT [7878]) are left out.
# vagrant/vmcheck.py then looks up, for every held step, whether this reader saw the held state
# on the same 4-tuple. The pid goes to LOG.pid; `stop` ends exactly that process.
set -euo pipefail
LOG=${2:-/tmp/hslab-ss.log}
INTERVAL=${SS_INTERVAL:-0.05}
PORT=${HSLAB_AGENT_PORT:-7878}

sample() {
  local cur prev=
  local filter="not ( sport = :22 or dport = :22 or sport = :$PORT or dport = :$PORT )"
  while :; do
    cur=$(ss -Htan "$filter" 2>&1 || true)
    if [[ $cur != "$prev" ]]; then
      printf '@ %s\n%s\n' "$(date +%s.%N)" "$cur" >>"$LOG"
      prev=$cur
    fi
    sleep "$INTERVAL"
  done
}

case ${1:-} in
  start)
    : >"$LOG"
    sample </dev/null >/dev/null 2>&1 &
    echo $! >"$LOG.pid"
    ;;
  stop)
    if [[ -s $LOG.pid ]]; then
      kill "$(cat "$LOG.pid")" 2>/dev/null || true
      rm -f "$LOG.pid"
    fi
    ;;
  *)
    echo "usage: ss-sampler.sh start|stop [LOG]" >&2
    exit 2
    ;;
esac
