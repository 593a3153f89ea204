# The program under test's own process in palm's evaluation sandbox: runs the model's
# program (prompt + completion) as __main__, then answers the test runner's requests
# (call a function, read or set an attribute, iterate) until the runner closes the pipe.
# Everything here is within the program's reach; nothing here decides a verdict.
import builtins
import sys
import types

# send, recv, encode, decode: sandbox_wire.py, which palm places before this file

REQUESTS, REPLIES = 3, 4
objects = {}


def handle_of(x):
    objects[id(x)] = x  # kept alive: the runner may use it again
    return id(x)


def object_of(h):
    return objects[h]


def reply(value):
    send(REPLIES, {"ok": encode(value, handle_of)})


namespace = {"__name__": "__main__", "__builtins__": builtins}
with open("program.py", encoding="utf-8") as f:
    source = f.read()
sys.argv = ["program.py"]
exec(compile(source, "program.py", "exec"), namespace)

send(REPLIES, {
    "callables": [n for n, v in namespace.items() if callable(v) and not n.startswith("__")],
    "modules": {n: v.__name__ for n, v in namespace.items()
                if isinstance(v, types.ModuleType) and not n.startswith("__")},
})
while True:
    try:
        req = recv(REQUESTS)
    except EOFError:
        break
    try:
        op = req["op"]
        if op == "call":
            target = namespace[req["name"]] if "name" in req else object_of(req["h"])
            args = decode(req["args"], object_of)
            kwargs = decode(req["kwargs"], object_of)
            reply(target(*args, **kwargs))
        elif op == "getattr":
            reply(getattr(object_of(req["h"]), req["name"]))
        elif op == "setattr":
            setattr(object_of(req["h"]), req["name"], decode(req["value"], object_of))
            reply(None)
        elif op == "iter":
            reply(iter(object_of(req["h"])))
        elif op == "next":
            try:
                reply(next(object_of(req["h"])))
            except StopIteration:
                send(REPLIES, {"stop": True})
        elif op == "len":
            reply(len(object_of(req["h"])))
        elif op == "getitem":
            reply(object_of(req["h"])[decode(req["key"], object_of)])
        elif op == "repr":
            reply(repr(object_of(req["h"])))
        else:
            raise ValueError(f"unknown request {op!r}")
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the tests
        send(REPLIES, {"error": [type(e).__name__, str(e)[:2000]]})
