// The order book page of a running board, in Debian's headless Chromium
// driven by Playwright. node/tests/orderbook.rs starts the board and runs
// this script; it exits non-zero, saying why, when a check fails.
//
// Environment: BOARD_HTTP (the page), BOARD_WS, BOARD_NAME, SAMPLE (the
// civkit-sample binary), SAMPLE_HOME (a maker home with a key), OFFER (a
// BOLT12 offer), HOSTILE (the name of an order already published, which
// carries markup), SCREENSHOT (where to save a picture; optional).
import { spawn } from "node:child_process";
import { chromium } from "playwright-core";
import jsQR from "jsqr";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const BOARD_HTTP = env("BOARD_HTTP");
const OFFER = env("OFFER");
const HOSTILE = env("HOSTILE");
const ORDER_ID = "book-1";
const row = `tr[data-address$=":${ORDER_ID}"]`;

const problems = [];
const check = (ok, what) => {
  if (!ok) problems.push(what);
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
};

// Run civkit-sample; resolve with the time its board accepted the event.
function sample(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(env("SAMPLE"), ["--home", env("SAMPLE_HOME"), "--board", env("BOARD_WS"), ...args]);
    let out = "";
    let acceptedAt = null;
    child.stdout.on("data", (chunk) => {
      out += chunk;
      if (acceptedAt === null && out.includes("accepted in")) acceptedAt = Date.now();
    });
    child.stderr.on("data", (chunk) => (out += chunk));
    child.on("close", (code) => {
      if (code === 0 && acceptedAt !== null) resolve(acceptedAt);
      else reject(new Error(`civkit-sample ${args.join(" ")} failed (${code}): ${out}`));
    });
  });
}

// Milliseconds from `since` until `condition` holds on the page (at most 5 s).
async function timeUntil(page, since, condition, arg) {
  await page.waitForFunction(condition, arg, { timeout: 5000, polling: 20 });
  return Date.now() - since;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: new URL(BOARD_HTTP).origin });
  const page = await context.newPage();
  const errors = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(e.message));
  // Anything but the board itself is a fetch the page must not make.
  const elsewhere = [];
  page.on("request", (r) => {
    const url = new URL(r.url());
    if (url.protocol !== "data:" && url.host !== new URL(BOARD_HTTP).host) elsewhere.push(r.url());
  });

  await page.goto(BOARD_HTTP);
  await page.waitForSelector('#status[data-state="live"]', { timeout: 10000 });
  check((await page.textContent("#board-name")) === env("BOARD_NAME"), "the board's name is shown");
  check((await page.textContent("#policy")).includes("EUR"), "the policy is shown");
  check((await page.textContent("#endpoints")).includes(env("BOARD_WS").replace(/\/$/, "")), "the websocket endpoint is shown");

  // The notary's last attestation.
  await page.waitForSelector("#notary:not([hidden])", { timeout: 5000 }).catch(() => {});
  const notary = (await page.textContent("#notary")) || "";
  check(notary.includes("last round0") && notary.includes("Mainstay, txid"), `the last attestation is shown (${notary.trim()})`);

  // An order whose name is markup is shown as text, and runs nothing.
  check((await page.textContent("#orders")).includes(HOSTILE), "a hostile order's name is shown as text");
  check((await page.evaluate(() => window.__pwned)) === undefined, "the hostile order's markup did not run");

  // A new order appears within one second of the board accepting it.
  const accepted = await sample(["order", "create", "--side", "sell", "--currency", "EUR", "--fiat-amount", "10", "--payment-method", "sepa", "--id", ORDER_ID, "--name", "Alice", "--offer", OFFER]);
  const appeared = await timeUntil(page, accepted, (sel) => document.querySelector(sel) !== null, row);
  console.log(`     appeared ${appeared} ms after the board accepted it`);
  check(appeared < 1000, `the order appears within one second (${appeared} ms)`);

  // Filters.
  await page.selectOption("#side", "buy");
  check((await page.$(row)) === null, "side = buy hides the sell order");
  await page.selectOption("#side", "sell");
  check((await page.$(row)) !== null, "side = sell shows it");
  await page.selectOption("#currency", "EUR");
  check((await page.$(row)) !== null, "currency = EUR shows it");
  check((await page.textContent("#orders")).includes(HOSTILE) === false, "currency = EUR hides the NGN order");
  await page.selectOption("#currency", "");
  await page.selectOption("#method", "cash");
  check((await page.$(row)) === null, "payment method = cash hides the SEPA order");
  await page.selectOption("#method", "sepa");
  check((await page.$(row)) !== null, "payment method = sepa shows it");
  await page.selectOption("#method", "");
  await page.selectOption("#side", "");

  // Details: the offer, copied and drawn as a QR code that decodes to it.
  await page.click(row);
  await page.waitForSelector("#details:not([hidden])");
  check((await page.textContent("#offer")) === OFFER, "the details show the BOLT12 offer");
  await page.click("#copy-offer");
  await page.waitForFunction(() => document.getElementById("copied").textContent === "copied");
  check((await page.evaluate(() => navigator.clipboard.readText())) === OFFER, "the copy button puts the offer on the clipboard");
  const image = await page.evaluate(() => {
    const c = document.getElementById("offer-qr");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height);
    return { width: d.width, height: d.height, data: Array.from(d.data) };
  });
  const decoded = jsQR(Uint8ClampedArray.from(image.data), image.width, image.height);
  check(decoded !== null && decoded.data === OFFER, "the QR code decodes (jsQR) to the offer");

  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });

  // A cancel removes it within one second.
  const cancelled = await sample(["order", "cancel", ORDER_ID]);
  const removed = await timeUntil(page, cancelled, (sel) => document.querySelector(sel) === null, row);
  console.log(`     removed ${removed} ms after the board accepted the cancel`);
  check(removed < 1000, `a cancel removes the order within one second (${removed} ms)`);
  check((await page.isHidden("#details")), "the cancelled order's details close");

  check(errors.length === 0, `no console errors (${errors.join(" | ")})`);
  check(elsewhere.length === 0, `no request leaves the board (${elsewhere.join(" ")})`);
} finally {
  await browser.close();
}
if (problems.length) {
  console.log(`${problems.length} check(s) failed`);
  process.exit(1);
}
