"""Named GPUs for planning a run you have not rented yet: dense bf16 peak FLOP/s, memory, and what a node
costs. The cuda backend reads the same peaks for MFU, so a plan and a run divide by the same number.
"""

# (name fragment, dense bf16 tensor-core peak FLOP/s, memory bytes), most specific fragment first.
GPU_SPECS = [
    ("H100 NVL", 835e12, 94e9), ("H100 PCIe", 756e12, 80e9), ("H100", 989e12, 80e9), ("H200", 989e12, 141e9),
    ("H800", 989e12, 80e9), ("GH200", 989e12, 96e9), ("B200", 2.25e15, 180e9), ("B100", 1.75e15, 180e9),
    ("A100", 312e12, 80e9), ("A800", 312e12, 80e9), ("L40S", 362e12, 48e9), ("L40", 181e12, 48e9),
    ("L4", 121e12, 24e9), ("A10G", 125e12, 24e9), ("A10", 125e12, 24e9), ("A6000", 155e12, 48e9),
    ("RTX 6000 Ada", 364e12, 48e9), ("4090", 165e12, 24e9), ("3090", 71e12, 24e9), ("V100", 125e12, 32e9),
    ("T4", 65e12, 16e9),
]

# The MFU a plan assumes for bf16 training on these GPUs: the seed's d32 measured ~51% on H100, the
# record's d24 runs ~45% (with fp8 on top); 45% is a fair middle for a time and cost estimate.
PLANNING_MFU = 0.45

# On-demand price of one 8xH100 node, dollars per hour: the seed's figure ($24/h; its 3h51m d20 speedrun
# is "~$100"). The one place this number lives; prices move, so the plan always prints it beside the cost.
NODE_8XH100_DOLLARS_PER_HOUR = 24.0


def spec(name: str):
    """(name as listed, peak FLOP/s, memory bytes) of a GPU named by a fragment of its name, case-insensitive."""
    for fragment, peak, memory in GPU_SPECS:
        if fragment.lower() in name.lower():
            return fragment, peak, memory
    return None


def names() -> list[str]:
    return [fragment for fragment, _, _ in GPU_SPECS]
