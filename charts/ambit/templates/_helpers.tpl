{{/* Base name of every object: the release name, or "ambit" when the release is called ambit. */}}
{{- define "ambit.fullname" -}}
{{- if contains "ambit" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-ambit" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ambit.caName" -}}{{ include "ambit.fullname" . }}-ca{{- end -}}
{{- define "ambit.bundleName" -}}
{{- if .Values.ca.trustBundleConfigMap -}}{{ .Values.ca.trustBundleConfigMap }}{{- else -}}{{ include "ambit.fullname" . }}-trust-bundle{{- end -}}
{{- end -}}
{{- define "ambit.devSecretName" -}}{{ include "ambit.fullname" . }}-ca-dev-root{{- end -}}

{{- define "ambit.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "ambit.labels" -}}
app.kubernetes.io/part-of: ambit
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ambit.daemonSelector" -}}
app.kubernetes.io/name: ambit
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ambit.caSelector" -}}
app.kubernetes.io/name: ambit-ca
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ambit.caAddress" -}}
{{- if .Values.ca.address -}}{{ .Values.ca.address }}{{- else -}}https://{{ include "ambit.caName" . }}.{{ .Release.Namespace }}.svc:{{ .Values.ca.port }}{{- end -}}
{{- end -}}

{{- define "ambit.rootNamespace" -}}{{ .Values.mesh.rootNamespace | default .Release.Namespace }}{{- end -}}

{{/* Fail early on values that cannot work. */}}
{{- define "ambit.validate" -}}
{{- if and .Values.ca.existingSecret (not (or .Values.ca.trustBundle .Values.ca.trustBundleConfigMap)) -}}
{{- fail "ca.existingSecret is set: also set ca.trustBundle (PEM) or ca.trustBundleConfigMap, the roots the nodes trust" -}}
{{- end -}}
{{- if and (not .Values.ca.enabled) (not .Values.ca.address) -}}
{{- fail "ca.enabled is false: set ca.address to the CA the daemons use" -}}
{{- end -}}
{{- if and (not .Values.ca.enabled) (not (or .Values.ca.trustBundle .Values.ca.trustBundleConfigMap)) -}}
{{- fail "ca.enabled is false: set ca.trustBundle or ca.trustBundleConfigMap" -}}
{{- end -}}
{{- if not (has .Values.logLevel (list "debug" "info" "warn" "error")) -}}
{{- fail (printf "logLevel %q: want debug, info, warn or error" .Values.logLevel) -}}
{{- end -}}
{{- end -}}

{{/*
Namespaces whose pods ambit-cni passes through without the node daemon, comma-separated: the release namespace
(the daemon's own pods) and cni.excludeNamespaces, in that order, without duplicates. Used by the installer's
--exclude-namespaces; the daemon's reconciler must be given the same list (it re-writes the same entry).
*/}}
{{- define "ambit.cniExcludeNamespaces" -}}
{{- $all := prepend (.Values.cni.excludeNamespaces | default list) .Release.Namespace | compact | uniq -}}
{{- range $all -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" (toString .)) -}}
{{- fail (printf "cni.excludeNamespaces: %q is not a namespace name" (toString .)) -}}
{{- end -}}
{{- end -}}
{{- join "," $all -}}
{{- end -}}
