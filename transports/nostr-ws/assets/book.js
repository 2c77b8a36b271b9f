// The civkit board's live order book. It reads the board's NIP-11 document,
// then keeps one websocket open on the same board: its policy (kind 10383),
// its open orders (kind 38383, NIP-69) and their cancellations (NIP-09
// deletions), and its notarized rounds (kind 30384). Everything an event
// carries is shown as text, never as markup: events come from strangers.
"use strict";

(() => {
  const ORDER = 38383;
  const POLICY = 10383;
  const ROUND = 30384;
  const DELETION = 5;
  const MAX_ORDERS = 2000; // orders kept in memory; the oldest go first
  const MAX_DELETED = 10000; // cancellations remembered; the first seen go first

  const $ = (id) => document.getElementById(id);
  const orders = new Map(); // address -> newest event
  const deleted = new Map(); // address -> created_at of the newest deletion
  let selected = null; // address shown in the details
  let pubkey = null;
  let latestRound = null;
  let socket = null;
  let retry = 1000;

  const now = () => Math.floor(Date.now() / 1000);
  const tag = (event, name) => {
    const t = event.tags.find((t) => Array.isArray(t) && t[0] === name);
    return t && typeof t[1] === "string" ? t[1] : null;
  };
  const tagValues = (event, name) => {
    const t = event.tags.find((t) => Array.isArray(t) && t[0] === name);
    return t ? t.slice(1).filter((v) => typeof v === "string") : [];
  };
  const addressOf = (event) => `${ORDER}:${event.pubkey}:${tag(event, "d") || ""}`;

  function text(el, value) {
    el.textContent = value === null || value === undefined ? "" : String(value);
    return el;
  }

  function fill(dl, pairs) {
    dl.replaceChildren();
    for (const [key, value] of pairs) {
      if (value === null || value === undefined || value === "") continue;
      if (Array.isArray(value) && value.length === 0) continue;
      dl.append(text(document.createElement("dt"), key));
      const dd = document.createElement("dd");
      const values = Array.isArray(value) ? value : [value];
      values.forEach((v, i) => {
        if (i > 0) dd.append(document.createElement("br"));
        dd.append(text(document.createElement("code"), v));
      });
      dl.append(dd);
    }
  }

  function relative(ts) {
    const s = ts - now();
    if (s <= 0) return "now";
    if (s < 3600) return `in ${Math.ceil(s / 60)} min`;
    if (s < 86400) return `in ${Math.round(s / 3600)} h`;
    return `in ${Math.round(s / 86400)} d`;
  }

  // An order is shown while it is pending and neither expired nor cancelled.
  function open(event) {
    if (tag(event, "s") !== "pending") return false;
    const expiresAt = Number(tag(event, "expires_at"));
    const expiration = Number(tag(event, "expiration"));
    if (expiresAt && expiresAt <= now()) return false;
    if (expiration && expiration <= now()) return false;
    const gone = deleted.get(addressOf(event));
    return gone === undefined || gone < event.created_at;
  }

  function matches(event) {
    const side = $("side").value;
    const currency = $("currency").value;
    const method = $("method").value;
    if (side && tag(event, "k") !== side) return false;
    if (currency && tag(event, "f") !== currency) return false;
    if (method && !tagValues(event, "pm").some((m) => m.toLowerCase() === method)) return false;
    return true;
  }

  function refreshChoices(select, values) {
    const keep = select.value;
    const have = new Set([...select.options].map((o) => o.value));
    for (const v of [...values].sort()) {
      if (!have.has(v)) {
        const option = text(document.createElement("option"), v);
        option.value = v;
        select.append(option);
      }
    }
    select.value = keep;
  }

  function amount(event) {
    const fa = tagValues(event, "fa");
    const currency = tag(event, "f") || "";
    const sats = Number(tag(event, "amt") || 0);
    const fiat = fa.length > 1 ? `${fa[0]}–${fa[1]}` : fa[0] || "?";
    return [`${fiat} ${currency}`, sats > 0 ? `${sats} sats` : `market ${tag(event, "premium") || "0"}%`];
  }

  function render() {
    const shown = [...orders.values()].filter(open);
    refreshChoices($("currency"), new Set(shown.map((e) => tag(e, "f")).filter(Boolean)));
    refreshChoices($("method"), new Set(shown.flatMap((e) => tagValues(e, "pm").map((m) => m.toLowerCase()))));
    const rows = shown.filter(matches).sort((a, b) => b.created_at - a.created_at);
    const body = $("orders").tBodies[0];
    body.replaceChildren();
    for (const event of rows) {
      const tr = document.createElement("tr");
      const address = addressOf(event);
      tr.dataset.address = address;
      tr.dataset.id = event.id;
      const side = tag(event, "k") || "?";
      const [fiat, price] = amount(event);
      const sideCell = text(document.createElement("td"), side);
      sideCell.className = `side-${side}`;
      tr.append(
        sideCell,
        text(document.createElement("td"), fiat),
        text(document.createElement("td"), price),
        text(document.createElement("td"), tagValues(event, "pm").join(", ")),
        text(document.createElement("td"), tag(event, "name") || `${event.pubkey.slice(0, 8)}…`),
        text(document.createElement("td"), relative(Number(tag(event, "expires_at")) || 0)),
      );
      if (address === selected) tr.className = "selected";
      tr.addEventListener("click", () => {
        selected = address;
        render();
      });
      body.append(tr);
    }
    text($("count"), `${rows.length} of ${shown.length} open orders`);
    $("empty").hidden = rows.length > 0;
    showDetails(selected && orders.get(selected));
  }

  function showDetails(event) {
    const box = $("details");
    if (!event || !open(event)) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    text($("detail-id"), tag(event, "d"));
    const [fiat, price] = amount(event);
    fill($("detail-fields"), [
      ["side", tag(event, "k")],
      ["amount", fiat],
      ["price", price],
      ["payment methods", tagValues(event, "pm")],
      ["network", `${tag(event, "network") || "?"} / ${tag(event, "layer") || "?"}`],
      ["maker", tag(event, "name")],
      ["maker key", event.pubkey],
      ["stake key", tag(event, "stake")],
      ["expires", new Date((Number(tag(event, "expires_at")) || 0) * 1000).toISOString()],
      ["event id", event.id],
    ]);
    const offer = tag(event, "bolt12");
    $("offer-box").hidden = !offer;
    if (offer && $("offer").textContent !== offer) {
      text($("offer"), offer);
      text($("copied"), "");
      try {
        civkitQr.render($("offer-qr"), offer, 4);
      } catch (e) {
        text($("copied"), `no QR code: ${e.message}`);
      }
    }
  }

  function onOrder(event) {
    const address = addressOf(event);
    const old = orders.get(address);
    if (old && (old.created_at > event.created_at || old.id === event.id)) return;
    orders.set(address, event);
    if (orders.size > MAX_ORDERS) {
      const oldest = [...orders.entries()].sort((a, b) => a[1].created_at - b[1].created_at)[0];
      orders.delete(oldest[0]);
    }
  }

  function forget(address, at) {
    deleted.delete(address);
    deleted.set(address, at);
    if (deleted.size > MAX_DELETED) deleted.delete(deleted.keys().next().value);
  }

  function onDeletion(event) {
    for (const t of event.tags) {
      if (!Array.isArray(t) || t[0] !== "a" || typeof t[1] !== "string") continue;
      const [kind, author] = t[1].split(":");
      // Only the order's own maker can withdraw it.
      if (kind === String(ORDER) && author === event.pubkey) {
        forget(t[1], Math.max(deleted.get(t[1]) || 0, event.created_at));
      }
    }
    for (const t of event.tags) {
      if (Array.isArray(t) && t[0] === "e") {
        for (const [address, order] of orders) {
          if (order.id === t[1] && order.pubkey === event.pubkey) {
            forget(address, Math.max(deleted.get(address) || 0, event.created_at));
          }
        }
      }
    }
  }

  function onPolicy(event) {
    let policy;
    try {
      policy = JSON.parse(event.content);
    } catch {
      return;
    }
    showEndpoints(policy.endpoints || {});
  }

  function showEndpoints(endpoints) {
    const list = (v) => (Array.isArray(v) ? v.filter((x) => typeof x === "string") : []);
    const websocket = list(endpoints.websocket);
    const lightning = list(endpoints.lightning);
    const onionServices = [...websocket, ...lightning].filter((u) => /\.onion(:|\/|$)/.test(u));
    fill($("endpoints"), [
      ["websocket", websocket],
      ["lightning", lightning],
      ["onion messages", list(endpoints.onion).map((p) => `${p.slice(0, 24)}… (${p.length / 2} bytes)`)],
      [".onion", onionServices],
    ]);
  }

  function onRound(event) {
    let round;
    try {
      round = JSON.parse(event.content);
    } catch {
      return;
    }
    const number = round && round.round && Number(round.round.number);
    if (!Number.isFinite(number)) return;
    if (latestRound && latestRound.number > number && latestRound.attested) return;
    const attestation = round.attestation;
    if (!attestation && latestRound && latestRound.attested) return;
    latestRound = { number, attested: Boolean(attestation) };
    $("notary").hidden = false;
    fill($("notary-fields"), [
      ["last round", `${number} (${(round.round.events || []).length} events)`],
      ["commitment", round.round.commitment],
      ["attested by", attestation ? `Mainstay, txid ${attestation.txid}` : "not attested yet"],
      ["merkle root", attestation && attestation.merkle_root],
    ]);
  }

  function onEvent(sub, event) {
    if (!event || typeof event !== "object" || !Array.isArray(event.tags)) return;
    if (event.kind === ORDER) onOrder(event);
    else if (event.kind === DELETION) onDeletion(event);
    else if (event.kind === POLICY && event.pubkey === pubkey) onPolicy(event);
    else if (event.kind === ROUND && event.pubkey === pubkey) onRound(event);
    render();
  }

  function setStatus(state) {
    const el = $("status");
    el.dataset.state = state;
    text(el, state);
  }

  function connect(url) {
    setStatus(socket ? "reconnecting" : "connecting");
    socket = new WebSocket(url);
    socket.addEventListener("open", () => {
      retry = 1000;
      const since = now() - 7 * 86400;
      socket.send(JSON.stringify(["REQ", "orders", { kinds: [ORDER], limit: 500 }, { kinds: [DELETION], since, limit: 500 }]));
      if (pubkey) {
        socket.send(JSON.stringify(["REQ", "board", { kinds: [POLICY], authors: [pubkey], limit: 1 }, { kinds: [ROUND], authors: [pubkey], limit: 5 }]));
      }
    });
    socket.addEventListener("message", (m) => {
      let msg;
      try {
        msg = JSON.parse(m.data);
      } catch {
        return;
      }
      if (!Array.isArray(msg)) return;
      if (msg[0] === "EVENT") onEvent(msg[1], msg[2]);
      else if (msg[0] === "EOSE" && msg[1] === "orders") setStatus("live");
    });
    socket.addEventListener("close", () => {
      setStatus("reconnecting");
      setTimeout(() => connect(url), retry);
      retry = Math.min(retry * 2, 30000);
    });
  }

  async function start() {
    const base = new URL(".", location.href);
    const wsUrl = `${base.protocol === "https:" ? "wss:" : "ws:"}//${base.host}${base.pathname}`;
    try {
      const answer = await fetch(base, { headers: { Accept: "application/nostr+json" } });
      const info = await answer.json();
      text($("board-name"), info.name || "civkit board");
      document.title = info.name || "civkit board";
      text($("board-description"), info.description);
      if (typeof info.pubkey === "string" && /^[0-9a-f]{64}$/.test(info.pubkey)) {
        pubkey = info.pubkey;
        text($("board-pubkey"), pubkey);
      }
      const board = info.civkit_board || {};
      const any = (v) => (Array.isArray(v) && v.length ? v.join(", ") : "any");
      fill($("policy"), [
        ["currencies", any(board.currencies)],
        ["networks", any(board.networks)],
        ["layers", any(board.layers)],
        ["amount", `${board.min_sats || 0}–${board.max_sats ? `${board.max_sats} sats` : "any"}`],
        ["order lifetime", board.max_order_lifetime_secs ? `at most ${Math.round(board.max_order_lifetime_secs / 3600)} h` : null],
        ["open orders per maker", board.max_open_orders_per_author],
        ["BOLT12 offer", board.require_bolt12 ? "required" : "optional"],
        ["credentials", info.civkit_credentials ? `${info.civkit_credentials.per_event} per order` : null],
        ["notarized", info.civkit_notary ? `Mainstay slot ${info.civkit_notary.position}` : "no"],
      ]);
      showEndpoints({ websocket: [wsUrl] });
    } catch (e) {
      text($("board-description"), `could not read the board's NIP-11 document: ${e.message}`);
    }
    for (const id of ["side", "currency", "method"]) $(id).addEventListener("change", render);
    $("copy-offer").addEventListener("click", async () => {
      const offer = $("offer").textContent;
      try {
        await navigator.clipboard.writeText(offer);
        text($("copied"), "copied");
      } catch {
        const range = document.createRange();
        range.selectNodeContents($("offer"));
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        text($("copied"), "selected: press Ctrl+C");
      }
    });
    setInterval(render, 30000); // expiry times move
    connect(wsUrl);
  }

  start();
})();
