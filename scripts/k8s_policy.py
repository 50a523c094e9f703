#!/usr/bin/env python3
"""Policy checks over a rendered overlay (`kubectl kustomize k8s/overlays/NAME`): what the schema
cannot say. Usage: k8s_policy.py RENDERED.yaml REPO_ROOT. Prints every violation; exit 1 if any.
`k8s_policy.py --self-test RENDERED.yaml REPO_ROOT` breaks one rule at a time in a copy and
checks that each copy is refused (a check that cannot fail proves nothing)."""
import copy
import pathlib
import re
import sys

import yaml


def pod_spec(obj):
    return obj.get("spec", {}).get("template", {}).get("spec")


def check(docs, root):
    """Every violation of the policies in `docs` (the rendered objects)."""
    problems = []

    def fail(obj, what):
        problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {what}")

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    processors = []  # (StatefulSet, manifest file name, manifest)
    for obj in docs:
        spec = pod_spec(obj)
        if spec is None:
            continue
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            fail(obj, "the pod does not set runAsNonRoot")
        for c in spec.get("containers", []):
            image = c.get("image", "")
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            if not tag or tag == "latest":
                fail(obj, f"container {c['name']}: image {image!r} has no fixed tag")
            # A Job runs to completion: nothing to probe.
            for probe in ("readinessProbe", "livenessProbe") if obj["kind"] != "Job" else ():
                if probe not in c:
                    fail(obj, f"container {c['name']}: no {probe}")
            res = c.get("resources", {})
            for side in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(side, {}):
                        fail(obj, f"container {c['name']}: no {side}.{r}")
            sc = c.get("securityContext", {})
            if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation", True):
                fail(obj, f"container {c['name']}: root filesystem writable or privilege escalation allowed")
            for e in c.get("env", []):
                if re.search(r"://[^/\s]*:[^@\s]*@", str(e.get("value", ""))):
                    fail(obj, f"container {c['name']}: env {e['name']} holds a credential; use a Secret")
            # Every service serves /metrics beside its probes; the pod says where, for Prometheus's
            # usual Kubernetes discovery (`prometheus.io/*` annotations).
            probe = c.get("readinessProbe", {}).get("httpGet", {}).get("port")
            if probe is not None:
                ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                notes = obj["spec"]["template"].get("metadata", {}).get("annotations", {})
                want = {"prometheus.io/scrape": "true", "prometheus.io/port": str(ports.get(probe, probe)), "prometheus.io/path": "/metrics"}
                if any(notes.get(k) != v for k, v in want.items()):
                    fail(obj, f"container {c['name']}: the pod's prometheus.io annotations are not {want}")
            # Every processor is a StatefulSet with its own volume and a static member id.
            if c.get("args", [None])[0] == "process":
                if obj["kind"] != "StatefulSet":
                    fail(obj, "a processor that is not a StatefulSet")
                    continue
                mounts = {m["name"] for m in c.get("volumeMounts", [])}
                claims = {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
                if not (mounts & claims):
                    fail(obj, "the processor's state is not on a volume claim of its own")
                ids = [e for e in c.get("env", []) if e["name"] == "PITGUN_INSTANCE_ID"]
                if not ids or ids[0].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
                    fail(obj, "the processor's static member id (PITGUN_INSTANCE_ID) is not the pod name")
                # Named after the manifest version it runs, whose file the ConfigMap carries.
                manifest = c["args"][c["args"].index("--manifest") + 1]
                path = root / "manifests" / "pipelines" / pathlib.Path(manifest).name
                if not path.is_file():
                    fail(obj, f"runs {manifest}, which is not in manifests/pipelines")
                    continue
                m = yaml.safe_load(open(path))
                processors.append((obj, path.name, m))
                want = f"processor-{m['name']}-v{m['version']}"
                if obj["metadata"]["name"] != want:
                    fail(obj, f"runs {m['name']} v{m['version']}: name it {want}")
                if spec.get("terminationGracePeriodSeconds", 30) < 60:
                    fail(obj, "terminationGracePeriodSeconds under 60 s: the final checkpoint may not finish")

    # Rows a processor writes for a sink reach it only if the sink reads that manifest version:
    # one left out has its rows computed and never stored, and nothing says so.
    sunk = set()
    for d in by_kind.get("Deployment", []):
        for c in pod_spec(d)["containers"]:
            args = c.get("args", [])
            if args[:1] == ["sink"]:
                sunk |= {pathlib.Path(args[i + 1]).name for i, a in enumerate(args[:-1]) if a == "--manifest"}
    for obj, name, m in processors:
        sinks = m.get("output", {}).get("sinks") or []
        if sinks and name not in sunk:
            fail(obj, f"its rows are for {', '.join(x['kind'] for x in sinks)} but no sink Deployment reads {name}")

    # An autoscaled Deployment: the HPA owns the count, and a disruption budget lets one pod go
    # at the HPA's minimum.
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        target = deployments.get(h["spec"]["scaleTargetRef"]["name"])
        if target is None:
            fail(h, "scales no Deployment of this overlay")
            continue
        if "replicas" in target["spec"]:
            fail(target, "sets replicas, which its HorizontalPodAutoscaler owns: every apply would reset the count")
        labels = target["spec"]["template"]["metadata"].get("labels", {})
        for pdb in by_kind.get("PodDisruptionBudget", []):
            selects = pdb["spec"].get("selector", {}).get("matchLabels", {})
            if selects and selects.items() <= labels.items() and int(pdb["spec"].get("minAvailable", 0)) >= h["spec"].get("minReplicas", 1):
                fail(pdb, f"minAvailable {pdb['spec']['minAvailable']} at the HPA's minimum of {h['spec'].get('minReplicas', 1)}: no eviction is ever allowed")

    # A pod behind a Service leaves its endpoints while SIGTERM is sent: it pauses first, or
    # connections routed to it meanwhile are refused.
    for svc in by_kind.get("Service", []):
        selects = svc["spec"].get("selector", {})
        for d in deployments.values():
            if selects and selects.items() <= d["spec"]["template"]["metadata"].get("labels", {}).items():
                for c in pod_spec(d)["containers"]:
                    if "preStop" not in c.get("lifecycle", {}):
                        fail(d, f"container {c['name']}: behind Service {svc['metadata']['name']} with no preStop pause")

    for s in by_kind.get("Secret", []):
        fail(s, "a Secret in the tree: Secrets are made in the cluster, never committed")

    # Without Strimzi, the pitgun-topics Job creates every manifest's topics from the pipelines
    # folder (and refuses a short changelog itself); there must be no KafkaTopic beside it.
    topic_jobs = [j for j in by_kind.get("Job", []) if j["spec"]["template"]["spec"]["containers"][0].get("args", [None])[0] == "topics"]
    if topic_jobs:
        for j in topic_jobs:
            args = j["spec"]["template"]["spec"]["containers"][0]["args"]
            folder = args[args.index("--manifest") + 1] if "--manifest" in args else None
            if folder != "/etc/pitgun/manifests/pipelines":
                fail(j, "does not create the topics of every manifest in /etc/pitgun/manifests/pipelines")
        if by_kind.get("KafkaTopic"):
            problems.append("both KafkaTopics and a topics Job: pick one")
        return problems

    # The changelog of a manifest version has a partition per input partition.
    topics = {t["spec"]["topicName"]: t for t in by_kind.get("KafkaTopic", [])}
    envelopes = topics.get("pitgun.envelopes.v1")
    if envelopes is None:
        problems.append("no KafkaTopic for pitgun.envelopes.v1")
    for name, t in topics.items():
        if not t["metadata"].get("labels", {}).get("strimzi.io/cluster"):
            fail(t, "no strimzi.io/cluster label")
        if name.startswith("pitgun.state.") and envelopes and t["spec"]["partitions"] < envelopes["spec"]["partitions"]:
            fail(t, "fewer partitions than pitgun.envelopes.v1: the changelog needs one per input partition")
    for obj in by_kind.get("StatefulSet", []):
        c = obj["spec"]["template"]["spec"]["containers"][0]
        name = obj["metadata"]["name"].removeprefix("processor-")
        manifest, version = name.rsplit("-v", 1)
        for topic in (f"pitgun.aggregates.{manifest}.v{version}", f"pitgun.late.{manifest}.v{version}", f"pitgun.state.{manifest}.v{version}"):
            if topic not in topics:
                fail(obj, f"no KafkaTopic for {topic}")

    return problems


def self_test(docs, root):
    """Breaks one rule at a time; each broken copy must be refused."""
    def first(kind, f):
        return lambda ds: f(next(d for d in ds if d["kind"] == kind))
    def processor(ds):
        return next(d for d in ds if d["kind"] == "StatefulSet")
    breaks = {
        "image latest": first("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="pitgun:latest")),
        "no readiness probe": first("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")),
        "no memory limit": first("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].pop("memory")),
        "runs as root": first("Deployment", lambda d: d["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot")),
        "no scrape annotations": first("Deployment", lambda d: d["spec"]["template"]["metadata"].pop("annotations")),
        "a scrape port that is not the metrics port": lambda ds: processor(ds)["spec"]["template"]["metadata"]["annotations"].update({"prometheus.io/port": "8080"}),
        "a committed Secret": lambda ds: ds.append({"kind": "Secret", "metadata": {"name": "pg"}}),
        "processor without its volume claim": lambda ds: processor(ds)["spec"].pop("volumeClaimTemplates"),
        "processor without static id": lambda ds: processor(ds)["spec"]["template"]["spec"]["containers"][0]["env"].clear(),
        "processor as a Deployment": lambda ds: processor(ds).update(kind="Deployment"),
        "a sink that does not read a manifest version with sinks": lambda ds: next(
            c for d in ds if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"] if c["args"][0] == "sink"
        ).update(args=["sink", "--manifest", "/etc/pitgun/manifests/pipelines/lap-performance.v1.yaml"]),
        "replicas on an autoscaled Deployment": lambda ds: next(d for d in ds if d["kind"] == "Deployment" and d["metadata"]["name"] == "gateway")["spec"].update(replicas=2),
        "a disruption budget at the HPA's minimum": first("PodDisruptionBudget", lambda d: (d["spec"].pop("maxUnavailable", None), d["spec"].update(minAvailable=3))),
        "no preStop behind a Service": lambda ds: next(d for d in ds if d["kind"] == "Deployment" and d["metadata"]["name"] == "api")["spec"]["template"]["spec"]["containers"][0].pop("lifecycle"),
        "changelog with too few partitions": lambda ds: next(d for d in ds if d["kind"] == "KafkaTopic" and d["spec"]["topicName"].startswith("pitgun.state.")
                                                         )["spec"].update(partitions=1),
    }
    assert not check(docs, root), "the rendered overlay breaks the policies already"
    failed = []
    for what, breaking in breaks.items():
        broken = copy.deepcopy(docs)
        breaking(broken)
        if not check(broken, root):
            failed.append(what)
    for what in failed:
        print(f"k8s policy self-test: a copy with {what} was not refused", file=sys.stderr)
    return not failed


if __name__ == "__main__":
    test = sys.argv[1] == "--self-test"
    rendered, root = sys.argv[1 + test], pathlib.Path(sys.argv[2 + test])
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    if test:
        sys.exit(0 if self_test(docs, root) else 1)
    problems = check(docs, root)
    for p in problems:
        print(f"k8s policy: {rendered}: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)
