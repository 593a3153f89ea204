# The test runner of palm's evaluation sandbox: runs the data set's tests in a process of
# its own (another user than the program's, not dumpable, so the program can neither
# trace it, signal it nor open its descriptors). The tests reach the program's functions
# only through remote calls that return plain data (sandbox_wire.py). The verdict goes to
# descriptor 3, which only this process holds; palm counts a pass only when "passed"
# arrives there and this process exits 0.
# send, recv, encode, decode: sandbox_wire.py, which palm places before this file
import builtins
import importlib
import json
import os
import sys

VERDICT, REQUESTS, REPLIES, READY = 3, 4, 5, 6
PR_SET_DUMPABLE = 4

with open("job.json", encoding="utf-8") as f:
    job = json.load(f)
if job["same_user"]:  # without root the program runs as our user: close /proc/self to it
    import ctypes
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0)")
try:
    os.write(READY, b"r")  # without root palm starts the program only now
except BrokenPipeError:
    pass  # as root nobody waits for it
os.close(READY)

remotes = {}


def remote_of(h):
    if h not in remotes:
        remotes[h] = Remote(h)
    return remotes[h]


def handle_of(x):
    if isinstance(x, Remote):
        return object.__getattribute__(x, "_palm_h")
    raise TypeError(f"a {type(x).__name__} cannot be passed to the program under test")


def rpc(request):
    send(REQUESTS, request)
    r = recv(REPLIES)
    if type(r) is not dict:
        raise ValueError("malformed reply from the program under test")
    if "ok" in r:
        return decode(r["ok"], remote_of)
    if "stop" in r:
        raise StopIteration
    err = r.get("error")
    if type(err) is list and len(err) == 2 and all(type(s) is str for s in err):
        name, message = err
        kind = getattr(builtins, name, None)
        if isinstance(kind, type) and issubclass(kind, Exception):
            raise kind(message)
        raise RuntimeError(f"{name}: {message}")
    raise ValueError("malformed reply from the program under test")


def args_of(args, kwargs):
    return {"args": encode(list(args), handle_of), "kwargs": encode(dict(kwargs), handle_of)}


class Remote:
    """An object that stays in the program's process: no == of its own (identity only)."""
    __slots__ = ("_palm_h",)

    def __init__(self, h):
        object.__setattr__(self, "_palm_h", h)

    def _h(self):
        return object.__getattribute__(self, "_palm_h")

    def __call__(self, *args, **kwargs):
        return rpc({"op": "call", "h": self._h(), **args_of(args, kwargs)})

    def __getattr__(self, name):
        return rpc({"op": "getattr", "h": self._h(), "name": name})

    def __setattr__(self, name, value):
        rpc({"op": "setattr", "h": self._h(), "name": name, "value": encode(value, handle_of)})

    def __iter__(self):
        return rpc({"op": "iter", "h": self._h()})

    def __next__(self):
        return rpc({"op": "next", "h": self._h()})

    def __len__(self):
        return rpc({"op": "len", "h": self._h()})

    def __getitem__(self, key):
        return rpc({"op": "getitem", "h": self._h(), "key": encode(key, handle_of)})

    def __repr__(self):
        return rpc({"op": "repr", "h": self._h()})


class RemoteFunction:
    """A top-level callable of the program, called by name."""
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __call__(self, *args, **kwargs):
        return rpc({"op": "call", "name": self.name, **args_of(args, kwargs)})

    def __repr__(self):
        return f"<function {self.name} of the program under test>"


hello = recv(REPLIES)
callables = hello.get("callables") if type(hello) is dict else None
modules = hello.get("modules") if type(hello) is dict else None
if (type(callables) is not list or not all(type(n) is str for n in callables) or type(modules) is not dict
        or not all(type(m) is str for m in modules.values())):
    raise ValueError("malformed first message from the program under test")

namespace = {"__name__": "__main__", "__builtins__": builtins}
tests = compile(job["tests"], "tests.py", "exec")


def names_used(code):  # every global name the tests' code (and the functions in it) can load
    found = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, type(code)):
            found |= names_used(c)
    return found


referenced = names_used(tests)
for name, module in modules.items():  # e.g. a test's math.isclose after the solution's import math
    if name in referenced:
        try:
            namespace[name] = importlib.import_module(module)
        except Exception:  # noqa: BLE001 - a module the runner lacks: the tests will say so
            pass
try:
    exec(compile(job["prefix"], "prompt.py", "exec"), namespace)
except Exception as e:  # noqa: BLE001 - the tests need only the helpers that did get defined
    print(f"palm sandbox: the prompt does not run on its own ({type(e).__name__}: {e})", file=sys.stderr)
# Explicit names (HumanEval: the entry point), or else every name the tests use that the
# program defines; never a built-in's name (a program's own `set` or `len` would
# otherwise answer for both sides of a test's comparison).
wanted = job["calls"] or sorted(n for n in referenced if n in callables and not hasattr(builtins, n))
for name in wanted:
    if name in callables:
        namespace[name] = RemoteFunction(name)
    else:
        namespace.pop(name, None)  # not the prompt's docstring-only def: the program must define it
exec(tests, namespace)
os.write(VERDICT, b"passed\n")
