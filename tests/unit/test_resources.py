"""Resource models accept real Kubernetes manifests, apply Kubernetes' defaults and round-trip.

The rejections (unknown fields, hostile names, cross-field checks) are pinned down in
test_resource_validation.py.
"""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from core.api.catalog import KINDS
from core.api.manifests import dump_manifest, parse_manifest, resource_key
from core.meta.types import ObjectMeta
from core.namespaces.model import Namespace
from core.nodes.model import Node
from core.pods.containers import Container, default_image_pull_policy
from core.pods.model import Pod, PodSpec
from core.services.model import Service
from core.workloads.models import Deployment

# --- real manifests ---------------------------------------------------------------------------

NGINX_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: nginx
spec:
  containers:
  - name: nginx
    image: nginx:1.14.2
    ports:
    - containerPort: 80
"""

# `kubectl get pod -o yaml --show-managed-fields` from a kind cluster (trimmed, ids changed).
EXPORTED_POD = """
apiVersion: v1
kind: Pod
metadata:
  creationTimestamp: "2024-05-02T10:11:12Z"
  generateName: web-7d4b9c8f5-
  labels:
    app: web
    pod-template-hash: 7d4b9c8f5
  managedFields:
  - apiVersion: v1
    fieldsType: FieldsV1
    fieldsV1:
      f:metadata:
        f:generateName: {}
    manager: kube-controller-manager
    operation: Update
    time: "2024-05-02T10:11:12Z"
  name: web-7d4b9c8f5-x2x8q
  namespace: default
  ownerReferences:
  - apiVersion: apps/v1
    blockOwnerDeletion: true
    controller: true
    kind: ReplicaSet
    name: web-7d4b9c8f5
    uid: 5c1e4ad5-3c2b-4f0e-9a51-3f1b8c2d9e10
  resourceVersion: "4821"
  uid: 0f2d8a4e-6b1c-4c8e-8f3a-2b7d9e1c5a42
spec:
  containers:
  - image: nginx:1.25
    imagePullPolicy: IfNotPresent
    name: nginx
    ports:
    - containerPort: 80
      name: http
      protocol: TCP
    resources:
      limits:
        memory: 256Mi
      requests:
        cpu: 250m
        memory: 128Mi
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: File
    volumeMounts:
    - mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      name: kube-api-access-9zt7k
      readOnly: true
  dnsPolicy: ClusterFirst
  enableServiceLinks: true
  nodeName: kind-worker
  preemptionPolicy: PreemptLowerPriority
  priority: 0
  restartPolicy: Always
  schedulerName: default-scheduler
  securityContext: {}
  serviceAccount: default
  serviceAccountName: default
  terminationGracePeriodSeconds: 30
  tolerations:
  - effect: NoExecute
    key: node.kubernetes.io/not-ready
    operator: Exists
    tolerationSeconds: 300
  - effect: NoExecute
    key: node.kubernetes.io/unreachable
    operator: Exists
    tolerationSeconds: 300
  volumes:
  - name: kube-api-access-9zt7k
    projected:
      defaultMode: 420
      sources:
      - serviceAccountToken:
          expirationSeconds: 3607
          path: token
      - configMap:
          items:
          - key: ca.crt
            path: ca.crt
          name: kube-root-ca.crt
      - downwardAPI:
          items:
          - fieldRef:
              apiVersion: v1
              fieldPath: metadata.namespace
            path: namespace
status:
  conditions:
  - lastProbeTime: null
    lastTransitionTime: "2024-05-02T10:11:14Z"
    status: "True"
    type: Ready
  containerStatuses:
  - containerID: containerd://4f1c
    image: docker.io/library/nginx:1.25
    imageID: docker.io/library/nginx@sha256:0d17
    lastState: {}
    name: nginx
    ready: true
    restartCount: 0
    started: true
    state:
      running:
        startedAt: "2024-05-02T10:11:13Z"
  hostIP: 172.18.0.3
  hostIPs:
  - ip: 172.18.0.3
  phase: Running
  podIP: 10.244.1.7
  podIPs:
  - ip: 10.244.1.7
  qosClass: Burstable
  startTime: "2024-05-02T10:11:12Z"
"""

SCHEDULING_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: with-everything
  namespace: shop
  labels: {app: cart, tier: backend}
  annotations: {example.com/owner: team-cart}
spec:
  priorityClassName: high-priority
  nodeSelector:
    kubernetes.io/os: linux
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - key: topology.kubernetes.io/zone
            operator: In
            values: [antarctica-east1, antarctica-west1]
          - key: example.com/gpu-count
            operator: Gt
            values: ["1"]
          matchFields:
          - key: metadata.name
            operator: NotIn
            values: [node-7]
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 1
        preference:
          matchExpressions:
          - key: another-node-label-key
            operator: Exists
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          labelSelector:
            matchExpressions:
            - key: app
              operator: In
              values: [cart]
          topologyKey: kubernetes.io/hostname
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector:
          matchLabels: {app: cache}
        topologyKey: topology.kubernetes.io/zone
        namespaces: [shop]
  tolerations:
  - key: dedicated
    operator: Equal
    value: cart
    effect: NoSchedule
  - operator: Exists
  topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: DoNotSchedule
    minDomains: 2
    labelSelector:
      matchLabels: {app: cart}
    matchLabelKeys: [pod-template-hash]
    nodeAffinityPolicy: Honor
    nodeTaintsPolicy: Ignore
  initContainers:
  - name: migrate
    image: registry.example.com:5000/cart/migrate@sha256:abcdef
    command: [/migrate, --up]
  - name: log-shipper
    image: fluent/fluent-bit:3.0
    restartPolicy: Always
    readinessProbe:
      exec: {command: [cat, /tmp/ready]}
  containers:
  - name: cart
    image: registry.example.com:5000/cart/api
    args: [--port=8080]
    workingDir: /srv
    ports:
    - {name: http, containerPort: 8080}
    - {name: metrics, containerPort: 9090}
    - {name: dns, containerPort: 53, protocol: UDP, hostPort: 5353}
    env:
    - {name: MODE, value: production}
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: APP
      valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}
    - name: MEM_LIMIT
      valueFrom: {resourceFieldRef: {containerName: cart, resource: limits.memory, divisor: 1Mi}}
    - name: DB_HOST
      valueFrom: {configMapKeyRef: {name: cart-config, key: db.host}}
    - name: DB_PASSWORD
      valueFrom: {secretKeyRef: {name: cart-secrets, key: DB_PASSWORD, optional: false}}
    envFrom:
    - configMapRef: {name: cart-env}
      prefix: CART_
    resources:
      requests: {cpu: 0.25, memory: 64Mi}
      limits: {cpu: 1, memory: 128Mi, example.com/gpu: 2}
    startupProbe:
      httpGet: {path: /started, port: 8080}
      failureThreshold: 30
      periodSeconds: 10
    livenessProbe:
      grpc: {port: 9090, service: liveness}
      initialDelaySeconds: 5
    readinessProbe:
      tcpSocket: {port: http}
      timeoutSeconds: 0
    lifecycle:
      preStop:
        exec: {command: [/bin/sh, -c, sleep 5]}
      postStart:
        httpGet:
          path: /warm
          port: 8080
          scheme: HTTPS
          httpHeaders: [{name: X-Warm, value: "1"}]
  terminationGracePeriodSeconds: 60
  overhead: {cpu: 250m, memory: 120Mi}
"""

NGINX_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
"""

EXPORTED_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  annotations:
    deployment.kubernetes.io/revision: "2"
  creationTimestamp: "2024-05-02T10:00:00Z"
  generation: 2
  name: web
  namespace: shop
  resourceVersion: "9911"
  uid: 1b7c8e2a-0d4f-4a6b-9c3e-5f2a1d8b7c60
spec:
  progressDeadlineSeconds: 600
  replicas: 2
  revisionHistoryLimit: 10
  selector:
    matchExpressions:
    - {key: app, operator: In, values: [web]}
    - {key: canary, operator: DoesNotExist}
  strategy:
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
    type: RollingUpdate
  template:
    metadata:
      creationTimestamp: null
      labels:
        app: web
    spec:
      containers:
      - image: nginx:1.25
        imagePullPolicy: IfNotPresent
        name: nginx
        resources: {}
        terminationMessagePath: /dev/termination-log
        terminationMessagePolicy: File
      dnsPolicy: ClusterFirst
      restartPolicy: Always
      schedulerName: default-scheduler
      securityContext: {}
      terminationGracePeriodSeconds: 30
status:
  availableReplicas: 2
  conditions:
  - lastTransitionTime: "2024-05-02T10:00:05Z"
    lastUpdateTime: "2024-05-02T10:00:05Z"
    message: Deployment has minimum availability.
    reason: MinimumReplicasAvailable
    status: "True"
    type: Available
  observedGeneration: 2
  readyReplicas: 2
  replicas: 2
  updatedReplicas: 2
"""

RECREATE_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: db, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  strategy: {type: Recreate}
  template:
    metadata: {labels: {app: db, extra: label}}
    spec:
      containers: [{name: postgres, image: "postgres:16"}]
"""

CLUSTERIP_SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app.kubernetes.io/name: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
"""

NODEPORT_SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30007}
  - {name: https, port: 443}
  sessionAffinity: ClientIP
  externalTrafficPolicy: Local
"""

EXPORTED_LB_SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: ingress
  namespace: infra
  uid: 8a1f
  resourceVersion: "77"
spec:
  allocateLoadBalancerNodePorts: true
  clusterIP: 10.96.14.2
  clusterIPs: [10.96.14.2]
  externalTrafficPolicy: Cluster
  internalTrafficPolicy: Cluster
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  ports:
  - {name: http, nodePort: 31080, port: 80, protocol: TCP, targetPort: 8080}
  selector: {app: ingress}
  sessionAffinity: None
  type: LoadBalancer
status:
  loadBalancer:
    ingress:
    - ip: 192.0.2.127
"""

HEADLESS_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: db-headless}
spec:
  clusterIP: None
  selector: {app: db}
"""

EXTERNAL_NAME_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: my-database, namespace: prod}
spec:
  type: ExternalName
  externalName: my.database.example.com
"""

EXPORTED_NODE = """
apiVersion: v1
kind: Node
metadata:
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
  creationTimestamp: "2024-05-01T08:00:00Z"
  labels:
    beta.kubernetes.io/arch: amd64
    kubernetes.io/hostname: kind-worker
    kubernetes.io/os: linux
    topology.kubernetes.io/zone: zone-a
    node-role.kubernetes.io/worker: ""
  name: kind-worker
  resourceVersion: "5120"
  uid: 7e1d
spec:
  podCIDR: 10.244.1.0/24
  podCIDRs: [10.244.1.0/24]
  providerID: kind://docker/kind/kind-worker
  taints:
  - effect: NoSchedule
    key: dedicated
    value: gpu
  - effect: NoExecute
    key: node.kubernetes.io/unreachable
    timeAdded: "2024-05-02T09:00:00Z"
status:
  addresses:
  - {address: 172.18.0.3, type: InternalIP}
  - {address: kind-worker, type: Hostname}
  allocatable: {cpu: "8", ephemeral-storage: 263174212Ki, hugepages-2Mi: "0", memory: 16318416Ki,
    pods: "110"}
  capacity: {cpu: "8", ephemeral-storage: 263174212Ki, hugepages-2Mi: "0", memory: 16318416Ki,
    pods: "110", example.com/gpu: "4"}
  conditions:
  - lastHeartbeatTime: "2024-05-02T10:00:00Z"
    lastTransitionTime: "2024-05-01T08:00:10Z"
    message: kubelet is posting ready status
    reason: KubeletReady
    status: "True"
    type: Ready
  daemonEndpoints:
    kubeletEndpoint: {Port: 10250}
  images:
  - names: [docker.io/library/nginx:1.25]
    sizeBytes: 70000000
  nodeInfo:
    architecture: amd64
    bootID: 3f0c
    containerRuntimeVersion: containerd://1.7.13
    kernelVersion: 6.5.0
    kubeProxyVersion: v1.30.0
    kubeletVersion: v1.30.0
    machineID: 9a1b
    operatingSystem: linux
    osImage: Debian GNU/Linux 12 (bookworm)
    systemUUID: 2c4d
  runtimeHandlers:
  - features: {recursiveReadOnlyMounts: true}
    name: runc
"""

NAMESPACE = """
apiVersion: v1
kind: Namespace
metadata:
  name: team-a
  labels: {kubernetes.io/metadata.name: team-a}
spec:
  finalizers: [kubernetes]
status:
  phase: Active
"""

ALL_MANIFESTS = {
    "nginx-pod": NGINX_POD,
    "exported-pod": EXPORTED_POD,
    "scheduling-pod": SCHEDULING_POD,
    "nginx-deployment": NGINX_DEPLOYMENT,
    "exported-deployment": EXPORTED_DEPLOYMENT,
    "recreate-deployment": RECREATE_DEPLOYMENT,
    "clusterip-service": CLUSTERIP_SERVICE,
    "nodeport-service": NODEPORT_SERVICE,
    "exported-lb-service": EXPORTED_LB_SERVICE,
    "headless-service": HEADLESS_SERVICE,
    "external-name-service": EXTERNAL_NAME_SERVICE,
    "exported-node": EXPORTED_NODE,
    "namespace": NAMESPACE,
}


def load(text: str) -> object:
    return parse_manifest(yaml.safe_load(text))


@pytest.mark.parametrize("name", sorted(ALL_MANIFESTS))
def test_real_manifest_parses(name: str):
    doc = yaml.safe_load(ALL_MANIFESTS[name])
    resource = parse_manifest(doc)
    assert type(resource) is KINDS[doc["kind"]].model
    assert resource.metadata.name == doc["metadata"]["name"]


@pytest.mark.parametrize("name", sorted(ALL_MANIFESTS))
def test_dump_then_parse_gives_an_equal_resource(name: str):
    resource = load(ALL_MANIFESTS[name])
    dumped = dump_manifest(resource)
    assert parse_manifest(dumped) == resource
    assert dump_manifest(parse_manifest(dumped)) == dumped


@pytest.mark.parametrize("name", sorted(ALL_MANIFESTS))
def test_dump_is_plain_json_data_with_camel_case_keys(name: str):
    import json

    dumped = dump_manifest(load(ALL_MANIFESTS[name]))
    assert json.loads(json.dumps(dumped)) == dumped
    assert list(dumped)[:3] == ["apiVersion", "kind", "metadata"]
    text = json.dumps(dumped)
    for snake in ("api_version", "container_port", "node_selector", "termination_grace"):
        assert snake not in text


def test_exported_pod_keeps_server_managed_fields():
    pod = load(EXPORTED_POD)
    assert isinstance(pod, Pod)
    assert pod.metadata.uid == "0f2d8a4e-6b1c-4c8e-8f3a-2b7d9e1c5a42"
    assert pod.metadata.resource_version == "4821"
    assert pod.metadata.creation_timestamp == "2024-05-02T10:11:12Z"
    assert pod.metadata.owner_references[0].controller is True
    assert pod.status is not None and pod.status.phase == "Running"
    assert pod.status.pod_ip == "10.244.1.7"
    assert pod.spec.node_name == "kind-worker"


def test_scheduling_pod_fields_are_read():
    pod = load(SCHEDULING_POD)
    assert isinstance(pod, Pod)
    spec = pod.spec
    assert pod.metadata.namespace == "shop"
    assert spec.node_selector == {"kubernetes.io/os": "linux"}
    term = spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    assert term.node_selector_terms[0].match_expressions[1].operator == "Gt"
    assert spec.tolerations[1].operator == "Exists" and spec.tolerations[1].key is None
    assert spec.topology_spread_constraints[0].min_domains == 2
    assert spec.init_containers[1].restart_policy == "Always"
    cart = spec.containers[0]
    assert cart.ports[2].protocol == "UDP" and cart.ports[2].host_port == 5353
    assert cart.readiness_probe.tcp_socket.port == "http"
    assert cart.liveness_probe.grpc.port == 9090
    assert cart.lifecycle.post_start.http_get.scheme == "HTTPS"
    assert cart.env[3].value_from.resource_field_ref.divisor == "1Mi"
    assert spec.overhead == {"cpu": "250m", "memory": "120Mi"}


def test_unquoted_yaml_timestamps_are_kept_as_rfc3339_text():
    doc = yaml.safe_load(NGINX_POD)
    doc["metadata"]["creationTimestamp"] = yaml.safe_load("2024-05-02T10:11:12Z")
    assert parse_manifest(doc).metadata.creation_timestamp == "2024-05-02T10:11:12Z"


# --- defaults ---------------------------------------------------------------------------------


def test_pod_defaults_match_kubernetes():
    pod = load(NGINX_POD)
    assert isinstance(pod, Pod)
    assert pod.metadata.namespace == "default"
    assert pod.spec.restart_policy == "Always"
    assert pod.spec.termination_grace_period_seconds == 30
    assert pod.spec.scheduler_name == "default-scheduler"
    assert pod.spec.dns_policy == "ClusterFirst"
    container = pod.spec.containers[0]
    assert container.ports[0].protocol == "TCP"
    assert container.image_pull_policy == "IfNotPresent"


def test_probe_defaults_match_kubernetes_including_zero_meaning_default():
    pod = load(SCHEDULING_POD)
    cart = pod.spec.containers[0]
    liveness = cart.liveness_probe
    assert (
        liveness.initial_delay_seconds,
        liveness.timeout_seconds,
        liveness.period_seconds,
        liveness.success_threshold,
        liveness.failure_threshold,
    ) == (5, 1, 10, 1, 3)
    assert cart.readiness_probe.timeout_seconds == 1  # given as 0
    assert cart.startup_probe.failure_threshold == 30
    assert cart.startup_probe.http_get.scheme == "HTTP"


def test_http_get_path_defaults_to_slash():
    doc = yaml.safe_load(NGINX_POD)
    doc["spec"]["containers"][0]["livenessProbe"] = {"httpGet": {"port": 80}}
    probe = parse_manifest(doc).spec.containers[0].liveness_probe
    assert probe.http_get.path == "/"


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.25", "IfNotPresent"),
        ("localhost:5000/nginx", "Always"),
        ("localhost:5000/nginx:1.0", "IfNotPresent"),
        ("nginx@sha256:abc", "IfNotPresent"),
        ("nginx:latest@sha256:abc", "Always"),
    ],
)
def test_image_pull_policy_defaults_from_the_tag(image: str, policy: str):
    assert default_image_pull_policy(image) == policy
    doc = yaml.safe_load(NGINX_POD)
    doc["spec"]["containers"][0]["image"] = image
    assert parse_manifest(doc).spec.containers[0].image_pull_policy == policy


def test_explicit_image_pull_policy_is_kept():
    doc = yaml.safe_load(NGINX_POD)
    doc["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    assert parse_manifest(doc).spec.containers[0].image_pull_policy == "Never"


def test_limits_fill_in_missing_requests():
    pod = load(SCHEDULING_POD)
    resources = pod.spec.containers[0].resources
    assert resources.requests == {"cpu": "250m", "memory": "64Mi", "example.com/gpu": "2"}
    assert resources.limits == {"cpu": "1", "memory": "128Mi", "example.com/gpu": "2"}
    exported = load(EXPORTED_POD).spec.containers[0].resources
    assert exported.requests == {"cpu": "250m", "memory": "128Mi"}


def test_quantities_are_stored_in_canonical_form():
    doc = yaml.safe_load(NGINX_POD)
    doc["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": 0.5, "memory": "1024Mi"},
        "limits": {"cpu": "1.5", "memory": "2048Mi", "ephemeral-storage": 1000},
    }
    resources = parse_manifest(doc).spec.containers[0].resources
    assert resources.requests == {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1k"}
    assert resources.limits == {"cpu": "1500m", "memory": "2Gi", "ephemeral-storage": "1k"}


def test_quantity_whitespace_is_trimmed_like_kubernetes_json_decoding():
    doc = yaml.safe_load(NGINX_POD)
    doc["spec"]["containers"][0]["resources"] = {"requests": {"cpu": " 100m "}}
    assert parse_manifest(doc).spec.containers[0].resources.requests == {"cpu": "100m"}


def test_field_ref_api_version_defaults_to_v1():
    pod = load(SCHEDULING_POD)
    assert pod.spec.containers[0].env[1].value_from.field_ref.api_version == "v1"


def test_deployment_defaults_match_kubernetes():
    deployment = load(NGINX_DEPLOYMENT)
    assert isinstance(deployment, Deployment)
    spec = deployment.spec
    assert spec.replicas == 3
    assert spec.strategy.type == "RollingUpdate"
    assert spec.strategy.rolling_update.max_surge == "25%"
    assert spec.strategy.rolling_update.max_unavailable == "25%"
    assert spec.min_ready_seconds == 0
    assert spec.revision_history_limit == 10
    assert spec.progress_deadline_seconds == 600
    assert spec.paused is False
    assert spec.template.spec.restart_policy == "Always"
    assert spec.template.spec.termination_grace_period_seconds == 30


def test_deployment_replicas_default_to_one_and_partial_rolling_update_is_completed():
    doc = yaml.safe_load(NGINX_DEPLOYMENT)
    del doc["spec"]["replicas"]
    doc["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2}}
    spec = parse_manifest(doc).spec
    assert spec.replicas == 1
    assert spec.strategy.rolling_update.max_surge == 2
    assert spec.strategy.rolling_update.max_unavailable == "25%"


def test_recreate_strategy_has_no_rolling_update():
    deployment = load(RECREATE_DEPLOYMENT)
    assert deployment.spec.strategy.type == "Recreate"
    assert deployment.spec.strategy.rolling_update is None


def test_deployment_selector_with_expressions_matches_template():
    deployment = load(EXPORTED_DEPLOYMENT)
    assert deployment.spec.selector.matches({"app": "web"})
    assert not deployment.spec.selector.matches({"app": "web", "canary": "yes"})
    assert deployment.spec.strategy.rolling_update.max_unavailable == 0


def test_service_defaults_match_kubernetes():
    service = load(CLUSTERIP_SERVICE)
    assert isinstance(service, Service)
    assert service.spec.type == "ClusterIP"
    assert service.spec.session_affinity == "None"
    assert service.spec.ports[0].protocol == "TCP"
    assert service.spec.ports[0].target_port == 9376
    nodeport = load(NODEPORT_SERVICE)
    assert nodeport.spec.ports[0].target_port == "http"
    assert nodeport.spec.ports[1].target_port == 443  # defaults to port


def test_node_is_cluster_scoped_and_reads_capacity_as_canonical_quantities():
    node = load(EXPORTED_NODE)
    assert isinstance(node, Node)
    assert node.metadata.namespace is None
    assert node.status.allocatable["memory"] == "16318416Ki"
    assert node.status.capacity["example.com/gpu"] == "4"
    assert node.spec.taints[0].value == "gpu"
    assert node.spec.pod_cidr == "10.244.1.0/24"
    assert node.status.node_info["kubeletVersion"] == "v1.30.0"


def test_node_without_spec_gets_an_empty_one():
    node = parse_manifest({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    assert node.spec.taints is None and node.spec.unschedulable is None


def test_namespace_is_cluster_scoped():
    namespace = load(NAMESPACE)
    assert isinstance(namespace, Namespace)
    assert namespace.metadata.namespace is None
    assert namespace.spec.finalizers == ["kubernetes"]


def test_generate_name_alone_is_enough():
    doc = yaml.safe_load(NGINX_POD)
    doc["metadata"] = {"generateName": "web-"}
    pod = parse_manifest(doc)
    assert pod.metadata.name is None and pod.metadata.generate_name == "web-"


# --- keys, construction, the registry ---------------------------------------------------------


def test_resource_key_is_kind_namespace_name():
    assert resource_key(load(NGINX_POD)) == ("Pod", "default", "nginx")
    assert resource_key(load(EXPORTED_DEPLOYMENT)) == ("Deployment", "shop", "web")
    assert resource_key(load(EXPORTED_NODE)) == ("Node", "", "kind-worker")
    assert resource_key(load(NAMESPACE)) == ("Namespace", "", "team-a")


def test_kinds_registry():
    assert KINDS["Pod"] == ("v1", Pod, True)
    assert KINDS["Deployment"].api_version == "apps/v1"
    assert KINDS["Node"].namespaced is False
    assert KINDS["Namespace"].namespaced is False
    assert KINDS["Service"].model is Service


def test_models_can_be_built_in_python_with_snake_case_names():
    pod = Pod(
        metadata=ObjectMeta(name="built"),
        spec=PodSpec(containers=[Container(name="app", image="busybox:1.36")]),
    )
    assert pod.metadata.namespace == "default"
    assert pod.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert parse_manifest(dump_manifest(pod)) == pod


# --- properties and performance ---------------------------------------------------------------

_dns_label = st.from_regex(r"[a-z]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
_label_value = st.from_regex(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,8})?[A-Za-z0-9])?", fullmatch=True)
_quantity = st.builds(
    lambda whole, frac, suffix: f"{whole}{frac}{suffix}",
    st.integers(min_value=0, max_value=4096),
    st.sampled_from(["", ".5", ".25", ".001"]),
    st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "e3", "e-3"]),
)


@st.composite
def pod_manifests(draw: st.DrawFn) -> dict:
    names = draw(st.lists(_dns_label, min_size=1, max_size=3, unique=True))
    ports = iter(draw(st.lists(st.integers(1, 65535), min_size=6, max_size=6, unique=True)))
    containers = []
    for name in names:
        container: dict = {"name": name, "image": draw(st.sampled_from(["nginx", "redis:7"]))}
        if draw(st.booleans()):
            container["ports"] = [{"containerPort": next(ports)}, {"containerPort": next(ports)}]
        if draw(st.booleans()):
            requests = {"cpu": draw(_quantity), "memory": draw(_quantity)}
            container["resources"] = {"requests": requests}
        containers.append(container)
    labels = draw(st.dictionaries(_dns_label, _label_value, max_size=3))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": draw(_dns_label), "labels": labels},
        "spec": {
            "containers": containers,
            "restartPolicy": draw(st.sampled_from(["Always", "OnFailure", "Never"])),
            "nodeSelector": draw(st.dictionaries(_dns_label, _label_value, max_size=2)),
        },
    }


@settings(max_examples=60, deadline=None)
@given(pod_manifests())
def test_generated_pods_round_trip(doc: dict):
    pod = parse_manifest(doc)
    dumped = dump_manifest(pod)
    assert parse_manifest(dumped) == pod
    assert dump_manifest(parse_manifest(dumped)) == dumped
