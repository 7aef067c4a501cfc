{{/*
One teledrop role as a Deployment. Called with
  (dict "root" $ "component" "worker" "values" .Values.worker
        "args" (list "worker") "env" <yaml list string>
        "secretItems" (list "botToken" "databaseUrl") "nats" true
        "autoscaled" true "automountToken" false
        "extraVolumes" <yaml list string> "extraMounts" <yaml list string>)
*/}}
{{- define "teledrop.deployment" -}}
{{- $root := .root }}
{{- $v := .values }}
{{- $ctx := dict "root" $root "component" .component "values" $v }}
{{- $creds := dict "root" $root "nats" (default false .nats) }}
{{- $public := eq (include "teledrop.hasPublicPort" .) "true" }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "teledrop.fullname" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "teledrop.componentLabels" $ctx | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "teledrop.componentSelectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "teledrop.componentLabels" $ctx | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/secrets: {{ include "teledrop.secretsChecksum" $root }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "teledrop.serviceAccountName" $ctx }}
      automountServiceAccountToken: {{ .automountToken }}
      enableServiceLinks: false
      {{- with (include "teledrop.imagePullSecrets" $root | trim) }}{{ . | nindent 6 }}{{- end }}
      securityContext:
        {{- include "teledrop.podSecurityContext" $root | nindent 8 }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- with (include "teledrop.topologySpread" $ctx | trim) }}{{ . | nindent 6 }}{{- end }}
      {{- with (include "teledrop.scheduling" $v | trim) }}{{ . | nindent 6 }}{{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "teledrop.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            {{- toYaml .args | nindent 12 }}
          ports:
            {{- if $public }}
            - name: http
              containerPort: {{ include "teledrop.httpPort" $root }}
              protocol: TCP
            {{- end }}
            - name: admin
              containerPort: {{ include "teledrop.adminPort" $root }}
              protocol: TCP
          env:
            {{- include "teledrop.commonEnv" $ctx | nindent 12 }}
            {{- include "teledrop.listenEnv" (dict "public" $public) | nindent 12 }}
            {{- with (include "teledrop.secretsEnv" (dict "root" $root "items" .secretItems) | trim) }}{{ . | nindent 12 }}{{- end }}
            {{- with (include "teledrop.credentialsEnv" $creds | trim) }}{{ . | nindent 12 }}{{- end }}
            {{- .env | nindent 12 }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- include "teledrop.probes" $root | nindent 10 }}
          {{- with $v.preStopSleepSeconds }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ . }}
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- include "teledrop.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if .secretItems }}
            - name: secrets
              mountPath: {{ include "teledrop.secretsDir" $root }}
              readOnly: true
            {{- end }}
            {{- with (include "teledrop.credentialsMount" $creds | trim) }}{{ . | nindent 12 }}{{- end }}
            {{- with .extraMounts }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "teledrop.tmpVolume" $root | nindent 8 }}
        {{- if .secretItems }}
        {{- include "teledrop.secretsVolume" (dict "root" $root "items" .secretItems) | nindent 8 }}
        {{- end }}
        {{- with (include "teledrop.credentialsVolume" $creds | trim) }}{{ . | nindent 8 }}{{- end }}
        {{- with .extraVolumes }}
        {{- . | nindent 8 }}
        {{- end }}
{{- end }}

{{/*
The ClusterIP Services of a role: `<fullname>-<role>` with only the http
port, for roles with product routes (what the Ingress and the local Bot API
server reach), and `<fullname>-<role>-admin` with only the admin port, for
every role (what the ServiceMonitor scrapes). Two Services, so that nothing
routed to the public one can reach /metrics or /readyz.
*/}}
{{- define "teledrop.service" -}}
{{- $ctx := dict "root" .root "component" .component }}
{{- if include "teledrop.hasPublicPort" . }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "teledrop.fullname" .root }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "teledrop.componentLabels" $ctx | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "teledrop.componentSelectorLabels" $ctx | nindent 4 }}
  ports:
    - name: http
      port: {{ include "teledrop.httpPort" .root }}
      targetPort: http
      protocol: TCP
---
{{- end }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "teledrop.fullname" .root }}-{{ .component }}-admin
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "teledrop.componentLabels" $ctx | nindent 4 }}
    teledrop.dev/metrics: "true"
spec:
  type: ClusterIP
  selector:
    {{- include "teledrop.componentSelectorLabels" $ctx | nindent 4 }}
  ports:
    - name: admin
      port: {{ include "teledrop.adminPort" .root }}
      targetPort: admin
      protocol: TCP
{{- end }}

{{/* HPA on CPU: (dict "root" $ "component" "links" "values" .Values.links) */}}
{{- define "teledrop.hpa" -}}
{{- $ctx := dict "root" .root "component" .component }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "teledrop.fullname" .root }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "teledrop.componentLabels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "teledrop.fullname" .root }}-{{ .component }}
  minReplicas: {{ .values.autoscaling.minReplicas }}
  maxReplicas: {{ .values.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .values.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}

{{/* PodDisruptionBudget: (dict "root" $ "component" "links" "values" .Values.links) */}}
{{- define "teledrop.pdb" -}}
{{- $ctx := dict "root" .root "component" .component }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "teledrop.fullname" .root }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "teledrop.componentLabels" $ctx | nindent 4 }}
spec:
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "teledrop.componentSelectorLabels" $ctx | nindent 6 }}
{{- end }}

{{/* ServiceAccount of a role: (dict "root" $ "component" "worker" "automount" false) */}}
{{- define "teledrop.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "teledrop.serviceAccountName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "teledrop.componentLabels" . | nindent 4 }}
  {{- with .root.Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: {{ .automount }}
{{- end }}
