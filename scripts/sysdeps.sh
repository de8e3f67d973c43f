#!/usr/bin/env bash
# Install the Debian tools the test-suite shells out to, only if they are missing: curl + jq (the seeds' shell
# examples) and chromium (/usr/bin/chromium, the browser tests/test_web.py drives through Playwright).
set -euo pipefail
# node + npm: the openai npm SDK tests (tests/js) and the seeds' fetch example. tool -> Debian package:
declare -A package=([curl]=curl [jq]=jq [chromium]=chromium [node]=nodejs [npm]=npm)
need=()
for tool in curl jq chromium node npm; do command -v "$tool" >/dev/null 2>&1 || need+=("${package[$tool]}"); done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "warning: missing ${need[*]}; the tests that need them will be skipped (and fail under CI=true)" >&2
  [ "${CI:-}" != true ] || exit 1
fi
