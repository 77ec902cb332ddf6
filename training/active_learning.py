"""Active learning: EDNN Monte Carlo with the current model, GFN1-xTB labels, fine-tune, repeat.

Round ``r`` runs EDNN-MC chains with model ``r`` from fresh cells
(:func:`training.thermal.build_mc_set`, seed ``seed + r``), labels their
snapshots with GFN1-xTB and scores model ``r`` on them: snapshots it has never
seen, drawn where its own energy surface takes the atoms. Then model ``r + 1``
is model ``r`` fine-tuned on the base stores and every round's snapshots so far.
The loop stops when the error on fresh snapshots stops falling (by less than
``tol`` of the previous round's) or after ``rounds`` rounds; the best model is
the one with the lowest fresh error.

Everything lives in ``workdir``: ``round-R/mc.zarr`` (with its chains),
``round-R/model.onnx`` (with its training checkpoints) and ``rounds.json``.
Each stage is resumable, so the same command continues a killed loop.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ednn_dask.errors import ConfigError
from ednn_dask.model import load_model
from training.records import write_record

AL_SEED = 500
"""Seed of round 0's MC cells (round ``r``: ``AL_SEED + r``); no other data set uses 500-599."""


def active_learning(
    system: str,
    model: str | Path,
    workdir: str | Path,
    *,
    data: Sequence[str],
    rounds: int = 3,
    tol: float = 0.05,
    epochs: int = 30,
    chains: int = 32,
    seed: int = AL_SEED,
    mc: dict[str, Any] | None = None,
    client: object = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or continue) the loop; returns ``rounds.json``'s content.

    ``model``: the starting model (round 0); its net, focus and context are kept.
    ``data``: the stores every fine-tune trains on besides the MC snapshots (those
    the starting model was trained on, typically). ``mc``: keyword arguments of
    :func:`training.thermal.build_mc_set` (``steps``, ``every``, ``equilibrate``,
    ``temperatures``, ``max_vacancies``, ``cells``).
    """
    from training.atomistic import evaluate_atomistic, train_atomistic
    from training.thermal import build_mc_set

    if rounds < 1 or not 0 <= tol < 1:
        raise ConfigError(f"need rounds >= 1 and 0 <= tol < 1; got rounds={rounds}, tol={tol}.")
    if "net" not in load_model(model).spec.provenance:
        raise ConfigError(f"{model} does not name its net (provenance 'net'), so it cannot be "
                          "fine-tuned; start from a model that `ednn-dask train` exported.")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    state = _state(work, system, model, data, seed)
    for r in range(rounds):
        current = _model_path(work, model, r)
        if r >= len(state["rounds"]):
            store = work / f"round-{r}" / "mc.zarr"
            counts = build_mc_set(store, current, system, n=chains, seed=seed + r,
                                  client=client, progress=progress, **(mc or {}))
            if counts["pending"]:
                raise ConfigError(f"round {r}: {counts['pending']} MC snapshots are pending "
                                  f"in {store}; run the same command again to continue.")
            # snapshots GFN1-xTB could not converge stay out (the store marks them failed)
            fresh = evaluate_atomistic(str(current), str(store))
            state["rounds"].append({"round": r, "model": str(current), "mc_store": str(store),
                                    "n_snapshots": fresh["n"], "n_failed": counts["failed"],
                                    "fresh_mae_meV_per_atom": fresh["mae_meV_per_atom"],
                                    "fresh_mean_signed_meV_per_atom":
                                        fresh["mean_signed_meV_per_atom"]})
            _save(work, state)
        if stopped_falling(_errors(state), tol) or r == rounds - 1:
            break
        following = _model_path(work, model, r + 1)
        if not following.exists():
            spec = load_model(current).spec
            train_atomistic(system, str(following),
                            data=[*data, *(x["mc_store"] for x in state["rounds"])],
                            epochs=epochs, net=spec.provenance["net"], focus=spec.focus[0],
                            context=spec.context[0], init_from=str(current),
                            workdir=str(following.parent / "train"), device=device,
                            progress=progress)
    best = min(state["rounds"], key=lambda x: x["fresh_mae_meV_per_atom"])
    state["best_model"] = best["model"]
    state["stopped"] = stopped_falling(_errors(state), tol)
    _save(work, state)
    return state


def _model_path(work: Path, start: str | Path, r: int) -> Path:
    return Path(start) if r == 0 else work / f"round-{r}" / "model.onnx"


def stopped_falling(errors: Sequence[float], tol: float) -> bool:
    """Whether the last error fell by less than ``tol`` of the one before (or rose)."""
    return len(errors) > 1 and errors[-1] > (1 - tol) * errors[-2]


def _errors(state: dict) -> list[float]:
    return [x["fresh_mae_meV_per_atom"] for x in state["rounds"]]


def _state(work: Path, system: str, model: str | Path, data: Sequence[str], seed: int) -> dict:
    """``rounds.json``, or a new one; a loop of other settings in ``work`` is refused."""
    plan = {"system": system, "start_model": str(model),
            "start_sha256": load_model(model).sha256, "data": [str(d) for d in data],
            "seed": seed}
    path = work / "rounds.json"
    if not path.exists():
        return {**plan, "rounds": []}
    state = json.loads(path.read_text())
    differ = {k: (state.get(k), v) for k, v in plan.items() if state.get(k) != v}
    if differ:
        raise ConfigError(f"{work} holds a loop with other settings ({differ}, as (stored, "
                          "given)); continue it with its own settings or use another --workdir.")
    return state


def _save(work: Path, state: dict) -> None:
    write_record(state, work / "rounds.json", " ".join(sys.argv))
