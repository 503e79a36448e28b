#!/usr/bin/env bash
# The speedrun: train a d20 chat model end to end on one 8xH100 node, then talk to it.
#   bash speedrun.sh                  # or: WANDB_RUN=myrun bash speedrun.sh  (logs to wandb if installed)
# Everything is resumable: if anything stops, run this script again and it continues where it was.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
NANOCHAT=".venv/bin/nanochat"
RUN="${RUN:-speedrun}"
GPUS="${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}"
GPUS="${GPUS:-1}"
export OMP_NUM_THREADS=1

# Data: 8 shards (~2B characters) are enough for the tokenizer; the rest downloads while it trains.
# d20 at 12 tokens per scaling parameter needs ~5.2B tokens, ~25B characters, ~100 shards: fetch 120.
$NANOCHAT data download climbmix -n 8
$NANOCHAT data download climbmix -n 120 > "download-climbmix.log" 2>&1 &
DOWNLOAD=$!
# The chat stages' task data (SmolTalk, MMLU, GSM8K, ARC, HumanEval) and the CORE bundle are fetched
# on first use; fetching the tasks now keeps the GPUs from waiting later.
$NANOCHAT tasks download smoltalk mmlu gsm8k arc-easy arc-challenge humaneval > "download-tasks.log" 2>&1 &

$NANOCHAT run --preset speedrun-d20 --name "$RUN" --stage tokenizer --stage tokenizer-eval
wait "$DOWNLOAD"
$NANOCHAT run --preset speedrun-d20 --name "$RUN" --nproc-per-node "$GPUS"
wait

echo "report card: $($NANOCHAT paths --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs"])')/$RUN/report.md"
echo "talk to it:  $NANOCHAT chat --run $RUN"
