#!/usr/bin/env bash
# Renders deploy/kubernetes, alone and with each component in its examples/,
# with `kubectl kustomize`; validates every object against the strict Kubernetes
# 1.30 schemas (kubernetes-validate, pinned, in target/k8s-venv); checks labels
# and that the router's shard map matches the shard StatefulSet. Exit 1 on any failure.
set -euo pipefail

K8S_VERSION=1.30
VALIDATOR_VERSION=1.37.0
# The validator and its dependencies, pinned so that a rerun validates alike.
PACKAGES=(
  kubernetes-validate==$VALIDATOR_VERSION
  jsonschema==4.26.0
  jsonschema-specifications==2025.9.1
  referencing==0.37.0
  rpds-py==2026.9.1
  attrs==26.1.0
  PyYAML==6.0.4
  packaging==26.4
  importlib_resources==7.1.0
  typing_extensions==4.16.0
)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/target/k8s-venv"
py="$venv/bin/python"

command -v kubectl >/dev/null || { echo "check_kubernetes: kubectl not found" >&2; exit 1; }

# Install only when the pinned validator is missing, so that a run with the
# venv in place needs no network.
if ! "$py" -c "import sys, kubernetes_validate.version as v; sys.exit(v.__version__ != '$VALIDATOR_VERSION')" 2>/dev/null; then
  echo "check_kubernetes: installing kubernetes-validate==$VALIDATOR_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}"
fi

# The base, then the base with each component under examples/. A component
# does not render alone, and kustomize refuses an overlay inside the base's
# own folder (a cycle), so each one gets an overlay in a scratch folder.
mkdir -p "$root/target"
out="$(mktemp -d "$root/target/k8s-check.XXXXXX")"
trap 'rm -rf "$out"' EXIT
names=(deploy/kubernetes)
roots=(deploy/kubernetes)
for k in deploy/kubernetes/examples/*/kustomization.yaml; do
  [ -e "$k" ] || continue
  c="$(dirname "$k")"
  o="$out/overlay-$(basename "$c")"
  mkdir -p "$o"
  {
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources:"
    echo "  - $(realpath --relative-to="$o" deploy/kubernetes)"
    echo "components:"
    echo "  - $(realpath --relative-to="$o" "$c")"
  } >"$o/kustomization.yaml"
  names+=("$c")
  roots+=("$o")
done

for i in "${!names[@]}"; do
  if ! kubectl kustomize "${roots[$i]}" >"$out/$i.yaml"; then
    echo "FAIL ${names[$i]}: kubectl kustomize failed" >&2
    exit 1
  fi
done

"$py" - "$K8S_VERSION" "$out" "${names[@]}" <<'PY'
import os, re, sys, tomllib
import yaml
from kubernetes_validate import utils

version, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
failures = 0

def fail(where, msg):
    global failures
    failures += 1
    print(f"FAIL {where}: {msg}")

def check_shard_map(where, objs):
    """route.toml lists, per shard j of N, pods j, j+N, ...: every pod of
    the StatefulSet exactly once, under the shard it serves (i mod N), and
    at least two replicas per shard, which the disruption budget needs."""
    sts = [o for o in objs if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "fathom-shard"]
    cms = [o for o in objs if o["kind"] == "ConfigMap" and "route.toml" in o.get("data", {})]
    if len(sts) != 1 or len(cms) != 1:
        return fail(where, "want one StatefulSet fathom-shard and one ConfigMap with route.toml")
    pods = sts[0]["spec"]["replicas"]
    service = sts[0]["spec"]["serviceName"]
    try:
        route = tomllib.loads(cms[0]["data"]["route.toml"])
    except tomllib.TOMLDecodeError as e:
        return fail(where, f"route.toml: {e}")
    if not route.get("index"):
        return fail(where, "route.toml has no [[index]]")
    for index in route["index"]:
        name, shards = index.get("name"), index.get("shards", [])
        n = len(shards)
        if n == 0 or pods % n:
            fail(where, f"index {name}: {pods} pods do not split into {n} shards")
            continue
        seen = []
        for j, replicas in enumerate(shards):
            for addr in replicas:
                m = re.fullmatch(rf"fathom-shard-(\d+)\.{re.escape(service)}:50051", addr)
                if not m:
                    fail(where, f"index {name}, shard {j}: {addr!r} is not a pod of {service}")
                    continue
                i = int(m.group(1))
                if i >= pods or i % n != j:
                    fail(where, f"index {name}, shard {j}: pod {i} does not serve it ({pods} pods, i mod {n})")
                seen.append(i)
        if sorted(seen) != list(range(pods)):
            fail(where, f"index {name}: pods {sorted(seen)} listed, want 0..{pods - 1} once each")
        if pods // n < 2:
            fail(where, f"index {name}: {pods // n} replica per shard, want at least 2")

for i, name in enumerate(names):
    with open(os.path.join(out, f"{i}.yaml")) as f:
        objs = [o for o in yaml.safe_load_all(f) if o]
    if not objs:
        fail(name, "rendered no objects")
        continue
    before = failures
    for o in objs:
        what = f"{name}: {o.get('kind')}/{o.get('metadata', {}).get('name')}"
        try:
            utils.validate(o, version, strict=True)
        except utils.ValidationError as e:
            fail(what, f"{'.'.join(map(str, e.path)) or '(top)'}: {e.message}")
            continue
        except utils.SchemaNotFoundError as e:
            fail(what, e.message)
            continue
        labels = o["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/component"):
            if key not in labels:
                fail(what, f"no label {key}")
    check_shard_map(name, objs)
    if failures == before:
        print(f"ok   {name}: {len(objs)} objects, valid against Kubernetes {version} (strict)")

if failures:
    print(f"check_kubernetes: {failures} failure(s)")
    sys.exit(1)
PY
