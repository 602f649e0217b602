{{- define "coffer.labels" -}}
app.kubernetes.io/part-of: coffer
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "coffer.serverHost" -}}
coffer-server.{{ .Release.Namespace }}.svc
{{- end -}}
