#!/usr/bin/env bash
# Checks terraform/ without provider plugins (which cannot be downloaded here, so
# `terraform validate` cannot run): `terraform fmt -check`, or HCL's formatter built from the
# Go module proxy when terraform is missing; then the static checks of hack/terraform_check.py
# (references, module calls, descriptions, Helm values against the chart's schema).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE_ROOT="${SUBSTRATUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/substratus}"
HCLFMT_VERSION="v2.24.0"
HCL2_VERSION="8.1.4"

if command -v terraform >/dev/null; then
  echo "==> terraform fmt -check -recursive terraform/"
  TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive -diff terraform/
else
  # terraform is not packaged for this machine; HCL's own formatter (the one terraform fmt is
  # built on) comes from the Go module proxy.
  hclfmt="$CACHE_ROOT/tools/hclfmt-$HCLFMT_VERSION/hclfmt"
  if [[ ! -x "$hclfmt" ]] && command -v go >/dev/null; then
    GOBIN="$(dirname "$hclfmt")" CGO_ENABLED=0 go install -trimpath "github.com/hashicorp/hcl/v2/cmd/hclfmt@$HCLFMT_VERSION" >&2 || true
  fi
  if [[ -x "$hclfmt" ]]; then
    echo "==> hclfmt -require-no-change (terraform is not installed)"
    find terraform -name '*.tf' -print0 | xargs -0 -n1 "$hclfmt" -require-no-change >/dev/null
  else
    echo "==> SKIPPED: the format check (neither terraform nor hclfmt could be had)"
  fi
fi

venv="$CACHE_ROOT/venv-python-hcl2-$HCL2_VERSION"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import hcl2" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "python-hcl2==$HCL2_VERSION"
fi
echo "==> terraform static checks"
"$venv/bin/python" hack/terraform_check.py --self-test
"$venv/bin/python" hack/terraform_check.py
