"""Every script a user runs refuses a bad command line, and any numeric flag outside its valid range, with exactly
one `error: ...` line on stderr and exit code 2 (no tyro box, no traceback, nothing written); --help still works."""
import pytest

from conftest import run_script

# every script a user runs, with one of its int flags
SCRIPTS = {
    "ppo_pixel_breakout.py": "--num-envs", "ppo_ram_breakout.py": "--num-envs", "extract_ram_vars.py": "--seed",
    "probe_function_vectors.py": "--top-k", "probe_report.py": "--effects-shown", "compare_runs.py": "--smooth",
    "sweep.py": "--workers", "bench/bench_throughput.py": "--num-envs", "bench/bench_probe.py": "--num-base-states",
    "probe_video.py": "--frames", "bench/bench_ocatari.py": "--seed",
}

# (script, flag, a value outside the flag's valid range): a representative set per script
OUT_OF_RANGE = [
    ("ppo_pixel_breakout.py", "--eval-epsilon", "1.5"),
    ("ppo_pixel_breakout.py", "--gamma", "-0.1"),
    ("ppo_pixel_breakout.py", "--learning-rate", "nan"),
    ("ppo_pixel_breakout.py", "--env-threads", "-1"),
    ("ppo_ram_breakout.py", "--env-processes", "-1"),
    ("ppo_ram_breakout.py", "--total-timesteps", "0"),
    ("ppo_ram_breakout.py", "--seed", "-3"),
    ("extract_ram_vars.py", "--policy-fraction", "2"),
    ("extract_ram_vars.py", "--horizon", "0"),
    ("probe_function_vectors.py", "--noop-max", "-3"),
    ("probe_function_vectors.py", "--epsilon", "1.5"),
    ("probe_function_vectors.py", "--test-fraction", "1"),
    ("probe_function_vectors.py", "--random-directions", "0"),
    ("probe_function_vectors.py", "--top-frames", "-1"),
    ("probe_report.py", "--effects-shown", "0"),
    ("compare_runs.py", "--converge-fraction", "0"),
    ("compare_runs.py", "--final-episodes", "0"),
    ("compare_runs.py", "--threshold", "inf"),
    ("sweep.py", "--tail-lines", "0"),
    ("sweep.py", "--step-timeout", "-1"),
    ("bench/bench_throughput.py", "--raw-seconds", "0"),
    ("bench/bench_throughput.py", "--rounds", "0"),
    ("bench/bench_probe.py", "--num-base-states", "1"),
    ("bench/bench_probe.py", "--raw-seconds", "-1"),
    ("probe_video.py", "--frames", "0"),
    ("probe_video.py", "--epsilon", "1.5"),
    ("bench/bench_ocatari.py", "--torch-threads", "0"),
]


def assert_one_error_line(proc, what):
    assert proc.returncode == 2, (what, proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (what, proc.stderr[-2000:])
    assert not any(c in proc.stderr for c in "╭│╰"), (what, proc.stderr)  # no tyro box
    return lines[0]


def test_bad_command_line_is_one_error_line(tmp_path):
    for script, int_flag in SCRIPTS.items():
        proc = run_script(script, "--bogus-flag", "1", cwd=tmp_path, check=False)
        assert "--bogus-flag" in assert_one_error_line(proc, f"{script} --bogus-flag 1")
        proc = run_script(script, int_flag, "abc", cwd=tmp_path, check=False)
        assert int_flag in assert_one_error_line(proc, f"{script} {int_flag} abc")
    assert not list(tmp_path.iterdir())


def test_help_still_works(tmp_path):
    for script in SCRIPTS:
        proc = run_script(script, "--help", cwd=tmp_path, check=False)
        assert proc.returncode == 0 and "usage:" in proc.stdout and "--help" in proc.stdout, (script, proc.stderr[-2000:])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("script, flag, value", OUT_OF_RANGE)
def test_out_of_range_flag_is_refused(script, flag, value, tmp_path):
    proc = run_script(script, flag, value, cwd=tmp_path, check=False)
    line = assert_one_error_line(proc, f"{script} {flag} {value}")
    assert f"{flag} must be" in line, line
    assert not list(tmp_path.iterdir())  # refused before anything was written
