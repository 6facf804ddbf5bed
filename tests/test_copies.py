"""The scripts share no code module: helpers are copied between them on purpose. This test keeps the copies from
drifting apart. Each script is parsed with `ast` (nothing is imported), and every copy of a helper listed in COPIES
must be the same source text, character for character, in every file listed (the model classes also in
tests/test_ppo.py and in docs/FORMATS.md section 3, the contract they are copied from). A top-level function or
class defined in two or more scripts must be listed either in COPIES or in DIFFERENT, with the reason its copies
differ, so that a new copy cannot drift unnoticed."""
import ast
import difflib
import re

import pytest

from conftest import ROOT

PIXEL, RAM, EXTRACT, PROBE = "ppo_pixel_breakout.py", "ppo_ram_breakout.py", "extract_ram_vars.py", "probe_function_vectors.py"
REPORT, COMPARE, SWEEP, VIDEO = "probe_report.py", "compare_runs.py", "sweep.py", "probe_video.py"
BENCH_THROUGHPUT, BENCH_PROBE = "bench/bench_throughput.py", "bench/bench_probe.py"
BENCH_OCATARI = "bench/bench_ocatari.py"
SCRIPTS = [PIXEL, RAM, EXTRACT, PROBE, REPORT, COMPARE, SWEEP, BENCH_THROUGHPUT, BENCH_PROBE, BENCH_OCATARI, VIDEO]
TEST_PPO, FORMATS = "tests/test_ppo.py", "docs/FORMATS.md"
MODELS = [TEST_PPO, FORMATS]  # the model classes' other homes

# name -> groups of files whose copies of it must be identical
COPIES = {
    # the models of FORMATS.md section 3: every script that builds or loads a checkpoint
    "layer_init": [[PIXEL, RAM, EXTRACT, PROBE, BENCH_PROBE, VIDEO, *MODELS]],
    "Agent": [[PIXEL, EXTRACT, PROBE, BENCH_PROBE, VIDEO, *MODELS]],
    "encode_ram": [[RAM, EXTRACT, PROBE, BENCH_PROBE, *MODELS]],
    "RamAgent": [[RAM, EXTRACT, PROBE, BENCH_PROBE, *MODELS]],
    # agents trained elsewhere (FORMATS.md section 6): the pixel agent's eval and the probe read them alike
    "read_external_agent": [[PIXEL, PROBE]],
    "read_sb3_zip": [[PIXEL, PROBE]],
    "rename_external_weights": [[PIXEL, PROBE]],
    "read_cleanba_msgpack": [[PIXEL, PROBE]],
    "read_atari_agents_gz": [[PIXEL, PROBE]],
    "trained_game_mismatch": [[PIXEL, PROBE]],
    "game_key": [[PIXEL, PROBE]],
    "ImpalaResidualBlock": [[PIXEL, PROBE]],
    "ImpalaConvSequence": [[PIXEL, PROBE]],
    "ImpalaAgent": [[PIXEL, PROBE]],
    "read_sample_factory_pth": [[PIXEL, PROBE]],
    "SampleFactoryInputNorm": [[PIXEL, PROBE]],
    "SampleFactoryAgent": [[PIXEL, PROBE]],
    # the command line: one `error:` line for a bad one, every numeric flag checked against its range
    "fail": [SCRIPTS],
    "parse_args": [SCRIPTS],
    "check_ranges": [SCRIPTS],
    "InputError": [[EXTRACT, PROBE, REPORT, COMPARE, VIDEO]],
    # env ids: the training scripts' lookup returns None for an unknown id (ppo_ram_breakout.py also checks a RAM
    # file's env id with it); the extractor's and the probe's raise InputError
    "rom_name": [[PIXEL, RAM], [EXTRACT, PROBE, VIDEO]],
    "game_from_env_id": [[PIXEL, RAM]],
    "env_settings": [[PIXEL, RAM]],
    # atomic writes (FORMATS.md: temp file + fsync + rename)
    "write_atomic": [[PIXEL, RAM, EXTRACT, PROBE, REPORT, SWEEP, VIDEO]],
    "write_json": [[PIXEL, RAM, SWEEP]],
    # run folders never shared, killed writes cleaned up, write errors (a full disk) as one `error:` line
    "make_run_folder": [[PIXEL, RAM]],
    "lock_run_folder": [[PIXEL, RAM]],
    "remove_orphaned_temp_files": [[PIXEL, RAM]],
    "write_problem": [[PIXEL, RAM]],
    "RunWriter": [[PIXEL, RAM]],
    "eval_output": [[PIXEL, RAM]],
    # the two training scripts' run machinery
    "request_stop": [[PIXEL, RAM]],
    "rng_state": [[PIXEL, RAM]],
    "set_rng_state": [[PIXEL, RAM]],
    "machine_description": [[PIXEL, RAM]],
    "usable_cores": [[PIXEL, RAM, SWEEP]],
    "format_seconds": [[PIXEL, RAM]],
    # --capture-video and --track (the same in both training scripts)
    "video_codec": [[PIXEL, RAM]],
    "video_wanted": [[PIXEL, RAM]],
    "VideoRecorder": [[PIXEL, RAM]],
    "require_wandb": [[PIXEL, RAM]],
    "start_wandb": [[PIXEL, RAM]],
    "upload_videos": [[PIXEL, RAM]],
    # the decoded-state video plays the agent and fits its read-out as the probe does
    "Emulator": [[PROBE, VIDEO]],
    "fit_ridge": [[PROBE, VIDEO]],
}

# name defined in several scripts -> why its copies differ on purpose
DIFFERENT = {
    "Args": "each script's own flags",
    "main": "each script's own main",
    "load_checkpoint": "each script checks what it needs of a checkpoint (resume / eval, the extractor's policy, the "
                       "probe's two agents; probe_video.py has the probe's) and reports problems its own way (fail vs "
                       "InputError)",
    "load_ram_vars": "the memory agent needs `selected`; the probe also needs every selected byte's record",
    "make_envs": "the pixel agent's C++ AtariVectorEnv vs the memory agent's gymnasium RAM envs",
    "evaluate": "the same evaluation loop on the two agents' different envs and observations",
    "Progress": "the extractor counts emulated frames, the probe (and probe_video.py, its copy) items of any kind",
    "render_html": "compare_runs.py's report page vs sweep.py's cross-game index",
}


def definitions(path):
    """{name: source text} of the top-level functions and classes of a script, or of the python code blocks of
    FORMATS.md section 3."""
    text = (ROOT / path).read_text()
    if path == FORMATS:
        section = text[text.index("## 3. "):text.index("## 4. ")]
        text = "\n\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    lines = text.splitlines(keepends=True)
    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            start = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
            out[node.name] = "".join(lines[start:node.end_lineno])
    return out


DEFS = {path: definitions(path) for path in SCRIPTS + MODELS}


@pytest.mark.parametrize("name, files", [(n, g) for n, groups in COPIES.items() for g in groups],
                         ids=[f"{n}-{i}" for n, groups in COPIES.items() for i in range(len(groups))])
def test_copies_are_identical(name, files):
    missing = [f for f in files if name not in DEFS[f]]
    assert not missing, f"{name} is not defined in {missing}"
    first = files[0]
    for other in files[1:]:
        a, b = DEFS[first][name], DEFS[other][name]
        diff = "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), first, other))
        assert a == b, f"the copies of {name} in {first} and {other} differ:\n{diff}"


def test_every_shared_name_is_checked_or_explained():
    holders = {}
    for path in SCRIPTS:
        for name in DEFS[path]:
            holders.setdefault(name, set()).add(path)
    for name, files in sorted(holders.items()):
        if len(files) < 2 or name in DIFFERENT:
            continue
        assert name in COPIES, f"{name} is defined in {sorted(files)}: add it to COPIES (or to DIFFERENT, with why)"
        listed = {f for group in COPIES[name] for f in group if f in SCRIPTS}
        assert listed == files, f"{name}: defined in {sorted(files)}, COPIES lists {sorted(listed)}"
