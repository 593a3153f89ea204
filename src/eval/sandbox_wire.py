# The values that cross between the program under test and the test runner (both sides
# of palm's evaluation sandbox include this file).
#
# Messages are 4-byte big-endian lengths followed by JSON. Values are plain data, tagged so
# that the runner rebuilds only built-in types: whatever the program returns, the tests
# compare built-in lists, ints and strings with the runner's own `==`, never an object of
# the program's. Anything else (an instance of the program's class, a generator) stays in
# the program's process and crosses as a handle ["h", id].
import builtins
import json
import os
import struct

MAX_MESSAGE = 64 << 20


def send(fd, obj):
    data = json.dumps(obj, allow_nan=True).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _read_exactly(fd, n):
    parts = []
    while n:
        b = os.read(fd, min(n, 1 << 20))
        if not b:
            raise EOFError("the other side of the sandbox closed its pipe")
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


def recv(fd):
    (n,) = struct.unpack(">I", _read_exactly(fd, 4))
    if n > MAX_MESSAGE:
        raise ValueError(f"sandbox message of {n} bytes (limit {MAX_MESSAGE})")
    return json.loads(_read_exactly(fd, n))


def encode(x, handle_of):
    """Plain data for x; a value of a subclass of a built-in type crosses as that type."""
    if x is None or type(x) is bool:
        return x
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, int):
        return ["i", format(int.__index__(x), "x")]
    if isinstance(x, float):
        return float.__float__(x)
    if isinstance(x, complex):
        return ["c", x.real, x.imag]
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, (bytes, bytearray)):
        return ["b", bytes(x).hex()]
    if isinstance(x, list):
        return ["l", [encode(v, handle_of) for v in list.__iter__(x)]]
    if isinstance(x, tuple):
        return ["t", [encode(v, handle_of) for v in tuple.__iter__(x)]]
    if isinstance(x, dict):
        return ["d", [[encode(k, handle_of), encode(v, handle_of)] for k, v in dict.items(x)]]
    if isinstance(x, frozenset):
        return ["f", [encode(v, handle_of) for v in frozenset.__iter__(x)]]
    if isinstance(x, set):
        return ["s", [encode(v, handle_of) for v in set.__iter__(x)]]
    if isinstance(x, type) and getattr(builtins, x.__name__, None) is x:
        return ["T", x.__name__]  # a built-in type as an argument: isinstance(e, int) (MBPP 533)
    return ["h", handle_of(x)]


def decode(x, object_of):
    """The strict inverse of encode: anything but the tags above is an error."""
    if x is None or type(x) is bool or type(x) is float or type(x) is str:
        return x
    if type(x) is not list or not x or type(x[0]) is not str:
        raise ValueError("malformed value from the sandbox")
    tag = x[0]
    if tag == "i" and len(x) == 2 and type(x[1]) is str:
        return int(x[1], 16)
    if tag == "c" and len(x) == 3 and type(x[1]) is float and type(x[2]) is float:
        return complex(x[1], x[2])
    if tag == "b" and len(x) == 2 and type(x[1]) is str:
        return bytes.fromhex(x[1])
    if tag == "T" and len(x) == 2 and type(x[1]) is str and isinstance(getattr(builtins, x[1], None), type):
        return getattr(builtins, x[1])
    if tag == "h" and len(x) == 2 and type(x[1]) is int:
        return object_of(x[1])
    if len(x) != 2 or type(x[1]) is not list:
        raise ValueError("malformed value from the sandbox")
    items = x[1]
    if tag == "l":
        return [decode(v, object_of) for v in items]
    if tag == "t":
        return tuple(decode(v, object_of) for v in items)
    if tag == "s":
        return {decode(v, object_of) for v in items}
    if tag == "f":
        return frozenset(decode(v, object_of) for v in items)
    if tag == "d":
        out = {}
        for kv in items:
            if type(kv) is not list or len(kv) != 2:
                raise ValueError("malformed value from the sandbox")
            out[decode(kv[0], object_of)] = decode(kv[1], object_of)
        return out
    raise ValueError("malformed value from the sandbox")
