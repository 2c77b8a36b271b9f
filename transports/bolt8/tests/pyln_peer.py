"""A BOLT8 peer built on Core Lightning's pyln-proto, used by tests/pyln.rs.

usage: pyln_peer.py <node_id hex> <host:port> <mode> [arg]
Prints one JSON object with what happened. PYLN_SECRET (hex) sets this
peer's node key, so a board can be configured to import from it.
"""
import json
import os
import socket
import struct
import sys

from pyln.proto.wire import PrivateKey, connect

CLIENT_MSG, RELAY_MSG = 32769, 32771

node_id = bytes.fromhex(sys.argv[1])
host, port = sys.argv[2].rsplit(":", 1)
mode = sys.argv[3]
arg = sys.argv[4] if len(sys.argv) > 4 else None

secret = bytes.fromhex(os.environ["PYLN_SECRET"]) if "PYLN_SECRET" in os.environ else os.urandom(32)
lc = connect(PrivateKey(secret), node_id, host, int(port))
lc.connection.settimeout(10)


def send(msg_type, payload=b""):
    lc.send_message(struct.pack(">H", msg_type) + payload)


class TimedOut(Exception):
    pass


def recv():
    """Next message as (type, payload); answers pings. None when closed."""
    while True:
        try:
            m = lc.read_message()
        except socket.timeout:
            raise TimedOut()
        except Exception:
            return None
        if not m:
            return None
        t = struct.unpack(">H", m[:2])[0]
        if t == 18:  # ping -> pong with the requested number of bytes
            n = struct.unpack(">H", m[2:4])[0]
            send(19, struct.pack(">H", n) + b"\x00" * n)
            continue
        return t, m[2:]


def closed_after(payload_sender):
    """True when the node closes the connection; False if it stays open."""
    payload_sender()
    while True:
        try:
            r = recv()
        except TimedOut:
            return False
        if r is None:
            return True
        # anything else (warnings, errors) before the close is fine


first = recv()
assert first is not None and first[0] == 16, f"expected init, got {first}"
if mode == "gossip":
    # init with the optional feature bit 729 ("send me credential and
    # service policies"): 92 bytes, big-endian, bit 1 of the first byte.
    feats = bytes([0x02]) + bytes(91)
    send(16, struct.pack(">HH", 0, len(feats)) + feats)
else:
    send(16, struct.pack(">HH", 0, 0))  # init: no global features, no features

out = {"init": True}
if mode == "req":
    send(CLIENT_MSG, json.dumps(["REQ", "py", json.loads(arg)]).encode())
    events, eose = [], False
    while not eose:
        r = recv()
        if r is None:
            break
        t, payload = r
        if t != RELAY_MSG:
            continue
        msg = json.loads(payload)
        if msg[0] == "EVENT" and msg[1] == "py":
            events.append(msg[2]["id"])
        elif msg[0] == "EOSE" and msg[1] == "py":
            eose = True
    out.update(events=events, eose=eose)
elif mode == "publish":
    event = json.loads(arg)
    send(CLIENT_MSG, json.dumps(["EVENT", event]).encode())
    while True:
        r = recv()
        if r is None:
            out["closed"] = True
            break
        t, payload = r
        if t == RELAY_MSG:
            msg = json.loads(payload)
            if msg[0] == "OK" and msg[1] == event["id"]:
                out.update(ok=msg[2], message=msg[3])
                break
elif mode == "open-channel":
    # A well-formed open_channel (type 32): every point is the generator G.
    g = bytes.fromhex("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
    chain = bytes.fromhex("6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000")
    temp_id = os.urandom(32)
    body = chain + temp_id + struct.pack(">QQQQQQIHH", 100000, 0, 546, 100000000, 1000, 1, 253, 144, 483)
    body += g * 6 + b"\x01"
    send(32, body)
    answer = None
    while True:
        r = recv()
        if r is None:
            break
        t, payload = r
        if t in (1, 17):  # warning or error
            answer = {"type": t, "channel_id": payload[:32].hex(), "text": payload[34:].decode(errors="replace")}
            break
    out["answer"] = answer
    out["temp_id"] = temp_id.hex()
    # The connection stays usable for NIP-01 afterwards.
    send(CLIENT_MSG, json.dumps(["REQ", "after", {"limit": 1}]).encode())
    out["still_served"] = False
    while True:
        r = recv()
        if r is None:
            break
        t, payload = r
        if t == RELAY_MSG and json.loads(payload)[0] == "EOSE":
            out["still_served"] = True
            break
elif mode == "hostile-relay":
    # Act as the relay the board imports from: wait for its REQ, then answer
    # with every event of `arg` at once, on the board's subscription id (or
    # the one an entry names with {"sub": ..., "event": ...}), then EOSE.
    req = None
    while req is None:
        r = recv()
        if r is None:
            break
        t, payload = r
        if t == CLIENT_MSG:
            msg = json.loads(payload)
            if msg[0] == "REQ":
                req = msg
    out["req"] = req
    if req is not None:
        for item in json.loads(arg):
            sub, ev = (item["sub"], item["event"]) if "sub" in item else (req[1], item)
            send(RELAY_MSG, json.dumps(["EVENT", sub, ev]).encode())
        send(RELAY_MSG, json.dumps(["EOSE", req[1]]).encode())
        # Stay connected while the board works through them.
        lc.connection.settimeout(5)
        try:
            while recv() is not None:
                pass
        except TimedOut:
            pass
elif mode == "stall":
    # Subscribe, then stop reading for 8 s; report whether the board closed
    # the connection meanwhile.
    send(CLIENT_MSG, json.dumps(["REQ", "py", json.loads(arg)]).encode())
    import time
    time.sleep(8)
    lc.connection.settimeout(2)
    closed = False
    try:
        while True:
            if recv() is None:
                closed = True
                break
    except TimedOut:
        pass
    except OSError:  # the board closed it (broken pipe, reset)
        closed = True
    out["closed"] = closed
elif mode == "oversized":
    out["closed"] = closed_after(lambda: send(CLIENT_MSG, b"[" + b" " * 65400 + b"]"))
elif mode == "badutf8":
    out["closed"] = closed_after(lambda: send(CLIENT_MSG, b"\xff\xfe\xfd"))
elif mode == "unknown-even":
    out["closed"] = closed_after(lambda: send(32770, b"hello"))
elif mode == "garbage":
    out["closed"] = closed_after(lambda: lc.connection.send(os.urandom(200)))
elif mode == "gossip":
    # Send the policy messages of `arg` ({"send": [{"type", "body" hex}],
    # "wait": seconds}), then read every credential_policy (37563) and
    # service_policy (37564) for `wait` seconds, parsed from the layout in
    # docs/PROTOCOL.md (the spec's fields, plus node_id after the signature)
    # and checked with coincurve: an ECDSA signature by node_id over the
    # double SHA-256 of everything after the signature.
    import hashlib
    import time
    import coincurve

    spec = json.loads(arg)
    for m in spec.get("send", []):
        send(m["type"], bytes.fromhex(m["body"]))

    def take(b, n):
        if len(b) < n:
            raise ValueError("short")
        return b[:n], b[n:]

    def parse(t, body):
        sig, rest = take(body, 64)
        signed = rest
        node_id, rest = take(rest, 33)
        ts, rest = take(rest, 4)
        out = {"type": t, "node_id": node_id.hex(), "timestamp": struct.unpack(">I", ts)[0]}
        if t == 37563:
            flen, rest = take(rest, 2)
            key, rest = take(rest, 33)
            feats, rest = take(rest, struct.unpack(">H", flen)[0])
            clen, rest = take(rest, 2)
            cfeats, rest = take(rest, struct.unpack(">H", clen)[0])
            ratio, rest = take(rest, 4)
            out.update(issuance_pubkey=key.hex(), assetproof_features=feats.hex(),
                       credentials_features=cfeats.hex(), asset_to_credential=struct.unpack(">I", ratio)[0])
        else:
            plen, rest = take(rest, 2)
            keys, rest = take(rest, struct.unpack(">H", plen)[0])
            slen, rest = take(rest, 2)
            ids, rest = take(rest, struct.unpack(">H", slen)[0])
            ratio, rest = take(rest, 4)
            out.update(pubkeys=[keys[i:i + 33].hex() for i in range(0, len(keys), 33)],
                       service_ids=[struct.unpack(">H", ids[i:i + 2])[0] for i in range(0, len(ids), 2)],
                       credentials_to_service=struct.unpack(">I", ratio)[0])
        exp, rest = take(rest, 4)
        out["expiration_height"] = struct.unpack(">I", exp)[0]
        out["trailing"] = len(rest)
        digest = hashlib.sha256(hashlib.sha256(signed).digest()).digest()
        der = coincurve.ecdsa.cdata_to_der(coincurve.ecdsa.deserialize_compact(sig))
        out["valid"] = coincurve.PublicKey(node_id).verify(der, digest, hasher=None)
        return out

    got = []
    deadline = time.time() + spec.get("wait", 3)
    while time.time() < deadline:
        lc.connection.settimeout(max(0.1, deadline - time.time()))
        try:
            r = recv()
        except TimedOut:
            break
        if r is None:
            out["closed"] = True
            break
        t, payload = r
        if t in (37563, 37564):
            got.append(parse(t, payload))
    out["policies"] = got
else:
    raise SystemExit(f"unknown mode {mode}")
print(json.dumps(out))
