# syntax=docker/dockerfile:1
# One image for every role of the farm: the coordinator, the ambassador, the
# node and the client commands are all `framefarm <command>`.
#
#   docker build -t framefarm .
#   docker run --rm framefarm coordinator --help
#
# The build stage's Go matches go.mod's go line. framefarm needs no cgo (its
# SQLite is modernc.org/sqlite), so the binary is static and the run stage
# only adds ffmpeg, which the node and the coordinator run.
ARG GO_IMAGE=golang:1.26-bookworm
ARG RUN_IMAGE=debian:bookworm-slim

FROM ${GO_IMAGE} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
# Modules first, so that a change to the code does not download them again.
# The cache mounts are the golang image's module cache (GOPATH=/go) and
# build cache (root's): kept between builds, never in a layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags="-s -w" -o /out/framefarm ./cmd/framefarm

FROM ${RUN_IMAGE}
# ffmpeg from Debian: the build whose behaviour the farm's frame-exact
# checks were verified against (see the README).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid, so that Kubernetes' runAsUser and fsGroup, compose's
# volumes and the host's bind mounts can all name it.
RUN groupadd --system --gid 10001 framefarm \
 && useradd --system --uid 10001 --gid framefarm --home-dir /var/lib/framefarm --shell /usr/sbin/nologin framefarm \
 && install -d -o framefarm -g framefarm -m 0750 /var/lib/framefarm /work
COPY --from=build /out/framefarm /usr/local/bin/framefarm
USER 10001:10001
WORKDIR /var/lib/framefarm
# The coordinator's gRPC port, and its HTTP port (dashboard, /metrics).
EXPOSE 5555 8080
ENTRYPOINT ["framefarm"]
CMD ["help"]
