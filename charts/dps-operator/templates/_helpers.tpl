{{- define "dps-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dps-operator.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "dps-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dps-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dps-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "dps-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- /* The in-cluster engine: its name, Service DNS domain and the Secret of its connection strings. */ -}}
{{- define "dps-operator.engine.name" -}}
{{- printf "%s-engine" (include "dps-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dps-operator.engine.domain" -}}
{{- printf "%s.%s.svc" (include "dps-operator.engine.name" .) .Release.Namespace -}}
{{- end -}}

{{- define "dps-operator.engine.credentials" -}}
{{- printf "%s-credentials" (include "dps-operator.engine.name" .) -}}
{{- end -}}

{{- define "dps-operator.engine.tls" -}}
{{- printf "%s-tls" (include "dps-operator.engine.name" .) -}}
{{- end -}}

{{- define "dps-operator.engine.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-engine
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /* The DNS name of one engine endpoint (dps or a hub): an ExternalName alias of the engine's Service. */ -}}
{{- define "dps-operator.engine.host" -}}
{{- printf "%s-%s.%s.svc" (include "dps-operator.engine.name" .root) .endpoint .root.Release.Namespace -}}
{{- end -}}

{{- define "dps-operator.engine.labels" -}}
{{ include "dps-operator.engine.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: engine
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
