#!/usr/bin/env bash
# The speedrun on whatever machine this is: set up, pick the preset that fits, train end to end, talk to it.
#   bash speedrun.sh                  8 GPUs: the d20 speedrun; fewer: the same run on fewer GPUs (longer, same
#                                     results); no GPU: the cpu-tiny preset. It says which before it starts.
#   NANOCHAT_PRESET=gpt2-d24 bash speedrun.sh   choose the preset (`nanochat presets`, or a .toml path)
#   NPROC_PER_NODE=4 bash speedrun.sh           GPUs to use (default: every whole GPU nvidia-smi lists)
#   WANDB_RUN=myrun bash speedrun.sh            also log to Weights & Biases (needs `pip install wandb`)
#   RUN=myname bash speedrun.sh                 the run's name (default: the preset's name)
#   bash speedrun.sh --dry-run [--no-measure]   set up, decide, print the plan; train nothing
# Everything is resumable: if anything stops, run this script again and it continues where it was.
# Everything it prints is also appended to speedrun.log (SPEEDRUN_LOG to choose another file).
set -euo pipefail
cd "$(dirname "$0")"

say() { echo "speedrun: $*"; }
die() { echo "speedrun: error: $*" >&2; exit 1; }

# Whole GPUs only: `nvidia-smi -L` also lists each MIG slice, indented, under its GPU. No nvidia-smi = none.
count_gpus() {
  command -v nvidia-smi >/dev/null 2>&1 || { echo 0; return; }
  nvidia-smi -L 2>/dev/null | grep -c '^GPU [0-9]' || true
}

# NAME FIELD...: fields of `nanochat presets NAME --json`, one per line ("" when absent)
preset_fields() {
  local name="$1"; shift
  "$NANOCHAT" presets "$name" --json | "$VPY" -c '
import json, sys
row = json.load(sys.stdin)[0]
for path in sys.argv[1:]:
    value = row
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    print("" if value is None else (f"{value:.2f}" if isinstance(value, float) else value))' "$@"
}

main() {
  ./setup.sh
  VPY=.venv/bin/python
  NANOCHAT=.venv/bin/nanochat

  # -- which preset, on how many processes ------------------------------------------------------------
  GPUS="$(count_gpus)"
  if [ -n "${NANOCHAT_PRESET:-}" ]; then
    PRESET="$NANOCHAT_PRESET"
    say "preset $PRESET (from NANOCHAT_PRESET); $GPUS GPU(s) found"
  elif [ "$GPUS" -ge 8 ]; then
    PRESET=speedrun-d20
    say "$GPUS GPUs found: running the speedrun (preset $PRESET)"
  elif [ "$GPUS" -ge 1 ]; then
    PRESET=speedrun-d20
    say "only $GPUS GPU(s) found (the speedrun is sized for 8): running preset $PRESET on $GPUS GPU(s)" \
        "instead. Gradient accumulation keeps the total batch and the results the same; it takes about" \
        "8/$GPUS times as long. Set NANOCHAT_PRESET to choose another preset."
  else
    PRESET=cpu-tiny
    say "NO GPU found (no nvidia-smi, or it lists none): running preset cpu-tiny, a tiny model on the" \
        "embedded starter data that trains on this CPU — NOT the speedrun. Set NANOCHAT_PRESET to choose another."
  fi
  NPROC="${NPROC_PER_NODE:-$GPUS}"
  case "$NPROC" in ''|*[!0-9]*) die "NPROC_PER_NODE=$NPROC is not a whole number of processes";; esac
  [ "$NPROC" -ge 1 ] || NPROC=1
  RUN="${RUN:-$(basename "$PRESET" .toml)}"
  # For a named preset the fields come from `nanochat presets`; a .toml path works the same way.
  mapfile -t F < <(preset_fields "$PRESET" data.dataset data.need tokenizer_data.need h100x8.hours h100x8.dollars stages)
  DATASET="${F[0]:-}"; SHARDS="${F[1]:-}"; TOKENIZER_SHARDS="${F[2]:-}"; STAGES="${F[5]:-}"
  [ -n "$STAGES" ] || die "could not read preset $PRESET (see the error above)"
  if [ -n "${F[3]:-}" ]; then
    say "its pretraining takes about ${F[3]} h on 8xH100, \$${F[4]} (\`nanochat presets\` states the MFU and price)"
  fi

  RUN_ARGS=()
  if [ "$GPUS" -ge 1 ]; then
    # A GPU run must not spend hours in the pure-Python tokenizer trainer while the GPUs wait.
    "$VPY" -c 'import nanochat_rustbpe' 2>/dev/null || die "the Rust tokenizer trainer (nanochat_rustbpe) is" \
      "not built, and without it tokenizer training takes hours while $GPUS GPU(s) wait. Install Rust" \
      "(https://rustup.rs), run ./setup.sh again, then this script again."
    # Name the device, so a torch that cannot see the GPUs fails here rather than training on the CPU.
    RUN_ARGS+=(--device cuda)
    SEEN="$("$VPY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)"
    [ "$SEEN" -ge "$NPROC" ] || die "nvidia-smi lists $GPUS GPU(s) but torch $("$VPY" -c 'import torch;
print(torch.__version__, f"(CUDA {torch.version.cuda})")' 2>/dev/null) sees $SEEN; install a CUDA build of" \
      "torch in .venv (https://pytorch.org/get-started/locally/) or set NPROC_PER_NODE to what it sees."
    export OMP_NUM_THREADS=1  # one CPU thread per GPU process: the GPUs do the work
    # Fewer out-of-memory failures from fragmentation over a long run (both names: torch renamed it).
    export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
    export PYTORCH_ALLOC_CONF="${PYTORCH_ALLOC_CONF:-expandable_segments:True}"
  fi
  if [ -n "${WANDB_RUN:-}" ] && [ "$WANDB_RUN" != dummy ]; then
    RUN_ARGS+=(--wandb-run "$WANDB_RUN")
  fi

  if [ "${1:-}" = "--dry-run" ]; then
    shift
    "$NANOCHAT" run --preset "$PRESET" --dry-run --nproc-per-node "$NPROC" "${RUN_ARGS[@]}" "$@"
    return 0
  fi

  # -- data: what the tokenizer reads first; the rest downloads while it trains ---------------------
  DOWNLOAD=""
  if [ -n "$SHARDS" ]; then
    "$NANOCHAT" data download "$DATASET" -n "${TOKENIZER_SHARDS:-$SHARDS}"
    say "downloading $SHARDS shard(s) of $DATASET in the background (log: download-$DATASET.log)"
    "$NANOCHAT" data download "$DATASET" -n "$SHARDS" > "download-$DATASET.log" 2>&1 &
    DOWNLOAD=$!
  fi
  TASKS=""
  if [ "$GPUS" -ge 1 ]; then
    # The chat stages' task data is fetched on first use; fetching it now keeps the GPUs from waiting later.
    "$NANOCHAT" tasks download smoltalk mmlu gsm8k arc-easy arc-challenge humaneval > download-tasks.log 2>&1 &
    TASKS=$!
  fi

  FIRST=()
  for stage in tokenizer tokenizer-eval; do
    case "$STAGES" in *"'$stage'"*) FIRST+=(--stage "$stage");; esac
  done
  if [ -n "$DOWNLOAD" ] && [ ${#FIRST[@]} -gt 0 ]; then
    "$NANOCHAT" run --preset "$PRESET" --name "$RUN" "${FIRST[@]}" "${RUN_ARGS[@]}"
  fi
  if [ -n "$DOWNLOAD" ] && ! wait "$DOWNLOAD"; then
    tail -n 5 "download-$DATASET.log" >&2 || true
    die "the download of $DATASET failed (see download-$DATASET.log); run this script again to resume it"
  fi
  if [ -n "$TASKS" ] && ! wait "$TASKS"; then
    say "warning: fetching task data failed (see download-tasks.log); each stage fetches what it needs again"
  fi
  "$NANOCHAT" run --preset "$PRESET" --name "$RUN" --nproc-per-node "$NPROC" "${RUN_ARGS[@]}"

  RUNS="$("$NANOCHAT" paths --json | "$VPY" -c 'import json, sys; print(json.load(sys.stdin)["runs"])')"
  say "done. Report card: $RUNS/$RUN/report.md"
  say "talk to it:  $NANOCHAT chat --run $RUN                (in the terminal)"
  if "$NANOCHAT" serve --help >/dev/null 2>&1; then
    say "             $NANOCHAT serve --run $RUN               (a chat page in the browser)"
  fi
  say "             .venv/bin/nanochat-app                      (the dashboard: runs, curves, chat)"
}

# Everything goes to the screen and to the log; the script's status is main's.
LOG="${SPEEDRUN_LOG:-speedrun.log}"
set +e  # for the pipeline's status only: main runs with errexit on, so any failing step stops it
{ set -e; echo "speedrun: started $(date -u '+%Y-%m-%d %H:%M:%S UTC') (log: $LOG)"; main "$@"; } 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
exit "$status"
