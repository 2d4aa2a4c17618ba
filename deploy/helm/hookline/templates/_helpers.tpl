{{- define "hookline.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hookline.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "sender") */}}
{{- define "hookline.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hookline.secretName" -}}
{{- .Values.secret.existingSecret | default (printf "%s-secrets" (include "hookline.fullname" .)) -}}
{{- end -}}

{{- define "hookline.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
{{- end -}}

{{/* Every process's HOOKLINE_* environment: secrets by reference, the rest as values. */}}
{{- define "hookline.env" -}}
- name: HOOKLINE_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ include "hookline.secretName" . }}, key: {{ .Values.secret.keys.databaseUrl }}}
- name: HOOKLINE_SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "hookline.secretName" . }}, key: {{ .Values.secret.keys.secretKey }}}
- name: HOOKLINE_ADMIN_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "hookline.secretName" . }}, key: {{ .Values.secret.keys.adminToken }}}
- name: HOOKLINE_SMTP_URL
  valueFrom:
    secretKeyRef: {name: {{ include "hookline.secretName" . }}, key: {{ .Values.secret.keys.smtpUrl }}, optional: true}
- name: HOOKLINE_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: HOOKLINE_KAFKA_PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: HOOKLINE_KAFKA_REPLICATION
  value: {{ .Values.kafka.replication | quote }}
- name: HOOKLINE_METRICS_PORT
  value: {{ .Values.metricsPort | quote }}
- name: HOOKLINE_API_HOST
  value: "0.0.0.0"
- name: HOOKLINE_INBOUND_HOST
  value: "0.0.0.0"
{{- range $name, $value := .Values.config }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
- name: HOOKLINE_INSTANCE
  valueFrom:
    fieldRef: {fieldPath: metadata.name}
{{- end -}}

{{- define "hookline.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}
