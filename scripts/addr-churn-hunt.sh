#!/bin/bash
# addr-churn-hunt.sh: issue 17's 7-second SYN loss, reproduced on purpose.
#
# Runs vpnlib's TestSynLossHunt (a tunnel, two agents, a new TCP connection
# every second, slow ones printed with both ends' view of the path) inside a
# network namespace of its own, where a veth with a fresh address comes up
# for 10 s and is deleted, 10 s apart: what cmd/codervpn's laptop scenarios
# do in the namespace other tests share. Before the fix, a path through a
# deleted address lost every packet for magicsock's 6.5 s trust window.
#
#   go test -c -o /tmp/vpnlib.test ./vpnlib/
#   sudo scripts/addr-churn-hunt.sh /tmp/vpnlib.test 170s 8
#
# Needs root and ip(8). Everything it makes is inside the namespace, which
# it deletes on exit.
set -euo pipefail
bin=${1:?usage: $0 VPNLIB_TEST_BINARY [DURATION] [CYCLES]}
duration=${2:-170s}
cycles=${3:-8}
ns=cvsyl-$$
ip netns add "$ns"
trap 'kill "${hunt:-}" 2>/dev/null || true; ip netns delete "$ns"' EXIT
ip -n "$ns" link set lo up
# A stable address, so that a direct path survives the churn.
ip -n "$ns" link add sylsa type veth peer name sylsb
ip -n "$ns" addr add 10.215.1.1/24 dev sylsa
ip -n "$ns" link set sylsa up
ip -n "$ns" link set sylsb up

cd "$(dirname "$0")/../vpnlib"
CODERVPN_SYNLOSS_DURATION=$duration CODERVPN_SYNLOSS_EVERY=1s \
	ip netns exec "$ns" "$bin" -test.run '^TestSynLossHunt$' -test.v -test.count=1 &
hunt=$!
sleep 20 # the hunt's start: a tunnel and two agents
for i in $(seq 1 "$cycles"); do
	ip -n "$ns" link add sylca type veth peer name sylcb
	ip -n "$ns" addr add "10.215.$((i + 10)).1/24" dev sylca
	ip -n "$ns" link set sylca up
	ip -n "$ns" link set sylcb up
	echo "churn: $(date -u +%T.%3N) added 10.215.$((i + 10)).1"
	sleep 10
	ip -n "$ns" link delete sylca
	echo "churn: $(date -u +%T.%3N) deleted 10.215.$((i + 10)).1"
	sleep 10
done
wait "$hunt"
