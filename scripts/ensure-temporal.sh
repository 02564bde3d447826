#!/usr/bin/env bash
# Builds the Temporal CLI (dev server + Web UI) from its Go module into .tools/bin, once.
# No prebuilt binary can be downloaded on these machines, so it is compiled with the Go toolchain.
# v1.5.1 is pinned: it is the newest release whose go.mod has no replace directives (v1.9.1 has
# one, which `go install pkg@version` refuses).
set -euo pipefail
TEMPORAL_CLI_VERSION=v1.5.1
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.tools/bin/temporal"
stamp="$root/.tools/bin/temporal.version"
if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$TEMPORAL_CLI_VERSION" ]; then
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then export PATH="$PATH:/usr/local/go/bin"; else
    echo "ensure-temporal: the Go toolchain is needed to build the Temporal CLI (not found in PATH or /usr/local/go)" >&2
    exit 1
  fi
fi
echo "ensure-temporal: building github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_VERSION (a few minutes the first time)" >&2
mkdir -p "$root/.tools/bin"
# GOFLAGS from the environment could carry -mod=vendor or similar; the module build wants none.
GOFLAGS=-buildvcs=false GOBIN="$root/.tools/bin" go install "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_VERSION"
echo "$TEMPORAL_CLI_VERSION" > "$stamp"
"$bin" --version >&2
