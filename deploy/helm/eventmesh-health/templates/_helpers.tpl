{{/* The name of every object: the release name, or <release>-eventmesh-health. */}}
{{- define "eventmesh-health.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "eventmesh-health.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "eventmesh-health.labels" -}}
{{ include "eventmesh-health.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "eventmesh-health.serviceAccountName" -}}
{{- default (include "eventmesh-health.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "eventmesh-health.leaseName" -}}
{{- default (printf "%s-serve" (include "eventmesh-health.fullname" .)) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "eventmesh-health.keySecretName" -}}
{{- default (printf "%s-heartbeat-keys" (include "eventmesh-health.fullname" .)) .Values.probe.keys.secretName -}}
{{- end -}}

{{/* A ServiceAccount subject list for bindings. */}}
{{- define "eventmesh-health.subjects" -}}
subjects:
- kind: ServiceAccount
  name: {{ include "eventmesh-health.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}
