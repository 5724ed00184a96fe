#!/usr/bin/env bash
# Daemonless image check: build the operator, gateway and worker targets of images/Dockerfile
# with buildah (chroot isolation, vfs storage) and run each entrypoint's --help inside.
# No registry is reachable here, so the base is a debootstrap'ed bookworm imported into buildah
# and passed as BASE_IMAGE. Needs root (buildah chroot). Skips only when buildah is missing.
#   images/check.sh            # all three targets
#   TARGETS="gateway" images/check.sh
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
targets="${TARGETS:-operator gateway worker}"
base_image="localhost/debian-base:bookworm"
work_dir="${MEDIAFLOW_IMAGES_WORKDIR:-/tmp/mediaflow-images}"
buildah=(buildah --storage-driver vfs)

if ! command -v buildah >/dev/null 2>&1; then
    echo "SKIP images-check: buildah is not installed (apt-get install buildah debootstrap)"
    exit 0
fi

start=$(date +%s)
mkdir -p "$work_dir"

if ! "${buildah[@]}" inspect --type image "$base_image" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { echo "images-check: debootstrap is required to make the base" >&2; exit 1; }
    rootfs="$work_dir/rootfs"
    if [ ! -x "$rootfs/usr/bin/apt-get" ]; then
        rm -rf "$rootfs"
        debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian
    fi
    tar -C "$rootfs" -cf "$work_dir/rootfs.tar" .
    container=$("${buildah[@]}" from scratch)
    "${buildah[@]}" add "$container" "$work_dir/rootfs.tar" /
    "${buildah[@]}" config --cmd /bin/bash "$container"
    "${buildah[@]}" commit --rm "$container" "$base_image"
fi
echo "base ready after $(( $(date +%s) - start ))s"

for target in $targets; do
    t0=$(date +%s)
    mirror_args=()
    # the host's local PyPI mirror, if any, is what this machine's pip resolves against
    for dir in /opt/pypi /opt/pypi-more /opt/wheels; do
        [ -d "$dir" ] && mirror_args+=(-v "$dir:$dir:ro")
    done
    # the host's CA bundle (it may trust a TLS-intercepting proxy in front of PyPI), for pip
    # only: mounted beside the image's own bundle, which ca-certificates' postinst rewrites
    mirror_args+=(-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca-certificates.crt:ro
                  --build-arg PIP_CERT=/run/host-ca-certificates.crt)
    "${buildah[@]}" bud --isolation chroot --pull-never --layers --format docker \
        "${mirror_args[@]}" \
        --build-arg BASE_IMAGE="$base_image" \
        --build-arg PIP_EXTRA_INDEX_URL="$(pip config get global.extra-index-url 2>/dev/null || true)" \
        --build-arg PIP_FIND_LINKS="${PIP_FIND_LINKS:-}" \
        -f "$repo_root/images/Dockerfile" --target "$target" \
        -t "localhost/mediaflow/$target:check" "$repo_root"
    container=$("${buildah[@]}" from --pull-never "localhost/mediaflow/$target:check")
    # the image's entrypoint, as the image's non-root user
    config=$("${buildah[@]}" inspect --type image "localhost/mediaflow/$target:check")
    entrypoint=$(python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)["OCIv1"]["config"]["Entrypoint"]))' <<<"$config")
    user=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["OCIv1"]["config"]["User"])' <<<"$config")
    # shellcheck disable=SC2086  # the entrypoint is a word list
    # a bounded run: an entrypoint that ignores --help and starts serving must not hang the check
    timeout 120 "${buildah[@]}" run --isolation chroot --user "$user" "$container" -- $entrypoint --help >"$work_dir/$target-help.txt"
    "${buildah[@]}" rm "$container" >/dev/null
    grep -qi "usage" "$work_dir/$target-help.txt" || { echo "images-check: $target --help printed no usage" >&2; cat "$work_dir/$target-help.txt" >&2; exit 1; }
    echo "OK $target (user $user, entrypoint '$entrypoint --help') in $(( $(date +%s) - t0 ))s"
done
echo "images-check: built and ran ${targets} in $(( $(date +%s) - start ))s"
