#!/usr/bin/env bash
# Daemonless image check: build the operator, gateway and worker targets of images/Dockerfile
# with buildah (chroot isolation, vfs storage) and run each entrypoint's --help inside.
# No registry is reachable here, so the base is a debootstrap'ed bookworm imported into buildah
# and passed as BASE_IMAGE. Needs root (buildah chroot). Skips only when buildah is missing.
# A dev-loop target (*-dev) is checked as skaffold dev uses it: as the runtime user, every
# directory under /opt/mediaflow/src (where file sync writes) takes new files, the packages are
# imported from there, and each reload wrapper in /opt/mediaflow/dev starts its process
# (uvicorn, the operator). gateway-dev has the whole dev stage; operator-dev adds only its
# ENTRYPOINT (checked by tests/images), so the default builds one (each target costs minutes
# of vfs layer copies).
#   images/check.sh            # operator gateway worker gateway-dev
#   TARGETS="gateway operator-dev" images/check.sh
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
targets="${TARGETS:-operator gateway worker gateway-dev}"
base_image="localhost/debian-base:bookworm"
work_dir="${MEDIAFLOW_IMAGES_WORKDIR:-/tmp/mediaflow-images}"
# a storage of the check's own: vfs copies every layer whole (tens of GB for four targets), so
# it is removed when the check ends, and the host's other images are never touched.
# MEDIAFLOW_IMAGES_KEEP=1 keeps it (later runs then reuse its layers).
storage="$work_dir/storage"
buildah=(buildah --storage-driver vfs --root "$storage/root" --runroot "$storage/run")

if ! command -v buildah >/dev/null 2>&1; then
    echo "SKIP images-check: buildah is not installed (apt-get install buildah debootstrap)"
    exit 0
fi

# run in the dev images as their user: every source directory takes a new file, and each
# package is imported from the synced tree (PYTHONPATH), not from site-packages
dev_check='
import importlib, os
for name in ("mediaflow", "mediaflow_gateway", "mediaflow_operator"):
    path = importlib.import_module(name).__file__
    assert path.startswith("/opt/mediaflow/src/"), (name, path)
for top, dirs, _ in os.walk("/opt/mediaflow/src"):
    probe = os.path.join(top, ".sync-probe")
    open(probe, "w").close()
    os.remove(probe)
print("dev sources writable and imported from /opt/mediaflow/src as uid", os.getuid())
'

start=$(date +%s)
mkdir -p "$work_dir"
remove_storage() {
    [ "${MEDIAFLOW_IMAGES_KEEP:-0}" = 1 ] && return
    "${buildah[@]}" rm --all >/dev/null 2>&1 || true
    "${buildah[@]}" rmi --all --force >/dev/null 2>&1 || true
    # vfs layers are plain directories; whatever buildah left is removed with them
    rm -rf "$storage" "$work_dir/rootfs.tar"
    echo "images-check: removed its image storage ($storage)"
}
trap remove_storage EXIT

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
    run=("${buildah[@]}" run --isolation chroot --user "$user" "$container" --)
    if [[ "$target" == *-dev ]]; then
        # sync destinations writable by the runtime user, sources imported from them
        timeout 120 "${run[@]}" python3 -c "$dev_check" \
            || { echo "images-check: $target: sources not writable or not imported from /opt/mediaflow/src" >&2; exit 1; }
        # every reload wrapper (the operator's keeps watching after its process exits: bounded
        # inside the container), each printing its program's usage
        : >"$work_dir/$target-help.txt"
        for wrapper in $("${run[@]}" ls /opt/mediaflow/dev); do
            rc=0
            timeout 180 "${run[@]}" timeout 30 tini -- "/opt/mediaflow/dev/$wrapper" --help >"$work_dir/$target-$wrapper.txt" 2>&1 || rc=$?
            { [ "$rc" = 0 ] || [ "$rc" = 124 ]; } && grep -qi "usage" "$work_dir/$target-$wrapper.txt" \
                || { echo "images-check: $target $wrapper --help exited $rc" >&2; cat "$work_dir/$target-$wrapper.txt" >&2; exit 1; }
            echo "  $wrapper: $(grep -i -m1 usage "$work_dir/$target-$wrapper.txt")" | tee -a "$work_dir/$target-help.txt"
        done
    else
        # shellcheck disable=SC2086  # the entrypoint is a word list
        # a bounded run: an entrypoint that ignores --help and starts serving must not hang the check
        timeout 120 "${run[@]}" $entrypoint --help >"$work_dir/$target-help.txt"
    fi
    "${buildah[@]}" rm "$container" >/dev/null
    grep -qi "usage" "$work_dir/$target-help.txt" || { echo "images-check: $target --help printed no usage" >&2; cat "$work_dir/$target-help.txt" >&2; exit 1; }
    echo "OK $target (user $user, entrypoint '$entrypoint --help') in $(( $(date +%s) - t0 ))s"
done
echo "images-check: built and ran ${targets} in $(( $(date +%s) - start ))s"
