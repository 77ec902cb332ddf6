# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs bench evaluations models data studies clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[train,reference,notebooks,docs,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ednn-dask demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=25

lint: $(STAMP)
	$(VENV)/bin/ruff check ednn_dask training tests bench notebooks docs

# the documentation site (docs/, mkdocs.yml) into build/site; generated pages come from
# the CLI parser, the models' metadata and bench/results/*.json (docs/generate.py)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) bench/bench_pipeline.py
	$(PY) bench/bench_rasterize.py
	$(PY) bench/bench_sheet.py
	$(PY) bench/bench_mc.py
	$(PY) bench/screened_scales.py
	$(PY) bench/screened_memory.py
	$(PY) bench/thermal_errors.py
	$(PY) bench/registry_noise.py
	$(PY) bench/train_speed.py

# accuracy of the shipped models on data they never saw, as JSON for the docs' findings
# page (docs/generate.py renders bench/results/evaluate-*.json); about 5 min on 2 cores
EVALUATE = $(VENV)/bin/ednn-dask evaluate
evaluations: $(STAMP)
	$(EVALUATE) ising --model models/ising-2d-f1c1.onnx --json-out bench/results/evaluate-ising-2d.json
	$(EVALUATE) ising --model models/ising-3d-f1c1.onnx --L 16 --n 20 --json-out bench/results/evaluate-ising-3d.json
	$(EVALUATE) laplacian --model models/laplacian-f10c2.onnx --json-out bench/results/evaluate-laplacian.json
	$(EVALUATE) atoms --model models/hexagonal-f16c24.onnx --data data/hexagonal.zarr --split test --json-out bench/results/evaluate-hexagonal.json
	$(EVALUATE) atoms --model models/hexagonal-f16c24.onnx --data data/hexagonal-2x2.zarr --json-out bench/results/evaluate-hexagonal-2x2.json
	$(EVALUATE) atoms --model models/hexagonal-f16c24.onnx --data data/hexagonal-3x3.zarr --json-out bench/results/evaluate-hexagonal-3x3.json
	$(EVALUATE) atoms --model models/hexagonal-thermal-f16c24.onnx --data data/hexagonal.zarr data/thermal-hexagonal.zarr data/gaussian-hexagonal.zarr --split test --json-out bench/results/evaluate-hexagonal-thermal.json
	$(EVALUATE) atoms --model models/hexagonal-thermal-f16c24.onnx --data data/thermal-test-hexagonal.zarr --json-out bench/results/evaluate-hexagonal-thermal-md.json
	# runs 75-110 of the grown MD store: 36 runs the shipped thermal model (trained on runs 0-74) never saw
	$(VENV)/bin/ednn-dask data runs runs/held-out/thermal-hexagonal-runs-75-110.zarr --from data/thermal-hexagonal-192.zarr --runs 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94 95 96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 --overwrite
	$(EVALUATE) atoms --model models/hexagonal-thermal-f16c24.onnx --data runs/held-out/thermal-hexagonal-runs-75-110.zarr --json-out bench/results/evaluate-hexagonal-thermal-md36.json
	$(EVALUATE) atoms --model models/hexagonal-thermal-replica-f16c24.onnx --data data/hexagonal-2x2.zarr --json-out bench/results/evaluate-hexagonal-thermal-replica-2x2.json
	$(EVALUATE) atoms --model models/hexagonal-thermal-replica-f16c24.onnx --data data/hexagonal-3x3.zarr --json-out bench/results/evaluate-hexagonal-thermal-replica-3x3.json
	$(EVALUATE) atoms --model models/hexagonal-thermal-replica-f16c24.onnx --data data/gaussian-test-hexagonal-2x2.zarr --json-out bench/results/evaluate-hexagonal-thermal-replica-gaussian-2x2.json
	$(EVALUATE) atoms --model models/hexagonal-thermal-replica-f16c24.onnx --data data/gaussian-test-hexagonal-3x3.zarr --json-out bench/results/evaluate-hexagonal-thermal-replica-gaussian-3x3.json
	$(EVALUATE) atoms --model models/hexagonal-thermal-replica-f16c24.onnx --data data/mc-test-hexagonal-3x3.zarr --json-out bench/results/evaluate-hexagonal-thermal-replica-mc-3x3.json
	$(EVALUATE) atoms --model models/porous-f32c16.onnx --data data/porous.zarr --split test --json-out bench/results/evaluate-porous.json
	$(EVALUATE) atoms --model models/porous-f32c16.onnx --data data/thermal-test-porous.zarr --json-out bench/results/evaluate-porous-md.json
	$(EVALUATE) atoms --model models/porous-thermal-f32c32.onnx --data data/porous.zarr data/thermal-porous.zarr data/relaxed-porous.zarr --split test --json-out bench/results/evaluate-porous-thermal.json
	$(EVALUATE) atoms --model models/porous-thermal-f32c32.onnx --data data/thermal-test-porous.zarr --json-out bench/results/evaluate-porous-thermal-md.json
	$(EVALUATE) screened --model models/screened-multiscale.onnx --json-out bench/results/evaluate-screened.json

# The shipped atomistic models were trained with TRAIN_DEVICE=cuda (one H100: 6 and 4 min);
# on 2 CPU cores the same runs take about 3 h and 40 min.
TRAIN_DEVICE ?= cpu

models: $(STAMP)
	$(VENV)/bin/ednn-dask train ising --out models/ising-2d-f1c1.onnx --overwrite
	$(VENV)/bin/ednn-dask train ising --dim 3 --out models/ising-3d-f1c1.onnx --overwrite
	$(VENV)/bin/ednn-dask train laplacian --out models/laplacian-f10c2.onnx --overwrite
	$(VENV)/bin/ednn-dask train hexagonal --net smooth --context 24 --epochs 450 --device $(TRAIN_DEVICE) --out models/hexagonal-f16c24.onnx --overwrite
	# a hexagonal model with anti-aliased strides, on cold lattices, thermal MD snapshots and Gaussian cells
	# (about 4.4 h on 2 CPU cores at 35 s an epoch, resumable: the same command continues from its workdir)
	$(VENV)/bin/ednn-dask train hexagonal --net smooth-aa --context 24 --epochs 450 --device $(TRAIN_DEVICE) --data data/hexagonal.zarr data/thermal-hexagonal.zarr data/gaussian-hexagonal.zarr --workdir runs/hexagonal-thermal/fit --out models/hexagonal-thermal-f16c24.onnx --overwrite
	# the same net in the 2 x 2-replica convention, for sheets: reference energies shifted per element
	$(VENV)/bin/ednn-dask convention models/hexagonal-thermal-f16c24.onnx --replicas data/replicas-2x2-hexagonal.zarr --out models/hexagonal-thermal-replica-f16c24.onnx --overwrite
	$(VENV)/bin/ednn-dask train porous --epochs 1500 --device $(TRAIN_DEVICE) --out models/porous-f32c16.onnx --overwrite
	# a porous model with a 3.2 A context and anti-aliased strides, on cold cells, porous MD snapshots and relaxation paths (about 2 h on 2 CPU cores)
	$(VENV)/bin/ednn-dask train porous --net compact-aa --context 32 --epochs 500 --device $(TRAIN_DEVICE) --data data/porous.zarr data/thermal-porous.zarr data/relaxed-porous.zarr --out models/porous-thermal-f32c32.onnx --overwrite
	$(VENV)/bin/ednn-dask train screened --kind multiscale --out models/screened-multiscale.onnx --overwrite
	$(VENV)/bin/ednn-dask train screened --kind short --out models/screened-short.onnx --overwrite
	$(VENV)/bin/ednn-dask train screened --kind wide --out models/screened-wide.onnx --overwrite

# GFN1-xTB reference data (resumable: re-running continues where it stopped)
data: $(STAMP)
	$(VENV)/bin/ednn-dask data hexagonal data/hexagonal.zarr
	$(VENV)/bin/ednn-dask data hexagonal data/hexagonal-2x2.zarr --cells 10 6 --n 24 --seed 1
	$(VENV)/bin/ednn-dask data hexagonal data/hexagonal-3x3.zarr --cells 15 9 --n 12 --seed 2 --max-vacancies 0
	$(VENV)/bin/ednn-dask data porous data/porous.zarr
	# Gaussian displacements (sigma up to 0.1 Å): training cells, then held-out 60, 240, 540 atoms
	$(VENV)/bin/ednn-dask data hexagonal data/gaussian-hexagonal.zarr --n 2000 --sigma 0.1 --seed 303
	$(VENV)/bin/ednn-dask data hexagonal data/gaussian-test-hexagonal.zarr --n 200 --sigma 0.1 --seed 300
	$(VENV)/bin/ednn-dask data hexagonal data/gaussian-test-hexagonal-2x2.zarr --n 16 --sigma 0.1 --seed 301 --cells 10 6
	$(VENV)/bin/ednn-dask data hexagonal data/gaussian-test-hexagonal-3x3.zarr --n 8 --sigma 0.1 --seed 302 --cells 15 9 --max-vacancies 0
	# thermal MD: held out (about 50 min on 2 cores), then the training set (2-5 h; the
	# thermal model records its data hash: a grown set needs the fine-tune run again);
	# each store is its own checkpoint, so the same command continues
	$(VENV)/bin/ednn-dask data thermal data/thermal-test-hexagonal.zarr --seed 200 --temperatures 300 1000 --n 8 --workdir runs/thermal-test-hexagonal-md
	# porous MD held out (4 runs of 64-94 atoms, 35 min on 2 cores)
	$(VENV)/bin/ednn-dask data thermal data/thermal-test-porous.zarr --of porous --seed 220 --temperatures 300 1000 --n 4 --workdir runs/thermal-test-porous-md
	# porous MD for training (8 runs of 63-113 atoms at 300-1500 K, about 75 min on 2 cores)
	$(VENV)/bin/ednn-dask data thermal data/thermal-porous.zarr --of porous --n 8 --workdir runs/thermal-porous-md
	# the same plan grown to 12 runs (4 more cells, of 41-92 atoms; about 85 min on 2 cores);
	# its first 8 runs are those of thermal-porous.zarr: train with one of the two
	test -d data/thermal-porous-12.zarr || cp -r data/thermal-porous.zarr data/thermal-porous-12.zarr
	$(VENV)/bin/ednn-dask data thermal data/thermal-porous-12.zarr --of porous --n 12 --workdir runs/thermal-porous-12-md
	# porous relaxation paths of the first 160 of those cells (1,021 frames, about 3.5 h on 2 cores)
	$(VENV)/bin/ednn-dask data relaxed data/relaxed-porous.zarr --of porous --n 160 --workdir runs/relaxed-porous-relax
	# held-out supercells at 1000 K: EDNN-MC snapshots (cold shipped model), GFN1-xTB labels
	$(VENV)/bin/ednn-dask data thermal data/mc-test-hexagonal-2x2.zarr --from-mc models/hexagonal-f16c24.onnx --cells 10 6 --n 4 --temperatures 1000 --seed 210 --steps 9600 --every 2400 --equilibrate-steps 4800 --workdir runs/mc-test-2x2
	$(VENV)/bin/ednn-dask data thermal data/mc-test-hexagonal-3x3.zarr --from-mc models/hexagonal-f16c24.onnx --cells 15 9 --n 2 --max-vacancies 0 --temperatures 1000 --seed 211 --steps 10800 --every 5400 --equilibrate-steps 10800 --workdir runs/mc-test-3x3
	# hexagonal MD for training (75 runs of 60-atom cells at 300-1500 K, 20 snapshots each)
	$(VENV)/bin/ednn-dask data thermal data/thermal-hexagonal.zarr --n 75 --workdir runs/thermal-hexagonal-md
	# the same plan grown to 192 runs (5.5 h on 2 cores for the 117 runs past the 75 of
	# thermal-hexagonal.zarr, which are its first): train with one of the two
	test -d data/thermal-hexagonal-192.zarr || cp -r data/thermal-hexagonal.zarr data/thermal-hexagonal-192.zarr
	$(VENV)/bin/ednn-dask data thermal data/thermal-hexagonal-192.zarr --n 192 --workdir runs/thermal-hexagonal-192-md
	# 120 held-out hexagonal cells (8 per kind x vacancies group) as their 2 x 2 replicas (46 min on 2 cores)
	$(PY) bench/reference_finite_size.py --store data/hexagonal.zarr --per-group 8 --out data/replicas-2x2-hexagonal.zarr --workers 2
	# hexagonal relaxation paths of the first 300 cells of that plan (1,265 frames, about 68 min on 2 cores)
	$(VENV)/bin/ednn-dask data relaxed data/relaxed-hexagonal.zarr --n 300 --workdir runs/relaxed-hexagonal-relax

# The studies behind tables of the benchmarks page, with their local models and stores
# (runs/; about 22 h on 2 cores): a coarse branch grown on the cold hexagonal model and
# its single-scale control; the cold hexagonal model fine-tuned on the thermal model's three
# stores (100 epochs: 48 min) and, on its chains,
# EDNN-MC snapshots with and without a hard core, by closest pair, and a pair term fitted
# beside it; the porous model fine-tuned on 8 MD runs, on
# 32 relaxations, on both, and on both with 48, 96 and 160 relaxations, and the 3.2 Å net
# on 12 MD runs (400 epochs: 40-90 min; 1000 epochs: about 2.4 h), on 10 of them (the two
# cells that reconstruct left out; 400 epochs: 70 min), compact-aa and compact-pf against
# compact (60 epochs: 14, 5.5 and 4.5 min), compact-pf at the shipped recipe's 500 epochs
# (49 min), the shipped porous recipe with the compact
# net (1000 epochs: 88 min), that model fine-tuned on the 12 with a per-atom loss (300
# epochs: 64 min), a coarse branch grown on it with the 8 and the 12 runs (60 epochs: 4
# min each) and a fine-tune of it with rattles, scored beside the shipped porous models;
# the thermal hexagonal fine-tune with the 300 hexagonal relaxations besides its three
# stores (70 min); the shipped thermal model fine-tuned on the grown MD store and, as its
# control, on the 75 runs it was trained on (40 epochs: about 40 min each), both scored on the grown
# store's 36 new runs; smooth-aa, a wider and a deeper net on the MD store alone (60
# epochs: 12, 35 and 22 min) and smooth-aa for 144 epochs (22 min), scored at their last
# and best epochs; smooth-aa and the deeper net on the three stores (30 epochs: 28 and
# 65 min on 2 cores: 56 and 130 s an epoch); the leave-one-out fits of the finite-size
# term to the 120 replicas of make data and the shifted models on the supercells; 24
# porous cells as replicas (about 1.5 h)
E := $(VENV)/bin/ednn-dask
studies: $(STAMP)
	$(E) train hexagonal --init-from models/hexagonal-f16c24.onnx --net smooth --scales 1:16:24,4:4:12 --epochs 40 --data data/hexagonal.zarr --out runs/hex-ms/hexagonal-ms.onnx --workdir runs/hex-ms/fit --overwrite
	$(E) train hexagonal --init-from models/hexagonal-f16c24.onnx --net smooth --context 24 --epochs 40 --data data/hexagonal.zarr --out runs/hex-ss/hexagonal-ss.onnx --workdir runs/hex-ss/fit --overwrite
	$(PY) bench/vacancy_pairs.py --models models/hexagonal-f16c24.onnx runs/hex-ss/hexagonal-ss.onnx runs/hex-ms/hexagonal-ms.onnx
	$(E) train hexagonal --init-from models/hexagonal-f16c24.onnx --net smooth --context 24 --epochs 100 --data data/hexagonal.zarr data/thermal-hexagonal.zarr data/gaussian-hexagonal.zarr --workdir runs/ft-hex/fit --out runs/ft-hex/hexagonal-thermal-ft-f16c24.onnx --overwrite
	$(PY) bench/thermal_errors.py --models runs/ft-hex/hexagonal-thermal-ft-f16c24.onnx --json-out runs/ft-hex/thermal-errors.json
	$(PY) bench/registry_noise.py --models runs/ft-hex/hexagonal-thermal-ft-f16c24.onnx --json-out runs/ft-hex/registry.json --plot runs/ft-hex/registry.png
	$(E) active-learning hexagonal --model runs/ft-hex/hexagonal-thermal-ft-f16c24.onnx --data data/hexagonal.zarr data/thermal-hexagonal.zarr data/gaussian-hexagonal.zarr --workdir runs/al-hex --rounds 2 --chains 16 --epochs 20 --seed 500
	$(E) data thermal runs/mc-core/mc.zarr --from-mc runs/ft-hex/hexagonal-thermal-ft-f16c24.onnx --n 16 --seed 500 --min-distance 1.1
	$(PY) bench/closest_pairs.py --data data/thermal-hexagonal.zarr data/mc-test-hexagonal-2x2.zarr data/mc-test-hexagonal-3x3.zarr runs/al-hex/round-0/mc.zarr runs/mc-core/mc.zarr --model runs/ft-hex/hexagonal-thermal-ft-f16c24.onnx
	$(PY) bench/pair_correction.py --model runs/ft-hex/hexagonal-thermal-ft-f16c24.onnx
	$(E) train porous --init-from models/porous-f32c16.onnx --epochs 400 --data data/porous.zarr data/thermal-porous.zarr --workdir runs/ft-porous --out runs/ft-porous/porous-md-f32c16.onnx --overwrite
	$(E) data relaxed runs/relaxed-porous-32.zarr --of porous --n 32 --workdir runs/relaxed-porous-relax
	$(E) train porous --init-from models/porous-f32c16.onnx --epochs 400 --data data/porous.zarr runs/relaxed-porous-32.zarr --workdir runs/ft-porous-relaxed --out runs/ft-porous-relaxed/porous-relaxed-f32c16.onnx --overwrite
	$(E) train porous --init-from models/porous-f32c16.onnx --epochs 400 --data data/porous.zarr data/thermal-porous.zarr runs/relaxed-porous-32.zarr --workdir runs/ft-porous-both --out runs/ft-porous-both/porous-md-relaxed-f32c16.onnx --overwrite
	$(E) data relaxed runs/relaxed-porous-48.zarr --of porous --n 48 --workdir runs/relaxed-porous-relax
	$(E) train porous --init-from models/porous-f32c16.onnx --epochs 400 --data data/porous.zarr data/thermal-porous.zarr runs/relaxed-porous-48.zarr --workdir runs/ft-porous-both48 --out runs/ft-porous-both48/porous-md-relaxed48-f32c16.onnx --overwrite
	$(E) data relaxed runs/relaxed-porous-96.zarr --of porous --n 96 --workdir runs/relaxed-porous-relax
	$(E) train porous --init-from models/porous-f32c16.onnx --epochs 400 --data data/porous.zarr data/thermal-porous.zarr runs/relaxed-porous-96.zarr --workdir runs/ft-porous-both96 --out runs/ft-porous-both96/porous-md-relaxed96-f32c16.onnx --overwrite
	$(E) train porous --init-from models/porous-f32c16.onnx --epochs 400 --data data/porous.zarr data/thermal-porous.zarr data/relaxed-porous.zarr --workdir runs/ft-porous-both160 --out runs/ft-porous-both160/porous-thermal-f32c16.onnx --overwrite
	$(E) train porous --context 32 --epochs 400 --data data/porous.zarr data/thermal-porous-12.zarr data/relaxed-porous.zarr --workdir runs/porous-c32-md12/fit --out runs/porous-c32-md12/porous-md12-f32c32.onnx --overwrite
	$(E) train porous --context 32 --epochs 1000 --data data/porous.zarr data/thermal-porous-12.zarr data/relaxed-porous.zarr --workdir runs/porous-c32-md12-1000/fit --out runs/porous-c32-md12-1000/porous-md12-1000-f32c32.onnx --overwrite
	$(E) train porous --net compact-aa --context 32 --epochs 60 --data data/porous.zarr data/thermal-porous.zarr data/relaxed-porous.zarr --workdir runs/aa/aa-fit --out runs/aa/porous-aa.onnx --overwrite
	$(E) train porous --net compact --context 32 --epochs 60 --data data/porous.zarr data/thermal-porous.zarr data/relaxed-porous.zarr --workdir runs/aa/plain-fit --out runs/aa/porous-plain.onnx --overwrite
	$(E) train porous --context 32 --epochs 1000 --data data/porous.zarr data/thermal-porous.zarr data/relaxed-porous.zarr --workdir runs/porous-compact-1000/fit --out runs/porous-compact-1000/porous-compact-f32c32.onnx --overwrite
	$(PY) bench/registry_noise.py --models models/porous-thermal-f32c32.onnx runs/porous-compact-1000/porous-compact-f32c32.onnx --json-out runs/porous-compact-1000/registry.json --plot runs/porous-compact-1000/registry.png
	$(E) train porous --net compact-pf --context 32 --epochs 60 --data data/porous.zarr data/thermal-porous.zarr data/relaxed-porous.zarr --workdir runs/aa/pf2-fit --out runs/aa/porous-pf2.onnx --overwrite
	$(PY) bench/registry_noise.py --models runs/aa/porous-aa.onnx runs/aa/porous-pf2.onnx runs/aa/porous-plain.onnx --json-out runs/aa/registry.json --plot runs/aa/registry.png
	$(E) train porous --net compact-pf --context 32 --epochs 500 --data data/porous.zarr data/thermal-porous.zarr data/relaxed-porous.zarr --workdir runs/porous-pf-500/fit --out runs/porous-pf-500/porous-pf-f32c32.onnx --overwrite
	$(PY) bench/registry_noise.py --models runs/porous-pf-500/porous-pf-f32c32.onnx --json-out runs/porous-pf-500/registry.json --plot runs/porous-pf-500/registry.png
	$(E) data runs runs/thermal-porous-10.zarr --from data/thermal-porous-12.zarr --runs 0 1 2 3 4 5 6 7 10 11 --overwrite
	$(E) train porous --context 32 --epochs 400 --data data/porous.zarr runs/thermal-porous-10.zarr data/relaxed-porous.zarr --workdir runs/porous-c32-md10/fit --out runs/porous-c32-md10/porous-md10-f32c32.onnx --overwrite
	$(E) train porous --context 32 --init-from runs/porous-compact-1000/porous-compact-f32c32.onnx --loss per-atom --epochs 300 --data data/porous.zarr data/thermal-porous-12.zarr data/relaxed-porous.zarr --workdir runs/porous-md12-ft/fit --out runs/porous-md12-ft/porous-md12-ft-f32c32.onnx --overwrite
	$(E) train porous --scales 1:32:32,4:8:16 --init-from runs/porous-compact-1000/porous-compact-f32c32.onnx --epochs 60 --data data/porous.zarr data/thermal-porous.zarr data/relaxed-porous.zarr --workdir runs/porous-ms/fit --out runs/porous-ms/porous-ms.onnx --overwrite
	$(E) train porous --scales 1:32:32,4:8:16 --init-from runs/porous-compact-1000/porous-compact-f32c32.onnx --epochs 60 --data data/porous.zarr data/thermal-porous-12.zarr data/relaxed-porous.zarr --workdir runs/porous-ms12/fit --out runs/porous-ms12/porous-ms12.onnx --overwrite
	$(E) data rattles runs/rattles/rattles-porous-12.zarr --from data/thermal-porous-12.zarr --n 50 --seed 400
	$(E) train porous --context 32 --init-from runs/porous-compact-1000/porous-compact-f32c32.onnx --epochs 80 --data data/porous.zarr data/thermal-porous-12.zarr data/relaxed-porous.zarr runs/rattles/rattles-porous-12.zarr --workdir runs/porous-rattles/fit --out runs/porous-rattles/porous-rattles-f32c32.onnx --overwrite
	$(PY) bench/porous_relaxations.py
	$(E) train hexagonal --init-from models/hexagonal-f16c24.onnx --net smooth --context 24 --epochs 100 --data data/hexagonal.zarr data/thermal-hexagonal.zarr data/gaussian-hexagonal.zarr data/relaxed-hexagonal.zarr --workdir runs/ft-hex-relaxed/fit --out runs/ft-hex-relaxed/hexagonal-thermal-relaxed.onnx --overwrite
	$(PY) bench/thermal_errors.py --models runs/ft-hex-relaxed/hexagonal-thermal-relaxed.onnx --json-out runs/ft-hex-relaxed/thermal-errors.json
	$(E) train hexagonal --init-from models/hexagonal-thermal-f16c24.onnx --net smooth-aa --context 24 --epochs 40 --data data/hexagonal.zarr data/thermal-hexagonal-192.zarr data/gaussian-hexagonal.zarr --workdir runs/ft192/b192/fit --out runs/ft192/b192.onnx --overwrite
	$(E) train hexagonal --init-from models/hexagonal-thermal-f16c24.onnx --net smooth-aa --context 24 --epochs 40 --data data/hexagonal.zarr data/thermal-hexagonal.zarr data/gaussian-hexagonal.zarr --workdir runs/ft192/a75/fit --out runs/ft192/a75.onnx --overwrite
	$(PY) bench/thermal_errors.py --models runs/ft192/a75.onnx runs/ft192/b192.onnx --json-out runs/ft192/thermal-errors.json
	$(E) data runs runs/ft192/new36.zarr --from data/thermal-hexagonal-192.zarr --runs 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94 95 96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 --overwrite
	$(EVALUATE) atoms --model models/hexagonal-thermal-f16c24.onnx --data runs/ft192/new36.zarr --json-out runs/ft192/new36-shipped.json
	$(EVALUATE) atoms --model runs/ft192/a75.onnx --data runs/ft192/new36.zarr --json-out runs/ft192/new36-a75.json
	$(E) train hexagonal --net smooth-aa --context 24 --epochs 60 --threads 2 --data data/thermal-hexagonal.zarr --workdir runs/capacity/smooth-aa/fit --out runs/capacity/smooth-aa.onnx --overwrite
	$(E) train hexagonal --net smooth-aa-deep --context 24 --epochs 60 --threads 2 --data data/thermal-hexagonal.zarr --workdir runs/capacity/smooth-aa-deep/fit --out runs/capacity/smooth-aa-deep.onnx --overwrite
	$(E) train hexagonal --net smooth-aa-wide --context 24 --epochs 60 --threads 2 --data data/thermal-hexagonal.zarr --workdir runs/capacity/smooth-aa-wide/fit --out runs/capacity/smooth-aa-wide.onnx --overwrite
	$(E) train hexagonal --net smooth-aa --context 24 --epochs 144 --threads 2 --data data/thermal-hexagonal.zarr --workdir runs/capacity/smooth-aa-144/fit --out runs/capacity/smooth-aa-144.onnx --overwrite
	$(PY) bench/fit_errors.py --run smooth-aa:runs/capacity/smooth-aa-144/fit smooth-aa:runs/capacity/smooth-aa/fit smooth-aa-deep:runs/capacity/smooth-aa-deep/fit smooth-aa-wide:runs/capacity/smooth-aa-wide/fit --data data/thermal-hexagonal.zarr --context 24 --held-out data/thermal-test-hexagonal.zarr runs/held-out/thermal-hexagonal-runs-75-110.zarr --json-out runs/capacity/fit-errors.json
	# depth on the shipped model's three stores at equal epochs (30, seed 0)
	$(E) train hexagonal --net smooth-aa --context 24 --epochs 30 --threads 2 --seed 0 --data data/hexagonal.zarr data/thermal-hexagonal.zarr data/gaussian-hexagonal.zarr --workdir runs/depth/aa30 --out runs/depth/aa30.onnx --overwrite
	$(E) train hexagonal --net smooth-aa-deep --context 24 --epochs 30 --threads 2 --seed 0 --data data/hexagonal.zarr data/thermal-hexagonal.zarr data/gaussian-hexagonal.zarr --workdir runs/depth/deep30 --out runs/depth/deep30.onnx --overwrite
	$(PY) bench/fit_errors.py --run smooth-aa:runs/depth/aa30 smooth-aa-deep:runs/depth/deep30 --data data/hexagonal.zarr data/thermal-hexagonal.zarr data/gaussian-hexagonal.zarr --context 24 --held-out data/thermal-test-hexagonal.zarr runs/held-out/thermal-hexagonal-runs-75-110.zarr --json-out runs/depth/fit-errors.json
	# the finite-size term: what a local model could learn of it beyond the composition
	# shift, and what the shift buys on the supercells
	$(PY) bench/convention_locality.py --replicas data/replicas-2x2-hexagonal.zarr
	$(PY) bench/convention_transfer.py --replicas data/replicas-2x2-hexagonal.zarr
	# the same term in porous cells (24 held-out cells as 2 x 2 replicas, about 1.5 h)
	$(PY) bench/reference_finite_size.py --store data/porous.zarr --per-group 24 --out runs/replicas-porous-2x2.zarr --workers 2

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
