#!/usr/bin/env bash
# Coffer demo: server on the embedded store, an agent on the local Docker
# engine, and a demo container that prints its secret file every second.
# Watch the secret appear, rotate without a restart, and vanish on revoke.
# Everything started here is stopped and removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
ADDR=127.0.0.1:${COFFER_DEMO_PORT:-7443}
WORK=$(mktemp -d /tmp/coffer-demo.XXXXXX)
IMAGE=coffer-demo/busybox:1
CTR=coffer-demo-$$
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
pids=()
cleanup() {
	step "Cleaning up"
	docker rm -f "$CTR" >/dev/null 2>&1 || true
	[ -n "${built_image:-}" ] && docker rmi "$IMAGE" >/dev/null 2>&1 || true
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
	echo "done: container, agent, server and $WORK removed"
}
trap cleanup EXIT

[ -x "$BIN/coffer" ] || make build
step "Docker engine"
./scripts/docker-up.sh
docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})'

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
	step "Building a tiny local image from Debian's busybox-static (nothing is pulled)"
	root=$WORK/rootfs; mkdir -p "$root/bin"
	cp /bin/busybox "$root/bin/busybox"
	for c in sh cat sleep date ls echo; do ln -s busybox "$root/bin/$c"; done
	tar -C "$root" -c . | docker import - "$IMAGE" >/dev/null
	built_image=1
fi

step "Starting coffer-server (data dir $WORK/server, listening on $ADDR)"
"$BIN/coffer-server" --data-dir "$WORK/server" --listen "$ADDR" --log-level warn 2>"$WORK/server.log" &
pids+=($!)
for _ in $(seq 1 50); do [ -s "$WORK/server/admin.token" ] && break; sleep 0.1; done
export COFFER_ADDR=https://$ADDR COFFER_CACERT=$WORK/server/ca.pem
COFFER_TOKEN=$(cat "$WORK/server/admin.token"); export COFFER_TOKEN
until "$BIN/coffer" secret ls >/dev/null 2>&1; do sleep 0.1; done

step "Enrolling coffer-agent with a one-time join token"
JOIN=$("$BIN/coffer" token create --role agent --ttl 10m)
"$BIN/coffer-agent" --server "$ADDR" --ca-cert "$WORK/server/ca.pem" --join-token "$JOIN" \
	--state-dir "$WORK/agent" --name demo-host --log-level warn 2>"$WORK/agent.log" &
pids+=($!)
until "$BIN/coffer" agent ls 2>/dev/null | grep -q connected; do sleep 0.1; done
"$BIN/coffer" agent ls

step "Storing a secret and binding it to containers labelled app=demo"
printf 'first-password-v1' | "$BIN/coffer" secret put demo/db-password
"$BIN/coffer" bind create demo-db --secret demo/db-password --selector app=demo
"$BIN/coffer" bind test --labels app=demo,tier=web

step "Running a demo container (no network) that prints /run/secrets/db-password every second"
docker run -d --rm --name "$CTR" --network none --label app=demo "$IMAGE" \
	sh -c 'while true; do echo "$(date +%T) db-password: $(cat /run/secrets/db-password 2>/dev/null || echo "<no file>")"; sleep 1; done' >/dev/null
sleep 3; docker logs "$CTR" 2>&1 | tail -n 3

step "Rotating the secret: the file changes inside the running container, no restart"
printf 'rotated-password-v2' | "$BIN/coffer" secret put demo/db-password
sleep 2; docker logs "$CTR" 2>&1 | tail -n 2
"$BIN/coffer" secret show demo/db-password

step "The value is not in docker inspect, not in the container's environment"
if docker inspect "$CTR" | grep -q rotated-password; then echo "LEAK in docker inspect" >&2; exit 1; fi
echo "docker inspect: clean"
docker exec "$CTR" sh -c 'mount | grep /run/secrets'

step "Revoking: deleting the secret removes the file from the container"
"$BIN/coffer" secret rm demo/db-password
sleep 2; docker logs "$CTR" 2>&1 | tail -n 2

step "Audit trail (hash-chained) and its verification"
"$BIN/coffer" audit ls --limit 8
"$BIN/coffer" audit verify
