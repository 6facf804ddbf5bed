"""extract_ram_vars.py, end to end on small budgets. Every expectation is computed from the emulator in the
test itself (no RAM address table): the paddle byte from the screen, constant bytes by playing, scratch and
state bytes by setting RAM and comparing with an untouched twin, bitmap bytes by flipping bits and diffing
screens."""
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime

import numpy as np
import pytest
from ale_py import Action, ALEInterface, LoggerMode, roms

from conftest import ROOT, assert_clean_error, run_script

SCRIPT = "extract_ram_vars.py"
ENV_ID = "BreakoutNoFrameskip-v4"
OUT_NAME = "BreakoutNoFrameskip-v4.json"
FRAMES = 5000          # small budget (~10 s) that still lets Go-Explore break a few bricks
KINDS = {"constant", "latent", "scratch", "derived", "stored", "input-driven", "state", "bitmap"}
HORIZON = 80           # frames the test emulates after its own interventions


# ---------------------------------------------------------------- emulator helpers (the test's own)
def breakout_ale(seed=0):
    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(roms.get_rom_path("breakout"))
    return ale


def sticky_actions(rng, actions, n, hold=(1, 20)):
    out, left, a = [], 0, actions[0]
    for _ in range(n):
        if left == 0:
            a, left = actions[rng.integers(len(actions))], int(rng.integers(*hold))
        left -= 1
        out.append(a)
    return out


def play(ale, actions):
    """Emulate `actions` -> (rams (T,128), screens (T,H,W)), (H, W) = ale.getScreenDims()."""
    rams, screens = [], []
    for a in actions:
        ale.act(a)
        rams.append(ale.getRAM().copy())
        screens.append(ale.getScreen().copy())
    return np.array(rams), np.array(screens)


def future_differs(ale, state, index, value, actions, twin):
    """setRAM(index, value) at `state`, play `actions`: does the screen or any other RAM byte differ from `twin`?"""
    ale.restoreState(state)
    ale.setRAM(index, int(value))
    rams, screens = play(ale, actions)
    other = np.arange(128) != index
    return bool((rams[:, other] != twin[0][:, other]).any() or (screens != twin[1]).any())


def bit_boxes(ale, state, index):
    """Flip each bit of byte `index` at `state`, emulate 1 frame, diff with the unflipped screen.
    -> per bit: None (no change) or (box (x0, y0, x1, y1), fraction of the box that changed)."""
    ale.restoreState(state)
    value = int(ale.getRAM()[index])
    ale.act(Action.NOOP)
    ref = ale.getScreen().copy()
    out = []
    for bit in range(8):
        ale.restoreState(state)
        ale.setRAM(index, value ^ (1 << bit))
        ale.act(Action.NOOP)
        diff = ale.getScreen() != ref
        if not diff.any():
            out.append(None)
            continue
        ys, xs = np.nonzero(diff)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        out.append((box, diff.sum() / ((box[2] - box[0]) * (box[3] - box[1]))))
    return out


def load_script():
    """The script as a module (for its functions and model classes); importing it runs nothing."""
    spec = importlib.util.spec_from_file_location("extract_ram_vars", ROOT / SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_json(out_dir, *flags, env_id=ENV_ID):
    proc = run_script(SCRIPT, "--env-id", env_id, "--out-dir", out_dir, *flags, timeout=300)
    with open(os.path.join(out_dir, env_id.replace("/", "_") + ".json")) as f:
        return json.load(f), proc


@pytest.fixture(scope="module")
def result_run(tmp_path_factory):
    """One small-budget Breakout run shared by the checks below; it also writes its roles into a copy of the shipped
    ram vars file (--roles-into). -> (its JSON, the folder)."""
    d = tmp_path_factory.mktemp("erv")
    shutil.copy(os.path.join(ROOT, "ram_vars", f"{ENV_ID}.json"), d / "shipped.json")
    data, proc = run_json(d, "--total-frames", FRAMES, "--seed", 1, "--roles-into", d / "shipped.json")
    assert "[explore]" in proc.stdout and "frames/s" in proc.stdout and "ETA" in proc.stdout, proc.stdout[-2000:]
    return data, d


@pytest.fixture(scope="module")
def result(result_run):
    return result_run[0]


def test_roles_into_upgrades_an_older_file_and_keeps_its_selection(result_run, tmp_path):
    """--roles-into: the older file keeps its selection and every other field, and its bytes get this run's roles."""
    data, d = result_run
    with open(os.path.join(ROOT, "ram_vars", f"{ENV_ID}.json")) as f:
        shipped = json.load(f)
    with open(d / "shipped.json") as f:
        upgraded = json.load(f)
    assert upgraded["selected"] == shipped["selected"] and upgraded["excluded"] == shipped["excluded"]
    for new, old, run in zip(upgraded["bytes"], shipped["bytes"], data["bytes"]):
        assert {k: v for k, v in new.items() if k != "role"} == {k: v for k, v in old.items() if k != "role"}
        assert new.get("role") == (run.get("role") or old.get("role")), new["index"]
    assert sum(bool(b.get("role")) for b in upgraded["bytes"]) >= 10
    assert upgraded["produced_by"]["roles"]["seed"] == 1
    bad = tmp_path / "pong.json"
    bad.write_text(json.dumps({**shipped, "env_id": "PongNoFrameskip-v4"}))
    assert_clean_error(run_script(SCRIPT, "--env-id", ENV_ID, "--out-dir", tmp_path, "--total-frames", "200",
                                  "--roles-into", bad, check=False), "roles-into")


@pytest.fixture(scope="module")
def emu():
    """The test's own emulator and 8 states: right after reset, after serving the ball, then every 40 frames of
    random play (a new game after game over)."""
    ale = breakout_ale(seed=0)
    rng = np.random.default_rng(0)
    actions = list(ale.getMinimalActionSet())
    ale.reset_game()
    states = [ale.cloneState(include_rng=True)]
    play(ale, [Action.NOOP] * 60 + [Action.FIRE] * 2)
    states.append(ale.cloneState(include_rng=True))
    while len(states) < 8:
        play(ale, sticky_actions(rng, actions, 40))
        if ale.game_over():
            ale.reset_game()
        states.append(ale.cloneState(include_rng=True))
    return ale, states, actions


# ---------------------------------------------------------------- schema + paddle
def test_schema_complete(result):
    d = result
    assert d["format"] == "memory-pixel-interp/ram-vars" and d["version"] == 3
    assert d["env_id"] == ENV_ID and d["game"] == "breakout"
    recs = d["bytes"]
    assert [r["index"] for r in recs] == list(range(128))
    for r in recs:
        assert r["address"] == f"0x{0x80 + r['index']:02X}"
        assert r["kind"] in KINDS
        assert isinstance(r["selected"], bool) and r["reason"]
        assert 0 <= r["min"] <= r["max"] <= 255 and 1 <= r["n_distinct"] <= r["max"] - r["min"] + 1
        assert 0.0 <= r["change_rate"] <= 1.0
        assert (r["kind"] in ("constant", "latent")) == (r["n_distinct"] == 1) == (r["change_rate"] == 0.0)
        iv = r["intervention"]
        assert isinstance(iv, dict) and iv["trials"] > 0 and 0.0 <= iv["differed_fraction"] <= 1.0
        assert (r["kind"] == "latent") == (r["n_distinct"] == 1 and iv["differed_fraction"] > 0)
        if r["n_distinct"] > 1:
            for key in ("screen_differed_fraction", "ram_differed_fraction", "mean_other_ram_changed",
                        "mean_screen_pixels_changed", "persisted_fraction", "overwritten_fraction"):
                assert key in iv
            assert (r["kind"] in ("scratch", "derived", "stored", "input-driven")) == (iv["effect_fraction"] == 0.0)
            if r["kind"] == "stored":  # the game kept written values: memory, not a temporary
                assert iv["persisted_fraction"] >= 0.25 and r["selected"]
        if r["selected"] or r["kind"] == "derived":   # every kept byte says what it is, with its evidence
            assert r["role"]["role"] and r["role"]["evidence"], r
    changing = {r["index"] for r in recs if r["n_distinct"] > 1}
    latent = {r["index"] for r in recs if r["kind"] == "latent"}
    sel = d["selected"]
    assert sel == sorted(set(sel)) and set(sel) <= changing | latent and set(sel) & changing
    assert {r["index"] for r in recs if r["selected"]} == set(sel)
    assert set(d["excluded"]) == {str(i) for i in range(128)} - {str(i) for i in sel}
    for i, why in d["excluded"].items():
        assert why == recs[int(i)]["kind"] and why in ("constant", "scratch", "derived")   # default flags
    assert all(recs[i]["kind"] in ("state", "bitmap", "latent", "stored", "input-driven") for i in sel)
    assert "drop-bitmaps" in d["selection_rule"] and "latent" in d["selection_rule"]
    pb = d["produced_by"]
    assert pb["script"] == SCRIPT and pb["frames"] == FRAMES and pb["seed"] == 1 and pb["policy"]
    assert pb["args"]["total_frames"] == FRAMES and pb["ale_py"] and pb["seconds"] > 0
    assert pb["env_settings"] == {"repeat_action_probability": 0.0, "frameskip": 1}
    assert pb["null_interventions"]["trials"] > 0 and pb["null_interventions"]["differed"] == 0
    cov = d["coverage"]
    assert cov["best_score"] >= 0 and cov["lives_seen"] and cov["lives_lost"] == max(cov["lives_seen"]) - min(cov["lives_seen"])
    datetime.fromisoformat(pb["created"])
    assert pb["nondeterministic_bases_dropped"] == 0


def paddle_byte():
    """The paddle is what moves when RIGHT vs LEFT is held (ball not served); its byte tracks its pixel column.
    -> the RAM index of that byte, found from the screen."""
    ale = breakout_ale(seed=3)
    ale.reset_game()
    play(ale, [Action.NOOP] * 60)
    s0 = ale.cloneState(include_rng=True)
    ends = []
    for a in (Action.RIGHT, Action.LEFT):
        ale.restoreState(s0)
        ends.append(play(ale, [a] * 40)[1][-1])
    rows = np.nonzero((ends[0] != ends[1]).any(axis=1))[0]
    assert 0 < len(rows) < 20, rows
    ale.restoreState(s0)
    rams, screens = play(ale, sticky_actions(np.random.default_rng(3), [Action.LEFT, Action.RIGHT, Action.NOOP],
                                             600, hold=(5, 40)))
    band = screens[:, rows, :]
    values, counts = np.unique(band, return_counts=True)
    background = values[counts.argmax()]
    static_cols = (band == band[0]).all(axis=(0, 1))           # walls etc. never change
    mask = (band != background) & ~static_cols[None, None, :]
    seen = mask.any(axis=(1, 2))
    assert seen.mean() > 0.9
    cols = np.arange(band.shape[2])
    column = np.array([cols[m.any(axis=0)].mean() for m in mask[seen]])
    assert column.max() - column.min() > 40                   # the paddle really travelled
    r = rams[seen].astype(float)
    corr = np.array([abs(np.corrcoef(r[:, i], column)[0, 1]) if r[:, i].std() > 0 else 0.0 for i in range(128)])
    paddle = int(corr.argmax())
    assert corr[paddle] > 0.99, corr[paddle]
    return paddle


def test_paddle_byte_found_from_screen_is_selected(result):
    paddle = paddle_byte()
    assert paddle in result["selected"], (paddle, result["bytes"][paddle])
    rec = result["bytes"][paddle]
    assert rec["kind"] == "state" and rec["intervention"]["screen_differed_fraction"] > 0.5


def test_position_roles_say_whose_object_the_actions_move(result, emu):
    """Each x- / y-position names the actions that moved it (moved_by) and whose object it is ("other": no action). The
    paddle byte, found from the screen, is the player's, moved by LEFT and RIGHT; in the test's own emulator, holding
    each action it names for 8 frames moves it against NOOP at one of the test's states or more."""
    erv = load_script()
    ale, states, _ = emu
    names = {a.name for a in ale.getMinimalActionSet()}
    positions = [r for r in result["bytes"] if (r.get("role") or {}).get("role") in ("x-position", "y-position")]
    assert positions and all("moved_by" in r["role"] and set(r["role"]["moved_by"]) <= names for r in positions)
    paddle = paddle_byte()
    role = result["bytes"][paddle]["role"]
    assert role["role"] == "x-position" and role["object"] == "player" and {"LEFT", "RIGHT"} <= set(role["moved_by"])

    def after(state, action, index):
        ale.restoreState(state)
        for _ in range(erv.CONTROL_FRAMES):
            ale.act(action)
        return int(ale.getRAM()[index])

    for name in role["moved_by"]:
        assert any(after(st, Action[name], paddle) != after(st, Action.NOOP, paddle) for st in states), name
    for r in positions:
        assert (r["role"]["object"] == "other") == (not r["role"]["moved_by"])


# ---------------------------------------------------------------- constant
def test_constant_bytes_match_emulator(result, emu):
    ale, states, actions = emu
    ale.restoreState(states[0])
    at_reset = ale.getRAM().copy()
    rams, _ = play(ale, sticky_actions(np.random.default_rng(5), actions, 3000))
    rams = np.vstack([at_reset[None], rams])
    never_changed = {i for i in range(128) if (rams[:, i] == rams[0, i]).all()}
    often_changed = {i for i in range(128) if (np.diff(rams[:, i].astype(int)) != 0).mean() > 0.3}
    assert never_changed and often_changed
    recs = result["bytes"]
    script_constant = {r["index"] for r in recs if r["kind"] in ("constant", "latent")}  # never changed in play
    # a byte the emulator never changes over a whole random game is dropped as constant, with its true value
    both = never_changed & script_constant
    assert both, (never_changed, script_constant)
    for i in script_constant:
        rec = recs[i]
        assert rec["min"] == rec["max"] == at_reset[i], (i, rec["min"], int(at_reset[i]))
        assert rec["selected"] == (rec["kind"] == "latent")
        assert rec["selected"] or result["excluded"][str(i)] == "constant"
    # bytes the emulator changes on most frames are never called constant
    assert not often_changed & script_constant, often_changed & script_constant


# ---------------------------------------------------------------- scratch / state by intervention
@pytest.fixture(scope="module")
def emulator_effects(result, emu):
    """For every byte the script saw change: in how many of the test's own trials (8 states x up to 2 values the
    script saw, 80 frames of random actions) did setting it change the screen or another RAM byte?"""
    ale, states, actions = emu
    rng = np.random.default_rng(7)
    twins = []
    for s in states:
        acts = sticky_actions(rng, actions, HORIZON)
        ale.restoreState(s)
        twin = play(ale, acts)
        ale.restoreState(s)
        again = play(ale, acts)
        assert np.array_equal(twin[0], again[0]) and np.array_equal(twin[1], again[1]), "twin replays differ"
        twins.append((s, acts, twin))
    effects = {}
    for rec in result["bytes"]:
        if rec["kind"] == "constant":
            continue
        i = rec["index"]
        tried = rec["values"] or rec["intervention"]["values_tried"]
        hits = 0
        for s, acts, twin in twins:
            ale.restoreState(s)
            own = int(ale.getRAM()[i])
            for v in [v for v in tried if v != own][:2]:
                hits += future_differs(ale, s, i, v, acts, twin)
        effects[i] = hits
    return effects


def test_excluded_changing_bytes_have_no_effect_on_emulator(result, emulator_effects):
    """Changing bytes excluded as scratch or derived (a temporary, or a value the game recomputes every frame from
    selected bytes) change nothing when the test sets them."""
    inert_kinds = [r["index"] for r in result["bytes"] if r["kind"] in ("scratch", "derived")]
    assert inert_kinds, "expected some scratch or derived bytes on Breakout"
    for i in inert_kinds:
        assert emulator_effects[i] == 0, f"byte {i} is labelled {result['bytes'][i]['kind']} but setting it changed the future"
        assert not result["bytes"][i]["selected"] and result["excluded"][str(i)] == result["bytes"][i]["kind"]
    # a byte the emulator shows to be inert (changes while playing, setting it changes nothing) exists and is excluded
    inert = {i for i, h in emulator_effects.items() if h == 0}
    assert inert & set(inert_kinds)


def test_stored_bytes_keep_a_written_value_on_emulator(result, emu):
    """A `stored` byte changed in play, had no effect in the script's trials, and a change the test writes into it is
    still there after the next frame (it differs from an untouched twin's) at some of the test's own states:
    memory, not a temporary."""
    ale, states, actions = emu
    stored = [r for r in result["bytes"] if r["kind"] == "stored"]
    assert stored, "expected some stored bytes on Breakout at this budget"
    for rec in stored:
        i, kept = rec["index"], 0
        assert rec["n_distinct"] > 1 and rec["selected"]
        for s in states:
            twin = play_from(ale, s, [Action.NOOP])[0][-1][i]
            ale.restoreState(s)
            ale.setRAM(i, int(ale.getRAM()[i]) ^ 0x80)
            kept += play(ale, [Action.NOOP])[0][-1][i] != twin
        assert kept > 0, i


def test_state_bytes_with_strong_effect_matter_on_emulator(result, emulator_effects):
    strong = [r["index"] for r in result["bytes"]
              if r["kind"] in ("state", "bitmap") and r["intervention"]["effect_fraction"] >= 0.8]
    assert len(strong) >= 5
    missing = [i for i in strong if emulator_effects[i] == 0]
    assert not missing, f"script says these bytes matter, the emulator shows no effect: {missing}"


def test_intervention_function_directly(emu):
    """The script's own intervention/twin functions, on cases the test decides with the emulator."""
    mod = load_script()
    ale, states, actions = emu
    state = states[2]
    acts = sticky_actions(np.random.default_rng(11), actions, 48)
    twin = mod.make_twin(ale, state, acts)
    assert twin is not None                                   # deterministic replay
    ale.restoreState(state)
    ram = ale.getRAM().copy()
    base = {"state": state, "ram": ram, "actions": acts, "twin_ram": twin[0], "twin_screen": twin[1]}
    checked = {True: 0, False: 0}
    for i in range(128):
        v = (int(ram[i]) + 37) % 256
        expected = future_differs(ale, state, i, v, acts, twin)
        got = mod.intervention_trial(ale, base, i, v)
        assert got["differed"] == expected, (i, v, expected, got)
        checked[expected] += 1
    assert checked[True] and checked[False]


# ---------------------------------------------------------------- bitmap
def emulator_bitmap_bytes(ale, states):
    """Bytes whose bits each toggle one fixed, filled, pairwise disjoint screen block, the same at two states."""
    found = {}
    for i in range(128):
        per_state = [bit_boxes(ale, s, i) for s in states]
        if any([b is None for b in p] != [b is None for b in per_state[0]] for p in per_state):
            continue
        bits = [b for b in per_state[0] if b is not None]
        if len(bits) < 2 or any(p[k] is not None and p[k][0] != per_state[0][k][0] for p in per_state for k in range(8)):
            continue
        boxes = [b[0] for b in bits]
        disjoint = all(a[2] <= c[0] or c[2] <= a[0] or a[3] <= c[1] or c[3] <= a[1]
                       for n, a in enumerate(boxes) for c in boxes[n + 1:])
        if disjoint and all(p[k] is None or p[k][1] >= 0.9 for p in per_state for k in range(8)):
            found[i] = [None if b is None else list(b[0]) for b in per_state[0]]
    return found


def test_bitmap_bytes_are_flagged(result, emu):
    ale, states, _ = emu
    ale.restoreState(states[0])
    play(ale, [Action.NOOP] * 60)                             # past the opening animation
    s1 = ale.cloneState(include_rng=True)
    found = emulator_bitmap_bytes(ale, [s1, states[3]])
    assert len(found) >= 10, found                            # brick rows
    recs = result["bytes"]
    changing_bitmaps = [i for i in found if recs[i]["n_distinct"] > 1]
    assert changing_bitmaps, "exploration broke no brick: no bitmap byte changed"
    for i in changing_bitmaps:
        assert recs[i]["kind"] == "bitmap" and recs[i]["selected"], (i, recs[i]["reason"])
        bits = recs[i]["intervention"]["bitmap"]["bits"]
        for k in range(8):
            if found[i][k] is None:
                assert bits[k]["effect"] == "none", (i, k, bits[k])
            else:
                assert bits[k]["effect"] == "block" and bits[k]["box"] == found[i][k], (i, k, bits[k], found[i][k])
    for r in recs:                                             # nothing else is called a bitmap
        if r["kind"] == "bitmap":
            assert r["index"] in found, r["index"]


# ---------------------------------------------------------------- selection flags (+ determinism)
def test_drop_bitmaps_and_min_effect_change_selection(result, tmp_path):
    d, _ = run_json(tmp_path, "--total-frames", FRAMES, "--seed", 1, "--drop-bitmaps", "--min-effect", "0.3")
    base_recs, recs = result["bytes"], d["bytes"]
    # same seed -> same measurements; only the selection differs
    for a, b in zip(base_recs, recs):
        for key in ("kind", "min", "max", "n_distinct", "change_rate"):
            assert a[key] == b[key], (a["index"], key)
        assert a["intervention"].get("differed_fraction") == b["intervention"].get("differed_fraction")
    bitmaps = {r["index"] for r in recs if r["kind"] == "bitmap"}
    weak = {r["index"] for r in recs if (r["kind"] == "state" and r["intervention"]["effect_fraction"] <= 0.3)
            or (r["kind"] == "latent" and r["intervention"]["differed_fraction"] <= 0.3)  # latent: its write test
            or r["kind"] == "stored"}                                                    # no effect seen at all
    assert bitmaps and any(recs[i]["kind"] != "stored" for i in weak)
    expected = [i for i in result["selected"] if i not in bitmaps and i not in weak]
    assert d["selected"] == expected
    for i in bitmaps:
        assert d["excluded"][str(i)] == "bitmap" and not recs[i]["selected"]
    for i in weak:
        assert d["excluded"][str(i)] == "weak-effect"
    assert "--drop-bitmaps" in d["selection_rule"] and "excluded by --drop-bitmaps" in d["selection_rule"]
    assert d["produced_by"]["args"]["drop_bitmaps"] is True


# ---------------------------------------------------------------- bad input
def test_unknown_env_id(tmp_path):
    proc = run_script(SCRIPT, "--env-id", "NoSuchGameNoFrameskip-v4", "--out-dir", tmp_path, check=False)
    assert_clean_error(proc, "unknown env id")
    assert proc.returncode == 2 and not list(tmp_path.iterdir())


@pytest.mark.parametrize("flags, needle", [
    (["--total-frames", "0"], "--total-frames"),
    (["--total-frames", "abc"], "--total-frames"),
    (["--min-effect", "2"], "--min-effect"),
])
def test_bad_flag_values(tmp_path, flags, needle):
    proc = run_script(SCRIPT, "--out-dir", tmp_path, *flags, check=False)
    assert_clean_error(proc, needle)
    assert proc.returncode == 2


def test_unwritable_out_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = run_script(SCRIPT, "--total-frames", 1000, "--out-dir", blocker / "ram_vars", check=False)
    assert_clean_error(proc, "cannot write")
    assert blocker.read_text() == "not a folder"


def test_failed_runs_do_not_clobber_existing_json(tmp_path):
    out = tmp_path / "ram_vars"
    out.mkdir()
    existing = out / OUT_NAME
    existing.write_text('{"sentinel": true}\n')
    bad_ckpt = tmp_path / "checkpoint.pt"
    bad_ckpt.write_bytes(b"\x80\x04 definitely not a torch checkpoint")
    proc = run_script(SCRIPT, "--total-frames", 1000, "--out-dir", out, "--checkpoint", bad_ckpt, check=False)
    assert_clean_error(proc, "checkpoint")
    assert existing.read_text() == '{"sentinel": true}\n'
    # interrupted in the middle of a long run: the old file stays, no temp file is left
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, str(ROOT / SCRIPT), "--total-frames", "100000000", "--out-dir", str(out)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line, t0 = "", time.time()
        while "[explore]" not in line and time.time() - t0 < 60:
            line = p.stdout.readline()
        assert "[explore]" in line
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0 and "Traceback" not in err and err.strip().splitlines()[-1].startswith("error:")
    assert existing.read_text() == '{"sentinel": true}\n'
    assert sorted(f.name for f in out.iterdir()) == [OUT_NAME]


# ---------------------------------------------------------------- checkpoint policy
def test_checkpoint_policies_drive_exploration(tmp_path):
    torch = pytest.importorskip("torch")
    mod = load_script()
    n_actions = len(breakout_ale().getMinimalActionSet())
    torch.manual_seed(0)
    pixel = {"format": "memory-pixel-interp/checkpoint", "version": 1, "agent": "pixel", "env_id": ENV_ID,
             "game": "breakout", "model_kwargs": {"n_actions": n_actions, "in_channels": 4},
             "state_dict": mod.Agent(n_actions).state_dict(), "ram_indices": None}
    ram = {"format": "memory-pixel-interp/checkpoint", "version": 1, "agent": "ram", "env_id": ENV_ID,
           "game": "breakout", "model_kwargs": {"n_actions": n_actions, "n_ram": 3, "hidden": 256},
           "state_dict": mod.RamAgent(n_actions, 3).state_dict(), "ram_indices": [0, 1, 2]}
    for name, ckpt in (("pixel", pixel), ("ram", ram)):
        path = tmp_path / f"{name}.pt"
        torch.save(ckpt, path)
        d, _ = run_json(tmp_path / name, "--total-frames", 800, "--checkpoint", path, "--n-bases", 2,
                        "--horizon", 8, "--values-per-base", 1, "--long-horizon", 0, "--bitmap-contexts", 1)
        pb = d["produced_by"]
        assert str(path) in pb["policy"] and f"{name} agent" in pb["policy"]
        assert 300 <= pb["policy_frames"] <= 800 and pb["frames"] == 800
    # a checkpoint for another game is refused
    proc = run_script(SCRIPT, "--env-id", "PongNoFrameskip-v4", "--total-frames", 1000, "--out-dir", tmp_path / "p",
                      "--checkpoint", tmp_path / "ram.pt", check=False)
    assert_clean_error(proc, "checkpoint")


def test_pixel_checkpoint_on_a_screen_not_210_rows_high(tmp_path):
    """The pixel policy's frame buffers take the screen size from the emulator (Pooyan: 220 rows)."""
    torch = pytest.importorskip("torch")
    mod = load_script()
    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.loadROM(roms.get_rom_path("pooyan"))
    assert ale.getScreenDims()[0] != 210, "pick a game whose screen is not 210 rows high"
    n_actions = len(ale.getMinimalActionSet())
    torch.manual_seed(0)
    path = tmp_path / "pixel.pt"
    torch.save({"format": "memory-pixel-interp/checkpoint", "version": 1, "agent": "pixel", "env_id": "PooyanNoFrameskip-v4",
                "game": "pooyan", "model_kwargs": {"n_actions": n_actions, "in_channels": 4},
                "state_dict": mod.Agent(n_actions).state_dict(), "ram_indices": None}, path)
    d, _ = run_json(tmp_path / "out", "--total-frames", 800, "--checkpoint", path, "--n-bases", 2, "--horizon", 8,
                    "--values-per-base", 1, "--long-horizon", 0, "--bitmap-contexts", 1, env_id="PooyanNoFrameskip-v4")
    assert 300 <= d["produced_by"]["policy_frames"] <= 800 and d["produced_by"]["frames"] == 800


# ---------------------------------------------------------------- latent, derived, sticky ids, roles (version 2)
def test_latent_bytes_never_change_in_play_but_draw_when_written(result, emu):
    """A byte the script calls latent never changed in the test's own random play either, and writing other values
    at the test's states changes the future screen or RAM (state that play did not reach)."""
    ale, states, actions = emu
    latent = [r for r in result["bytes"] if r["kind"] == "latent"]
    assert latent, "no latent byte on Breakout at this budget"
    ale.restoreState(states[0])
    rams, _ = play(ale, sticky_actions(np.random.default_rng(7), actions, 2000))
    acts = sticky_actions(np.random.default_rng(8), actions, 48)
    for rec in latent[:: max(1, len(latent) // 8)]:
        i = rec["index"]
        assert rec["min"] == rec["max"] and (rams[:, i] == rec["min"]).all(), i
        twins = [(s, play_from(ale, s, acts)) for s in states[:4]]
        assert any(future_differs(ale, s, i, v, acts, twin) for s, twin in twins
                   for v in (rec["min"] ^ 0x80, rec["min"] ^ 1, 0 if rec["min"] else 255)), i


def play_from(ale, state, actions):
    ale.restoreState(state)
    return play(ale, actions)


def test_derived_bytes_follow_their_source_on_emulator(result, emu):
    """A derived byte is, on every frame of the test's own play, the recorded function of its source byte (a
    "computed" one, named by interventions, is checked on Asterix). Every source is a selected byte."""
    ale, states, actions = emu
    derived = [r for r in result["bytes"] if r["kind"] == "derived"]
    assert derived, "no derived byte on Breakout at this budget"
    ale.restoreState(states[1])
    rams, _ = play(ale, sticky_actions(np.random.default_rng(9), actions, 1500))
    for rec in derived:
        src = rec["derived"]
        assert set(src.get("sources", [src["source"]])) <= set(result["selected"]), rec["index"]
        if src["mapping"] == "computed":   # several sources: checked by intervention in the Asterix test
            continue
        x = rams[: len(rams) - src["lag"], src["source"]].astype(int)
        y = rams[src["lag"]:, rec["index"]].astype(int)
        if src["mapping"] == "copy":
            assert (y == x).all()
        elif src["mapping"] == "offset":
            assert ((x + src["offset"]) % 256 == y).all()
        elif src["mapping"] == "affine":
            assert np.allclose(src["a"] * x + src["b"], y, atol=0.5)
        else:   # a table: one value of the byte per value of the source, where the source took a recorded value
            table = {int(k): v for k, v in src["table"].items()}
            seen = np.isin(x, list(table))
            assert seen.mean() > 0.5 and all(table[a] == b for a, b in zip(x[seen], y[seen])), rec["index"]
        assert not rec["selected"] and result["excluded"][str(rec["index"])] == "derived"


def test_computed_bytes_on_asterix_follow_their_sources_on_emulator(tmp_path):
    """On Asterix (tiny budget) some bytes are derived with mapping "computed". In the test's own emulator, at states of
    its own random play, writing one of the recorded sources changes such a byte after one frame (against an
    untouched twin), and a value written into the byte itself is gone after one frame, at some state."""
    data, _ = run_json(tmp_path, "--total-frames", "3000", "--n-bases", "6", "--long-horizon", "0",
                       "--bitmap-contexts", "4", env_id="AsterixNoFrameskip-v4")
    computed = [r for r in data["bytes"] if r["kind"] == "derived" and r["derived"]["mapping"] == "computed"]
    assert computed, "expected computed bytes on Asterix"
    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.setInt("random_seed", 3)
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(roms.get_rom_path("asterix"))
    actions, rng, states = list(ale.getMinimalActionSet()), np.random.default_rng(5), []
    while len(states) < 10:
        play(ale, sticky_actions(rng, actions, 60))
        if ale.game_over():
            ale.reset_game()
        states.append(ale.cloneState(include_rng=True))
    for rec in computed:
        i, changed, overwritten = rec["index"], 0, 0
        assert set(rec["derived"]["sources"]) <= set(data["selected"]) and not rec["selected"]
        for s in states:
            after = play_from(ale, s, [Action.NOOP])[0][-1]
            ale.restoreState(s)
            now = ale.getRAM().copy()
            for j in rec["derived"]["sources"]:
                for v in (now[j] ^ 1, now[j] ^ 0x80):
                    ale.restoreState(s)
                    ale.setRAM(j, int(v))
                    changed += play(ale, [Action.NOOP])[0][-1][i] != after[i]
            ale.restoreState(s)
            ale.setRAM(i, int(now[i] ^ 0x80))
            overwritten += play(ale, [Action.NOOP])[0][-1][i] == after[i]
        assert changed > 0 and overwritten > 0, (i, changed, overwritten)


def test_computed_source_names_the_writes_that_changed_a_byte():
    """computed_source, on first-frame counts the test makes up: byte 5 changed after writes of byte 9 (3 of 4 trials)
    and byte 2 (1 of 4), not after byte 7's, and byte 8 (not a candidate) is ignored; a byte no write changed has no
    source."""
    mod = load_script()
    hits = {j: np.zeros(128, int) for j in (2, 7, 8, 9)}
    hits[9][5], hits[2][5], hits[8][5] = 3, 1, 4
    results = {j: {"trials": 4} for j in hits}
    src = mod.computed_source(5, hits, [2, 7, 9], results)
    assert src["mapping"] == "computed" and src["source"] == 9 and src["sources"] == [9, 2]
    assert src["trials_changed"] == {"9": [3, 4], "2": [1, 4]}
    assert mod.computed_source(6, hits, [2, 7, 9], results) is None


def test_sticky_action_id_replays_exactly(tmp_path):
    """On an ALE/*-v5 id (sticky actions 0.25) a null intervention (writing a byte's own value) differs in no trial,
    no base is dropped as non-deterministic, and produced_by records the id's sticky probability and frame skip."""
    data, _ = run_json(tmp_path, "--total-frames", "3000", "--n-bases", "6", "--long-horizon", "0",
                       "--bitmap-contexts", "4", env_id="ALE/Breakout-v5")
    pb = data["produced_by"]
    assert pb["env_settings"] == {"repeat_action_probability": 0.25, "frameskip": 4}
    assert pb["null_interventions"]["trials"] >= 6 * 8 and pb["null_interventions"]["differed"] == 0
    assert pb["nondeterministic_bases_dropped"] == 0
    assert sum(r["kind"] in ("scratch", "derived") for r in data["bytes"]) >= 1  # not everything "matters"


def test_x_position_role_moves_an_object_on_screen(result, emu):
    """A byte with role x-position: in the test's own emulator, holding it 24 above its own value moves what changes
    on the screen to the right of where holding it 24 below does, when px_per_unit > 0 (to the left when < 0). The
    changed pixels' centre is compared, so an object that moves a few pixels and overlaps itself counts too."""
    ale, states, actions = emu
    pos = [r for r in result["bytes"] if r.get("role", {}).get("role") == "x-position"
           and r["role"].get("position", {}).get("fit") == "line"]
    assert pos, [(r["index"], r["role"]["role"]) for r in result["bytes"] if r.get("role")]
    for rec in pos:
        i, k = rec["index"], rec["role"]["position"]["px_per_unit"]
        centres = []
        for state in states[2:8]:
            ale.restoreState(state)
            own = int(ale.getRAM()[i])
            if not 24 <= own < 256 - 24:
                continue
            shots = {}
            for v in (own, own - 24, own + 24):
                ale.restoreState(state)
                for _ in range(2):
                    ale.setRAM(i, v)
                    ale.act(Action.NOOP)
                shots[v] = ale.getScreen().copy()
            lo, hi = shots[own - 24] != shots[own], shots[own + 24] != shots[own]
            if lo.any() and hi.any():
                centres.append(np.nonzero(hi)[1].mean() - np.nonzero(lo)[1].mean())
        assert centres and np.sign(np.median(centres)) == np.sign(k), (i, centres, k)


def test_screen_state_role_changes_the_screen_on_emulator(result, emu):
    """A byte called "screen state" (no position, count or in-place fit held, but writes showed on the screen): in
    the test's own emulator, writing one of the values the script saw, at one of the test's states, and playing the
    same actions as an untouched twin, changes the screen within HORIZON frames in some trial. The role is only given
    to such bytes (a byte whose writes never show stays "unknown")."""
    ale, states, actions = emu
    rng = np.random.default_rng(11)
    drawn = [r for r in result["bytes"] if (r.get("role") or {}).get("role") == "screen state"]
    assert drawn, [(r["index"], r["role"]["role"]) for r in result["bytes"] if r.get("role")]
    for rec in drawn:
        i, hits = rec["index"], 0
        for s in states:
            acts = sticky_actions(rng, actions, HORIZON)
            twin = play_from(ale, s, acts)[1]
            ale.restoreState(s)
            own = int(ale.getRAM()[i])
            for v in [v for v in rec["values"] if v != own][:3]:
                ale.restoreState(s)
                ale.setRAM(i, int(v))
                hits += bool((play(ale, acts)[1] != twin).any())
        assert hits, (i, rec["role"])
        assert "changed the screen" in rec["role"]["evidence"]


def paddle_masks(emu):
    """The Breakout paddle byte held (2 frames) at values 20-60 away from its own, in the test's own emulator ->
    ({held value: (H, W) bool, the pixels that differ from the screen at its own value}, own value)."""
    ale, states, _ = emu
    paddle = paddle_byte()
    ale.restoreState(states[3])
    own = int(ale.getRAM()[paddle])
    shots = {}
    for v in [own] + [own + d for d in (-60, -40, -20, 20, 40, 60) if 0 <= own + d < 256]:
        ale.restoreState(states[3])
        for _ in range(2):
            ale.setRAM(paddle, v)
            ale.act(Action.NOOP)
        shots[v] = ale.getScreen().copy()
    moved = {v: shots[v] != shots[own] for v in shots if v != own}
    assert sum(m.any() for m in moved.values()) >= 3, "holding the paddle byte moved nothing"
    return moved, own


def test_in_place_and_event_masks_tell_a_redrawn_object_and_an_event_from_a_move(emu):
    """in_place / drop_event_masks on the paddle's masks from the test's own emulator: a moved paddle is not "in
    place", and its masks are all kept; one value that redraws the whole screen (an event) is dropped while the
    paddle's stay; a sprite redrawn in one box (a different shape at each value) is in place, in that box."""
    erv = load_script()
    moved, own = paddle_masks(emu)
    dims = next(iter(moved.values())).shape
    assert erv.in_place(moved, dims) is None
    assert erv.drop_event_masks(moved).keys() == moved.keys()
    event = {**moved, 999: np.ones(dims, bool)}
    assert erv.drop_event_masks(event).keys() == moved.keys()
    rng = np.random.default_rng(0)
    sprite = {}
    for v in moved:   # 8x8 box at rows 60-67, cols 30-37: a different pattern for each value, corners always drawn
        m = np.zeros(dims, bool)
        m[60:68, 30:38] = rng.random((8, 8)) < 0.5
        m[[60, 60, 67, 67], [30, 37, 30, 37]] = True
        sprite[v] = m
    assert erv.in_place(sprite, dims) == [60, 67, 30, 37]
    assert erv.place_record([[60, 67, 30, 37], [60, 67, 30, 37], None])["in_place_bases"] == 2
    assert erv.place_record([[60, 67, 30, 37], None, None]) is None


def test_grows_in_place_tells_a_bar_from_a_moved_object(emu):
    """grows_in_place on masks made in the test's own emulator: the Breakout paddle byte held at values away from its
    own moves the paddle (the changed regions share only the place it left: not a count), while a bar drawn over
    the same frames, longer for a larger value, grows in place (a count drawn as a bar)."""
    erv = load_script()
    moved, own = paddle_masks(emu)
    assert not erv.grows_in_place(moved, own)
    bar = {}
    for v in moved:   # a bar from column 8 whose length is the value's distance from own, over the paddle's frame
        m = np.zeros_like(moved[v])
        m[100:104, 8:8 + abs(v - own)] = True
        bar[v] = m
    assert erv.grows_in_place(bar, own)


# ---------------------------------------------------------------- roles from ALE's signals and from relations between bytes
def signal_trials(ale, states, index):
    """Write byte `index` at each state (own value +1, -1, ^0x10), emulate 1 NOOP frame, and compare ALE's reward and
    lives() with the unwritten frame. -> list of (reward change, lives change, written value - own value)."""
    out = []
    for state in states:
        ale.restoreState(state)
        own = int(ale.getRAM()[index])
        reward0, lives0 = ale.act(Action.NOOP), ale.lives()
        for v in sorted({(own + 1) % 256, (own - 1) % 256, own ^ 0x10} - {own}):
            ale.restoreState(state)
            ale.setRAM(index, v)
            reward = ale.act(Action.NOOP)
            out.append((reward - reward0, ale.lives() - lives0, v - own))
    return out


def follows_value(deltas):
    """1.0 when a signal's changes go with the sign of the written change (or always against it)."""
    s = [np.sign(d) * np.sign(dv) for d, dv in deltas if d != 0]
    return abs(float(np.mean(s))) if s else 0.0


def test_score_and_lives_roles_match_what_writing_the_byte_does_to_ale_signals(result, emu):
    """ALE computes reward and lives() from RAM: in the test's own emulator, a byte whose write changes the next
    frame's reward (lives()) in >= 75% of trials, with the written value's sign, is a score (lives) byte, and the
    extractor must call it so if it keeps it; every byte it calls score (lives) on reward (lives) evidence must
    change that signal when written here."""
    ale, states, _ = emu
    expect = {"score": set(), "lives": set()}
    changed = {"score": set(), "lives": set()}
    for i in range(128):
        trials = signal_trials(ale, states[1:8], i)
        for role, k in (("score", 0), ("lives", 1)):
            deltas = [(t[k], t[2]) for t in trials]
            hits = sum(d != 0 for d, _ in deltas)
            if hits:
                changed[role].add(i)
            if hits >= 0.75 * len(deltas) and follows_value(deltas) >= 0.8:
                expect[role].add(i)
    assert expect["score"] and expect["lives"], expect     # Breakout's score digits and lives byte
    recs = {r["index"]: r for r in result["bytes"]}
    for role, indices in expect.items():
        for i in indices:
            rec = recs[i]
            if rec["kind"] in ("state", "latent", "stored", "input-driven", "derived"):
                assert role in rec["role"]["role"], (role, i, rec["kind"], rec.get("role"))
    # a lives byte named from play is the count itself: an affine function of lives() in the test's own play
    rng = np.random.default_rng(7)
    rams, lives = [], []
    for state in states[1:8]:
        ale.restoreState(state)
        for a in sticky_actions(rng, list(ale.getMinimalActionSet()), 200):
            ale.act(a)
            rams.append(ale.getRAM().astype(np.int64))
            lives.append(ale.lives())
    rams, lives = np.array(rams), np.array(lives)
    for rec in result["bytes"]:
        r = rec.get("role") or {}
        if r.get("role") == "lives" and "changes during play" in r["evidence"] and len(np.unique(lives)) >= 2:
            a, b = np.polyfit(lives, rams[:, rec["index"]], 1)
            assert np.mean(np.abs(rams[:, rec["index"]] - (a * lives + b)) < 0.5) >= 0.9, (rec["index"], r)
    for rec in result["bytes"]:
        r = rec.get("role") or {}
        if "score" in r.get("role", "") and "ALE's reward" in r["evidence"]:
            assert rec["index"] in changed["score"], (rec["index"], r)
        if r.get("role") == "lives" and "ale.lives()" in r["evidence"] and "writing" in r["evidence"]:
            assert rec["index"] in changed["lives"], (rec["index"], r)


def test_velocity_and_direction_roles_match_the_position_bytes_moves(result, emu):
    """A byte called the velocity of byte N equals (plus or minus, as its evidence says) N's frame-to-frame change
    (a speed: has its sign), and a byte called N's direction (or a bit of it) fixes the sign of that change, on >= 80% of the frames N moved
    in the test's own random play (not the extractor's)."""
    ale, states, actions = emu
    rng = np.random.default_rng(5)
    rams = []
    for state in states[1:8]:
        ale.restoreState(state)
        rams.append(play(ale, sticky_actions(rng, actions, 120))[0].astype(np.int64))
    motion = [r for r in result["bytes"] if re.match(r"(velocity|direction) of byte \d+", (r.get("role") or {}).get("role", ""))]
    assert motion, [(r["index"], r["role"]["role"]) for r in result["bytes"] if r.get("role")]  # the ball's
    for rec in motion:
        role, i = rec["role"]["role"], rec["index"]
        j = int(re.search(r"of byte (\d+)", role).group(1))
        bit = re.search(r"bit (\d)", role)
        next_frame = "the next frame" in rec["role"]["evidence"]
        d = np.concatenate([((r[1:, j] - r[:-1, j] + 128) % 256) - 128 for r in rams])
        v = np.concatenate([r[1:, i] if next_frame else r[:-1, i] for r in rams])
        moved = d != 0
        assert moved.sum() >= 8, (i, j, int(moved.sum()))
        if role.startswith("velocity"):
            sign = -1 if rec["role"]["evidence"].startswith("minus") else 1
            signed = ((v[moved] + 128) % 256) - 128
            if "has the sign of" in rec["role"]["evidence"]:   # a speed: the move goes the way its sign says
                match = np.mean(np.sign(d[moved]) == sign * np.sign(signed))
            else:                                              # the step itself
                match = np.mean(d[moved] == sign * signed)
        else:
            key = (v[moved] >> int(bit.group(1))) & 1 if bit else v[moved]
            s = np.sign(d[moved])
            match = sum(max((s[key == k] > 0).sum(), (s[key == k] < 0).sum()) for k in np.unique(key)) / moved.sum()
        assert match >= 0.8, (i, role, match)
