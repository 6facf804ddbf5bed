#!/bin/bash
# One game of the five-games experiment, end to end: extract the RAM variables, train the pixel and the memory agent
# (5M agent steps each, CleanRL's defaults, seed 1), evaluate each on 30 full games (sampled and greedy), compare the
# pair, ship slim checkpoints, and run the probe atlas and a decoded-state video on the shipped pair.
#
#   bash docs/results/five_games/run_game.sh Pong                                  # everything, to the end
#   UNTIL=$(date -d '+150 min' +%s) taskset -c 0 bash .../run_game.sh Pong         # stop (checkpoint saved) at a time
#   STAGES="pixel" bash .../run_game.sh Freeway                                    # one stage
#
# Resumable: every stage but compare is skipped when its output is there; an unfinished training run continues with --resume,
# so the script is re-run in each session until the game is done. Stages, in order (STAGES, default all of them):
#   extract  ram_vars/<env-id>.json at the default budget (kept if present)
#   pixel    ppo_pixel_breakout.py, runs in $RESULTS_DIR/runs/pixel/ (--compile: bench in docs/results/five_games/README.md)
#   memory   ppo_ram_breakout.py, runs in $RESULTS_DIR/runs/memory/ ($MEMORY_FLAGS: the ablation's conclusion)
#   eval     30 games each, sampled and greedy, into $RESULTS_DIR/eval/<agent>_<sampled|greedy>.json
#   compare  compare_runs.py $RESULTS_DIR/runs --out-dir $RESULTS_DIR/compare
#   ship     slim copies (no optimizer, no RNG) as models/<game>_<pixel|ram>_ppo_5m.pt (the cards are written by hand)
#   probe    probe_function_vectors.py on the shipped pair into $RESULTS_DIR/probe (the atlas: report.html)
#   video    probe_video.py on the probe's outputs (decoded_relu3_natural.mp4 in $RESULTS_DIR/probe, shown in the atlas)
#   index    $INDEX_DIR/<game>/status.json (sweep.py's status schema: each step "done" when its output is in
#            $RESULTS_DIR; of several runs of an agent, the finished one with the highest global_step), then the
#            cross-game index $INDEX_DIR/index.{json,html} (sweep.py --index-only over the five games) and the
#            findings across the games whose pair is done, $INDEX_DIR/findings.{md,json,png} (--findings, each run read
#            to $STEPS steps: Breakout's 10M pair as if stopped at 5M)
# Settings (environment variables): STEPS (5000000), SEED (1), UNTIL (Unix time; 0 = never), EXTRA (more arguments
# for both training scripts, e.g. "--torch-threads 1"), MEMORY_FLAGS (default --drop-bitmaps: the Breakout ablation's
# conclusion, docs/results/breakout_memory_ablation/README.md; "" for the full selection), EVAL_EPISODES (30); for a quick dry run of the
# whole chain (not for results): EVAL_FLAGS (more evaluation arguments, e.g. "--eval-max-frames 2000") and PROBE_FLAGS
# (more probe arguments, e.g. a tiny budget), PIXEL_FLAGS (default "--compile"). Where things are: INDEX_DIR
# (docs/results/five_games/index), RESULTS_DIR (the game's results folder, docs/results/five_games/<game>; Breakout's 10M pair:
# STAGES=index RESULTS_DIR=docs/results/breakout_10m), RAM_VARS (ram_vars/<env-id>.json).
set -uo pipefail
cd "$(dirname "$0")/../../.."
GAME=${1:?usage: run_game.sh <Game> (e.g. Pong, Freeway, MsPacman, SpaceInvaders)}
ENV_ID=${GAME}NoFrameskip-v4
LOWER=$(echo "$GAME" | tr '[:upper:]' '[:lower:]')
INDEX_DIR=${INDEX_DIR:-docs/results/five_games/index}   # its own folder: MkDocs makes README.md the folder's index.html
RESULTS_DIR=${RESULTS_DIR:-docs/results/five_games/$LOWER}
GAMES="Breakout Pong Freeway MsPacman SpaceInvaders"  # the index's rows, in this order
case $GAME in  # only shown in the index
    Breakout|Pong) KIND=paddle ;; Freeway) KIND=sports ;; MsPacman) KIND=maze ;; SpaceInvaders) KIND=shooter ;;
    *) KIND= ;;
esac
STEPS=${STEPS:-5000000} SEED=${SEED:-1} UNTIL=${UNTIL:-0} EXTRA=${EXTRA:-} MEMORY_FLAGS=${MEMORY_FLAGS---drop-bitmaps}
EVAL_EPISODES=${EVAL_EPISODES:-30} EVAL_FLAGS=${EVAL_FLAGS:-} PROBE_FLAGS=${PROBE_FLAGS:-} PIXEL_FLAGS=${PIXEL_FLAGS---compile}
STAGES=${STAGES:-extract pixel memory eval compare ship probe video index}
PY=${PYTHON:-python}
RAM_VARS=${RAM_VARS:-ram_vars/$ENV_ID.json}
[ "$(echo $STAGES)" = index ] || mkdir -p "$RESULTS_DIR/logs" "$RESULTS_DIR/eval"
log() { echo "== $GAME: $* ($(date -u '+%F %T UTC'))"; }
wanted() { [[ " $STAGES " == *" $1 "* ]]; }

status_of() {  # the "status" of a run folder's run.json ("" when there is none)
    [ -f "$1/run.json" ] && $PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$1/run.json"
}

limited() {  # run a command, stopped with SIGTERM (a training run saves its checkpoint, exit 130) at UNTIL; 75 when
    if [ "$UNTIL" != 0 ]; then  # UNTIL is (nearly) reached already. Called in pipelines: the caller checks PIPESTATUS
        local left=$((UNTIL - $(date +%s)))
        [ "$left" -gt 60 ] || return 75
        timeout --preserve-status -s TERM "$left" "$@"
    else "$@"; fi
}

checked() {  # checked RC WHAT: stop the whole script unless the stage's command (its PIPESTATUS[0]) exited 0
    [ "$1" = 0 ] && return 0
    [ "$2" != index ] && wanted index && write_index  # the index shows where the game stopped
    [ "$1" = 75 ] && { log "UNTIL reached before $2"; exit 0; }
    log "$2 stopped (exit $1)"
    exit "$1"
}

write_index() {  # stage index: $INDEX_DIR/<game>/status.json, then the cross-game index; non-zero if not written
    log "index"  # the status from the files themselves (so the index shows what is there, whoever wrote it)
    mkdir -p "$INDEX_DIR/$LOWER" || return 2
    $PY - "$ENV_ID" "$KIND" "$RESULTS_DIR" "$INDEX_DIR" "$RAM_VARS" "$INDEX_DIR/$LOWER/status.json" <<'EOF'
import glob, json, os, sys
from datetime import datetime
env_id, kind, game_dir, index_dir, ram_vars, out = sys.argv[1:7]
def read(path):  # the JSON dict at path, or None
    try:
        with open(path) as f:
            obj = json.load(f)
        return obj if isinstance(obj, dict) else None
    except (OSError, ValueError):
        return None
def rel(path):  # relative to the game's results folder, as status.json's paths are
    return os.path.relpath(path, game_dir)
rv = read(ram_vars)
steps = {"extract": {"status": "not run"}}
if rv and rv.get("format") == "memory-pixel-interp/ram-vars" and rv.get("env_id") == env_id \
        and len(rv.get("bytes", [])) == 128:
    steps["extract"] = {"status": "done", "outputs": {"ram_vars": rel(ram_vars)},
                        "seconds": (rv.get("produced_by") or {}).get("seconds")}
for agent in ("ram", "pixel"):  # runs/<agent folder>/<run>/run.json here, runs/<run>/run.json in breakout_10m
    found = sorted(glob.glob(f"{game_dir}/runs/*/run.json") + glob.glob(f"{game_dir}/runs/*/*/run.json"))
    runs = [(p, read(p)) for p in found]
    runs = [(os.path.dirname(p), r) for p, r in runs if r and r.get("agent") == agent and r.get("env_id") == env_id]
    done = [(d, r) for d, r in runs if r.get("status") == "finished"]
    if done or runs:  # the finished run (else any run) that went furthest: the highest global_step in its run.json
        d, r = max(done or runs, key=lambda dr: dr[1]["global_step"] if type(dr[1].get("global_step")) is int else -1)
        steps[agent] = {"status": "done", "outputs": {"run_dir": rel(d)}, "seconds": r.get("wall_seconds")}
        if not done:
            total = (r.get("args") or {}).get("total_timesteps")
            steps[agent].update(status="failed" if str(r.get("status")).startswith("failed") else "in progress",
                                reason=f"run.json: {r.get('status')} at {r.get('global_step')} of {total} steps")
    else:
        steps[agent] = {"status": "not run"}
summary = read(f"{game_dir}/compare/summary.json")
steps["compare"] = {"status": "not run"}
if summary and summary.get("format") == "memory-pixel-interp/compare" \
        and os.path.isfile(f"{game_dir}/compare/index.html"):
    agents = {g.get("agent") for g in summary.get("groups") or [] if isinstance(g, dict)}
    trained = all(steps[a]["status"] == "done" for a in ("ram", "pixel"))
    steps["compare"] = {"status": "done" if trained and agents >= {"ram", "pixel"} else "in progress",
                        "outputs": {"summary": "compare/summary.json", "html": "compare/index.html"}}
    if steps["compare"]["status"] != "done":
        steps["compare"]["reason"] = "over unfinished runs (re-made once both are finished)"
results = read(f"{game_dir}/probe/results.json")
steps["probe"] = {"status": "not run"}
if results and results.get("format") == "memory-pixel-interp/probe":
    report = "probe/report.html" if os.path.isfile(f"{game_dir}/probe/report.html") else None
    steps["probe"] = {"status": "done", "outputs": {"dir": "probe", "results": "probe/results.json", "report": report}}
status = {"format": "memory-pixel-interp/sweep-game", "version": 1, "env_id": env_id, "kind": kind,
          "folder": os.path.relpath(game_dir, index_dir), "steps": steps,
          "eval": {os.path.basename(p)[:-5]: rel(p) for p in sorted(glob.glob(f"{game_dir}/eval/*.json"))},
          "written_by": "docs/results/five_games/run_game.sh (stage index)",
          "written": datetime.now().astimezone().isoformat(timespec="seconds")}
if os.path.isfile(ram_vars):
    status["ram_vars"] = rel(ram_vars)
tmp = f"{out}.tmp-{os.getpid()}"
try:
    with open(tmp, "w") as f:
        f.write(json.dumps(status, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
except OSError as e:
    print(f"error: cannot write {out}: {e.strerror or e}", file=sys.stderr)
    sys.exit(2)
finally:
    if os.path.exists(tmp):
        os.remove(tmp)
print(f"{out}: " + ", ".join(f"{s} {v['status']}" for s, v in steps.items()))
EOF
    local rc=$?
    [ "$rc" = 0 ] || return "$rc"
    # shellcheck disable=SC2046
    $PY sweep.py --index-only --findings --findings-max-steps "$STEPS" --out-dir "$INDEX_DIR" \
        --games $(for g in $GAMES; do echo "${g}NoFrameskip-v4"; done)
}

run_dir_of() { ls -d "$RESULTS_DIR/runs/$1/${ENV_ID}__"*"__${SEED}__"* 2>/dev/null | tail -n 1; }

train() {  # train AGENT SCRIPT FLAGS...: train or resume the agent's run to STEPS; returns 0 once it is finished
    local agent=$1 script=$2
    shift 2
    local run_dir status
    run_dir=$(run_dir_of "$agent")
    status=$([ -n "$run_dir" ] && status_of "$run_dir")
    if [ "$status" = finished ]; then
        return 0
    elif [ -n "$run_dir" ] && [ -f "$run_dir/checkpoint.pt" ]; then
        log "$agent: resuming $run_dir"
        limited $PY "$script" --resume "$run_dir/checkpoint.pt" $EXTRA 2>&1 \
            | tee -a "$RESULTS_DIR/logs/${agent}_train.log"
    else
        log "$agent: training $STEPS steps"
        # shellcheck disable=SC2068
        limited $PY "$script" --env-id "$ENV_ID" --seed "$SEED" --total-timesteps "$STEPS" \
            --runs-dir "$RESULTS_DIR/runs/$agent" $@ $EXTRA 2>&1 | tee -a "$RESULTS_DIR/logs/${agent}_train.log"
    fi
    checked "${PIPESTATUS[0]}" "$agent training"
}

if wanted extract && [ ! -f "$RAM_VARS" ]; then
    log "extract"
    limited $PY extract_ram_vars.py --env-id "$ENV_ID" --out-dir ram_vars 2>&1 | tee "$RESULTS_DIR/logs/extract.log"
    checked "${PIPESTATUS[0]}" extract
fi
wanted pixel && train pixel ppo_pixel_breakout.py $PIXEL_FLAGS
wanted memory && train memory ppo_ram_breakout.py --ram-vars "$RAM_VARS" $MEMORY_FLAGS

declare -A SCRIPT=([pixel]=ppo_pixel_breakout.py [memory]=ppo_ram_breakout.py)
declare -A SHIPPED=([pixel]=models/${LOWER}_pixel_ppo_5m.pt [memory]=models/${LOWER}_ram_ppo_5m.pt)
for agent in pixel memory; do
    run_dir=$(run_dir_of "$agent")
    [ -n "$run_dir" ] && [ "$(status_of "$run_dir")" = finished ] || continue
    if wanted eval; then
        for mode in sampled greedy; do
            out=$RESULTS_DIR/eval/${agent}_${mode}.json
            [ -f "$out" ] && continue
            log "$agent: eval $EVAL_EPISODES games, $mode"
            flag=$([ "$mode" = greedy ] && echo --eval-greedy)
            limited $PY "${SCRIPT[$agent]}" --eval-checkpoint "$run_dir/checkpoint.pt" --eval-episodes "$EVAL_EPISODES" \
                $flag --eval-out "$out" $EVAL_FLAGS 2>&1 | tee "$RESULTS_DIR/logs/${agent}_eval_${mode}.log"
            checked "${PIPESTATUS[0]}" "$agent eval ($mode)"
        done
    fi
    if wanted ship && [ ! -f "${SHIPPED[$agent]}" ]; then
        log "$agent: ship ${SHIPPED[$agent]}"
        $PY - "$run_dir/checkpoint.pt" "${SHIPPED[$agent]}" <<'EOF'
import os, sys, torch
ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
ckpt["optimizer"] = None  # slim: the weights, model_kwargs, args, RAM selection and sessions stay
ckpt.pop("rng", None)
tmp = sys.argv[2] + f".tmp-{os.getpid()}"
torch.save(ckpt, tmp)
os.replace(tmp, sys.argv[2])
EOF
    fi
done

pixel_done=$(run_dir_of pixel) memory_done=$(run_dir_of memory)
both=$([ -n "$pixel_done" ] && [ "$(status_of "$pixel_done")" = finished ] && [ -n "$memory_done" ] \
       && [ "$(status_of "$memory_done")" = finished ] && echo yes)
if wanted compare && [ -n "$pixel_done$memory_done" ]; then  # (re-made each time: the runs may have grown)
    log "compare"
    limited $PY compare_runs.py "$RESULTS_DIR/runs" --out-dir "$RESULTS_DIR/compare" 2>&1 | tail -n 3
    checked "${PIPESTATUS[0]}" compare
fi
if wanted probe && [ "$both" = yes ] && [ ! -f "$RESULTS_DIR/probe/report.html" ]; then
    log "probe"
    limited $PY probe_function_vectors.py --pixel-checkpoint "${SHIPPED[pixel]}" --ram-checkpoint "${SHIPPED[memory]}" \
        --ram-vars "$RAM_VARS" --out-dir "$RESULTS_DIR/probe" $PROBE_FLAGS 2>&1 | tee "$RESULTS_DIR/logs/probe.log"
    checked "${PIPESTATUS[0]}" probe
fi
if wanted video && [ -f "$RESULTS_DIR/probe/results.json" ] \
        && [ ! -f "$RESULTS_DIR/probe/decoded_relu3_natural.mp4" ]; then
    log "video"  # written into the probe folder, and the atlas redrawn to show it
    limited $PY probe_video.py --probe-dir "$RESULTS_DIR/probe" 2>&1 | tee "$RESULTS_DIR/logs/video.log"
    checked "${PIPESTATUS[0]}" video
fi
if wanted index; then
    write_index
    checked $? index
fi
log "done with the stages that could run: $STAGES"
