{{/* Names ------------------------------------------------------------------ */}}

{{- define "teledrop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource-name prefix; leaves room for "-controller" and similar suffixes. */}}
{{- define "teledrop.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "teledrop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels ----------------------------------------------------------------- */}}

{{- define "teledrop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "teledrop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "teledrop.labels" -}}
helm.sh/chart: {{ include "teledrop.chart" . }}
{{ include "teledrop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: teledrop
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* (dict "root" $ "component" "worker") */}}
{{- define "teledrop.componentSelectorLabels" -}}
{{ include "teledrop.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "teledrop.componentLabels" -}}
{{ include "teledrop.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Images ----------------------------------------------------------------- */}}

{{- define "teledrop.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "teledrop.localBotApi.image" -}}
{{- $img := .Values.localBotApi.image }}
{{- if $img.digest }}
{{- printf "%s:%s@%s" $img.repository $img.tag $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository $img.tag }}
{{- end }}
{{- end }}

{{/* URLs ------------------------------------------------------------------- */}}

{{- define "teledrop.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl | trimSuffix "/" }}
{{- else if .Values.httpIngress.host }}
{{- printf "%s://%s" (ternary "https" "http" .Values.httpIngress.tls.enabled) .Values.httpIngress.host }}
{{- else }}
{{- fail "set publicUrl (or httpIngress.host): it is the base of every download link" }}
{{- end }}
{{- end }}

{{- define "teledrop.localBotApi.fullname" -}}
{{- printf "%s-bot-api" (include "teledrop.fullname" .) }}
{{- end }}

{{- define "teledrop.localBotApi.url" -}}
{{- printf "http://%s:%d/" (include "teledrop.localBotApi.fullname" .) (int .Values.localBotApi.port) }}
{{- end }}

{{/* The Bot API root the worker and the webhook Job talk to. */}}
{{- define "teledrop.telegramApiUrl" -}}
{{- if .Values.telegram.apiUrl }}
{{- .Values.telegram.apiUrl }}
{{- else if .Values.localBotApi.enabled }}
{{- include "teledrop.localBotApi.url" . }}
{{- end }}
{{- end }}

{{/* Base URL Telegram (or the local Bot API server) posts updates to. */}}
{{- define "teledrop.webhookUrl" -}}
{{- if .Values.webhook.url }}
{{- .Values.webhook.url | trimSuffix "/" }}
{{- else if .Values.localBotApi.enabled }}
{{- printf "http://%s-ingress.%s.svc:8080" (include "teledrop.fullname" .) .Release.Namespace }}
{{- else if .Values.httpIngress.host }}
{{- printf "https://%s" .Values.httpIngress.host }}
{{- else }}
{{- fail "set webhook.url (or httpIngress.host) so the webhook can be registered, or webhook.register=false" }}
{{- end }}
{{- end }}

{{/* Secrets ---------------------------------------------------------------- */}}

{{- define "teledrop.secretsName" -}}
{{- .Values.secrets.name | default (include "teledrop.fullname" .) }}
{{- end }}

{{/* Secret holding one entry: (dict "root" $ "ref" .Values.secrets.botToken) */}}
{{- define "teledrop.secretRefName" -}}
{{- .ref.existingSecret | default (include "teledrop.secretsName" .root) }}
{{- end }}

{{/* Files mounted from Secrets (TELEGRAM_BOT_TOKEN_FILE & co.). */}}
{{- define "teledrop.secretsDir" -}}/etc/teledrop/secrets{{- end }}

{{/*
A projected volume with the secret files a role needs:
(dict "root" $ "items" (list "botToken" "webhookSecret" "databaseUrl"))
*/}}
{{- define "teledrop.secretsVolume" -}}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      {{- range .items }}
      {{- $ref := index $.root.Values.secrets . }}
      - secret:
          name: {{ include "teledrop.secretRefName" (dict "root" $.root "ref" $ref) }}
          items:
            - key: {{ $ref.key }}
              path: {{ include "teledrop.secretFile" . }}
      {{- end }}
{{- end }}

{{- define "teledrop.secretFile" -}}
{{- if eq . "botToken" }}telegram-bot-token
{{- else if eq . "webhookSecret" }}telegram-webhook-secret
{{- else if eq . "databaseUrl" }}database-url
{{- else }}{{ fail (printf "unknown secret %s" .) }}
{{- end }}
{{- end }}

{{/* The …_FILE variables for the same items. */}}
{{- define "teledrop.secretsEnv" -}}
{{- range .items }}
{{- if eq . "botToken" }}
- name: TELEGRAM_BOT_TOKEN_FILE
  value: {{ include "teledrop.secretsDir" $.root }}/telegram-bot-token
{{- else if eq . "webhookSecret" }}
- name: TELEDROP_WEBHOOK_SECRET_FILE
  value: {{ include "teledrop.secretsDir" $.root }}/telegram-webhook-secret
{{- else if eq . "databaseUrl" }}
- name: DATABASE_URL_FILE
  value: {{ include "teledrop.secretsDir" $.root }}/database-url
{{- end }}
{{- end }}
{{- end }}

{{/* Environment ------------------------------------------------------------ */}}

{{/* Every role: pod identity, logging, telemetry. (dict "root" $ "component" "worker") */}}
{{- define "teledrop.commonEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: RUST_LOG
  value: {{ .root.Values.log.level | quote }}
- name: TELEDROP_LOG_FORMAT
  value: {{ .root.Values.log.format | quote }}
{{- with .root.Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "teledrop-%s" .component | quote }}
{{- $attrs := list "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.pod.name=$(POD_NAME)" (printf "service.namespace=%s" .root.Release.Name) }}
{{- with .root.Values.otel.resourceAttributes }}
{{- $attrs = append $attrs . }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- end }}

{{/*
Ports. A role with product routes (ingress: the webhook; links: downloads)
serves them on `http`; every role serves /healthz, /readyz and /metrics on
`admin`, which no public Service or Ingress routes to: /readyz costs a
database query and a storage call, and metrics describe the whole process.
*/}}
{{- define "teledrop.httpPort" -}}8080{{- end }}
{{- define "teledrop.adminPort" -}}9090{{- end }}

{{/* Whether a role has product routes: (dict "component" "links") → "true" or "". */}}
{{- define "teledrop.hasPublicPort" -}}
{{- if has .component (list "ingress" "links") }}true{{- end }}
{{- end }}

{{/* The listen addresses: (dict "public" <bool>). */}}
{{- define "teledrop.listenEnv" -}}
{{- if .public }}
- name: TELEDROP_LISTEN
  value: "0.0.0.0:{{ include "teledrop.httpPort" . }}"
{{- end }}
- name: TELEDROP_ADMIN_LISTEN
  value: "0.0.0.0:{{ include "teledrop.adminPort" . }}"
{{- end }}

{{- define "teledrop.natsEnv" -}}
- name: NATS_URL
  value: {{ .Values.nats.url | quote }}
- name: TELEDROP_NATS_STREAM
  value: {{ .Values.nats.stream | quote }}
- name: TELEDROP_NATS_PREFIX
  value: {{ .Values.nats.prefix | quote }}
- name: TELEDROP_NATS_ACK_WAIT
  value: {{ .Values.nats.ackWait | quote }}
- name: TELEDROP_NATS_MAX_DELIVER
  value: {{ .Values.nats.maxDeliver | toString | quote }}
{{- end }}

{{/* Object storage: URL, S3 settings, credentials from a Secret. */}}
{{- define "teledrop.storageEnv" -}}
- name: TELEDROP_STORAGE_URL
  value: {{ .Values.storage.url | quote }}
{{- with .Values.storage.s3.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- if .Values.storage.s3.allowHttp }}
- name: AWS_ALLOW_HTTP
  value: "true"
{{- end }}
{{- $creds := .Values.secrets.storageCredentials }}
{{- if $creds.enabled }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "teledrop.secretRefName" (dict "root" . "ref" $creds) }}
      key: {{ $creds.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "teledrop.secretRefName" (dict "root" . "ref" $creds) }}
      key: {{ $creds.secretAccessKeyKey }}
{{- end }}
{{- end }}

{{- define "teledrop.publicUrlEnv" -}}
- name: TELEDROP_PUBLIC_URL
  value: {{ include "teledrop.publicUrl" . | quote }}
{{- end }}

{{/* Pod pieces ------------------------------------------------------------- */}}

{{- define "teledrop.serviceAccountName" -}}
{{- printf "%s-%s" (include "teledrop.fullname" .root) .component }}
{{- end }}

{{- define "teledrop.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "teledrop.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{- define "teledrop.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* /healthz and /readyz on the admin port. */}}
{{- define "teledrop.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end }}

{{/* (dict "root" $ "component" "worker" "values" .Values.worker) */}}
{{- define "teledrop.topologySpread" -}}
{{- if .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml .values.topologySpreadConstraints | nindent 2 }}
{{- else if .root.Values.topologySpread.enabled }}
topologySpreadConstraints:
  {{- range list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: {{ $.root.Values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $.root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "teledrop.componentSelectorLabels" $ | nindent 8 }}
    matchLabelKeys:
      - pod-template-hash
  {{- end }}
{{- end }}
{{- end }}

{{- define "teledrop.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Rolls pods when the chart-managed configuration of secrets changes. */}}
{{- define "teledrop.secretsChecksum" -}}
{{- toJson .Values.secrets | sha256sum }}
{{- end }}

{{- define "teledrop.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{/* TELEDROP_DB_MAX_CONNECTIONS from a role's dbMaxConnections. */}}
{{- define "teledrop.dbPoolEnv" -}}
- name: TELEDROP_DB_MAX_CONNECTIONS
  value: {{ . | int64 | toString | quote }}
{{- end }}

{{/* The namespace whose RetentionPolicies the controller applies; empty when it watches all (opt-in). */}}
{{- define "teledrop.controller.watchNamespace" -}}
{{- $c := .Values.controller }}
{{- if $c.watchAllNamespaces }}
{{- if $c.watchNamespace }}{{ fail "controller.watchNamespace and controller.watchAllNamespaces exclude each other" }}{{ end }}
{{- else }}
{{- $c.watchNamespace | default .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "teledrop.controller.leaseName" -}}
{{- .Values.controller.leaseName | default (printf "%s-controller" (include "teledrop.fullname" .)) }}
{{- end }}

{{/* One egress rule from a networkPolicy.egress entry ({to: [peers], ports: [...]}); no `to` means any destination. */}}
{{- define "teledrop.netpol.egress" -}}
- ports:
    {{- toYaml .ports | nindent 4 }}
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
