"""End-to-end tests of probe_function_vectors.py and probe_report.py.

The chain is the real one: extract_ram_vars.py (tiny budget) -> ppo_ram_breakout.py and ppo_pixel_breakout.py
(256 steps each) -> the probe (tiny budget) -> the report, linked only through the files they write.
Which RAM byte is the paddle is found here from the emulator (no address tables).
"""
import copy
import hashlib
import html
import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import matplotlib.image
import numpy as np
import pytest
import torch
import torch.nn as nn
from ale_py import Action, ALEInterface, LoggerMode, roms

from conftest import ROOT, assert_clean_error, run_script

ENV = "BreakoutNoFrameskip-v4"
TRAIN = ["--num-envs", "2", "--num-steps", "32", "--total-timesteps", "256", "--seed", "1", "--torch-threads", "1"]
TINY = ["--num-base-states", "6", "--samples-per-var", "8", "--top-k", "4", "--rollout-steps", "60",
        "--importance-steps", "64", "--causal-pairs", "16", "--random-directions", "3", "--torch-threads", "1"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HIDDEN = ["relu1", "relu2", "relu3", "relu_fc"]


def screen_dims(game):
    """(rows, cols) of the game's screen, from the emulator."""
    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.loadROM(roms.get_rom_path(game))
    return tuple(int(x) for x in ale.getScreenDims())


def paddle_from_emulator():
    """Move the paddle RIGHT / LEFT without FIRE (the ball stays out of play, so only the paddle moves):
    -> (RAM index whose value tracks the paddle's pixel column, (first row, last row) of the paddle)."""
    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(roms.get_rom_path("breakout"))
    ale.reset_game()
    screens, rams = [], []
    for action in [Action.RIGHT] * 60 + [Action.LEFT] * 120 + [Action.RIGHT] * 60:
        ale.act(action)
        screens.append(ale.getScreenGrayscale().astype(int))
        rams.append(ale.getRAM().astype(float))
    screens, rams = np.array(screens), np.array(rams)
    moving = (screens != screens[0]).any(0)
    rows = np.nonzero(moving.any(1))[0]
    cols = np.array([np.nonzero((s > 0) & moving)[1].mean() for s in screens])
    corr = np.array([abs(np.corrcoef(rams[:, i], cols)[0, 1]) if rams[:, i].std() > 0 else 0.0 for i in range(128)])
    assert corr.max() > 0.95, "no RAM byte tracks the paddle"
    return int(corr.argmax()), (int(rows.min()), int(rows.max()))


def find_checkpoint(runs: Path, agent: str) -> Path:
    found = [p for p in runs.glob("*/checkpoint.pt") if torch.load(p, map_location="cpu", weights_only=True)["agent"] == agent]
    assert len(found) == 1, (agent, found)
    return found[0]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Tiny real pipeline; the probe runs once and every test reads its outputs."""
    d = tmp_path_factory.mktemp("probe")
    run_script("extract_ram_vars.py", "--env-id", ENV, "--total-frames", "2000", "--seed", "1", "--out-dir", d / "ram_vars", cwd=d)
    ram_vars = d / "ram_vars" / f"{ENV}.json"
    run_script("ppo_ram_breakout.py", "--env-id", ENV, "--ram-vars", ram_vars, "--runs-dir", d / "runs", *TRAIN, cwd=d)
    run_script("ppo_pixel_breakout.py", "--env-id", ENV, "--runs-dir", d / "runs", *TRAIN, cwd=d)
    pixel, ram = find_checkpoint(d / "runs", "pixel"), find_checkpoint(d / "runs", "ram")
    paddle, paddle_rows = paddle_from_emulator()
    rv = json.loads(ram_vars.read_text())
    selected = rv["selected"]
    assert paddle in selected, f"extract_ram_vars.py did not select the paddle byte ram[0x{paddle:02x}]"
    # two brick bytes too: two-valued on deterministic screens, they saturated the old eta-based unit labels
    bricks = [b["index"] for b in rv["bytes"] if b["selected"] and b["kind"] == "bitmap" and b["index"] != paddle][:2]
    assert len(bricks) == 2, "extract_ram_vars.py selected fewer than 2 bitmap (brick) bytes"
    include = [paddle] + bricks
    inputs = ["--pixel-checkpoint", pixel, "--ram-checkpoint", ram, "--ram-vars", ram_vars]
    proc = run_script("probe_function_vectors.py", *inputs, "--out-dir", d / "out", *TINY, "--include-vars",
                      *[str(i) for i in include], cwd=d)
    res = json.loads((d / "out" / "results.json").read_text())
    with np.load(d / "out" / "activations.npz") as z:
        npz = {k: z[k] for k in z.files}
    return {"dir": d, "out": d / "out", "inputs": inputs, "ram_vars": ram_vars, "pixel": pixel, "ram": ram,
            "paddle": paddle, "paddle_rows": paddle_rows, "bricks": bricks, "include": include, "selected": selected,
            "res": res, "npz": npz, "stdout": proc.stdout}


def test_results_and_npz_contents(chain):
    res, z = chain["res"], chain["npz"]
    # every variable carries the extractor's description of its byte (ram vars version 2), shown in the report
    rv = json.loads(chain["ram_vars"].read_text())
    for v in res["variables"]:
        assert v["role"] == (rv["bytes"][v["index"]].get("role") or {}).get("role"), v["name"]
    roles = {v["role"] for v in res["variables"] if v["role"]}
    page = (chain["out"] / "report.html").read_text()
    assert roles and all(r in page for r in roles), roles
    assert res["format"] == "memory-pixel-interp/probe" and res["env_id"] == ENV and res["game"] == "breakout"
    for key in ("preprocessing_check", "restore_check", "importance", "variables", "layers", "counts", "timing"):
        assert key in res, key
    # with a memory agent, step 1 ranks by it, and the atlas says so
    assert res["ranking"]["by"] == "memory-agent importance" and res["ranking"]["agent"] == "memory"
    assert "ranked by how much the memory agent" in page and "memory-agent importance" in page
    # our observation equals AtariVectorEnv's, and restoring a base state reproduces the rollout's frames
    assert res["preprocessing_check"]["compared"] and res["preprocessing_check"]["max_abs_diff"] == 0
    assert res["restore_check"]["identical_to_rollout"] == res["restore_check"]["base_states"] == 6
    # importance: every selected byte ranked, best first; probed = top 4 + the included paddle and brick bytes
    rk = res["importance"]["ranking"]
    assert sorted(s["index"] for s in rk) == sorted(chain["selected"])
    assert [s["tv"] for s in rk] == sorted((s["tv"] for s in rk), reverse=True)
    expected = [s["index"] for s in rk[:4]]
    expected += [i for i in chain["include"] if i not in expected]
    assert [v["index"] for v in res["variables"]] == expected == z["var_index"].tolist()
    assert [str(n) for n in z["var_names"]] == [f"ram[0x{i:02x}]" for i in expected]
    # arrays: shapes and dtypes as documented
    N, V = len(z["sample_var"]), len(expected)
    H, W = screen_dims("breakout")
    assert N == res["counts"]["samples"]
    # conv maps and agent frames of the unperturbed samples only (default --save-maps reference)
    ref = np.nonzero(z["sample_role"] <= 1)[0]
    M = len(ref)
    assert z["map_rows"].tolist() == ref.tolist() and res["saved"] == {"maps": "reference", "map_rows": M, "samples": N}
    shapes = {"act_relu1": (M, 32, 20, 20), "act_relu2": (M, 64, 9, 9), "act_relu3": (M, 64, 7, 7),
              "act_relu1_mean": (N, 32), "act_relu2_mean": (N, 64), "act_relu3_mean": (N, 64),
              "act_relu_fc": (N, 512), "act_actor": (N, 4), "act_critic": (N,), "ram": (N, 128), "obs_last": (M, 84, 84),
              "diff_raw": (V, H, W), "diff_obs": (V, 84, 84), "base_rgb": (6, H, W, 3), "base_ram": (6, 128),
              "fv_relu1": (V, 12800), "fv_relu_fc": (V, 512), "probe_w_relu3": (V, 3136), "unit_corr_relu_fc": (512, V),
              "unit_eta_relu2": (64, V), "unit_eta_relu_fc": (512, V), "unit_effect_relu1": (32, V),
              "unit_effect_relu_fc": (512, V), "unit_spread_relu2": (64,)}
    for k, shape in shapes.items():
        assert z[k].shape == shape, (k, z[k].shape)
    assert z["act_relu1"].dtype == np.float16 and z["act_relu_fc"].dtype == np.float32 and z["ram"].dtype == np.uint8
    for k in ("relu1", "relu2", "relu3"):  # the saved means are the means of the maps
        assert np.allclose(z[f"act_{k}_mean"][ref], z[f"act_{k}"].astype(np.float32).mean((2, 3)), atol=1e-3)
    # every value is the one really present in RAM; kept draws changed the byte against their control
    var = z["sample_var"]
    rows = np.nonzero(var >= 0)[0]
    assert (z["value_actual"][rows] == z["ram"][rows, z["var_index"][var[rows]]]).all()
    draws = (z["sample_role"] == 2) & z["kept"]
    assert draws.any()
    assert (z["value_actual"][draws] != z["value_control"][draws]).all()
    assert (z["base_id"][z["control_of"][draws]] == z["base_id"][draws]).all()
    assert set(np.unique(z["base_id"][z["is_test"]])) == set(res["counts"]["test_base_states"])
    # every hidden unit labelled with the address of its largest effect among those large in absolute terms too
    # (or none: dead, silent or weak), and the printed speed
    a = res["args"]
    for layer, n in (("relu1", 32), ("relu2", 64), ("relu3", 64), ("relu_fc", 512)):
        L = res["layers"][layer]
        assert [u["unit"] for u in L["units"]] == list(range(n))
        eff, peak = z[f"unit_effect_{layer}"], z[f"unit_peak_{layer}"]
        change = z[f"unit_peak_change_{layer}"] / L["typical_peak"]
        assert eff.shape == change.shape == (n, V) and peak.shape == (n,)
        large = (eff >= a["min_unit_effect"]) & (eff > 0) & (change >= a["min_unit_peak_change"])
        for u in L["units"]:
            silent = u["status"] != "dead" and peak[u["unit"]] < a["silent_fraction"] * L["typical_peak"]
            assert (u["status"] == "silent") == silent, (layer, u)
            if u["var"] >= 0:
                row = np.where(large[u["unit"]], eff[u["unit"]], -1)
                assert u["status"] == "labelled" and u["index"] == expected[u["var"]] and u["var"] == row.argmax()
                assert abs(u["effect"] - row.max()) < 1e-5 and abs(u["peak_change"] - change[u["unit"], u["var"]]) < 1e-4
                assert abs(u["specificity"] - row.max() / eff[u["unit"]].sum()) < 1e-5 and 0 < u["specificity"] <= 1
            else:
                assert u["status"] in ("dead", "silent", "weak") and (u["status"] != "weak" or not large[u["unit"]].any())
        assert sum(u["var"] < 0 for u in L["units"]) == L["dead_units"] + L["weak_units"] + L["silent_units"]
    assert re.search(r"[\d.]+ probe samples/s", chain["stdout"])


def test_unit_labels_are_not_saturated(chain):
    """Screens are deterministic, so for a two-valued byte (bricks) a correlation ratio is 1.00 for any unit
    that responds at all: labelling by it gave nearly every channel the same brick byte at 1.00. The effect
    size must instead spread the labels: the paddle, which moves across relu1's whole receptive field, labels
    a good share of relu1's channels, and the labelled strengths are not one saturated value."""
    res, paddle = chain["res"], chain["paddle"]
    conv = [u for k in ("relu1", "relu2", "relu3") for u in res["layers"][k]["units"] if u["var"] >= 0]
    assert len(conv) > 0.9 * (32 + 64 + 64)
    top_share = max(np.unique(np.round([u["effect"] for u in conv], 2), return_counts=True)[1]) / len(conv)
    assert top_share < 0.25, f"{top_share:.0%} of the labelled conv channels have the same strength"
    relu1 = [u["index"] for u in res["layers"]["relu1"]["units"]]
    assert relu1.count(paddle) >= 8, {f"0x{i:02x}" if i is not None else None: relu1.count(i) for i in set(relu1)}
    for k in ("relu1", "relu2", "relu3"):  # no brick byte labels almost every channel
        idx = [u["index"] for u in res["layers"][k]["units"]]
        assert max(idx.count(b) for b in chain["bricks"]) < 0.75 * len(idx), (k, chain["bricks"])


def test_paddle_region_is_the_paddle_rows(chain):
    v = next(v for v in chain["res"]["variables"] if v["index"] == chain["paddle"])
    region = v["screen_region"]["raw"]
    assert region is not None, "changing the paddle byte changed nothing on the screen"
    r0, r1, _, _ = region["bbox"]
    p0, p1 = chain["paddle_rows"]
    # the paddle's rows, plus at most 12 rows above them: over the 16 held frames the ball can bounce off the moved
    # paddle (or miss it) in some draws, and those few ball pixels can pass the region threshold at this tiny budget
    assert p0 - 12 <= r0 <= p0 + 2 and p1 - 2 <= r1 <= p1 + 4, (region["bbox"], chain["paddle_rows"])
    assert r0 > 0.75 * screen_dims("breakout")[0]  # bottom of the screen
    assert v["samples"]["kept"] >= 10 and v["samples"]["screen_changed_fraction"] > 0.9


def test_paddle_track_is_a_line_of_boxes(chain):
    """The screen picture of a position byte is its track: the paddle's box at each held value, in the paddle's rows,
    moving along x in step with the value (not every pixel that changed over the held frames)."""
    v = next(v for v in chain["res"]["variables"] if v["index"] == chain["paddle"])
    assert v["role"] == "x-position", v["role"]
    track = v["screen_track"]
    assert track["base"] is not None and len(track["boxes"]) >= 3, track
    p0, p1 = chain["paddle_rows"]
    boxes = np.array([b["bbox"] for b in track["boxes"]])
    assert (boxes[:, 0] >= p0 - 2).all() and (boxes[:, 1] <= p1 + 2).all(), (boxes, chain["paddle_rows"])
    # about one paddle wide (16 px; more where the paddle was still moving over the held frames), not the whole row
    assert np.median(boxes[:, 3] - boxes[:, 2]) <= 48, boxes
    values = np.array([b["value"] for b in track["boxes"]])
    rank = lambda a: np.argsort(np.argsort(a, kind="stable"), kind="stable")
    assert abs(np.corrcoef(rank(values), rank(boxes[:, 2]))[0, 1]) >= 0.9, (values, boxes)   # in step with the value
    assert track["axis"] == "x" and np.ptp(boxes[:, 2]) > 24, boxes
    page = (chain["out"] / "report.html").read_text()
    assert f"track: {len(boxes)} boxes along x" in page


def test_probe_on_screen_byte_beats_shuffled_control(chain):
    v = next(v for v in chain["res"]["variables"] if v["index"] == chain["paddle"])
    conv = [v["probe"][k] for k in ("relu1", "relu2", "relu3")]
    assert all(p["metric"] == "r2" and p["score"] is not None for p in conv)
    margin = max(p["score"] - p["control"] for p in conv)
    assert margin > 0.2, v["probe"]


def test_causal_test_machinery(chain):
    """The oracle steer (the pair's true activation difference) must land on the target downstream;
    function vector and random directions are both reported."""
    seen = 0
    for v in chain["res"]["variables"]:
        for k, c in (v["causal"] or {}).items():
            if not c:
                continue
            assert set(c) >= {"function_vector", "random", "oracle", "pairs"}
            gap = c["oracle"]["gap_closed_actor"]
            if gap is not None:
                assert gap > 0.95, (v["name"], k, c["oracle"])
                seen += 1
    assert seen > 0


def test_save_maps_all(chain, tmp_path):
    """--save-maps all writes every sample's conv maps; same seed -> the same analysis and the same maps on
    the rows the default file keeps."""
    run_script("probe_function_vectors.py", *chain["inputs"], "--out-dir", tmp_path / "all", *TINY, "--include-vars",
               *[str(i) for i in chain["include"]], "--save-maps", "all", "--no-report", cwd=chain["dir"])
    z, ref = chain["npz"], chain["npz"]["map_rows"]
    with np.load(tmp_path / "all" / "activations.npz") as full:
        N = len(full["sample_var"])
        assert full["map_rows"].tolist() == list(range(N)) and full["obs_last"].shape == (N, 84, 84)
        for k in ("relu1", "relu2", "relu3"):
            assert full[f"act_{k}"].shape[0] == N and np.array_equal(full[f"act_{k}"][ref], z[f"act_{k}"])
            assert np.array_equal(full[f"act_{k}_mean"], z[f"act_{k}_mean"])
        for k in ("fv_relu1", "unit_effect_relu2", "probe_w_relu_fc"):
            assert np.array_equal(full[k], z[k]), k
    assert (tmp_path / "all" / "activations.npz").stat().st_size > (chain["out"] / "activations.npz").stat().st_size


def chromium(page: Path, tmp_path: Path, *flags):
    """Open `page` from disk in headless Chromium at 1,400 px width (--dump-dom unless flags say otherwise) ->
    (the process, its console errors)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / ('profile-' + page.stem)}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=5000", *(flags or ("--window-size=1400,1000", "--dump-dom")), page.as_uri()]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return p, [line for line in p.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


# Run in the page after it loads: click the first labelled relu_fc unit, then measure. Every element must lie within
# the 1,400 px page (none wider than it, no horizontal scroll) and every text be >= 11 px (inside an SVG: its font size
# times the SVG's scale). The result goes into <body data-layout>, which --dump-dom prints.
MEASURE = """<script>
window.addEventListener('load', function () {
  var out = {overflow: [], small: [], texts: 0}, W = document.documentElement.clientWidth;
  var b = document.querySelector(".grid[data-layer='relu_fc'] .u:not([data-var='-1'])");
  if (b) { b.click(); out.clicked = Number(b.dataset.unit); }
  var f = document.querySelector('.findings'), h = document.querySelector('figure.heat img');
  out.findings = f ? [f.getBoundingClientRect().top, f.getBoundingClientRect().bottom, f.textContent] : null;
  out.heat = h ? [h.getBoundingClientRect().top, h.getBoundingClientRect().bottom] : null;
  var p = document.getElementById('panel-relu_fc');
  out.panel = {text: p.textContent, frames: p.querySelectorAll('svg image').length, boxes: p.querySelectorAll('svg rect').length};
  if (document.documentElement.scrollWidth > W) { out.overflow.push('page ' + document.documentElement.scrollWidth + ' > ' + W); }
  document.querySelectorAll('body *').forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > W + 1 || r.left < -1)) {
      out.overflow.push(el.tagName + '.' + el.className + ' ' + Math.round(r.left) + '..' + Math.round(r.right));
    }
  });
  var tw = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT), n;
  while ((n = tw.nextNode())) {
    var el = n.parentElement;
    if (!n.textContent.trim() || el.closest('script, style')) { continue; }
    out.texts++;
    var size = parseFloat(getComputedStyle(el).fontSize), svg = el.closest('svg');
    if (svg && svg.viewBox.baseVal && svg.viewBox.baseVal.width) { size *= svg.getBoundingClientRect().width / svg.viewBox.baseVal.width; }
    if (size < 11) { out.small.push(size.toFixed(1) + ' px: ' + n.textContent.trim().slice(0, 40)); }
  }
  document.body.setAttribute('data-layout', JSON.stringify(out));
});
</script></body>"""


def layout(page: Path, tmp_path: Path):
    """The page with MEASURE appended, rendered at 1,400 px -> (measurements, console errors, dumped DOM)."""
    measured = tmp_path / f"measured-{page.stem}.html"
    measured.write_text(page.read_text().replace("</body>", MEASURE))
    proc, errors = chromium(measured, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'data-layout="([^"]*)"', proc.stdout)
    assert m, "the measuring script did not run"
    return json.loads(html.unescape(m.group(1))), errors, proc.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium; not in "
                    "the Docker image: on its Ubuntu chromium is a snap, and snaps do not run in a container)")
def test_atlas_in_chromium(chain, tmp_path):
    """The atlas opens from disk in headless Chromium without console errors; at 1,400 px no element is wider
    than the page and no text is under 11 px; a click on a unit shows its label, its effects and its natural
    frames with their boxes; a screenshot renders. The detectors are checked on broken copies first."""
    report = chain["out"] / "report.html"
    page = report.read_text()
    assert "data:image/png;base64," in page and "http://" not in page and "https://" not in page  # nothing fetched
    # the detectors must see a broken page, a too wide figure and a too small text
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace("</body>", "<script>undefinedFunction();</script></body>"))
    _, errors = chromium(broken, tmp_path)
    assert any("undefinedFunction" in e for e in errors), "console-error detection does not work"
    bad = tmp_path / "bad.html"
    bad.write_text(page.replace("<section id='units'>", "<div style='width:1600px'>a wide figure</div><section id='units'>")
                   .replace("<h2>Variables", "<span style='font-size:9px'>tiny text</span><h2>Variables"))
    found, _, _ = layout(bad, tmp_path)
    assert any("DIV" in o for o in found["overflow"]) and any("tiny text" in t for t in found["small"]), found

    found, errors, dom = layout(report, tmp_path)
    assert not errors, errors
    # the findings and their variable x layer picture are the first thing on the page: in the first 1,000 px
    assert found["findings"] and found["heat"], found
    assert 0 < found["findings"][0] < found["findings"][1] <= 1000 and 0 < found["heat"][0] < found["heat"][1] <= 1000, found
    for point in ("Decodes beyond both controls", "Steers the policy", "Labels units", "Does not represent"):
        assert point in found["findings"][2], point
    assert not found["overflow"], found["overflow"][:10]
    assert not found["small"], found["small"][:10]
    assert found["texts"] > 500
    m = re.search(r'data-rendered="(\d+)"', dom)
    # the script ran to the end; one picture per variable, and the findings' one
    assert m and int(m.group(1)) == page.count("<img ") == len(chain["res"]["variables"]) + 1
    # the click: the unit's label (its address), its effects and its top natural frames, each boxed
    unit = chain["res"]["layers"]["relu_fc"]["units"][found["clicked"]]
    assert unit["var"] >= 0 and f"unit {unit['unit']}" in found["panel"]["text"] and unit["name"] in found["panel"]["text"]
    n_frames = int((chain["npz"]["top_frame_relu_fc"][unit["unit"]] >= 0).sum())
    assert found["panel"]["frames"] == found["panel"]["boxes"] == n_frames > 0, found["panel"]
    # a screenshot at 1,400 px renders something
    shot = tmp_path / "atlas.png"
    proc, errors = chromium(report, tmp_path, "--window-size=1400,3000", f"--screenshot={shot}")
    assert proc.returncode == 0 and not errors, proc.stderr[-2000:]
    img = matplotlib.image.imread(shot)
    assert img.shape[:2] == (3000, 1400) and img[..., :3].std() > 0.05


def test_verdicts_need_a_margin_over_the_controls(chain):
    """A score counts as decodable only when it beats the best of its control draws (every shuffled-label fit, every
    random-weights seed) by the stated margin; the atlas shows every other score as n.d. (not decodable) with its
    reason, never bare. Steering verdicts follow their stated rule too."""
    res, page = chain["res"], (chain["out"] / "report.html").read_text()
    rules, seeds = res["verdict_rules"], res["args"]["random_networks"]
    assert str(rules["margin"]) in page and res["natural"]["random_network"]["seeds"] == list(range(seeds))
    not_decodable = 0
    for v in res["variables"]:
        card = re.search(rf"<details class='var' id='{re.escape(html.escape(v['name']))}'.*?</details>", page).group(0)
        for part, scores, controls in (("natural", v["natural"], ("control_scores", "random_network_seeds")),
                                       ("interventions", v["probe"], ("control_scores",))):
            row = card[card.index(f"<th class='l'>{part}</th>"):].split("</tr>")[0].split("<td")[1:]
            for k, cell in zip(LAYERS, row):
                p, ver = scores[k], v["verdict"][part][k]
                if p["score"] is None:
                    assert ver["decodable"] is None and ver["reason"] == p["reason"], (v["name"], part, k)
                    continue
                if part == "natural":
                    assert len(p["random_network_seeds"]) == seeds and abs(np.mean(p["random_network_seeds"]) - p["random_network"]) < 1e-9
                assert len(p["control_scores"]) == res["args"]["control_draws"] and abs(np.mean(p["control_scores"]) - p["control"]) < 1e-9
                lead = p["score"] - max(max(p[c]) for c in controls)
                assert ver["margin"] == rules["margin"] and abs(ver["lead"] - lead) < 1e-9, (v["name"], part, k, ver)
                assert ver["decodable"] == (lead >= rules["margin"]), (v["name"], part, k, ver)
                assert cell.startswith(" class='nd'") == (not ver["decodable"]), (v["name"], part, k, cell)
                if not ver["decodable"]:
                    not_decodable += 1
                    assert ver["reason"] and cell.startswith(f" class='nd' title='{html.escape(ver['reason'], quote=True)}'>n.d.")
        for k in HIDDEN:
            c, ver = v["causal"].get(k), v["verdict"]["steering"][k]
            if not c or c["function_vector"]["cos_actor"] is None:
                assert ver["steers"] is None
                continue
            f, r = c["function_vector"]["cos_actor"], c["random"]["cos_actor"]
            sd = max(r["std"], 0.05)
            assert ver["steers"] == ("with" if f > r["mean"] + 2 * sd and f > 0 else "against" if f < r["mean"] - 2 * sd and f < 0
                                     else "unclear"), (v["name"], k, ver)
    assert not_decodable > 0  # an untrained agent: some scores do not beat their controls


def test_object_centre_finds_the_paddle():
    """The label-picture check finds a position byte's object on a frame by setting the byte to other values there
    (object_centre): for the paddle byte, the centre it finds is the paddle's, read off the screen's pixels."""
    paddle, (p0, p1) = paddle_from_emulator()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    probe = importlib.import_module("probe_function_vectors")
    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(roms.get_rom_path("breakout"))
    ale.reset_game()
    buf = np.zeros(ale.getScreenDims(), np.uint8)
    states, values = [], set()
    for t, action in enumerate([Action.RIGHT] * 40 + [Action.LEFT] * 80):
        ale.act(action)
        values.add(int(ale.getRAM()[paddle]))
        if t % 20 == 19:
            states.append((ale.cloneState(), int(ale.getRAM()[paddle])))
    values = sorted(values)[::max(1, len(values) // 6)]
    for state, own in states:
        centre = probe.object_centre(ale, state, [Action.NOOP] * 2, paddle, own, values, buf)
        ale.restoreState(state)
        for _ in range(2):
            ale.act(Action.NOOP)
        band = ale.getScreenGrayscale()[p0:p1 + 1, 8:152]  # the paddle's rows, inside the side walls
        cols = np.nonzero(band.any(0))[0] + 8
        # inside the paddle (at a wall, values past it leave part of the paddle in place: the centre is off its middle)
        assert centre is not None and p0 - 1 <= centre[0] <= p1 + 1 and cols.min() - 1 <= centre[1] <= cols.max() + 1, (centre, cols)


def test_label_picture_agreement(chain):
    """Every labelled unit is checked against its top natural frames (a position byte: its object's centre in the
    box; any other: some of its object in the box); the counts add up per layer; for paddle units the verdict per
    frame matches the paddle's pixels in the saved frame (its rows, and the columns inside the walls) against the box;
    the atlas reports it per layer."""
    res, z, page = chain["res"], chain["npz"], (chain["out"] / "report.html").read_text()
    roles = [v["role"] for v in res["variables"]]
    checked, pixel_inside, agree = 0, 0, 0
    p0, p1 = (round(r * 84 / screen_dims("breakout")[0]) for r in chain["paddle_rows"])
    for k in HIDDEN:
        L, frames = res["layers"][k], z[f"top_frame_{k}"]
        units = [u for u in L["units"] if u["var"] >= 0 and roles[u["var"]] in ("x-position", "y-position") and (frames[u["unit"]] >= 0).any()]
        labelled = [u for u in L["units"] if u["var"] >= 0 and (frames[u["unit"]] >= 0).any()]
        assert L["agreement"]["units"] == len(units) and L["agreement"]["all"]["units"] == len(labelled)
        assert all("agreement" not in u for u in L["units"] if u not in labelled)
        for u in labelled:
            a = u["agreement"]
            assert a["kind"] == ("centre" if u in units else "overlap")
            assert a["frames"] == (frames[u["unit"]] >= 0).sum() and 0 <= a["agree"] <= a["found"] <= a["frames"]
            assert a["agrees"] == (a["agree"] / a["frames"] >= 0.5) and abs(a["share"] - a["agree"] / a["frames"]) < 1e-9
            if u["index"] == chain["paddle"] and u in units:
                for f, b in zip(frames[u["unit"]], z[f"top_box_{k}"][u["unit"]]):
                    if f < 0:
                        continue
                    cols = np.nonzero(z["top_stacks"][f, -1, p0:p1 + 1, 5:79].any(0))[0] + 5
                    row, col = (p0 + p1) / 2, cols.mean() if len(cols) else -99
                    pixel_inside += b[0] - 1 <= row <= b[1] + 1 and b[2] - 1 <= col <= b[3] + 1
                    checked += 1
                agree += a["agree"]
        if units:
            assert L["agreement"]["agreeing"] == sum(u["agreement"]["agrees"] for u in units) and 0 <= L["agreement"]["chance"] <= 1
            assert f"label–picture agreement {L['agreement']['agreeing']} of {len(units)}" in page
    assert checked > 0, "no unit labelled with the paddle byte"
    assert abs(agree - pixel_inside) <= 0.1 * checked + 1, (agree, pixel_inside, checked)


def test_atlas_one_colour_per_address(chain, tmp_path):
    """Every badge, bar and card border of an address has the one colour of that address (distinct addresses,
    distinct colours), the units' panels get the same colours, and --open-cards unfolds that many cards."""
    page = (chain["out"] / "report.html").read_text()
    names = [v["name"] for v in chain["res"]["variables"]]
    seen = {}
    for colour, name in re.findall(r"<span class='badge' style='background:(#[0-9a-f]{6});color:#[0f]{3}' title='([^']*)'>", page):
        seen.setdefault(html.unescape(name), set()).add(colour)
    assert sorted(seen) == sorted(names) and all(len(c) == 1 for c in seen.values()), seen
    colour = {n: c.pop() for n, c in seen.items()}
    assert len(set(colour.values())) == len(names)
    for name in names:
        card = re.search(rf"<details class='var' id='{re.escape(html.escape(name))}' style='border-left-color:(#[0-9a-f]{{6}})'", page)
        assert card.group(1) == colour[name], name
    data = json.loads(re.search(r"<script type='application/json' id='atlas-data'>(.*?)</script>", page, re.S).group(1))
    assert {v["name"]: v["colour"] for v in data["vars"]} == colour
    res = json.loads((chain["out"] / "results.json").read_text())  # a screen track's base out of range: its region
    tracked = [v for v in res["variables"] if (v.get("screen_track") or {}).get("boxes")]  # picture instead
    assert tracked
    tracked[0]["screen_track"]["base"] = len(chain["npz"]["base_rgb"])
    (tmp_path / "results.json").write_text(json.dumps(res))
    shutil.copy(chain["out"] / "activations.npz", tmp_path)
    run_script("probe_report.py", "--out-dir", tmp_path, "--open-cards", "2", cwd=tmp_path)
    folded = (tmp_path / "report.html").read_text()
    assert len(re.findall(r"<details class='var' [^>]* open>", folded)) == 2 < len(names)


def test_bad_inputs(chain, tmp_path):
    d, inputs = chain["dir"], chain["inputs"]
    out = chain["out"]
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    probe = lambda *a: run_script("probe_function_vectors.py", *a, "--out-dir", out, *TINY, cwd=d, check=False)  # noqa: E731

    # ram vars file that is not the one the memory agent was trained with, and a checkpoint that carries no record of
    # its bytes (one that does is probed with it: tests/test_probe_ram_vars.py)
    rv = json.loads(chain["ram_vars"].read_text())
    rv["selected"], dropped = rv["selected"][:-1], rv["selected"][-1]
    rv["bytes"][dropped] = {"index": dropped}  # and no record of the byte it leaves out (one that describes every
    other = tmp_path / "other_ram_vars.json"   # byte of the agent is probed with it: tests/test_probe_ram_vars.py)
    other.write_text(json.dumps(rv))
    ck = torch.load(chain["ram"], map_location="cpu", weights_only=True)
    ck["ram_vars"] = None
    bare = tmp_path / "ram_no_record.pt"
    torch.save(ck, bare)
    assert_clean_error(probe("--pixel-checkpoint", chain["pixel"], "--ram-checkpoint", bare, "--ram-vars", other), "ram_indices")

    # pixel checkpoint of another game
    ck = torch.load(chain["pixel"], map_location="cpu", weights_only=True)
    ck.update(env_id="PongNoFrameskip-v4", game="pong")
    pong = tmp_path / "pong.pt"
    torch.save(ck, pong)
    assert_clean_error(probe("--pixel-checkpoint", pong, "--ram-checkpoint", chain["ram"], "--ram-vars", chain["ram_vars"]), "game")

    # corrupt checkpoint
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(chain["pixel"].read_bytes()[:5000])
    assert_clean_error(probe("--pixel-checkpoint", bad, "--ram-checkpoint", chain["ram"], "--ram-vars", chain["ram_vars"]), "checkpoint")

    # --roles-from a file that describes no byte (the shipped ram vars file without its roles)
    plain = json.loads((ROOT / "ram_vars" / f"{ENV}.json").read_text())
    for b in plain["bytes"]:
        b.pop("role", None)
    (tmp_path / "plain.json").write_text(json.dumps(plain))
    assert_clean_error(probe(*inputs, "--roles-from", tmp_path / "plain.json"), "roles-from")

    # pixel and ram checkpoints swapped
    assert_clean_error(probe("--pixel-checkpoint", chain["ram"], "--ram-checkpoint", chain["pixel"], "--ram-vars", chain["ram_vars"]), "pixel")

    # a ranking that does not fit the agents given: by the memory agent without one, by the pixel policy with one
    assert_clean_error(probe("--pixel-checkpoint", chain["pixel"], "--ram-vars", chain["ram_vars"], "--ranking", "memory-agent"),
                       "--ram-checkpoint")
    assert_clean_error(probe(*inputs, "--ranking", "pixel-policy"), "--ram-checkpoint")

    # the report on a corrupt activations.npz
    broken = tmp_path / "broken_out"
    broken.mkdir()
    shutil.copy(out / "results.json", broken / "results.json")
    (broken / "activations.npz").write_bytes((out / "activations.npz").read_bytes()[:100000])
    assert_clean_error(run_script("probe_report.py", "--out-dir", broken, cwd=d, check=False), "activations.npz")
    assert not (broken / "report.html").exists()
    # the report on a results.json whose layers are no dict, or hold one hidden layer (it shows a conv map and the fc)
    res = json.loads((out / "results.json").read_text())
    one = {k: L for k, L in res["layers"].items() if "units" not in L or k == HIDDEN[-1]}
    for layers, needle in ((list(res["layers"]), "no dict of layers"), (one, "1 hidden layers")):
        (broken / "results.json").write_text(json.dumps(dict(res, layers=layers)))
        assert_clean_error(run_script("probe_report.py", "--out-dir", broken, cwd=d, check=False), needle)
        assert not (broken / "report.html").exists()

    # nothing already on disk was touched by the failed runs
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    assert after == before


LAYERS = HIDDEN + ["actor", "critic"]


def test_natural_frame_probes(chain):
    """Step 7 (AtariARI's protocol): every probed variable has a natural block for every layer, with finite scores
    for the trained network, its shuffled-label control and the random network, or the reason it has none;
    the split is by episode (or its recorded fallback); nothing of it goes into the npz; the report shows it."""
    res, nat = chain["res"], chain["res"]["natural"]
    assert res["version"] == 5 and nat["run"]
    sp = nat["split"]
    assert sp["by"] in ("episode", "time_block") and (sp["fallback"] is None) == (sp["by"] == "episode")
    assert sp["train_groups"] >= 1 and sp["test_groups"] >= 1 and sp["n_train"] + sp["n_test"] == nat["samples"] > 0
    dropped = {d["name"]: d for d in nat["dropped"]}
    for v in res["variables"]:
        low = nat["entropy_bits"][v["name"]] < nat["min_entropy_bits"]
        assert low == (v["name"] in dropped and dropped[v["name"]]["reason"].startswith("dropped")), v["name"]
        assert list(v["natural"]) == LAYERS, v["name"]
        for k, p in v["natural"].items():
            assert p["metric"] == ("weighted_f1" if v["categorical"] else "r2")
            if p["score"] is None:
                assert p["reason"] and v["name"] in dropped and p["reason"] == dropped[v["name"]]["reason"], (v["name"], k, p)
            else:
                assert v["name"] not in dropped and "reason" not in p
                for key in ("score", "control", "random_network"):
                    assert np.isfinite(p[key]), (v["name"], k, key, p)
                assert (p["n_train"], p["n_test"]) == (sp["n_train"], sp["n_test"])
    assert any(p["score"] is not None for v in res["variables"] for p in v["natural"].values())
    # scores only: of the natural frames, only the atlas's most activating ones are saved (top_*), no activation
    assert not [k for k in chain["npz"] if "natural" in k or "random" in k]
    assert {k for k in chain["npz"] if k.startswith("top_")} == {"top_stacks", "top_where", "top_ram"} | {
        f"top_{a}_{k}" for k in HIDDEN for a in ("frame", "value", "box")}
    # each variable's card shows its natural, shuffled and random-network scores beside the interventions
    page = (chain["out"] / "report.html").read_text()
    for v in res["variables"]:
        card = re.search(rf"<details class='var' id='{re.escape(html.escape(v['name']))}'.*?</details>", page).group(0)
        table = card[card.index("<table class='scores'>"):]
        rows = {r: table[table.index(f"<th class='l'>{r}</th>"):].split("</tr>")[0]
                for r in ("natural", "shuffled", "random net", "interventions")}
        for k, p in v["natural"].items():
            for row, x in (("natural", p["score"]), ("shuffled", p["control"]), ("random net", p["random_network"]),
                           ("interventions", v["probe"][k]["score"])):
                if x is not None and x > -10:
                    assert f"{x:.2f}" in rows[row], (v["name"], k, row, x)
        for p in v["natural"].values():
            if p.get("reason"):
                assert html.escape(p["reason"]) in card


def receptive_boxes(agent, layers, positions=None):
    """{layer: {(row, col): [row0, row1, col0, col1]}}: for every position of each conv map in `layers` (names inside
    agent.network; positions(H, W) -> the positions to check, else all), the input pixels it depends on, found by
    autograd through a float64 copy of the agent whose convs average their inputs (weights 1 / fan-in, no bias), whose
    ReLUs pass everything and whose max pools sum their window (-inf padding read as 0), so that every pixel of the
    field counts and nothing cancels; the padding and the forward code stay the model's."""
    class SumPool(nn.Module):
        def __init__(self, pool):
            super().__init__()
            self.kernel_size, self.stride = pool.kernel_size, pool.stride

        def forward(self, x):
            return nn.functional.avg_pool2d(torch.nan_to_num(x, neginf=0.0), self.kernel_size, self.stride)
    net = copy.deepcopy(agent).double()
    for parent in list(net.network.modules()):
        for name, m in list(parent.named_children()):
            if isinstance(m, nn.ReLU):
                setattr(parent, name, nn.Identity())
            elif isinstance(m, nn.MaxPool2d):
                setattr(parent, name, SumPool(m))
            elif isinstance(m, nn.Conv2d):
                nn.init.constant_(m.weight, 1.0 / m.weight[0].numel())
                nn.init.zeros_(m.bias)
    out = {}
    for k in layers:
        net.network.get_submodule(k).register_forward_hook(lambda m, i, o, k=k: out.__setitem__(k, o))
    x = torch.rand(1, 4, 84, 84, dtype=torch.float64, requires_grad=True)
    net.network(x)
    boxes = {}
    for k in layers:
        H, W = out[k].shape[2:]
        boxes[k] = {}
        for i, j in (positions(H, W) if positions else [(i, j) for i in range(H) for j in range(W)]):
            g, = torch.autograd.grad(out[k][0, 0, i, j], x, retain_graph=True)
            rows, cols = np.nonzero(g[0].abs().sum(0).numpy())
            boxes[k][(i, j)] = [int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())]
    return boxes


@pytest.mark.parametrize("arch", ["Agent", "ImpalaAgent"])
def test_receptive_fields_match_autograd(arch):
    """receptive_fields' (size, stride, start) of every recorded conv map, the Nature CNN's and the IMPALA CNN's (padded
    convs, SAME-padded max pools, residual blocks), against the input region autograd finds one position depends on
    (clipped to the 84x84 frame), at the corners, the edges and the middle of each map; the Nature values as before."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    probe = importlib.import_module("probe_function_vectors")
    agent = getattr(probe, arch)(n_actions=4)
    hooks = probe.Hooks(agent)
    shapes = {k: tuple(v.shape[1:]) for k, v in hooks.run(torch.zeros(1, 4, 84, 84, dtype=torch.uint8)).items()}
    fields = probe.receptive_fields(agent)
    assert list(fields) == [k for k in hooks.hidden if len(shapes[k]) == 3]  # every conv map, in forward order
    if arch == "Agent":
        assert fields == {"relu1": (8, 4, 0), "relu2": (20, 8, 0), "relu3": (36, 8, 0)}
    else:
        assert hooks.hidden == [f"seq{s}.{p}" for s in range(3) for p in ("pool", "res0", "res1")] + ["relu", "relu_fc"]
        assert min(start for _, _, start in fields.values()) < 0  # padding shifts the first position's field
    edge = lambda H, W: sorted({(i, j) for i in (0, 1, H // 2, H - 2, H - 1) for j in (0, 1, W // 2, W - 1)})  # noqa: E731
    boxes = receptive_boxes(agent, list(fields), edge)
    for k, (size, stride, start) in fields.items():
        for (i, j), box in boxes[k].items():
            r0, c0 = start + i * stride, start + j * stride
            assert box == [max(r0, 0), min(r0 + size - 1, 83), max(c0, 0), min(c0 + size - 1, 83)], (k, (i, j), fields[k])


def test_top_natural_frames(chain):
    """Step 7 keeps, per hidden unit, the natural frames that activate it most, with the receptive field of its
    most active position: the saved stacks, run through the pixel agent, give the saved activations (a conv
    channel: its maximum over positions); the box is what autograd finds that position depends on; no stack holds
    a reset's blank frame; every saved stack is used."""
    z, res = chain["npz"], chain["res"]
    F = len(z["top_stacks"])
    assert res["natural"]["top_frames"]["frames"] == F > 0 and res["natural"]["top_frames"]["per_unit"] == 4
    assert z["top_stacks"].shape == (F, 4, 84, 84) and z["top_stacks"].dtype == np.uint8
    assert z["top_ram"].shape == (F, 128) and z["top_where"].shape == (F, 3)
    assert (z["top_stacks"].reshape(F, 4, -1).max(-1) > 0).all()
    used = np.unique(np.concatenate([z[f"top_frame_{k}"].ravel() for k in HIDDEN]))
    assert used[used >= 0].tolist() == list(range(F))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    probe = importlib.import_module("probe_function_vectors")
    ck = torch.load(chain["pixel"], map_location="cpu", weights_only=True)
    agent = probe.Agent(**ck["model_kwargs"])
    agent.load_state_dict(ck["state_dict"])
    acts = {}
    for k in HIDDEN:
        agent.get_submodule(f"network.{k}").register_forward_hook(lambda m, i, o, k=k: acts.__setitem__(k, o.numpy()))
    with torch.no_grad():
        agent.get_value(torch.as_tensor(z["top_stacks"]))
    boxes = receptive_boxes(agent, ["relu1", "relu2", "relu3"])
    assert {k: res["natural"]["top_frames"]["receptive_field"][k]["size"] for k in boxes} == {
        k: b[(0, 0)][1] + 1 for k, b in boxes.items()}
    for k in HIDDEN:
        units = res["layers"][k]["units"]
        fr, val, box = z[f"top_frame_{k}"], z[f"top_value_{k}"], z[f"top_box_{k}"]
        assert fr.shape == val.shape == (len(units), 4) and box.shape == (len(units), 4, 4)
        for u in range(len(units)):
            ok = fr[u] >= 0
            assert ok.tolist() == sorted(ok.tolist(), reverse=True) and (np.diff(val[u][ok]) <= 1e-6).all()  # best first
            crops = [z["top_stacks"][f][:, b[0]:b[1] + 1, b[2]:b[3] + 1].tobytes() for f, b in zip(fr[u][ok], box[u][ok])]
            assert len(set(crops)) == len(crops), (k, u)  # each shows other pixels in its box
            for f, a, b in zip(fr[u][ok], val[u][ok], box[u][ok]):
                m = acts[k][f, u]
                assert abs(float(m.max()) - a) <= 1e-4 * max(1.0, abs(a)), (k, u, f)
                if k == "relu_fc":  # the box of the relu3 position that adds most to the unit (fc is linear in relu3)
                    w = agent.network.fc.weight[u].detach().numpy().reshape(64, 49)
                    p = int((w * acts["relu3"][f].reshape(64, 49)).sum(0).argmax())
                    assert b.tolist() == boxes["relu3"][(p // 7, p % 7)], (u, f, b)
                else:  # the box of one of the positions where the channel peaks
                    peaks = np.argwhere(m >= m.max() - 1e-4 * max(1.0, abs(a)))
                    assert b.tolist() in [boxes[k][tuple(p)] for p in peaks], (k, u, f, b)


def test_natural_probe_of_trained_agent_beats_random_network(chain, tmp_path):
    """On unedited frames of the shipped 500k agent's play, the paddle byte (found from the emulator) reads out
    of some layer better than out of the same network with random weights (AtariARI's random-CNN baseline) and
    than the shuffled-label control. A random CNN keeps the paddle's position well (R^2 ~ 0.99 at relu1 for
    both): the trained agent wins at relu_fc, by 0.15-0.25 R^2 over seeds 1-3 with 8 x 300 rollout steps
    (8 episodes, 2 held out); with 4 x 300 the margin ranged 0.06-0.9, too noisy for a test.
    The shipped ram vars file, without the roles it was upgraded with (as it was before): --roles-from names the
    variables from the chain's fresh extraction, while the bytes probed stay the shipped file's."""
    paddle, _ = paddle_from_emulator()
    shipped = tmp_path / "shipped_without_roles.json"
    rv = json.loads((ROOT / "ram_vars" / f"{ENV}.json").read_text())
    for b in rv["bytes"]:
        b.pop("role", None)
    shipped.write_text(json.dumps(rv))
    run_script("probe_function_vectors.py", "--pixel-checkpoint", ROOT / "models" / "breakout_pixel_ppo_500k.pt",
               "--ram-checkpoint", ROOT / "models" / "breakout_ram_ppo_500k.pt", "--ram-vars", shipped,
               "--roles-from", chain["ram_vars"],
               "--out-dir", tmp_path / "out", *TINY[:4], "--top-k", "1", "--include-vars", str(paddle), "--num-envs", "8", "--rollout-steps", "300",
               "--importance-steps", "32", "--causal-pairs", "8", "--random-directions", "1", "--no-report",
               "--torch-threads", "1", cwd=tmp_path)
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["natural"]["split"]["by"] == "episode" and res["natural"]["split"]["test_groups"] >= 1
    var = next(v for v in res["variables"] if v["index"] == paddle)
    assert res["inputs"]["roles_from"] == str(chain["ram_vars"])
    role = json.loads(chain["ram_vars"].read_text())["bytes"][paddle]["role"]
    assert role["role"] and var["role"] == role["role"] and var["role_evidence"] == role["evidence"], (var["role"], role)
    nat = var["natural"]
    margin = {k: p["score"] - max(p["random_network"], p["control"]) for k, p in nat.items() if p["score"] is not None}
    assert margin and max(margin.values()) > 0.1, nat


def held_observation(ale, state, actions, index, value):
    """The pixel agent's observation after 4 agent steps `actions` from `state` with ram[index] written before every
    frame: frame skip 4, max of the last 2 frames, gray, 84x84 INTER_AREA, 4-frame stack. -> (4, 84, 84) uint8."""
    ale.restoreState(state)
    stack = np.zeros((4, 84, 84), np.uint8)
    for k, a in enumerate(actions):
        last = []
        for f in range(4):
            ale.setRAM(index, value)
            ale.act(a)
            if f >= 2:
                last.append(ale.getScreenGrayscale())
        stack[k] = cv2.resize(np.maximum(*last), (84, 84), interpolation=cv2.INTER_AREA)
    return stack


def policy_moves(agent, ale, states, index, values_of, rng):
    """Mean total variation of the agent's action distribution when ram[index] is held at 3 other values instead of its
    own, over `states` (each with 4 random actions), measured here on the emulator; and the fraction of those writes
    that changed the observation."""
    actions = ale.getMinimalActionSet()
    tv, changed = [], []
    for state in states:
        ale.restoreState(state)
        own = int(ale.getRAM()[index])
        acts = [actions[i] for i in rng.integers(len(actions), size=4)]
        others = [v for v in values_of(index) if v != own]
        obs = [held_observation(ale, state, acts, index, v) for v in [own] + list(rng.choice(others, 3))]
        with torch.no_grad():
            p = torch.softmax(agent.actor(agent.hidden(torch.as_tensor(np.stack(obs)))), -1)
        tv += (0.5 * (p[1:] - p[0]).abs().sum(-1)).tolist()
        changed += [not np.array_equal(o, obs[0]) for o in obs[1:]]
    return float(np.mean(tv)), float(np.mean(changed))


def test_probe_without_memory_agent(tmp_path):
    """Without --ram-checkpoint the variables are ranked by how far writing each byte moves the pixel agent's policy
    (the shipped 500k agent and ram vars file): every selected byte ranked, best first; results.json and the atlas say
    which ranking was used. The ranking agrees with the same measurement done here on the emulator, on other states
    (random play) and actions: the top-ranked bytes move the agent's policy far more than the bottom-ranked ones; the
    paddle byte (found from the emulator: the agent must steer it) ranks in the top half."""
    paddle, _ = paddle_from_emulator()
    shipped, pixel = ROOT / "ram_vars" / f"{ENV}.json", ROOT / "models" / "breakout_pixel_ppo_500k.pt"
    proc = run_script("probe_function_vectors.py", "--pixel-checkpoint", pixel, "--ram-vars", shipped, "--out-dir",
                      tmp_path / "out", *TINY, "--importance-states", "4", "--include-vars", str(paddle), "--no-natural",
                      cwd=tmp_path)
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["ranking"]["by"] == "pixel-policy sensitivity" and res["ranking"]["agent"] == "pixel"
    assert res["ranking"]["states"] == 4 and res["inputs"]["ram_checkpoint"] is None
    assert "ranked by pixel-policy sensitivity" in proc.stdout
    rv = json.loads(shipped.read_text())
    rk = res["importance"]["ranking"]
    assert sorted(s["index"] for s in rk) == sorted(rv["selected"]) and [s["rank"] for s in rk] == list(range(1, len(rk) + 1))
    assert [s["tv"] for s in rk] == sorted((s["tv"] for s in rk), reverse=True)
    for s in rk:  # a write that never changed the agent's observation cannot have moved its policy
        assert 0 <= s["kept"] <= s["draws"] and (s["tv"] == 0) >= (s["screen_changed"] == 0), s
    expected = [s["index"] for s in rk[:4]] + ([paddle] if paddle not in [s["index"] for s in rk[:4]] else [])
    assert [v["index"] for v in res["variables"]] == expected
    page = (tmp_path / "out" / "report.html").read_text()
    assert "no memory agent" in page and "pixel-policy sensitivity" in page and "ranked by how much the memory agent" not in page

    # the same measurement, here: other states (random play after FIRE), other actions, other values
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    probe = importlib.import_module("probe_function_vectors")
    ck = torch.load(pixel, map_location="cpu", weights_only=True)
    agent = probe.Agent(**ck["model_kwargs"]).eval()
    agent.load_state_dict(ck["state_dict"])
    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(roms.get_rom_path("breakout"))
    ale.reset_game()
    ale.act(Action.FIRE)
    rng, states, seen = np.random.default_rng(0), [], []
    actions = ale.getMinimalActionSet()
    for t in range(400):
        if ale.game_over():
            ale.reset_game()
        ale.act(Action.FIRE if t % 50 == 0 else actions[rng.integers(len(actions))])
        seen.append(ale.getRAM().copy())
        if t % 50 == 25:
            states.append(ale.cloneState())
    seen = np.array(seen)
    values_of = lambda i: sorted(set(seen[:, i].tolist()) | set(rv["bytes"][i].get("values") or []) | {rv["bytes"][i]["min"], rv["bytes"][i]["max"]})  # noqa: E731
    ranked = [s for s in rk if s["kept"] > 0]  # bytes the game re-derives every frame rank last, unmeasured
    top = {s["index"]: policy_moves(agent, ale, states, s["index"], values_of, rng) for s in ranked[:4]}
    bottom = {s["index"]: policy_moves(agent, ale, states, s["index"], values_of, rng) for s in ranked[-4:]}
    assert min(tv for tv, _ in top.values()) > 0.01, top
    assert np.mean([tv for tv, _ in top.values()]) > 5 * np.mean([tv for tv, _ in bottom.values()]), (top, bottom)
    tvs = sorted(s["tv"] for s in rk)
    assert next(s["tv"] for s in rk if s["index"] == paddle) > tvs[len(tvs) // 2], (paddle, tvs)


# ---------------------------------------------------------------- a game whose screen is not 210 rows high
TALL_ENV, TALL_GAME = "PooyanNoFrameskip-v4", "pooyan"


def unmovable_byte(game, selected, lo_hi):
    """A selected byte that holding (setRAM before each of 16 frames) cannot move: from every one of several
    states of random play, the byte ends at the same value whatever value was held. Found on the emulator."""
    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(roms.get_rom_path(game))
    ale.reset_game()
    actions, rng, states = ale.getMinimalActionSet(), np.random.default_rng(0), []
    for t in range(600):
        ale.act(actions[rng.integers(len(actions))])
        if t % 100 == 50:
            states.append(ale.cloneState())
    for i in selected:
        lo, hi = lo_hi[i]
        if lo == hi:
            continue
        fixed = True
        for state in states:
            ends = set()
            for value in (lo, hi, (lo + hi) // 2):
                ale.restoreState(state)
                for _ in range(16):
                    ale.setRAM(i, value)
                    ale.act(actions[0])
                ends.add(int(ale.getRAM()[i]))
            fixed &= len(ends) == 1
        if fixed:
            return i
    pytest.fail(f"no selected {game} byte is unmovable by holding it (the test needs one)")


@pytest.fixture(scope="module")
def tall_chain(tmp_path_factory):
    """The chain on a game whose screen is not 210 rows high, tiny budgets, plus a byte the game recomputes
    every frame (its draws are all rejected) among the probed variables."""
    d = tmp_path_factory.mktemp("probe_tall")
    run_script("extract_ram_vars.py", "--env-id", TALL_ENV, "--total-frames", "5000", "--n-bases", "3", "--long-horizon", "0",
               "--seed", "1", "--out-dir", d / "ram_vars", cwd=d)
    ram_vars = d / "ram_vars" / f"{TALL_ENV}.json"
    run_script("ppo_ram_breakout.py", "--env-id", TALL_ENV, "--ram-vars", ram_vars, "--runs-dir", d / "runs", *TRAIN, cwd=d)
    run_script("ppo_pixel_breakout.py", "--env-id", TALL_ENV, "--runs-dir", d / "runs", *TRAIN, cwd=d)
    rv = json.loads(ram_vars.read_text())
    stuck = unmovable_byte(TALL_GAME, rv["selected"], {b["index"]: (b["min"], b["max"]) for b in rv["bytes"]})
    run_script("probe_function_vectors.py", "--pixel-checkpoint", find_checkpoint(d / "runs", "pixel"),
               "--ram-checkpoint", find_checkpoint(d / "runs", "ram"), "--ram-vars", ram_vars, "--out-dir", d / "out",
               *TINY, "--include-vars", str(stuck), cwd=d)
    with np.load(d / "out" / "activations.npz") as z:
        npz = {k: z[k] for k in z.files}
    return {"out": d / "out", "res": json.loads((d / "out" / "results.json").read_text()), "npz": npz, "stuck": stuck}


def test_any_screen_size(tall_chain):
    H, W = screen_dims(TALL_GAME)
    assert H != 210, f"{TALL_GAME}'s screen is {H} rows: pick a game whose screen is not 210 rows high"
    res, z = tall_chain["res"], tall_chain["npz"]
    V, B = len(res["variables"]), res["counts"]["base_states"]
    assert (res["screen"]["height"], res["screen"]["width"]) == (H, W)
    assert z["diff_raw"].shape == (V, H, W) and z["base_rgb"].shape == (B, H, W, 3) and z["diff_obs"].shape == (V, 84, 84)
    regions = [v["screen_region"]["raw"] for v in res["variables"] if v["screen_region"]["raw"]]
    assert regions, "no variable changed the screen"
    for reg in regions:
        r0, r1, c0, c1 = reg["bbox"]
        assert 0 <= r0 <= r1 < H and 0 <= c0 <= c1 < W, reg
    for v in res["variables"]:
        if v["screen_region"]["raw"] is None:
            assert v["screen_region"]["reason"], v["name"]
    page = (tall_chain["out"] / "report.html").read_text()
    assert page.count(f"width='{W}' height='{H}' src='data:image/png;base64,") == V  # each variable's region picture


def test_every_row_explained(tall_chain):
    """A byte the game recomputes every frame keeps none of its draws: results.json and the report say why."""
    res = tall_chain["res"]
    page = (tall_chain["out"] / "report.html").read_text()
    stuck = next(v for v in res["variables"] if v["index"] == tall_chain["stuck"])
    assert stuck["samples"]["drawn"] > 0 and stuck["samples"]["kept"] == 0
    assert stuck["status"]["scored"] is False and "held" in stuck["status"]["reason"]
    assert "held" in stuck["status"]["intervention"]
    for v in res["variables"]:
        scores = [p["score"] for p in v["probe"].values()]
        assert v["status"]["scored"] == all(s is not None for s in scores), v["name"]
        if not v["status"]["scored"]:
            assert v["status"]["reason"] and all(p["reason"] == v["status"]["reason"] for p in v["probe"].values())
            assert set(v["causal_reasons"]) == {"relu1", "relu2", "relu3", "relu_fc"}
        # the reason is listed once above the overview table (one line per reason, naming its variables), not per row
        row = re.search(rf"<tr><td class='l'><a href='#{re.escape(html.escape(v['name']))}'>.*?</tr>", page).group(0)
        reasons = re.search(r"<ul class='reasons'>(.*?)</ul>", page).group(1)
        if not v["status"]["scored"]:  # reasons that differ only in their numbers share a line
            numbers = lambda text: re.sub(r"-?\d+(\.\d+)?", "#", html.unescape(text))  # noqa: E731
            first = numbers(v["status"]["reason"].split(". ")[0])
            lines = [li for li in reasons.split("</li>") if first in numbers(li)]
            assert len(lines) == 1 and html.escape(v["name"]) in lines[0] and first not in numbers(row), (first, reasons)
        if v["screen_region"]["raw"] is None:
            assert html.escape(v["screen_region"]["reason"]) in row
