"""A devboy-compatible secret-source plugin for the tests, written from PROTOCOL.md only.

It does not import plugin_client: it is a foreign plugin, as a third party
would write it (the standard library, ``json.dumps`` default spacing). The
reference passed to ``get`` selects a behaviour, so one script can play a
healthy plugin and every kind of broken one:

    value:<text>      reply with <text>          lease:<n>      reply with lease_seconds n
    missing           bad-reference not found    foreign-error  a plain JSON-RPC error
    unknown-kind      an unknown error kind      crash          exit(7) before replying
    hang              never reply                badid          reply with the wrong id
    garbage           a non-JSON line            partial        half a frame, then sleep
    huge:<n>          n bytes with no newline    stderr:<n>     n bytes on stderr, then reply
    close-stdout      close stdout, stay alive   dup            reply twice
    env:<VAR>         the variable's value       environ        all variable names
    fds               the fds it holds           exit-soon      reply, exit 50 ms later
    slow:<ms>         sleep, then reply          ignore-term    ignore SIGTERM from now on
    echo-after:<ms>:<text>  sleep <ms> (a float), then reply with <text>
    grandchild        fork a child that ignores SIGTERM; reply with its pid
    sigpipe           the SigIgn/SigBlk masks    extra          reply with unknown extra fields

``init`` behaves per ``config["init"]``: hang, crash, bad-source, refuse.
``config["caps"]`` sets the capability bits (default: all of 0x1ff).
"""

import base64
import json
import os
import signal
import sys
import time

store = {}


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def result(rid, res):
    send({"jsonrpc": "2.0", "id": rid, "result": res})


def error(rid, err):
    send({"jsonrpc": "2.0", "id": rid, "error": err})


def do_get(rid, ref):
    if ref.startswith("value:"):
        return result(rid, {"value": ref[6:], "lease_seconds": None})
    if ref.startswith("lease:"):
        return result(rid, {"value": "leased", "lease_seconds": int(ref[6:])})
    if ref == "missing":
        return error(rid, {"kind": "bad-reference", "reference": ref, "reason": "not found"})
    if ref == "foreign-error":
        return send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "no such thing"}})
    if ref == "unknown-kind":
        return error(rid, {"kind": "exploded", "detail": "boom"})
    if ref == "crash":
        os._exit(7)
    if ref == "hang":
        time.sleep(3600)
    if ref == "badid":
        return result(rid + 1000, {"value": "x"})
    if ref == "garbage":
        sys.stdout.write("this is not json\n")
        return sys.stdout.flush()
    if ref == "partial":
        sys.stdout.write('{"jsonrpc": "2.0", "id": ')
        sys.stdout.flush()
        time.sleep(3600)
    if ref.startswith("huge:"):
        n = int(ref[5:])
        chunk = "x" * 65536
        while n > 0:
            sys.stdout.write(chunk[: min(n, 65536)])
            n -= 65536
        sys.stdout.flush()
        time.sleep(3600)
    if ref.startswith("stderr:"):
        n = int(ref[7:])
        line = ("e" * 99 + "\n").encode()
        buf = line * (n // 100 + 1)
        os.write(2, buf[:n]) if n < 65536 else sys.stderr.buffer.write(buf[:n])
        sys.stderr.flush()
        return result(rid, {"value": "logged"})
    if ref == "close-stdout":
        os.close(1)
        time.sleep(3600)
    if ref == "dup":
        result(rid, {"value": "one"})
        return result(rid, {"value": "two"})
    if ref.startswith("env:"):
        return result(rid, {"value": os.environ.get(ref[4:], "<unset>")})
    if ref == "environ":
        return result(rid, {"value": ",".join(sorted(os.environ))})
    if ref == "fds":
        return result(rid, {"value": ",".join(sorted(os.listdir("/proc/self/fd"), key=int))})
    if ref == "exit-soon":
        result(rid, {"value": "bye"})
        time.sleep(0.05)
        os._exit(0)
    if ref.startswith("echo-after:"):
        ms, text = ref[11:].split(":", 1)
        time.sleep(float(ms) / 1000)
        return result(rid, {"value": text})
    if ref.startswith("slow:"):
        time.sleep(int(ref[5:]) / 1000)
        return result(rid, {"value": "slow"})
    if ref == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return result(rid, {"value": "ignoring"})
    if ref == "grandchild":
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.close(0)
            os.close(1)
            time.sleep(3600)
            os._exit(0)
        return result(rid, {"value": str(pid)})
    if ref == "sigpipe":
        with open("/proc/self/status") as f:
            fields = dict(line.split(":\t", 1) for line in f if ":\t" in line)
        return result(rid, {"value": fields["SigIgn"].strip() + "/" + fields["SigBlk"].strip()})
    if ref == "extra":
        return result(rid, {"value": "x", "lease_seconds": None, "future_field": {"a": [1, 2]}})
    return result(rid, {"value": "value-of-" + ref})


def main():
    config = {}
    for raw in sys.stdin:
        req = json.loads(raw)
        rid, method, params = req["id"], req["method"], req.get("params")
        if method == "secret_source.init":
            config = params.get("config") or {}
            mode = config.get("init")
            if mode == "hang":
                time.sleep(3600)
            if mode == "crash":
                sys.stderr.write("init: crashing on purpose\n")
                sys.stderr.flush()
                os._exit(3)
            if mode == "refuse":
                error(rid, {"kind": "other", "detail": "bad config"})
                continue
            name = params["source_name"] if mode != "bad-source" else "someone-else"
            result(rid, {"source_name": name, "capabilities_bits": config.get("caps", 0x1FF),
                         "plugin_version": "echo-1.0"})
        elif method == "secret_source.is_available":
            assert params is None, "is_available must carry no params key"
            result(rid, {"status": "available", "detail": None})
        elif method == "secret_source.get":
            do_get(rid, params["reference"])
        elif method == "secret_source.list":
            assert params is None, "list must carry no params key"
            n = int(config.get("entries", 3))
            result(rid, {"entries": [{"reference": "ref-%d" % i, "display": None} for i in range(n)]})
        elif method == "secret_source.validate":
            result(rid, {"ok": not params["reference"].startswith("bad")})
        elif method == "secret_source.put":
            replaced = params["reference"] in store
            store[params["reference"]] = params["value"]
            result(rid, {"replaced": replaced})
        elif method == "secret_source.delete":
            result(rid, {"existed": store.pop(params["reference"], None) is not None})
        elif method == "secret_source.key_material":
            key = (params["purpose"].encode() * 32)[:32]
            result(rid, {"material_b64": base64.b64encode(key).decode()})
        else:
            error(rid, {"kind": "unsupported-capability", "capability": method})


if __name__ == "__main__":
    main()
