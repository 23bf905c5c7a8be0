"""The Kubernetes protobuf messages fleetlog reads, by field number: the wire half of the kinds
the HTTP door serves.

Why this exists: since client-go 1.32 every typed client — so ``kubectl create namespace``,
``create deployment``, ``create secret``, ``create role``… — sends its body as
``application/vnd.kubernetes.protobuf``, not JSON. Decoding needs each message's field numbers
(the JSON names are the proto names in Kubernetes' API). This table lists them, message by
message, for the kinds the door serves and the parts of a pod template users write; a body
holding a field not listed is refused by name (``core.kubeapi.protobuf``), never half read.

One line a field: ``NUMBER NAME TYPE [FLAGS]``. TYPE is a scalar (``string``, ``int32``,
``int64``, ``bool``, ``bytes``), a message of this table, ``map<string,T>`` or one of the
special messages (``Time``, ``Quantity``, ``IntOrString``, ``FieldsV1``), whose JSON is not
their proto shape. FLAGS:

* ``repeated``: a list.
* ``ptr``: a Go pointer (or a field without ``omitempty``): present means set, even to its zero
  value (``replicas: 0``). Other scalars are written by Go even when zero, and read as absent
  then, as the JSON encoder's ``omitempty`` leaves them out.
* ``inline``: an embedded Go struct, whose fields JSON lifts into the parent
  (``configMapKeyRef.localObjectReference.name`` is ``configMapKeyRef.name``).
* ``ignored``: read and dropped (an object's ``status``: the server sets it, as kube does on a
  create).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SCALARS: Final = frozenset({"string", "int32", "int64", "bool", "bytes"})
SPECIAL: Final = frozenset({"Time", "Quantity", "IntOrString", "FieldsV1", "Ignored"})


@dataclass(frozen=True, slots=True)
class Field:
    number: int
    name: str
    type: str
    """A scalar, a message of :data:`MESSAGES`, one of :data:`SPECIAL`, or a map's value type."""
    repeated: bool = False
    is_map: bool = False
    ptr: bool = False
    inline: bool = False


_TABLE: Final = {
    # -- the envelope and apimachinery ----------------------------------------------------------
    "Unknown": "1 typeMeta TypeMeta; 2 raw bytes; 3 contentEncoding string; 4 contentType string",
    "TypeMeta": "1 apiVersion string; 2 kind string",
    "ObjectMeta": (
        "1 name string; 2 generateName string; 3 namespace string; 4 selfLink string;"
        " 5 uid string; 6 resourceVersion string; 7 generation int64; 8 creationTimestamp Time;"
        " 9 deletionTimestamp Time; 10 deletionGracePeriodSeconds int64 ptr;"
        " 11 labels map<string,string>; 12 annotations map<string,string>;"
        " 13 ownerReferences OwnerReference repeated; 14 finalizers string repeated;"
        " 17 managedFields ManagedFieldsEntry repeated"
    ),
    "OwnerReference": (
        "5 apiVersion string; 1 kind string; 3 name string; 4 uid string; 6 controller bool ptr;"
        " 7 blockOwnerDeletion bool ptr"
    ),
    "ManagedFieldsEntry": (
        "1 manager string; 2 operation string; 3 apiVersion string; 4 time Time;"
        " 6 fieldsType string; 7 fieldsV1 FieldsV1; 8 subresource string"
    ),
    "LabelSelector": (
        "1 matchLabels map<string,string>; 2 matchExpressions LabelSelectorRequirement repeated"
    ),
    "LabelSelectorRequirement": "1 key string; 2 operator string; 3 values string repeated",
    "DeleteOptions": (
        "1 gracePeriodSeconds int64 ptr; 2 preconditions Preconditions;"
        " 3 orphanDependents bool ptr; 4 propagationPolicy string ptr; 5 dryRun string repeated"
    ),
    "Preconditions": "1 uid string ptr; 2 resourceVersion string ptr",
    # -- core/v1 --------------------------------------------------------------------------------
    "Namespace": "1 metadata ObjectMeta; 2 spec NamespaceSpec; 3 status Ignored",
    "NamespaceSpec": "1 finalizers string repeated",
    "Secret": (
        "1 metadata ObjectMeta; 5 immutable bool ptr; 2 data map<string,bytes>;"
        " 4 stringData map<string,string>; 3 type string"
    ),
    "ConfigMap": (
        "1 metadata ObjectMeta; 4 immutable bool ptr; 2 data map<string,string>;"
        " 3 binaryData map<string,bytes>"
    ),
    "Service": "1 metadata ObjectMeta; 2 spec ServiceSpec; 3 status Ignored",
    "ServiceSpec": (
        "1 ports ServicePort repeated; 2 selector map<string,string>; 3 clusterIP string;"
        " 18 clusterIPs string repeated; 4 type string; 5 externalIPs string repeated;"
        " 7 sessionAffinity string; 8 loadBalancerIP string;"
        " 9 loadBalancerSourceRanges string repeated; 10 externalName string;"
        " 11 externalTrafficPolicy string; 12 healthCheckNodePort int32;"
        " 13 publishNotReadyAddresses bool; 14 sessionAffinityConfig SessionAffinityConfig;"
        " 19 ipFamilies string repeated; 17 ipFamilyPolicy string ptr;"
        " 20 allocateLoadBalancerNodePorts bool ptr; 21 loadBalancerClass string ptr;"
        " 22 internalTrafficPolicy string ptr; 23 trafficDistribution string ptr"
    ),
    "ServicePort": (
        "1 name string; 2 protocol string; 6 appProtocol string ptr; 3 port int32 ptr;"
        " 4 targetPort IntOrString; 5 nodePort int32"
    ),
    "SessionAffinityConfig": "1 clientIP ClientIPConfig",
    "ClientIPConfig": "1 timeoutSeconds int32 ptr",
    "ResourceQuota": "1 metadata ObjectMeta; 2 spec ResourceQuotaSpec; 3 status Ignored",
    "ResourceQuotaSpec": (
        "1 hard map<string,Quantity>; 2 scopes string repeated; 3 scopeSelector ScopeSelector"
    ),
    "ScopeSelector": "1 matchExpressions ScopedResourceSelectorRequirement repeated",
    "ScopedResourceSelectorRequirement": (
        "1 scopeName string; 2 operator string; 3 values string repeated"
    ),
    "LimitRange": "1 metadata ObjectMeta; 2 spec LimitRangeSpec",
    "LimitRangeSpec": "1 limits LimitRangeItem repeated",
    "LimitRangeItem": (
        "1 type string; 2 max map<string,Quantity>; 3 min map<string,Quantity>;"
        " 4 default map<string,Quantity>; 5 defaultRequest map<string,Quantity>;"
        " 6 maxLimitRequestRatio map<string,Quantity>"
    ),
    "Pod": "1 metadata ObjectMeta; 2 spec PodSpec; 3 status Ignored",
    "PodTemplateSpec": "1 metadata ObjectMeta; 2 spec PodSpec",
    "PodSpec": (
        "1 volumes Volume repeated; 20 initContainers Container repeated;"
        " 2 containers Container repeated; 3 restartPolicy string;"
        " 4 terminationGracePeriodSeconds int64 ptr; 5 activeDeadlineSeconds int64 ptr;"
        " 6 dnsPolicy string; 7 nodeSelector map<string,string>; 8 serviceAccountName string;"
        " 9 serviceAccount string; 21 automountServiceAccountToken bool ptr; 10 nodeName string;"
        " 11 hostNetwork bool; 12 hostPID bool; 13 hostIPC bool;"
        " 27 shareProcessNamespace bool ptr; 14 securityContext PodSecurityContext;"
        " 15 imagePullSecrets LocalObjectReference repeated; 16 hostname string;"
        " 17 subdomain string; 18 affinity Affinity; 19 schedulerName string;"
        " 22 tolerations Toleration repeated; 23 hostAliases HostAlias repeated;"
        " 24 priorityClassName string; 25 priority int32 ptr; 26 dnsConfig PodDNSConfig;"
        " 28 readinessGates PodReadinessGate repeated; 29 runtimeClassName string ptr;"
        " 30 enableServiceLinks bool ptr; 31 preemptionPolicy string ptr;"
        " 32 overhead map<string,Quantity>;"
        " 33 topologySpreadConstraints TopologySpreadConstraint repeated;"
        " 35 setHostnameAsFQDN bool ptr; 36 os PodOS; 37 hostUsers bool ptr;"
        " 38 schedulingGates PodSchedulingGate repeated; 40 resources ResourceRequirements"
    ),
    "Container": (
        "1 name string; 2 image string; 3 command string repeated; 4 args string repeated;"
        " 5 workingDir string; 6 ports ContainerPort repeated; 19 envFrom EnvFromSource repeated;"
        " 7 env EnvVar repeated; 8 resources ResourceRequirements;"
        " 23 resizePolicy ContainerResizePolicy repeated; 24 restartPolicy string ptr;"
        " 9 volumeMounts VolumeMount repeated; 10 livenessProbe Probe; 11 readinessProbe Probe;"
        " 22 startupProbe Probe; 12 lifecycle Lifecycle; 13 terminationMessagePath string;"
        " 20 terminationMessagePolicy string; 14 imagePullPolicy string;"
        " 15 securityContext SecurityContext; 16 stdin bool; 17 stdinOnce bool; 18 tty bool"
    ),
    "ContainerPort": (
        "1 name string; 2 hostPort int32; 3 containerPort int32 ptr; 4 protocol string;"
        " 5 hostIP string"
    ),
    "ContainerResizePolicy": "1 resourceName string; 2 restartPolicy string",
    "EnvVar": "1 name string; 2 value string; 3 valueFrom EnvVarSource",
    "EnvVarSource": (
        "1 fieldRef ObjectFieldSelector; 2 resourceFieldRef ResourceFieldSelector;"
        " 3 configMapKeyRef ConfigMapKeySelector; 4 secretKeyRef SecretKeySelector"
    ),
    "ObjectFieldSelector": "1 apiVersion string; 2 fieldPath string",
    "ResourceFieldSelector": "1 containerName string; 2 resource string; 3 divisor Quantity",
    "ConfigMapKeySelector": (
        "1 localObjectReference LocalObjectReference inline; 2 key string; 3 optional bool ptr"
    ),
    "SecretKeySelector": (
        "1 localObjectReference LocalObjectReference inline; 2 key string; 3 optional bool ptr"
    ),
    "LocalObjectReference": "1 name string",
    "EnvFromSource": (
        "1 prefix string; 2 configMapRef ConfigMapEnvSource; 3 secretRef SecretEnvSource"
    ),
    "ConfigMapEnvSource": (
        "1 localObjectReference LocalObjectReference inline; 2 optional bool ptr"
    ),
    "SecretEnvSource": "1 localObjectReference LocalObjectReference inline; 2 optional bool ptr",
    "ResourceRequirements": (
        "1 limits map<string,Quantity>; 2 requests map<string,Quantity>;"
        " 3 claims ResourceClaim repeated"
    ),
    "ResourceClaim": "1 name string; 2 request string",
    "VolumeMount": (
        "1 name string; 2 readOnly bool; 7 recursiveReadOnly string ptr; 3 mountPath string;"
        " 4 subPath string; 5 mountPropagation string ptr; 6 subPathExpr string"
    ),
    "Volume": "1 name string; 2 volumeSource VolumeSource inline",
    "VolumeSource": (
        "1 hostPath HostPathVolumeSource; 2 emptyDir EmptyDirVolumeSource;"
        " 6 secret SecretVolumeSource; 10 persistentVolumeClaim PersistentVolumeClaimVolumeSource;"
        " 16 downwardAPI DownwardAPIVolumeSource; 19 configMap ConfigMapVolumeSource;"
        " 26 projected ProjectedVolumeSource"
    ),
    "HostPathVolumeSource": "1 path string; 2 type string ptr",
    "EmptyDirVolumeSource": "1 medium string; 2 sizeLimit Quantity",
    "SecretVolumeSource": (
        "1 secretName string; 2 items KeyToPath repeated; 3 defaultMode int32 ptr;"
        " 4 optional bool ptr"
    ),
    "ConfigMapVolumeSource": (
        "1 localObjectReference LocalObjectReference inline; 2 items KeyToPath repeated;"
        " 3 defaultMode int32 ptr; 4 optional bool ptr"
    ),
    "KeyToPath": "1 key string; 2 path string; 3 mode int32 ptr",
    "PersistentVolumeClaimVolumeSource": "1 claimName string; 2 readOnly bool",
    "DownwardAPIVolumeSource": ("1 items DownwardAPIVolumeFile repeated; 2 defaultMode int32 ptr"),
    "DownwardAPIVolumeFile": (
        "1 path string; 2 fieldRef ObjectFieldSelector; 3 resourceFieldRef ResourceFieldSelector;"
        " 4 mode int32 ptr"
    ),
    "ProjectedVolumeSource": "1 sources VolumeProjection repeated; 2 defaultMode int32 ptr",
    "VolumeProjection": (
        "1 secret SecretProjection; 2 downwardAPI DownwardAPIProjection;"
        " 3 configMap ConfigMapProjection"
    ),
    "SecretProjection": (
        "1 localObjectReference LocalObjectReference inline; 2 items KeyToPath repeated;"
        " 4 optional bool ptr"
    ),
    "ConfigMapProjection": (
        "1 localObjectReference LocalObjectReference inline; 2 items KeyToPath repeated;"
        " 4 optional bool ptr"
    ),
    "DownwardAPIProjection": "1 items DownwardAPIVolumeFile repeated",
    "Probe": (
        "1 handler ProbeHandler inline; 2 initialDelaySeconds int32; 3 timeoutSeconds int32;"
        " 4 periodSeconds int32; 5 successThreshold int32; 6 failureThreshold int32;"
        " 7 terminationGracePeriodSeconds int64 ptr"
    ),
    "ProbeHandler": (
        "1 exec ExecAction; 2 httpGet HTTPGetAction; 3 tcpSocket TCPSocketAction; 4 grpc GRPCAction"
    ),
    "ExecAction": "1 command string repeated",
    "HTTPGetAction": (
        "1 path string; 2 port IntOrString; 3 host string; 4 scheme string;"
        " 5 httpHeaders HTTPHeader repeated"
    ),
    "HTTPHeader": "1 name string; 2 value string ptr",
    "TCPSocketAction": "1 port IntOrString; 2 host string",
    "GRPCAction": "1 port int32 ptr; 2 service string ptr",
    "Lifecycle": (
        "1 postStart LifecycleHandler; 2 preStop LifecycleHandler; 3 stopSignal string ptr"
    ),
    "LifecycleHandler": (
        "1 exec ExecAction; 2 httpGet HTTPGetAction; 3 tcpSocket TCPSocketAction;"
        " 4 sleep SleepAction"
    ),
    "SleepAction": "1 seconds int64 ptr",
    "Toleration": (
        "1 key string; 2 operator string; 3 value string; 4 effect string;"
        " 5 tolerationSeconds int64 ptr"
    ),
    "PodSecurityContext": (
        "1 seLinuxOptions SELinuxOptions; 2 runAsUser int64 ptr; 6 runAsGroup int64 ptr;"
        " 3 runAsNonRoot bool ptr; 4 supplementalGroups int64 repeated; 5 fsGroup int64 ptr;"
        " 7 sysctls Sysctl repeated; 9 fsGroupChangePolicy string ptr;"
        " 10 seccompProfile SeccompProfile; 11 appArmorProfile AppArmorProfile"
    ),
    "SecurityContext": (
        "1 capabilities Capabilities; 2 privileged bool ptr; 3 seLinuxOptions SELinuxOptions;"
        " 4 runAsUser int64 ptr; 8 runAsGroup int64 ptr; 5 runAsNonRoot bool ptr;"
        " 6 readOnlyRootFilesystem bool ptr; 7 allowPrivilegeEscalation bool ptr;"
        " 9 procMount string ptr; 11 seccompProfile SeccompProfile;"
        " 12 appArmorProfile AppArmorProfile"
    ),
    "Capabilities": "1 add string repeated; 2 drop string repeated",
    "SELinuxOptions": "1 user string; 2 role string; 3 type string; 4 level string",
    "SeccompProfile": "1 type string; 2 localhostProfile string ptr",
    "AppArmorProfile": "1 type string; 2 localhostProfile string ptr",
    "Sysctl": "1 name string; 2 value string ptr",
    "PodDNSConfig": (
        "1 nameservers string repeated; 2 searches string repeated;"
        " 3 options PodDNSConfigOption repeated"
    ),
    "PodDNSConfigOption": "1 name string; 2 value string ptr",
    "HostAlias": "1 ip string ptr; 2 hostnames string repeated",
    "PodReadinessGate": "1 conditionType string ptr",
    "PodSchedulingGate": "1 name string ptr",
    "PodOS": "1 name string ptr",
    "TopologySpreadConstraint": (
        "1 maxSkew int32 ptr; 2 topologyKey string; 3 whenUnsatisfiable string;"
        " 4 labelSelector LabelSelector; 5 minDomains int32 ptr;"
        " 6 nodeAffinityPolicy string ptr; 7 nodeTaintsPolicy string ptr;"
        " 8 matchLabelKeys string repeated"
    ),
    "Affinity": (
        "1 nodeAffinity NodeAffinity; 2 podAffinity PodAffinity; 3 podAntiAffinity PodAntiAffinity"
    ),
    "NodeAffinity": (
        "1 requiredDuringSchedulingIgnoredDuringExecution NodeSelector;"
        " 2 preferredDuringSchedulingIgnoredDuringExecution PreferredSchedulingTerm repeated"
    ),
    "NodeSelector": "1 nodeSelectorTerms NodeSelectorTerm repeated",
    "NodeSelectorTerm": (
        "1 matchExpressions NodeSelectorRequirement repeated;"
        " 2 matchFields NodeSelectorRequirement repeated"
    ),
    "NodeSelectorRequirement": "1 key string; 2 operator string; 3 values string repeated",
    "PreferredSchedulingTerm": "1 weight int32 ptr; 2 preference NodeSelectorTerm",
    "PodAffinity": (
        "1 requiredDuringSchedulingIgnoredDuringExecution PodAffinityTerm repeated;"
        " 2 preferredDuringSchedulingIgnoredDuringExecution WeightedPodAffinityTerm repeated"
    ),
    "PodAntiAffinity": (
        "1 requiredDuringSchedulingIgnoredDuringExecution PodAffinityTerm repeated;"
        " 2 preferredDuringSchedulingIgnoredDuringExecution WeightedPodAffinityTerm repeated"
    ),
    "PodAffinityTerm": (
        "1 labelSelector LabelSelector; 2 namespaces string repeated; 3 topologyKey string;"
        " 4 namespaceSelector LabelSelector; 5 matchLabelKeys string repeated;"
        " 6 mismatchLabelKeys string repeated"
    ),
    "WeightedPodAffinityTerm": "1 weight int32 ptr; 2 podAffinityTerm PodAffinityTerm",
    "Binding": "1 metadata ObjectMeta; 2 target ObjectReference",
    "ObjectReference": (
        "1 kind string; 2 namespace string; 3 name string; 4 uid string; 5 apiVersion string;"
        " 6 resourceVersion string; 7 fieldPath string"
    ),
    # -- apps/v1 --------------------------------------------------------------------------------
    "Deployment": "1 metadata ObjectMeta; 2 spec DeploymentSpec; 3 status Ignored",
    "DeploymentSpec": (
        "1 replicas int32 ptr; 2 selector LabelSelector; 3 template PodTemplateSpec;"
        " 4 strategy DeploymentStrategy; 5 minReadySeconds int32;"
        " 6 revisionHistoryLimit int32 ptr; 7 paused bool; 9 progressDeadlineSeconds int32 ptr"
    ),
    "DeploymentStrategy": "1 type string; 2 rollingUpdate RollingUpdateDeployment",
    "RollingUpdateDeployment": "1 maxUnavailable IntOrString; 2 maxSurge IntOrString",
    "ReplicaSet": "1 metadata ObjectMeta; 2 spec ReplicaSetSpec; 3 status Ignored",
    "ReplicaSetSpec": (
        "1 replicas int32 ptr; 4 minReadySeconds int32; 2 selector LabelSelector;"
        " 3 template PodTemplateSpec"
    ),
    # -- autoscaling/v1 (a scale subresource's body) ----------------------------------------------
    "Scale": "1 metadata ObjectMeta; 2 spec ScaleSpec; 3 status Ignored",
    "ScaleSpec": "1 replicas int32 ptr",
    # -- autoscaling/v2 and v1 (kubectl autoscale) ------------------------------------------------
    "HorizontalPodAutoscaler": (
        "1 metadata ObjectMeta; 2 spec HorizontalPodAutoscalerSpec; 3 status Ignored"
    ),
    "HorizontalPodAutoscalerSpec": (
        "1 scaleTargetRef CrossVersionObjectReference; 2 minReplicas int32 ptr;"
        " 3 maxReplicas int32 ptr; 4 metrics MetricSpec repeated;"
        " 5 behavior HorizontalPodAutoscalerBehavior"
    ),
    "CrossVersionObjectReference": ("1 kind string ptr; 2 name string ptr; 3 apiVersion string"),
    "MetricSpec": (
        "1 type string ptr; 2 object ObjectMetricSource; 3 pods PodsMetricSource;"
        " 4 resource ResourceMetricSource; 7 containerResource ContainerResourceMetricSource;"
        " 5 external ExternalMetricSource"
    ),
    "ResourceMetricSource": "1 name string ptr; 2 target MetricTarget",
    "ContainerResourceMetricSource": (
        "1 name string ptr; 2 target MetricTarget; 3 container string ptr"
    ),
    "PodsMetricSource": "1 metric MetricIdentifier; 2 target MetricTarget",
    "ObjectMetricSource": (
        "1 describedObject CrossVersionObjectReference; 2 target MetricTarget;"
        " 3 metric MetricIdentifier"
    ),
    "ExternalMetricSource": "1 metric MetricIdentifier; 2 target MetricTarget",
    "MetricIdentifier": "1 name string ptr; 2 selector LabelSelector",
    "MetricTarget": (
        "1 type string ptr; 2 value Quantity; 3 averageValue Quantity;"
        " 4 averageUtilization int32 ptr"
    ),
    "HorizontalPodAutoscalerBehavior": "1 scaleUp HPAScalingRules; 2 scaleDown HPAScalingRules",
    "HPAScalingRules": (
        "3 stabilizationWindowSeconds int32 ptr; 1 selectPolicy string ptr;"
        " 2 policies HPAScalingPolicy repeated; 4 tolerance Quantity"
    ),
    "HPAScalingPolicy": "1 type string ptr; 2 value int32 ptr; 3 periodSeconds int32 ptr",
    "HorizontalPodAutoscalerV1": (
        "1 metadata ObjectMeta; 2 spec HorizontalPodAutoscalerSpecV1; 3 status Ignored"
    ),
    "HorizontalPodAutoscalerSpecV1": (
        "1 scaleTargetRef CrossVersionObjectReference; 2 minReplicas int32 ptr;"
        " 3 maxReplicas int32 ptr; 4 targetCPUUtilizationPercentage int32 ptr"
    ),
    # -- rbac.authorization.k8s.io/v1 ------------------------------------------------------------
    "Role": "1 metadata ObjectMeta; 2 rules PolicyRule repeated",
    "ClusterRole": (
        "1 metadata ObjectMeta; 2 rules PolicyRule repeated; 3 aggregationRule AggregationRule"
    ),
    "PolicyRule": (
        "1 verbs string repeated; 2 apiGroups string repeated; 3 resources string repeated;"
        " 4 resourceNames string repeated; 5 nonResourceURLs string repeated"
    ),
    "AggregationRule": "1 clusterRoleSelectors LabelSelector repeated",
    "RoleBinding": "1 metadata ObjectMeta; 2 subjects Subject repeated; 3 roleRef RoleRef",
    "ClusterRoleBinding": "1 metadata ObjectMeta; 2 subjects Subject repeated; 3 roleRef RoleRef",
    "Subject": "1 kind string ptr; 2 apiGroup string; 3 name string ptr; 4 namespace string",
    "RoleRef": "1 apiGroup string ptr; 2 kind string ptr; 3 name string ptr",
    # -- scheduling.k8s.io/v1, policy/v1 ---------------------------------------------------------
    "PriorityClass": (
        "1 metadata ObjectMeta; 2 value int32 ptr; 3 globalDefault bool; 4 description string;"
        " 5 preemptionPolicy string ptr"
    ),
    "Eviction": "1 metadata ObjectMeta; 2 deleteOptions DeleteOptions",
    # -- policy/v1 (kubectl create pdb) -----------------------------------------------------------
    "PodDisruptionBudget": (
        "1 metadata ObjectMeta; 2 spec PodDisruptionBudgetSpec; 3 status Ignored"
    ),
    "PodDisruptionBudgetSpec": (
        "1 minAvailable IntOrString; 2 selector LabelSelector; 3 maxUnavailable IntOrString;"
        " 4 unhealthyPodEvictionPolicy string ptr"
    ),
    # -- authentication.k8s.io/v1, authorization.k8s.io/v1 ---------------------------------------
    "SelfSubjectReview": "1 metadata ObjectMeta; 2 status Ignored",
    "SelfSubjectAccessReview": (
        "1 metadata ObjectMeta; 2 spec SelfSubjectAccessReviewSpec; 3 status Ignored"
    ),
    "SelfSubjectAccessReviewSpec": (
        "1 resourceAttributes ResourceAttributes; 2 nonResourceAttributes NonResourceAttributes"
    ),
    "ResourceAttributes": (
        "1 namespace string; 2 verb string; 3 group string; 4 version string; 5 resource string;"
        " 6 subresource string; 7 name string"
    ),
    "NonResourceAttributes": "1 path string; 2 verb string",
    "SelfSubjectRulesReview": (
        "1 metadata ObjectMeta; 2 spec SelfSubjectRulesReviewSpec; 3 status Ignored"
    ),
    "SelfSubjectRulesReviewSpec": "1 namespace string",
}

ROOTS: Final = {
    ("v1", "Namespace"): "Namespace",
    ("v1", "Secret"): "Secret",
    ("v1", "ConfigMap"): "ConfigMap",
    ("v1", "Service"): "Service",
    ("v1", "ResourceQuota"): "ResourceQuota",
    ("v1", "LimitRange"): "LimitRange",
    ("v1", "Pod"): "Pod",
    ("v1", "Binding"): "Binding",
    ("v1", "DeleteOptions"): "DeleteOptions",
    ("meta.k8s.io/v1", "DeleteOptions"): "DeleteOptions",
    ("apps/v1", "Deployment"): "Deployment",
    ("apps/v1", "ReplicaSet"): "ReplicaSet",
    ("autoscaling/v1", "Scale"): "Scale",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "HorizontalPodAutoscaler",
    ("autoscaling/v1", "HorizontalPodAutoscaler"): "HorizontalPodAutoscalerV1",
    ("rbac.authorization.k8s.io/v1", "Role"): "Role",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "ClusterRole",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "RoleBinding",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "ClusterRoleBinding",
    ("scheduling.k8s.io/v1", "PriorityClass"): "PriorityClass",
    ("policy/v1", "Eviction"): "Eviction",
    ("policy/v1", "PodDisruptionBudget"): "PodDisruptionBudget",
    ("authentication.k8s.io/v1", "SelfSubjectReview"): "SelfSubjectReview",
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): "SelfSubjectAccessReview",
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): "SelfSubjectRulesReview",
}
"""The (apiVersion, kind) a body's envelope names -> its message."""


def _field(text: str) -> Field:
    number, name, kind, *flags = text.split()
    unknown = set(flags) - {"repeated", "ptr", "inline"}
    if unknown:
        raise ValueError(f"protoschema: unknown flags {sorted(unknown)} in {text!r}")
    is_map = kind.startswith("map<string,") and kind.endswith(">")
    return Field(
        number=int(number),
        name=name,
        type=kind[len("map<string,") : -1] if is_map else kind,
        repeated="repeated" in flags,
        is_map=is_map,
        ptr="ptr" in flags,
        inline="inline" in flags,
    )


def _messages() -> dict[str, tuple[Field, ...]]:
    messages = {
        name: tuple(_field(part) for part in text.split(";") if part.strip())
        for name, text in _TABLE.items()
    }
    for name, fields in messages.items():
        for field in fields:
            if field.type not in SCALARS | SPECIAL and field.type not in messages:
                raise ValueError(f"protoschema: {name}.{field.name} names {field.type!r}")
    return messages


MESSAGES: Final = _messages()
"""Message name -> its fields (checked when imported: every type they name exists)."""
