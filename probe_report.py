"""Draw the figures and the self-contained HTML report of a probe_function_vectors.py run.

Reads `<out-dir>/results.json` and `<out-dir>/activations.npz` (README §Probe) and writes into the same folder:
- `importance.png`: how much the memory agent relies on each RAM variable (policy change when ablated);
- `probe_scores.png`: layer x variable heatmap of held-out probe scores, beside the shuffled-label control;
- `causal.png`: per variable and steered layer, how far the function vector moves the policy toward the
  screens where the variable really has the new value, against random directions of the same norm;
- `units_<layer>.png`: every fc unit / conv channel coloured and annotated by the RAM address whose
  intervention moves it most (effect in SDs of its natural spread), with, below, the screen region of each
  address that labels units in that layer (most units first, with the count);
- `var_<name>.png`: per variable, the screen with the region it controls marked, the mean |difference| map,
  and the difference-of-means maps of its top channel in each conv layer;
- `report.html`: one file, images inlined as base64, opens from disk without a server; besides the figures, a
  table of the natural-frame probes (results version 3) beside the random-network and intervention probes.

Usage: python probe_report.py --out-dir probe/BreakoutNoFrameskip-v4
"""
import base64
import contextlib
import html
import io
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


@dataclass
class Args:
    out_dir: str = ""
    """folder written by probe_function_vectors.py (holds results.json and activations.npz)"""
    max_unit_labels: int = 512
    """annotate at most this many units per layer chart with their address"""


# The valid range of every numeric flag, as in maths ("[1, inf)": 1 or more); check_ranges refuses the rest.
RANGES = {"max_unit_labels": "[0, inf)"}


HIDDEN = ["relu1", "relu2", "relu3", "relu_fc"]
NPZ_KEYS = ["var_names", "var_index", "base_rgb", "diff_raw", "diff_obs", "fv_relu1", "fv_relu2", "fv_relu3",
            "unit_effect_relu1", "unit_effect_relu2", "unit_effect_relu3", "unit_effect_relu_fc"]


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
    try:
        res = json.loads((out_dir / "results.json").read_text())
    except FileNotFoundError:
        raise InputError(f"{out_dir / 'results.json'} does not exist (run probe_function_vectors.py first)")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {out_dir / 'results.json'}: {e}")
    if not isinstance(res, dict) or res.get("format") != "memory-pixel-interp/probe":
        raise InputError(f"{out_dir / 'results.json'} is not a probe results file")
    if res.get("version") not in (1, 2, 3):
        raise InputError(f"{out_dir / 'results.json'} is probe results version {res.get('version')}; this probe_report.py reads 1 to 3")
    try:
        with np.load(out_dir / "activations.npz", allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise InputError(f"{out_dir / 'activations.npz'} lacks {missing} (from an older probe_function_vectors.py? run it again)")
            npz = {k: z[k] for k in NPZ_KEYS}
    except FileNotFoundError:
        raise InputError(f"{out_dir / 'activations.npz'} does not exist")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read {out_dir / 'activations.npz'} (corrupt or truncated?): {type(e).__name__}: {e}")
    names = [str(n) for n in npz["var_names"]]
    if names != [v["name"] for v in res.get("variables", [])]:
        raise InputError(f"{out_dir}: activations.npz and results.json describe different variables (mixed runs?)")
    return res, npz


def colours(n):
    """Distinct colours without greys (grey marks dead / unlabelled units), the most distinct first."""
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]
    palette += [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i % 2 and i != 15]
    palette += list(plt.get_cmap("tab20b").colors) + [c for i, c in enumerate(plt.get_cmap("tab20c").colors) if i < 16]
    return [palette[i % len(palette)] for i in range(n)]


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


def save_png(fig, path: Path):
    """Atomic PNG write; returns the PNG bytes (for inlining)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    write_atomic(path, lambda f: f.write(data))
    return data


def raw_region(v):
    """A variable's screen region on the raw screen (rows x cols of the game's own size); results version 1
    named it raw_210x160 even on games whose screen is not 210 rows high."""
    sr = v["screen_region"]
    return sr["raw"] if "raw" in sr else sr.get("raw_210x160")


def draw_region(ax, rgb, diff, region, colour):
    """The screen with the mean |difference| a variable causes overlaid in red and its bounding box."""
    ax.imshow(rgb)
    if diff.max() > 0:
        over = np.zeros(diff.shape + (4,))
        over[..., 0] = 1
        over[..., 3] = np.clip(diff / diff.max(), 0, 1) * 0.8
        ax.imshow(over)
    if region:
        r0, r1, c0, c1 = region["bbox"]
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False, ec=colour, lw=2))
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------- figures
def fig_importance(res):
    rk = res["importance"]["ranking"]
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(rk)), 3))
    ax.bar(range(len(rk)), [s["tv"] for s in rk], color="tab:blue")
    ax.set_xticks(range(len(rk)), [s["name"] for s in rk], rotation=70, fontsize=7)
    ax.set_ylabel("mean TV of policy\nwhen byte is ablated")
    ax.set_title(f"memory agent: reliance on each RAM byte ({res['importance']['states']} states)")
    return fig


def fig_probe_scores(res):
    vs = res["variables"]
    layers = list(res["layers"])
    score = np.array([[np.nan if v["probe"][k].get("score") is None else v["probe"][k]["score"] for v in vs] for k in layers])
    ctrl = np.array([[np.nan if v["probe"][k].get("control") is None else v["probe"][k]["control"] for v in vs] for k in layers])
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.9 * len(vs) + 4), 3.2))
    for ax, mat, title in ((axes[0], score, "held-out probe score"), (axes[1], ctrl, "shuffled-label control")):
        im = ax.imshow(np.clip(mat, -1, 1), vmin=-1, vmax=1, cmap="RdBu_r", aspect="auto")
        ax.set_xticks(range(len(vs)), [f"{v['name']}\n{'F1' if v['categorical'] else 'R²'}" for v in vs], fontsize=7, rotation=60)
        ax.set_yticks(range(len(layers)), layers, fontsize=8)
        ax.set_title(title + " (clipped to [-1, 1]; — = not scored, reason in the table)", fontsize=9)
        for (i, j), val in np.ndenumerate(mat):
            ax.text(j, i, "—" if np.isnan(val) else f"{val:.2f}", ha="center", va="center", fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.03)
    return fig


def fig_causal(res):
    vs = res["variables"]
    fv = np.full((len(HIDDEN), len(vs)), np.nan)
    rd = np.full_like(fv, np.nan)
    for j, v in enumerate(vs):
        for i, k in enumerate(HIDDEN):
            c = (v.get("causal") or {}).get(k)
            if c and c["function_vector"].get("cos_actor") is not None:
                fv[i, j] = c["function_vector"]["cos_actor"]
                rd[i, j] = c["random"]["cos_actor"]["mean"] if c["random"].get("cos_actor") else np.nan
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.9 * len(vs) + 4), 3))
    for ax, mat, title in ((axes[0], fv, "function vector"), (axes[1], rd, "random direction, same norm (mean)")):
        im = ax.imshow(mat, vmin=-1, vmax=1, cmap="RdBu_r", aspect="auto")
        ax.set_xticks(range(len(vs)), [v["name"] for v in vs], fontsize=7, rotation=60)
        ax.set_yticks(range(len(HIDDEN)), [f"steer {k}" for k in HIDDEN], fontsize=8)
        ax.set_title(f"{title}: cos(logit move, true logit move)\n(— = no causal test, reason in the table)", fontsize=9)
        for (i, j), val in np.ndenumerate(mat):
            ax.text(j, i, "—" if np.isnan(val) else f"{val:.2f}", ha="center", va="center", fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.03)
    return fig


def fig_units(res, npz, layer, max_labels):
    """Grid of the layer's units / channels, each coloured by the address it is labelled with (alpha: its
    effect, saturating at the layer's 95th percentile), and below it the screen region of each address that
    labels units in this layer, most units first. Colours are given per chart in that order (the most distinct
    ones to the addresses labelling the most units)."""
    L = res["layers"][layer]
    units = L["units"]
    vs = res["variables"]
    n = len(units)
    ncol = 8 if n <= 64 else 32
    nrow = -(-n // ncol)
    labelled = [u for u in units if u["var"] >= 0]
    counts = {}
    for u in labelled:
        counts[u["var"]] = counts.get(u["var"], 0) + 1
    used = sorted(counts, key=lambda j: (-counts[j], j))
    cols = dict(zip(used, colours(len(used))))
    sat = float(np.percentile([u["effect"] for u in labelled], 95)) if labelled else 1.0
    per_row = 10  # legend thumbnails per row
    leg_rows = -(-len(used) // per_row)
    grid_h, leg_h = nrow * (0.5 if ncol == 8 else 0.36), leg_rows * 2.0
    H = grid_h + leg_h + 1.0
    fig = plt.figure(figsize=(12, H))
    gw = 0.45 if ncol == 8 else 0.98
    ax = fig.add_axes([(1 - gw) / 2, (leg_h + 0.2) / H, gw, grid_h / H])
    img = np.ones((nrow, ncol, 4))
    for u in units:
        r, c = divmod(u["unit"], ncol)
        img[r, c] = (0.85, 0.85, 0.85, 1) if u["var"] < 0 else (*cols[u["var"]][:3], 0.15 + 0.85 * min(1.0, u["effect"] / max(sat, 1e-9)))
    ax.imshow(img, aspect="auto", interpolation="nearest")
    for u in units[:max_labels]:
        r, c = divmod(u["unit"], ncol)
        label = "·" if u["var"] < 0 else f"{vs[u['var']]['index']:02x}\n{u['effect']:.{2 if ncol == 8 else 1}f}"
        ax.text(c, r, label, ha="center", va="center", fontsize=5 if ncol > 8 else 7)
    ax.set_xticks([])
    ax.set_yticks([])
    kind = "unit" if layer == "relu_fc" else "channel"
    rule = L.get("label_rule", {})
    ax.set_title(f"network.{layer}: each {kind} labelled with the RAM index (hex) whose intervention moves it most;\n"
                 f"below it: effect = mean |activation change| in SDs of the {kind}'s natural spread\n(colour alpha = effect, "
                 f"full at {sat:.2f} = the layer's 95th percentile; grey = dead ({L.get('dead_units', 0)}) or largest effect < "
                 f"{rule.get('min_effect', 0)} SD ({L.get('weak_units', 0)}))", fontsize=8)
    # legend: the screen region of each address that labels units here, framed in its colour, most units first
    rgb = npz["base_rgb"][0]
    w = 0.98 / per_row
    for i, j in enumerate(used):
        row, col = divmod(i, per_row)
        lx = fig.add_axes([0.01 + col * w, (leg_h - (row + 1) * 2.0 + 0.1) / H, w * 0.9, 1.6 / H])
        draw_region(lx, rgb, npz["diff_raw"][j], raw_region(vs[j]), cols[j])
        for sp in lx.spines.values():
            sp.set_edgecolor(cols[j])
            sp.set_linewidth(3)
        lx.set_title(f"{vs[j]['name']}\n{counts[j]} {kind}{'s' if counts[j] > 1 else ''}", fontsize=7, color=cols[j])
    return fig


def fig_variable(res, npz, j, v, colour):
    rgb = npz["base_rgb"][0]
    diff = npz["diff_raw"][j]
    fig, axes = plt.subplots(1, 5, figsize=(13, 3.6))
    reg = raw_region(v)
    draw_region(axes[0], rgb, diff, reg, colour)
    axes[0].set_title(f"{v['name']} ({v['address']}, {v['kind']})\nregion it controls" + ("" if reg else ": none found"), fontsize=8)
    im = axes[1].imshow(diff, cmap="magma")
    axes[1].set_title(f"mean |screen - control|\n(gray levels, {diff.shape[0]}x{diff.shape[1]})", fontsize=8)
    fig.colorbar(im, ax=axes[1], fraction=0.04)
    for ax, k in zip(axes[2:], ["relu1", "relu2", "relu3"]):
        fvk = npz[f"fv_{k}"][j]
        eff = npz[f"unit_effect_{k}"][:, j]
        ch = int(eff.argmax())
        c = eff.shape[0]
        side = int(round(np.sqrt(fvk.size // c)))
        m = fvk.reshape(c, side, side)[ch]
        lim = max(float(np.abs(m).max()), 1e-6)
        im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"{k}: channel {ch}, moved most\n({eff[ch]:.2f} SD); map of\nmean(high) - mean(low)", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.04)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


# ---------------------------------------------------------------- HTML
def img_tag(data: bytes, alt: str):
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def empty_reason(v):
    """Why some of a variable's table cells are empty ("" if none is): the probe's reason when it got no score
    (results version >= 2; a version 1 file gives its per-layer reason), else why the causal test at relu_fc is
    missing."""
    status = v.get("status") or {}
    if status.get("reason"):
        return status["reason"]
    missing = [p.get("reason") for p in v["probe"].values() if p.get("score") is None]
    if missing:
        return "not scored: " + (missing[0] or "no reason recorded (results.json from an older probe)")
    c = (v.get("causal") or {}).get("relu_fc")
    if not c or c["function_vector"].get("cos_actor") is None:
        return "causal test at relu_fc: " + ((v.get("causal_reasons") or {}).get("relu_fc") or "no result (no reason recorded)")
    return ""


def fmt(x, nd=2):
    return "—" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else html.escape(str(x)))


SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var dir = th.dataset.dir === 'asc' ? -1 : 1;
    th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    rows.sort(function (a, b) {
      var x = a.cells[col].textContent, y = b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      if (!isNaN(nx) && !isNaN(ny)) { return dir * (nx - ny); }
      return dir * x.localeCompare(y);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
document.body.setAttribute('data-rendered', String(document.images.length));
"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em; max-width: 1400px; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #eee; cursor: pointer; }
td.l, th.l { text-align: left; }
img, video { max-width: 100%; }
figure { margin: 0.5em 0; font-size: 12px; }
.note { color: #555; font-size: 12px; }
.why { color: #8a3b00; font-size: 12px; max-width: 40em; }
td.win { background: #d9f2d9; font-weight: bold; }
"""


def natural_table(res):
    """HTML: per variable and layer, the natural-frame probe (AtariARI's protocol; in brackets its shuffled-label
    control), the same probe on a randomly initialised network, and the intervention probe, side by side."""
    e = html.escape
    nat = res.get("natural") or {}
    if not nat.get("run"):
        why = nat.get("reason") or f"results.json version {res.get('version')} has no natural-frame probes"
        return f"<h2>Natural frames</h2><p class='why'>{e(why)}</p>"
    layers = list(res["layers"])
    sp = nat["split"]
    dropped = ", ".join(f"{d['name']} ({d['entropy_bits']:.2f} bits)" for d in nat["dropped"] if d["reason"].startswith("dropped"))
    parts = ["<h2>Natural frames vs interventions vs a random network</h2>",
             f"<p class='note'>{nat['samples']} unedited frames of the pixel agent's own play ({nat['duplicates_dropped']} "
             f"duplicate stacks dropped), split by {e(sp['by'])}: {sp['train_groups']} groups ({sp['n_train']} frames) to fit, "
             f"{sp['test_groups']} held out ({sp['n_test']} frames)" + (f"; {e(sp['fallback'])}" if sp.get("fallback") else "")
             + f". Read-out: {e(nat['classifier'])} (categorical), {e(nat['regressor'])} (ordinal). Random network: "
             f"{e(nat['random_network']['how'])} (seed {nat['random_network']['seed']}). Dropped for entropy &lt; "
             f"{nat['min_entropy_bits']} bits: {e(dropped) or 'none'}.</p>",
             "<p class='note'><b>How to read it:</b> per layer, <i>natural</i> is the held-out score (R² for ordinal, "
             "weighted F1 for categorical variables; 1 = perfect) of a linear read-out from the trained agent on unedited "
             "frames (in brackets the same fit on shuffled labels), <i>random</i> is that read-out from the same network "
             "with random weights, and <i>interv.</i> is the probe on screens whose RAM value was set; a green cell marks a "
             "layer where training, not the architecture, put the variable there (natural beats both random and the "
             "shuffled control by &ge; 0.05).</p>",
             "<table><thead><tr><th class='l' rowspan='2'>variable</th><th class='l' rowspan='2'>metric</th>"
             + "".join(f"<th colspan='3'>{e(k)}</th>" for k in layers) + "<th class='l' rowspan='2'>why a cell is empty</th></tr><tr>"
             + "<th>natural (shuffled)</th><th>random</th><th>interv.</th>" * len(layers) + "</tr></thead><tbody>"]
    for v in res["variables"]:
        n = v.get("natural") or {}
        cells, why = [], set()
        for k in layers:
            p, q = n.get(k) or {}, v["probe"].get(k) or {}
            s, c, r = p.get("score"), p.get("control"), p.get("random_network")
            win = s is not None and s - max(r if r is not None else -np.inf, c if c is not None else -np.inf) >= 0.05
            cls = " class='win'" if win else ""
            cells.append(f"<td{cls}>{fmt(s)} ({fmt(c)})</td><td>{fmt(r)}</td><td>{fmt(q.get('score'))}</td>")
            if p.get("reason"):
                why.add("natural: " + p["reason"])
            if q.get("score") is None:
                why.add("interventions: " + ((v.get("status") or {}).get("reason") or q.get("reason") or "not scored"))
        metric = (n.get(layers[0]) or {}).get("metric") or ("weighted_f1" if v["categorical"] else "r2")
        parts.append(f"<tr><td class='l'>{e(v['name'])}</td><td class='l'>{e(metric)}</td>{''.join(cells)}"
                     f"<td class='l why'>{e('; '.join(sorted(why)))}</td></tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def videos_html(out_dir: Path) -> str:
    """The decoded-state videos probe_video.py wrote into this folder (a `decoded_*.json` beside its .mp4), shown by
    relative link (not inlined: the page stays small) with what each shows; "" when there is none."""
    e, parts = html.escape, []
    for path in sorted(out_dir.glob("decoded_*.json")):
        with contextlib.suppress(OSError, ValueError):
            m = json.loads(path.read_text())
            if m.get("format") != "memory-pixel-interp/probe-video" or not (out_dir / str(m.get("video"))).is_file():
                continue
            rows = "".join(
                f"<li>{e(v['name'])}{' (' + e(v['role']) + ')' if v.get('role') else ''}: R² in the video "
                f"{fmt((v.get('video_score') or {}).get('r2'))}, mean |error| {fmt((v.get('video_score') or {}).get('mae'))}; "
                + (f"marker along {e(v['position']['axis'])} (r = {v['position']['r']:.2f})" if v.get("position")
                   else f"no marker: {e(v.get('position_reason') or '')}")
                + (f"; {e(str(v['unit']['unit']))}: {e(v['unit']['why'])}" if v.get("unit") else "") + "</li>"
                for v in m["variables"])
            parts.append(f"<figure><video src='{e(m['video'])}' controls loop muted playsinline></video><figcaption>"
                         f"<a href='{e(m['video'])}'>{e(m['video'])}</a>: {m['frames']} frames ({m['frames'] / m['fps']:.0f} s), "
                         f"pixel agent at step {fmt(m.get('pixel_global_step'))}, {e(m['module'])}, {e(m['readout'])} read-out "
                         f"(python probe_video.py, {e(str(m.get('codec')))})<ul>{rows}</ul></figcaption></figure>")
    if not parts:
        return ""
    return ("<h2>Decoded-state videos</h2><p class='note'>The agent plays a game it was not fitted on; per variable, the "
            "value a linear read-out of the layer gives (dashed line on the screen for positions) against the RAM's "
            "(triangles), and the activation map of the channel labelled with it. Made by probe_video.py.</p>" + "".join(parts))


def html_report(res, imgs, videos=""):
    vs = res["variables"]
    layers = list(res["layers"])
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Probe report: {e(res['env_id'])}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>What the pixel agent knows about the RAM: {e(res['env_id'])}</h1>",
             f"<p class='note'>pixel checkpoint {e(str(res['inputs']['pixel_checkpoint']))} (step {fmt(res['inputs'].get('pixel_global_step'))}), "
             f"memory checkpoint {e(str(res['inputs']['ram_checkpoint']))} (step {fmt(res['inputs'].get('ram_global_step'))}), "
             f"ram vars {e(str(res['inputs']['ram_vars']))}; {res['counts']['samples']} samples on {res['counts']['base_states']} base states "
             f"({len(res['counts']['test_base_states'])} held out); {res['timing']['probe_samples_per_s']:.0f} probe samples/s; "
             f"created {e(res['created'])}.</p>",
             f"<p class='note'>Observation check against AtariVectorEnv: {e(json.dumps(res['preprocessing_check']))}. "
             f"Restore + replay reproduced the rollout's observation for {res['restore_check']['identical_to_rollout']}/"
             f"{res['restore_check']['base_states']} base states.</p>",
             "<h2>Variables</h2><p class='note'>Probe score: R² (ordinal) or weighted F1 (categorical) of a ridge probe on "
             "held-out base states; in brackets the shuffled-label control. Causal: cosine between the logit move caused by "
             "adding the function vector at relu_fc (resp. a random direction of the same norm) and the true logit move. "
             "Top units: the relu_fc units the variable moves most (effect in SDs of the unit's natural spread). "
             "Click a column header to sort.</p>",
             "<table class='sortable'><thead><tr><th class='l'>variable</th><th class='l'>address</th><th class='l'>kind</th>"
             "<th>importance (TV)</th><th>rank</th><th class='l'>screen region rows, cols</th>"
             + "".join(f"<th>{e(k)}</th>" for k in layers)
             + "<th>causal fv</th><th>causal random</th><th class='l'>top relu_fc units (effect)</th>"
             "<th class='l'>why a cell is empty</th></tr></thead><tbody>"]
    for v in vs:
        reg = raw_region(v)
        c = (v.get("causal") or {}).get("relu_fc") or {}
        cf = (c.get("function_vector") or {}).get("cos_actor")
        cr = ((c.get("random") or {}).get("cos_actor") or {}).get("mean")
        tops = ", ".join(f"{u['unit']} ({u['effect']:.2f})" for u in v["top_units"].get("relu_fc", [])[:3])
        where = "{}-{}, {}-{}".format(*reg["bbox"]) if reg else "none" + (f": {v['screen_region']['reason']}" if v["screen_region"].get("reason") else "")
        why = empty_reason(v)
        role = f"<br><small title='{e(v.get('role_evidence') or '')}'>{e(v['role'])}</small>" if v.get("role") else ""
        parts.append(f"<tr><td class='l'><a href='#{e(v['name'])}'>{e(v['name'])}</a>{role}</td><td class='l'>{e(v['address'])}</td>"
                     f"<td class='l'>{e(v['kind'])}{' (cat.)' if v['categorical'] else ''}</td>"
                     f"<td>{fmt(v['importance']['tv'], 4)}</td><td>{v['importance']['rank']}</td>"
                     f"<td class='l'>{where}</td>"
                     + "".join(f"<td>{fmt(v['probe'][k].get('score'))} ({fmt(v['probe'][k].get('control'))})</td>" for k in layers)
                     + f"<td>{fmt(cf)}</td><td>{fmt(cr)}</td><td class='l'>{e(tops)}</td><td class='l why'>{e(why)}</td></tr>")
    parts.append("</tbody></table>")
    parts.append(natural_table(res))
    parts.append(videos)  # probe_video.py's decoded-state videos, when there are any
    parts += ["<h2>Overview</h2>", img_tag(imgs["importance"], "importance"), img_tag(imgs["probe_scores"], "probe scores"),
              img_tag(imgs["causal"], "causal effect")]
    min_eff = res.get("args", {}).get("min_unit_effect", 0)
    parts.append("<h2>Layers: every unit labelled with its RAM address</h2>"
                 "<p class='note'>Each fc unit / conv channel is labelled with the variable whose intervention moves it most: "
                 "<b>effect</b> = mean over the variable's draws (changing at most "
                 f"{e(str(res.get('args', {}).get('unit_max_other_changed', '—')))} other bytes) of |activation − its control's "
                 "activation| (a conv channel: averaged over its positions), in SDs of the unit's natural spread across base "
                 "states; <b>specificity</b> = that effect / the sum of the unit's effects over all variables (1 = only this "
                 f"variable moves it). Units whose largest effect is below {e(str(min_eff))} SD, and dead units, are unlabelled "
                 "(grey). Below each chart: the screen region of each address that labels units in that layer.</p>")
    for k in HIDDEN:
        L = res["layers"][k]
        lab = [u for u in L["units"] if u["var"] >= 0]
        spec = f", median specificity {np.median([u['specificity'] for u in lab]):.2f}" if lab else ""
        parts.append(f"<h3>{e(L['module'])} {e(str(L['shape']))}: {len(lab)} labelled, {L.get('dead_units', 0)} dead, "
                     f"{L.get('weak_units', 0)} below {e(str(min_eff))} SD{spec}</h3>{img_tag(imgs['units_' + k], k)}")
    parts.append("<h2>Per variable</h2>")
    for j, v in enumerate(vs):
        s = v["samples"]
        parts.append(f"<h3 id='{e(v['name'])}'>{e(v['name'])}{' (' + e(v['role']) + ')' if v.get('role') else ''} — "
                     f"{e(v['address'])}, {e(v['kind'])}, "
                     f"importance rank {v['importance']['rank']} (TV {fmt(v['importance']['tv'], 4)}, KL {fmt(v['importance']['kl'], 4)})</h3>"
                     f"<p class='note'>{s['kept']}/{s['drawn']} drawn values changed the byte ({s['reached_intended']} reached the intended value); "
                     f"other bytes changed in {fmt(s['other_bytes_changed_fraction'])} of them; the screen changed in "
                     f"{fmt(s['screen_changed_fraction'])}. Intervention: {e((v.get('status') or {}).get('intervention', 'held'))}.</p>"
                     + (f"<p class='note'>What the extractor found it is: {e(v['role'])} ({e(v.get('role_evidence') or '')}).</p>"
                        if v.get("role") else "")
                     + (f"<p class='why'>{e(empty_reason(v))}</p>" if empty_reason(v) else "")
                     + img_tag(imgs['var_' + str(j)], v['name']))
        parts.append("<table><thead><tr><th class='l'>layer</th><th>metric</th><th>score</th><th>within-base R²</th><th>control</th>"
                     "<th>n train/test</th><th>|fv|</th><th>steer cos(next layer) fv / random</th><th>cos(logits) fv / random</th>"
                     "<th>policy gap closed fv / random / oracle</th><th class='l'>units it moves most (effect SD, specificity; eta, r)</th>"
                     "</tr></thead><tbody>")
        for k in layers:
            p = v["probe"][k]
            c = (v.get("causal") or {}).get(k)
            row = f"<tr><td class='l'>{e(k)}</td><td>{e(p['metric'])}</td><td>{fmt(p.get('score'))}</td><td>{fmt(p.get('r2_within_base'))}</td>" \
                  f"<td>{fmt(p.get('control'))}</td><td>{p.get('n_train', '—')}/{p.get('n_test', '—')}</td><td>{fmt(p.get('fv_norm'), 3)}</td>"
            if c:
                nxt = HIDDEN[HIDDEN.index(k) + 1] if k != "relu_fc" else "actor"
                f, r, o = c["function_vector"], c["random"], c["oracle"]
                rm = lambda key: (r.get(key) or {}).get("mean")  # noqa: E731
                row += (f"<td>{fmt(f.get('cos_' + nxt))} / {fmt(rm('cos_' + nxt))}</td><td>{fmt(f.get('cos_actor'))} / {fmt(rm('cos_actor'))}</td>"
                        f"<td>{fmt(f.get('gap_closed_policy_tv'))} / {fmt(rm('gap_closed_policy_tv'))} / {fmt(o.get('gap_closed_policy_tv'))}</td>")
            else:  # no causal test at this layer (heads are never steered)
                why = (v.get("causal_reasons") or {}).get(k) or ("not steered (a head)" if k not in HIDDEN else "no reason recorded")
                row += f"<td colspan='3' class='l why'>{e(why)}</td>"
            tops = ", ".join(f"{u['unit']} ({u['effect']:.2f}, {u['specificity']:.2f}; {fmt(u['eta'])}, {fmt(u['r'])})"
                             for u in v["top_units"].get(k, [])[:5])
            parts.append(row + f"<td class='l'>{e(tops)}</td></tr>")
        parts.append("</tbody></table>")
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "".join(parts)


def main(args: Args):
    if not args.out_dir:
        raise InputError("--out-dir is required")
    out_dir = Path(args.out_dir)
    res, npz = load_inputs(out_dir)
    vs = res["variables"]
    cols = colours(len(vs))
    imgs = {"importance": save_png(fig_importance(res), out_dir / "importance.png"),
            "probe_scores": save_png(fig_probe_scores(res), out_dir / "probe_scores.png"),
            "causal": save_png(fig_causal(res), out_dir / "causal.png")}
    for k in HIDDEN:
        imgs["units_" + k] = save_png(fig_units(res, npz, k, args.max_unit_labels), out_dir / f"units_{k}.png")
    for j, v in enumerate(vs):
        name = v["name"].replace("[", "_").replace("]", "")
        imgs[f"var_{j}"] = save_png(fig_variable(res, npz, j, v, cols[j]), out_dir / f"var_{name}.png")
    page = html_report(res, imgs, videos_html(out_dir)).encode()
    path = out_dir / "report.html"
    write_atomic(path, lambda f: f.write(page))
    print(f"[report] {path} ({len(page) / 1e6:.1f} MB, {len(imgs)} figures)", flush=True)


if __name__ == "__main__":
    cli = parse_args()
    check_ranges(cli, RANGES)
    try:
        main(cli)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
