"""Recall of extract_ram_vars.py against the RAM bytes OCAtari's hand-written extractors read.

    .venv-ocatari/bin/python bench/ocatari_reads.py --out bench/results/ocatari_reads.json   # see that file
    python bench/bench_ocatari.py --reads bench/results/ocatari_reads.json                # this file

For every game in the reads file, `extract_ram_vars.py` runs at its default budget (or `--total-frames`) into
`--extract-dir` (a game whose JSON is already there with the same budget and seed is not re-run, so an interrupted
benchmark goes on where it stopped). A byte OCAtari reads is *found* when the extractor selects it, or calls it
`derived` from source byte(s) it all selects (a display copy, or a byte computed every frame from others: the
state is in the sources). Printed per game: the bytes
read, recall, each missed byte with its kind and reason, the extractor's seconds, and how our role agrees with
what OCAtari makes of the byte (`ocatari_class`): "score" when it feeds a class whose name contains "score",
"lives" ("live"), else "x" / "y" when its edits in bench/ocatari_reads.py moved an object along x / y (more
often than along the other axis; "x/y" when as often: either role agrees, and it counts in both), else "other"
(it changed sizes, values or presence only, or made objects appear or go over twice as often as it moved one; a
box whose y and height change together is resized, not moved: any role but "unknown" agrees). Per byte: agreement overall and per
class (x, y, score, lives, other), and the precision of our x- and y-positions (of the read bytes we call an
x-position, the fraction OCAtari moves along x). Bytes whose edits changed no object are not compared. The older
figure, per (byte, class) pair with x / y not told apart, is kept as role_agreement_pairs. The class names are
OCAtari's; this comparison lives only here, never in the extractor. Targets (issues 20, 27): recall >= 0.98;
role agreement >= 0.90 with x, y, score, lives each >= 0.85; x / y precision >= 0.9.

`--games pong,freeway` runs a subset (OCAtari module names), e.g. while developing; give a fresh `--extract-dir`
after changing the extractor (outputs there of the same version, budget and seed are reused, not re-run).

Output: the table on stdout, `--out` (JSON: per game the figures and missed bytes) and the same table as Markdown
next to it (`--out` with `.md`, the table docs/results/extractor_ocatari.md shows); both written atomically.
"""
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import tyro

HERE = os.path.dirname(os.path.abspath(__file__))
EXTRACTOR = os.path.join(HERE, "..", "extract_ram_vars.py")
SELECTED_KINDS = ("state", "bitmap", "latent", "stored", "input-driven")
RAM_VARS_VERSION = 3  # an output of another version in --extract-dir is re-run, not reused


@dataclass
class Args:
    reads: str = "bench/results/ocatari_reads.json"
    """JSON written by bench/ocatari_reads.py (the RAM indices OCAtari reads, per game)"""
    extract_dir: str = "bench/results/ram_vars"
    """folder of the extractor's outputs (one JSON per game; reused when budget and seed match)"""
    out: str = "bench/results/ocatari_recall.json"
    """the per-game figures, as JSON"""
    total_frames: int = 0
    """the extractor's --total-frames (0: its default budget)"""
    seed: int = 1
    """the extractor's --seed"""
    games: str = ""
    """comma-separated OCAtari module names to run (default: every game in the reads file)"""
    torch_threads: int = 1
    """torch threads of each extractor run (it uses torch only with a --checkpoint; kept low beside other work)"""


# The valid range of every numeric flag, as in maths ("[1, inf)": 1 or more); check_ranges refuses the rest.
RANGES = {"total_frames": "[0, inf)", "seed": "[0, 2147483647]", "torch_threads": "[1, inf)"}


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


def role_agrees(cls, role):
    """OCAtari class name x our role -> True / False: the per-(byte, class) comparison of the module docstring
    (reported as role_agreement_pairs, the figure of earlier versions of this benchmark)."""
    name, role = cls.lower(), (role or "unknown").lower()
    if "score" in name:
        return "score" in role
    if "live" in name:
        return "lives" in role
    return role != "unknown"


CLASSES = ("x", "y", "score", "lives", "other")   # per-byte classes from OCAtari (x/y bytes count in both x and y)


PRESENCE_DOMINATES = 2   # a byte whose edits made objects of one class appear or go > 2x as often as they moved one


def ocatari_class(reads, i):
    """What OCAtari's code makes of byte i, from the reads file: "score" (it feeds a class whose name contains
    "score"), "lives" ("live"), "x" / "y" (its edits moved an object along x / y more often than along the other
    axis), "x/y" (as often along both), "other" (it changed objects' size, value or presence only, or made objects of
    one class appear or go more than PRESENCE_DOMINATES times as often as it moved any: a set of objects, e.g. eggs
    or mushrooms, whose edits also reshuffle the objects that stay; moves along y (x) of a class whose height (width)
    changed as often are resizes, not moves: a bar growing from a fixed edge), or None (its edits changed no object, or the
    reads file has no "fields", then x / y are not told from other)."""
    classes = reads["classes"].get(str(i), [])
    if not classes:
        return None
    names = [c.lower() for c in classes]
    if any("score" in n for n in names):
        return "score"
    if any("live" in n for n in names):
        return "lives"
    per_class = (reads.get("fields") or {}).get(str(i))
    if per_class is None:
        return "other"
    # a box whose height (width) changed on as many edits as its y (x) was resized, not moved: a bar that grows up
    # from a fixed bottom edge (Bank Heist's gas gauge, Air Raid's buildings) changes y and h together
    nx = sum(f.get("x", 0) for f in per_class.values() if f.get("w", 0) < f.get("x", 0))
    ny = sum(f.get("y", 0) for f in per_class.values() if f.get("h", 0) < f.get("y", 0))
    if max(nx, ny) * PRESENCE_DOMINATES < max(f.get("presence", 0) for f in per_class.values()):
        return "other"   # mostly it made objects appear or go (Alien's eggs): moves are the list's reshuffles
    if nx == ny == 0:
        return "other"
    return "x" if nx > ny else "y" if ny > nx else "x/y"


def our_class(role):
    """Our role string -> "x", "y", "score", "lives", "unknown" or "other" (any other role, e.g. counter, flag,
    velocity, bitmap, copy)."""
    role = (role or "unknown").lower()
    if role == "x-position":
        return "x"
    if role == "y-position":
        return "y"
    if "score" in role:
        return "score"
    if "lives" in role:
        return "lives"
    return "unknown" if role in ("unknown", "latent") else "other"


def class_agrees(truth, ours):
    """OCAtari's class of a byte x ours -> True / False. x / y / score / lives must match (an "x/y" byte takes
    either axis); an "other" byte needs any role but "unknown" (a latent byte with no role either is unknown)."""
    if truth == "x/y":
        return ours in ("x", "y")
    if truth == "other":
        return ours != "unknown"
    return truth == ours


def extract(env_id, args):
    """Run (or reuse) the extractor for env_id. Returns (its JSON dict, seconds it took, reused: bool)."""
    path = os.path.join(args.extract_dir, env_id.replace("/", "_") + ".json")
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
        pb = data.get("produced_by", {})
        budget_ok = args.total_frames == 0 or pb.get("args", {}).get("total_frames") == args.total_frames
        if budget_ok and pb.get("args", {}).get("seed") == args.seed and data.get("version") == RAM_VARS_VERSION:
            return data, pb.get("seconds"), True
    cmd = [sys.executable, EXTRACTOR, "--env-id", env_id, "--seed", str(args.seed), "--out-dir", args.extract_dir]
    if args.total_frames:
        cmd += ["--total-frames", str(args.total_frames)]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(args.torch_threads)})
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["no output"])[-1])
    with open(path) as f:
        return json.load(f), time.time() - t0, False


def score_game(reads, data):
    """OCAtari's read indices + classes x the extractor's JSON -> per-game figures (dict)."""
    records = data["bytes"]
    selected = set(data["selected"])
    found, missed, agree, compared = [], [], 0, 0
    per_class = {c: [0, 0] for c in CLASSES}      # OCAtari's class -> [bytes where our role agrees, bytes]
    precision = {"x": [0, 0], "y": [0, 0]}         # our x / y -> [bytes OCAtari reads as that axis, bytes]
    disagree = []
    for i in reads["read"]:
        rec = records[i]
        derived = rec.get("derived") or {}
        sources = derived.get("sources") or [derived.get("source")]   # "computed" bytes name several
        if i in selected or (rec["kind"] == "derived" and all(j in selected for j in sources)):
            found.append(i)
        else:
            missed.append({"index": i, "kind": rec["kind"], "reason": rec.get("reason", ""),
                           "classes": reads["classes"].get(str(i), [])})
        role = (rec.get("role") or {}).get("role")
        for cls in reads["classes"].get(str(i), []):
            compared += 1
            agree += role_agrees(cls, role)
        truth, ours = ocatari_class(reads, i), our_class(role)
        if truth is not None:
            for c in ("x", "y") if truth == "x/y" else (truth,):
                per_class[c][0] += class_agrees(truth, ours)
                per_class[c][1] += 1
            if ours in ("x", "y"):
                precision[ours][0] += truth in (ours, "x/y")
                precision[ours][1] += 1
            if not class_agrees(truth, ours):
                disagree.append({"index": i, "ocatari": truth, "ours": role or "unknown"})
    n = len(reads["read"])
    bytes_compared = sum(1 for i in reads["read"] if ocatari_class(reads, i) is not None)
    bytes_agree = bytes_compared - len(disagree)
    return {"read": n, "found": len(found), "recall": len(found) / n if n else None, "missed": missed,
            "role_agreement": bytes_agree / bytes_compared if bytes_compared else None,
            "role_bytes": bytes_compared, "per_class": per_class, "precision": precision,
            "role_disagreements": disagree,
            "role_agreement_pairs": agree / compared if compared else None, "role_pairs": compared,
            "selected": len(selected), "xy_known": "fields" in reads}


def markdown_table(rows, summary):
    """Per-game rows + summary (as in --out) -> a Markdown table, one line per game and a total line."""
    fmt = lambda v: "-" if v is None else f"{v:.2f}"
    frac = lambda p: fmt(p[0] / p[1] if p[1] else None) + (f" ({p[0]}/{p[1]})" if p[1] else "")
    lines = ["| game | env id | bytes read | found | recall | roles | x | y | score | lives | other | x prec. | "
             "y prec. | extractor s | CPU s | missed (index: kind) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for game, r in sorted(rows.items()):
        if r.get("error"):
            lines.append(f"| {game} | {r['env_id']} |" + " |" * 12 + f" extractor failed: {r['error']} |")
            continue
        missed = ", ".join(f"{m['index']}: {m['kind']}" for m in r["missed"]) or "-"
        cells = [frac(r["per_class"][c]) for c in CLASSES] + [frac(r["precision"][a]) for a in ("x", "y")]
        lines.append(f"| {game} | `{r['env_id']}` | {r['read']} | {r['found']} | {fmt(r['recall'])} | "
                     f"{fmt(r['role_agreement'])} | " + " | ".join(cells) + f" | {r['seconds'] or 0:.0f} | "
                     + (f"{r['cpu_seconds']:.0f}" if r.get("cpu_seconds") else "-") + f" | {missed} |")
    cells = [frac(summary["per_class"][c]) for c in CLASSES] + [frac(summary["precision"][a]) for a in ("x", "y")]
    lines.append(f"| **all {summary['games']} games** | | {summary['bytes_read']} | {summary['bytes_found']} | "
                 f"**{summary['recall']:.3f}** | **{fmt(summary['role_agreement'])}** | " + " | ".join(cells) +
                 f" | median {summary['extractor_seconds_median'] or 0:.0f}, max "
                 f"{summary['extractor_seconds_max'] or 0:.0f} | "
                 + (f"median {summary['extractor_cpu_seconds_median']:.0f}, max {summary['extractor_cpu_seconds_max']:.0f}; "
                    f"{summary['games_within_2_cpu_minutes']} of {summary['games_with_cpu_seconds']} games <= 120"
                    if summary.get("extractor_cpu_seconds_median") else "-")
                 + f" | {summary['games_at_full_recall']} games at 1.00 |")
    return "\n".join(lines) + "\n"


def main():
    args = parse_args()
    check_ranges(args, RANGES)
    if not os.path.exists(args.reads):
        fail(f"no reads file {args.reads}: run bench/ocatari_reads.py in OCAtari's environment first")
    with open(args.reads) as f:
        reads = json.load(f)
    games = reads.get("games", {})
    if args.games:
        unknown = sorted(set(args.games.split(",")) - set(games))
        if unknown:
            fail(f"not in {args.reads}: {', '.join(unknown)}")
        games = {g: games[g] for g in args.games.split(",")}
    os.makedirs(args.extract_dir, exist_ok=True)
    print(f"{'game':18s} {'env id':30s} {'read':>4s} {'found':>5s} {'recall':>6s} {'roles':>5s} "
          + " ".join(f"{c:>5s}" for c in CLASSES) + f" {'xprec':>5s} {'yprec':>5s} {'sec':>5s}  missed")
    rows, t_start = {}, time.time()
    for k, (game, rd) in enumerate(sorted(games.items())):
        try:
            data, secs, reused = extract(rd["env_id"], args)
        except RuntimeError as e:
            rows[game] = {"env_id": rd["env_id"], "error": str(e)}
            print(f"{game:18s} {rd['env_id']:30s} extractor failed: {e}", flush=True)
            continue
        row = {"env_id": rd["env_id"], "seconds": secs, "reused": reused,
               "cpu_seconds": (data.get("produced_by") or {}).get("cpu_seconds"), **score_game(rd, data)}
        rows[game] = row
        missed = ", ".join(f"{m['index']}:{m['kind']}" for m in row["missed"]) or "-"
        ra = "-" if row["role_agreement"] is None else f"{row['role_agreement']:.2f}"
        rc = "-" if row["recall"] is None else f"{row['recall']:.2f}"
        eta = (time.time() - t_start) / (k + 1) * (len(games) - k - 1)
        per = " ".join(f"{row['per_class'][c][0] / row['per_class'][c][1]:5.2f}" if row["per_class"][c][1]
                       else f"{'-':>5s}" for c in CLASSES)
        prec = " ".join(f"{row['precision'][a][0] / row['precision'][a][1]:5.2f}" if row["precision"][a][1]
                        else f"{'-':>5s}" for a in ("x", "y"))
        print(f"{game:18s} {rd['env_id']:30s} {row['read']:4d} {row['found']:5d} {rc:>6s} {ra:>5s} {per} {prec} "
              f"{secs or 0:5.0f}  {missed}   [{k + 1}/{len(games)}, ETA {eta / 60:.0f} min]", flush=True)
    scored = [r for r in rows.values() if r.get("read")]
    total_read = sum(r["read"] for r in scored)
    total_found = sum(r["found"] for r in scored)
    pairs = sum(r["role_pairs"] for r in scored)
    agree_pairs = sum((r["role_agreement_pairs"] or 0) * r["role_pairs"] for r in scored)
    n_bytes = sum(r["role_bytes"] for r in scored)
    agree = sum((r["role_agreement"] or 0) * r["role_bytes"] for r in scored)
    per_class = {c: [sum(r["per_class"][c][k] for r in scored) for k in (0, 1)] for c in CLASSES}
    precision = {a: [sum(r["precision"][a][k] for r in scored) for k in (0, 1)] for a in ("x", "y")}
    ratio = lambda p: p[0] / p[1] if p[1] else None
    secs = sorted(r["seconds"] for r in scored if r.get("seconds"))
    cpu = sorted(r["cpu_seconds"] for r in scored if r.get("cpu_seconds"))
    summary = {"games": len(scored), "bytes_read": total_read, "bytes_found": total_found,
               "recall": total_found / total_read if total_read else None,
               "games_at_full_recall": sum(r["found"] == r["read"] for r in scored),
               "role_agreement": agree / n_bytes if n_bytes else None, "role_bytes": n_bytes,
               "per_class": per_class, "per_class_agreement": {c: ratio(p) for c, p in per_class.items()},
               "precision": precision, "precision_ratio": {a: ratio(p) for a, p in precision.items()},
               "role_agreement_pairs": agree_pairs / pairs if pairs else None,
               "xy_known": all(r["xy_known"] for r in scored),
               "extractor_seconds_median": secs[len(secs) // 2] if secs else None,
               "extractor_seconds_max": secs[-1] if secs else None,
               # CPU seconds (the extractor is one process, one thread): its time on one core, whatever shared it
               "extractor_cpu_seconds_median": cpu[len(cpu) // 2] if cpu else None,
               "extractor_cpu_seconds_max": cpu[-1] if cpu else None,
               "games_within_2_cpu_minutes": sum(c <= 120 for c in cpu), "games_with_cpu_seconds": len(cpu)}
    print(f"\nall games: recall {summary['recall']:.3f} ({total_found}/{total_read} bytes, {len(scored)} games, "
          f"{summary['games_at_full_recall']} at 1.00); role agreement {summary['role_agreement'] or 0:.3f} "
          f"({n_bytes} bytes; " + ", ".join(f"{c} {ratio(p) or 0:.2f} of {p[1]}" for c, p in per_class.items())
          + "); precision " + ", ".join(f"{a} {ratio(p) or 0:.2f} of {p[1]}" for a, p in precision.items())
          + f"; per (byte, class) pair {summary['role_agreement_pairs'] or 0:.2f}; "
          + ("" if summary["xy_known"] else "x / y not told apart (reads file without 'fields'); ") +
          f"extractor seconds median {summary['extractor_seconds_median'] or 0:.0f}, "
          f"max {summary['extractor_seconds_max'] or 0:.0f}"
          + (f"; CPU seconds median {summary['extractor_cpu_seconds_median']:.0f}, max "
             f"{summary['extractor_cpu_seconds_max']:.0f}, {summary['games_within_2_cpu_minutes']} of {len(cpu)} "
             "games within 120" if cpu else ""))
    out = {"summary": summary, "games": rows, "reads": args.reads,
           "reads_produced_by": reads.get("produced_by"), "args": vars(args)}
    for path, text in ((args.out, json.dumps(out, indent=1)),
                       (os.path.splitext(args.out)[0] + ".md", markdown_table(rows, summary))):
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
