"""The benchmarks under bench/ run end to end (tiny budgets; their figures are not checked: speed is measured
by running them on a quiet machine, never in a timed test)."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, run_script


def test_bench_throughput_prints_every_setting_and_its_gain():
    proc = run_script("bench/bench_throughput.py", "--num-envs", "1", "--pixel-steps", "512", "--ram-steps", "512",
                      "--raw-seconds", "0.5", "--rounds", "1", timeout=900)
    out = proc.stdout
    for line in ("(a) raw AtariVectorEnv", "(b) ppo_pixel_breakout.py training", "(c) raw RAM vector env",
                 "(d) ppo_ram_breakout.py training", "ratios training/raw at the defaults"):
        assert line in out, out
    for setting in ("--precision fp32", "--no-channels-last", "--torch-threads 1", "--env-processes 1"):
        assert re.search(rf"{re.escape(setting)}\s+[\d,]+ SPS .*gain \d+\.\d\dx", out), (setting, out)
    assert out.count("time split of the default") == 2


def gpu_check(**env):
    return subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable, **env))


def test_gpu_check_says_what_it_skipped_without_a_gpu():
    proc = gpu_check()
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout and "skipped:" in proc.stdout


def test_gpu_check_cpu_smoke_runs_every_row(tmp_path):
    """GPU_CHECK_CPU=1 runs the same commands on the CPU: every row is ok (the --compile rows skipped, and the bf16
    eager row on a CPU without native bf16, which the training script refuses), one table."""
    proc = gpu_check(GPU_CHECK_CPU="1", GPU_CHECK_OUT=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [l for l in proc.stdout.splitlines() if re.match(r"(pixel|RAM|probe) ", l)]
    assert len(rows) == 13, proc.stdout
    cpuinfo = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    native_bf16 = "avx512_bf16" in cpuinfo or "amx_bf16" in cpuinfo
    skipped = {r.split("  ")[0].strip() for r in rows if "skipped (" in r}
    expected = {"pixel throughput fp32 --compile", "pixel throughput bf16 --compile", "RAM throughput --compile"}
    assert skipped == expected | (set() if native_bf16 else {"pixel throughput bf16 eager"}), proc.stdout
    assert all((" ok " in r) or r.rstrip().endswith("ok") for r in rows if "skipped (" not in r), proc.stdout
    assert "all passed" in proc.stdout


def test_gpu_check_fails_when_a_path_fails(tmp_path):
    """A failing command makes a FAILED row and exit 1 (here: python that cannot import the scripts' packages)."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\ncase \"$1\" in -c) exec {sys.executable} \"$@\";; esac\nexit 3\n")
    fake.chmod(0o755)
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=str(fake), GPU_CHECK_CPU="1",
                                                GPU_CHECK_OUT=str(tmp_path / "out")))
    assert proc.returncode == 1 and "FAILED (exit 3" in proc.stdout, proc.stdout


def test_ocatari_read_recorder_sees_every_kind_of_index():
    """bench/ocatari_reads.py's RAM wrapper (numpy only; OCAtari itself lives in its own venv) records ints, numpy
    ints, slices, index arrays, negative indices and iteration, and returns the plain values."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import ocatari_reads
    finally:
        sys.path.pop(0)
    import numpy as np
    ram = np.arange(128, dtype=np.uint8)
    reads = set()
    wrapped = ocatari_reads.wrap(ram, reads)
    assert wrapped[5] == 5 and wrapped[np.int64(7)] == 7 and list(wrapped[10:13]) == [10, 11, 12]
    assert list(wrapped[[20, 30]]) == [20, 30] and wrapped[-1] == 127
    assert reads == {5, 7, 10, 11, 12, 20, 30, 127}
    reads.clear()
    assert sum(int(v) for v in ocatari_reads.wrap(ram, reads)) == int(ram.astype(int).sum())
    assert reads == set(range(128))


def test_ocatari_changed_fields_compares_each_class_on_its_own():
    """What an edit changed, per OCAtari object class: a moved object is a move along its axis; a class that gained an
    object is "presence" only; objects of a class that were only reordered, or pushed to other slots of a shared list
    by another class's new object, did not change; when one object went and another moved, both are seen."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import ocatari_reads
    finally:
        sys.path.pop(0)
    player, ball = ("Player", (10, 50, 4, 8), "None"), ("Ball", (30, 20, 2, 2), "None")
    m1, m2 = ("Mushroom", (8, 40, 4, 3), "None"), ("Mushroom", (60, 90, 4, 3), "None")
    ref = [player, ball, m1, m2]
    moved = [("Player", (14, 50, 4, 8), "None"), ball, m1, m2]
    assert ocatari_reads.changed_fields(ref, moved) == {"Player": {"x"}}
    grown = [player, ("Mushroom", (0, 0, 4, 3), "None"), ball, m1, m2]   # the ball and mushrooms pushed down a slot
    assert ocatari_reads.changed_fields(ref, grown) == {"Mushroom": {"presence"}}
    assert ocatari_reads.changed_fields(ref, [player, ball, m2, m1]) == {}
    assert ocatari_reads.changed_fields(ref, [player, None, m1, m2]) == {"Ball": {"presence"}}
    assert ocatari_reads.changed_fields(ref, [player, ("Ball", (30, 25, 2, 3), "None"), m1, m2]) == {"Ball": {"y", "h"}}
    # a mushroom went and another moved: presence, and the move of the one that stays (paired with its nearest)
    assert ocatari_reads.changed_fields(ref, [player, ball, ("Mushroom", (12, 40, 4, 3), "None")]) == \
        {"Mushroom": {"presence", "x"}}


def test_bench_ocatari_recall_counts_selected_and_derived_sources(tmp_path):
    """bench/bench_ocatari.py on a reads file naming every byte of Pong: its recall is what the extractor's own JSON
    gives (selected bytes, plus derived bytes whose source is selected), and a second run reuses the extraction."""
    reads = {"produced_by": {"script": "test"}, "games": {"pong": {
        "rom": "pong", "env_id": "PongNoFrameskip-v4", "read": list(range(128)), "frames": 0,
        "classes": {"13": ["PlayerScore"], "51": ["Player"]}}}}
    (tmp_path / "reads.json").write_text(__import__("json").dumps(reads))
    args = ["--reads", tmp_path / "reads.json", "--extract-dir", tmp_path / "rv", "--out", tmp_path / "recall.json",
            "--total-frames", "3000"]
    proc = run_script("bench/bench_ocatari.py", *args, timeout=600)
    import json
    data = json.loads((tmp_path / "rv" / "PongNoFrameskip-v4.json").read_text())
    sel = set(data["selected"])
    expect = {r["index"] for r in data["bytes"]
              if r["index"] in sel or (r["kind"] == "derived"
                                       and set(r["derived"].get("sources", [r["derived"]["source"]])) <= sel)}
    row = json.loads((tmp_path / "recall.json").read_text())["games"]["pong"]
    assert row["found"] == len(expect) and row["read"] == 128 and not row["reused"]
    assert {m["index"] for m in row["missed"]} == set(range(128)) - expect
    assert any(r["kind"] == "derived" for r in data["bytes"] if r["index"] in expect)  # the derived rule was used
    assert "all games: recall" in proc.stdout
    table = (tmp_path / "recall.md").read_text().splitlines()   # the README's table
    assert table[0].startswith("| game |") and any(l.startswith(f"| pong | `PongNoFrameskip-v4` | 128 | {len(expect)} |")
                                                   for l in table)
    assert table[-1].startswith("| **all 1 games** |") and f"{len(expect) / 128:.3f}" in table[-1]
    again = run_script("bench/bench_ocatari.py", *args, timeout=120)
    assert json.loads((tmp_path / "recall.json").read_text())["games"]["pong"]["reused"], again.stdout
