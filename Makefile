# ocitool: `make test` and `make demo` work from a clean clone on Debian, as root.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages the tests use as real peers (registry, images, interop tools).
DEB_PACKAGES := python3 docker-registry busybox-static skopeo umoci runc crun podman conmon uidmap libseccomp2
STAMP := $(VENV)/.installed

.PHONY: test demo deps venv bench clean

test: deps venv
	$(PY) -m pytest $(PYTEST_ARGS)

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# compat mode: a plain path entry, not an import hook that costs every command ~15 ms at start-up
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

demo: deps venv
	$(PY) scripts/demo.py

bench: deps venv
	$(PY) bench/pull.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
