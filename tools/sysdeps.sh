#!/bin/sh
# System packages the tests and the demo need: Debian's Chromium (the web pages are tested in it
# through Playwright, which is told to use /usr/bin/chromium, so nothing is downloaded at run time)
# and PostgreSQL (the second log store). Installs what is missing when it can, else says how.
set -e
missing=""
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing="$missing chromium"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
{ [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ]; } || missing="$missing postgresql"
[ -z "$missing" ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
	echo "installing system packages:$missing"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null \
		|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q --no-install-recommends $missing >/dev/null; }
	exit 0
fi
echo "edgetrust needs these system packages:$missing" >&2
echo "install them with:  sudo apt-get install$missing   (Debian/Ubuntu), then rerun make" >&2
exit 1
