"""Write the notebooks from the cells below: `python notebooks/build.py`.

The notebooks are committed without outputs; `tests/test_notebooks.py` runs them
on a real Jupyter kernel. Edit the cells here, not the .ipynb files.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

QUICKSTART = [
    ("md", """# 01 · Ising quickstart: train an EDNN, export it, score a large lattice on Dask

The EDNN of Mills et al. (Chem. Sci. 2019) cuts a grid into *focus* blocks, pads each with a
*context* halo, scores every tile with one shared network and sums the scores. For the Ising
model, focus 1 and context 1 is exact: the energy is a sum over nearest-neighbour bonds.

We sample small periodic lattices, train the paper's tile net in PyTorch, export it to ONNX,
and score a lattice far larger than anything it was trained on, on a Dask cluster."""),
    ("code", """# Parameters: the defaults run in about a minute on a laptop.
N_TRAIN = 2000      # 8x8 training lattices
EPOCHS = 100        # full-batch Adam epochs on the distinct tiles
LBFGS_STEPS = 1000  # then full-batch L-BFGS steps, as the shipped recipe does
BIG = 1024          # side of the lattice we score at the end"""),
    ("code", """import logging
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from distributed import Client, LocalCluster
from IPython.display import Markdown

from ednn_dask import TileModel, make_field, save_field, score
from training.config import TrainConfig
from training.ednn import EDNN
from training.export import export_onnx
from training.ising import sample_ising
from training.nets import IsingMLP
from training.train import fit

# the ONNX exporter notes each torchvision op it cannot find; this net uses none
logging.getLogger("torch.onnx").setLevel(logging.ERROR)
ROOT = Path.cwd() if (Path.cwd() / "models").exists() else Path.cwd().parent
tmp = tempfile.TemporaryDirectory(prefix="ednn-quickstart-")   # removed in the last cell
work = Path(tmp.name)
cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
client = Client(cluster)
print("dashboard:", client.dashboard_link)"""),
    ("md", """## Data: Metropolis + Wolff samples with exact energies"""),
    ("code", """ds = sample_ising(N_TRAIN, 8, temperatures=(0.5, 6.0), seed=0,
                          progress=False)
spins, energy = ds["spins"].values.astype(np.float32)[:, None], ds["energy"].values
print(ds)
fig, axes = plt.subplots(1, 4, figsize=(8, 2))
for ax, k in zip(axes, np.linspace(0, N_TRAIN - 1, 4).astype(int)):
    ax.imshow(spins[k, 0], cmap="gray")
    ax.set_axis_off()
    ax.set_title(f"T={float(ds['temperature'][k]):.1f}, E={energy[k]:.0f}")"""),
    ("md", """## Train: one shared tile net, the loss on the summed energy

`IsingMLP` is the paper's fully connected tile net (tile 3×3 → 64 → 64 → 1). With
`unique_tiles` the loop trains full-batch on the distinct tiles of the data set, which gives
exactly the EDNN sums. Adam gets close; L-BFGS on the same full batch then reaches the
precision Adam's noise cannot. These are the settings of the shipped recipe
(`train_ising` in `training/recipes.py`) with less data and fewer steps."""),
    ("code", """torch.manual_seed(0)   # the initial weights: the same run trains the same model
ednn = EDNN(IsingMLP((3, 3)), focus=1, context=1, boundary="periodic", ndim=2,
            dense=True)
config = TrainConfig(epochs=EPOCHS, lr=3e-3, lr_final=1e-5, unique_tiles=True, patience=EPOCHS,
                     lbfgs_steps=LBFGS_STEPS, checkpoint_every=100)
metrics = fit(ednn, spins, energy, config, work / "run", progress=False)
print({k: round(v, 6) for k, v in metrics["test"].items() if isinstance(v, float)})"""),
    ("md", """## How good is it?

The test set is the tenth of the lattices the training never saw. The shipped model
(`models/ising-2d-f1c1.onnx`, trained by `ednn-dask train ising` on 10,000 lattices with
more steps) is the yardstick."""),
    ("code", """test_error = metrics["test"]["mae_per_site"]
shipped = TileModel.load(ROOT / "models" / "ising-2d-f1c1.onnx")
shipped_error = shipped.spec.provenance["metrics"]["mae_per_site"]
Markdown(f"**This model's test error: {test_error:.1e} J per spin** (mean absolute error of "
         f"the energy of {metrics['test']['n']} held-out 8×8 lattices, per spin; the energy "
         f"itself is of order 1 J per spin). The shipped model's: {shipped_error:.1e} J per "
         f"spin, {test_error / shipped_error:.1f}× lower.")"""),
    ("code", """from IPython.display import Image

Image(str(work / "run" / "parity.png"), width=360)"""),
    ("md", """## Export to ONNX, with its metadata

The file carries focus, context, boundary, units and provenance in `metadata_props`; one
graph scores a single tile or a whole chunk (dense, dynamic spatial axes). The exporter checks
onnxruntime against torch before it renames the file into place."""),
    ("code", """model = export_onnx(ednn, work / "ising.onnx", target="energy", target_unit="J",
                    dims=("y", "x"), provenance={"notebook": "01"})
model.spec"""),
    ("md", """## Score a large lattice on the cluster

The field is stored as Zarr; each dask task reads one focus-aligned chunk plus its context
halo (`map_overlap`), runs onnxruntime, and a tree reduction sums the energies."""),
    ("code", """rng = np.random.default_rng(1)
big = np.where(rng.random((BIG, BIG)) < 0.8, 1, -1).astype(np.int8)   # a magnetised lattice
store = save_field(make_field(big, name="spins"), work / "big.zarr",
                   chunks={"y": BIG // 4, "x": BIG // 4})
result = score(store, model, client=client, chunks=BIG // 4, progress=True)
exact = -np.sum(big * np.roll(big, 1, 0)) - np.sum(big * np.roll(big, 1, 1))
error = abs(result.energy - exact) / big.size
print(f"EDNN {result.energy:.1f} J, exact {exact:.1f} J, "
      f"error {error:.2e} J per spin, {result.n_tiles:,} tiles")
Markdown(f"**On the {BIG}×{BIG} lattice the EDNN energy is off by "
         f"{abs(result.energy - exact) / abs(exact):.3%} of the exact energy** "
         f"({error:.1e} J per spin), for a model trained on 8×8 lattices only.")"""),
    ("code", """result.contributions[:128, :128].plot(cmap="RdBu_r", figsize=(5, 4))
plt.title("contribution of each spin (J), top-left corner");"""),
    ("code", """client.close()
cluster.close()
tmp.cleanup()   # the model, the runs and the Zarr store"""),
]

GRAPHENE = [
    ("md", """# 02 · Porous graphene from 100 atoms to a micron

The shipped porous-graphene model was trained on periodic cells of about 100 atoms with
GFN1-xTB reference energies. Atoms become a field by eq. (2) of the paper (Gaussians of width
γ = 0.2 Å, one channel per element), the EDNN scores the field, and the per-element reference
energies recorded in the model are added back: a total energy in eV.

The sheet size is one number: `SIDE_A = 1e4` is 1 µm² (~35 M atoms; minutes on two cores)."""),
    ("code", """# Parameters: the sheet side is the one number to change.
SIDE_A = 200.0          # sheet side in Å; 1e4 for 1 µm^2
POROSITY = 0.1
SCALING_SIDES = [100.0, 200.0, 400.0]   # sheets timed for the scaling plot"""),
    ("code", """import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
from distributed import Client, LocalCluster

from ednn_dask import PorousSheet, TileModel, open_field, rasterize, save_field, score
from ednn_dask.atoms.sheet import plot_density
from ednn_dask.atoms.stream import score_atoms

ROOT = Path.cwd() if (Path.cwd() / "models").exists() else Path.cwd().parent
model = TileModel.load(ROOT / "models" / "porous-f32c16.onnx")
spec = model.spec
print(spec.spacing, spec.raster, spec.reference_energies)
tmp = tempfile.TemporaryDirectory(prefix="ednn-graphene-")   # removed in the last cell
work = Path(tmp.name)
cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
client = Client(cluster)
print("dashboard:", client.dashboard_link)"""),
    ("md", """## A sheet, generated region by region

`PorousSheet` draws pores and thermal displacements per block of the lattice from
`(seed, block)`, so any window of the sheet is generated without the rest of it."""),
    ("code", """sheet = PorousSheet.square(SIDE_A, porosity=POROSITY, seed=0)
print(sheet.cells, "rectangular cells,", sheet.size.round(1), "Å")"""),
    ("md", """## Rasterize into a Zarr-backed xarray field and look at it"""),
    ("code", """raster = spec.raster
field = rasterize(sheet, spec.spacing, gamma=raster["gamma"], cutoff=raster["cutoff"],
                  species=raster["species"], chunks=1024)
store = save_field(field, work / "sheet.zarr")            # chunk by chunk, renamed when complete
field = open_field(store)
field"""),
    ("code", """zoom = field.isel(channel=0, y=slice(0, 400), x=slice(0, 400))
zoom.plot(cmap="viridis", figsize=(5, 4))
plt.title("carbon channel, a 40 Å corner");"""),
    ("md", """## Score it on the cluster, two ways

`score` reads the stored field chunk by chunk with its halo (`map_overlap`). `score_atoms`
never builds the field at all: each task generates the atoms of its window plus the halo,
rasterizes and scores them. Same numbers."""),
    ("code", """from ednn_dask.atoms.references import reference_sum

from_field = score(field, model, client=client, progress=True)
total_from_field = from_field.energy + reference_sum(sheet.structure().species_counts(),
                                                     spec.reference_energies)
streamed = score_atoms(sheet, model, client=client, progress=True)
print(f"from the stored field: {total_from_field:.6f} eV")
print(f"streamed from atoms:   {streamed.energy:.6f} eV  ({streamed.n_atoms:,} atoms, "
      f"{streamed.energy / streamed.n_atoms:.4f} eV/atom)")"""),
    ("code", """from IPython.display import Image

plot_density(streamed.density, work / "density.png", title=f"{streamed.n_atoms:,} atoms")
Image(str(work / "density.png"), width=420)"""),
    ("md", """## Scaling: time grows with the number of atoms"""),
    ("code", """atoms, seconds = [], []
for side in SCALING_SIDES:
    s = PorousSheet.square(side, porosity=POROSITY, seed=1)
    t = time.perf_counter()
    r = score_atoms(s, model, client=client)
    seconds.append(time.perf_counter() - t)
    atoms.append(r.n_atoms)
plt.figure(figsize=(4.5, 3.5))
plt.loglog(atoms, seconds, "o-")
plt.xlabel("atoms")
plt.ylabel("seconds, atoms → energy")
plt.title("2 workers");"""),
    ("code", """client.close()
cluster.close()
tmp.cleanup()   # the stored sheet and the density plot"""),
]

EXCHANGE = [
    ("md", """# 03 · Model exchange: what is inside our ONNX files, and bringing your own

An ednn tile model is a plain ONNX graph plus JSON metadata under the `ednn.` namespace in
`metadata_props`. Anything that runs ONNX can use it; ednn-dask needs only the metadata to
tile, scale and check fields for it."""),
    ("code", """import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path.cwd() if (Path.cwd() / "models").exists() else Path.cwd().parent
path = ROOT / "models" / "ising-2d-f1c1.onnx"
session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
for key, value in sorted(meta.items()):
    print(f"{key:28s} {value[:90]}")"""),
    ("md", """## Plain onnxruntime, tile by tile, without ednn-dask

Pad periodically by the context, cut one tile per focus block, apply the input and output
scaling the metadata states, sum."""),
    ("code", """from ednn_dask import score

focus = json.loads(meta["ednn.focus"])
context = json.loads(meta["ednn.context"])
scale = {k: json.loads(meta[f"ednn.{k}"]) for k in
         ("input_offset", "input_scale", "output_offset", "output_scale")}
rng = np.random.default_rng(0)
spins = rng.choice(np.array([-1.0, 1.0], np.float32), size=(16, 16))
c, f = context[0], focus[0]
padded = np.pad(spins, c, mode="wrap")
tiles = np.stack([padded[i:i + f + 2 * c, j:j + f + 2 * c]
                  for i in range(0, 16, f) for j in range(0, 16, f)])[:, None]
tiles = ((tiles - scale["input_offset"]) * scale["input_scale"]).astype(np.float32)
name = session.get_inputs()[0].name
raw = session.run(None, {name: tiles})[0].reshape(-1)
by_hand = float(np.sum(raw * scale["output_scale"] + scale["output_offset"], dtype=np.float64))
exact = -np.sum(spins * np.roll(spins, 1, 0)) - np.sum(spins * np.roll(spins, 1, 1))
print(f"by hand {by_hand:.4f}   ednn-dask {score(spins, path).energy:.4f}   exact {exact}")"""),
    ("md", """## Bringing a tile model made elsewhere

Here a hand-written PyTorch tile net (exact Ising bonds from 3×3 tiles) is exported with plain
`torch.onnx.export`, without any ednn metadata. `write_metadata` adds it; from then on it is
an ordinary ednn model: a tile-only one, so the pipeline scores it tile by tile."""),
    ("code", """import torch

from ednn_dask import ModelSpec, TileModel
from ednn_dask.model import write_metadata


class IsingBonds(torch.nn.Module):
    \"\"\"-s(centre) * (s(right) + s(down)) for a batch of 3x3 tiles.\"\"\"
    def forward(self, x):
        centre = x[:, :, 1, 1]
        return (-centre * (x[:, :, 1, 2] + x[:, :, 2, 1])).reshape(-1, 1)

tmp = tempfile.TemporaryDirectory(prefix="ednn-exchange-")   # removed in the last cell
work = Path(tmp.name)
foreign = work / "foreign.onnx"
torch.onnx.export(IsingBonds(), (torch.zeros(2, 1, 3, 3),), str(foreign),
                  input_names=["tile"], output_names=["energy"],
                  dynamic_shapes=({0: torch.export.Dim("n")},))   # any number of tiles
spec = ModelSpec(kind="tile", focus=(1, 1), context=(1, 1), boundary="periodic", channels=1,
                 target="energy", target_unit="J", dims=("y", "x"),
                 provenance={"source": "hand-written torch module"})
write_metadata(foreign, spec)
imported = TileModel.load(foreign)
print(imported, "->", score(spins, imported).energy, "J; exact", exact)"""),
    ("md", """## What a mismatch looks like

Atomistic models record their pixel spacing. A field rasterized at another spacing would give a
silently wrong energy, so it is refused, with both values and the fix."""),
    ("code", """from ednn_dask import make_field
from ednn_dask.errors import EDNNError

porous = TileModel.load(ROOT / "models" / "porous-f32c16.onnx")
coarse = make_field(np.zeros((1, 256, 256), np.float32), spacing=(0.2, 0.2))
try:
    score(coarse, porous)
except EDNNError as err:
    print(type(err).__name__ + ":", err)"""),
    ("md", """## A multi-scale model, with plain onnxruntime

A multi-scale model is still one file: one input and one output per branch, listed in
`ednn.scales`. Each branch sees the field coarsened by its factor (the block mean), padded
by its own context; the prediction is the sum of every branch's scaled outputs."""),
    ("code", """from ednn_dask import load_model

path = ROOT / "models" / "screened-multiscale.onnx"
spec = load_model(path).spec
print([(s.factor, s.focus, s.context, s.input, s.output) for s in spec.scales])
lattice = np.random.default_rng(1).choice(np.float32([-1, 0, 1]), p=[0.1, 0.8, 0.1],
                                            size=(256, 256))
x = (lattice - spec.input_offset) * spec.input_scale
session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
feeds = {}
for s in spec.scales:
    fy, fx = s.factor
    coarse = x.reshape(256 // fy, fy, 256 // fx, fx).mean(axis=(1, 3))
    feeds[s.input] = np.pad(coarse, [(c, c) for c in s.context],
                            mode="wrap")[None, None].astype(np.float32)
outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
plain = sum(float((outputs[s.output] * s.output_scale + s.output_offset).sum())
            for s in spec.scales)
print(f"plain onnxruntime {plain:.3f} J, ednn-dask {score(lattice, path).energy:.3f} J")"""),
    ("code", """tmp.cleanup()   # the exported model"""),
]


MONTE_CARLO = [
    ("md", """# 04 · Monte Carlo with an EDNN: the Ising transition and thermal graphene

An EDNN is a sum of local terms, so a Monte Carlo move that changes the field in a small
box only changes the focus blocks that see it. `ednn_dask.mc` rescores exactly those.

1. **The Ising transition.** We sample the shipped 2-D Ising EDNN near T_c and locate the
   critical temperature from the crossing of the Binder cumulants U_L of two lattice
   sides, then compare it with Onsager's exact value. Single spin flips slow down
   critically near T_c, so we use Wolff cluster proposals, built from the exact Ising
   bonds and corrected to the EDNN energy by a Metropolis-Hastings step. The chain
   samples the EDNN's Boltzmann distribution exactly.
2. **Thermal graphene.** We run single-atom Monte Carlo of the 60-atom graphene cell at
   1000 K with the shipped thermal hexagonal model (the paper's Fig. 13; the cold
   `hexagonal-f16c24` was never trained on warm lattices) and look at its in-plane
   g(r). Where the repository has its GFN1-xTB molecular dynamics reference, we
   overlay that g(r) too."""),
    ("code", """# Parameters: the defaults run in a few minutes on two cores.
SIZES = [16, 32]      # lattice sides for the Binder crossing
STEPS = 20000         # cluster steps per side
T0 = 2.269            # sampled temperature; reweighting covers its neighbourhood
MOVES = 20000         # graphene Monte Carlo moves (measured)"""),
    ("code", """import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from IPython.display import Markdown

from ednn_dask.atoms import hexagonal_sheet
from ednn_dask.mc import InPlaneRDF, run_atoms
from ednn_dask.mc.binder import Reweighting, crossing_with_error, load_samples, run_chain

ROOT = Path.cwd() if (Path.cwd() / "models").exists() else Path.cwd().parent
ONSAGER = 2 / np.log(1 + np.sqrt(2))
tmp = tempfile.TemporaryDirectory(prefix="ednn-mc-")   # removed in the last cell
work = Path(tmp.name)"""),
    ("md", """## 1 · Binder-cumulant crossing

Each side gets one chain at T0. The chain's folder holds its samples and its whole state,
so calling `run_chain` again with more steps continues the same chain."""),
    ("code", """model = ROOT / "models" / "ising-2d-f1c1.onnx"
sides = {}
for L in SIZES:
    run_chain(model, L, T0, STEPS, work / f"L{L}", seed=0)
    samples = load_samples(work / f"L{L}")
    row = samples.summary()
    print(f"L = {L}: {row['steps']} cluster steps, {row['steps_per_second']:.0f}/s, "
          f"correction acceptance {row['acceptance']:.3f}")
    sides[L] = Reweighting([samples])"""),
    ("code", """t = np.linspace(T0 - 0.06, T0 + 0.06, 61)
fig, (ax_m, ax_u) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
for L, rw in sides.items():
    moments = rw.moments(t)
    ax_m.plot(t, moments["abs_magnetization"], label=f"L = {L}")
    ax_u.plot(t, moments["binder"], label=f"L = {L}")
small, large = SIZES[0], SIZES[-1]
cross = crossing_with_error(sides[small], sides[large])
for ax in (ax_m, ax_u):
    ax.axvline(ONSAGER, color="k", lw=0.8, ls=":", label="Onsager")
ax_u.axvline(cross["tc"], color="C3", lw=0.8, label="crossing")
ax_m.set(xlabel="T (J/k_B)", ylabel="<|m|>")
ax_u.set(xlabel="T (J/k_B)", ylabel="Binder cumulant U_L")
ax_u.legend()
deviation = cross["tc"] / ONSAGER - 1
Markdown(f"Binder crossing of L = {small} and {large}: T_c = {cross['tc']:.4f} "
         f"± {cross['tc_error']:.4f} J/k_B, {100 * deviation:+.2f}% from Onsager's "
         f"{ONSAGER:.5f}.")"""),
    ("md", """## 2 · Thermal graphene at 1000 K

`run_atoms` writes its frames to a Zarr store as it goes, together with the chain's state.
Running the same call again continues the chain (bit for bit), and other settings on the
same store are refused."""),
    ("code", """cell = hexagonal_sheet(np.random.default_rng(0), "graphene")   # 60 atoms, pristine
run = run_atoms(cell, ROOT / "models" / "hexagonal-thermal-f16c24.onnx", 1000.0, MOVES, every=20,
                equilibrate=MOVES // 5, seed=0, out=work / "graphene.zarr", progress=False)
traj = xr.open_zarr(work / "graphene.zarr", consolidated=False)
print(traj)
s = run.summary()
print(f"<E>/atom = {s['energy_per_atom_mean']:.4f} eV, acceptance {s['acceptance']:.2f}, "
      f"step {s['step_A']:.3f} Å, {s['moves_per_second']:.0f} moves/s")"""),
    ("code", """fig, (ax_e, ax_g) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
ax_e.plot(traj["move"], traj["energy"] / len(cell), lw=0.7)
ax_e.set(xlabel="measured move", ylabel="energy per atom (eV)")
ax_g.plot(traj["r"], traj["g_r"], label="EDNN Monte Carlo")
md_store = ROOT / "data" / "md-graphene-1000K.zarr"
if md_store.exists():   # the GFN1-xTB reference of bench/md_reference.py
    md = xr.open_zarr(md_store, consolidated=False)
    md = md.isel(frame=slice(0, int(md.attrs["frames"]))).load()
    md = md.sel(frame=md["step"] >= md.attrs["equilibrate_steps"])
    rdf = InPlaneRDF(np.diag(md["cell"].values)[:2], md.sizes["atom"], bins=traj.sizes["r"])
    for xyz in md["positions"].values:
        rdf.add(xyz[:, :2])
    ax_g.plot(rdf.r, rdf.g(), "--", label="GFN1-xTB MD")
ax_g.set(xlabel="r (Å)", ylabel="in-plane g(r)")
ax_g.legend();"""),
    ("code", """tmp.cleanup()   # the chains and the trajectory"""),
]


YOUR_OWN_DATA = [
    ("md", """# 05 · Your own data: from numpy arrays to a scored large Zarr field

Any set of fields with an extensive label (an energy, a mass, a pore volume) trains an EDNN
with `training.train_fields` (`ednn-dask train fields` on the command line). Here the
fields are smooth random 2-D fields φ and the label is their Ginzburg-Landau φ⁴ energy, a sum
of local terms that reach one pixel:

E = Σ (φ² − 1)² / 4 + ((φ[x+1] − φ)² + (φ[y+1] − φ)²) / 2.

We build the data set with xarray, save it in the documented format
(`docs/guide/your-own-data.md`), train, and score a field far larger than the training
fields, stored as Zarr, on a Dask cluster."""),
    ("code", """# Parameters: the defaults run in about a minute on two cores.
N_FIELDS = 1000     # 32x32 training fields
EPOCHS = 20         # Adam epochs (the command line's default is 150)
LBFGS_STEPS = 150   # then full-batch L-BFGS steps
BIG = 1024          # side of the field we score at the end
ROCK = 256          # side of the 3-D rock volume"""),
    ("code", """import tempfile
from pathlib import Path

import numpy as np
import xarray as xr
from distributed import Client, LocalCluster
from IPython.display import Image, Markdown

from ednn_dask import TileModel, make_field, save_field, score
from training import keep_freed_memory, open_field_data, save_dataset, train_fields
from training.laplacian import laplacian_images

keep_freed_memory()   # faster CPU training (the CLI does this too)
tmp = tempfile.TemporaryDirectory(prefix="ednn-own-data-")   # removed in the last cell
work = Path(tmp.name)
cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
client = Client(cluster)


def ginzburg_landau(phi):
    \"\"\"The exact energy of each field (periodic forward differences), float64.\"\"\"
    p = np.asarray(phi, np.float64)
    gx, gy = np.roll(p, -1, -1) - p, np.roll(p, -1, -2) - p
    return ((p * p - 1) ** 2 / 4 + (gx * gx + gy * gy) / 2).sum(axis=(-2, -1))"""),
    ("md", """## The data set: numpy arrays into the documented format

A field variable of dims `("sample", "y", "x")` with coordinates in physical units (they
give the pixel spacing, which goes into the model), and a target of dims `("sample",)` with
a `units` attr. `open_field_data` checks the rules (`training.field_dataset` builds the same
from arrays)."""),
    ("code", """phi = laplacian_images(N_FIELDS, 32, seed=0, correlation_length=(2.0, 4.0))
spacing = 0.5   # nm per pixel
coords = {d: (d, (np.arange(32) + 0.5) * spacing, {"units": "nm"}) for d in ("y", "x")}
ds = xr.Dataset({"phi": (("sample", "y", "x"), phi),
                 "energy": ("sample", ginzburg_landau(phi), {"units": "eV"})}, coords=coords)
save_dataset(ds.chunk({"sample": 500}), work / "fields.zarr")
ds_checked, spec = open_field_data(work / "fields.zarr", "phi", "energy")
print(spec)"""),
    ("md", """## Train, export

`train_fields` holds out a tenth of the samples for validation and a tenth for testing,
trains the default net (a translation-invariant local density, context 1), keeps the best
epoch, polishes with L-BFGS and exports an ONNX model whose metadata records the spacing,
the dims, the target and its unit, and the test metrics."""),
    ("code", """metrics = train_fields(work / "fields.zarr", work / "model.onnx", field="phi",
                       target="energy", focus=4, context=1, epochs=EPOCHS,
                       lbfgs_steps=LBFGS_STEPS, workdir=work / "run", progress=False)
model = TileModel.load(work / "model.onnx")
print(model.spec.dims, model.spec.spacing, model.spec.spacing_unit, model.spec.target_unit)
print(f"test: relative MAE {metrics['test']['relative_mae']:.2%} on "
      f"{metrics['test']['n']} held-out fields")
Image(str(work / "run" / "parity.png"), width=360)"""),
    ("md", """## Score a large Zarr field on the cluster

The field is written chunk by chunk to Zarr with its coordinates; `score` checks its spacing
against the model's, reads each chunk with its context halo and sums."""),
    ("code", """big = laplacian_images(1, BIG, seed=1, correlation_length=(2.0, 4.0))[0]
store = save_field(make_field(big, spacing=spacing, spacing_unit="nm", name="phi"),
                   work / "big.zarr", chunks={"y": BIG // 2, "x": BIG // 2})
result = score(store, model, client=client)
exact = float(ginzburg_landau(big))
Markdown(f"**{BIG}×{BIG} field: EDNN {result.energy:,.1f} eV, exact {exact:,.1f} eV, off by "
         f"{abs(result.energy - exact) / abs(exact):.2%}**, for a model trained on 32×32 "
         f"fields only.")"""),
    ("code", """result.contributions[:64, :64].plot(cmap="magma", figsize=(5, 4));"""),
    ("md", """## The same in 3-D: a digital rock

Volumes take the same path: a field with dims `("z", "y", "x")`, a model with three
spatial axes. Here a periodic rock (pore 1, solid 0) is generated chunk by chunk into
Zarr, with its exact Euler characteristic counted from the store, and scored with the
shipped rock model (`docs/guide/rock.md`; `ednn-dask train rock` trains it). Large
volumes are read twice, once for the halos the chunks lend and once to score them, so
memory does not grow with the volume. The contribution map is an xarray volume; the
picture shows three slices through its centre."""),
    ("code", """from ednn_dask.maps import plot_contributions
from training.rock import FIELD, exact_of, write_rock_volume

ROOT = Path.cwd() if (Path.cwd() / "models").exists() else Path.cwd().parent
rock = write_rock_volume(work / "rock.zarr", ROCK, chunks=ROCK // 2, client=client,
                         progress=False)
euler = score(work / "rock.zarr", TileModel.load(ROOT / "models" / "rock-euler.onnx"),
              variable=FIELD, client=client)
print(f"{ROCK}^3 rock: EDNN Euler characteristic {euler.energy:.6f}, "
      f"exact {exact_of(work / 'rock.zarr')['euler']:.0f}")
plot_contributions(euler.contributions, work / "euler.png", title="Euler characteristic")
Image(str(work / "euler.png"), width=720)"""),
    ("code", """client.close()
cluster.close()
tmp.cleanup()   # the data sets, the run, the model and the Zarr fields"""),
]


def build(cells, path: Path) -> None:
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                for kind, src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


if __name__ == "__main__":
    build(QUICKSTART, HERE / "01-ising-quickstart.ipynb")
    build(GRAPHENE, HERE / "02-graphene-micron.ipynb")
    build(EXCHANGE, HERE / "03-model-exchange.ipynb")
    build(MONTE_CARLO, HERE / "04-monte-carlo.ipynb")
    build(YOUR_OWN_DATA, HERE / "05-your-own-data.ipynb")
