{{- define "coffer.labels" -}}
app.kubernetes.io/part-of: coffer
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "coffer.serverHost" -}}
coffer-server.{{ .Release.Namespace }}.svc
{{- end -}}

{{- define "coffer.labelList" -}}
{{- $out := list -}}
{{- range $k, $v := . -}}
{{- $out = append $out (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}
