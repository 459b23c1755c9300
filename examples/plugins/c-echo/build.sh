#!/bin/sh
# Builds the C example plugin and writes its manifest beside it, with the checksum
# of the binary just built (a compiled binary differs per machine and compiler, so
# no checksum for it can be shipped).
#
#   sh examples/plugins/c-echo/build.sh [OUTDIR]     # OUTDIR defaults to this directory
#   plugin-client doctor --plugins-dir examples/plugins/c-echo
#
# CC selects the compiler (default: cc).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
mkdir -p "$out"
out=$(cd "$out" && pwd)
exe="$out/devboy-source-c-echo"
"${CC:-cc}" -O2 -o "$exe" "$here/c_echo.c"
chmod 755 "$exe"
sum=$(sha256sum "$exe" | cut -d ' ' -f 1)
cat > "$out/devboy-source-c-echo.toml" <<TOML
name = "c-echo"
version = "1.0.0"
executable = "devboy-source-c-echo"
allowed_env_vars = []
checksum_sha256 = "$sum"
TOML
echo "built $exe (sha256 $sum) and $out/devboy-source-c-echo.toml"
