#!/usr/bin/env python3
"""Enforces DESIGN.md's dependency rule on #include lines: each folder of src/ may include
only its allowed neighbours, and third-party headers only from their one home.
Exit status 1 with one line per violation."""
import pathlib
import re
import sys

ALLOWED = {  # folder -> folders of src/ it may include (itself always allowed)
    "base": set(),
    "kernels": {"base", "kernels/cpu", "kernels/cuda"},  # backend.cpp is the factory
    "kernels/cpu": {"kernels", "base"},
    "kernels/cuda": {"kernels", "base"},
    "dist": {"base"},
    "tokenizer": {"base"},
    "data": {"base", "tokenizer"},
    "model": {"kernels", "dist", "base"},
    "train": {"model", "data", "dist", "kernels", "base"},
    "infer": {"model", "kernels", "base"},
    "serve": {"infer", "tokenizer", "base"},
    "eval": {"infer", "tokenizer", "data", "base"},
    "report": {"base"},
    "launch": {"train", "base"},  # the controller: runs palm train, reads its heartbeats and checkpoints
}
THIRD_PARTY_HOME = {  # header prefix -> folders allowed to include it
    "cuda": {"kernels/cuda", "dist"},
    "mpi.h": {"dist"},
    "nccl.h": {"dist"},
    "sentencepiece": {"tokenizer"},
    "httplib.h": {"serve"},
    "oneapi/dnnl": {"kernels/cpu"},
    "unicode/": {"report"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
# Threads belong to the compute backend: no OpenMP in the code above it (a loop there is a
# Backend op instead, so an accelerator backend can run it).
NO_THREADS = {"model", "train", "infer", "dist"}
OPENMP = re.compile(r'^\s*#\s*pragma\s+omp\b|\bomp_[a-z_]+\s*\(|<omp\.h>')


def folder_of(path, src):
    rel = path.relative_to(src).parent.as_posix()
    return rel if rel in ALLOWED else rel.split("/")[0]


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    src = root / "src"
    bad = []
    for path in sorted(src.rglob("*")):
        if path.suffix not in {".h", ".cpp", ".cu", ".cuh"}:
            continue
        folder = folder_of(path, src)
        if folder not in ALLOWED:
            bad.append(f"{path.relative_to(root)}: folder '{folder}' is not in the dependency rule")
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if folder in NO_THREADS and OPENMP.search(line):
                bad.append(f"{path.relative_to(root)}:{n}: OpenMP in {folder} (threads belong to the backend: make it a Backend op)")
            m = INCLUDE.match(line)
            if not m:
                continue
            kind, inc = m.groups()
            where = f"{path.relative_to(root)}:{n}"
            if kind == '"':
                target = inc.rsplit("/", 1)[0] if "/" in inc else folder
                target = target if target in ALLOWED else target.split("/")[0]
                if target != folder and target not in ALLOWED[folder]:
                    bad.append(f"{where}: {folder} may not include {inc}")
            else:
                for prefix, homes in THIRD_PARTY_HOME.items():
                    if inc.startswith(prefix) and folder not in homes:
                        bad.append(f"{where}: <{inc}> belongs in {sorted(homes)}, not {folder}")
    for b in bad:
        print(b)
    print(f"checked {sum(1 for _ in src.rglob('*.*'))} files: {len(bad)} violations")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
