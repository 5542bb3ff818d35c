#!/usr/bin/env bash
# One entry point for set-up and every job.  Each verb installs what it needs first
# (idempotent), so a fresh Debian machine needs nothing but this repository.
#   ./build.sh demo      synthetic S1+S2 scene -> landslide:detect via qgis_process -> grid + PNG map
#   ./build.sh test      lint, the test suite (headless) and the docs site (strict)
#   ./build.sh lint      ruff (pyflakes, pycodestyle, bugbear, import order) + mypy (core, engine, models, pipeline); run by ./build.sh test
#   ./build.sh package   dist/sentinel_landslide.zip for "Install from ZIP"
#   ./build.sh train     regenerate the bundled model package from ../shared/data
#   ./build.sh bench     benchmarks (bench/), writes bench/results.md
#   ./build.sh width     how network width moves the nets' share of the matmul rate (bench/width.py)
#   ./build.sh int8      int8 networks where OOF metrics hold and they run faster (training/quantize.py)
#   ./build.sh docs      the documentation site (docs/ -> site/, mkdocs --strict); run by ./build.sh test
#   ./build.sh regen-docs  regenerate the site's generated parts: algorithm pages (from the algorithms'
#                        definitions), screenshots (rendered by QGIS) and metadata.txt's changelog
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
PLUGINS="$ROOT/.build/plugins"
export PYTHONPATH="$PLUGINS${PYTHONPATH:+:$PYTHONPATH}"
export QT_QPA_PLATFORM=offscreen

log() { printf '\033[1m[build] %s\033[0m\n' "$*" >&2; }

need_apt() {
  local missing=()
  /usr/bin/python3 -c "import qgis.core, osgeo.gdal" >/dev/null 2>&1 || missing+=(qgis python3-qgis qgis-providers python3-gdal)
  command -v gdalinfo >/dev/null || missing+=(gdal-bin)
  [ -x /usr/bin/qgis_process.bin ] || missing+=(qgis)
  /usr/bin/python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
  if [ "${1:-}" = xvfb ]; then command -v Xvfb >/dev/null || missing+=(xvfb); fi
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" \
      || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
  fi
}

# pip install a requirements file once per content (stamp = its hash)
pip_req() {
  local req=$1 stamp="$VENV/.stamp-$(basename "$1")-$(cat "$1" constraints.txt | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  log "installing Python packages from $req"
  "$PY" -m pip install -q --disable-pip-version-check -c constraints.txt -r "$req"
  touch "$stamp"
}

setup() {  # $1: runtime | dev | train | docs
  need_apt "${2:-}"
  if [ ! -x "$PY" ]; then
    log "creating $VENV (with QGIS's system site packages)"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
  fi
  case "$1" in
    runtime) pip_req requirements-runtime.txt ;;
    dev) pip_req requirements-dev.txt ;;
    train) pip_req requirements-dev.txt; pip_req requirements-train.txt; pip_req requirements-docs.txt ;;
    docs) pip_req requirements-runtime.txt; pip_req requirements-docs.txt ;;
  esac
  mkdir -p "$PLUGINS"
  [ -L "$PLUGINS/sentinel_landslide" ] || ln -sfn "$ROOT" "$PLUGINS/sentinel_landslide"
}

case "${1:-}" in
  demo)
    setup runtime
    "$PY" -m sentinel_landslide.scripts.demo "${@:2}"
    ;;
  test)
    # torch + timm are test dependencies: the ONNX export tests compare against torch
    setup train xvfb
    "$0" lint
    # engine, models, training: no QGIS application at all (conftest fails the run if
    # anything imports qgis); then the QGIS shell with pytest-qgis
    "$PY" -m pytest -p no:pytest_qgis -m "not qgis" "${@:2}"
    "$PY" -m pytest -m qgis "${@:2}"
    "$0" docs
    ;;
  docs)
    setup docs
    # strict: a broken link, a missing page, image or included file fails the build
    NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict --clean --site-dir site
    ;;
  regen-docs)
    setup train
    "$PY" -m sentinel_landslide.scripts.docs_reference
    "$PY" -m sentinel_landslide.scripts.changelog --write
    "$PY" -m sentinel_landslide.scripts.screenshots "${@:2}"
    ;;
  lint)
    setup dev
    "$VENV/bin/ruff" check .
    # mypy on the QGIS-free runtime; from the plugins folder, where the symlink gives the
    # package its import name (the checkout's folder name is not one)
    (cd "$PLUGINS" && "$VENV/bin/mypy" --config-file "$ROOT/pyproject.toml" --cache-dir "$ROOT/.build/mypy_cache" \
      -p sentinel_landslide.core -p sentinel_landslide.engine -p sentinel_landslide.models -m sentinel_landslide.pipeline)
    ;;
  package)
    setup runtime
    "$PY" -m sentinel_landslide.scripts.package "${@:2}"
    ;;
  train)
    setup train
    "$PY" -m sentinel_landslide.training.train_gbm --data ../shared/data/zindi/train_features_7147.csv.gz --out models/bundled
    # the proxy-trained networks get a small ensemble weight: see NN_WEIGHT_NOTE in training/nn_export.py
    "$PY" -m sentinel_landslide.training.train_nn --proxy ../shared/data/zindi/train_features_7147.csv.gz --out models/bundled --epochs 6 --folds 3 --workers 2 --threads 1 --nn-weight 0.1 --width 1 "${@:2}"
    # the per-combination table of the site's "Accuracy and speed" page is generated from the
    # manifest at each docs build (docs/hooks.py -> training/combo_table.py)
    ;;
  bench)
    setup train
    "$PY" -m sentinel_landslide.bench.run "${@:2}"
    ;;
  width)
    setup train
    "$PY" -m sentinel_landslide.bench.width "${@:2}"
    ;;
  int8)
    setup train
    "$PY" -m sentinel_landslide.training.quantize "${@:2}"
    ;;
  setup)
    setup "${2:-dev}"
    ;;
  *)
    sed -n '2,14p' "$0"; exit 2 ;;
esac
