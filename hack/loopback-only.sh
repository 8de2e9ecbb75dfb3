#!/usr/bin/env bash
# Runs a command (the test suite) in a network namespace of its own, where loopback is the
# only way out: every other destination is routed into a trap interface (a veth pair, so
# nothing can leave the namespace), whose transmit counter must still be 0 at the end. So a
# test that sends a single packet to a non-loopback address (an Endpoints placeholder, a
# Service's cluster IP, a DNS server) fails the run, even if the test itself passed.
#
# Needs unshare (util-linux) and ip (iproute2), and root or unprivileged user namespaces;
# where a namespace cannot be had, the command runs as it is, with a warning.
set -euo pipefail

if [ "${EVENTMESH_HEALTH_LOOPBACK_ONLY:-}" != inside ]; then
  export EVENTMESH_HEALTH_LOOPBACK_ONLY=inside
  if command -v ip >/dev/null && command -v unshare >/dev/null; then
    for flags in "--net" "--net --map-root-user"; do
      # shellcheck disable=SC2086
      if unshare $flags true 2>/dev/null; then exec unshare $flags "$0" "$@"; fi
    done
  fi
  echo "loopback-only: no network namespace here (unshare/ip missing or not permitted):" \
       "running without the check that no packet leaves loopback" >&2
  exec "$@"
fi

ip link set lo up
ip link add trap0 type veth peer name trap1
for dev in trap0 trap1; do
  sysctl -qw "net.ipv6.conf.$dev.disable_ipv6=1" 2>/dev/null || true  # no IPv6 chatter
  ip link set "$dev" up
done
ip addr add 192.0.2.1/24 dev trap0  # TEST-NET-1 (RFC 5737): nothing real
ip route add default dev trap0
sent() { awk '/trap0:/ {print $11}' /proc/net/dev; }

before=$(sent)
status=0
"$@" || status=$?
leaked=$(( $(sent) - before ))
if [ "$leaked" -ne 0 ]; then
  echo "loopback-only: $leaked packet(s) left for a non-loopback address during: $*" >&2
  [ "$status" -ne 0 ] || status=1
else
  echo "loopback-only: no packet left loopback" >&2
fi
exit "$status"
