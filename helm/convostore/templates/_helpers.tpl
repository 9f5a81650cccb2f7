{{/* Names, labels and the small decisions every template shares. */}}

{{- define "convostore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name: <release>-<chart>, or the release alone when it already contains the chart name. */}}
{{- define "convostore.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A component's resource name: <fullname>-<component>, kept under 63 characters. */}}
{{- define "convostore.componentName" -}}
{{- printf "%s-%s" (include "convostore.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component }}
{{- end }}

{{- define "convostore.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "convostore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "convostore.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "convostore.labels" -}}
helm.sh/chart: {{ include "convostore.chart" .root }}
{{ include "convostore.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: convostore
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "convostore.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret holding REDIS_URL, or "" when the chart has no Redis (memory://). */}}
{{- define "convostore.redisSecretName" -}}
{{- $sources := 0 }}
{{- if .Values.redis.url }}{{ $sources = add1 $sources }}{{ end }}
{{- if .Values.redis.existingSecret }}{{ $sources = add1 $sources }}{{ end }}
{{- if .Values.redis.internal.enabled }}{{ $sources = add1 $sources }}{{ end }}
{{- if gt $sources 1 }}
{{- fail "redis: set only one of redis.url, redis.existingSecret and redis.internal.enabled" }}
{{- end }}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecret }}
{{- else if or .Values.redis.url .Values.redis.internal.enabled }}
{{- include "convostore.componentName" (dict "root" . "component" "redis-url") }}
{{- end }}
{{- end }}

{{- define "convostore.redisSecretKey" -}}
{{- default "redis-url" .Values.redis.existingSecretKey }}
{{- end }}

{{/* The URL of the in-chart Redis, reachable from any namespace. */}}
{{- define "convostore.internalRedisUrl" -}}
{{- printf "redis://%s.%s.svc:6379/0" (include "convostore.componentName" (dict "root" . "component" "redis")) .Release.Namespace }}
{{- end }}

{{/* The REDIS_URL env entry of the gateway: from the Secret, or memory:// without Redis. */}}
{{- define "convostore.redisEnv" -}}
{{- $secret := include "convostore.redisSecretName" . }}
- name: REDIS_URL
{{- if $secret }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "convostore.redisSecretKey" . }}
{{- else }}
  value: memory://
{{- end }}
{{- end }}

{{- define "convostore.webhookServiceName" -}}
{{- include "convostore.componentName" (dict "root" . "component" "webhook") }}
{{- end }}

{{- define "convostore.webhookTlsSecretName" -}}
{{- include "convostore.componentName" (dict "root" . "component" "webhook-tls") }}
{{- end }}
