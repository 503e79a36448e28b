#!/usr/bin/env bash
# The CUDA paths a speedrun takes, in parts of at most 5 minutes each on one H100 (benchmarks/gpu_check/):
#   kernels   flash SDPA, compiled flex-attention windows, compiled step vs eager, KV-cache decoding,
#             the fp8 kernel vs its CPU emulation, the optimizer's compiled kernels as stages build them
#   step_d20  the d20 training step at the speedrun preset's device batch (32): peak memory, tok/s, MFU
#   memory    benchmarks/memory.py's CPU-side estimate of that same step, to hold against its measured peak
#   fp8_d20, fp8_d24   fp8 vs bf16 step time, MFU and peak memory at device batch 16 (the record's, at d24)
#   nccl      two processes over NCCL: the distributed optimizer step, a save and a resume (when 2+ GPUs)
#   evals     validation bpb, CORE scoring, engine sampling
#   decode    bf16 KV-cache decoding
# Each part runs under `timeout` and prints one JSON line as it finishes ({"part", "rc", "result"}), so a
# time limit loses one part, never all; the last line sums them up. Progress goes to stderr.
#
#   bash benchmarks/gpu_check.sh [--cpu] [PART ...]   (PYTHON=... picks the interpreter; PART_TIMEOUT=300)
# --cpu runs the same code at tiny shapes on the CPU (tests/test_gpu_check.py), saying nothing about speed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD:$PWD/plugins${PYTHONPATH:+:$PYTHONPATH}"
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
LIMIT=${PART_TIMEOUT:-300}
CPU=""
if [ "${1:-}" = "--cpu" ]; then CPU="--cpu"; shift; fi
WANT=" ${*:-kernels step_d20 memory fp8_d20 fp8_d24 nccl evals decode} "
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
results=()

part() {  # part NAME COMMAND...: run it under the time limit, print {"part", "rc", "result": its last JSON line}
    local name=$1; shift
    [[ "$WANT" == *" $name "* ]] || return 0
    echo "== $name" >&2
    timeout "$LIMIT" "$@" | tee "$SCRATCH/$name.out" >&2
    local rc=${PIPESTATUS[0]}
    "$PY" - "$name" "$rc" "$(tail -n 1 "$SCRATCH/$name.out")" <<'PYEOF'
import json, sys
name, rc, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    result = json.loads(out)
except ValueError:
    result = None
note = "timed out" if rc == 124 else None
print(json.dumps({"part": name, "rc": rc, "ok": rc == 0 and result is not None, "note": note, "result": result}))
PYEOF
    results+=("$name:$rc")
}

gpus=0
if [ -z "$CPU" ]; then gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0); fi

part kernels "$PY" benchmarks/gpu_check/kernels.py $CPU
if [ -n "$CPU" ]; then
    part step_d20 "$PY" benchmarks/train.py --device cpu --depth 2 --seq-len 64 --vocab-size 512 --batch 2 \
        --window-pattern SSSL --steps 1 --warmup 1 --compile off
    part memory "$PY" benchmarks/memory.py --depth 2 --seq-len 64 --device-batch 2 --world-size 1 --vocab-size 512 \
        --device-type cpu
else
    part step_d20 "$PY" benchmarks/train.py --depth 20 --seq-len 2048 --vocab-size 32768 --batch 32 \
        --window-pattern SSSL --steps 8 --warmup 3 --dtype bf16
    part memory "$PY" benchmarks/memory.py --depth 20 --seq-len 2048 --device-batch 32 --world-size 1 \
        --vocab-size 32768 --window-pattern SSSL --compiled
fi
part fp8_d20 "$PY" benchmarks/gpu_check/fp8_speed.py --depth 20 --batch 16 $CPU
part fp8_d24 "$PY" benchmarks/gpu_check/fp8_speed.py --depth 24 --batch 16 $CPU
if [ -n "$CPU" ] || [ "$gpus" -ge 2 ]; then
    part nccl "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 benchmarks/gpu_check/nccl.py \
        "$SCRATCH/nccl" $CPU
elif [[ "$WANT" == *" nccl "* ]]; then
    echo '{"part": "nccl", "rc": null, "ok": null, "note": "skipped: fewer than 2 GPUs", "result": null}'
fi
part evals "$PY" benchmarks/gpu_check/evals.py $CPU
if [ -n "$CPU" ]; then
    part decode "$PY" benchmarks/infer.py --device cpu --depth 2 --vocab-size 512 --sequence-len 64 \
        --prompt-tokens 8 --new-tokens 8 --batch-sizes 1,2 --repeats 1 --no-naive
elif [ -f benchmarks/gpu_check_decode.py ]; then  # the decode benchmark's own GPU part, where it exists
    part decode "$PY" benchmarks/gpu_check_decode.py
else
    part decode "$PY" benchmarks/infer.py --device cuda --dtype bf16 --depth 20 --vocab-size 32768 \
        --sequence-len 2048 --prompt-tokens 512 --new-tokens 256 --batch-sizes 1,8,32 --repeats 3 --no-naive
fi

"$PY" - "${results[@]}" <<'PYEOF'
import json, sys
rcs = dict(a.rsplit(":", 1) for a in sys.argv[1:])
print(json.dumps({"summary": True, "ok": all(rc == "0" for rc in rcs.values()), "parts": rcs}))
PYEOF
