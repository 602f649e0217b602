#!/usr/bin/env bash
# Makes sure a Docker engine runs on this machine: installs Debian's docker.io
# and busybox-static if missing (and containerd and runc, which the containerd
# runtime's tests run privately) and starts dockerd without bridge networking
# (Coffer's tests and demo run containers with --network none).
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "docker-up: needs root" >&2; exit 1; fi
if ! command -v dockerd >/dev/null || [ ! -x /bin/busybox ] || [ ! -x /usr/bin/containerd ] || [ ! -x /usr/sbin/runc ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq docker.io busybox-static containerd runc >/dev/null
fi
if docker info >/dev/null 2>&1; then exit 0; fi
nohup dockerd --bridge=none --iptables=false --ip6tables=false >/var/log/coffer-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
	docker info >/dev/null 2>&1 && exit 0
	sleep 0.5
done
echo "docker-up: dockerd did not start; see /var/log/coffer-dockerd.log" >&2
tail -20 /var/log/coffer-dockerd.log >&2
exit 1
