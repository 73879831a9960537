# Benchmark targets (merge these into the project's Makefile; setup/test/demo live on main).
PY ?= .venv/bin/python
BENCH = PYTHONPATH=src $(PY)

.PHONY: bench bench-full bench-gpu

# The quick grid: a few minutes per script on 2 CPU cores.
bench:
	$(BENCH) benchmarks/paper_table.py --quick
	$(BENCH) benchmarks/peers.py --quick
	$(BENCH) benchmarks/stages.py --quick

# The default grid (paper_table: ~35-45 min on 2 free CPU cores, estimated from the quick grid).
bench-full:
	$(BENCH) benchmarks/paper_table.py
	$(BENCH) benchmarks/peers.py
	$(BENCH) benchmarks/stages.py

# The larger grid for a GPU: VGG-16 copycats as in the paper, budgets of 100k and more.
bench-gpu:
	$(BENCH) benchmarks/paper_table.py --device cuda --arch vgg16 --tag gpu \
		--budgets 1k,2k,5k,10k,20k,50k,100k,200k
	$(BENCH) benchmarks/peers.py --device cuda --arch vgg16 --tag gpu --budgets 20k,100k
	$(BENCH) benchmarks/stages.py --device cuda --tag gpu --budgets 1k,10k,100k,1000k
