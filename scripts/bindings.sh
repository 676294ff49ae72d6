#!/usr/bin/env bash
# Generates the Kotlin, Swift and Python bindings of the Assent mobile SDK (crate assent-sdk)
# from the built library, with the uniffi-bindgen that is built from the same crate (so its
# UniFFI version always matches the library's).
#
#   scripts/bindings.sh [OUT_DIR]          # default: target/bindings
#   PROFILE=release scripts/bindings.sh    # release build of the library
#   LANGUAGES="python" scripts/bindings.sh # only some languages (kotlin swift python)
#
# Output:
#   OUT_DIR/kotlin/dev/assent/sdk/assent_sdk.kt   (+ put libassent_sdk.so in jniLibs/<abi>/)
#   OUT_DIR/swift/AssentSdk.swift, AssentSdkFFI.h, AssentSdkFFI.modulemap
#   OUT_DIR/python/assent_sdk.py + the host library next to it, importable as is:
#       PYTHONPATH=OUT_DIR/python python3 -c 'import assent_sdk'
#
# The library built here is for the host; phones need cross builds of the same crate
# (cargo-ndk for Android, `cargo rustc --crate-type staticlib` per Apple target for iOS); the
# bindings are the same for every target. See docs/sdk-guide.md.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

out="${1:-target/bindings}"
profile="${PROFILE:-debug}"
languages="${LANGUAGES:-kotlin swift python}"
cargo="${CARGO:-cargo}"

profile_flag=()
if [[ "$profile" == "release" ]]; then
    profile_flag=(--release)
elif [[ "$profile" != "debug" ]]; then
    echo "PROFILE must be debug or release" >&2
    exit 2
fi

# One build, one feature set: the cdylib and the generator that reads its metadata.
"$cargo" build -p assent-sdk --lib --bin uniffi-bindgen --features bindgen "${profile_flag[@]}"

target_dir="$("$cargo" metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
build_dir="$target_dir/$profile"
case "$(uname -s)" in
    Darwin) lib="$build_dir/libassent_sdk.dylib" ;;
    MINGW* | MSYS* | CYGWIN*) lib="$build_dir/assent_sdk.dll" ;;
    *) lib="$build_dir/libassent_sdk.so" ;;
esac
if [[ ! -f "$lib" ]]; then
    echo "built library not found at $lib" >&2
    exit 1
fi

mkdir -p "$out"
for language in $languages; do
    rm -rf "${out:?}/$language"
    # --no-format: formatters (ktlint, swiftformat) are optional and not needed to compile.
    "$build_dir/uniffi-bindgen" generate --no-format --language "$language" \
        --out-dir "$out/$language" "$lib"
done

# Python loads the library from next to its module.
if [[ " $languages " == *" python "* ]]; then
    cp "$lib" "$out/python/"
fi

echo "bindings for: $languages"
echo "written to:   $out"
