#!/usr/bin/env bash
# Regenerates Sources/SiloTransport/Generated/*.swift from Protos/silo/v1/silo.proto.
#
# The generated Swift is committed, so building Silo never needs protoc or its plugins. Run this after
# changing the schema. It needs:
#   - protoc: from PATH, or PROTOC=..., or Python's grpcio-tools (`pip install grpcio-tools`, then
#     PROTOC="python3 -m grpc_tools.protoc");
#   - protoc-gen-swift (swift-protobuf 1.39.0) and protoc-gen-grpc-swift-2 (grpc-swift-protobuf 2.4.1):
#     from PATH, or PLUGINS=DIR holding both; without them the script builds them once into
#     ${SCRATCH:-$HOME/.cache/silo-protoc-plugins} (about 10 minutes on 2 cores).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/Sources/SiloTransport/Generated"
scratch="${SCRATCH:-$HOME/.cache/silo-protoc-plugins}"

if [[ -n "${PROTOC:-}" ]]; then
    read -r -a protoc <<< "$PROTOC"
elif command -v protoc > /dev/null; then
    protoc=(protoc)
elif python3 -c 'import grpc_tools' 2> /dev/null; then
    protoc=(python3 -m grpc_tools.protoc)
else
    echo "generate-protos: no protoc: install one, or \`pip install grpcio-tools\`, or set PROTOC" >&2
    exit 1
fi

plugins="${PLUGINS:-}"
if [[ -z "$plugins" ]]; then
    if command -v protoc-gen-swift > /dev/null && command -v protoc-gen-grpc-swift-2 > /dev/null; then
        plugins="$(dirname "$(command -v protoc-gen-swift)")"
    else
        if [[ ! -x "$scratch/.build/debug/protoc-gen-swift" || ! -x "$scratch/.build/debug/protoc-gen-grpc-swift-2" ]]; then
            echo "generate-protos: building the protoc plugins into $scratch (once)" >&2
            [[ -d "$scratch" ]] || git clone --quiet --branch 2.4.1 https://github.com/grpc/grpc-swift-protobuf "$scratch"
            (cd "$scratch" && swift build --product protoc-gen-grpc-swift-2 && swift build --product protoc-gen-swift)
        fi
        plugins="$scratch/.build/debug"
    fi
fi

mkdir -p "$out"
"${protoc[@]}" \
    --proto_path="$root/Protos" \
    --plugin=protoc-gen-swift="$plugins/protoc-gen-swift" \
    --plugin=protoc-gen-grpc-swift="$plugins/protoc-gen-grpc-swift-2" \
    --swift_out="$out" --swift_opt=Visibility=Public \
    --grpc-swift_out="$out" --grpc-swift_opt=Visibility=Public,Server=true,Client=true \
    silo/v1/silo.proto
# protoc writes into the package path (silo/v1/); keep the files flat.
mv "$out/silo/v1/"*.swift "$out/"
rm -rf "$out/silo"
echo "generate-protos: wrote $(ls "$out" | tr '\n' ' ')in $out" >&2
