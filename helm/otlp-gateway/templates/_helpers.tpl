{{/* Names ------------------------------------------------------------------------------- */}}
{{- define "otlp-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "otlp-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "otlp-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "otlp-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "otlp-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "otlp-gateway.labels" -}}
helm.sh/chart: {{ include "otlp-gateway.chart" . }}
{{ include "otlp-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: otlp-gateway
{{- end }}

{{/* Labels of one component: (dict "root" $ "component" "http") */}}
{{- define "otlp-gateway.componentLabels" -}}
{{ include "otlp-gateway.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "otlp-gateway.componentSelector" -}}
{{ include "otlp-gateway.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "otlp-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "otlp-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "otlp-gateway.secretName" -}}
{{- default (include "otlp-gateway.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "otlp-gateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Services' in-cluster names, e.g. for allowed hosts: (dict "root" $ "service" "x-http") */}}
{{- define "otlp-gateway.serviceHosts" -}}
{{- $ns := .root.Release.Namespace -}}
{{ .service }},{{ .service }}.{{ $ns }},{{ .service }}.{{ $ns }}.svc,{{ .service }}.{{ $ns }}.svc.{{ .root.Values.clusterDomain }}
{{- end }}

{{/* DJANGO_ALLOWED_HOSTS: configured names, Ingress/route hosts, in-cluster Service names. */}}
{{- define "otlp-gateway.allowedHosts" -}}
{{- $hosts := list -}}
{{- range .Values.config.allowedHosts }}{{ $hosts = append $hosts . }}{{ end -}}
{{- if .Values.ingress.http.enabled }}{{ range .Values.ingress.http.hosts }}{{ $hosts = append $hosts .host }}{{ end }}{{ end -}}
{{- if .Values.gatewayApi.enabled }}{{ range .Values.gatewayApi.http.hostnames }}{{ $hosts = append $hosts . }}{{ end }}{{ end -}}
{{- $fullname := include "otlp-gateway.fullname" . -}}
{{- $hosts = append $hosts (include "otlp-gateway.serviceHosts" (dict "root" . "service" (printf "%s-http" $fullname))) -}}
{{- if .Values.console.service.enabled }}
{{- $hosts = append $hosts (include "otlp-gateway.serviceHosts" (dict "root" . "service" (printf "%s-console" $fullname))) -}}
{{- end }}
{{- join "," (uniq $hosts) }}
{{- end }}

{{/* Environment from config: the ConfigMap's data, and the migrations Job's env. */}}
{{- define "otlp-gateway.configData" -}}
DJANGO_SETTINGS_MODULE: gateway.settings_production
DJANGO_ALLOWED_HOSTS: {{ include "otlp-gateway.allowedHosts" . | quote }}
DJANGO_CSRF_TRUSTED_ORIGINS: {{ join "," .Values.config.csrfTrustedOrigins | quote }}
DJANGO_SECURE_SSL_REDIRECT: {{ .Values.config.sslRedirect | quote }}
DJANGO_SECURE_HSTS_SECONDS: {{ .Values.config.hstsSeconds | int64 | quote }}
GATEWAY_TRUSTED_PROXY_HOPS: {{ .Values.config.trustedProxyHops | int64 | quote }}
GATEWAY_LOG_FORMAT: {{ .Values.config.logFormat | quote }}
GATEWAY_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
GATEWAY_CLICKHOUSE_CLUSTER: {{ .Values.config.clickhouseCluster | quote }}
GATEWAY_CLICKHOUSE_ASYNC_INSERT: {{ .Values.config.clickhouseAsyncInsert | quote }}
GATEWAY_MIGRATE_ON_START: "false"
GATEWAY_MAX_REQUEST_BYTES: {{ .Values.config.maxRequestBytes | int64 | quote }}
GATEWAY_MAX_DECOMPRESSED_BYTES: {{ .Values.config.maxDecompressedBytes | int64 | quote }}
GATEWAY_RETRY_AFTER_SECONDS: {{ .Values.config.retryAfterSeconds | int64 | quote }}
GATEWAY_STORE_TIMEOUT_SECONDS: {{ .Values.config.storeTimeoutSeconds | int64 | quote }}
GATEWAY_BATCH_MAX_ROWS: {{ .Values.config.batchMaxRows | int64 | quote }}
GATEWAY_BATCH_LINGER_MS: {{ .Values.config.batchLingerMs | int64 | quote }}
GATEWAY_BATCH_WAIT_MS: {{ .Values.config.batchWaitMs | int64 | quote }}
GATEWAY_DEFAULT_RETENTION_DAYS: {{ .Values.config.defaultRetentionDays | int64 | quote }}
GATEWAY_METRICS_TENANT_LABEL: {{ .Values.config.metricsTenantLabel | quote }}
GATEWAY_AUDIT_SIGNING_KEY_FILE: /etc/otlp-gateway/audit/audit-signing-key.pem
GATEWAY_DATA_DIR: /tmp/otlp-gateway
GATEWAY_HTTP_PORT: "4318"
GATEWAY_GRPC_PORT: "4317"
GATEWAY_METRICS_PORT: {{ .Values.grpc.metricsPort | int64 | quote }}
{{- range $name, $value := .Values.config.extraEnv }}
{{ $name }}: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* Secret values as the Secret's data (base64). Explicit values win; otherwise what the
     release's Secret already holds; otherwise generated (never the master key).
     (dict "root" $ "withFiles" true) */}}
{{- define "otlp-gateway.secretData" -}}
{{- $root := .root -}}
{{- $existing := dict -}}
{{- with (lookup "v1" "Secret" $root.Release.Namespace (include "otlp-gateway.fullname" $root)) }}{{ $existing = .data | default dict }}{{ end -}}
{{- $s := $root.Values.secrets -}}
DJANGO_SECRET_KEY: {{ ternary ($s.djangoSecretKey | b64enc) (get $existing "DJANGO_SECRET_KEY" | default (randAlphaNum 64 | b64enc)) (ne $s.djangoSecretKey "") | quote }}
{{- range $key, $value := dict "DATABASE_URL" $s.databaseUrl "GATEWAY_CACHE_URL" $s.cacheUrl "GATEWAY_CLICKHOUSE_URL" $s.clickhouseUrl "GATEWAY_MASTER_KEY" $s.masterKey "GATEWAY_METRICS_TOKEN" $s.metricsToken }}
{{- if $value }}
{{ $key }}: {{ $value | b64enc | quote }}
{{- end }}
{{- end }}
{{- if .withFiles }}
audit-signing-key.pem: {{ ternary ($s.auditSigningKey | b64enc) (get $existing "audit-signing-key.pem" | default (genPrivateKey "ed25519" | b64enc)) (ne $s.auditSigningKey "") | quote }}
{{- end }}
{{- end }}

{{/* Pod-level pieces shared by every gateway container. */}}
{{- define "otlp-gateway.secretEnv" -}}
{{- $secret := include "otlp-gateway.secretName" . -}}
{{- range $key := list "DJANGO_SECRET_KEY" "DATABASE_URL" "GATEWAY_CACHE_URL" "GATEWAY_CLICKHOUSE_URL" }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $key }}}
{{- end }}
{{- range $key := list "GATEWAY_MASTER_KEY" "GATEWAY_METRICS_TOKEN" }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $key }}, optional: true}
{{- end }}
- name: GATEWAY_POD_IP
  valueFrom:
    fieldRef: {fieldPath: status.podIP}
{{- end }}

{{- define "otlp-gateway.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpVolume.sizeLimit }}
- name: audit-signing-key
  secret:
    secretName: {{ include "otlp-gateway.secretName" . }}
    defaultMode: 0440
    optional: true
    items:
      - {key: audit-signing-key.pem, path: audit-signing-key.pem}
{{- end }}

{{- define "otlp-gateway.volumeMounts" -}}
- {name: tmp, mountPath: /tmp}
- {name: audit-signing-key, mountPath: /etc/otlp-gateway/audit, readOnly: true}
{{- end }}
