# alpine-composer: see README.md. Everything runs from a local virtualenv in .venv/.
# The interpreter .venv is made from: the distribution's /usr/bin/python3 when it is 3.11 or
# newer and can make virtualenvs (Debian: python3-venv), else python3 on PATH (PYTHON=…
# picks another). Debian's links libpython statically into an optimised interpreter; a
# plain source build with a shared libpython (pyenv's default) runs the same build ~12%
# slower, almost all of it start-up (see README, Speed).
PYTHON ?= $(or $(shell /usr/bin/python3 -c 'import ensurepip, sys; print(sys.executable if sys.version_info >= (3, 11) else "")' 2>/dev/null),python3)
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= profiles/minirootfs.yaml
MIRROR ?=
FIRMWARE ?=
MEDIUM ?=
SECURE_BOOT ?=
BOOT_FLAGS ?=
OUTPUT_DIR ?= out
MIRROR_FLAG := $(if $(MIRROR),--mirror $(MIRROR),)

.PHONY: install build verify rebuild boot publish test test-fast golden fuzz bench schema clean lock vendor repro

# A regular install, as `pip install .` gives users (an editable install's import hook
# costs every run ~20 ms of start-up); reinstalled when a source file changes. Tests and
# `python -m composer` in the checkout read the sources directly. Bytecode is compiled
# explicitly: with PYTHONDONTWRITEBYTECODE set, pip leaves it out and every run compiles
# requests, urllib3 and the rest again (~70 ms).
SOURCES := $(shell find composer -name '*.py' 2>/dev/null)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(BIN)/alpine-composer: $(BIN)/python pyproject.toml $(SOURCES)
	$(BIN)/pip install --quiet '.[test]'
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null
	@touch $@

install: $(BIN)/alpine-composer

build: install
	$(BIN)/alpine-composer build $(PROFILE) --output-dir $(OUTPUT_DIR) $(MIRROR_FLAG)

verify: install
	$(BIN)/alpine-composer verify $(PROFILE) --output-dir $(OUTPUT_DIR)

rebuild: install
	$(BIN)/alpine-composer verify --rebuild $(PROFILE) --output-dir $(OUTPUT_DIR) $(MIRROR_FLAG)

# Pin every input of a profile in <profile>.lock.json (make lock PROFILE=… [MIRROR=…] [UPDATE=1]).
lock: install
	$(BIN)/alpine-composer lock $(PROFILE) $(if $(UPDATE),--update,) $(MIRROR_FLAG)

# Copy every locked input into VENDOR_DIR, laid out as an Alpine mirror, for offline rebuilds
# (make build PROFILE=… MIRROR=$(VENDOR_DIR) --offline works from it with an empty cache).
VENDOR_DIR ?= vendor
vendor: install
	$(BIN)/alpine-composer vendor $(PROFILE) $(VENDOR_DIR) $(MIRROR_FLAG)

# Build each shipped profile twice under different TZ, locale, umask, cwd, HOME, file
# creation order, cache and CPU count, and compare every byte (the test mirror; with
# MIRROR=… the given profiles against that mirror instead).
REPRO_PROFILES ?= profiles/*.yaml
repro: install
ifeq ($(MIRROR),)
	$(BIN)/python -m pytest -q -rs tests/stages/test_repro.py
else
	$(BIN)/python -m tests.helpers.repro $(REPRO_PROFILES) --mirror $(MIRROR)
endif

# Build, then push the OCI image: make publish PROFILE=… REF="registry.example.org/team/web:1.2 [REF…]"
# (credentials from podman/skopeo/docker login or ALPINE_COMPOSER_REGISTRY_USER/_PASSWORD)
REF ?=
publish: install
	@test -n "$(REF)" || { echo 'make publish: give REF=registry/repository:tag' >&2; exit 2; }
	$(BIN)/alpine-composer publish $(PROFILE) $(REF) --output-dir $(OUTPUT_DIR) $(MIRROR_FLAG)

# Start the profile's ISO or disk image in qemu: make boot PROFILE=profiles/virt.yaml
# [FIRMWARE=uefi] [MEDIUM=disk] [SECURE_BOOT=1] [BOOT_FLAGS='--print --nvme …'] (defaults: the
# boot command's own)
boot: install
	$(BIN)/alpine-composer boot $(PROFILE) --output-dir $(OUTPUT_DIR) \
	    $(if $(FIRMWARE),--firmware $(FIRMWARE)) $(if $(MEDIUM),--as $(MEDIUM)) \
	    $(if $(SECURE_BOOT),--secure-boot) $(BOOT_FLAGS)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# Mutates the real Alpine fixtures in ../shared and feeds every parser (not part of `make test`).
FUZZ_CASES ?= 20000
fuzz: install
	$(BIN)/python fuzz/run.py --cases $(FUZZ_CASES)

# Rewrite tests/golden/build-manifest.* after a deliberate change to build output; review the diff.
golden: install
	GOLDEN_UPDATE=1 $(BIN)/python -m pytest -q tests/stages/test_golden.py

bench: install
	$(BIN)/python bench/run.py

schema: install
	$(BIN)/alpine-composer schema -o profile.schema.json

clean:
	rm -rf $(OUTPUT_DIR) build *.egg-info .pytest_cache .hypothesis profile.schema.json
