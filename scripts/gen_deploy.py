"""Generate deploy/<service>.yaml (ServiceAccount, Deployment, Service) for every service of
the catalogue (trainyard/catalogue.py), from one template.

    python scripts/gen_deploy.py           # regenerate
    python scripts/gen_deploy.py --check   # fail if a committed manifest is stale

What differs between services is the catalogue entry's name, default port and `kubernetes`
part (summary, resources, extra env, API token). gateway.yaml, config.yaml and
networkpolicies.yaml are written by hand; tests/test_deploy_manifests.py checks them all.
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

from trainyard.catalogue import CATALOGUE, Service

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"

TEMPLATE = string.Template(
    """apiVersion: v1
kind: ServiceAccount
metadata:
  name: trainyard-${name}
  namespace: trainyard
  labels:
    app.kubernetes.io/name: ${name}
    app.kubernetes.io/part-of: trainyard
automountServiceAccountToken: ${token}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ${name}
  namespace: trainyard
  labels:
    app.kubernetes.io/name: ${name}
    app.kubernetes.io/component: grpc-service
    app.kubernetes.io/part-of: trainyard
spec:
  replicas: 1
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      app.kubernetes.io/name: ${name}
      app.kubernetes.io/part-of: trainyard
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        app.kubernetes.io/name: ${name}
        app.kubernetes.io/component: grpc-service
        app.kubernetes.io/part-of: trainyard
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "9090"
        prometheus.io/path: /metrics
    spec:
      serviceAccountName: trainyard-${name}
      automountServiceAccountToken: ${token}
      enableServiceLinks: false
      # The service drains in-flight RPCs within 20 s of SIGTERM.
      terminationGracePeriodSeconds: 30
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        fsGroup: 10001
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: ${name}
          image: trainyard:latest
          imagePullPolicy: IfNotPresent
          command: ["trainyard"]
          args: ${args}
          ports:
            - name: grpc
              containerPort: ${port}
              protocol: TCP
            - name: metrics
              containerPort: 9090
              protocol: TCP
          envFrom:
            - configMapRef:
                name: trainyard-config
            - secretRef:
                name: trainyard-secrets
${env}          startupProbe:
            grpc:
              port: ${port}
              service: ""
            periodSeconds: 2
            failureThreshold: 30
          readinessProbe:
            grpc:
              port: ${port}
              service: ""
            periodSeconds: 5
            timeoutSeconds: 2
            failureThreshold: 3
          livenessProbe:
            grpc:
              port: ${port}
              service: ""
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 3
          resources:
            requests:
              cpu: ${req_cpu}
              memory: ${req_mem}
            limits:
              cpu: ${lim_cpu}
              memory: ${lim_mem}
          securityContext:
            runAsNonRoot: true
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
---
apiVersion: v1
kind: Service
metadata:
  name: ${name}
  namespace: trainyard
  labels:
    app.kubernetes.io/name: ${name}
    app.kubernetes.io/component: grpc-service
    app.kubernetes.io/part-of: trainyard
spec:
  type: ClusterIP
  selector:
    app.kubernetes.io/name: ${name}
    app.kubernetes.io/part-of: trainyard
  ports:
    - name: grpc
      port: ${port}
      targetPort: grpc
      protocol: TCP
      appProtocol: kubernetes.io/h2c
    - name: metrics
      port: 9090
      targetPort: metrics
      protocol: TCP
      appProtocol: http
"""
)


def _cpu(value: str) -> str:
    return f'"{value}"' if value.isdigit() else value


def _args(service: Service) -> str:
    args = ["serve", service.name, "--host", "0.0.0.0", "--port", str(service.default_port)]
    args += ["--metrics-port", "9090"]
    return "[" + ", ".join(f'"{a}"' for a in args) + "]"


def _env(service: Service) -> str:
    if not service.kubernetes.env:
        return ""
    lines = ["          env:"]
    for name, value, comment in service.kubernetes.env:
        if comment:
            lines.append(f"            # {comment}")
        lines.append(f"            - name: {name}")
        lines.append(f"              value: {value}")
    return "\n".join(lines) + "\n"


def manifest(service: Service) -> str:
    """The text of deploy/<name>.yaml."""
    k8s = service.kubernetes
    summary = k8s.summary.split("\n")
    head = [f"# {service.name}: {summary[0]}", *(f"# {line}" for line in summary[1:])]
    body = TEMPLATE.substitute(
        name=service.name,
        port=service.default_port,
        args=_args(service),
        token="true" if k8s.api_token else "false",
        env=_env(service),
        req_cpu=_cpu(k8s.requests[0]),
        req_mem=k8s.requests[1],
        lim_cpu=_cpu(k8s.limits[0]),
        lim_mem=k8s.limits[1],
    )
    return "\n".join(head) + "\n" + body


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="fail if a manifest is stale")
    args = parser.parse_args()
    stale = []
    for service in CATALOGUE:
        path = DEPLOY / f"{service.name}.yaml"
        text = manifest(service)
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(DEPLOY.parent)}")
    if stale:
        print(f"stale: {', '.join(stale)}; run ./dev gen (scripts/gen_deploy.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
