#!/usr/bin/env bash
# Installs the local AWS emulators and template tools into the git-ignored .riffle/tools/:
#   node/  kinesalite (Kinesis), pinned by infra/local/package.json and its package-lock.json
#   venv/  moto's server (DynamoDB, S3, SQS) and cfn-lint, pinned by infra/local/requirements.txt
#   examples-venv/  the Python producer example's packages (boto3, confluent-kafka, fastavro)
#          and DuckDB for reading a downloaded archive,
#          pinned by docs/examples/python-producer/requirements.txt; its test runs in `make test`
#   scan-venv/  checkov, pinned by infra/local/scan-requirements.txt; only with the argument
#          `scan` (make scan), since nothing else needs it
# Idempotent: a stamp file holds the hash of the pinned file it was installed from, so a
# re-run with nothing changed costs about a second and never touches the registries.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="${RIFFLE_TOOLS_DIR:-$root/.riffle/tools}"
mkdir -p "$tools"

stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

install_node() {
  local want stamp="$tools/node/.installed"
  want="$(stamp_of "$here/package.json" "$here/package-lock.json")"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -d "$tools/node/node_modules/kinesalite" && -d "$tools/node/node_modules/uplot" ]]; then
    return 0
  fi
  command -v npm >/dev/null || { echo "install.sh: npm is required (Node.js 20)" >&2; exit 1; }
  echo "install.sh: installing kinesalite and uPlot into $tools/node" >&2
  mkdir -p "$tools/node"
  cp "$here/package.json" "$here/package-lock.json" "$tools/node/"
  # npm ci installs exactly the lock file's tree, transitive versions included.
  (cd "$tools/node" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$want" >"$stamp"
}

install_venv() {
  local want stamp="$tools/venv/.installed"
  want="$(stamp_of "$here/requirements.txt")"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$tools/venv/bin/moto_server" ]]; then
    return 0
  fi
  echo "install.sh: installing moto and cfn-lint into $tools/venv" >&2
  if [[ ! -x "$tools/venv/bin/python" ]]; then
    python3 -m venv "$tools/venv"
  fi
  "$tools/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$here/requirements.txt" >&2
  echo "$want" >"$stamp"
}

# Apart from venv/: checkov pins boto3 exactly, and moto must keep the botocore it was
# released with.
install_scan_venv() {
  local want stamp="$tools/scan-venv/.installed"
  want="$(stamp_of "$here/scan-requirements.txt")"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$tools/scan-venv/bin/checkov" ]]; then
    return 0
  fi
  echo "install.sh: installing checkov into $tools/scan-venv" >&2
  if [[ ! -x "$tools/scan-venv/bin/python" ]]; then
    python3 -m venv "$tools/scan-venv"
  fi
  "$tools/scan-venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$here/scan-requirements.txt" >&2
  echo "$want" >"$stamp"
}

# The example producer's packages apart from the emulators': confluent-kafka's registry
# client brings its own HTTP stack and boto3, which must not move moto's botocore.
install_examples_venv() {
  local req="$root/docs/examples/python-producer/requirements.txt"
  local want stamp="$tools/examples-venv/.installed"
  want="$(stamp_of "$req")"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$tools/examples-venv/bin/python" ]]; then
    return 0
  fi
  echo "install.sh: installing the Python producer example's packages into $tools/examples-venv" >&2
  if [[ ! -x "$tools/examples-venv/bin/python" ]]; then
    python3 -m venv "$tools/examples-venv"
  fi
  "$tools/examples-venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$req" >&2
  echo "$want" >"$stamp"
}

# A real browser for the load report's test (the report is a web page: its plots must render
# without script errors). Debian's package; installed only where this script may (root with
# apt), otherwise the test says how.
install_chromium() {
  if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    return 0
  fi
  if [[ "$(id -u)" != "0" ]] || ! command -v apt-get >/dev/null; then
    echo "install.sh: no chromium; the load report test needs it (apt-get install chromium)" >&2
    return 0
  fi
  echo "install.sh: installing chromium (Debian package) for the load report test" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
}

install_node
install_venv
install_examples_venv
install_chromium
if [[ "${1:-}" == "scan" ]]; then
  install_scan_venv
fi
echo "install.sh: emulators ready in $tools" >&2
