"""Write the atlas of a probe_function_vectors.py run: one self-contained HTML page, `report.html`.

Reads `<out-dir>/results.json` and `<out-dir>/activations.npz` (README §Probe) and writes `<out-dir>/report.html`:
one file (pictures inlined as base64 PNGs, the units' data as inline JSON, a small script, nothing fetched), that
opens from disk without a server. The page, top to bottom:
- **Findings**, generated from results.json's verdicts (version 5): what the agent decodes beyond both controls (by
  role, with layer and numbers), what steers its policy beyond random directions, which bytes label units and whether
  the labels agree with their pictures (per layer), what it does not represent; beside them a variable x layer
  picture; then how to read the page (the legend and the metric names).
- **Variables**: the reasons for empty cells, once each; a sortable table of every probed RAM variable (its metric,
  R² or weighted F1, in a column; a score not beyond its controls reads "n.d."), then one card per variable: the
  extractor's description (its role and evidence, ram vars version 2; otherwise its kind and range), the screen region it
  controls, its scores per layer side by side (natural frames, their shuffled-label control, the same network with
  random weights, interventions), and its steering (function vector) result with a sentence on how to read it.
- **Units and channels**: per hidden layer a grid of every fc unit / conv channel, coloured by the RAM address
  that labels it (the one whose intervention moves it most); a click shows its label, its effect per variable and
  the natural frames that activate it most, with the receptive field of its most active position boxed.
- **Run**: inputs, the observation and restore checks, the natural-frame protocol, timings.
Every address has one colour (address_colours) on every chart and badge. Pictures carry no text: every word and
number is HTML, at least 12 px on a 1,400 px wide page (tests/test_probe.py measures it in headless Chromium).

Usage: python probe_report.py --out-dir probe/BreakoutNoFrameskip-v4
"""
import base64
import colorsys
import contextlib
import html
import io
import json
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402


@dataclass
class Args:
    out_dir: str = ""
    """folder written by probe_function_vectors.py (holds results.json and activations.npz)"""
    effects_shown: int = 12
    """a unit's panel lists the variables with its largest effects, at most this many"""
    open_cards: int = 16
    """variable cards shown unfolded, most relied-on first; the others fold to their title line (a click or a link
    to one unfolds it)"""


# The valid range of every numeric flag, as in maths ("[1, inf)": 1 or more); check_ranges refuses the rest.
RANGES = {"effects_shown": "[1, inf)", "open_cards": "[0, inf)"}


def hidden_layers(res) -> list[str]:
    """The probed hidden layers, in forward order: results.json's layers that have units (the probe reads them from
    the model: relu1, relu2, relu3, relu_fc for the Nature CNN; seq0.pool, seq0.res0, ..., seq2.res1, relu, relu_fc for
    the IMPALA CNN). The last is the fc layer the policy reads, the one before it the last conv map."""
    return [k for k, L in res["layers"].items() if "units" in L]
GRID_COLUMNS = 32  # units per row of a layer's grid
GREY = "#d4d4d4"   # unlabelled units (dead, or every effect below the threshold); no address has it


class InputError(Exception):
    """Bad input: reported as one `error: ...` line on stderr, exit code 2."""


def fail(message):
    """Bad input: one line `error: ...` on stderr, exit code 2, nothing written."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def parse_args(default=None):
    """tyro.cli on Args, with tyro's boxed error message squeezed into one `error:` line (exit code 2). --help shows
    the module docstring and every flag. default: an Args whose values replace the declared defaults."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(Args, default=default, description=__doc__)
    except SystemExit as e:
        if e.code in (0, None):  # --help
            sys.stderr.write(captured.getvalue())
            raise
        lines = [l.strip().strip("│┃").strip() for l in captured.getvalue().splitlines()]
        boxed = bool(lines) and lines[0].startswith("╭")  # ╭─ title ─╮, the message, a ─── rule, a hint, ╰───╯
        message = []
        for l in lines[1:] if boxed else lines:
            if boxed and (not l or set(l) <= set("─━╰╯ ")):
                break
            message.append(l)
        fail("bad command line: " + (" ".join(m for m in message if m) or "see --help"))


def check_ranges(args, ranges):
    """Refuse a numeric flag outside its valid range with one `error:` line (exit code 2). ranges: {field: interval},
    the interval written as in maths, "[1, inf)" or "(0, 1]"; a field left at None (an unset optional flag) passes."""
    for name, interval in ranges.items():
        value = getattr(args, name)
        if value is None:
            continue
        low, high = (float(x) for x in interval[1:-1].split(","))
        above = value > low or (interval[0] == "[" and value == low)
        below = value < high or (interval[-1] == "]" and value == high)
        if not (above and below):  # NaN is neither
            bound = f"in {interval}"
            if high == float("inf") and low > float("-inf"):
                bound = f"{'>=' if interval[0] == '[' else '>'} {interval[1:].split(',')[0]}"
            fail(f"--{name.replace('_', '-')} must be {bound}, got {value}")


def load_inputs(out_dir: Path):
    """-> (results dict, {npz key: array}); the npz's top_* arrays only when all of them are there."""
    try:
        res = json.loads((out_dir / "results.json").read_text())
    except FileNotFoundError:
        raise InputError(f"{out_dir / 'results.json'} does not exist (run probe_function_vectors.py first)")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {out_dir / 'results.json'}: {e}")
    if not isinstance(res, dict) or res.get("format") != "memory-pixel-interp/probe":
        raise InputError(f"{out_dir / 'results.json'} is not a probe results file")
    if res.get("version") not in (1, 2, 3, 4, 5):
        raise InputError(f"{out_dir / 'results.json'} is probe results version {res.get('version')}; this probe_report.py reads 1 to 5")
    layers = res.get("layers")
    if not isinstance(layers, dict) or not all(isinstance(L, dict) for L in layers.values()):
        raise InputError(f"{out_dir / 'results.json'} has no dict of layers (\"layers\": {type(layers).__name__})")
    if len(hidden_layers(res)) < 2:
        raise InputError(f"{out_dir / 'results.json'} has {len(hidden_layers(res))} hidden layers with units: the report "
                         "needs at least 2 (the last conv map and the fc layer)")
    try:
        with np.load(out_dir / "activations.npz", allow_pickle=False) as z:
            hidden = hidden_layers(res)
            npz_keys = ["var_names", "var_index", "base_rgb", "diff_raw"] + [f"unit_effect_{k}" for k in hidden]
            # step 7's most activating natural frames (results version 4); without them the units' panels say why
            top_keys = ["top_stacks", "top_where", "top_ram"] + [f"top_{a}_{k}" for k in hidden for a in ("frame", "value", "box")]
            missing = [k for k in npz_keys if k not in z.files]
            if missing:
                raise InputError(f"{out_dir / 'activations.npz'} lacks {missing} (from an older probe_function_vectors.py? run it again)")
            keys = npz_keys + [f"unit_spread_{k}" for k in hidden if f"unit_spread_{k}" in z.files]
            keys += top_keys if all(k in z.files for k in top_keys) else []
            npz = {k: z[k] for k in keys}
    except FileNotFoundError:
        raise InputError(f"{out_dir / 'activations.npz'} does not exist")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read {out_dir / 'activations.npz'} (corrupt or truncated?): {type(e).__name__}: {e}")
    names = [str(n) for n in npz["var_names"]]
    if names != [v["name"] for v in res.get("variables", [])]:
        raise InputError(f"{out_dir}: activations.npz and results.json describe different variables (mixed runs?)")
    return res, npz


def address_colours(n: int):
    """One colour per variable slot (results' order: step 1's ranking, highest importance first), computed
    once and used by every chart and badge of the page: matplotlib's tab10 without its grey for the first 9, then
    hues spaced by the golden angle at two lightnesses. No colour is grey (grey = unlabelled). -> ["#rrggbb"]."""
    tab10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]
    out = tab10[:n]
    for i in range(n - len(out)):
        r, g, b = colorsys.hls_to_rgb((0.07 + i * 0.381966) % 1.0, 0.42 if i % 2 else 0.62, 0.75)
        out.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return out


def mix(colour: str, alpha: float) -> str:
    """The colour laid at opacity alpha on white, as #rrggbb."""
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{int(round(255 - alpha * (255 - c))):02x}" for c in rgb)


def ink(colour: str) -> str:
    """Black or white text, whichever reads better on the background colour (WCAG relative luminance)."""
    lin = [(c / 255) / 12.92 if c <= 10 else (((c / 255) + 0.055) / 1.055) ** 2.4 for c in (int(colour[i:i + 2], 16) for i in (1, 3, 5))]
    return "#000" if 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2] > 0.18 else "#fff"


def write_atomic(path, write):
    """Write `path` via a temp file in the same folder + fsync + os.replace (FORMATS.md)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def png64(img) -> str:
    """uint8 picture (H, W) gray or (H, W, 3) RGB -> base64 PNG."""
    buf = io.BytesIO()
    matplotlib.image.imsave(buf, img, format="png", cmap="gray", vmin=0, vmax=255)
    return base64.b64encode(buf.getvalue()).decode()


def region_picture(rgb, diff, region, colour, scale: int = 2):
    """The screen (H, W, 3) with the mean |screen difference| a variable causes laid over it in red (opacity up
    to 0.8 at its peak) and the bounding box of its region in the variable's colour; enlarged `scale` times
    (nearest) so the box stays sharp. No text. -> (scale H, scale W, 3) uint8."""
    img = rgb.astype(np.float32)
    if diff.max() > 0:
        a = (np.clip(diff / diff.max(), 0, 1) * 0.8)[..., None]
        img = img * (1 - a) + np.array([255.0, 0, 0]) * a
    img = np.repeat(np.repeat(img.astype(np.uint8), scale, 0), scale, 1)
    if region:
        outline(img, region["bbox"], [int(colour[i:i + 2], 16) for i in (1, 3, 5)], scale)
    return img


def outline(img, bbox, col, scale: int, t: int = 2):
    """Draw the outline (t px, outside the box) of bbox [row0, row1, col0, col1] (inclusive, raw screen) on the
    `scale`-times enlarged picture img (H, W, 3) uint8, in place, in colour col (3 ints)."""
    r0, r1, c0, c1 = (x * scale for x in bbox)
    r1, c1 = r1 + scale - 1, c1 + scale - 1
    H, W = img.shape[:2]
    for rr0, rr1, cc0, cc1 in ((r0 - t, r0 - 1, c0 - t, c1 + t), (r1 + 1, r1 + t, c0 - t, c1 + t),
                               (r0 - t, r1 + t, c0 - t, c0 - 1), (r0 - t, r1 + t, c1 + 1, c1 + t)):
        img[max(rr0, 0):min(rr1 + 1, H), max(cc0, 0):min(cc1 + 1, W)] = col


def track_picture(rgb, track, colour, scale: int = 2):
    """The screen (H, W, 3) of the track's base state with a position byte's track: one box per held value in the
    variable's colour, and where the object was at the byte's own value in white; enlarged `scale` times (nearest).
    -> (scale H, scale W, 3) uint8."""
    img = np.repeat(np.repeat(rgb, scale, 0), scale, 1).copy()
    col = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    for b in track["boxes"]:
        outline(img, b["bbox"], col, scale, t=1)
    if (track.get("own") or {}).get("bbox"):
        outline(img, track["own"]["bbox"], [255, 255, 255], scale, t=1)
    return img


def track_text(track) -> str:
    """'track: 7 boxes along x, rows 189–192, cols 8–151 (values 0–255)' for a results.json screen_track."""
    bb = np.array([b["bbox"] for b in track["boxes"]])
    vals = [b["value"] for b in track["boxes"]]
    return (f"track: {len(bb)} boxes along {track['axis']}, rows {bb[:, 0].min()}–{bb[:, 1].max()}, cols "
            f"{bb[:, 2].min()}–{bb[:, 3].max()} (held at values {min(vals)}–{max(vals)})")


def raw_region(v):
    """A variable's screen region on the raw screen (rows x cols of the game's own size); results version 1
    named it raw_210x160 even on games whose screen is not 210 rows high."""
    sr = v["screen_region"]
    return sr["raw"] if "raw" in sr else sr.get("raw_210x160")


# ---------------------------------------------------------------- text of the page
esc = html.escape


def fmt(x, nd=2):
    """A score for a table cell: '—' for none, '< -10' below -10 (R² of a bad read-out is unbounded below)."""
    if x is None:
        return "—"
    if isinstance(x, float):
        return "&lt; -10" if x < -10 else f"{x:.{nd}f}"
    return esc(str(x))


def describe(v) -> str:
    """What the variable is, in one line: the extractor's role (ram vars version 2), else its kind and range."""
    kind = f"{v['kind']}, {'categorical' if v['categorical'] else 'ordinal'}"
    if v.get("role"):
        whose = f", the {v['object']}'s" if v.get("object") in ("player", "player's shot") else ""
        return f"{v['role']}{whose} ({kind})"
    return f"{kind}; values {v.get('min', '?')}–{v.get('max', '?')}"


def ranking_text(res) -> tuple[str, str]:
    """(short name, sentence) of what step 1 ranked the variables by: results.json's `ranking` (memory-agent importance,
    or without a memory agent the pixel agent's policy sensitivity); results written before it had one ranked by the
    memory agent."""
    r = res.get("ranking") or {"by": "memory-agent importance", "how": "the memory agent's policy on its own rollout's "
                                "RAMs, each byte replaced by its value in other visited states: mean total variation of "
                                "the action distribution"}
    return r["by"], f"{r['by']}: {r['how']}"


def tv_name(res) -> str:
    """What the importance column's TV is: of the action distributions, or (a Q-network ranked without a memory agent,
    results.json ranking.metric "greedy tv") of the greedy actions, i.e. the fraction of writes that changed the argmax."""
    return "greedy-action TV" if (res.get("ranking") or {}).get("metric") == "greedy tv" else "policy TV"


def region_text(v, res) -> str:
    if (v.get("screen_track") or {}).get("boxes"):
        return track_text(v["screen_track"])
    reg = raw_region(v)
    if reg:
        r0, r1, c0, c1 = reg["bbox"]
        return f"rows {r0}–{r1}, cols {c0}–{c1}"
    return "none: " + ((v.get("screen_region") or {}).get("reason") or "no region recorded")


def grouped_reasons(vs, nat_summary) -> list[tuple[str, list[str]]]:
    """Why some variables have empty cells, once per reason: [(reason, ["ram[0x0b] (0.12 bits)", ...])], for the
    natural frames (a dropped variable's entropy beside its name), the interventions (results' status.reason, else a
    version-1 file's per-layer reason) and the steering test at relu_fc. Numbers inside a reason do not split it:
    reasons that differ only in their numbers are one line, its text the first variable's with the numbers of the
    others beside their names."""
    entropy = {d["name"]: d.get("entropy_bits") for d in (nat_summary or {}).get("dropped") or []}
    groups = {}

    def add(part, reason, name):
        first = reason.split(". ")[0]
        key = (part, re.sub(r"-?\d+(\.\d+)?", "#", first))
        text, names = groups.setdefault(key, [f"{part}: {first}", []])
        if name not in names:
            names.append(name)
    for v in vs:
        for p in (v.get("natural") or {}).values():
            if p.get("reason"):
                if v["name"] in entropy and entropy[v["name"]] is not None and p["reason"].startswith("dropped: the entropy"):
                    key = ("natural frames", "entropy")
                    groups.setdefault(key, [f"natural frames: dropped, the entropy of its values on the natural frames is "
                                            f"below {nat_summary.get('min_entropy_bits')} bits (AtariARI's threshold)", []])
                    if f"{v['name']} ({entropy[v['name']]:.2f} bits)" not in groups[key][1]:
                        groups[key][1].append(f"{v['name']} ({entropy[v['name']]:.2f} bits)")
                else:
                    add("natural frames", p["reason"], v["name"])
        status = v.get("status") or {}
        missing = [p.get("reason") for p in v["probe"].values() if p.get("score") is None]
        if status.get("reason") or missing:
            add("interventions", status.get("reason") or "not scored: " + (missing[0] or "no reason recorded"), v["name"])
        elif not (v.get("causal") or {}).get("relu_fc") or v["causal"]["relu_fc"]["function_vector"].get("cos_actor") is None:
            add("steering at relu_fc", (v.get("causal_reasons") or {}).get("relu_fc") or "no result (no reason recorded)", v["name"])
    return [(text, names) for text, names in groups.values()]


def best_layer(scores: dict):
    """(layer, score) of the highest score among {layer: score or None}, or (None, None)."""
    got = [(s, k) for k, s in scores.items() if s is not None]
    return (max(got)[1], max(got)[0]) if got else (None, None)


def steer_sentence(v, k="relu_fc") -> tuple[str, str] | None:
    """(word, sentence) on the steering result at layer k from results.json's verdict (version 5: the probe's rule,
    results' verdict_rules.steering): 'with', 'against' or 'unclear'; None when the file has no verdict or no test."""
    c = ((v.get("verdict") or {}).get("steering") or {}).get(k)
    if not c or c.get("steers") is None:
        return None
    f, m, sd = c["cos"], c["random_mean"], c["random_sd"]
    if c["steers"] == "with":
        return "with", f"moves the logits the way really changing the value does (cos {f:.2f}; random directions {m:.2f} ± {sd:.2f})"
    if c["steers"] == "against":
        return "against", (f"moves the logits against the way really changing the value does (cos {f:.2f}; random "
                           f"directions {m:.2f} ± {sd:.2f}): downstream layers do not read the value along its mean direction")
    return "unclear", f"moves the logits no more along the true change than a random direction does (cos {f:.2f}; random {m:.2f} ± {sd:.2f})"


STEER_HELP = (
    "<b>How to read the steering tables.</b> Steering adds a variable's function vector (the difference of its mean "
    "activations between high and low values, scaled to the size of the value change) at one layer of a held-out "
    "control screen, and compares the change this makes to the policy's logits with the change that really setting "
    "the variable to the new value makes. <b>cos</b> is the cosine between those two logit changes: 1 = the same "
    "direction, 0 = unrelated (random directions of the same norm sit near 0; their mean ± SD is beside it), and a "
    "<b>negative</b> value means the added vector pushes the policy the opposite way from the real change: the mean "
    "difference between high and low values is not how the layers downstream read the variable on these screens (for "
    "instance, the policy depends on the ball relative to the paddle, so a direction averaged over screens points the "
    "wrong way on many of them), or the value is read non-linearly. <b>Policy gap closed</b>: how much of the total-"
    "variation distance between the control's policy and the really changed screen's policy the steer removes (1 = "
    "all, 0 = none, &lt; 0 = farther away), for the function vector / random directions / the oracle (adding the true "
    "activation difference, which must close it all: a check of the machinery).")

SCORES_HELP = (
    "<b>How to read the score tables.</b> Per layer: <i>natural</i> = a linear read-out of the value from the trained "
    "agent on unedited frames of its own play, scored on held-out episodes (R² for ordinal variables, weighted F1 for "
    "categorical ones; 1 = perfect, 0 = no better than the mean or chance); <i>shuffled</i> = the same fit on shuffled "
    "labels; <i>random net</i> = the same read-out from the same network with random weights (AtariARI's random-CNN "
    "baseline: what the architecture alone keeps); <i>interventions</i> = the read-out on screens whose RAM value was "
    "set, scored on held-out base states, and <i>interv. shuffled</i> its shuffled-label control. Each table's caption and the "
    "overview's <i>metric</i> column say whether its numbers are R² or weighted F1. A shaded cell is a score beyond its "
    "controls (natural: both the shuffled labels and the random network; interventions: the shuffled labels) by the "
    "margin in the findings above; <b>n.d.</b> (not decodable) marks one that is not, its score small and grey beside it "
    "and the reason on hover: a score of 1.00 whose control also scores 1.00 says nothing about the agent.")


def badge(j, vs, cols, link=False) -> str:
    """The variable's RAM index in hex on its colour (a link to its card when `link`)."""
    v = vs[j]
    tag = f"<span class='badge' style='background:{cols[j]};color:{ink(cols[j])}' title='{esc(v['name'])}'>{v['index']:02x}</span>"
    return f"<a href='#{esc(v['name'])}' class='nolink'>{tag}</a>" if link else tag


def bar(value, colour, opacity=1.0) -> str:
    """A small horizontal bar for a score in [0, 1] (nothing drawn below 0)."""
    w = 0 if value is None else max(0.0, min(1.0, value))
    return f"<div class='bar'><i style='width:{w * 100:.0f}%;background:{colour};opacity:{opacity}'></i></div>"


def dbar(value, colour) -> str:
    """A diverging bar for a cosine in [-1, 1], drawn from the middle."""
    if value is None:
        return "<div class='dbar'></div>"
    w = min(1.0, abs(value)) * 50
    left = 50 if value >= 0 else 50 - w
    return f"<div class='dbar'><i style='left:{left:.0f}%;width:{w:.0f}%;background:{colour}'></i></div>"


def verdict_of(v, part, k):
    """results.json's verdict on a score (part "natural" or "interventions", layer k), or None (before version 5)."""
    return ((v.get("verdict") or {}).get(part) or {}).get(k)


def score_cell(v, part, k, s, colour, opacity) -> str:
    """A score table cell: the score with its bar; shaded when results.json's verdict says it is beyond its controls,
    "n.d." (not decodable) with the score small and grey beside it when it says it is not (the reason in the title)."""
    ver = verdict_of(v, part, k) if part else None
    if ver and ver.get("decodable") is False:
        return (f"<td class='nd' title='{esc(ver.get('reason') or '')}'>n.d. <span class='ctl'>{fmt(s)}</span>"
                f"{bar(s, '#999', 0.35)}</td>")
    cls = " class='win'" if ver and ver.get("decodable") else ""
    return f"<td{cls}>{fmt(s)}{bar(s, colour, opacity)}</td>"


def scores_table(v, j, cols, layers) -> str:
    """Per layer, side by side: natural frames (trained agent), their shuffled-label control, the random-weights
    network, interventions (with their control in brackets); bars in the variable's colour. A natural or intervention
    score that results.json's verdict finds not beyond its controls reads "n.d." and the reasons are listed below."""
    nat, probe = v.get("natural") or {}, v["probe"]
    rows = [("natural", "natural", lambda k: (nat.get(k) or {}).get("score"), 1.0),
            ("shuffled", None, lambda k: (nat.get(k) or {}).get("control"), 0.35),
            ("random net", None, lambda k: (nat.get(k) or {}).get("random_network"), 0.35),
            ("interventions", "interventions", lambda k: (probe.get(k) or {}).get("score"), 1.0),
            ("interv. shuffled", None, lambda k: (probe.get(k) or {}).get("control"), 0.35)]
    metric = "weighted F1" if v["categorical"] else "R²"
    h = [f"<table class='scores'><caption>read-out score, <b>{metric}</b>, per layer</caption><thead><tr><th></th>"
         + "".join(f"<th>{esc(k)}</th>" for k in layers) + "</tr></thead><tbody>"]
    for label, part, get, op in rows:
        h.append(f"<tr><th class='l'>{label}</th>{''.join(score_cell(v, part, k, get(k), cols[j], op) for k in layers)}</tr>")
    h.append("</tbody></table>")
    why = {}
    for part in ("natural", "interventions"):
        for k in layers:
            ver = verdict_of(v, part, k)
            if ver and ver.get("decodable") is False:
                why.setdefault((part, ver.get("binding") or "control"), []).append(k)
    for (part, control), ks in why.items():
        h.append(f"<p class='why'>n.d. = not decodable ({esc(part)}: {esc(', '.join(ks))}): the {esc(control)} scores "
                 "within the margin of the score (hover a cell for its numbers)</p>")
    return "".join(h)


def steer_table(v, j, cols, hidden) -> str:
    """Per steered layer: the function vector's cosine with the true logit move, random directions' (mean ± SD),
    and the policy gap closed by function vector / random / oracle; the reason where there is no test. hidden: the
    steered layers (hidden_layers)."""
    h = ["<table class='steer'><caption>steering: add the function vector at a layer</caption><thead><tr><th>layer</th>"
         "<th>cos, function vector</th><th>cos, random</th><th>policy gap closed<br>fv / random / oracle</th></tr></thead><tbody>"]
    for k in hidden:
        c = (v.get("causal") or {}).get(k)
        if not c or c["function_vector"].get("cos_actor") is None:
            why = (v.get("causal_reasons") or {}).get(k) or "no causal test (no reason recorded)"
            h.append(f"<tr><th class='l'>{esc(k)}</th><td colspan='3' class='l why'>{esc(why)}</td></tr>")
            continue
        f, r, o = c["function_vector"], c["random"], c["oracle"]
        rc = r.get("cos_actor") or {}
        rg = (r.get("gap_closed_policy_tv") or {}).get("mean")
        h.append(f"<tr><th class='l'>{esc(k)}</th><td>{fmt(f['cos_actor'])}{dbar(f['cos_actor'], cols[j])}</td>"
                 f"<td>{fmt(rc.get('mean'))} ± {fmt(rc.get('std'))}{dbar(rc.get('mean'), '#888')}</td>"
                 f"<td>{fmt(f.get('gap_closed_policy_tv'))} / {fmt(rg)} / {fmt(o.get('gap_closed_policy_tv'))}</td></tr>")
    h.append("</tbody></table>")
    return "".join(h)


def variable_card(v, j, ctx) -> str:
    vs, cols, res, layers = ctx["vs"], ctx["cols"], ctx["res"], ctx["layers"]
    s, imp = v.get("samples") or {}, v["importance"]
    H, W = ctx["screen"]
    reg = raw_region(v)
    if v.get("role"):
        desc = f"The extractor found: <b>{esc(v['role'])}</b> — {esc(v.get('role_evidence') or 'no evidence recorded')}."
    else:
        desc = ("The extractor has not described this byte (no role in its ram vars record, e.g. a version 1 file; "
                "--roles-from names them from a newer extraction): "
                f"kind <b>{esc(v['kind'])}</b>, {'categorical' if v['categorical'] else 'ordinal'}, values "
                f"{v.get('min', '?')}–{v.get('max', '?')} in the extractor's record.")
    desc += f" Screen region it controls: {esc(region_text(v, res))}."
    why = []
    nat = v.get("natural") or {}
    nat_reasons = sorted({p.get("reason") for p in nat.values() if p.get("reason")})
    if nat_reasons:
        why.append("Natural frames: " + "; ".join(nat_reasons))
    elif not nat:
        why.append(f"Natural frames: results.json version {res.get('version')} has none (probe_function_vectors.py before step 7)")
    if (v.get("status") or {}).get("reason"):
        why.append("Interventions: " + v["status"]["reason"])
    verdict = ""
    if steer_sentence(v):
        word, sentence = steer_sentence(v)
        verdict = f"<p class='verdict {word}'>Steering relu_fc {esc(sentence)}.</p>"
    units = []
    for k in ctx["hidden"]:
        tops = (v.get("top_units") or {}).get(k) or []
        if tops:
            units.append(f"<span class='ul'>{esc(k)}: " + " ".join(
                f"<button class='ulink' data-layer='{esc(k)}' data-unit='{u['unit']}'>#{u['unit']} · {u['effect']:.2f}</button>"
                for u in tops[:3]) + "</span>")
    picture = (f"<img class='region' alt='screen region of {esc(v['name'])}' width='{W}' height='{H}' src='data:image/png;base64,"
               f"{ctx['regions'][j]}'>")
    return (f"<details class='var' id='{esc(v['name'])}' style='border-left-color:{cols[j]}'{' open' if j < ctx['open_cards'] else ''}>"
            f"<summary><h3>{badge(j, vs, cols)} {esc(v['name'])} <span class='sub'>bus address {esc(str(v['address']))} · "
            f"{esc(describe(v))} · " + (f"importance rank {imp['rank']} ({esc(ranking_text(res)[0])}: {tv_name(res)} "
                                          f"{fmt(imp['tv'], 4)})" if imp else "unranked (the memory agent does not "
                                          "observe it)") + "</span></h3></summary>"
            f"<p class='desc'>{desc}</p>"
            f"<div class='cardrow'><figure>{picture}<figcaption>"
            + ("its track: the object's box at each of several held values (white: at its own value)"
               if (v.get("screen_track") or {}).get("boxes") else
               "red: mean |screen change| when the byte is set; box: its region") + "</figcaption></figure>"
            f"<div>{scores_table(v, j, cols, layers)}</div><div>{steer_table(v, j, cols, ctx['hidden'])}</div></div>"
            + verdict
            + (f"<p class='units'>Units it moves most (effect in SD; click to open): {' '.join(units)}</p>" if units else "")
            + (f"<p class='note'>{s.get('kept', '—')}/{s.get('drawn', '—')} drawn values changed the byte; other bytes "
               f"changed in {fmt(s.get('other_bytes_changed_fraction'))} of them, the screen in "
               f"{fmt(s.get('screen_changed_fraction'))}. Intervention: {esc((v.get('status') or {}).get('intervention', 'held'))}.</p>")
            + "".join(f"<p class='why'>{esc(w)}</p>" for w in why)
            + "</details>")


def best_cell(v, part, scores: dict) -> tuple[str, float]:
    """(cell html, sort key) of a variable's best score in the overview: with results.json's verdicts (version 5) the
    decodable layer with the largest lead over its controls, else "n.d." with the best score small; without them the
    highest score. An empty cell is "—" (the reasons are listed once above the table)."""
    have = any(verdict_of(v, part, k) for k in scores)
    if have:
        ok = [(verdict_of(v, part, k)["lead"], k) for k, s in scores.items() if (verdict_of(v, part, k) or {}).get("decodable")]
        if ok:
            k = max(ok)[1]
            ver = verdict_of(v, part, k)
            return (f"{fmt(scores[k])} {esc(k)}<br><span class='ctl'>(+{ver['lead']:.2f} over its best "
                    f"{CONTROL_WORD.get(ver['binding'], 'control')} draw; margin {ver['margin']:.2f})</span>", scores[k])
    k, s = best_layer(scores)
    if s is None:
        return "—", -99
    if have:
        return f"n.d. <span class='ctl'>(best {fmt(s)} {esc(k)}: {esc(verdict_of(v, part, k)['binding'])} within the margin)</span>", -50 + s
    return f"{fmt(s)} {esc(k)}", s


def overview_table(ctx) -> str:
    """One sortable row per variable: what it is, the metric of its scores, importance, region, best natural /
    intervention score (n.d. when no layer's score is beyond its controls), the steering cosine at relu_fc."""
    vs, cols = ctx["vs"], ctx["cols"]
    tv_max = max([v["importance"]["tv"] for v in vs if v["importance"]] + [1e-12])
    h = ["<table class='sortable overview'><thead><tr><th class='l'>variable</th><th class='l'>address</th>"
         f"<th class='l'>what it is</th><th class='l'>metric</th><th>importance<br>({esc(ranking_text(ctx['res'])[0])}: "
         f"{tv_name(ctx['res'])})</th><th class='l'>screen region</th>"
         "<th>natural frames: best layer beyond both controls<br>(R² or weighted F1, per the metric column)</th>"
         "<th>interventions: best layer beyond shuffled labels<br>(R² or weighted F1)</th>"
         "<th>steer relu_fc: cos<br>(random directions)</th></tr></thead><tbody>"]
    for j, v in enumerate(vs):
        nat = v.get("natural") or {}
        ncell, nsort = best_cell(v, "natural", {k: p.get("score") for k, p in nat.items()})
        pcell, psort = best_cell(v, "interventions", {k: p.get("score") for k, p in v["probe"].items()})
        c = (v.get("causal") or {}).get("relu_fc") or {}
        cf = (c.get("function_vector") or {}).get("cos_actor")
        cr = ((c.get("random") or {}).get("cos_actor") or {}).get("mean")
        tv = (v["importance"] or {}).get("tv")  # None: not observed by the memory agent (--drop-bitmaps), unranked
        h.append(f"<tr><td class='l'><a href='#{esc(v['name'])}'>{badge(j, vs, cols)} {esc(v['name'])}</a></td>"
                 f"<td class='l'>{esc(str(v['address']))}</td><td class='l what'>{esc(describe(v))}</td>"
                 f"<td class='l'>{'weighted F1' if v['categorical'] else 'R²'}</td>"
                 + (f"<td data-sort='{tv}'>{fmt(tv, 4)}{bar(tv / tv_max, cols[j])}</td>" if tv is not None else
                    "<td data-sort='-1' title='the memory agent does not observe this byte'>unranked</td>")
                 + f"<td class='l region'>{esc(region_text(v, ctx['res']))}</td>"
                 f"<td data-sort='{nsort}'>{ncell}</td><td data-sort='{psort}'>{pcell}</td>"
                 f"<td data-sort='{cf if cf is not None else -99}'>{fmt(cf)} <span class='ctl'>({fmt(cr)})</span></td></tr>")
    h.append("</tbody></table>")
    return "".join(h)


def section_variables(ctx) -> str:
    res = ctx["res"]
    nat = res.get("natural") or {}
    intro = (f"<p class='note'>Every RAM variable probed, highest importance first, ranked by {esc(ranking_text(res)[1])}. "
             "Click a column header to sort, a variable to open its card. The first {n} cards are unfolded; click a folded "
             "card's title line to unfold it.</p>").format(n=min(ctx["open_cards"], len(ctx["vs"])))
    if not nat.get("run"):
        intro += f"<p class='why'>Natural frames: {esc(nat.get('reason') or ('results.json version %s has none' % res.get('version')))}</p>"
    groups = grouped_reasons(ctx["vs"], nat)
    if groups:
        intro += ("<p class='note'>Empty cells (—), once per reason:</p><ul class='reasons'>" + "".join(
            f"<li>{esc(text)} ({len(names)}): {esc(', '.join(names))}</li>" for text, names in groups) + "</ul>")
    return (intro + overview_table(ctx) + "".join(variable_card(v, j, ctx) for j, v in enumerate(ctx["vs"])))


HEAT_ROW, HEAT_COL = 16, 56   # px per variable row / layer column of the findings' picture
HEAT_FULL = 0.8               # a lead over the best control this large gets the colour map's top colour
HEAT_ND, HEAT_NONE = (222, 222, 222), (255, 255, 255)  # not decodable / not scored


def role_of(v) -> str:
    """The variable's role for grouping findings: the extractor's role, else its kind."""
    return v.get("role") or v["kind"]


def heat_picture(ctx, rows) -> str:
    """Variable x layer picture of the natural-frame verdicts (rows: variable slots, top to bottom; columns: the
    layers): a decodable cell coloured by its lead over the best control on matplotlib's viridis (full at HEAT_FULL),
    a not decodable one light grey, a not scored one white. No text: the names and numbers are HTML beside it.
    -> base64 PNG, HEAT_ROW x HEAT_COL px per cell, 1 px white gaps."""
    cmap = matplotlib.colormaps["viridis"]
    layers = ctx["layers"]
    img = np.full((len(rows) * HEAT_ROW, len(layers) * HEAT_COL, 3), 255, np.uint8)
    for r, j in enumerate(rows):
        for c, k in enumerate(layers):
            ver = verdict_of(ctx["vs"][j], "natural", k) or {}
            colour = (HEAT_NONE if ver.get("decodable") is None else HEAT_ND if not ver["decodable"] else
                      tuple(int(255 * x) for x in cmap(min(1.0, max(0.0, ver["lead"] / HEAT_FULL)))[:3]))
            img[r * HEAT_ROW:(r + 1) * HEAT_ROW - 1, c * HEAT_COL:(c + 1) * HEAT_COL - 1] = colour
    return png64(img)


def heat_block(ctx) -> str:
    """The findings' picture with its HTML: layer names above, the variables (badge, name, role) beside its rows, a
    colour key below; only variables scored on natural frames in some layer."""
    vs = ctx["vs"]
    rows = [j for j, v in enumerate(vs) if any((p or {}).get("score") is not None for p in (v.get("natural") or {}).values())]
    if not rows:
        return ""
    rows.sort(key=lambda j: (role_of(vs[j]), j))
    cmap = matplotlib.colormaps["viridis"]
    stops = ", ".join("#%02x%02x%02x" % tuple(int(255 * x) for x in cmap(t)[:3]) for t in np.linspace(0, 1, 6))
    labels = "".join(f"<div class='hrow'>{badge(j, vs, ctx['cols'], link=True)} {esc(vs[j]['name'])} "
                     f"<span class='ctl'>{esc(role_of(vs[j]))}</span></div>" for j in rows)
    head = "".join(f"<span style='width:{HEAT_COL}px'>{esc(k).replace('.', '.<wbr>')}</span>" for k in ctx["layers"])  # seq0.<wbr>pool
    return (f"<figure class='heat'><div class='hgrid'><div></div><div class='hhead'>{head}</div>"
            f"<div class='hlabels'>{labels}</div><img alt='variable by layer: natural-frame verdicts' width='{len(ctx['layers']) * HEAT_COL}' "
            f"height='{len(rows) * HEAT_ROW}' src='data:image/png;base64,{heat_picture(ctx, rows)}'></div>"
            f"<figcaption>Natural frames, variable × layer: colour = the score's lead over the best of its control draws "
            f"<span class='ckey' style='background:linear-gradient(90deg, {stops})'></span> 0 … {HEAT_FULL}+; "
            f"<span class='swatch' style='background:rgb{HEAT_ND}'></span> not decodable; white: not scored.</figcaption></figure>")


CONTROL_WORD = {"shuffled-label control": "shuffled-label", "random-weights network": "random-network"}


def by_role(groups, shown: int = 3) -> str:
    """{role: [(sort key, html)]} -> "<i>role</i> (n): a, b, c and 4 more; ...": positions and scores first, then the
    other roles alphabetically; each role's items best first (lowest key), at most `shown` of a longer list."""
    first = ("x-position", "y-position", "score", "score (BCD digits)")
    parts = []
    for role in sorted(groups, key=lambda r: (first.index(r) if r in first else len(first), r)):
        items = [h for _, h in sorted(groups[role], key=lambda x: x[0])]
        more = f" and {len(items) - shown} more" if len(items) > shown + 1 else ""
        parts.append(f"<i>{esc(role)}</i> ({len(items)}): " + ", ".join(items[:shown] if more else items) + more)
    return "; ".join(parts)


def findings(ctx) -> str:
    """The findings at the top of the atlas, generated from results.json's verdicts (version 5): what the agent decodes
    beyond both controls (by role, with the layer and the numbers), what steers its policy beyond random directions,
    which variables label units (with the label-picture agreement per layer), what it does not represent."""
    res, vs = ctx["res"], ctx["vs"]
    if not any(v.get("verdict") for v in vs):
        return (f"<p class='why'>results.json version {res.get('version')} carries no verdicts (probe_function_vectors.py "
                "before version 5): no findings; scores below are shown without them. Re-run the probe.</p>")
    metric = lambda v: "weighted F1" if v["categorical"] else "R²"  # noqa: E731
    rules = res.get("verdict_rules") or {}
    decoded, absent, unscored = {}, {}, []
    for j, v in enumerate(vs):
        nat = v.get("natural") or {}
        oks = [(verdict_of(v, "natural", k)["lead"], k) for k in ctx["layers"] if (verdict_of(v, "natural", k) or {}).get("decodable")]
        if oks:
            k = max(oks)[1]
            p, ver = nat[k], verdict_of(v, "natural", k)
            ks = ", ".join(kk for kk in ctx["layers"] if kk in {x for _, x in oks})
            decoded.setdefault(role_of(v), []).append(
                (-ver["lead"], f"{badge(j, vs, ctx['cols'], link=True)} {esc(v['name'])} in {esc(ks)} (best {esc(k)}: "
                               f"{metric(v)} {fmt(p['score'])} vs {fmt(ver['bar'])}, its best {CONTROL_WORD.get(ver['binding'], 'control')} draw)"))
        elif any((p or {}).get("score") is not None for p in nat.values()):
            best = max((verdict_of(v, "natural", k)["lead"], k) for k in ctx["layers"] if (verdict_of(v, "natural", k) or {}).get("lead") is not None)
            absent.setdefault(role_of(v), []).append((-best[0], f"{esc(v['name'])} ({best[0]:+.2f} at {esc(best[1])})"))
        else:
            unscored.append(v["name"])
    items = []
    n_scored = len(vs) - len(unscored)
    items.append(f"<b>Decodes beyond both controls</b> (natural frames; {sum(map(len, decoded.values()))} of {n_scored} "
                 "variables scored there; by role): " + (by_role(decoded) or "none") + ".")
    steer, early = {}, {k: 0 for k in ctx["hidden"][:-1]}
    for j, v in enumerate(vs):
        st = (v.get("verdict") or {}).get("steering") or {}
        for k in early:
            early[k] += (st.get(k) or {}).get("steers") == "with"
        c = st.get("relu_fc") or {}
        if c.get("steers") == "with":
            steer.setdefault(role_of(v), []).append(
                (-c["cos"], f"{badge(j, vs, ctx['cols'], link=True)} {esc(v['name'])} (cos {c['cos']:.2f} vs "
                            f"{c['random_mean']:.2f} ± {c['random_sd']:.2f})"))
    items.append("<b>Steers the policy beyond random directions</b> at relu_fc, the layer the policy reads (adding its "
                 "function vector moves the logits the way really changing the value does; cos vs random directions): " +
                 (by_role(steer) or "none") + ". Earlier layers: " + ", ".join(f"{esc(k)} {n}" for k, n in early.items()) + " variables (there a steer "
                 "copies much of the pixels' own change, so any visible byte can pass).")
    counts = {}
    for k in ctx["hidden"]:
        for u in res["layers"][k]["units"]:
            if u["var"] >= 0:
                counts.setdefault(u["var"], {}).setdefault(k, 0)
                counts[u["var"]][k] += 1
    order = sorted(counts, key=lambda j: -sum(counts[j].values()))
    lab = [f"{badge(j, vs, ctx['cols'], link=True)} {esc(vs[j]['name'])} ({esc(role_of(vs[j]))}: " +
           ", ".join(f"{esc(k)} {n}" for k, n in counts[j].items()) + ")" for j in order[:6]]
    silent = ", ".join(f"{esc(k)} {res['layers'][k].get('silent_units', 0)}" for k in ctx["hidden"])
    items.append("<b>Labels units</b> (most first): " + ("; ".join(lab) or "none") + (f"; and {len(order) - 6} more variables"
                 if len(order) > 6 else "") + f". Silent units, not labelled: {silent}. " + agreement_text(ctx))
    items.append("<b>Does not represent</b> (scored on natural frames, no layer beyond both controls; the best lead over "
                 "the best control draw): " +
                 (by_role(absent) or "none") +
                 f". Not scored on natural frames: {len(unscored)} (reasons under Variables).")
    return (f"<div class='findings'><ul>{''.join(f'<li>{x}</li>' for x in items)}</ul><p class='note'>Decodable: "
            f"{esc(rules.get('decodable', ''))}. Steering: {esc(rules.get('steering', ''))}.</p></div>")


def agreement_text(ctx) -> str:
    """Label-picture agreement per layer in words (results.json layers[].agreement), and plainly whether the labels
    hold in the last conv map and the fc layer (relu3 and relu_fc in the Nature CNN; >= 0.8 of their position-labelled
    units agree), with what the others show."""
    res = ctx["res"]
    deep_names = ctx["hidden"][-2:]
    deep_text = " and ".join(deep_names)
    ag = {k: res["layers"][k].get("agreement") for k in ctx["hidden"]}
    if not any(ag.values()):
        return "No label-picture check (no top natural frames in this run, or results.json before version 5)."
    parts = [f"{esc(k)} {a.get('agreeing', 0)}/{a['units']}" + (f" ({a['share']:.0%}; chance {a['chance']:.0%})" if a["units"] else "")
             for k, a in ag.items() if a]
    text = ("<b>Label–picture agreement</b> (units labelled with an x- or y-position whose top natural frames show that "
            "object inside their box, in at least half of them): " + ", ".join(parts) + ". ")
    every = {k: a.get("all") for k, a in ag.items() if a and a.get("all")}
    if every:
        text += ("All labels (any byte, some of its object in the box): " + ", ".join(
            f"{esc(k)} {a.get('agreeing', 0)}/{a['units']}" + (f" ({a['share']:.0%}; chance {a['chance']:.0%})" if a["units"] else "")
            for k, a in every.items()) + "; by role, all layers: ")
        roles = {}
        for k in ctx["hidden"]:
            for u in res["layers"][k]["units"]:
                if u.get("agreement"):
                    r = roles.setdefault(role_of(ctx["vs"][u["var"]]), [0, 0])
                    r[0], r[1] = r[0] + int(u["agreement"]["agrees"]), r[1] + 1
        text += ", ".join(f"<i>{esc(r)}</i> {a}/{n}" for r, (a, n) in sorted(roles.items(), key=lambda x: -x[1][1])) + ". "
        bad = [f"{esc(r)} ({a} of {n} agree)" for r, (a, n) in sorted(roles.items()) if n >= 5 and a < 0.5 * n]
        if bad:
            text += (f"<b class='bad'>Labels that do not hold</b>: {', '.join(bad)}: their top natural frames do not show "
                     "what the byte draws, so read those labels as what moves the unit when the byte is set, not what it "
                     "responds to in play. ")
    deep = [ag[k] for k in deep_names if ag.get(k)]
    n, ok = sum(a["units"] for a in deep), sum(a.get("agreeing", 0) for a in deep)
    if not n:
        return text + f"No position-labelled unit in {' or '.join(deep_names)} to check."
    if ok >= 0.8 * n:
        return text + f"In {deep_text} {ok} of {n} ({ok / n:.0%}) agree: the position labels hold there."
    bad = [u for k in deep_names for u in res["layers"][k]["units"] if (u.get("agreement") or {}).get("agrees") is False]
    frames = sum(u["agreement"]["frames"] for u in bad)
    unseen = sum(u["agreement"]["frames"] - u["agreement"]["found"] for u in bad)
    return (text + f"<b class='bad'>The position labels do not hold in {deep_text}</b>: only {ok} of {n} ({ok / n:.0%}) "
            f"agree. On the {frames} top frames of the {len(bad)} others, the object was not on screen in {unseen} and "
            f"outside the box in {frames - unseen - sum(u['agreement']['agree'] for u in bad)}: those units fire most on "
            "something else, and the variable that moves them most when it is set is not what they respond to in play.")


def section_summary(ctx) -> str:
    """Findings beside their picture, then how to read the page (the legend and the metric names)."""
    return (f"<div class='summary'><div>{findings(ctx)}</div>{heat_block(ctx)}</div>"
            f"<details class='help' open><summary><b>How to read this page</b> (legend and metrics)</summary>"
            f"<p class='help'>{SCORES_HELP}</p><p class='help'>{STEER_HELP}</p></details>")


def units_data(ctx, effects_shown: int):
    """The JSON the units' panels are drawn from: per layer and unit, its label, effect, specificity, spread,
    its largest effects per variable, and its most activating natural frames with their boxes; the frames
    themselves once each (base64 PNG of the newest of the 4 stacked frames) with the probed variables' values."""
    res, npz, vs = ctx["res"], ctx["npz"], ctx["vs"]
    have_top = "top_stacks" in npz
    top_info = (res.get("natural") or {}).get("top_frames") or {}
    fields = top_info.get("receptive_field") or {}
    data = {"vars": [{"name": v["name"], "hex": f"{v['index']:02x}", "colour": ctx["cols"][j], "ink": ink(ctx["cols"][j]),
                      "what": describe(v)} for j, v in enumerate(vs)],
            "layers": {}, "frames": [], "where": [], "values": []}
    if have_top:
        data["frames"] = [png64(s[-1]) for s in npz["top_stacks"]]
        data["where"] = npz["top_where"].tolist()
        data["values"] = npz["top_ram"][:, npz["var_index"].astype(int)].tolist()
        no_frames = ""
    elif (res.get("natural") or {}).get("run") is False:
        no_frames = "no natural frames in this run (" + (res["natural"].get("reason") or "step 7 not run") + ")"
    else:
        no_frames = ("this run's activations.npz has no top_* arrays (--top-frames 0, or results.json version "
                     f"{res.get('version')} from a probe that did not save them)")
    min_eff = (res.get("args") or {}).get("min_unit_effect", 0)
    for k in ctx["hidden"]:
        L = res["layers"][k]
        eff = npz[f"unit_effect_{k}"]
        spread = npz.get(f"unit_spread_{k}")
        units = []
        for u in L["units"]:
            n = u["unit"]
            order = np.argsort(-eff[n], kind="stable")[:effects_shown]
            entry = {"v": u["var"], "e": round(u["effect"], 3), "s": None if u.get("specificity") is None else round(u["specificity"], 3),
                     "sd": None if spread is None else float(f"{spread[n]:.3g}"),
                     "top": [[int(j), round(float(eff[n, j]), 3)] for j in order if eff[n, j] > 0],
                     "more": int((eff[n] > 0).sum()) - int((eff[n, order] > 0).sum())}
            rule = L.get("label_rule") or {}
            if u.get("peak_change") is not None:
                entry["pc"] = round(u["peak_change"], 3)
            if u.get("agreement"):
                entry["ag"] = [u["agreement"]["agree"], u["agreement"]["frames"], u["agreement"]["found"],
                               u["agreement"].get("kind", "centre")]
            if u["var"] < 0:
                status = u.get("status") or ("dead" if u["effect"] == 0 else "weak")
                entry["why"] = {
                    "dead": "dead: constant on every sample",
                    "silent": (f"silent: its peak on the unperturbed screens is {u.get('peak', 0):.3f} of the layer's "
                               f"typical peak (< {rule.get('silent_fraction')}), nearly off in play"),
                }.get(status, f"no variable moves it by both {min_eff} SD and {rule.get('min_peak_change', 0)} of the "
                              f"layer's typical peak (largest effect {u['effect']:.2f} SD, its peak change "
                              f"{u.get('peak_change') or 0:.2f})" if "min_peak_change" in rule else
                              f"its largest effect, {u['effect']:.2f} SD, is below the {min_eff} SD threshold")
                entry["st"] = status
            if have_top:
                fr, val, box = npz[f"top_frame_{k}"][n], npz[f"top_value_{k}"][n], npz[f"top_box_{k}"][n]
                entry["f"] = [[int(f), round(float(a), 3), *map(int, b)] for f, a, b in zip(fr, val, box) if f >= 0]
            units.append(entry)
        f = fields.get(k)
        data["layers"][k] = {"module": L["module"], "kind": "unit" if k == "relu_fc" else "channel", "units": units,
                             "field": [f["size"], f["stride"]] if f else None, "no_frames": no_frames}
    return data


def layer_grid(k, ctx) -> str:
    """A layer's units in a grid (GRID_COLUMNS per row, the first unit of each row at its left), each a button
    in the colour of its label, paler the weaker its effect (full at the layer's 95th percentile), its label's
    hex index written on it; above it the addresses that label units here, with counts (a click highlights them)."""
    res, vs, cols = ctx["res"], ctx["vs"], ctx["cols"]
    L = res["layers"][k]
    units = L["units"]
    lab = [u for u in units if u["var"] >= 0]
    sat = float(np.percentile([u["effect"] for u in lab], 95)) if lab else 1.0
    counts = {}
    for u in lab:
        counts[u["var"]] = counts.get(u["var"], 0) + 1
    kind = "unit" if k == "relu_fc" else "channel"
    legend = " ".join(f"<button class='lg' data-layer='{esc(k)}' data-var='{j}'>{badge(j, vs, cols)} {n}</button>"
                      for j, n in sorted(counts.items(), key=lambda x: (-x[1], x[0])))
    cells = []
    for u in units:
        if u["unit"] % GRID_COLUMNS == 0:
            cells.append(f"<span class='rowlab'>{u['unit']}</span>")
        if u["var"] >= 0:
            bg = mix(cols[u["var"]], 0.25 + 0.75 * min(1.0, u["effect"] / max(sat, 1e-9)))
            text, tip = f"{vs[u['var']]['index']:02x}", f"{kind} {u['unit']}: {vs[u['var']]['name']}, {u['effect']:.2f} SD"
        elif u.get("status") == "silent":
            bg, text, tip = "#efefef", "s", f"{kind} {u['unit']}: silent (nearly off on the unperturbed screens), no label"
        else:
            bg, text, tip = GREY, "·", f"{kind} {u['unit']}: no label ({u.get('status') or 'weak or dead'})"
        cells.append(f"<button class='u' data-unit='{u['unit']}' data-var='{u['var']}' style='background:{bg};color:{ink(bg)}' "
                     f"title='{esc(tip)}'>{text}</button>")
    return (f"<p class='legend'>Labels in this layer (click one to highlight its {kind}s): {legend or 'none'}</p>"
            f"<div class='grid' data-layer='{esc(k)}'>{''.join(cells)}</div>"
            f"<div class='panel' id='panel-{esc(k)}' data-initial='{max(units, key=lambda u: u['effect'])['unit']}'></div>")


def section_units(ctx) -> str:
    res = ctx["res"]
    args = res.get("args") or {}
    min_eff = args.get("min_unit_effect", 0)
    parts = [f"<p class='note'>Every fc unit / conv channel carries the label of the RAM address whose intervention moves it "
             f"most. <b>Effect</b> = mean over the variable's draws (changing at most {esc(str(args.get('unit_max_other_changed', '—')))} "
             "other bytes) of |activation − its control's activation| (a conv channel: averaged over its positions), in SDs of "
             "the unit's natural spread; <b>specificity</b> = that effect / the sum of the unit's effects over all variables "
             f"(1 = only this variable moves it). Grey (·): dead, or no variable moves it enough; light grey (s): silent. Colour strength: the "
             "effect, full at the layer's 95th percentile. Click a unit for its panel: its effect on each variable and the "
             "natural frames (the newest of the agent's 4 stacked 84×84 frames) on which it is most active, with the "
             f"receptive field of its most active position boxed in yellow (an fc unit: of the {esc(ctx['hidden'][-2])} position that adds most "
             "to it on that frame).</p>"]
    first = ctx["hidden"][0]
    rule = ((res["layers"].get(first) or {}).get("label_rule") or {})
    if rule.get("how"):
        parts.append(f"<p class='note'><b>Label rule</b> ({esc(first)}'s typical peak; each layer's is in its heading): "
                     f"{esc(rule['how'])}. <b>Label–picture agreement</b>: "
                     f"{esc((res['layers'][first].get('agreement') or {}).get('how', 'not checked in this run'))}.</p>")
    top = (res.get("natural") or {}).get("top_frames") or {}
    for k in ctx["hidden"]:
        L = res["layers"][k]
        lab = [u for u in L["units"] if u["var"] >= 0]
        spec = f", median specificity {np.median([u['specificity'] for u in lab]):.2f}" if lab else ""
        f = (top.get("receptive_field") or {}).get(k)
        shape = " × ".join(str(x) for x in L["shape"])
        field = f"; one position sees {f['size']}×{f['size']} px of the 84×84 frame, every {f['stride']} px" if f else ""
        field += f", the first from px {f['start']} (padding)" if f and f.get("start") else ""
        ag = L.get("agreement") or {}
        al = ag.get("all") or {}
        agree = (f"; label–picture agreement {ag.get('agreeing', 0)} of {ag['units']} position-labelled {'units' if k == 'relu_fc' else 'channels'}"
                 + (f" ({ag['share']:.0%}; top frames {ag['frames_agreeing']}/{ag['frames']}; chance {ag['chance']:.0%})" if ag["units"] else "")
                 + (f", {al.get('agreeing', 0)} of {al['units']} of all labelled ({al['share']:.0%}; chance {al['chance']:.0%})"
                    if al.get("units") else "") if ag else "")
        weak = (f"{L.get('weak_units', 0)} weak, {L.get('silent_units', 0)} silent; typical peak {L['typical_peak']:.3g}"
                if "silent_units" in L else f"{L.get('weak_units', 0)} below {esc(str(min_eff))} SD")
        parts.append(f"<h3 id='layer-{esc(k)}'>{esc(L['module'])} <span class='sub'>({esc(shape)}{field}): {len(lab)} labelled, "
                     f"{L.get('dead_units', 0)} dead, {weak}{spec}{agree}</span></h3>"
                     + layer_grid(k, ctx))
    return "".join(parts)


def section_run(ctx) -> str:
    res = ctx["res"]
    inp, cnt, nat = res["inputs"], res["counts"], res.get("natural") or {}
    prep = res.get("preprocessing_check") or {}
    pipeline = prep.get("pipeline") or "ale_py's AtariVectorEnv (the pixel agent's training env)"
    if prep.get("compared") and isinstance(prep.get("observation"), dict):  # an agent trained elsewhere (FORMATS.md §6)
        fr, ob = prep.get("frame") or {}, prep["observation"]
        prep_text = (f"against {pipeline}, over {prep.get('steps')} steps of the same random actions: newest frame largest "
                     f"difference {fr.get('max_abs_diff')} gray levels (mean {fmt(fr.get('mean_abs_diff'), 4)}); 4-frame "
                     f"stack largest {ob.get('max_abs_diff')} (mean {fmt(ob.get('mean_abs_diff'), 3)}), identical on "
                     f"{ob.get('steps_identical')} steps.")
    elif prep.get("compared"):
        prep_text = (f"this script's 4-frame stacks equal those of {pipeline} on "
                     f"{prep.get('steps_identical')} of {prep.get('steps', 0) + 1} observations of the same random actions "
                     f"(largest difference {prep.get('max_abs_diff')} gray levels).")
    else:
        prep_text = "not compared: " + str(prep.get("reason") or "no reason recorded")
    memory = (f"memory agent {esc(str(inp['ram_checkpoint']))} (step {fmt(inp.get('ram_global_step'))})"
              if inp.get("ram_checkpoint") else "no memory agent")
    items = [f"Pixel agent {esc(str(inp['pixel_checkpoint']))} (step {fmt(inp.get('pixel_global_step'))}); {memory}; "
             f"ram vars {esc(str(inp['ram_vars']))}"
             + (f" ({esc(inp['ram_vars_from'])})" if inp.get("ram_vars_from") not in (None, "--ram-vars") else "")
             + (f" (variables named by the roles in {esc(str(inp['roles_from']))})" if inp.get("roles_from") else "") + ".",
             f"Variables ranked by {esc(ranking_text(res)[1])}.",
             f"{cnt['samples']:,} emulated samples on {cnt['base_states']} base states ({len(cnt['test_base_states'])} held out); "
             f"{cnt.get('kept_draws', '—')} of {cnt.get('drawn', '—')} drawn values changed their byte. Device {esc(str(res.get('device')))}, "
             f"created {esc(res.get('created', '—'))}.",
             f"Observation check: {esc(prep_text)}",
             f"Restore check: restoring a base state and replaying its actions reproduced the rollout's observation for "
             f"{res['restore_check']['identical_to_rollout']}/{res['restore_check']['base_states']} base states."]
    if nat.get("run"):
        sp = nat["split"]
        dropped = ", ".join(f"{d['name']} ({d['entropy_bits']:.2f} bits)" for d in nat["dropped"] if d["reason"].startswith("dropped"))
        items.append(f"Natural frames ({esc(nat['protocol'] if 'protocol' in nat else 'AtariARI')}): {nat['samples']} frames "
                     f"({nat['duplicates_dropped']} duplicate stacks dropped), split by {esc(sp['by'])}: {sp['train_groups']} groups "
                     f"({sp['n_train']} frames) to fit, {sp['test_groups']} held out ({sp['n_test']} frames)"
                     + (f"; {esc(sp['fallback'])}" if sp.get("fallback") else "")
                     + f". Read-out: {esc(nat['classifier'])} (categorical), {esc(nat['regressor'])} (ordinal). Random network: "
                     f"{esc(nat['random_network']['how'])} (seed {nat['random_network']['seed']}). Dropped for entropy &lt; "
                     f"{nat['min_entropy_bits']} bits: {esc(dropped) or 'none'}.")
    else:
        items.append(f"Natural frames: {esc(nat.get('reason') or 'results.json version %s has none' % res.get('version'))}.")
    timing = res.get("timing") or {}
    items.append("Timing: " + ", ".join(f"{esc(k)} {v:.1f}" if isinstance(v, float) else f"{esc(k)} {v}" for k, v in timing.items()) + ".")
    return "<ul class='run'>" + "".join(f"<li>{x}</li>" for x in items) + "</ul>"


STYLE = """
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1d; margin: 0 auto;
       padding: 0 20px 40px; max-width: 1400px; }
h1 { font-size: 24px; margin: 18px 0 6px; } h2 { font-size: 20px; margin: 28px 0 8px; border-bottom: 1px solid #ccc; }
h3 { font-size: 16px; margin: 8px 0 4px; } .sub { font-weight: normal; color: #555; font-size: 14px; }
nav { font-size: 14px; margin: 6px 0 10px; } nav a { margin-right: 14px; }
.note, .help, .run { font-size: 13px; color: #333; max-width: 1100px; }
.why { color: #8a3b00; font-size: 12px; margin: 2px 0; }
table { border-collapse: collapse; font-size: 12px; margin: 4px 0; }
th, td { border: 1px solid #d0d0d0; padding: 2px 6px; text-align: right; vertical-align: top; }
th { background: #f0f0f0; } caption { font-size: 12px; color: #444; text-align: left; padding: 2px 0; }
td.l, th.l { text-align: left; } td.why { max-width: 380px; } td.what { max-width: 220px; }
table.sortable th { cursor: pointer; } table.overview { width: 100%; }
table.overview td.region { width: 190px; } table.overview td.why { width: 380px; }
.ctl { color: #666; } td.win { background: #dcf1dc; font-weight: bold; }
.bar { height: 5px; width: 56px; background: #eee; margin: 1px 0 1px auto; } .bar i { display: block; height: 100%; }
.dbar { position: relative; height: 6px; width: 96px; background: linear-gradient(90deg, #eee 49.5%, #999 49.5%, #999 50.5%, #eee 50.5%);
        margin: 1px 0 1px auto; } .dbar i { position: absolute; top: 0; height: 100%; }
.badge { display: inline-block; min-width: 24px; padding: 0 4px; border-radius: 3px; font: bold 12px/18px ui-monospace, monospace;
         text-align: center; } a.nolink { text-decoration: none; }
details.var { border: 1px solid #ddd; border-left: 8px solid #999; padding: 4px 12px; margin: 8px 0; }
details.var > summary { cursor: pointer; } details.var > summary h3 { display: inline; }
.desc { margin: 2px 0 6px; font-size: 13px; max-width: 1200px; }
.cardrow { display: flex; gap: 22px; align-items: flex-start; flex-wrap: wrap; }
figure { margin: 0; } figcaption { font-size: 12px; color: #444; max-width: 200px; }
img.region { image-rendering: pixelated; border: 1px solid #ccc; display: block; }
video { max-width: 100%; } #videos figcaption { max-width: 1100px; } #videos figure { margin: 8px 0; }
.verdict { font-size: 13px; margin: 6px 0 2px; } .verdict.with { color: #135f13; } .verdict.against { color: #a10000; }
.units { font-size: 13px; margin: 4px 0; } .ul { margin-right: 12px; white-space: nowrap; }
button { font: inherit; cursor: pointer; }
.ulink { font-size: 12px; padding: 0 4px; border: 1px solid #bbb; background: #fafafa; border-radius: 3px; }
.legend { font-size: 13px; } .lg { font-size: 12px; border: 1px solid #ccc; background: #fff; border-radius: 3px; padding: 1px 4px; margin: 1px; }
.lg.on { outline: 2px solid #000; }
.grid { display: grid; grid-template-columns: 44px repeat(32, 38px); gap: 2px; margin: 4px 0; }
.rowlab { font-size: 12px; color: #666; text-align: right; padding-right: 4px; line-height: 26px; }
.u { height: 26px; padding: 0; border: 1px solid #fff; font: 12px/24px ui-monospace, monospace; }
.u.sel { outline: 3px solid #000; outline-offset: -1px; } .grid.hl .u:not(.on) { opacity: 0.15; }
.panel { border: 1px solid #bbb; background: #fbfbfb; padding: 8px 12px; margin: 6px 0 16px; min-height: 60px; }
.phead { font-size: 14px; margin-bottom: 6px; } .pbody { display: flex; gap: 26px; flex-wrap: wrap; align-items: flex-start; }
.ptitle { font-size: 13px; font-weight: bold; margin-bottom: 4px; }
.eff { display: grid; grid-template-columns: auto 84px 170px 44px; gap: 2px 6px; font-size: 12px; align-items: center; }
.eff .b { height: 10px; } .frames { display: flex; gap: 12px; flex-wrap: wrap; }
.frames figure { width: 168px; } .frames svg { display: block; image-rendering: pixelated; border: 1px solid #999; }
.frames figcaption { font-size: 12px; }
.summary { display: flex; gap: 24px; align-items: flex-start; } .summary > div { flex: 1; min-width: 0; }
.findings ul { margin: 4px 0; padding-left: 20px; font-size: 13px; } .findings li { margin: 3px 0; }
.bad { color: #a10000; } td.nd { color: #666; } ul.reasons { font-size: 12px; margin: 2px 0 8px; }
figure.heat { flex: none; } .hgrid { display: grid; grid-template-columns: auto auto; column-gap: 6px; }
.hhead { display: flex; font-size: 12px; } .hhead span { text-align: center; }
.hrow { height: 16px; font-size: 12px; line-height: 16px; white-space: nowrap; text-align: right; }
.hrow .badge { font-size: 11px; line-height: 14px; min-width: 20px; padding: 0 2px; } figure.heat img { display: block; }
.ckey { display: inline-block; width: 80px; height: 10px; vertical-align: middle; }
.swatch { display: inline-block; width: 12px; height: 10px; vertical-align: middle; border: 1px solid #bbb; }
figure.heat figcaption { max-width: 480px; }
details.help > summary { cursor: pointer; font-size: 14px; }
"""

SCRIPT = """
var DATA = JSON.parse(document.getElementById('atlas-data').textContent);
function esc(s) { return String(s).replace(/[&<>'"]/g, function (c) { return '&#' + c.charCodeAt(0) + ';'; }); }
function badge(j) {
  var v = DATA.vars[j];
  return "<span class='badge' style='background:" + v.colour + ";color:" + v.ink + "' title='" + esc(v.name) + "'>" + v.hex + "</span>";
}
function showUnit(layer, u, scroll) {
  var L = DATA.layers[layer], U = L.units[u], panel = document.getElementById('panel-' + layer);
  document.querySelectorAll(".grid[data-layer='" + layer + "'] .u").forEach(function (b) {
    b.classList.toggle('sel', Number(b.dataset.unit) === u);
  });
  var h = "<div class='phead'><b>" + esc(L.module) + " " + L.kind + " " + u + "</b> — ";
  if (U.v >= 0) {
    h += "label " + badge(U.v) + " " + esc(DATA.vars[U.v].name) + " (" + esc(DATA.vars[U.v].what) + "): effect " +
         U.e.toFixed(2) + " SD of its natural spread" + (U.pc !== undefined ? ", peak change " + U.pc.toFixed(2) +
         " of the layer's typical peak" : "") + ", specificity " + U.s.toFixed(2);
    if (U.ag) {
      h += "; <b>label–picture: " + U.ag[0] + " of " + U.ag[1] + " top frames show " +
           (U.ag[3] === 'centre' ? "the object's centre" : "some of its object") + " in the box</b>" +
           (U.ag[2] < U.ag[1] ? " (not on screen in " + (U.ag[1] - U.ag[2]) + ")" : "");
    }
  } else {
    h += "no label: " + esc(U.why);
  }
  if (U.sd !== null) { h += "; natural spread (SD) " + U.sd; }
  h += "</div><div class='pbody'><div><div class='ptitle'>Effect of each variable on it (SD)</div><div class='eff'>";
  var max = U.top.length ? U.top[0][1] : 1;
  U.top.forEach(function (t) {
    var v = DATA.vars[t[0]];
    h += "<span>" + badge(t[0]) + "</span><span>" + esc(v.name) + "</span><span class='b' style='width:" +
         Math.max(1, Math.round(170 * t[1] / max)) + "px;background:" + v.colour + "'></span><span>" + t[1].toFixed(2) + "</span>";
  });
  h += "</div>" + (U.more > 0 ? "<div class='note'>and " + U.more + " more variables with smaller effects</div>" : "") +
       (U.top.length ? "" : "<div class='note'>no variable moves it</div>") + "</div>";
  h += "<div><div class='ptitle'>Natural frames that activate it most" +
       (L.field ? " (box: the " + L.field[0] + "×" + L.field[0] + " px receptive field of its most active position)" :
        " (an fc unit sees the whole frame)") + "</div>";
  if (!U.f) {
    h += "<div class='note'>" + esc(L.no_frames) + "</div>";
  } else if (!U.f.length) {
    h += "<div class='note'>zero on every natural frame</div>";
  } else {
    h += "<div class='frames'>";
    U.f.forEach(function (f) {
      var w = DATA.where[f[0]];
      h += "<figure><svg width='168' height='168' viewBox='0 0 84 84'><image width='84' height='84' href='data:image/png;base64," +
           DATA.frames[f[0]] + "'></image><rect x='" + (f[4] - 0.25) + "' y='" + (f[2] - 0.25) + "' width='" + (f[5] - f[4] + 1.5) +
           "' height='" + (f[3] - f[2] + 1.5) + "' fill='none' stroke='#ffd400' stroke-width='1'></rect></svg><figcaption>activation " +
           f[1].toFixed(2) + (U.v >= 0 ? "; " + esc(DATA.vars[U.v].name) + " = " + DATA.values[f[0]][U.v] : "") +
           "<br>emulator " + w[0] + ", episode " + w[1] + ", agent step " + w[2] + "</figcaption></figure>";
    });
    h += "</div>";
  }
  panel.innerHTML = h + "</div></div>";
  if (scroll) { panel.scrollIntoView({block: 'nearest'}); }
}
document.querySelectorAll('.grid').forEach(function (g) {
  g.addEventListener('click', function (ev) {
    var b = ev.target.closest('.u');
    if (b) { showUnit(g.dataset.layer, Number(b.dataset.unit), false); }
  });
});
document.querySelectorAll('.ulink').forEach(function (b) {
  b.addEventListener('click', function () {
    showUnit(b.dataset.layer, Number(b.dataset.unit), false);
    document.getElementById('layer-' + b.dataset.layer).scrollIntoView();
  });
});
document.querySelectorAll('.lg').forEach(function (b) {
  b.addEventListener('click', function () {
    var g = document.querySelector(".grid[data-layer='" + b.dataset.layer + "']"), on = !b.classList.contains('on');
    document.querySelectorAll(".lg[data-layer='" + b.dataset.layer + "']").forEach(function (x) { x.classList.remove('on'); });
    b.classList.toggle('on', on);
    g.classList.toggle('hl', on);
    g.querySelectorAll('.u').forEach(function (u) { u.classList.toggle('on', on && u.dataset.var === b.dataset.var); });
  });
});
function unfold() {
  var el = document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (el && el.tagName === 'DETAILS' && !el.open) { el.open = true; el.scrollIntoView(); }
}
window.addEventListener('hashchange', unfold);
unfold();
document.querySelectorAll('.panel').forEach(function (p) { showUnit(p.id.slice(6), Number(p.dataset.initial), false); });
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var dir = th.dataset.dir === 'asc' ? -1 : 1;
    th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    function key(r) { var c = r.cells[col]; return c.dataset.sort !== undefined ? c.dataset.sort : c.textContent; }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      if (!isNaN(nx) && !isNaN(ny)) { return dir * (nx - ny); }
      return dir * x.localeCompare(y);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
document.body.setAttribute('data-rendered', String(document.images.length));
"""


def section_videos(out_dir: Path) -> str:
    """The decoded-state videos probe_video.py wrote into this folder (a `decoded_*.json` beside its .mp4), shown by
    relative link (not inlined: the page stays small) with what each shows; "" when there is none."""
    parts = []
    for path in sorted(out_dir.glob("decoded_*.json")):
        with contextlib.suppress(OSError, ValueError):
            m = json.loads(path.read_text())
            if m.get("format") != "memory-pixel-interp/probe-video" or not (out_dir / str(m.get("video"))).is_file():
                continue
            rows = "".join(
                f"<li>{esc(v['name'])}{' (' + esc(v['role']) + ')' if v.get('role') else ''}: R² in the video "
                f"{fmt((v.get('video_score') or {}).get('r2'))}, mean |error| {fmt((v.get('video_score') or {}).get('mae'))}; "
                + (f"marker along {esc(v['position']['axis'])} (r = {v['position']['r']:.2f})" if v.get("position")
                   else f"no marker: {esc(v.get('position_reason') or '')}")
                + (f"; {esc(str(v['unit']['unit']))}: {esc(v['unit']['why'])}" if v.get("unit") else "") + "</li>"
                for v in m["variables"])
            parts.append(f"<figure><video src='{esc(m['video'])}' controls loop muted playsinline></video><figcaption>"
                         f"<a href='{esc(m['video'])}'>{esc(m['video'])}</a>: {m['frames']} frames ({m['frames'] / m['fps']:.0f} s), "
                         f"pixel agent at step {fmt(m.get('pixel_global_step'))}, {esc(m['module'])}, {esc(m['readout'])} read-out "
                         f"(python probe_video.py, {esc(str(m.get('codec')))})<ul>{rows}</ul></figcaption></figure>")
    if not parts:
        return ""
    return ("<p class='note'>The agent plays a game it was not fitted on; per variable, the value a linear read-out of the "
            "layer gives (dashed line on the screen for positions) against the RAM's (triangles), and the activation map "
            "of the channel labelled with it. Made by probe_video.py.</p>" + "".join(parts))


def html_page(ctx, args) -> str:
    """The atlas. Its sections are the list `sections` (id, title, html): a new section is one more entry."""
    res = ctx["res"]
    inp = res["inputs"]
    sections = [("summary", "Findings", section_summary(ctx)),
                ("variables", "Variables", section_variables(ctx)),
                ("units", "Units and channels", section_units(ctx)),
                ("run", "Run and checks", section_run(ctx))]
    videos = section_videos(Path(args.out_dir))
    if videos:  # probe_video.py's decoded-state videos, when there are any
        sections.insert(2, ("videos", "Decoded-state videos", videos))
    data = json.dumps(units_data(ctx, args.effects_shown), separators=(",", ":")).replace("</", "<\\/")
    nav = " ".join(f"<a href='#{sid}'>{esc(title)}</a>" for sid, title, _ in sections)
    H, W = ctx["screen"]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Atlas: {esc(res['env_id'])}</title>"
            f"<style>{STYLE}</style></head><body>"
            f"<h1>Atlas: what the pixel agent knows about {esc(res['env_id'])}'s RAM</h1>"
            f"<p class='note'>{len(ctx['vs'])} RAM variables probed in every layer of the pixel agent "
            f"({esc(str(inp['pixel_checkpoint']))}, step {fmt(inp.get('pixel_global_step'))}), " + (
                f"ranked by how much the memory agent ({esc(str(inp['ram_checkpoint']))}, step "
                f"{fmt(inp.get('ram_global_step'))}) relies on them" if ranking_text(res)[0] == "memory-agent importance" else
                "ranked, without a memory agent, by how much writing each into the emulator moves the pixel agent's policy")
            + f" ({esc(ranking_text(res)[0])}); screen {H}×{W}. "
            "Each address has one colour on every chart.</p>"
            f"<nav>{nav}</nav>"
            + "".join(f"<section id='{sid}'><h2>{esc(title)}</h2>{body}</section>" for sid, title, body in sections)
            + f"<script type='application/json' id='atlas-data'>{data}</script><script>{SCRIPT}</script></body></html>")


def main(args: Args):
    if not args.out_dir:
        raise InputError("--out-dir is required")
    out_dir = Path(args.out_dir)
    res, npz = load_inputs(out_dir)
    vs = res["variables"]
    cols = address_colours(len(vs))  # the one address -> colour map of the page
    rgb = npz["base_rgb"][0]

    def picture(j, v):  # the variable's screen track on its base state; its region on base 0 without one in range
        track = v.get("screen_track") or {}
        if track.get("boxes") and type(track.get("base")) is int and 0 <= track["base"] < len(npz["base_rgb"]):
            return track_picture(npz["base_rgb"][track["base"]], track, cols[j])
        return region_picture(rgb, npz["diff_raw"][j], raw_region(v), cols[j])
    regions = [png64(picture(j, v)) for j, v in enumerate(vs)]
    ctx = {"res": res, "npz": npz, "vs": vs, "cols": cols, "regions": regions, "layers": list(res["layers"]),
           "hidden": hidden_layers(res),
           "screen": tuple(int(x) for x in rgb.shape[:2]), "open_cards": args.open_cards}
    page = html_page(ctx, args).encode()
    path = out_dir / "report.html"
    try:
        write_atomic(path, lambda f: f.write(page))
    except OSError as e:  # a read-only folder, a full disk: an earlier report.html stays whole
        raise InputError(f"cannot write {path}: {e.strerror or e}")
    print(f"[report] {path} ({len(page) / 1e6:.1f} MB: {len(vs)} variables, "
          f"{sum(len(res['layers'][k]['units']) for k in ctx['hidden'])} units, {len(npz.get('top_stacks', []))} natural frames)", flush=True)


if __name__ == "__main__":
    cli = parse_args()
    check_ranges(cli, RANGES)
    try:
        main(cli)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
