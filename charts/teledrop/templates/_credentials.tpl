{{/*
Credentials that are not `secrets.*` entries, mounted from their Secrets as
files under one directory (never environment literals): the CA bundle every
teledrop pod trusts and, for the pods that talk to NATS ("nats" true), the
client certificate for mutual TLS and the NATS credential. Each helper takes
(dict "root" $ "nats" true|false).
*/}}

{{- define "teledrop.credentialsDir" -}}/etc/teledrop/credentials{{- end }}

{{/* The file a nats.auth.type reads, and its variable. */}}
{{- define "teledrop.natsAuthFile" -}}
{{- $t := .Values.nats.auth.type }}
{{- if eq $t "creds" }}nats.creds
{{- else if eq $t "userPassword" }}nats-password
{{- else if eq $t "token" }}nats-token
{{- else if ne $t "none" }}{{ fail (printf "nats.auth.type %q: use none, creds, userPassword or token" $t) }}
{{- end }}
{{- end }}

{{/* Projected-volume sources, one per Secret in use. */}}
{{- define "teledrop.credentialsSources" -}}
{{- $v := .root.Values }}
{{- with $v.tls.caSecret.name }}
- secret:
    name: {{ . }}
    items:
      - key: {{ $v.tls.caSecret.key }}
        path: ca.crt
{{- end }}
{{- if .nats }}
{{- $client := $v.nats.tls.clientSecret }}
{{- with $client.name }}
- secret:
    name: {{ . }}
    items:
      - key: {{ $client.certKey }}
        path: nats-client.crt
      - key: {{ $client.keyKey }}
        path: nats-client.key
{{- end }}
{{- $auth := $v.nats.auth }}
{{- with include "teledrop.natsAuthFile" .root }}
{{- if not $auth.existingSecret }}
{{- fail "nats.auth.existingSecret: name the Secret holding the NATS credential (nats.auth.type is not none)" }}
{{- end }}
{{- if and (eq $auth.type "userPassword") (not $auth.user) }}
{{- fail "nats.auth.user: set the NATS user name (nats.auth.type is userPassword)" }}
{{- end }}
- secret:
    name: {{ $auth.existingSecret }}
    items:
      - key: {{ index $auth (get (dict "creds" "credsKey" "userPassword" "passwordKey" "token" "tokenKey") $auth.type) }}
        path: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* The …_FILE variables pointing at those files (and NATS_USER, a name). */}}
{{- define "teledrop.credentialsEnv" -}}
{{- $v := .root.Values }}
{{- $dir := include "teledrop.credentialsDir" .root }}
{{- if $v.tls.caSecret.name }}
- name: TELEDROP_CA_FILE
  value: {{ $dir }}/ca.crt
{{- end }}
{{- if .nats }}
{{- if $v.nats.tls.clientSecret.name }}
- name: NATS_TLS_CERT_FILE
  value: {{ $dir }}/nats-client.crt
- name: NATS_TLS_KEY_FILE
  value: {{ $dir }}/nats-client.key
{{- end }}
{{- $t := $v.nats.auth.type }}
{{- with include "teledrop.natsAuthFile" .root }}
{{- if eq $t "creds" }}
- name: NATS_CREDS_FILE
{{- else if eq $t "userPassword" }}
- name: NATS_USER
  value: {{ $v.nats.auth.user | quote }}
- name: NATS_PASSWORD_FILE
{{- else }}
- name: NATS_TOKEN_FILE
{{- end }}
  value: {{ $dir }}/{{ . }}
{{- end }}
{{- end }}
{{- end }}

{{- define "teledrop.credentialsVolume" -}}
{{- with (include "teledrop.credentialsSources" . | trim) }}
- name: credentials
  projected:
    defaultMode: 0440
    sources:
      {{- . | nindent 6 }}
{{- end }}
{{- end }}

{{- define "teledrop.credentialsMount" -}}
{{- if (include "teledrop.credentialsSources" . | trim) }}
- name: credentials
  mountPath: {{ include "teledrop.credentialsDir" .root }}
  readOnly: true
{{- end }}
{{- end }}
