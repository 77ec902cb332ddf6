"""Training step time on the CPU: channels-last weights against the default layout.

    python bench/train_speed.py [--recipes hexagonal:smooth:24 ...] [--batch 32]
                                [--reps 12] [--json-out bench/results/train-speed.json]

`fit` trains on the CPU with the convolution weights in channels-last (NHWC) layout,
in which oneDNN picks faster kernels. For each atomistic recipe (system, `--net`,
`--context`; default: the shipped recipes, the cold hexagonal `smooth` and the thermal
hexagonal `smooth-aa` and porous `compact-aa`), this builds the net as `ednn-dask train`
does (whitened first layer), and times one Adam step (forward, backward, update) on
a batch of random fields of the recipe's cell, and one forward pass without gradients
(validation), in each layout, alternating the two. The ratio is default time /
channels-last time. The outputs of the two layouts on the same weights must agree
(largest relative difference printed); the script fails if they differ by more than
1e-5.
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
LAYOUTS = {"default": torch.contiguous_format, "channels_last": torch.channels_last}


def build(recipe: str, x: torch.Tensor) -> torch.nn.Module:
    system, net, context = recipe.split(":")
    torch.manual_seed(0)
    ednn = build_net(len(SYSTEMS[system]["species"]), net, context=int(context))
    whiten_first_layer(ednn, x[:16].numpy())
    return ednn


def step_time(ednn: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Seconds of one Adam step and of one forward pass without gradients."""
    optimizer = torch.optim.Adam(ednn.parameters(), lr=1e-6)
    t0 = time.perf_counter()
    loss = torch.mean((ednn(x) - y) ** 2)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    t1 = time.perf_counter()
    with torch.no_grad():
        ednn(x)
    return t1 - t0, time.perf_counter() - t1


def measure(recipe: str, batch: int, reps: int) -> dict:
    system, net, _ = recipe.split(":")
    pixels = net_preset(net)["pixels"]
    x = torch.rand(batch, len(SYSTEMS[system]["species"]), pixels, pixels)
    y = torch.randn(batch)
    nets = {}
    for name, layout in LAYOUTS.items():
        nets[name] = build(recipe, x).to(memory_format=layout)
    with torch.no_grad():
        out = {name: ednn(x) for name, ednn in nets.items()}
    diff = float(((out["channels_last"] - out["default"]).abs()
                  / out["default"].abs().clamp_min(1e-12)).max())
    times = {name: [] for name in nets}
    for _ in range(2):  # warm-up: oneDNN picks and caches its kernels
        for ednn in nets.values():
            step_time(ednn, x, y)
    for _ in range(reps):
        for name, ednn in nets.items():
            times[name].append(step_time(ednn, x, y))
    med = {name: np.median(np.array(t), axis=0) for name, t in times.items()}
    row = {"recipe": recipe, "pixels": pixels, "batch": batch, "reps": reps,
           "max_relative_difference": diff}
    for name, (train, infer) in med.items():
        row[f"{name}_step_s"], row[f"{name}_forward_s"] = float(train), float(infer)
    row["step_ratio"] = row["default_step_s"] / row["channels_last_step_s"]
    row["forward_ratio"] = row["default_forward_s"] / row["channels_last_forward_s"]
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
              f"{row['channels_last_step_s'] * 1e3:6.0f} ms ({row['step_ratio']:.2f}x), "
              f"forward {row['default_forward_s'] * 1e3:5.0f} -> "
              f"{row['channels_last_forward_s'] * 1e3:5.0f} ms ({row['forward_ratio']:.2f}x), "
              f"max rel. difference {row['max_relative_difference']:.1e}", flush=True)
        if row["max_relative_difference"] > 1e-5:
            sys.exit(f"{recipe}: the layouts disagree by {row['max_relative_difference']:.1e}")
    write_result({"threads": args.threads, "recipes": rows}, args.json_out, sys.argv)


if __name__ == "__main__":
    main()
