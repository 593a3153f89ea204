#!/usr/bin/env python3
"""Every file the build took from the system belongs to a package that
scripts/install-deps.sh installs (directly or through Depends/Pre-Depends: never a
Recommends, since install-deps runs apt with --no-install-recommends) or to the base
system (Priority: required, what a minimal Debian 12 root has).

Files the build took: CMake's cache (libraries, headers and package configs that
find_package / pkg_check_modules found, and the CMake config files in the *_DIR folders),
every header the compiler read (ninja's deps log) and every library on the link lines.

Usage: check_packages.py BUILD_DIR        exit 0 when all resolve, 1 with the list otherwise
"""
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"check_packages: {' '.join(cmd[:3])} failed: {r.stderr.strip()[:300]}")
    return r.stdout


def install_deps_packages():
    """The names in the packages=( ... ) array of scripts/install-deps.sh."""
    text = open(os.path.join(REPO, "scripts", "install-deps.sh")).read()
    m = re.search(r"^packages=\((.*?)^\)", text, re.S | re.M)
    if not m:
        sys.exit("check_packages: no packages=( ... ) array in scripts/install-deps.sh")
    names = []
    for line in m.group(1).splitlines():
        names += line.split("#", 1)[0].split()
    return names


def system_files(build):
    """Absolute paths of system files the configure, compile and link steps used."""
    inside = (os.path.realpath(REPO), os.path.realpath(build))
    found = set()

    def add(path, config_dir=False):
        if not path.startswith("/") or path.startswith(("/proc", "/tmp")):
            return
        real = os.path.realpath(path)
        if real.startswith(inside) or path.startswith(inside):
            return
        if os.path.isfile(path):
            found.add(os.path.normpath(path))
        elif os.path.isdir(path) and config_dir:
            for f in os.listdir(path):  # the package's CMake config files
                if f.endswith(".cmake"):
                    found.add(os.path.join(path, f))

    cache = os.path.join(build, "CMakeCache.txt")
    if not os.path.exists(cache):
        sys.exit(f"check_packages: {cache} missing: configure the build first")
    for line in open(cache):
        m = re.match(r"^([A-Za-z0-9_.+-]+):(FILEPATH|PATH|STRING|INTERNAL|UNINITIALIZED)=(.*)$", line.strip())
        if not m or m.group(1).startswith("CMAKE_") and m.group(2) != "FILEPATH":
            continue
        for v in m.group(3).split(";"):
            add(v.strip(), config_dir=m.group(1).endswith("_DIR"))
    for line in run(["ninja", "-C", build, "-t", "deps"]).splitlines():
        if line.startswith("    /"):
            add(line.strip())
    for line in run(["ninja", "-C", build, "-t", "commands"]).splitlines():
        for tok in line.split():
            if re.search(r"\.(so(\.[0-9.]+)?|a)$", tok):
                add(tok)
    return found


def owners(paths):
    """package -> one file it provides; files no package owns."""
    owned, unowned = {}, []
    paths = sorted(paths)
    for i in range(0, len(paths), 400):
        batch = paths[i:i + 400]
        out = run(["dpkg", "-S"] + batch, check=False)
        seen = set()
        for line in out.splitlines():
            if ": " not in line:
                continue
            pkgs, path = line.split(": ", 1)
            seen.add(path)
            for p in pkgs.split(", "):
                owned.setdefault(p.split(":")[0], path)
        for path in batch:
            if path in seen:
                continue
            real = os.path.realpath(path)  # e.g. /lib/... vs /usr/lib/... (merged /usr)
            alt = [real] + ([path[4:]] if path.startswith("/usr/lib/") else [])
            hit = False
            for a in alt:
                o = run(["dpkg", "-S", a], check=False)
                if ": " in o:
                    for p in o.split(": ", 1)[0].split(", "):
                        owned.setdefault(p.split(":")[0], path)
                    hit = True
                    break
            if not hit:
                unowned.append(path)
    return owned, unowned


def closure(names):
    """Packages apt installs for `names` without recommends (Depends + Pre-Depends), from
    dpkg's records of the installed packages (install-deps has run; no apt lists needed)."""
    out = run(["dpkg-query", "-W", "-f", "${Package}\t${Depends}, ${Pre-Depends}\t${Provides}\n"])
    deps, providers = {}, {}
    for line in out.splitlines():
        pkg, dep, prov = (line.split("\t") + ["", ""])[:3]
        deps[pkg] = [re.split(r"[ :(]", alt.strip())[0] for d in dep.split(",") for alt in d.split("|") if alt.strip()]
        for v in prov.split(","):
            if v.strip():
                providers.setdefault(re.split(r"[ (]", v.strip())[0], []).append(pkg)
    seen, todo = set(), list(names)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo += deps.get(p, []) + providers.get(p, [])
    return seen


def base_system():
    out = run(["dpkg-query", "-W", "-f", "${Package} ${Priority} ${Essential}\n"])
    base = set()
    for l in out.splitlines():
        f = l.split()
        if len(f) >= 2 and (f[1] == "required" or (len(f) > 2 and f[2] == "yes")):
            base.add(f[0])
    return closure(sorted(base)) | base if base else set()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build = os.path.abspath(sys.argv[1])
    files = system_files(build)
    owned, unowned = owners(files)
    listed = install_deps_packages()
    have = closure(listed) | base_system()
    missing = {p: f for p, f in owned.items() if p not in have}
    unowned = [f for f in unowned if not f.startswith("/usr/local/")]
    for p, f in sorted(missing.items()):
        print(f"check_packages: the build used {f} from package {p}, which scripts/install-deps.sh "
              f"does not install (not in the Depends closure of its list): add {p} there")
    for f in unowned:
        print(f"check_packages: the build used {f}, which no Debian package owns")
    print(f"check_packages: {len(files)} system files from {len(owned)} packages; {len(listed)} named in "
          f"install-deps, {len(have)} in their closure with the base system; {len(missing)} missing, "
          f"{len(unowned)} unowned")
    sys.exit(1 if missing or unowned else 0)


if __name__ == "__main__":
    main()
