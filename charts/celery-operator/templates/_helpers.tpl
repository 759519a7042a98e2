{{/* Full name of the release's objects. */}}
{{- define "celery-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "celery-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "celery-operator.labels" -}}
{{ include "celery-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "celery-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "celery-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The rules on the objects the operator reads and builds, for Role or ClusterRole. */}}
{{- define "celery-operator.workloadRules" -}}
# The three kinds: watched; only their status is written.
- apiGroups: ["celeryoperator.io"]
  resources: ["rediscaches", "workerpools", "periodictasks"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["celeryoperator.io"]
  resources: ["rediscaches/status", "workerpools/status", "periodictasks/status"]
  verbs: ["patch"]
# What they become, by server-side apply (create + patch); deletion is left to the
# garbage collector through owner references, so no delete verb anywhere.
- apiGroups: ["apps"]
  resources: ["statefulsets", "deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps", "services", "secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Autoscaling marks busy worker pods with a pod-deletion-cost annotation; a replicated
# RedisCache's pods get their role label, and are rolled one at a time through evictions
# (which respect the disruption budget).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "patch"]
- apiGroups: [""]
  resources: ["pods/eviction"]
  verbs: ["create"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
