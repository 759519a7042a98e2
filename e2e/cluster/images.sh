#!/usr/bin/env bash
# Builds the real node's OCI images without any registry or container engine: a Debian
# bookworm rootfs from debootstrap, packages from Debian (apt) and PyPI (pip), umoci to make
# the image, cached as OCI archives in $E2E_CACHE/images/ and tagged by a hash of their inputs.
#
#   images.sh build [NAME...]   build (if not cached) NAME (default: every image)
#   images.sh ref NAME          print NAME's reference (localhost/celery-e2e/NAME:<hash>)
#   images.sh archive NAME      print the path of NAME's archive (built if missing)
#   images.sh import SOCKET [NAME...]   import into the containerd at SOCKET (k8s.io namespace)
#
# Images: pause (the pod sandbox, pause.c), coredns (the static binary), redis (Debian's
# redis-server, uid 999 as the official
# image), celery-app (Debian's python3, Celery from PyPI and e2e/app), django-site (Debian's
# python3, examples/django-site and its requirements from PyPI), operator (the static
# release binary, uid 65532, as the Dockerfile builds it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"

ALL_IMAGES="pause coredns redis celery-app django-site operator"
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
IMAGES=$E2E_CACHE/images
REPO_PREFIX=localhost/celery-e2e

log() { echo "[images] $*" >&2; }
die() { echo "[images] error: $*" >&2; exit 1; }

# Packages each Debian-based image adds to the base.
packages() {
  case $1 in
    redis) echo "redis-server" ;;
    celery-app | django-site) echo "python3 python3-pip" ;;
  esac
}

# inputs NAME: everything that decides what is in NAME's image; its hash is the tag.
inputs() {
  local name=$1
  echo "format 1"
  sed -n '/^# --- build_'"${name//-/_}"'/,/^# --- end/p' "$0"
  case $name in
    pause) gcc --version | head -1; cat "$here/pause.c" ;;
    coredns) echo "coredns $COREDNS_VERSION" ;;
    redis) echo "base $SUITE $MIRROR minbase; packages $(packages redis)" ;;
    celery-app)
      echo "base $SUITE $MIRROR minbase; packages $(packages celery-app)"
      declare -f pip_install celery_command
      cat "$repo/e2e/requirements.txt"
      (cd "$repo/e2e/app" && find . -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum)
      ;;
    django-site)
      echo "base $SUITE $MIRROR minbase; packages $(packages django-site)"
      declare -f pip_install celery_command
      (cd "$repo/examples/django-site" && django_site_files | xargs sha256sum)
      ;;
    operator)
      (cd "$repo" && { git ls-files -co --exclude-standard Cargo.toml Cargo.lock operator e2e/Cargo.toml e2e/src |
        LC_ALL=C sort | xargs sha256sum; })
      ;;
    *) die "unknown image $name (one of: $ALL_IMAGES)" ;;
  esac
}

tag() { inputs "$1" | sha256sum | cut -c1-16; }
ref() { echo "$REPO_PREFIX/$1:$(tag "$1")"; }
archive_path() { echo "$IMAGES/$1-$(tag "$1").tar"; }

# The debootstrap rootfs every Debian-based image starts from, cached as a tarball.
base_rootfs() {
  local out=$IMAGES/base-$SUITE-minbase.tar
  [ -s "$out" ] && { echo "$out"; return 0; }
  command -v debootstrap >/dev/null || die "debootstrap is missing (make deps)"
  log "debootstrap $SUITE (first time only)"
  local start=$SECONDS dir
  dir=$(mktemp -d "$IMAGES/base.XXXXXX")
  debootstrap --variant=minbase "$SUITE" "$dir/rootfs" "$MIRROR" >"$dir/debootstrap.log" 2>&1 ||
    { tail -20 "$dir/debootstrap.log" >&2; rm -rf "$dir"; die "debootstrap failed"; }
  tar -C "$dir/rootfs" --numeric-owner -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  rm -rf "$dir"
  log "base rootfs in $((SECONDS - start))s"
  echo "$out"
}

# apt_install ROOTFS PACKAGE...: installs into a chroot, without starting any service.
apt_install() {
  local root=$1
  shift
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root/usr/sbin/policy-rc.d"
  : >"$root/etc/resolv.conf"
}

# pip_install ROOTFS REQUIREMENTS TARGET: wheels from PyPI, resolved by the image's own pip and
# Python (3.11.2), so environment markers such as redis's `async-timeout; python_full_version
# < "3.11.3"` are the image's, not the host's. It trusts what the host trusts (a proxy's CA
# included) and nothing of that is left in the image.
pip_install() {
  local root=$1 requirements=$2 target=$3
  cp "$requirements" "$root/tmp/requirements.txt"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$root/tmp/ca.crt"
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_DEFAULT_TIMEOUT=180 \
    chroot "$root" python3 -m pip install -q --no-cache-dir --disable-pip-version-check \
    --no-compile --root-user-action=ignore --cert /tmp/ca.crt --break-system-packages \
    --only-binary=:all: --target "$target" -r /tmp/requirements.txt
  : >"$root/etc/resolv.conf"
  rm -f "$root/tmp/requirements.txt" "$root/tmp/ca.crt"
  rm -rf "${root:?}$target/bin"
}

# celery_command ROOTFS: `celery` on the PATH, as pip installs it (a WorkerPool runs `celery`).
celery_command() {
  printf '#!/bin/sh\nexec python3 -m celery "$@"\n' >"$1/usr/local/bin/celery"
  chmod 0755 "$1/usr/local/bin/celery"
}

# --- build_pause
fill_pause() {
  local root=$1
  gcc -static -Os -o "$root/pause" "$here/pause.c"
  CONFIG=(--config.entrypoint /pause --config.user 65535:65535)
}
# --- end

# --- build_coredns
fill_coredns() {
  local root=$1 bin
  bin=$("$here/build.sh" bindir)/coredns
  [ -x "$bin" ] || "$here/build.sh" node
  install -m 0755 "$bin" "$root/coredns"
  CONFIG=(--config.entrypoint /coredns --config.cmd "-conf" --config.cmd /etc/coredns/Corefile
    --config.user 65532:65532 --config.exposedports 53/udp --config.exposedports 53/tcp)
}
# --- end

# --- build_redis
fill_redis() {
  local root=$1
  tar -C "$root" -xf "$(base_rootfs)"
  # The official image's uid and gid; Debian's postinst reuses an existing redis user.
  chroot "$root" groupadd -r -g 999 redis
  chroot "$root" useradd -r -g redis -u 999 -d /data -s /usr/sbin/nologin redis
  # shellcheck disable=SC2046 # one word per package
  apt_install "$root" $(packages redis)
  mkdir -p "$root/data"
  chown 999:999 "$root/data"
  CONFIG=(--config.cmd redis-server --config.cmd --protected-mode --config.cmd no
    --config.user 999:999 --config.workingdir /data --config.exposedports 6379/tcp)
}
# --- end

# --- build_celery_app
fill_celery_app() {
  local root=$1
  tar -C "$root" -xf "$(base_rootfs)"
  # shellcheck disable=SC2046 # one word per package
  apt_install "$root" $(packages celery-app)
  pip_install "$root" "$repo/e2e/requirements.txt" /opt/celery/site-packages
  mkdir -p "$root/app"
  cp "$repo"/e2e/app/*.py "$root/app/"
  celery_command "$root"
  # The app imports with the image's Python, or the image is not built.
  chroot "$root" env PYTHONPATH=/app:/opt/celery/site-packages sh -c 'cd /app && python3 -c "import tasks, celery.bin.celery"' ||
    die "celery-app: the test app does not import in the image"
  CONFIG=(--config.env PYTHONPATH=/app:/opt/celery/site-packages --config.env PYTHONUNBUFFERED=1
    --config.workingdir /app --config.user 65532:65532 --config.cmd celery --config.cmd -A
    --config.cmd tasks --config.cmd worker --config.cmd --loglevel=INFO)
}
# --- end

# --- build_django_site
# The files of examples/django-site that go into its image (its project and SMTP sink, not
# its manifests, README or drafts), relative to that directory.
django_site_files() {
  (cd "$repo/examples/django-site" &&
    find manage.py smtp_sink.py requirements.txt site_project shop -type f \
      ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort)
}

fill_django_site() {
  local root=$1 f
  tar -C "$root" -xf "$(base_rootfs)"
  # shellcheck disable=SC2046 # one word per package
  apt_install "$root" $(packages django-site)
  pip_install "$root" "$repo/examples/django-site/requirements.txt" /opt/site/site-packages
  mkdir -p "$root/app"
  for f in $(django_site_files); do
    install -D -m 0644 "$repo/examples/django-site/$f" "$root/app/$f"
  done
  rm -f "$root/app/requirements.txt"
  celery_command "$root"
  # The site imports, passes Django's checks and migrates (in memory) with the image's
  # Python, and the SMTP sink and gunicorn import, or the image is not built.
  chroot "$root" env PYTHONPATH=/app:/opt/site/site-packages PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=site_project.settings SQLITE_PATH=:memory: sh -c 'cd /app && python3 -c "
import django
django.setup()
from django.core.management import call_command
call_command(\"check\")
call_command(\"migrate\", verbosity=0)
import celery.bin.celery, gunicorn.app.wsgiapp, site_project.wsgi, shop.tasks, smtp_sink
from shop.models import Product
from site_project import celery_app
assert Product.objects.count() > 0
assert \"shop.tasks.send_welcome_mail\" in celery_app.tasks
"' || die "django-site: the example site does not import in the image"
  CONFIG=(--config.env PYTHONPATH=/app:/opt/site/site-packages --config.env PYTHONUNBUFFERED=1
    --config.env PYTHONDONTWRITEBYTECODE=1 --config.env DJANGO_SETTINGS_MODULE=site_project.settings
    --config.env HOME=/tmp --config.workingdir /app --config.user 65532:65532
    --config.exposedports 8000/tcp --config.cmd sh --config.cmd -c
    --config.cmd "python3 manage.py migrate --noinput && exec python3 -m gunicorn site_project.wsgi --bind 0.0.0.0:8000 --workers 2 --access-logfile - --worker-tmp-dir /tmp --no-control-socket")
}
# --- end

# --- build_operator
fill_operator() {
  local root=$1 target=x86_64-unknown-linux-musl
  rustup target list --installed | grep -qx "$target" || rustup target add "$target" >&2
  command -v musl-gcc >/dev/null || die "musl-gcc is missing (make deps)"
  (cd "$repo" && cargo build --release --locked -p celery-operator --target "$target" >&2)
  install -m 0755 "${CARGO_TARGET_DIR:-$repo/target}/$target/release/celery-operator" "$root/celery-operator"
  CONFIG=(--config.entrypoint /celery-operator --config.cmd run --config.cmd --leader-election
    --config.cmd --log-json --config.user 65532:65532 --config.exposedports 8080/tcp)
}
# --- end

build() {
  local name=$1 out
  out=$(archive_path "$name")
  [ -s "$out" ] && return 0
  command -v umoci >/dev/null || die "umoci is missing (make deps)"
  log "building $name (first time for these inputs; cached in $IMAGES)"
  local start=$SECONDS work t
  t=$(tag "$name")
  work=$(mktemp -d "$IMAGES/$name.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:$t"
  umoci unpack --image "$work/oci:$t" "$work/bundle" >/dev/null
  CONFIG=()
  "fill_${name//-/_}" "$work/bundle/rootfs"
  umoci repack --image "$work/oci:$t" "$work/bundle"
  umoci config --image "$work/oci:$t" --author celery-operator-e2e \
    --config.label "io.celeryoperator.e2e.inputs=$t" "${CONFIG[@]}"
  umoci gc --layout "$work/oci"
  tar -C "$work/oci" -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  rm -rf "$work"
  trap - EXIT
  log "built $name $(ref "$name") in $((SECONDS - start))s"
}

import() {
  local sock=$1 name
  shift
  for name in "$@"; do
    build "$name"
    ctr -a "$sock" -n k8s.io images import --base-name "$REPO_PREFIX/$name" \
      "$(archive_path "$name")" >/dev/null
  done
}

mkdir -p "$IMAGES"
cmd=${1:-build}
shift || true
case $cmd in
  build)
    # shellcheck disable=SC2086
    [ "$#" -gt 0 ] || set -- $ALL_IMAGES
    for n in "$@"; do build "$n"; done
    ;;
  ref) ref "$1" ;;
  archive) build "$1" && archive_path "$1" ;;
  import)
    sock=$1
    shift
    # shellcheck disable=SC2086
    [ "$#" -gt 0 ] || set -- $ALL_IMAGES
    import "$sock" "$@"
    ;;
  *) die "usage: images.sh build [NAME...] | ref NAME | archive NAME | import SOCKET [NAME...]" ;;
esac
