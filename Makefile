# Set-up, build and tests on a fresh Debian-like machine: `make build`, `make test`.
PYTHON ?= python3
VENV ?= .venv
OUT ?= artifacts
DATA_FILE = /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# Debian packages the tests need beside Python: a real sshd for deploy, debootstrap and qemu for the Pi userland,
# chromium for the live page, systemd for `systemd-analyze verify` of the service unit.
TEST_PACKAGES = openssh-server openssh-client rsync debootstrap qemu-user-static chromium systemd
# And for `make test-boards`: qemu-system, qemu-img and mkfs.ext4 for the virtual boards that run the service.
BOARD_PACKAGES = qemu-system-x86 qemu-system-arm qemu-utils e2fsprogs
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data build test test-boards test-packages clean

setup: $(VENV)/.installed data

data:
	@test -f $(DATA_FILE) || { \
	  echo "Installing Fashion-MNIST from Debian's package dataset-fashion-mnist"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; }
	@test -f $(DATA_FILE) || { echo "error: $(DATA_FILE) still missing" >&2; exit 1; }

# The package alone (what `edge-fashion` needs); `make test` adds the test extras.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -m venv $(VENV) || { \
	  echo "Installing python3-venv"; $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv && \
	  $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

build: setup
	$(VENV)/bin/edge-fashion build --out $(OUT)

test-packages:
	@missing=$$(for package in $(TEST_PACKAGES) $(EXTRA_PACKAGES); do dpkg -s $$package >/dev/null 2>&1 || echo $$package; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing test packages:" $$missing; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; fi

test: setup $(VENV)/.installed-test test-packages
	$(VENV)/bin/python -m pytest

# The service under systemd on virtual boards (qemu TCG; the disk image is built once, as root, into .cache/).
test-boards: setup $(VENV)/.installed-test
	$(MAKE) test-packages EXTRA_PACKAGES="$(BOARD_PACKAGES)"
	EDGE_FASHION_VIRTUAL_BOARDS=1 $(VENV)/bin/python -m pytest tests/test_virtual_board.py tests/test_virtual_fleet.py

clean:
	rm -rf $(VENV) .cache $(OUT) build dist
