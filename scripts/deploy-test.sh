#!/usr/bin/env bash
# The deployment test (issue 15): builds the Dockerfile's image with podman,
# then renders real jobs on it, each checked frame by frame (framemd5 of
# FFV1) against one plain ffmpeg run:
#   1. `podman kube play deploy/podman/farm.yaml`: the coordinator pod and two
#      node pods, each running the node and its ambassador side by side;
#   2. `podman-compose -f deploy/compose.yaml up`: the one-machine topology,
#      with its S3 server (versitygw, deploy/versitygw/Dockerfile), whose
#      bucket parts (made by the s3-init service) is the coordinator's
#      --storage. The first job's frames are uploaded, which keeps them in
#      that bucket, where the nodes read them; its final goes to --out
#      s3://finals/... and into the bucket's finals/, and both objects,
#      read back with curl --aws-sigv4, must be the very bytes fetch gives.
#      The second job's frames are put in the bucket frames by the test.
#      For both, the coordinator streams none of their frame bytes (its
#      metrics), the nodes read every set from a bucket, and every part
#      goes through the parts bucket (no part bytes uploaded to the
#      coordinator), whose parts/ folder is empty after the join.
# It also runs `systemd-analyze verify` on the units in deploy/systemd.
# Run through `make test-deploy`.
#
# No container registry is needed (none is reachable on the test machines):
# the Dockerfile's base images are made here, debian:bookworm-slim by
# debootstrap from the machine's own Debian mirror and golang:1.26-bookworm
# from it plus this machine's Go toolchain, and cached (with podman's whole
# image store, so the layers of the apt and go steps too) under
# $FRAMEFARM_DEPLOY_CACHE (default ~/.cache/framefarm-deploy).
#
# Everything podman touches is under that cache and build/deploy: its own
# storage.conf and containers.conf (runc, cgroupfs, file events, ulimits
# within the machine's hard limits), its own network configuration. What
# netavark changes on the host (IP forwarding, its firewall chains) is put
# back when the test ends, and so are the pods, volumes, secrets and network.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
GO=${GO:-go}
BUILD=$REPO/build/deploy
CACHE=${FRAMEFARM_DEPLOY_CACHE:-$HOME/.cache/framefarm-deploy}
IMAGE=localhost/framefarm:test
S3_IMAGE=localhost/framefarm-s3:test
S3_ACCESS=deploy-test
S3_SECRET=s3-deploy-test-$RANDOM$RANDOM$RANDOM
GO_IMAGE=docker.io/library/golang:1.26-bookworm
BASE_IMAGE=docker.io/library/debian:bookworm-slim
NET=framefarm-test
TOKEN=deploy-test-$RANDOM$RANDOM
start=$(date +%s)

say() { printf '== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# --- what the test needs on a fresh Debian ------------------------------------
need=()
for cmd in podman:podman runc:runc debootstrap:debootstrap podman-compose:podman-compose \
  ffmpeg:ffmpeg iptables:iptables systemd-analyze:systemd; do
  command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("${cmd#*:}")
done
command -v python3 >/dev/null 2>&1 || need+=(python3)
# netavark networks, and aardvark-dns by which the pods find each other.
for helper in netavark aardvark-dns; do
  [ -x /usr/lib/podman/$helper ] || need+=("$helper")
done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || fail "install ${need[*]} (the test runs podman as root)"
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ "$(id -u)" = 0 ] || fail "run as root: the pods use podman's rootful networking"

# --- podman confined to the build folder and the cache ------------------------
rm -rf "$BUILD"
mkdir -p "$BUILD/networks" "$BUILD/runroot" "$CACHE/tmp" "$CACHE/storage"
cat >"$BUILD/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$CACHE/storage"
runroot = "$BUILD/runroot"
EOF
# crun refuses the hybrid cgroups of these machines; runc runs. The default
# ulimits must stay within the machine's hard limits or no container starts.
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] && nofile=1048576
# runc could not set a hard nproc of 96367 (this machine's) but sets 32768.
if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
cat >"$BUILD/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$BUILD/events.log"
[network]
network_config_dir = "$BUILD/networks"
EOF
export CONTAINERS_STORAGE_CONF=$BUILD/storage.conf CONTAINERS_CONF=$BUILD/containers.conf
# buildah keeps the RUN --mount=type=cache folders (Go's module and build
# caches) under TMPDIR: in the cache, they make a warm build quick.
build() { TMPDIR=$CACHE/tmp podman build --pull=never "$@"; }

# What netavark changes on the host, to put back at the end.
forward_before=$(sysctl -n net.ipv4.ip_forward)
chains_before=$( (iptables-save; ip6tables-save) 2>/dev/null | grep -c '^:NETAVARK' || true)

cleanup() {
  local rc=$?
  set +e
  if [ -n "${PLAYED:-}" ]; then
    podman kube down "$PLAYED" >/dev/null 2>&1
    podman volume rm -f framefarm-data >/dev/null 2>&1
    podman secret rm framefarm-token >/dev/null 2>&1
  fi
  if [ -n "${COMPOSED:-}" ]; then
    (cd deploy && FRAMEFARM_TOKEN=x podman-compose -p framefarm-test -f compose.yaml down -v) >/dev/null 2>&1
  fi
  podman pod rm -f -a >/dev/null 2>&1
  podman rm -f -a >/dev/null 2>&1
  podman volume prune -f >/dev/null 2>&1
  podman network rm -f "$NET" >/dev/null 2>&1
  podman network prune -f >/dev/null 2>&1
  # netavark leaves its chains behind, and IP forwarding on.
  if [ "$chains_before" = 0 ]; then
    for save in iptables ip6tables; do
      command -v "$save" >/dev/null || continue
      for table in nat filter; do
        "$save" -t "$table" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j NETAVARK' | while read -r _ rule; do
          eval "$save -t $table -D $rule"
        done
        "$save" -t "$table" -S 2>/dev/null | awk '/^-N NETAVARK/ {print $2}' | while read -r chain; do
          "$save" -t "$table" -F "$chain"
        done
        "$save" -t "$table" -S 2>/dev/null | awk '/^-N NETAVARK/ {print $2}' | while read -r chain; do
          "$save" -t "$table" -X "$chain"
        done
      done
    done
  fi
  sysctl -qw net.ipv4.ip_forward="$forward_before"
  left=$( (iptables-save; ip6tables-save) 2>/dev/null | grep -c NETAVARK || true)
  [ "$chains_before" != 0 ] || [ "$left" = 0 ] || echo "WARNING: $left netavark firewall lines left" >&2
  exit "$rc"
}
trap cleanup EXIT

# --- base images, made without a registry -------------------------------------
mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  # The first source of bookworm's main suite, in either sources format.
  {
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '$1 == "deb" { for (i = 2; i < NF; i++) if ($i !~ /^\[/ && $(i+1) == "bookworm") { print $i; exit } }'
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
      awk 'BEGIN { RS = ""; FS = "\n" } /(^|\n)Suites:[^\n]*[ \t]bookworm([ \t]|\n|$)/ {
        for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) { split($i, u, /[ \t]+/); print u[2]; exit } }'
  } | head -1
}
if ! podman image exists "$BASE_IMAGE"; then
  tarball=$CACHE/bookworm-minbase.tar
  if [ ! -s "$tarball" ]; then
    m=$(mirror)
    [ -n "$m" ] || fail "no bookworm mirror in /etc/apt/sources*: set DEBIAN_MIRROR"
    say "debootstrap --variant=minbase bookworm from $m"
    rm -rf "$CACHE/rootfs"
    debootstrap --variant=minbase bookworm "$CACHE/rootfs" "$m" >"$BUILD/debootstrap.log" 2>&1 ||
      { tail -20 "$BUILD/debootstrap.log"; fail "debootstrap"; }
    # The image's apt must reach the same mirror inside the build.
    echo "deb $m bookworm main" >"$CACHE/rootfs/etc/apt/sources.list"
    tar -C "$CACHE/rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$CACHE/rootfs"
  fi
  say "importing $BASE_IMAGE"
  podman import --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tarball" "$BASE_IMAGE" >/dev/null
fi
if ! podman image exists "$GO_IMAGE"; then
  goroot=$($GO env GOROOT)
  want=$(awk '$1 == "go" { split($2, v, "."); print v[1] "." v[2]; exit }' go.mod)
  have=$($GO env GOVERSION)
  case "$have" in go"$want"*) ;; *) fail "$GO is $have, go.mod wants go$want for $GO_IMAGE";; esac
  say "making $GO_IMAGE from $BASE_IMAGE and $goroot ($have)"
  mkdir -p "$BUILD/goimage"
  cat >"$BUILD/goimage/Containerfile" <<EOF
FROM $BASE_IMAGE
COPY go /usr/local/go
# The real image has Debian's ca-certificates; this machine's bundle is what
# reaches the Go module proxy from here.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV GOPATH=/go PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /go
EOF
  cp /etc/ssl/certs/ca-certificates.crt "$BUILD/goimage/"
  cp -a "$goroot" "$BUILD/goimage/go"
  build -q -t "$GO_IMAGE" -f "$BUILD/goimage/Containerfile" "$BUILD/goimage" >/dev/null
  rm -rf "$BUILD/goimage"
fi

# --- the image ----------------------------------------------------------------
say "podman build the Dockerfile"
build -t "$IMAGE" . >"$BUILD/build.log" 2>&1 || { tail -30 "$BUILD/build.log"; fail "podman build"; }
podman run --rm "$IMAGE" version
[ "$(podman image inspect -f '{{.Config.User}}' "$IMAGE")" = 10001:10001 ] || fail "the image does not run as uid 10001"
say "podman build deploy/versitygw"
build -t "$S3_IMAGE" deploy/versitygw >"$BUILD/build-s3.log" 2>&1 || { tail -30 "$BUILD/build-s3.log"; fail "podman build deploy/versitygw"; }
podman run --rm "$S3_IMAGE" --version

# --- frames and the reference video -------------------------------------------
$GO build -o "$BUILD/framefarm" ./cmd/framefarm
frames=$BUILD/frames
mkdir -p "$frames"
ffmpeg -v error -f lavfi -i testsrc2=size=320x240:rate=24 -frames:v 96 -start_number 1 "$frames/f_%04d.png"
ffmpeg -v error -framerate 24 -start_number 1 -i "$frames/f_%04d.png" -c:v ffv1 -level 3 -pix_fmt yuv420p "$BUILD/ref.mkv"
ffmpeg -v error -i "$BUILD/ref.mkv" -f framemd5 - | grep -v '^#' | cut -d, -f6 >"$BUILD/ref.md5"
[ "$(wc -l <"$BUILD/ref.md5")" = 96 ] || fail "the reference has $(wc -l <"$BUILD/ref.md5") frames, want 96"

# nodes_joined CONTAINER: wait until the coordinator in CONTAINER has seen
# both nodes, so that the job is shared between them.
nodes_joined() {
  for _ in $(seq 120); do
    [ "$(podman logs "$1" 2>&1 | grep -c 'msg="node joined"')" -ge 2 ] && return 0
    sleep 1
  done
  podman logs "$1" 2>&1 | tail -20
  fail "the nodes did not join the coordinator in $1 within 2 minutes"
}

# render_job ADDR NAME SUBMIT ARGS...: submit a job of the reference's
# frames to the farm at ADDR (the arguments say where the frames are),
# fetch the video and hold it to the reference frame by frame.
render_job() {
  local addr=$1 name=$2 ff=("$BUILD/framefarm")
  shift 2
  export FRAMEFARM_TOKEN=$TOKEN
  for _ in $(seq 120); do
    "${ff[@]}" jobs --coordinator "$addr" >/dev/null 2>&1 && break
    sleep 1
  done
  "${ff[@]}" jobs --coordinator "$addr" >/dev/null || fail "$name: the coordinator at $addr does not answer"
  local job
  job=$("${ff[@]}" submit --coordinator "$addr" --codec ffv1 --sets 6 --name "$name" "$@" 2>/dev/null | tail -1)
  [ -n "$job" ] || fail "$name: submit gave no job id"
  timeout 300 "${ff[@]}" fetch --coordinator "$addr" --job "$job" --wait -o "$BUILD/$name.mkv" ||
    { "${ff[@]}" status --coordinator "$addr" --job "$job" || true; fail "$name: fetch"; }
  ffmpeg -v error -i "$BUILD/$name.mkv" -f framemd5 - | grep -v '^#' | cut -d, -f6 >"$BUILD/$name.md5"
  if ! cmp -s "$BUILD/ref.md5" "$BUILD/$name.md5"; then
    diff "$BUILD/ref.md5" "$BUILD/$name.md5" | head -5
    fail "$name: the video differs from one ffmpeg run (framemd5)"
  fi
  # Both node pods (or services) rendered: every set is done, by more than one node.
  local nodes
  nodes=$("${ff[@]}" status --coordinator "$addr" --job "$job" --json |
    grep -o '"node": *"[^"][^"]*"' | sort -u | wc -l)
  echo "$name: 96 frames equal to one ffmpeg run (framemd5), sets rendered by $nodes nodes"
  [ "$nodes" -ge 2 ] || fail "$name: only $nodes node rendered; want both"
  unset FRAMEFARM_TOKEN
  JOB=$job
}

# s3curl ARGS...: curl signed with the S3 server's root keys (SigV4; versitygw
# wants the payload's hash or UNSIGNED-PAYLOAD in x-amz-content-sha256).
s3curl() {
  curl -sS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_ACCESS:$S3_SECRET" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- Kubernetes pods, played by podman ----------------------------------------
podman network create "$NET" >/dev/null
port=$(free_port) httpport=$(free_port)
# podman publishes a containerPort without hostPort on the same host port:
# 8080 is often taken here (a coordinator's default --http), so both of the
# coordinator's ports go on free ones.
sed -E -e "s/hostPort: 5555/hostPort: $port/" -e "s/^( *)containerPort: 8080\$/&\n\1hostPort: $httpport/" \
  -e "s#image: ghcr.io/framefarm/framefarm:latest#image: $IMAGE#" \
  deploy/podman/farm.yaml >"$BUILD/farm.yaml"
grep -q "hostPort: $httpport" "$BUILD/farm.yaml" || fail "deploy/podman/farm.yaml: no containerPort 8080 to publish on a free port"
printf '{"token": "%s"}' "$(printf %s "$TOKEN" | base64 -w0)" | podman secret create framefarm-token - >/dev/null
say "podman kube play deploy/podman/farm.yaml (port $port)"
PLAYED=$BUILD/farm.yaml
podman kube play --network "$NET" "$PLAYED" >"$BUILD/play.log" 2>&1 || { cat "$BUILD/play.log"; fail "kube play"; }
pods=$(podman pod ps --format '{{.Name}}' | sort | tr '\n' ' ')
echo "pods: $pods"
nodes_joined framefarm-coordinator-pod-0-coordinator
# Uploaded from here: the coordinator's container does not see them.
render_job "127.0.0.1:$port" kube --frames "$frames" --upload || { podman pod logs --tail 20 -a 2>/dev/null; exit 1; }
# kube down leaves the volumes (the PVC's and the emptyDirs') and the secret.
podman kube down "$PLAYED" >>"$BUILD/play.log" 2>&1
podman volume prune -f >/dev/null
podman secret rm framefarm-token >/dev/null
PLAYED=
say "kube play: done"

# --- compose ------------------------------------------------------------------
say "podman-compose -f deploy/compose.yaml up"
port=$(free_port) s3port=$(free_port) httpport=$(free_port)
export FRAMEFARM_IMAGE=$IMAGE FRAMEFARM_S3_IMAGE=$S3_IMAGE FRAMEFARM_PORT=$port FRAMEFARM_S3_PORT=$s3port \
  FRAMEFARM_HTTP_PORT=$httpport FRAMEFARM_S3_ACCESS_KEY=$S3_ACCESS FRAMEFARM_S3_SECRET_KEY=$S3_SECRET
COMPOSED=1
(cd deploy && FRAMEFARM_TOKEN=$TOKEN podman-compose -p framefarm-test -f compose.yaml up -d) >"$BUILD/compose.log" 2>&1 ||
  { cat "$BUILD/compose.log"; fail "podman-compose up"; }
# The user's buckets, made through the S3 API as any client would.
for _ in $(seq 60); do
  s3curl -o /dev/null "http://127.0.0.1:$s3port/" 2>/dev/null && break
  sleep 1
done
for bucket in finals frames; do
  [ "$(s3curl -o "$BUILD/mb.xml" -w '%{http_code}' -X PUT "http://127.0.0.1:$s3port/$bucket")" = 200 ] ||
    { cat "$BUILD/mb.xml"; podman logs framefarm-test_s3_1 2>&1 | tail -20; fail "creating the bucket $bucket on the s3 service"; }
done
# The farm's own, the coordinator's --storage, made by the s3-init service.
code=
for _ in $(seq 60); do
  code=$(s3curl -o /dev/null -w '%{http_code}' -I "http://127.0.0.1:$s3port/parts" 2>/dev/null || true)
  [ "$code" = 200 ] && break
  sleep 1
done
if [ "$code" != 200 ]; then
  podman logs framefarm-test_s3-init_1 2>&1 | tail -20
  fail "compose: s3-init did not make the bucket parts within a minute (HTTP $code)"
fi
podman logs framefarm-test_s3-init_1 2>&1 | grep -q "made bucket parts" || fail "compose: s3-init does not say it made the bucket parts"

# metric NAME: the value of the coordinator's counter NAME, from /metrics
# on its HTTP port.
metric() {
  curl -sS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$httpport/metrics" |
    awk -v m="$1" '$1 == m { printf "%.0f\n", $2; found = 1 } END { exit !found }' ||
    fail "compose: no $1 in the coordinator's /metrics"
}

# listing PREFIX: the bucket parts' listing of the objects under PREFIX
# (its slashes percent-encoded: curl signs the query as given, and S3
# signs it encoded).
listing() {
  s3curl "http://127.0.0.1:$s3port/parts?list-type=2&prefix=${1//\//%2F}"
}

# keycount PREFIX: how many objects the bucket parts holds under PREFIX.
keycount() {
  listing "$1" | sed -n 's#.*<KeyCount>\([0-9]*\)</KeyCount>.*#\1#p'
}

# parts_empty NAME: the coordinator deletes a job's parts from the
# --storage bucket (farm/parts/) once the job is joined (the compose file
# has no --keep-parts): within moments of the join, nothing is left.
parts_empty() {
  local n=
  for _ in $(seq 20); do
    n=$(keycount farm/parts/)
    [ "$n" = 0 ] && break
    sleep 0.5
  done
  if [ "$n" != 0 ]; then
    listing farm/parts/ | head -c 2000
    fail "$1: ${n:-no listing}: parts are left in s3://parts/farm/parts/ after the join"
  fi
}

# get_object KEY FILE: waits up to a minute for the object parts/KEY (the
# copies of a final follow the join) and downloads it to FILE.
get_object() {
  local code=
  for _ in $(seq 60); do
    code=$(s3curl -o "$2" -w '%{http_code}' "http://127.0.0.1:$s3port/$1" 2>/dev/null || true)
    [ "$code" = 200 ] && return 0
    sleep 1
  done
  FRAMEFARM_TOKEN=$TOKEN "$BUILD/framefarm" status --coordinator "127.0.0.1:$port" --job "$JOB" || true
  podman logs framefarm-test_coordinator_1 2>&1 | tail -20
  fail "compose: s3://$1 is not there after a minute (HTTP $code)"
}

nodes_joined framefarm-test_coordinator_1
key=compose/final.mkv
render_job "127.0.0.1:$port" compose --frames "$frames" --upload \
  --out "s3://finals/$key?endpoint=http://s3:7070&region=us-east-1&use_path_style=true"
# The copies to --out and into --storage follow the join: each object
# appears once it is whole.
get_object "finals/$key" "$BUILD/compose-s3.mkv"
cmp "$BUILD/compose.mkv" "$BUILD/compose-s3.mkv" || fail "compose: the object in s3://finals/$key differs from the fetched final"
stored=farm/finals/$JOB/final.mkv
get_object "parts/$stored" "$BUILD/compose-stored.mkv"
cmp "$BUILD/compose.mkv" "$BUILD/compose-stored.mkv" || fail "compose: the object in s3://parts/$stored differs from the fetched final"
FRAMEFARM_TOKEN=$TOKEN "$BUILD/framefarm" status --coordinator "127.0.0.1:$port" --job "$JOB" >"$BUILD/compose-status.txt"
grep -q "copy to --out: copied to s3://finals/$key" "$BUILD/compose-status.txt" || fail "compose: status does not show the copy to --out"
grep -q "copy in --storage: stored at s3://parts/$stored" "$BUILD/compose-status.txt" || fail "compose: status does not show the final stored in --storage"
echo "compose: s3://finals/$key and s3://parts/$stored are byte for byte the fetched final ($(stat -c %s "$BUILD/compose-s3.mkv") bytes)"
# Its frames were uploaded into the coordinator's --storage bucket
# (farm/uploads/), where the nodes read them: the coordinator streams none.
streamed=$(metric framefarm_frame_stream_bytes_total)
[ "$streamed" = 0 ] || fail "compose: the uploaded frames are in s3://parts/farm/uploads/, yet the coordinator streamed $streamed frame bytes"
uploaded=$(keycount farm/uploads/)
[ "${uploaded:-0}" -ge 96 ] || fail "compose: ${uploaded:-no} objects in s3://parts/farm/uploads/; want the 96 frames uploaded"
[ "$(metric framefarm_part_upload_bytes_total)" = 0 ] ||
  fail "compose: $(metric framefarm_part_upload_bytes_total) part bytes uploaded to the coordinator; want every part put in the parts bucket"
parts_empty compose
echo "compose: the $uploaded uploaded frames kept in s3://parts/farm/uploads/ and read there; every part went through s3://parts/farm/parts/ and was deleted after the join; 0 frame bytes streamed"

# A job whose frames are in a bucket: put there with the S3 API, read by
# the nodes through the pre-signed URLs of their assignments.
say "compose: frames in s3://frames/sh020/"
for f in "$frames"/*.png; do
  s3curl -f -o /dev/null -T "$f" "http://127.0.0.1:$s3port/frames/sh020/${f##*/}" || fail "compose: putting $f in s3://frames/sh020/"
done
render_job "127.0.0.1:$port" compose-bucket --frames "s3://frames/sh020/?endpoint=http://s3:7070&region=us-east-1&use_path_style=true"
[ "$(metric framefarm_frame_stream_bytes_total)" = "$streamed" ] ||
  fail "compose-bucket: the coordinator streamed $(( $(metric framefarm_frame_stream_bytes_total) - streamed )) frame bytes; want 0, the nodes reading the bucket"
[ "$(metric framefarm_part_upload_bytes_total)" = 0 ] ||
  fail "compose-bucket: $(metric framefarm_part_upload_bytes_total) part bytes uploaded to the coordinator; want every part put in the parts bucket"
parts_empty compose-bucket
# Every set's frames came from the bucket, on both nodes, without a fallback.
for n in 1 2; do podman logs "framefarm-test_node-${n}_1" 2>&1; done | grep -F "job=$JOB " >"$BUILD/compose-bucket-nodes.log" || true
from_bucket=$(grep -c 'msg="part uploaded".*frames=bucket' "$BUILD/compose-bucket-nodes.log" || true)
others=$(grep 'msg="part uploaded"' "$BUILD/compose-bucket-nodes.log" | grep -vc 'frames=bucket' || true)
if [ "$from_bucket" -lt 6 ] || [ "$others" != 0 ] || grep -q 'bucket failed' "$BUILD/compose-bucket-nodes.log"; then
  grep -E 'part uploaded|bucket failed' "$BUILD/compose-bucket-nodes.log" | head -20
  fail "compose-bucket: $from_bucket sets read from the bucket and $others otherwise (or a warning above); want all 6 from the bucket"
fi
echo "compose-bucket: all $from_bucket sets read from s3://frames by the nodes, 0 frame bytes streamed by the coordinator"
for c in coordinator_1 node-1_1 node-2_1 s3-init_1; do
  if podman logs "framefarm-test_$c" 2>&1 | grep -qF "$S3_SECRET"; then
    fail "compose: the S3 secret key appears in the log of $c"
  fi
done
(cd deploy && FRAMEFARM_TOKEN=$TOKEN podman-compose -p framefarm-test -f compose.yaml down -v) >>"$BUILD/compose.log" 2>&1
COMPOSED=
say "compose: done"

# --- the kustomization renders (kubectl is not in Debian: only where present) --
if command -v kubectl >/dev/null 2>&1; then
  say "kubectl kustomize deploy/k8s"
  cp -r deploy/k8s "$BUILD/k8s" && printf %s "$TOKEN" >"$BUILD/k8s/token"
  kubectl kustomize "$BUILD/k8s" >"$BUILD/k8s-rendered.yaml" || fail "kubectl kustomize deploy/k8s"
  grep -q 'name: framefarm-token-' "$BUILD/k8s-rendered.yaml" || fail "the kustomization made no token secret"
else
  echo "kubectl is not installed: the kustomization is not rendered (its files are decoded by the Go test)"
fi

# --- systemd units ------------------------------------------------------------
say "systemd-analyze verify deploy/systemd"
FRAMEFARM_REQUIRE=1 $GO test -count=1 -run TestDeployFiles -v ./cmd/framefarm

say "deploy tests passed"
