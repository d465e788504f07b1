#!/usr/bin/env bash
# Three namespaces: sx (bridge + signaling at 10.77.0.1), sa (10.77.0.2), sb (10.77.0.3).
# No default route anywhere. Usage: netns.sh up LOSS_PERCENT | down
# LOSS applies to UDP on every hop through the bridge, and to and from sx itself.
set -euo pipefail
case "$1" in
down)
  for n in sx sa sb; do ip netns del $n 2>/dev/null || true; done ;;
up)
  loss=$2
  "$0" down
  for n in sx sa sb; do ip netns add $n; ip -n $n link set lo up; done
  ip -n sx link add br0 type bridge
  ip -n sx addr add 10.77.0.1/24 dev br0
  ip -n sx link set br0 up
  i=2
  for n in sa sb; do
    ip link add v$n type veth peer name e0 netns $n
    ip link set v$n netns sx
    ip -n sx link set v$n master br0 up
    ip -n $n addr add 10.77.0.$i/24 dev e0
    ip -n $n link set e0 up
    i=$((i+1))
  done
  ip netns exec sx nft -f - <<NFT
table bridge impair {
  chain impairment { type filter hook forward priority 0; policy accept; }
  chain to_sx { type filter hook input priority 0; policy accept; }
  chain from_sx { type filter hook output priority 0; policy accept; }
}
NFT
  # Between sa and sb (forward), and to and from what runs in sx itself (an SFU there):
  # every hop loses LOSS percent of UDP, each way, from the first datagram.
  if [ "$loss" != 0 ]; then
    for chain in impairment to_sx from_sx; do
      ip netns exec sx nft add rule bridge impair $chain meta l4proto udp numgen random mod 100 lt $loss drop
    done
  fi ;;
esac
