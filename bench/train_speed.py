"""Training step time on the CPU: channels-last weights, and bfloat16, against float32.

    python bench/train_speed.py [--recipes hexagonal:smooth:24 ...] [--batch 32]
                                [--reps 12] [--json-out bench/results/train-speed.json]

`fit` trains on the CPU with the convolution weights in channels-last (NHWC) layout,
in which oneDNN picks faster kernels, and with `--precision bfloat16` runs the
convolution trunk under bfloat16 autocast. For each atomistic recipe (system, `--net`,
`--context`; default: the shipped recipes, the cold hexagonal `smooth` and the thermal
hexagonal `smooth-aa` and porous `compact-aa`), this builds the net as `ednn-dask train`
does (whitened first layer), and times one Adam step (forward, backward, update) on
a batch of random fields of the recipe's cell, and one forward pass without gradients
(validation), in the default layout, in channels-last and in channels-last with
bfloat16, in turn. The ratios are default time / channels-last time and channels-last
time / bfloat16 time. The outputs of the two float32 layouts on the same weights must
agree (largest relative difference printed); the script fails if they differ by more
than 1e-5, or if bfloat16 differs from float32 by more than 5e-2 (it keeps about 3
significant digits in the trunk).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from record import RESULTS, write_result  # noqa: E402

from training.atomistic import SYSTEMS, build_net, net_preset  # noqa: E402
from training.precondition import whiten_first_layer  # noqa: E402

RECIPES = ["hexagonal:smooth:24", "hexagonal:smooth-aa:24", "porous:compact-aa:32"]
# name: (weight layout, bfloat16 autocast), in the order of `fit`'s options
VARIANTS = {"default": (torch.contiguous_format, False),
            "channels_last": (torch.channels_last, False),
            "bfloat16": (torch.channels_last, True)}


def build(recipe: str, x: torch.Tensor) -> torch.nn.Module:
    system, net, context = recipe.split(":")
    torch.manual_seed(0)
    ednn = build_net(len(SYSTEMS[system]["species"]), net, context=int(context))
    whiten_first_layer(ednn, x[:16].numpy())
    return ednn


def forward(ednn: torch.nn.Module, x: torch.Tensor, bfloat16: bool) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
        return ednn(x)


def step_time(ednn: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
              bfloat16: bool = False) -> tuple[float, float]:
    """Seconds of one Adam step and of one forward pass without gradients."""
    optimizer = torch.optim.Adam(ednn.parameters(), lr=1e-6)
    t0 = time.perf_counter()
    loss = torch.mean((forward(ednn, x, bfloat16) - y) ** 2)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    t1 = time.perf_counter()
    with torch.no_grad():
        forward(ednn, x, bfloat16)
    return t1 - t0, time.perf_counter() - t1


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-12)).max())


def measure(recipe: str, batch: int, reps: int) -> dict:
    system, net, _ = recipe.split(":")
    pixels = net_preset(net)["pixels"]
    x = torch.rand(batch, len(SYSTEMS[system]["species"]), pixels, pixels)
    y = torch.randn(batch)
    nets = {name: build(recipe, x).to(memory_format=layout)
            for name, (layout, _) in VARIANTS.items()}
    with torch.no_grad():
        out = {name: forward(nets[name], x, bf16) for name, (_, bf16) in VARIANTS.items()}
    times = {name: [] for name in nets}
    for _ in range(2):  # warm-up: oneDNN picks and caches its kernels
        for name, ednn in nets.items():
            step_time(ednn, x, y, VARIANTS[name][1])
    for _ in range(reps):
        for name, ednn in nets.items():
            times[name].append(step_time(ednn, x, y, VARIANTS[name][1]))
    med = {name: np.median(np.array(t), axis=0) for name, t in times.items()}
    row = {"recipe": recipe, "pixels": pixels, "batch": batch, "reps": reps,
           "max_relative_difference": relative_difference(out["channels_last"], out["default"]),
           "bfloat16_max_relative_difference": relative_difference(out["bfloat16"],
                                                                   out["default"])}
    for name, (train, infer) in med.items():
        row[f"{name}_step_s"], row[f"{name}_forward_s"] = float(train), float(infer)
    row["step_ratio"] = row["default_step_s"] / row["channels_last_step_s"]
    row["forward_ratio"] = row["default_forward_s"] / row["channels_last_forward_s"]
    row["bfloat16_step_ratio"] = row["channels_last_step_s"] / row["bfloat16_step_s"]
    row["bfloat16_forward_ratio"] = row["channels_last_forward_s"] / row["bfloat16_forward_s"]
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=RECIPES,
                        help="system:net:context, as `ednn-dask train SYSTEM --net NET "
                             "--context C`")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json-out", default=str(RESULTS / "train-speed.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for recipe in args.recipes:
        row = measure(recipe, args.batch, args.reps)
        rows.append(row)
        print(f"{recipe:24s} step {row['default_step_s'] * 1e3:6.0f} -> "
              f"{row['channels_last_step_s'] * 1e3:6.0f} ms ({row['step_ratio']:.2f}x) -> "
              f"bfloat16 {row['bfloat16_step_s'] * 1e3:6.0f} ms "
              f"({row['bfloat16_step_ratio']:.2f}x), forward "
              f"{row['default_forward_s'] * 1e3:5.0f} -> "
              f"{row['channels_last_forward_s'] * 1e3:5.0f} ms ({row['forward_ratio']:.2f}x), "
              f"max rel. difference {row['max_relative_difference']:.1e} "
              f"(bfloat16 {row['bfloat16_max_relative_difference']:.1e})", flush=True)
        if row["max_relative_difference"] > 1e-5:
            sys.exit(f"{recipe}: the layouts disagree by {row['max_relative_difference']:.1e}")
        if row["bfloat16_max_relative_difference"] > 5e-2:
            sys.exit(f"{recipe}: bfloat16 is off float32 by "
                     f"{row['bfloat16_max_relative_difference']:.1e}")
    write_result({"threads": args.threads, "recipes": rows}, args.json_out, sys.argv)


if __name__ == "__main__":
    main()
