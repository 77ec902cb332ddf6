"""The ``ednn-dask`` command line: each command parses its arguments and calls one function.

Errors from :mod:`ednn_dask.errors` are printed without a traceback (exit status 2), so
are a full disk, a folder without write permission or a read-only file system. SIGINT
(Ctrl-C) and SIGTERM unwind the command (its cluster closed, temporary outputs removed)
and print one line saying what was kept (exit status 130 and 143).
Training and data commands import the ``training`` package (the ``train`` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shlex
import signal
import sys
import threading
import warnings

from ednn_dask.defaults import CHUNK_PIXELS
from ednn_dask.errors import ConfigError, EDNNError, ExtrapolationWarning, SchedulerLostError


def _print(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, default=str))
        return
    width = max(len(k) for k in result)
    for key, value in result.items():
        if key == "groups" and isinstance(value, dict):
            _print_groups(value)
            continue
        print(f"{key:<{width}}  {_shown(value)}")


def _shown(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_shown(v)}" for k, v in value.items())
    return value


def _print_groups(groups: dict) -> None:
    """Errors by group (``evaluate atoms``): one small table per grouping."""
    for name, rows in groups.items():
        print(f"\nby {name}:")
        width = max(len(k) for k in rows)
        print(f"  {'':<{width}}  {'n':>6}  {'MAE':>8}  {'mean':>8}")
        for label, row in rows.items():
            print(f"  {label:<{width}}  {row['n']:>6}  {row['mae']:>8.2f}  "
                  f"{row['mean_signed']:>+8.2f}")


def cmd_info(args) -> int:
    from dataclasses import asdict

    from ednn_dask.model import load_model

    model = load_model(args.model)
    info = {"path": str(args.model), "sha256": model.sha256, **asdict(model.spec)}
    if args.json:
        print(json.dumps(info, default=list))
    else:
        provenance, scales = info.pop("provenance"), info.pop("scales")
        _print(info, False)
        for k, s in enumerate(scales):
            print(f"scale {k}: factor {_by(s['factor'])}, focus {_by(s['focus'])}, context "
                  f"{_by(s['context'])} ({s['kind']}; {s['input']} -> {s['output']}, "
                  f"x {s['output_scale']:.6g} + {s['output_offset']:.6g})")
        print("provenance  " + json.dumps(provenance, indent=2).replace("\n", "\n            "))
    return 0


def _by(values) -> str:
    return "x".join(map(str, values))


def cmd_score(args) -> int:
    from ednn_dask.model import load_model
    from ednn_dask.score import score
    from ednn_dask.storage import refuse_existing

    model = load_model(args.model)
    options = dict(chunks=args.chunks, boundary=args.boundary, method=args.method,
                   progress=args.progress, pad=args.pad, variable=args.variable)
    if args.table:
        from ednn_dask.batch import open_table

        # a table we cannot use fails here, before a cluster starts
        args.shared_table = open_table(args.table, overwrite=args.overwrite)
        args.kept = lambda: _table_kept(args, model)
    if args.out and (args.table or len(args.fields) > 1):
        raise ConfigError("--out writes the contribution map of one field; give one field "
                          "and no --table.")
    if args.out:
        refuse_existing(args.out, args.overwrite)
    with _client(args) as client:
        if args.table:
            return _score_table(args, model, client, options)
        for field in args.fields:
            result = score(field, model, client=client, keep_contributions=bool(args.out),
                           **options)
            summary = {"field": field, **result.to_dict()}
            if args.out:
                from ednn_dask.maps import write_score

                write_score(result.contributions, args.out, summary, overwrite=args.overwrite)
                summary["out"] = args.out
            _print(summary, args.json)
            if model.spec.raster is not None and not args.json:
                print("(energy is the EDNN sum of the field, without the model's reference "
                      "energies; ednn_dask.energy() on the atoms gives the total)")
    return 0


def _score_table(args, model, client, options) -> int:
    from ednn_dask.batch import score_batch

    def report(field, row):
        if isinstance(row, str):
            print(f"ednn-dask score: {field}: error: {row}", file=sys.stderr)
        elif args.json:
            print(json.dumps(row, default=str))
        else:
            print(f"{row['energy']:.10g} {row['unit']}  {field}")

    result = score_batch(args.fields, model, args.shared_table, on_field=report, client=client,
                         **options)
    summary = {"table": args.table, **result.to_dict()}
    print(json.dumps(summary) if args.json else
          f"{summary['table']}: {summary['scored']} scored, {summary['skipped']} already there, "
          f"{summary['failed']} failed", file=sys.stderr)
    return 2 if result.failed else 0


def _table_kept(args, model) -> tuple[str, str]:
    from ednn_dask.batch import table_progress

    done, total = table_progress(args.fields, model, args.table)
    return (f" after {done:,} of {total:,} fields, kept in {args.table!r}",
            "run the same command to continue")


LENGTH_UNITS = {"um": 1e4, "µm": 1e4, "nm": 10.0, "A": 1.0, "Å": 1.0}


def parse_length(text: str) -> float:
    """'1um', '250nm', '500A' -> Å."""
    for unit, scale in LENGTH_UNITS.items():
        if text.endswith(unit):
            try:
                value = float(text[: -len(unit)])
            except ValueError:
                break
            if value > 0:
                return value * scale
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a length; write a positive number with a unit: 1um, 250nm or 500A"
    )


def cmd_sheet(args) -> int:
    from ednn_dask.atoms.sheet import porous_sheet

    args.kept = _sheet_kept(args)
    with _client(args) as client:
        summary = porous_sheet(args.size, args.model, porosity=args.porosity, seed=args.seed,
                               out=args.out, field=args.field, client=client, chunks=args.chunks,
                               overwrite=args.overwrite, progress=not args.json)
    if args.json:
        _print(summary, True)
        return 0
    print(f"{summary['n_atoms']:,} atoms: total energy {summary['energy']:.10g} eV "
          f"({summary['energy_per_atom']:.6f} eV/atom) = EDNN sum {summary['ednn_energy']:.10g} eV "
          f"+ the model's reference energies; {summary['atoms_per_second']:,.0f} atoms/s. "
          f"Outputs in {summary['outputs']}/")
    return 0


def _sheet_kept(args):
    from pathlib import Path

    new_field = args.field and not Path(args.field).exists()

    def kept() -> tuple[str, str]:
        if new_field and Path(args.field).exists():  # written before the sheet's folder
            return (f"; {args.field!r} is written, the sheet's folder is not (temporary files "
                    "removed)", "run the same command with --overwrite to start again")
        return "; nothing written (temporary files removed)", "run the same command to start again"

    return kept


def cmd_demo(args) -> int:
    from training.demo import demo_ising

    result = demo_ising(args.model, **_given(args, "size", "scheduler", "chunks", "temperature",
                                        "seed"))
    if args.json:
        _print(result, True)
        return 0
    print(f"A {result['lattice']} Ising lattice at T = {result['temperature']:g} J/k_B: the EDNN "
          f"gives E = {result['ednn_energy_J']:.10g} J, the exact sum over bonds "
          f"{result['exact_energy_J']:.10g} J (relative error {result['relative_error']:.2e}); "
          f"{result['tiles']:,} tiles in {result['chunks']} chunks, "
          f"{result['spins_per_second']:,.0f} spins/s.")
    return 0


def _given(args, *names: str) -> dict:
    """The options the user gave (not None): everything else takes the library's default."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def cmd_data(args) -> int:
    if args.system == "thermal":
        return _thermal_data(args)
    if args.system == "rattles":
        return _rattle_data(args)
    if args.system == "relaxed":
        return _relaxed_data(args)
    if args.system == "runs":
        return _selected_runs(args)
    args.seed = args.seed or 0
    if args.system in ("hexagonal", "porous"):
        from training.reference import build_reference_set, store_progress

        def kept() -> tuple[str, str]:
            done, total = store_progress(args.out)
            if total is None:
                return "; nothing written (temporary files removed)", "run the same command"
            return (f" with {done:,} of {total:,} energies in {args.out!r}",
                    "run the same command to continue")

        args.kept = kept
        counts = build_reference_set(
            args.system, args.out, client=args.scheduler, retry_failed=args.retry_failed,
            overwrite=args.overwrite, seed=args.seed,
            **_given(args, "n", "cells", "limit", "max_vacancies", "replicas"),
            **({"max_sigma": args.sigma} if args.sigma is not None else {}))
        _print({"store": args.out, **counts}, args.json)
        return 0
    if args.system == "rock" and args.volume:
        from training.rock import write_rock_volume

        with _client(args) as client:
            summary = write_rock_volume(args.out, args.volume, chunks=args.chunks or 256,
                                        seed=args.seed, client=client, overwrite=args.overwrite,
                                        **_given(args, "sigma", "porosity"))
        _print(summary, args.json)
        return 0
    from training.recipes import make_dataset

    summary = make_dataset(args.system, args.out, dim=args.dim, seed=args.seed,
                           near_critical=args.near_critical, overwrite=args.overwrite,
                           **_given(args, "n", "L"))
    _print(summary, args.json)
    return 0


def _thermal_data(args) -> int:
    from training.thermal import THERMAL_SEED, build_mc_set, build_thermal_set

    args.kept = lambda: ("; the finished runs and energies are kept",
                         "run the same command to continue")
    if args.from_mc:
        given = _given(args, "n", "limit", "max_vacancies", "temperatures", "steps", "every",
                       "workdir", "cells", "min_distance")
        if args.equilibrate_steps is not None:
            given["equilibrate"] = args.equilibrate_steps
        counts = build_mc_set(args.out, args.from_mc, args.of, client=args.scheduler,
                              overwrite=args.overwrite, retry_failed=args.retry_failed,
                              seed=THERMAL_SEED if args.seed is None else args.seed, **given)
        _print({"store": args.out, **counts}, args.json)
        return 0
    summary = build_thermal_set(
        args.out, args.of, client=args.scheduler, overwrite=args.overwrite,
        seed=THERMAL_SEED if args.seed is None else args.seed,
        **_given(args, "n", "limit", "max_vacancies", "temperatures", "steps", "every",
                 "equilibrate_steps", "workdir", "cells"))
    _print(summary, args.json)
    return 0


def _relaxed_data(args) -> int:
    from training.thermal import THERMAL_SEED, build_relaxed_set

    args.kept = lambda: ("; the finished relaxations are kept", "run the same command to continue")
    given = _given(args, "n", "limit", "max_vacancies", "every", "fmax", "workdir", "cells")
    if args.steps is not None:
        given["max_steps"] = args.steps
    summary = build_relaxed_set(args.out, args.of, client=args.scheduler,
                                overwrite=args.overwrite,
                                seed=THERMAL_SEED if args.seed is None else args.seed, **given)
    _print(summary, args.json)
    return 0


def _rattle_data(args) -> int:
    from training.reference import store_progress
    from training.thermal import build_rattle_set

    if not args.source:
        raise ConfigError("data rattles needs --from STORE (a thermal set of `data thermal`).")

    def kept() -> tuple[str, str]:
        done, total = store_progress(args.out)
        if total is None:
            return "; nothing written (temporary files removed)", "run the same command"
        return f" with {done:,} of {total:,} energies in {args.out!r}", "run the same command"

    args.kept = kept
    counts = build_rattle_set(args.out, args.source, client=args.scheduler, seed=args.seed or 0,
                              retry_failed=args.retry_failed, overwrite=args.overwrite,
                              **_given(args, "limit"),
                              **({"per_run": args.n} if args.n else {}))
    _print({"store": args.out, **counts}, args.json)
    return 0


def _selected_runs(args) -> int:
    from training.thermal import select_runs

    if not args.source or not args.runs:
        raise ConfigError("data runs needs --from STORE (a thermal set) and --runs R [R ...], "
                          "the runs to keep.")
    _print(select_runs(args.out, args.source, args.runs, overwrite=args.overwrite), args.json)
    return 0


def _data_paths(args, several: tuple[str, ...]) -> None:
    """``--data`` as one path, or a list where the system takes several stores."""
    if args.data is None or args.system in several:
        return
    if len(args.data) > 1:
        raise ConfigError(f"{args.system} takes one --data store, got {len(args.data)}; "
                          f"several are for {' and '.join(several)}.")
    args.data = args.data[0]


def cmd_train(args) -> int:
    from training import recipes
    from training.train import keep_freed_memory

    _data_paths(args, ("hexagonal", "porous"))
    keep_freed_memory()  # process-wide allocator setting (faster epochs on glibc)
    if args.system == "fields":
        return _train_fields(args)
    if args.system == "screened":
        from training.screened import train_screened

        metrics = train_screened(args.out, kind=args.kind, data=args.data, seed=args.seed,
                                 workdir=args.workdir, overwrite=args.overwrite)
        _print({"model": args.out, "kind": args.kind, **metrics["test"]}, args.json)
        return 0
    if args.system == "rock":
        return _train_rock(args)
    if args.net in FIELD_NETS:
        raise ConfigError(f"--net {args.net} is a net of `train fields`; {args.system} takes "
                          f"one of {ATOMISTIC_NETS}.")
    if args.system in ("hexagonal", "porous"):
        from training.atomistic import train_atomistic

        metrics = train_atomistic(args.system, args.out, data=args.data, epochs=args.epochs,
                                  net=args.net or "compact", focus=args.focus, context=args.context,
                                  pixels=args.pixels, seed=args.seed, limit=args.n,
                                  workdir=args.workdir, overwrite=args.overwrite,
                                  device=args.device, whiten=args.whiten, loss=args.loss,
                                  init_from=args.init_from, lr=args.lr, scales=args.scales,
                                  threads=args.threads)
        _print({"model": args.out, **metrics["test"], **metrics["test_per_atom"]}, args.json)
        return 0
    common = dict(L=args.L, n=args.n, epochs=args.epochs, seed=args.seed, data=args.data,
                  workdir=args.workdir, overwrite=args.overwrite, device=args.device)
    if args.system == "ising":
        metrics = recipes.train_ising(args.out, dim=args.dim, **common)
    else:
        metrics = recipes.train_laplacian(args.out, whiten=args.whiten, **common)
    _print({"model": args.out, **metrics["test"]}, args.json)
    return 0


def _train_fields(args) -> int:
    from training.fields import train_fields

    needed = ("data", "field", "target") + (() if args.scales else ("focus", "context"))
    missing = [f"--{n}" for n in needed if getattr(args, n) is None]
    if missing:
        raise ConfigError(f"train fields needs {' '.join(missing)} (see ednn-dask train --help).")
    if args.net in ATOMISTIC_NETS:
        raise ConfigError(f"--net {args.net} is an atomistic net; train fields takes one of "
                          f"{FIELD_NETS}.")
    metrics = train_fields(args.data, args.out, field=args.field, target=args.target,
                           focus=args.focus, context=args.context, scales=args.scales,
                           boundary=args.boundary,
                           net=args.net or "density", epochs=args.epochs, device=args.device,
                           workdir=args.workdir, seed=args.seed, threads=args.threads,
                           whiten=args.whiten, overwrite=args.overwrite)
    _print({"model": args.out, "data_hash": metrics["data_hash"],
            "best_epoch": metrics["best_epoch"], **metrics["test"]}, args.json)
    return 0


def _train_rock(args) -> int:
    from training.rock import TARGETS, train_rock

    if args.target is None:
        raise ConfigError(f"train rock needs --target, one of {', '.join(TARGETS)}.")
    result = train_rock(args.out, target=args.target, data=args.data, seed=args.seed,
                        workdir=args.workdir, overwrite=args.overwrite,
                        **_given(args, "n", "L", "focus"))
    _print({"model": args.out, "target": args.target, **result["head"],
            **{f"test_{k}": v for k, v in result["metrics"]["test"].items()
               if k in ("mae", "relative_mae", "max_ae")}}, args.json)
    return 0


def cmd_active_learning(args) -> int:
    from training.active_learning import active_learning
    from training.train import keep_freed_memory

    keep_freed_memory()
    args.kept = lambda: ("; every finished stage is kept", "run the same command to continue")
    mc = _given(args, "steps", "every", "temperatures", "max_vacancies", "min_distance")
    if args.equilibrate_steps is not None:
        mc["equilibrate"] = args.equilibrate_steps
    state = active_learning(args.system, args.model, args.workdir, data=args.data,
                            client=args.scheduler, device=args.device, mc=mc,
                            **_given(args, "rounds", "tol", "epochs", "chains", "seed"))
    if args.json:
        _print(state, True)
        return 0
    for x in state["rounds"]:
        print(f"round {x['round']}: {x['model']} on {x['n_snapshots']} fresh MC snapshots: "
              f"MAE {x['fresh_mae_meV_per_atom']:.2f} meV/atom "
              f"(mean signed {x['fresh_mean_signed_meV_per_atom']:+.2f})")
    print(f"best model: {state['best_model']}"
          + ("" if state["stopped"] else " (the error was still falling)"))
    return 0


def cmd_convention(args) -> int:
    from training.convention import to_replica_convention

    command = shlex.join(["ednn-dask", "convention", args.model, "--replicas", args.replicas,
                          "--out", args.out])
    fit = to_replica_convention(args.model, args.replicas, args.out, overwrite=args.overwrite,
                                command=command)
    if args.json:
        print(json.dumps(fit))
    else:
        shift = ", ".join(f"{s} {v * 1e3:+.2f}" for s, v in fit["shift_eV"].items())
        print(f"wrote {args.out}: reference energies shifted by {shift} meV/atom to the "
              f"{fit['replicas']} x {fit['replicas']}-replica convention ({fit['n']} cells; "
              f"fit rms {fit['rms_meV_per_atom']:.2f}, leave-one-out MAE "
              f"{fit['loo_mae_meV_per_atom']:.2f} meV/atom)")
    return 0


def cmd_evaluate(args) -> int:
    from training import evaluation

    _data_paths(args, ("atoms",))
    if args.system == "fields":
        from training.fields import evaluate_fields

        if not args.data:
            raise ConfigError("evaluate fields needs --data STORE (a data set of fields).")
        result = evaluate_fields(args.model, args.data, split=args.split, plot=args.plot,
                                 **_given(args, "field", "target"))
    elif args.system == "rock":
        from training.rock import evaluate_rock

        if args.data:
            with _client(args) as client:
                result = evaluate_rock(args.model, data=args.data, client=client)
        else:
            result = evaluate_rock(args.model, **_given(args, "L", "n", "seed"))
    elif args.system == "screened":
        from training.screened import evaluate_screened

        result = evaluate_screened(args.model, **_given(args, "L", "n", "seed", "plot"))
    elif args.system == "atoms":
        from training.atomistic import evaluate_atomistic

        if not args.data:
            raise ConfigError("evaluate atoms needs --data STORE (a GFN1-xTB reference store).")
        result = evaluate_atomistic(args.model, args.data, plot=args.plot, split=args.split,
                                    registries=args.registries)
    elif args.system == "ising":
        result = evaluation.evaluate_ising(args.model, near_critical=not args.any_temperature,
                                           **_given(args, "L", "n", "seed", "plot"))
    else:
        result = evaluation.evaluate_laplacian(args.model, **_given(args, "L", "n", "seed", "plot"))
    if args.json_out:
        evaluation.write_evaluation(result, args.json_out, model=args.model,
                                    command=_evaluate_command(args))
    _print(result, args.json)
    return 0


def _evaluate_command(args) -> str:
    """The command line that reproduces an evaluation (its output options left out)."""
    import shlex

    words = ["ednn-dask", "evaluate", args.system, "--model", args.model]
    if args.system in ("atoms", "fields"):
        data = [args.data] if isinstance(args.data, str) else args.data
        words += ["--data", *data, "--split", args.split]
        if args.system == "atoms" and args.registries != 1:
            words += ["--registries", str(args.registries)]
    elif args.system == "rock" and args.data:
        words += ["--data", args.data]
    else:
        for name, value in _given(args, "L", "n", "seed").items():
            words += [f"--{name}", str(value)]
        if args.any_temperature:
            words.append("--any-temperature")
    return shlex.join(words)


def cmd_blur_study(args) -> int:
    from training.blur_study import blur_study

    result = blur_study(args.model, args.data, n=args.n, sigma=args.sigma, steps=args.steps,
                        plot=args.out)
    _print(result, args.json)
    return 0


def cmd_mc_ising(args) -> int:
    from ednn_dask.mc import ising_scan

    if args.plot and not args.out:
        raise ConfigError("--plot draws the traces of a stored run; give --out RUN.zarr too.")
    if args.regions:
        return _mc_ising_decomposed(args)
    rows = ising_scan(args.model, args.L, args.T, args.sweeps, seed=args.seed, out=args.out,
                      overwrite=args.overwrite, progress=not args.json,
                      checkpoint_seconds=args.checkpoint, **_given(args, "thermalize"))
    if args.plot:
        _plot_scan(args, rows)
    _print_scan(rows, args.json)
    return 0


def _mc_ising_decomposed(args) -> int:
    from ednn_dask.mc.domains import decomposed_ising_chain

    if args.out and len(args.T) > 1:
        raise ConfigError("a --regions run stores one temperature; give one --T per --out "
                          "(or drop --out).")
    args.processes = True  # one worker process per core, each region a task
    with _client(args) as client:
        rows = [decomposed_ising_chain(args.model, args.L, t, args.sweeps, regions=args.regions,
                                       sweeps_per_phase=args.sweeps_per_phase,
                                       seed=args.seed + k, client=client, start=args.start,
                                       progress=not args.json, out=args.out,
                                       overwrite=args.overwrite,
                                       checkpoint_seconds=args.checkpoint,
                                       **_given(args, "thermalize")).summary()
                for k, t in enumerate(args.T)]
    if args.plot:
        _plot_scan(args, rows)
    _print_scan(rows, args.json)
    return 0


def _print_scan(rows, as_json) -> None:
    for row in rows:
        if as_json:
            _print(row, True)
            continue
        print(f"T = {row['temperature']:g}: <E>/N = {row['energy_per_site']:.5f} "
              f"± {row['energy_per_site_sem']:.5f}, <|m|> = {row['abs_magnetization']:.4f} "
              f"± {row['abs_magnetization_sem']:.4f}, C/N = {row['specific_heat_per_site']:.3f}, "
              f"Binder U = {row['binder_cumulant']:.4f}, acceptance {row['acceptance']:.3f}, "
              f"{row['moves_per_second']:,.0f} flips/s ({row['sweeps']} sweeps of "
              f"{row['sites']} sites)")


def _plot_scan(args, rows) -> None:
    import xarray as xr

    from ednn_dask.mc.plots import plot_scan

    plot_scan(xr.open_zarr(args.out, zarr_format=3, consolidated=False).load(), args.plot)


STEPS, EVERY = 20000, 10
"""``mc atoms`` defaults: measured moves and moves between frames."""


def cmd_mc_atoms(args) -> int:
    from ednn_dask.atoms.structure import read_structure
    from ednn_dask.mc import run_atoms
    from ednn_dask.mc.plots import plot_atoms_run

    if args.regions:
        run = _mc_atoms_decomposed(args)
    else:
        phased = sorted(_given(args, "sweeps", "sweeps_per_phase", "thermalize", "scheduler"))
        if phased:
            raise ConfigError(f"--{phased[0].replace('_', '-')} counts phases of a run split "
                              f"into regions; add --regions N, or use --steps, --every and "
                              f"--equilibrate for a single-process run.")
        run = run_atoms(read_structure(args.structure), args.model, args.T,
                        args.steps or STEPS, every=args.every or EVERY, seed=args.seed,
                        out=args.out, overwrite=args.overwrite, progress=not args.json,
                        checkpoint_seconds=args.checkpoint,
                        **_given(args, "equilibrate", "step", "min_distance"))
    if args.plot:
        plot_atoms_run(run, args.plot)
    _print(run.summary(), args.json)
    return 0


def _mc_atoms_decomposed(args):
    from ednn_dask.atoms.structure import read_structure
    from ednn_dask.mc import decomposed_atoms_chain

    serial = sorted(_given(args, "steps", "every", "equilibrate"))
    if serial:
        raise ConfigError(f"--{serial[0]} counts moves of a single-process run; with --regions "
                          f"the run is counted in phases: use --sweeps, --sweeps-per-phase and "
                          f"--thermalize.")
    args.processes = True  # one worker process per core, each region a task
    with _client(args) as client:
        return decomposed_atoms_chain(
            read_structure(args.structure), args.model, args.T, args.sweeps or 10,
            regions=args.regions, seed=args.seed, out=args.out, overwrite=args.overwrite,
            client=client, progress=not args.json,
            **_given(args, "sweeps_per_phase", "thermalize", "step"))


def _run_output_arguments(p, holds: str) -> None:
    p.add_argument("--out", help=f"Zarr store of the run ({holds}) and the chain's state; "
                                 "the same command again continues it")
    p.add_argument("--overwrite", action="store_true", help="replace another run's --out")
    p.add_argument("--checkpoint", type=_positive_float, default=5.0,
                   help="seconds between writes of --out (frames and chain state)")
    p.add_argument("--plot", help="PNG of the energy trace" if "g(r)" not in holds
                   else "PNG of the energy trace and g(r)")


def _temperatures(text: str) -> list[float]:
    """'2.0,2.269,2.5' -> [2.0, 2.269, 2.5], each positive."""
    return [_positive_float(t) for t in text.split(",")]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other error of the CLI."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(least: int):
    """An argparse type: an integer >= ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {least}")
        return value

    parse.__name__ = f"integer >= {least}"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1")
    return value


POSITIVE, NON_NEGATIVE = _count(1), _count(0)
ATOMISTIC_NETS = ("compact", "compact-aa", "compact-pf", "fine", "smooth", "smooth-aa",
                  "smooth-aa-wide", "smooth-aa-deep", "paper")
FIELD_NETS = ("density", "window", "mlp", "quadratic", "pair")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ednn-dask", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("score", help="score Zarr fields with an ONNX tile model")
    p.add_argument("fields", nargs="+",
                   help="Zarr stores holding one field each, or glob patterns ('runs/*.zarr')")
    p.add_argument("--model", required=True, help="ONNX tile model")
    p.add_argument("--scheduler", help="dask scheduler address (default: in-process LocalCluster)")
    p.add_argument("--processes", action="store_true", help="LocalCluster with worker processes")
    p.add_argument("--chunks", type=POSITIVE,
                   help=f"chunk length per axis in pixels (default {CHUNK_PIXELS[2]} in 2-D)")
    p.add_argument("--variable", metavar="NAME",
                   help="the data variable to score, when a store holds several")
    p.add_argument("--boundary", help="'periodic' or a constant (default: the model's)")
    p.add_argument("--method", default="auto", choices=["auto", "dense", "tiles"])
    p.add_argument("--pad", action="store_true",
                   help="constant-boundary models: extend a field that is not a multiple of the "
                   "focus at its far end with the boundary value")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--table", help="batch mode: append one row per field to this CSV results "
                   "table, skipping fields it holds for this model already (resumable)")
    p.add_argument("--out", help="one field: folder for result.json, contributions.zarr (the "
                   "contribution map) and contributions.png (3-D: slices through the centre)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new --table, or replace --out")
    p.add_argument("--json", action="store_true", help="print one JSON object per field")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("sheet", help="atoms -> energy of a porous graphene sheet, streamed")
    p.add_argument("--size", required=True, type=parse_length,
                   help="side of the square sheet: 1um, 250nm, 500A (rounded up to whole "
                   "training cells)")
    p.add_argument("--porosity", type=float, default=0.1, help="removed fraction of atoms")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0)
    p.add_argument("--model", required=True, help="atomistic ONNX model (porous graphene)")
    p.add_argument("--out", help="folder for result.json, density.zarr and density.png "
                   "(default sheet-SIZEnm-pPOROSITY-sSEED)")
    p.add_argument("--field", help="also write the rasterized field to this Zarr store")
    p.add_argument("--chunks", type=POSITIVE, help="largest window side in pixels (default: from "
                   "the model and the workers' cores and memory)")
    p.add_argument("--scheduler", help="dask scheduler address (default: in-process LocalCluster)")
    p.add_argument("--processes", action="store_true", help="LocalCluster with worker processes")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sheet)

    p = sub.add_parser("info", help="show a model's metadata")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("convention", help="copy an atomistic model into the n x n-replica "
                       "energy convention (reference energies shifted per element)")
    p.add_argument("model", help="atomistic ONNX model (Gamma-point energies of its cells)")
    p.add_argument("--replicas", required=True,
                   help="store of cells computed both ways: `python "
                   "bench/reference_finite_size.py --store STORE --out REPLICAS.zarr`")
    p.add_argument("--out", required=True, help="the shifted copy (ONNX)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_convention)

    p = sub.add_parser("demo", help="score a large Ising lattice on a LocalCluster")
    p.add_argument("--size", type=POSITIVE, help="lattice side (default 4096)")
    p.add_argument("--model", help="Ising model (default: the shipped 2-D model)")
    p.add_argument("--scheduler", help="dask scheduler address (default: LocalCluster)")
    p.add_argument("--chunks", type=POSITIVE, help="chunk length per axis")
    p.add_argument("--temperature", type=_positive_float, help="in J/k_B (default 2.8)")
    p.add_argument("--seed", type=NON_NEGATIVE)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("data", help="generate a training data set (Zarr)")
    p.add_argument("system", choices=["ising", "laplacian", "screened", "rock", "hexagonal",
                                      "porous", "thermal", "relaxed", "rattles", "runs"],
                   help="thermal: GFN1-xTB molecular-dynamics snapshots of --of cells; "
                   "relaxed: GFN1-xTB relaxation paths of the same cells; "
                   "rattles: Gaussian samples of each run of a thermal set (--from), "
                   "labelled; runs: a copy of some runs (--runs) of a thermal set (--from)")
    p.add_argument("out")
    p.add_argument("--n", type=POSITIVE, help="number of samples (ising/laplacian 5000, "
                   "screened 2000, rock 200, hexagonal 5000, porous 1000; thermal: MD runs, "
                   "96, of 20 snapshots each, and a larger --n grows a thermal set; relaxed: "
                   "cells, 96, and grows the same way; --from-mc: chains, 32; rattles: per "
                   "run, 100)")
    p.add_argument("--from", dest="source", metavar="STORE",
                   help="rattles: the thermal set whose runs are sampled; runs: the thermal "
                   "set copied from")
    p.add_argument("--runs", type=NON_NEGATIVE, nargs="+", metavar="R",
                   help="runs: the MD runs to keep (the store's `run` numbers)")
    p.add_argument("--L", type=POSITIVE,
                   help="side of each sample (ising 8, laplacian 100, screened 96, at least 65; "
                   "rock 32)")
    p.add_argument("--volume", type=POSITIVE, metavar="SIZE",
                   help="rock: one periodic volume of SIZE^3 voxels instead of a data set, "
                   "generated and measured (exact volume, area, Euler characteristic) chunk "
                   "by chunk on a LocalCluster or --scheduler")
    p.add_argument("--chunks", type=POSITIVE, help="rock --volume: chunk side (default 256)")
    p.add_argument("--sigma", type=_positive_float,
                   help="rock --volume: correlation length in voxels (default 2); "
                        "hexagonal: Gaussian displacements, per-coordinate sigma uniform in "
                        "[0, SIGMA] Å (default: uniform in a disc of radius up to 0.1 Å)")
    p.add_argument("--porosity", type=_fraction, help="rock --volume: pore fraction (default "
                   "0.25)")
    p.add_argument("--dim", type=int, default=2, choices=[2, 3], help="Ising dimension")
    p.add_argument("--near-critical", action="store_true", help="Ising: T within 0.1 of Tc")
    p.add_argument("--cells", type=POSITIVE, nargs=2, metavar=("NX", "NY"),
                   help="atomistic cell in 4-atom rectangular cells (hexagonal 5 3, porous 5 6)")
    p.add_argument("--max-vacancies", type=NON_NEGATIVE,
                   help="hexagonal: at most this many vacancies per 60 atoms (default 4)")
    p.add_argument("--replicas", type=POSITIVE,
                   help="atomistic: compute each energy on the N x N replica, per cell (tblite "
                   "samples the Gamma point only; this is N x N k-points of the cell)")
    p.add_argument("--scheduler", help="atomistic: dask scheduler for the GFN1-xTB runs; "
                   "rock --volume: for the chunks (default: LocalCluster)")
    p.add_argument("--processes", action="store_true",
                   help="rock --volume: LocalCluster with worker processes")
    p.add_argument("--limit", type=NON_NEGATIVE, help="atomistic: compute at most this many "
                   "structures (thermal: MD runs) now")
    p.add_argument("--of", choices=["hexagonal", "porous"], default="hexagonal",
                   help="thermal, relaxed: the cells the runs start from (default hexagonal)")
    p.add_argument("--temperatures", type=_positive_float, nargs="+", metavar="K",
                   help="thermal: thermostat temperatures the runs cycle through "
                   "(default 300 600 1000 1500)")
    p.add_argument("--from-mc", metavar="MODEL",
                   help="thermal: snapshots of EDNN Monte Carlo chains with MODEL instead of "
                   "MD, labelled with GFN1-xTB (a round of active learning)")
    p.add_argument("--min-distance", type=_positive_float, metavar="A",
                   help="--from-mc: hard core (Å): MC moves that bring two atoms closer are "
                   "rejected (default: none)")
    p.add_argument("--steps", type=POSITIVE, help="thermal: MD steps per run (default 600, "
                   "1 fs); --from-mc: measured single-atom moves per chain (default 6000); "
                   "relaxed: at most this many FIRE steps per cell (default 500)")
    p.add_argument("--every", type=POSITIVE, help="thermal: steps (moves) between snapshots "
                   "(default 20; --from-mc 300; relaxed: FIRE steps, 20, and the last)")
    p.add_argument("--fmax", type=_positive_float, metavar="EV_PER_A",
                   help="relaxed: converged when no force exceeds this, eV/Å (default 0.05)")
    p.add_argument("--equilibrate-steps", type=NON_NEGATIVE,
                   help="thermal: leading steps (moves) dropped (default 200; --from-mc 3000)")
    p.add_argument("--workdir", help="thermal: where the MD runs live (default OUT's stem + -md "
                   "beside OUT; relaxed: + -relax)")
    p.add_argument("--retry-failed", action="store_true", help="atomistic: retry failed SCFs")
    p.add_argument("--seed", type=NON_NEGATIVE, help="default 0 (thermal, relaxed: 100)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train an EDNN and export it to ONNX")
    p.add_argument("system", choices=["ising", "laplacian", "screened", "rock", "hexagonal",
                                      "porous", "fields"],
                   help="a recipe, or fields: your own data set (--data --field --target "
                   "--focus --context, or --scales)")
    p.add_argument("--kind", default="multiscale", choices=["short", "wide", "multiscale"],
                   help="screened: a short single-scale context (4 px), the whole cutoff at full "
                   "resolution (32 px), or two scales (default)")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--dim", type=int, default=2, choices=[2, 3], help="Ising dimension")
    p.add_argument("--data", nargs="+", metavar="STORE",
                   help="train on this Zarr data set instead of sampling one (hexagonal, "
                   "porous: one or more reference stores, trained on together)")
    p.add_argument("--L", type=POSITIVE)
    p.add_argument("--n", type=POSITIVE)
    p.add_argument("--epochs", type=POSITIVE)
    p.add_argument("--net", choices=[*ATOMISTIC_NETS, *FIELD_NETS],
                   help="atomistic tile net: valid CNN (compact, fine: ReLU at 128 px per "
                   "cell; compact-aa, compact-pf: compact with its strides blurred after or "
                   "before, less registry noise; smooth: SiLU at 64 px; smooth-aa: smooth "
                   "with its strides blurred after; dense path) or the paper's 13 layers "
                   "(tile path); fields: density (default), window, mlp, quadratic or pair "
                   "(pair energies, fitted by least squares)")
    p.add_argument("--field", help="fields: the field variable of --data")
    p.add_argument("--target", help="fields: the target variable of --data (dims sample); "
                   "rock: volume, area or euler")
    p.add_argument("--boundary", default="periodic",
                   help="fields: outside each sample, periodic (default) or a constant value")
    p.add_argument("--threads", type=POSITIVE,
                   help="fields and atomistic: torch CPU threads (default: the idle cores of "
                   "this process's affinity, measured over half a second)")
    p.add_argument("--focus", type=POSITIVE,
                   help="fields: focus in px (required); atomistic focus in px, default the "
                   "net's (= --pixels: the whole "
                   "training cell as one tile, the non-EDNN baseline); rock: focus in voxels "
                   "(default 8)")
    p.add_argument("--context", type=NON_NEGATIVE,
                   help="fields: context in px (required); atomistic context in px, default "
                   "the net's")
    p.add_argument("--scales", metavar="F:FOCUS:CONTEXT,...",
                   help="fields: a multi-scale model instead of --focus/--context, one branch "
                   "per scale on the field coarsened by F (block mean), focus and context in "
                   "coarse px, e.g. 1:4:8,4:1:8; atomistic: the --net at factor 1 first, then "
                   "a small CNN per coarser branch, e.g. 1:16:24,4:4:12")
    p.add_argument("--pixels", type=POSITIVE,
                   help="atomistic resolution: pixels per side of the 60-atom training cell, "
                   "default the net's")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0)
    p.add_argument("--workdir", help="checkpoints, metrics.json, parity.png (default runs/NAME); "
                   "an existing checkpoint there is resumed")
    p.add_argument("--device", default="cpu",
                   help="torch device to train on, e.g. cuda (export always runs on the CPU)")
    p.add_argument("--no-whiten", dest="whiten", action="store_false",
                   help="convolutional nets: train the first layer on raw, not whitened, "
                   "patches (can stall on a constant-output plateau)")
    p.add_argument("--loss", choices=["total", "per-atom"], default="total",
                   help="atomistic: mean squared error of the total energy, or of the energy "
                   "per atom (weighs small cells as the per-atom metric does)")
    p.add_argument("--init-from", metavar="MODEL",
                   help="atomistic: start from this exported model's weights, scalings and "
                   "reference energies (same --net, --focus, --context): fine-tuning")
    p.add_argument("--lr", type=_positive_float,
                   help="atomistic: Adam learning rate (default 2e-3; 2e-4 with --init-from)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("active-learning",
                       help="EDNN-MC snapshots, GFN1-xTB labels, fine-tune: until the error on "
                            "fresh snapshots stops falling")
    p.add_argument("system", choices=["hexagonal", "porous"])
    p.add_argument("--model", required=True, help="the model to start from (round 0)")
    p.add_argument("--data", nargs="+", required=True, metavar="STORE",
                   help="reference stores every fine-tune trains on besides the MC snapshots")
    p.add_argument("--workdir", required=True,
                   help="where the rounds live (MC stores, models, checkpoints, rounds.json); "
                        "the same command continues a stopped loop")
    p.add_argument("--rounds", type=POSITIVE, help="at most this many rounds (default 3)")
    p.add_argument("--tol", type=_fraction,
                   help="stop when the fresh error falls by less than this fraction "
                        "(default 0.05)")
    p.add_argument("--epochs", type=POSITIVE, help="fine-tuning epochs per round (default 30)")
    p.add_argument("--chains", type=POSITIVE, help="MC chains per round (default 32)")
    p.add_argument("--steps", type=POSITIVE, help="measured moves per chain (default 6000)")
    p.add_argument("--every", type=POSITIVE, help="moves between snapshots (default 300)")
    p.add_argument("--equilibrate-steps", type=NON_NEGATIVE,
                   help="moves before the first snapshot (default 3000)")
    p.add_argument("--temperatures", type=_positive_float, nargs="+", metavar="K",
                   help="thermostat temperatures the chains cycle through "
                        "(default 300 600 1000 1500)")
    p.add_argument("--max-vacancies", type=NON_NEGATIVE,
                   help="hexagonal: at most this many vacancies per 60 atoms (default 4)")
    p.add_argument("--min-distance", type=_positive_float, metavar="A",
                   help="hard core (Å): MC moves that bring two atoms closer are rejected "
                        "(default: none)")
    p.add_argument("--seed", type=NON_NEGATIVE, help="round 0's cells (default 500; round r: +r)")
    p.add_argument("--scheduler", help="dask scheduler for MC and GFN1-xTB (default: a "
                                       "LocalCluster)")
    p.add_argument("--device", default="cpu", help="torch device to fine-tune on, e.g. cuda")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_active_learning)

    p = sub.add_parser("evaluate", help="accuracy of a model on fresh exact references")
    p.add_argument("system", choices=["ising", "laplacian", "screened", "rock", "atoms",
                                      "fields"])
    p.add_argument("--model", required=True)
    p.add_argument("--data", nargs="+", metavar="STORE",
                   help="atoms, fields: the data set to evaluate on (atoms: one or more "
                   "reference stores); rock: a volume of `data rock --volume`, scored chunk by "
                   "chunk")
    p.add_argument("--scheduler", help="rock --data: dask scheduler address (default: "
                   "in-process LocalCluster)")
    p.add_argument("--processes", action="store_true",
                   help="rock --data: LocalCluster with worker processes")
    p.add_argument("--split", default="all", choices=["all", "train", "val", "test"],
                   help="atoms, fields: one split of the model's training run (its own "
                   "data set only)")
    p.add_argument("--registries", type=POSITIVE, default=1, metavar="K",
                   help="atoms: each energy the mean over K registries of the cell on the "
                   "model's grid, a lattice within one stride of the net (1, 4, 16, ...; K "
                   "times the cost; 4 takes much of the registry noise out)")
    p.add_argument("--field", help="fields: the field variable (default the model's)")
    p.add_argument("--target", help="fields: the target variable (default the model's)")
    p.add_argument("--L", type=POSITIVE,
                   help="sample side (ising 128, laplacian 100, screened 512)")
    p.add_argument("--n", type=POSITIVE, help="number of samples")
    p.add_argument("--any-temperature", action="store_true", help="Ising: T in 1..5, not near Tc")
    p.add_argument("--seed", type=NON_NEGATIVE, help="seed of the fresh samples (default 1234)")
    p.add_argument("--plot", help="write a parity plot PNG here")
    p.add_argument("--json", action="store_true")
    p.add_argument("--json-out", metavar="PATH",
                   help="also write the result as JSON with the model's sha256, the date, the "
                        "machine and the command (replaces PATH)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("blur-study", help="the paper's Fig. 6: blur tile edges vs tile centres")
    p.add_argument("--model", required=True, help="atomistic ONNX model")
    p.add_argument("--data", required=True, help="GFN1-xTB reference store (its last --n cells)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--n", type=POSITIVE, default=200)
    p.add_argument("--sigma", type=_positive_float, default=3.0, help="blur width in pixels")
    p.add_argument("--steps", type=POSITIVE, default=6, help="number of blurred areas")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_blur_study)

    p = sub.add_parser("mc", help="Metropolis Monte Carlo with a model as the energy")
    systems = p.add_subparsers(dest="system", required=True, parser_class=_Parser)
    q = systems.add_parser("ising", help="spin flips on a periodic lattice (Ising models)")
    q.add_argument("--model", required=True, help="periodic lattice model (spins +-1)")
    q.add_argument("--L", type=_count(2), default=32, help="lattice side")
    q.add_argument("--T", type=_temperatures, required=True,
                   help="temperature(s) in J/k_B, comma-separated: 2.0,2.269,2.5")
    q.add_argument("--sweeps", type=POSITIVE, default=2000, help="measured sweeps")
    q.add_argument("--thermalize", type=NON_NEGATIVE,
                   help="sweeps before measuring (default a fifth of --sweeps)")
    q.add_argument("--seed", type=NON_NEGATIVE, default=0)
    q.add_argument("--min-distance", type=_positive_float, metavar="A",
                   help="hard core (Å): MC moves that bring two atoms closer are rejected "
                   "(default: none)")
    q.add_argument("--regions", type=POSITIVE,
                   help="split the lattice into REGIONS^d tasks on a Dask cluster (domain "
                        "decomposition; --sweeps then counts phases)")
    q.add_argument("--sweeps-per-phase", type=POSITIVE, default=1,
                   help="with --regions: sweeps of each region's interior between shifts")
    q.add_argument("--start", choices=["random", "up"], default="random",
                   help="with --regions: the first lattice")
    q.add_argument("--scheduler", help="with --regions: dask scheduler address "
                                       "(default: a LocalCluster)")
    _run_output_arguments(q, "per-sweep energy and magnetization")
    q.add_argument("--json", action="store_true", help="one JSON object per temperature")
    q.set_defaults(func=cmd_mc_ising)
    q = systems.add_parser("atoms", help="single-atom in-plane moves in a periodic sheet")
    q.add_argument("--model", required=True, help="atomistic model")
    q.add_argument("--structure", required=True,
                   help="the cell: extxyz or any file ase.io reads, periodic in x and y")
    q.add_argument("--T", type=_positive_float, required=True, help="temperature in K")
    q.add_argument("--steps", type=POSITIVE, help=f"measured moves (attempts; default {STEPS})")
    q.add_argument("--every", type=POSITIVE, help=f"moves between frames (default {EVERY})")
    q.add_argument("--equilibrate", type=NON_NEGATIVE,
                   help="moves before measuring, step size adapted (default a fifth of --steps)")
    q.add_argument("--step", type=_positive_float,
                   help="largest displacement (Å; initial value, adapted while equilibrating; "
                        "fixed with --regions)")
    q.add_argument("--seed", type=NON_NEGATIVE, default=0)
    q.add_argument("--min-distance", type=_positive_float, metavar="A",
                   help="hard core (Å): MC moves that bring two atoms closer are rejected "
                   "(default: none)")
    q.add_argument("--regions", type=POSITIVE,
                   help="split the sheet into REGIONS x REGIONS tasks on a Dask cluster (domain "
                        "decomposition; one frame per phase)")
    q.add_argument("--sweeps", type=POSITIVE,
                   help="with --regions: measured phases (default 10)")
    q.add_argument("--sweeps-per-phase", type=_positive_float,
                   help="with --regions: move attempts per atom between shifts (default 1)")
    q.add_argument("--thermalize", type=NON_NEGATIVE,
                   help="with --regions: phases before measuring (default 0)")
    q.add_argument("--scheduler", help="with --regions: dask scheduler address "
                                       "(default: a LocalCluster)")
    _run_output_arguments(q, "positions, numbers, cell, energy per frame and g(r)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_mc_atoms)
    return parser


@contextlib.contextmanager
def _client(args):
    """The job's client; on a cluster of our own a failed task is reported once, as our error."""
    from ednn_dask.compute import dask_client

    with dask_client(args.scheduler, processes=args.processes) as client:
        _quiet_distributed()  # importing distributed set its own log levels in this process
        if not args.scheduler:
            client.run(_quiet_distributed)
        yield client


def _quiet_distributed() -> None:
    """A failed task is reported once, as the CLI's error line, not as a worker's log dump."""
    import logging

    for name in ("distributed.worker", "distributed.scheduler", "distributed.client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # nor a lost connection as the comms' INFO and ERROR chatter (the CLI says it in one line)
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    # nor a timed-out wait of a closing cluster's comms ("Future exception was never retrieved")
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def _quiet_libraries() -> None:
    """Process-wide settings of the command line (a library never sets these)."""
    import logging
    import os

    os.environ.setdefault("MPLBACKEND", "Agg")  # plots go to files; no display needed
    # the ONNX exporter logs a line per torchvision op it cannot find; we use none
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    _quiet_distributed()


def _show_warning(show, command, message, category, *args, **kwargs) -> None:
    """Our warnings in one line, as errors are (no file, line and source echo)."""
    if issubclass(category, ExtrapolationWarning):
        print(f"ednn-dask {command}: warning: {message}", file=sys.stderr)
    else:
        show(message, category, *args, **kwargs)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: every ``with`` block cleans up as for Ctrl-C."""


class _Interrupted(KeyboardInterrupt):
    """SIGINT, raised in the main thread.

    A subclass, not ``KeyboardInterrupt`` itself: CPython remembers a
    ``KeyboardInterrupt`` that escaped code run through ``PyRun_*`` (as some extension
    modules run code while they are imported) and then ends the process by SIGINT
    (status -2) even when the command handled it and returned 130.
    """


_SIGNALLED: list[int] = []  # the signal that stops the running command, once one came
_RAISED: list[KeyboardInterrupt] = []  # its exception, until main() catches it


def _on_signal(signum, frame) -> None:
    import logging

    _SIGNALLED.append(signum)
    # a cluster shut down mid-task logs its surprise from its own threads: not for the user
    logging.disable(logging.CRITICAL)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal_again)
    _RAISED[:] = [_Terminated() if signum == signal.SIGTERM else _Interrupted()]
    raise _RAISED[0]


def _raise_swallowed(event: str, args: tuple) -> None:
    """Audit hook: raise again, at the next import, an interrupt that was swallowed.

    The handler runs between any two bytecodes, also in Python code called from C
    that clears every error (``PyObject_HasAttr`` on a module ``__getattr__``, a
    dict lookup's ``__eq__``): the interrupt is lost there and the command would go
    on. Imports are where a starting command spends its time and meets such code.
    An interrupt still unwinding (a ``with`` block or ``finally`` cleaning up, where
    it is the exception being handled) is left alone.
    """
    if not _RAISED or event != "import" or threading.current_thread() is not \
            threading.main_thread():
        return
    exc = sys.exc_info()[1]
    while exc is not None:
        if exc is _RAISED[0]:
            return
        exc = exc.__context__
    _RAISED[:] = [type(_RAISED[0])()]
    raise _RAISED[0]


def _unraisable(previous, unraisable) -> None:
    """An interrupt raised where Python ignores exceptions: deliver it again, silently.

    Python runs a signal handler between any two bytecodes of the main thread, also
    inside a gc callback (distributed installs one) or a ``__del__``, where an
    exception is printed as "Exception ignored" and dropped: the command would go on.
    A thread runs the handler again 10 ms later (from this hook it would run at once,
    where it is ignored again).
    """
    if isinstance(unraisable.exc_value, (_Interrupted, _Terminated)) and _SIGNALLED:
        signum = _SIGNALLED.pop()
        _RAISED.clear()  # dropped; raised again by the timer
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _on_signal)
        threading.Timer(0.01, _redeliver, (signum,)).start()
        return
    previous(unraisable)


def _redeliver(signum: int) -> None:
    import _thread

    from ednn_dask.interrupts import Deferral

    handler = signal.getsignal(signum)
    # the command still runs (in a deferred section the signal is noted and comes after it)
    if handler is _on_signal or isinstance(handler, Deferral):
        _thread.interrupt_main(signum)


def _interrupted(args, signum: int) -> int:
    """Print the one line of a stopped command; its exit status."""
    name, code = ("SIGTERM", 143) if signum == signal.SIGTERM else ("SIGINT", 130)
    command = f"ednn-dask {args.command}" if args is not None else "ednn-dask"
    kept, then = _kept(args) if args is not None else ("; nothing written", "")
    print(f"{command}: interrupted ({name}){kept}{'; ' + then if then else ''}.",
          file=sys.stderr)
    return code


def _on_signal_again(signum, frame) -> None:
    """A second signal while the first one cleans up: stop at once, say what may remain."""
    os.write(2, b"\nednn-dask: interrupted again: stopped at once; temporary outputs "
                b"(.NAME.tmp-PID beside the outputs) may remain.\n")
    os._exit(128 + signum)


def _kept(args) -> tuple[str, str]:
    """What a stopped command kept (text after 'interrupted') and how to carry on."""
    note = getattr(args, "kept", None)
    if note is not None:
        with contextlib.suppress(Exception):  # the note reads outputs: never fail on it
            return note()
    return "; finished outputs are kept, temporary ones removed", ""


def _run(args) -> int:
    from ednn_dask.storage import WRITE_ERRNOS, write_error

    try:
        return args.func(args)
    except SchedulerLostError as err:
        if not err.connected:
            raise
        kept, then = _kept(args)
        print(f"ednn-dask {args.command}: error: lost the dask scheduler at {err.address!r} "
              f"({err.reason}){kept}; start it again and {then or 're-run the command'}.",
              file=sys.stderr)
        return 2
    except OSError as err:  # outputs not written through atomic_output: the same one line
        if err.errno not in WRITE_ERRNOS or isinstance(err, EDNNError):
            raise
        name = os.fsdecode(err.filename) if err.filename else None
        print(f"ednn-dask {args.command}: error: "
              f"{write_error(err, name) if name else err.strerror}", file=sys.stderr)
        return 2


@functools.cache
def _add_audit_hook() -> None:
    sys.addaudithook(_raise_swallowed)  # once per process: audit hooks cannot be removed


def main(argv: list[str] | None = None) -> int:
    # The handlers come first: every heavy import (dask, xarray, numba, onnxruntime: a
    # few seconds) happens inside the command, after them, so a Ctrl-C then ends in
    # the same one line. Only this module and the cheap package root load before.
    previous = {}
    _SIGNALLED.clear()
    _RAISED.clear()
    _add_audit_hook()
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT,
                                                                    signal.SIGTERM)}
    hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_unraisable, hook)
    show = warnings.showwarning
    args = None
    try:
        args = build_parser().parse_args(argv)
        warnings.showwarning = functools.partial(_show_warning, show, args.command)
        _quiet_libraries()
        code = _run(args)
        if _RAISED:  # swallowed after the command's last import: it ran to its end
            raise _RAISED[0]
        return code
    except KeyboardInterrupt as err:
        _RAISED.clear()
        return _interrupted(args, signal.SIGTERM if isinstance(err, _Terminated) else
                            signal.SIGINT)
    except Exception as err:
        # the interrupt came first: raised inside an import, it may surface as another
        # error (an extension module's "ImportError: initialization failed")
        if _SIGNALLED:
            _RAISED.clear()
            return _interrupted(args, _SIGNALLED[0])
        if not isinstance(err, EDNNError):
            raise
        print(f"ednn-dask {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        import logging

        from ednn_dask.storage import remove_leftovers

        _RAISED.clear()
        remove_leftovers()  # the job's clusters are closed: nothing writes into them any more
        logging.disable(logging.NOTSET)
        sys.unraisablehook = hook
        warnings.showwarning = show
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
