# copycat: `make demo` sets everything up and steals a Fashion-MNIST target end to end;
# `make test` sets up and runs the tests. Both work on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TARGET ?= targets/fmnist
RUN    ?= runs/demo
BUDGET ?= 20000
# NPD images only, less those of the target's own classes (garments: see docs/suite.md)
POOL   ?= npd:exclude=people/clothing,clothes,shirt,dress,coat,trouser,pants,jeans,sweater,pullover,jacket,shoe,sneaker,sandal,boot,bag,purse,tote,jupe,robe.,mannequin
NPD_PACKAGES := openclipart-png tuxpaint-stamps-default scratch gnome-backgrounds mate-backgrounds
DEVICE ?= auto

.PHONY: setup data demo test test-interop bench bench-full bench-gpu lint clean clean-runs suite bench-suite

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) data  ## virtual environment, package, and the demo's data

data:  ## Fashion-MNIST and the NPD images (clip-art, stamps, sprites, photos), from Debian
	@if [ -d /usr/share/datasets/fashion-mnist ] && [ -d /usr/share/openclipart/png ] && \
	    [ -d /usr/share/tuxpaint/stamps ] && [ -d /usr/share/scratch/Media ] && \
	    [ -d /usr/share/backgrounds/gnome ] && [ -d /usr/share/backgrounds/mate ]; then \
	  echo "data: Fashion-MNIST and the NPD images are installed"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends \
	    dataset-fashion-mnist $(NPD_PACKAGES); \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
	  sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends \
	    dataset-fashion-mnist $(NPD_PACKAGES); \
	else \
	  echo "data: no apt-get here. Download the four Fashion-MNIST *-ubyte.gz files into a"; \
	  echo "      folder and set COPYCAT_DATA to it (or a torchvision root: data/FashionMNIST/raw);"; \
	  echo "      for the NPD pool use --pool folder:PATH with any folder of natural images."; \
	fi

# targets/fmnist ships with the repository (the weights the README's figures were measured on,
# SHA-256 e2e19b2ef648...); a TARGET without a card.json is trained first (about 2.5 minutes)
demo: setup  ## steal the Fashion-MNIST target with NPD images only, train the copycat, report
	@test -f $(TARGET)/card.json || $(BIN)/copycat target train --dataset fashion-mnist \
	  --out $(TARGET) --device $(DEVICE)
	$(BIN)/copycat steal --oracle torch:$(TARGET) --pool $(POOL) --budget $(BUDGET) \
	  --run-dir $(RUN) --device $(DEVICE)
	$(BIN)/copycat train --run-dir $(RUN) --device $(DEVICE)
	$(BIN)/copycat evaluate --run-dir $(RUN) --test-set fashion-mnist:test --device $(DEVICE)
	$(BIN)/copycat report --run-dir $(RUN)

test: $(STAMP)  ## the fast, offline test suite
	$(BIN)/python -m pytest

test-interop: $(STAMP)  ## interop tests against third-party servers (own venvs)
	$(BIN)/python -m pytest -m interop

bench: setup  ## the quick benchmark grid (minutes per script on 2 CPU cores)
	$(BIN)/pip install --quiet adversarial-robustness-toolbox
	$(BIN)/python benchmarks/paper_table.py --quick
	$(BIN)/python benchmarks/stages.py --quick
	$(BIN)/python benchmarks/peers.py --quick
	$(BIN)/python benchmarks/http_throughput.py
	$(BIN)/python benchmarks/defences.py --quick

bench-full: setup  ## the default grid (paper_table: ~35-45 min on 2 free CPU cores)
	$(BIN)/pip install --quiet adversarial-robustness-toolbox
	$(BIN)/python benchmarks/paper_table.py
	$(BIN)/python benchmarks/peers.py
	$(BIN)/python benchmarks/stages.py
	$(BIN)/python benchmarks/defences.py

bench-gpu: setup  ## the larger grid for a GPU: VGG-16 copycats, budgets of 100k and more
	$(BIN)/pip install --quiet adversarial-robustness-toolbox
	$(BIN)/python benchmarks/paper_table.py --device cuda --arch vgg16 --tag gpu \
	  --budgets 1k,2k,5k,10k,20k,50k,100k,200k
	$(BIN)/python benchmarks/peers.py --device cuda --arch vgg16 --tag gpu --budgets 20k,100k
	$(BIN)/python benchmarks/stages.py --device cuda --tag gpu --budgets 1k,10k,100k,1000k

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

clean:  ## tool caches only: run directories hold paid answers (see clean-runs)
	rm -rf .pytest_cache .mypy_cache .ruff_cache

clean-runs:  ## delete $(RUN) and its paid answers: make clean-runs CONFIRM=1
	@if [ "$(CONFIRM)" != 1 ]; then \
	  echo "clean-runs deletes $(RUN) with its paid answers; run: make clean-runs CONFIRM=1"; \
	  exit 1; \
	fi
	rm -rf $(RUN)

# -- the development suite (docs/suite.md) ---------------------------------------------------
CACHE       ?= $(HOME)/.cache/copycat
SUITE       ?= targets/suite
EMOJI_VER   ?= 16.0.0

suite: setup  ## suite data (scikit-learn digits, npm emoji) and its targets in targets/suite
	@for s in google twitter; do \
	  d=$(CACHE)/emoji-datasource-$$s; \
	  if [ ! -f $$d/emoji.json ]; then \
	    command -v npm >/dev/null || { echo "suite: the emoji set needs npm (apt-get install npm)"; exit 1; }; \
	    mkdir -p $$d $(CACHE)/npm; \
	    (cd $(CACHE)/npm && npm pack --silent emoji-datasource-$$s@$(EMOJI_VER)) || exit 1; \
	    tar xzf $(CACHE)/npm/emoji-datasource-$$s-$(EMOJI_VER).tgz --strip-components=1 -C $$d \
	      --wildcards package/emoji.json package/LICENSE "package/img/$$s/64/*" || exit 1; \
	  fi; \
	done
	$(BIN)/copycat target suite --out $(SUITE) --device $(DEVICE) --reuse fmnist=targets/fmnist

bench-suite: suite  ## steal strength across the suite (quick: minutes on 2 CPU cores)
	$(BIN)/python benchmarks/suite.py --quick
