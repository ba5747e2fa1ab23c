#!/usr/bin/env bash
# `make package`: for each architecture a .deb (nfpm, from packaging/nfpm.yaml) and a
# .tar.gz with the unit, the config and INSTALL; then SHA256SUMS, and a manifest signed
# with ed25519 for every artefact (`moongate firmware sign`: the same keys and format as
# firmware images). The signing key is $MOONGATE_SIGNING_KEY, or DIST/dev-signing.key,
# made on the first run: fine for a test, not for a release.
#
# usage: packaging/build.sh VERSION DIST ARCH... (ARCH: amd64, arm64, armhf)
set -euo pipefail
cd "$(dirname "$0")/.."
version=$1 dist=$2
shift 2
go=${GO:-go}
nfpm=${NFPM:-$go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2}
export CGO_ENABLED=0
mkdir -p "$dist/build"
abs=$(cd "$dist" && pwd)
host="$dist/build/moongate-host"
$go build -o "$host" ./cmd/moongate
key=${MOONGATE_SIGNING_KEY:-}
if [ -z "$key" ]; then
  key="$dist/dev-signing.key"
  [ -f "$key" ] || "$host" firmware keygen "$dist/dev-signing" >/dev/null
  echo "signing with $key (a development key: set MOONGATE_SIGNING_KEY for a release)" >&2
fi

# The manifests' version counter: the commits on the branch, which only grow along it.
counter=$(git rev-list --count HEAD 2>/dev/null || date +%s)
artefacts=()
for arch in "$@"; do
  case $arch in
    amd64) goarch=amd64 goarm= ;;
    arm64) goarch=arm64 goarm= ;;
    armhf) goarch=arm goarm=6 ;; # armv6: Pi Zero and Pi 1 run it too, as Raspberry Pi OS's armhf does
    *) echo "unknown architecture $arch (amd64, arm64, armhf)" >&2; exit 2 ;;
  esac
  stage="$dist/build/$arch"
  rm -rf "$stage"
  mkdir -p "$stage/docs"
  bin="$stage/moongate"
  GOOS=linux GOARCH=$goarch GOARM=$goarm $go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$bin" ./cmd/moongate
  cp -r packaging "$stage/"
  cp docs/SPEC.md "$stage/docs/"
  deb="moongate_${version}_${arch}.deb"
  (cd "$stage" && ARCH=$arch VERSION=$version $nfpm package --packager deb --config packaging/nfpm.yaml --target "$abs/$deb" >/dev/null)
  tree="moongate-$version-linux-$arch"
  rm -rf "${dist:?}/build/$tree"
  mkdir -p "$dist/build/$tree"
  cp "$bin" packaging/moongate.service packaging/moongate.yaml packaging/INSTALL "$dist/build/$tree/"
  tar -C "$dist/build" --owner=root --group=root -czf "$dist/$tree.tar.gz" "$tree"
  artefacts+=("$deb" "$tree.tar.gz")
done
(cd "$dist" && sha256sum "${artefacts[@]}" > SHA256SUMS)
# A package's signature is checked by whoever installs it, maybe years later: it expires
# in ten years.
for a in "${artefacts[@]}" SHA256SUMS; do
  rm -f "$dist/$a.manifest.json"
  "$host" firmware sign "$key" "$dist/$a" "moongate-package" "$version" --counter "$counter" --expires 87600h >/dev/null
done
echo "packages in $dist: ${artefacts[*]} SHA256SUMS, each with its .manifest.json" >&2
