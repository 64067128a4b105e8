{{/* Names and labels shared by the templates. */}}

{{- define "co.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "co.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; co.baseLabels goes with a selector, which adds the instance. */}}
{{- define "co.baseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: continue-orchestrator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "co.labels" -}}
{{ include "co.baseLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "co.operator.selector" -}}
app.kubernetes.io/name: {{ include "co.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The controller's NetworkPolicy selects gateway pods by this exact label
     (controller/_names.py GATEWAY_NAME_LABEL = GATEWAY_NAME); it must not vary. */}}
{{- define "co.gateway.selector" -}}
app.kubernetes.io/name: continue-orchestrator-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "co.operator.serviceAccountName" -}}
{{- default (printf "%s-operator" (include "co.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "co.gateway.serviceAccountName" -}}
{{- default (printf "%s-gateway" (include "co.fullname" .)) .Values.gateway.serviceAccount.name -}}
{{- end -}}

{{- define "co.gateway.serviceName" -}}
{{- printf "%s-gateway" (include "co.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "co.gateway.adminSecretName" -}}
{{- default (printf "%s-gateway-admin" (include "co.fullname" .)) .Values.gateway.adminToken.existingSecret -}}
{{- end -}}

{{- define "co.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "co.trustConfigMapName" -}}
{{- default (printf "%s-sigstore-trust" (include "co.fullname" .)) .Values.attestation.keyless.existingConfigMap -}}
{{- end -}}

{{/* The ledger URL as an env entry: from a Secret, or the plain value. */}}
{{- define "co.ledgerEnv" -}}
- name: ORCHESTRATOR_LEDGER
{{- if .Values.ledger.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.ledger.existingSecret }}
      key: {{ .Values.ledger.key }}
{{- else }}
  value: {{ .Values.ledger.url | quote }}
{{- end }}
{{- end -}}

{{/* Checks across values that values.schema.json cannot say clearly. */}}
{{- define "co.validate" -}}
{{- if and (not .Values.ledger.url) (not .Values.ledger.existingSecret) -}}
{{- fail "continue-orchestrator: no ledger: set ledger.url (postgresql://...) or ledger.existingSecret (a Secret holding the URL)" -}}
{{- end -}}
{{- if and .Values.operator.standalone (gt (int .Values.operator.replicas) 1) -}}
{{- fail (printf "continue-orchestrator: operator.standalone runs without peering, so operator.replicas must be 1 (is %d): two standalone replicas would both act on every run" (int .Values.operator.replicas)) -}}
{{- end -}}
{{- if and (eq .Values.attestation.mode "key") (not .Values.attestation.key.existingSecret) -}}
{{- fail "continue-orchestrator: attestation.mode is key but attestation.key.existingSecret is empty: name the Secret holding cosign.key + cosign.password (or key.pem)" -}}
{{- end -}}
{{- if and (eq .Values.attestation.mode "keyless") (not .Values.attestation.keyless.existingConfigMap) (not .Values.attestation.keyless.trustConfig) -}}
{{- fail "continue-orchestrator: attestation.mode is keyless but neither attestation.keyless.existingConfigMap nor attestation.keyless.trustConfig is set: give the Sigstore ClientTrustConfig JSON" -}}
{{- end -}}
{{- end -}}

{{- define "co.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "co.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The CA bundle of trust.caBundle, for the operator's and the gateway's HTTPS (Python's
ssl and git): env, volumeMount, volume. Each renders nothing without trust.caBundle. */}}
{{- define "co.trustEnv" -}}
{{- if .Values.trust.caBundle.configMap }}
- name: SSL_CERT_FILE
  value: /etc/continue-orchestrator/ca/{{ .Values.trust.caBundle.key }}
- name: GIT_SSL_CAINFO
  value: /etc/continue-orchestrator/ca/{{ .Values.trust.caBundle.key }}
{{- end }}
{{- end }}

{{- define "co.trustVolumeMount" -}}
{{- if .Values.trust.caBundle.configMap }}
- name: ca-bundle
  mountPath: /etc/continue-orchestrator/ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "co.trustVolume" -}}
{{- if .Values.trust.caBundle.configMap }}
- name: ca-bundle
  configMap:
    name: {{ .Values.trust.caBundle.configMap }}
    items:
      - {key: {{ .Values.trust.caBundle.key }}, path: {{ .Values.trust.caBundle.key }}}
{{- end }}
{{- end }}
