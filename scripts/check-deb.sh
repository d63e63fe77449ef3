#!/usr/bin/env bash
# Checks the Debian package scripts/deb.sh built: its file list (dpkg-deb -c),
# its control data (dpkg-deb -I), and, unpacked (dpkg-deb -x), that the binary
# runs, the service unit runs it from /usr/bin (systemd-analyze verify of the
# units is in crates/cli/tests/install.rs, against the built binary), the config is
# a conffile that `switchboard check` passes, and every man page renders.
set -euo pipefail
cd "$(dirname "$0")/.."
deb="$(ls target/debian/switchboard_*.deb | head -1)"
listing="$(dpkg-deb -c "$deb")"
for path in ./usr/bin/switchboard ./lib/systemd/system/switchboard.service ./lib/systemd/system/switchboard.socket \
            ./etc/switchboard/switchboard.toml ./usr/share/man/man1/switchboard.1.gz ./usr/share/man/man1/switchboard-up.1.gz \
            ./usr/share/bash-completion/completions/switchboard ./usr/share/zsh/vendor-completions/_switchboard \
            ./usr/share/fish/vendor_completions.d/switchboard.fish; do
  grep -q " $path\$" <<<"$listing" || { echo "$deb lacks $path" >&2; exit 1; }
done
dpkg-deb -I "$deb" conffiles | grep -qx /etc/switchboard/switchboard.toml || { echo "the config is not a conffile" >&2; exit 1; }
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
"$root/usr/bin/switchboard" --version
grep -qx 'ExecStart=/usr/bin/switchboard up --config /etc/switchboard/switchboard.toml --data-dir /var/lib/switchboard --log-format json' \
  "$root/lib/systemd/system/switchboard.service" || { echo "ExecStart does not run /usr/bin/switchboard" >&2; exit 1; }
"$root/usr/bin/switchboard" check --config "$root/etc/switchboard/switchboard.toml"
for page in "$root"/usr/share/man/man1/*.1.gz; do
  MANWIDTH=100 man -l "$page" >/dev/null
done
echo "$deb: $(grep -c '^-' <<<"$listing") files, contents as expected"
