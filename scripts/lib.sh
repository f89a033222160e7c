# Shared by scripts/test, scripts/demo and bench/: where kforge keeps its caches, and installing what the
# testbed needs on a fresh machine. Sourced, not run.

KFORGE_CACHE="${KFORGE_CACHE:-$HOME/.cache/kforge}"
# Outside the clone, so CI's fresh clones reuse the compiled AWS SDK (a clean build costs 5-25 minutes).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KFORGE_CACHE/target}"
VENV="$KFORGE_CACHE/venv"
MOTO_SPEC='moto[server,ec2,s3]>=5.2,<5.3'

log() { printf '==> %s\n' "$*" >&2; }

# moto in a private venv; reinstalled only when missing or broken.
ensure_moto() {
  if ! "$VENV/bin/python" -c 'import moto.server, flask, werkzeug' 2>/dev/null; then
    log "installing $MOTO_SPEC into $VENV"
    command -v python3 >/dev/null || apt_install python3
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      # Debian's python3 needs python3-venv for venvs.
      rm -rf "$VENV"
      apt_install python3-venv
      python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$MOTO_SPEC"
  fi
  export KFORGE_PYTHON="$VENV/bin/python"
}

# Installs Debian packages when we may (root, or passwordless sudo); otherwise says what is missing.
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  if command -v apt-get >/dev/null && $sudo true 2>/dev/null; then
    log "installing Debian packages: $*"
    $sudo apt-get install -y -q "$@" >/dev/null || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "$@" >/dev/null; }
  else
    log "please install: $*"
    exit 1
  fi
}

# kubectl, which the tests use to check the kubeconfigs kforge writes.
ensure_kubectl() {
  command -v kubectl >/dev/null || apt_install kubernetes-client
}

# The push testbed: a real registry (docker-registry), the reference client (skopeo) and a Docker daemon + CLI
# for daemon-source pushes (docker.io; the tests start their own dockerd).
ensure_push_testbed() {
  local missing=()
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v skopeo >/dev/null || missing+=(skopeo)
  { command -v dockerd >/dev/null && command -v docker >/dev/null; } || missing+=(docker.io)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

ensure_rust() {
  command -v cargo >/dev/null || { log "cargo is required (https://rustup.rs)"; exit 1; }
  # libssh2 (the ssh2 crate builds it) links OpenSSL.
  { command -v pkg-config >/dev/null && pkg-config --exists openssl; } || apt_install pkg-config libssl-dev
}

# The SSH testbed: a real sshd the bootstrap tests start on a free port, ssh-keygen, openssl to verify the PKI, and
# debootstrap for the systemd + sshd host containers (their image is cached in ~/.cache/kforge/hosts).
ensure_ssh_testbed() {
  local missing=()
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ssh-keygen >/dev/null || missing+=(openssh-client)
  command -v openssl >/dev/null || missing+=(openssl)
  # Host containers for the bootstrap tests are Debian root file systems made with debootstrap.
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  # They run in a private dockerd; the test's asset mirror is python3's http.server.
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v python3 >/dev/null || missing+=(python3)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

# Starts moto on a free port for the life of this shell: the sidecar's stdin is fd 9 of this script, so it exits
# when the script does, however the script ends. Sets MOTO_URL.
start_moto() {
  local portfile
  portfile="$(mktemp)"
  exec 9> >(MOTO_IAM_LOAD_MANAGED_POLICIES=true MOTO_ECS_SERVICE_RUNNING=2 "$KFORGE_PYTHON" scripts/moto_sidecar.py >"$portfile" 2>/dev/null)
  for _ in $(seq 1 200); do
    [ -s "$portfile" ] && break
    sleep 0.1
  done
  [ -s "$portfile" ] || { log "moto did not start"; exit 1; }
  MOTO_URL="http://127.0.0.1:$(head -1 "$portfile")"
  rm -f "$portfile"
  export MOTO_URL
}

stop_moto() {
  exec 9>&- 2>/dev/null || true
}
