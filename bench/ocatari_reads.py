"""Which RAM bytes OCAtari's hand-written RAM extractors read, per game (runs in OCAtari's own environment).

OCAtari (Delfosse et al. 2023, "OCAtari: Object-Centric Atari 2600 Reinforcement Learning Environments",
https://github.com/k4ntz/OC_Atari, PyPI `ocatari`) turns RAM into object positions with code written by hand
for each game. The bytes that code reads are bytes a state extractor must not throw away. This script records
them; `bench/bench_ocatari.py` compares them with what `extract_ram_vars.py` selects. Nothing from here enters
the extractor: it is an independent check.

How. For every game module in `ocatari.ram` that has an ale_py ROM, the game is played with random actions
(each held for --frame-skip frames, sticky actions off, reset at game over) for --frames emulated frames.
After every agent step, OCAtari's `_detect_objects_ram(objects, ram, hud=True)` is called with the 128 RAM bytes
wrapped in a numpy array subclass that records every index it is asked for (ints, slices, index arrays,
iteration). Then, at --attribution-states of those states, each read byte is set to 4 other values in a copy
of the RAM and the detection is re-run on copied objects: the object classes whose position, size or value
changed are the classes that byte feeds, and what changed in them is counted per class: "x", "y", "w", "h" (the
box of the object in the same slot of OCAtari's object list), "value" (e.g. a score's number) or "presence" (objects appeared or went);
bench/bench_ocatari.py reads a byte whose edits moved an object along x (y) as an x (y) byte.

OCAtari pins numpy < 2, so it gets its own virtual environment (the project's own needs numpy 2):

    python -m venv .venv-ocatari && .venv-ocatari/bin/pip install ocatari ale-py==0.12.1
    .venv-ocatari/bin/python bench/ocatari_reads.py --out bench/results/ocatari_reads.json

(the file in bench/results was made with ocatari 2.2.1, numpy 1.26.4, ale-py 0.12.1, in a venv outside the tree).

Output JSON: {"produced_by": {...}, "games": {module: {"rom": str, "env_id": str, "read": [int, ...] (sorted RAM
indices 0-127), "classes": {"<index>": [class names the byte feeds]}, "fields": {"<index>": {class: {"x" | "y" | "w" |
"h" | "value" | "presence": edits of the byte that changed it}}}, "frames": int}},
"skipped": {module: reason}}. The file is written atomically (temp file + rename).
Plain argparse here (not tyro): this file runs in OCAtari's environment, which need not have tyro.
"""
import argparse
import copy
import importlib
import importlib.metadata
import json
import os
import pkgutil
import sys
import time

import numpy as np


class RecordingRAM(np.ndarray):
    """A uint8 array of shape (128,) that adds every index read through it to `self.reads` (a set of ints)."""

    def __getitem__(self, key):
        self.reads.update(int(i) for i in np.atleast_1d(np.arange(self.shape[0])[key]).ravel())
        return self.view(np.ndarray)[key]

    def __iter__(self):
        self.reads.update(range(self.shape[0]))
        return iter(self.view(np.ndarray))

    def tolist(self):
        self.reads.update(range(self.shape[0]))
        return self.view(np.ndarray).tolist()


def wrap(ram, reads):
    """(128,) uint8 -> RecordingRAM that records into the set `reads`."""
    out = np.array(ram, dtype=np.uint8).view(RecordingRAM)
    out.reads = reads
    return out


def object_signature(objects):
    """Per object class, a sorted list of (xywh, value) of the objects that exist: what detection produced."""
    sig = {}
    for obj in objects:
        if not obj:  # OCAtari's NoObject / None are falsy
            continue
        name = type(obj).__name__
        try:
            xywh = tuple(int(v) for v in obj.xywh)
        except Exception:  # noqa: BLE001 -- an object without geometry still counts by its value
            xywh = ()
        value = getattr(obj, "value", None)
        sig.setdefault(name, []).append((xywh, repr(value)))
    return {k: sorted(v) for k, v in sig.items()}


FIELDS = ("x", "y", "w", "h")


def slot_signature(objects):
    """Per slot of OCAtari's object list (fixed slots; an empty one is falsy): None or (class, xywh, value)."""
    out = []
    for obj in objects:
        if not obj:
            out.append(None)
            continue
        try:
            xywh = tuple(int(v) for v in obj.xywh)
        except Exception:  # noqa: BLE001 -- an object without geometry still counts by its value
            xywh = ()
        out.append((type(obj).__name__, xywh, repr(getattr(obj, "value", None))))
    return out


def changed_fields(ref, sig):
    """Two slot signatures (same object list before / after an edit) -> {class: set of what differs}, per object class.
    Objects found unchanged on both sides (as a multiset: reordered or shifted to other slots of the list, e.g. every
    mushroom after a new one in Centipede's list) are set aside; the rest are what the edit changed. When their
    numbers differ, objects appeared or went ("presence"); the changed objects are then paired, each old one with the
    nearest new one (by the box's corner), and a pair whose box or value differs adds "x", "y", "w", "h" or "value"."""
    out = {}
    for c in {o[0] for o in ref + sig if o is not None}:
        gone = [o for o in ref if o is not None and o[0] == c]
        new = []
        for o in sig:
            if o is None or o[0] != c:
                continue
            if o in gone:
                gone.remove(o)
            else:
                new.append(o)
        if not gone and not new:
            continue
        what = {"presence"} if len(gone) != len(new) else set()
        for p in gone:
            if not new:
                break
            q = min(new, key=lambda q: sum(abs(u - v) for u, v in zip(p[1][:2], q[1][:2])) if len(p[1]) == len(q[1])
                    else float("inf"))
            new.remove(q)
            if len(p[1]) != len(q[1]):
                what.add("presence")
                continue
            what |= {f for f, u, v in zip(FIELDS, p[1], q[1]) if u != v} | ({"value"} if p[2] != q[2] else set())
        if what:
            out[c] = what
    return out


def rom_for(module_name, roms):
    """OCAtari module name (e.g. 'montezumarevenge') -> (ale ROM id, gymnasium env id) or None."""
    for rom in roms:
        if rom.replace("_", "") == module_name:
            camel = "".join(part.capitalize() for part in rom.split("_"))
            return rom, camel
    return None


def env_id_for(camel):
    """Prefer the v4 NoFrameskip id (the project's default family); fall back to the v5 id."""
    import gymnasium as gym
    import ale_py

    gym.register_envs(ale_py)
    for env_id in (f"{camel}NoFrameskip-v4", f"ALE/{camel}-v5"):
        if env_id in gym.registry:
            return env_id
    return None


def record_game(module_name, rom, args, rng):
    """Play one game and record OCAtari's reads. Returns the per-game dict of the output JSON."""
    import ale_py

    mod = importlib.import_module(f"ocatari.ram.{module_name}")
    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", args.seed)
    ale.setFloat("repeat_action_probability", 0.0)
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.loadROM(ale_py.roms.get_rom_path(rom))
    actions = ale.getMinimalActionSet()
    objects = mod._init_objects_ram(True)
    reads, states, frames = set(), [], 0
    while frames < args.frames:
        action = actions[rng.integers(len(actions))]
        for _ in range(args.frame_skip):
            ale.act(action)
        frames += args.frame_skip
        ram = ale.getRAM()
        mod._detect_objects_ram(objects, wrap(ram, reads), True)
        if len(states) < 4 * args.attribution_states:
            states.append((ram.copy(), copy.deepcopy(objects)))
        elif rng.random() < 0.05:
            states[rng.integers(len(states))] = (ram.copy(), copy.deepcopy(objects))
        if ale.game_over():
            ale.reset_game()
    classes = {i: set() for i in reads}
    fields = {i: {} for i in reads}   # index -> {class: {field: edits that changed it}}
    picks = rng.choice(len(states), size=min(args.attribution_states, len(states)), replace=False)
    for s in picks:
        ram, objs = states[s]
        base = copy.deepcopy(objs)
        mod._detect_objects_ram(base, wrap(ram, set()), True)
        ref, ref_slots = object_signature(base), slot_signature(base)
        for i in sorted(reads):
            for new in {(int(ram[i]) + 1) % 256, (int(ram[i]) - 1) % 256, int(ram[i]) ^ 0x80, 0} - {int(ram[i])}:
                edited = ram.copy()
                edited[i] = new
                objs_e = copy.deepcopy(objs)
                try:
                    mod._detect_objects_ram(objs_e, wrap(edited, set()), True)
                except Exception:  # noqa: BLE001 -- OCAtari code may index out of range on odd values
                    continue
                sig = object_signature(objs_e)
                for name in set(ref) | set(sig):
                    if ref.get(name) != sig.get(name):
                        classes[i].add(name)
                for name, what in changed_fields(ref_slots, slot_signature(objs_e)).items():
                    per = fields[i].setdefault(name, {})
                    for f in what:
                        per[f] = per.get(f, 0) + 1
    return {"rom": rom, "read": sorted(reads), "frames": frames,
            "classes": {str(i): sorted(c) for i, c in sorted(classes.items())},
            "fields": {str(i): {c: dict(sorted(f.items())) for c, f in sorted(d.items())}
                       for i, d in sorted(fields.items())}}


def write_atomic(path, out):
    """Write `out` as JSON to `path` through a temp file and a rename, so that the file is whole or absent."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
    os.replace(path + ".tmp", path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench/results/ocatari_reads.json", help="output JSON path")
    p.add_argument("--frames", type=int, default=20000, help="emulated frames of random play per game")
    p.add_argument("--frame-skip", type=int, default=4, help="emulated frames per random action")
    p.add_argument("--attribution-states", type=int, default=20,
                   help="states at which each read byte is edited to find the object classes it feeds")
    p.add_argument("--seed", type=int, default=1, help="seed of the emulator and of the random actions")
    p.add_argument("--games", default="", help="comma-separated OCAtari module names (default: every one)")
    args = p.parse_args()
    for name in ("frames", "frame_skip", "attribution_states"):
        if getattr(args, name) < 1:
            sys.exit(f"error: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    try:
        import ale_py
        import ocatari.ram
    except ImportError as e:
        sys.exit(f"error: {e}; run this in OCAtari's own environment "
                 "(python -m venv .venv-ocatari && .venv-ocatari/bin/pip install ocatari ale-py==0.12.1)")
    import ocatari

    roms = ale_py.roms.get_all_rom_ids()
    modules = sorted(m.name for m in pkgutil.iter_modules(ocatari.ram.__path__))
    modules = [m for m in modules if not m.startswith("_") and m not in ("game_objects", "extract_ram_info", "utils")]
    if args.games:
        wanted = args.games.split(",")
        unknown = sorted(set(wanted) - set(modules))
        if unknown:
            sys.exit(f"error: no OCAtari RAM module named {', '.join(unknown)}")
        modules = wanted
    out = {"produced_by": {"script": "bench/ocatari_reads.py", "ocatari": importlib.metadata.version("ocatari"),
                           "ale_py": ale_py.__version__, "numpy": np.__version__, "args": vars(args)},
           "games": {}, "skipped": {}}
    for k, module_name in enumerate(modules):
        found = rom_for(module_name, roms)
        if found is None:
            out["skipped"][module_name] = "no ale_py ROM of that name"
            continue
        rom, camel = found
        env_id = env_id_for(camel)
        if env_id is None:
            out["skipped"][module_name] = f"ROM {rom} has no gymnasium id"
            continue
        t0 = time.time()
        try:
            game = record_game(module_name, rom, args, np.random.default_rng(args.seed))
        except Exception as e:  # noqa: BLE001 -- one broken OCAtari module must not stop the others
            out["skipped"][module_name] = f"OCAtari's RAM code failed: {type(e).__name__}: {e}"
            continue
        game["env_id"] = env_id
        out["games"][module_name] = game
        write_atomic(args.out, out)  # after every game: an interrupted run keeps the games it recorded
        print(f"[{k + 1}/{len(modules)}] {module_name:18s} {env_id:32s} reads {len(game['read']):3d} bytes "
              f"({time.time() - t0:.1f}s)", flush=True)
    write_atomic(args.out, out)
    print(f"{len(out['games'])} games recorded, {len(out['skipped'])} skipped -> {args.out}")
    for name, why in out["skipped"].items():
        print(f"  skipped {name}: {why}")


if __name__ == "__main__":
    main()
