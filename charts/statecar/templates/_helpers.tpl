{{/*
Names, labels and small derived values shared by every template.
*/}}

{{/* The chart's name, for the app.kubernetes.io/name label. */}}
{{- define "statecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of namespaced object names. A release called "statecar" gives "statecar", not
"statecar-statecar"; names are cut at 63 characters (the DNS label limit of Service names).
*/}}
{{- define "statecar.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "statecar-0.1.0", for the helm.sh/chart label. */}}
{{- define "statecar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels selectors use: stable for the life of the release (a Deployment's selector is immutable). */}}
{{- define "statecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "statecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Standard labels of every object (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/). */}}
{{- define "statecar.labels" -}}
helm.sh/chart: {{ include "statecar.chart" . }}
app.kubernetes.io/name: {{ include "statecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: statecar
{{- end }}

{{/* Labels of objects that belong to the operator (Deployment, Service, PDB, RBAC). */}}
{{- define "statecar.operatorLabels" -}}
{{ include "statecar.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "statecar.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "statecar.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is pinned. */}}
{{- define "statecar.imageRef" -}}
{{- $repository := index . 0 }}
{{- $tag := index . 1 }}
{{- $digest := index . 2 }}
{{- if $digest }}
{{- printf "%s@%s" $repository $digest }}
{{- else }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{- define "statecar.image" -}}
{{- include "statecar.imageRef" (list .Values.image.repository (default .Chart.AppVersion .Values.image.tag) .Values.image.digest) }}
{{- end }}

{{/* The injected sidecar's image: each empty sidecar.image field falls back to image. */}}
{{- define "statecar.sidecarImage" -}}
{{- $s := .Values.sidecar.image }}
{{- $repository := default .Values.image.repository $s.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) $s.tag }}
{{- $digest := default .Values.image.digest $s.digest }}
{{- /* A sidecar repository of its own never inherits the operator image's digest. */}}
{{- if and $s.repository (not $s.digest) }}
{{- $digest = "" }}
{{- end }}
{{- include "statecar.imageRef" (list $repository $tag $digest) }}
{{- end }}

{{- define "statecar.webhookServiceName" -}}
{{- printf "%s-webhook" (include "statecar.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Names of the webhook configurations. Fixed, not release-prefixed: the operator patches their
caBundle by these names (operator/statecar_operator/manifests/webhooks.py MUTATING_CONFIGURATION_NAME,
VALIDATING_CONFIGURATION_NAME), and one operator serves a cluster (the CRD is cluster-wide too).
*/}}
{{- define "statecar.mutatingWebhookName" -}}statecar-injector{{- end }}
{{- define "statecar.validatingWebhookName" -}}statecar-validator{{- end }}

{{/* kopf serves each admission handler at /<handler id> (manifests.webhooks INJECT_WEBHOOK_ID, VALIDATE_WEBHOOK_ID). */}}
{{- define "statecar.injectPath" -}}/inject-pods{{- end }}
{{- define "statecar.validatePath" -}}/validate-statestorecomponents{{- end }}

{{/* The Secret holding the webhook server's certificate, in every certificate mode. */}}
{{- define "statecar.webhookSecretName" -}}
{{- $c := .Values.webhook.certificates }}
{{- if eq $c.mode "secret" }}
{{- required "webhook.certificates.secret.name is required when webhook.certificates.mode is secret" $c.secret.name }}
{{- else if eq $c.mode "operator" }}
{{- default (printf "%s-webhook-tls" (include "statecar.fullname" .)) $c.operator.secretName }}
{{- else }}
{{- printf "%s-webhook-tls" (include "statecar.fullname" .) }}
{{- end }}
{{- end }}

{{/* The cert-manager Certificate whose CA the cainjector copies into caBundle. */}}
{{- define "statecar.servingCertificateName" -}}
{{- printf "%s-webhook" (include "statecar.fullname" .) }}
{{- end }}

{{/*
clientConfig of a webhook: the Service, or `webhook.url` for an operator outside the cluster.
caBundle only in mode secret; in mode operator the operator patches it, in mode cert-manager
the cainjector does, and leaving it out of the manifest means `helm upgrade` never resets it
(Helm's three-way merge only touches fields the chart sets).
Argument: (list $ "/path").
*/}}
{{- define "statecar.clientConfig" -}}
{{- $ := index . 0 }}
{{- $path := index . 1 }}
{{- if $.Values.webhook.url }}
url: {{ printf "%s%s" (trimSuffix "/" $.Values.webhook.url) $path | quote }}
{{- else }}
service:
  name: {{ include "statecar.webhookServiceName" $ }}
  namespace: {{ $.Release.Namespace }}
  port: {{ $.Values.webhook.service.port }}
  path: {{ $path | quote }}
{{- end }}
{{- if eq $.Values.webhook.certificates.mode "secret" }}
caBundle: {{ required "webhook.certificates.secret.caBundle is required when webhook.certificates.mode is secret" $.Values.webhook.certificates.secret.caBundle | quote }}
{{- end }}
{{- end }}

{{/*
Extra SANs of the operator-managed serving certificate, comma-separated: the values' list plus
the host of webhook.url (an operator outside the cluster, reached as https://127.0.0.1:9443/,
must present a certificate for 127.0.0.1).
*/}}
{{- define "statecar.extraSANs" -}}
{{- $names := .Values.webhook.certificates.operator.extraSANs | default list }}
{{- with .Values.webhook.url }}
{{- $host := regexReplaceAll ":[0-9]+$" (urlParse .).host "" | trimPrefix "[" | trimSuffix "]" }}
{{- $names = append $names $host }}
{{- end }}
{{- $names | uniq | join "," }}
{{- end }}

{{/* Annotations of the webhook configurations: the cainjector's source in mode cert-manager. */}}
{{- define "statecar.webhookAnnotations" -}}
{{- if eq .Values.webhook.certificates.mode "cert-manager" }}
cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "statecar.servingCertificateName" .) }}
{{- end }}
{{- end }}

{{/*
Namespaces never sent to the injector: kube-system and the release namespace always (a broken
operator must never block the pods that would repair it), plus webhook.excludeNamespaces.
*/}}
{{- define "statecar.excludedNamespaces" -}}
{{- $names := list "kube-system" .Release.Namespace }}
{{- range .Values.webhook.excludeNamespaces }}
{{- $names = append $names . }}
{{- end }}
{{- toJson ($names | uniq | sortAlpha) }}
{{- end }}

{{/*
Checks across several values, which values.schema.json cannot express. Each message names the
keys, like the schema's own messages.
*/}}
{{- define "statecar.validate" -}}
{{- $le := .Values.operator.leaderElection }}
{{- if not (lt (float64 $le.renewDeadlineSeconds) (float64 $le.leaseDurationSeconds)) }}
{{- fail (printf "operator.leaderElection.renewDeadlineSeconds (%v) must be less than operator.leaderElection.leaseDurationSeconds (%v): a leader that cannot renew must stop before another replica may take over" $le.renewDeadlineSeconds $le.leaseDurationSeconds) }}
{{- end }}
{{- if not (lt (float64 $le.retryPeriodSeconds) (float64 $le.renewDeadlineSeconds)) }}
{{- fail (printf "operator.leaderElection.retryPeriodSeconds (%v) must be less than operator.leaderElection.renewDeadlineSeconds (%v)" $le.retryPeriodSeconds $le.renewDeadlineSeconds) }}
{{- end }}
{{- if and (not $le.enabled) (gt (int .Values.replicaCount) 1) }}
{{- fail "operator.leaderElection.enabled=false needs replicaCount 1: without the Lease every replica would write the same Secrets and statuses" }}
{{- end }}
{{- if eq (int64 .Values.operator.webhookPort) (int64 .Values.operator.healthPort) }}
{{- fail "operator.webhookPort and operator.healthPort must differ" }}
{{- end }}
{{- $op := .Values.webhook.certificates.operator }}
{{- if and (eq .Values.webhook.certificates.mode "operator") (not (gt (float64 $op.caValiditySeconds) (mulf 6 (float64 $op.rotationOverlapSeconds)))) }}
{{- fail (printf "webhook.certificates.operator.caValiditySeconds (%d) must be more than 6 x webhook.certificates.operator.rotationOverlapSeconds (%v): a CA rotation starts with a third of the CA's lifetime left and takes two overlap steps" (int64 $op.caValiditySeconds) $op.rotationOverlapSeconds) }}
{{- end }}
{{- if and (eq .Values.webhook.certificates.mode "operator") (gt (float64 $op.caRenewBeforeSeconds) 0.0) (or (ge (float64 $op.caRenewBeforeSeconds) (float64 $op.caValiditySeconds)) (le (float64 $op.caRenewBeforeSeconds) (mulf 2 (float64 $op.rotationOverlapSeconds)))) }}
{{- fail (printf "webhook.certificates.operator.caRenewBeforeSeconds (%d) must be less than caValiditySeconds (%d) and more than 2 x rotationOverlapSeconds (%v): the rotation's two overlap steps must end before the old CA expires" (int64 $op.caRenewBeforeSeconds) (int64 $op.caValiditySeconds) $op.rotationOverlapSeconds) }}
{{- end }}
{{- end }}
