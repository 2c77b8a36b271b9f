# Sourced by .ci/test: Debian's Chromium and the npm packages of
# tests/browser (playwright-core, which drives the system Chromium, and
# jsqr, which decodes the page's QR codes), for the order book's browser
# test (node/tests/orderbook.rs).
browser_install() {
  if [ ! -x /usr/bin/chromium ]; then
    echo "installing chromium from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  if [ ! -d tests/browser/node_modules ]; then
    echo "installing the browser test's npm packages" >&2
    npm ci --prefix tests/browser --silent --no-audit --no-fund
  fi
}
