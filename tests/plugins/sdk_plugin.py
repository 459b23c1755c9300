"""The echo plugin's behaviour, rebuilt on the SDK (``plugin_client.plugin``).

It answers the conformance checks exactly as ``echo_plugin.py`` does, and adds
references that exercise the SDK itself:

    value:<text> / lease:<n> / missing      as in echo_plugin.py
    unavailable / needs-credential          raise that error kind
    bad / other / unsupported               bad-reference (malformed), other, unsupported-capability
    raise                                   an unexpected exception (-> other; the process lives)
    print                                   a stray print() and a write to fd 1, then a reply
    crash / hang / slow:<ms> / env:<VAR>    exit(7) / never reply / sleep / a variable
    pid                                     the process id
    count:<lease>                           a counter, bumped per call, with that lease ("none": no lease)

``config["caps"]`` overrides the claimed capabilities; ``config["avail"]``
sets ``is_available``'s answer ("unavailable" or "needs-credential").
``delete("missing")`` answers bad-reference "not found".
"""

import os
import sys
import time

from plugin_client.plugin import (
    BadReference,
    Failure,
    NeedsCredential,
    NotFound,
    SecretSourcePlugin,
    Unavailable,
    Unsupported,
    serve,
)


class SdkEcho(SecretSourcePlugin):
    version = "sdk-echo-1.0"

    def __init__(self):
        self.store = {}
        self.counter = 0

    def init(self, source_name, config):
        super().init(source_name, config)
        if "caps" in config:
            return config["caps"], self.version
        return None

    def is_available(self):
        avail = self.config.get("avail")
        if avail == "unavailable":
            raise Unavailable("backend is down")
        if avail == "needs-credential":
            raise NeedsCredential("run 'vault login'")
        return True

    def get(self, reference):
        if reference.startswith("value:"):
            return reference[6:]
        if reference.startswith("lease:"):
            return "leased", int(reference[6:])
        if reference == "missing":
            raise NotFound(reference)
        if reference == "unavailable":
            raise Unavailable("backend is down")
        if reference == "needs-credential":
            raise NeedsCredential("run 'vault login'")
        if reference == "bad":
            raise BadReference(reference, "must look like a/b")
        if reference == "other":
            raise Failure("it went wrong")
        if reference == "unsupported":
            raise Unsupported("READ")
        if reference == "raise":
            raise RuntimeError("handler bug")
        if reference == "print":
            print("a stray print")
            os.write(1, b"a raw write to fd 1\n")
            return "printed"
        if reference == "crash":
            os._exit(7)
        if reference == "hang":
            time.sleep(3600)
        if reference.startswith("slow:"):
            time.sleep(int(reference[5:]) / 1000)
            return "slow"
        if reference.startswith("env:"):
            return os.environ.get(reference[4:], "<unset>")
        if reference == "pid":
            return str(os.getpid())
        if reference.startswith("count:"):
            self.counter += 1
            lease = reference[6:]
            return str(self.counter), None if lease == "none" else int(lease)
        return "value-of-" + reference

    def list(self):
        n = int(self.config.get("entries", 3))
        return ["ref-%d" % i for i in range(n)]

    def validate(self, reference):
        return not reference.startswith("bad")

    def put(self, reference, value):
        replaced = reference in self.store
        self.store[reference] = value.get_secret_value()
        return replaced

    def delete(self, reference):
        if reference == "missing":
            raise NotFound(reference)
        return self.store.pop(reference, None) is not None

    def key_material(self, purpose):
        return (purpose.encode() * 32)[:32]


if __name__ == "__main__":
    serve(SdkEcho)
    sys.stderr.write("sdk-echo: served, exiting\n")
