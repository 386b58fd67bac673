# DriveMTL: two user-facing targets. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Every install goes through the constraints file, so the CPU torch wheel is never replaced.
INSTALL := $(PIP) install --quiet -c constraints.txt
STAMP := $(VENV)/.installed-dev

.PHONY: test demo

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python pyproject.toml constraints.txt
	$(INSTALL) -e ".[dev,export]"
	@# trackeval pulls the GUI opencv-python; the headless build must own cv2 (no libGL needed).
	@if $(PIP) show opencv-python >/dev/null 2>&1; then \
		$(PIP) uninstall --quiet -y opencv-python && \
		$(INSTALL) --force-reinstall --no-deps opencv-python-headless; fi
	$(PY) -c "import cv2, torch; print('installed: torch', torch.__version__, '| cv2', cv2.__version__)"
	@touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	@# pytest exits 5 when it collected nothing: an empty collection is not a failure.
	$(VENV)/bin/pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo 'pytest: no tests collected'; exit 0; fi; exit $$rc

demo: $(STAMP)
	$(VENV)/bin/drivemtl demo
