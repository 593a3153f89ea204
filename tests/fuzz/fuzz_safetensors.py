#!/usr/bin/python3
# Corrupts a real palm model file in 8 ways (header bytes, truncation, the header length,
# JSON numbers, dtypes, the config, the metadata, data bytes) and loads each through
# `palm generate`: every load must either work (data bytes are only numbers) or fail with
# exit 1 and one line on stderr naming the problem. A crash, an abort, a hang or a stack
# of messages fails the test.
#   fuzz_safetensors.py PALM_BINARY [N] [SEED]
import json
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile

palm = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 96
random.seed(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
work = tempfile.mkdtemp(prefix="palm_fuzz_st_")


def run(*args, check=True):
    return subprocess.run([palm, *args], capture_output=True, timeout=120, check=check)


run("tokenizer", "train", "--input", "/usr/lib/python3.11/json/*.py", "--vocab-size", "500", "--out", f"{work}/tok")
run("init", "--preset", "tiny", "--seed", "3", "--tokenizer", f"{work}/tok", "--out", f"{work}/m.safetensors")
good = open(f"{work}/m.safetensors", "rb").read()
n = struct.unpack("<Q", good[:8])[0]
header, data = good[8:8 + n], good[8 + n:]


def framed(h):
    return struct.pack("<Q", len(h)) + h + data


def mutate(kind):
    b = bytearray(good)
    if kind == 0:  # random bytes in the header
        for _ in range(random.randint(1, 4)):
            b[8 + random.randrange(n)] = random.randrange(256)
    elif kind == 1:  # truncated anywhere
        b = b[:random.randrange(len(b))]
    elif kind == 2:  # the header length
        b[0:8] = struct.pack("<Q", random.choice([0, 1, n - 1, n + 1, len(b), 2**63, 2**64 - 1, random.randrange(2**40)]))
    elif kind == 3:  # a number of the header (offsets, shapes, config values)
        h = header.decode()
        m = random.choice(list(re.finditer(r"\d+", h)))
        v = random.choice(["0", "-1", "99999999999999999999", "1e9", "4294967296", str(int(m.group()) + 1)])
        b = bytearray(framed((h[:m.start()] + v + h[m.end():]).encode()))
    elif kind == 4:  # dtypes
        dtype = random.choice(['"F16"', '"BF16"', '"I8"', '"F64"', '"U8"', '""', "null"])
        b = bytearray(framed(header.decode().replace('"F32"', dtype, random.randint(1, 3)).encode()))
    elif kind == 5:  # a config field
        j = json.loads(header)
        c = json.loads(j["__metadata__"]["palm.config"])
        c[random.choice(list(c))] = random.choice([0, -1, 1, 2**31, 2**62, "x", None, [], 1.5, True])
        j["__metadata__"]["palm.config"] = json.dumps(c)
        b = bytearray(framed(json.dumps(j).encode()))
    elif kind == 6:  # the metadata
        j = json.loads(header)
        j["__metadata__"] = random.choice([None, 1, "x", {}, {"palm.config": "{"}])
        b = bytearray(framed(json.dumps(j).encode()))
    else:  # data bytes: only numbers change
        for _ in range(50):
            b[8 + n + random.randrange(len(data))] = random.randrange(256)
    return bytes(b)


unclean = []
for i in range(count):
    kind = i % 8
    path = f"{work}/f{i}.safetensors"
    open(path, "wb").write(mutate(kind))
    try:
        r = run("generate", "--model", path, "--tokenizer", f"{work}/tok", "--prompt", "x", "--max-tokens", "2",
                "--temperature", "0", check=False)
        err = r.stderr.decode(errors="replace").strip().splitlines()
        clean = r.returncode == 0 or (r.returncode == 1 and len(err) == 1 and err[0].startswith("palm"))
    except subprocess.TimeoutExpired:
        r, err, clean = None, ["timeout"], False
    if not clean:
        unclean.append((i, kind, r.returncode if r else "timeout", err[-3:], path))
if not unclean:
    shutil.rmtree(work)
print(f"{count} corrupt model files, {count - len(unclean)} loaded or refused with one line")
for u in unclean:
    print("UNCLEAN", u)
sys.exit(1 if unclean else 0)
