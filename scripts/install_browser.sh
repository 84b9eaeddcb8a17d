#!/usr/bin/env bash
# Install the headless browser that the sei app tests drive (Debian's chromium and its driver), when
# it is missing and apt can install it (root, apt-get present). Otherwise say why and carry on: the
# browser tests then skip, naming the reason. Never fails the caller.
set -uo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "sei: no chromium/chromedriver and no root apt-get to install them: the browser tests will be skipped" >&2
  exit 0
fi
echo "sei: installing chromium and chromium-driver for the browser tests (once)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; } >/tmp/sei-install-browser.log 2>&1; then
  echo "sei: installing chromium failed (see /tmp/sei-install-browser.log): the browser tests will be skipped" >&2
fi
exit 0
