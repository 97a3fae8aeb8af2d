#!/usr/bin/env bash
# libvirt-netns.sh up|down|status: a private libvirt for Vagrant, inside its own network
# namespace, so that libvirt's bridges, NAT rules, ip_forward and dnsmasq never touch the host's
# network. Run vagrant inside the same namespace:  ip netns exec vmr vagrant up
#
#   VMR_DIR   work dir [~/.cache/hslab-vm]: pid files in $VMR_DIR/run, logs in $VMR_DIR/logs,
#             the (transient) storage pool "default" in $VMR_DIR/pool
#   VMR_NS    namespace name [vmr]
#   VMR_NICE  niceness of the daemons and so of the qemu processes they start [19]: on a shared
#             machine the VMs yield to everyone else's work
#
# up     : ip netns add; lo up; virtlogd + libvirtd started in the namespace (pid files recorded);
#          transient pool "default" at $VMR_DIR/pool; notes the domains/networks that already exist
# down   : removes the domains, networks and volumes made since `up` (never the older ones) and
#          the qemu logs / dnsmasq files libvirt keeps for exactly those,
#          stops libvirtd and virtlogd by their recorded PIDs, kills what is left in the namespace
#          by PID (qemu, dnsmasq), deletes the namespace and $VMR_DIR/pool
# status : namespace, daemons, domains, networks, pools
# Never stops anything by name; never touches a libvirtd that it did not start.
set -euo pipefail
W=${VMR_DIR:-$HOME/.cache/hslab-vm}
NS=${VMR_NS:-vmr}
NICE=${VMR_NICE:-19}
RUN=$W/run
LOGS=$W/logs
POOL=$W/pool
URI=qemu:///system
say() { printf 'libvirt-netns: %s\n' "$*"; }
nsx() { ip netns exec "$NS" "$@"; }
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
vsh() { virsh -q -c "$URI" "$@"; }

# Files libvirt writes on the host's filesystem for domains and networks (logs, dnsmasq
# configs, pid files, XML): listed at `up`, so that `down` removes exactly the new ones.
STATE_DIRS=(/var/log/libvirt/qemu /var/lib/libvirt/dnsmasq /run/libvirt/network /etc/libvirt/qemu
            /etc/libvirt/qemu/networks /etc/libvirt/storage)
# (Some of them do not exist until libvirt first writes there: find's complaint is not an error.)
state_files() { { find "${STATE_DIRS[@]}" -maxdepth 1 -type f -printf '%p %T@\n' 2>/dev/null || true; } | sort; }

clean_state_files() {
  local f t old
  [[ -s $RUN/before-files.txt ]] || return 0
  while read -r f t; do
    old=$(awk -v f="$f" '$1 == f {print $2}' "$RUN/before-files.txt")
    if [[ -z $old ]]; then
      say "removing $f (made since up)"; rm -f -- "$f"
    elif [[ $old != "$t" ]]; then
      if [[ $f == /run/libvirt/network/*.pid ]] && ! kill -0 "$(cat "$f")" 2>/dev/null; then
        say "removing $f (stale pid file, rewritten since up)"; rm -f -- "$f"
      else
        say "note: $f existed before and was changed since up; kept"
      fi
    fi
  done < <(state_files)
  rm -f "$RUN/before-files.txt"
}

stop_pid() { # stop_pid PIDFILE NAME
  local f=$1 pid i
  [[ -s $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping $2 (pid $pid)"
    kill -TERM "$pid" || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { say "$2 still alive: SIGKILL $pid"; kill -KILL "$pid" || true; }
  fi
  rm -f "$f"
}

up() {
  [[ $(id -u) -eq 0 ]] || { echo "libvirt-netns: must run as root" >&2; exit 1; }
  mkdir -p "$RUN" "$LOGS" "$POOL"; chmod 755 "$W" "$POOL"
  if [[ -S /run/libvirt/libvirt-sock ]] && ! alive "$RUN/libvirtd.pid"; then
    if virsh -c "$URI" version >/dev/null 2>&1; then
      echo "libvirt-netns: another libvirtd already serves $URI on this host; stop it first" >&2
      exit 1
    fi
  fi
  ip netns list | grep -qw "^$NS" || { ip netns add "$NS"; say "namespace $NS created"; }
  ip -n "$NS" link set lo up
  if ! alive "$RUN/virtlogd.pid"; then
    nsx nice -n "$NICE" env LIBVIRT_LOG_OUTPUTS="3:file:$LOGS/virtlogd.log" \
      virtlogd --daemon --pid-file "$RUN/virtlogd.pid"
    for _ in $(seq 50); do alive "$RUN/virtlogd.pid" && break; sleep 0.1; done
    say "virtlogd pid $(cat "$RUN/virtlogd.pid")"
  fi
  if ! alive "$RUN/libvirtd.pid"; then
    nsx nice -n "$NICE" env LIBVIRT_LOG_OUTPUTS="3:file:$LOGS/libvirtd.log" \
      libvirtd --daemon --pid-file "$RUN/libvirtd.pid"
    for _ in $(seq 100); do vsh version >/dev/null 2>&1 && break; sleep 0.2; done
    vsh version >/dev/null || { echo "libvirt-netns: libvirtd did not come up" >&2; exit 1; }
    say "libvirtd pid $(cat "$RUN/libvirtd.pid")"
  fi
  if [[ ! -e $RUN/before.txt ]]; then
    { vsh list --all --name | sed 's/^/domain /'; vsh net-list --all --name | sed 's/^/net /'
      vsh pool-list --all --name | sed 's/^/pool /'; } | grep -v '^[a-z]* *$' >"$RUN/before.txt" || true
  fi
  [[ -e $RUN/before-files.txt ]] || state_files >"$RUN/before-files.txt"
  if ! vsh pool-info default >/dev/null 2>&1; then
    vsh pool-create-as default dir --target "$POOL" >/dev/null   # transient: nothing in /etc
    say "transient pool default -> $POOL"
  fi
  status
}

down() {
  local d n v br
  if alive "$RUN/libvirtd.pid"; then
    touch "$RUN/before.txt"
    for d in $(vsh list --all --name); do
      grep -qx "domain $d" "$RUN/before.txt" && continue
      say "removing domain $d"
      vsh destroy "$d" >/dev/null 2>&1 || true
      vsh undefine "$d" --remove-all-storage >/dev/null 2>&1 || vsh undefine "$d" >/dev/null 2>&1 || true
      rm -f "/var/log/libvirt/qemu/$d.log" "/var/log/libvirt/qemu/$d.log".[0-9]*   # its qemu log
    done
    for n in $(vsh net-list --all --name); do
      grep -qx "net $n" "$RUN/before.txt" && continue
      say "removing network $n"
      br=$(vsh net-info "$n" | awk '$1 == "Bridge:" {print $2}')
      vsh net-destroy "$n" >/dev/null 2>&1 || true
      vsh net-undefine "$n" >/dev/null 2>&1 || true
      # dnsmasq files libvirt leaves behind for this network and its bridge
      rm -f /var/lib/libvirt/dnsmasq/"$n".* /run/libvirt/network/"$n".*
      [[ -n $br ]] && rm -f /var/lib/libvirt/dnsmasq/"$br".* /run/libvirt/network/"$br".*
    done
    if vsh pool-info default >/dev/null 2>&1 && ! grep -qx "pool default" "$RUN/before.txt"; then
      for v in $(vsh vol-list default | awk '{print $1}'); do
        say "removing volume $v"; vsh vol-delete "$v" --pool default >/dev/null || true
      done
      vsh pool-destroy default >/dev/null 2>&1 || true
    fi
  fi
  stop_pid "$RUN/libvirtd.pid" libvirtd
  stop_pid "$RUN/virtlogd.pid" virtlogd
  if ip netns list | grep -qw "^$NS"; then
    for v in $(ip netns pids "$NS"); do
      say "killing leftover pid $v in $NS: $(ps -o comm= -p "$v" || true)"; kill -TERM "$v" || true
    done
    sleep 1
    for v in $(ip netns pids "$NS"); do kill -KILL "$v" || true; done
    ip netns del "$NS"; say "namespace $NS deleted"
  fi
  clean_state_files
  rm -rf "$POOL" "$RUN/before.txt"
  say "down"
}

status() {
  echo "namespace: $(ip netns list | grep -w "^$NS" || echo none)"
  for f in virtlogd libvirtd; do
    if alive "$RUN/$f.pid"; then echo "$f: pid $(cat "$RUN/$f.pid")"; else echo "$f: not running"; fi
  done
  if alive "$RUN/libvirtd.pid"; then
    echo "domains:"; vsh list --all | sed 's/^/  /'
    echo "networks:"; vsh net-list --all | sed 's/^/  /'
    echo "pools:"; vsh pool-list --all | sed 's/^/  /'
  fi
  if ip netns list | grep -qw "^$NS"; then
    echo "links in $NS:"; ip -n "$NS" -br link | sed 's/^/  /'
  fi
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: libvirt-netns.sh up|down|status" >&2; exit 2 ;;
esac
