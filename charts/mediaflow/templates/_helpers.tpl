{{- define "mediaflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mediaflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "mediaflow.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "mediaflow.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Standard labels; call with (dict "ctx" $ "component" "gateway"). */}}
{{- define "mediaflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: mediaflow
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{ include "mediaflow.selectorLabels" . }}
{{- end -}}

{{- define "mediaflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mediaflow.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image reference for a role; call with (dict "ctx" $ "role" "gateway"). */}}
{{- define "mediaflow.image" -}}
{{- $image := index .ctx.Values.images .role -}}
{{- $tag := $image.tag | default .ctx.Chart.AppVersion -}}
{{- if .ctx.Values.images.registry -}}
{{- printf "%s/%s:%s" .ctx.Values.images.registry $image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* containerSecurityContext with a component's overrides set key by key (so false wins over true);
call with (dict "ctx" $ "override" .Values.gateway.containerSecurityContext). */}}
{{- define "mediaflow.containerSecurity" -}}
{{- $security := deepCopy .ctx.Values.containerSecurityContext -}}
{{- range $key, $value := .override | default dict -}}
{{- $_ := set $security $key $value -}}
{{- end -}}
{{- toYaml $security -}}
{{- end -}}

{{- define "mediaflow.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.images.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "mediaflow.qdrantUrl" -}}
{{- .Values.qdrant.external.url | default (printf "http://%s-qdrant:%d" (include "mediaflow.fullname" .) (int .Values.qdrant.httpPort)) -}}
{{- end -}}

{{- define "mediaflow.serveUrl" -}}
{{- printf "http://%s-ray-serve-svc:%d" (include "mediaflow.fullname" .) (int .Values.ray.servePort) -}}
{{- end -}}

{{/* Secret-backed pipeline env (Qdrant key, S3 credentials); the rest comes from the pipeline ConfigMap. */}}
{{- define "mediaflow.pipelineSecretEnv" -}}
env:
  - name: HOME
    value: /tmp
  {{- if or (not .Values.qdrant.external.url) .Values.qdrant.external.apiKeySecret }}
  - name: MEDIAFLOW_QDRANT_API_KEY
    valueFrom:
      secretKeyRef:
        name: {{ .Values.qdrant.external.apiKeySecret | default (printf "%s-qdrant" (include "mediaflow.fullname" .)) }}
        key: api-key
  {{- end }}
  {{- if and (eq .Values.storage.media.backend "s3") .Values.storage.media.s3.credentialsSecret }}
  - name: AWS_ACCESS_KEY_ID
    valueFrom: {secretKeyRef: {name: {{ .Values.storage.media.s3.credentialsSecret }}, key: AWS_ACCESS_KEY_ID}}
  - name: AWS_SECRET_ACCESS_KEY
    valueFrom: {secretKeyRef: {name: {{ .Values.storage.media.s3.credentialsSecret }}, key: AWS_SECRET_ACCESS_KEY}}
  {{- end }}
{{- end -}}

{{- define "mediaflow.tmpVolume" -}}
- name: tmp
  emptyDir: {sizeLimit: 1Gi}
{{- end -}}

{{- define "mediaflow.mediaVolume" -}}
{{- if eq .Values.storage.media.backend "pvc" }}
- name: media
  persistentVolumeClaim:
    claimName: {{ include "mediaflow.fullname" . }}-media
{{- end }}
{{- end -}}

{{- define "mediaflow.mediaMount" -}}
{{- if eq .Values.storage.media.backend "pvc" }}
- name: media
  mountPath: {{ .Values.storage.media.mountPath }}
{{- end }}
{{- end -}}

{{/* fsspec URI of the artifact store, shared by every component and the Ray Serve apps. */}}
{{- define "mediaflow.artifactRoot" -}}
{{- if eq .Values.storage.media.backend "s3" -}}
{{- required "storage.media.s3.artifactRoot is required with the s3 backend" .Values.storage.media.s3.artifactRoot -}}
{{- else -}}
{{- printf "%s/artifacts" .Values.storage.media.mountPath -}}
{{- end -}}
{{- end -}}

{{/* serveConfigV2: the profile's file (or values' override), pointed at this release's storage. */}}
{{- define "mediaflow.serveConfig" -}}
{{- $raw := .Values.ray.serveConfig | default (.Files.Get (printf "files/serve-%s.yaml" .Values.ray.serveProfile)) -}}
{{- $cfg := fromYaml $raw -}}
{{- $root := include "mediaflow.artifactRoot" . -}}
{{- range $app := $cfg.applications -}}
{{- if and $app.runtime_env (hasKey ($app.runtime_env.env_vars | default dict) "MEDIAFLOW_ARTIFACT_ROOT") -}}
{{- $_ := set $app.runtime_env.env_vars "MEDIAFLOW_ARTIFACT_ROOT" $root -}}
{{- end -}}
{{- if hasKey ($app.args | default dict) "model_source" -}}
{{- $llm := $.Values.ray.llm -}}
{{- if $llm.modelId -}}{{- $_ := set $app.args "model_id" $llm.modelId -}}{{- end -}}
{{- /* the model's dir on this release's model cache: <mountPath>/<model id>, else the file's dir name */ -}}
{{- $dir := $llm.modelId | default (base $app.args.model_source) -}}
{{- $_ := set $app.args "model_source" (printf "%s/%s" $.Values.storage.modelCache.mountPath $dir) -}}
{{- $engine := $app.args.engine_kwargs | default dict -}}
{{- if $llm.maxModelLen -}}{{- $_ := set $engine "max_model_len" (int $llm.maxModelLen) -}}{{- end -}}
{{- if $llm.gpuMemoryUtilization -}}{{- $_ := set $engine "gpu_memory_utilization" (float64 $llm.gpuMemoryUtilization) -}}{{- end -}}
{{- if $llm.tensorParallelSize -}}{{- $_ := set $engine "tensor_parallel_size" (int $llm.tensorParallelSize) -}}{{- end -}}
{{- $_ := set $app.args "engine_kwargs" $engine -}}
{{- if $llm.acceleratorType -}}{{- $_ := set $app.args "accelerator_type" $llm.acceleratorType -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Ray pod volumes: writable /tmp (Ray's session dir), shared memory for the object store, caches, media. */}}
{{- define "mediaflow.rayVolumes" -}}
- name: tmp
  emptyDir: {sizeLimit: 10Gi}
- name: dshm
  emptyDir: {medium: Memory, sizeLimit: 2Gi}
- name: models
  persistentVolumeClaim:
    claimName: {{ include "mediaflow.fullname" . }}-models
{{ include "mediaflow.mediaVolume" . }}
{{- end -}}

{{- define "mediaflow.rayMounts" -}}
- {name: tmp, mountPath: /tmp}
- {name: dshm, mountPath: /dev/shm}
- {name: models, mountPath: {{ .Values.storage.modelCache.mountPath }}}
{{ include "mediaflow.mediaMount" . }}
{{- end -}}

{{/* Raylet (and on the head, GCS) health, as KubeRay checks it, with the image's python (no wget there).
With "serve", also the Ray Serve proxy on this node (:servePort/-/healthz): KubeRay 1.4's default readiness
probe of RayService workers checks it, so a worker whose proxy is down (or draining) leaves the serve Service.
Call with (dict "ctx" $ "head" bool "serve" bool). */}}
{{- define "mediaflow.rayHealthCommand" -}}
{{- $urls := list "http://localhost:52365/api/local_raylet_healthz" -}}
{{- if .head }}{{- $urls = append $urls (printf "http://localhost:%d/api/gcs_healthz" (int .ctx.Values.ray.head.dashboardPort)) -}}{{- end -}}
{{- if .serve }}{{- $urls = append $urls (printf "http://localhost:%d/-/healthz" (int .ctx.Values.ray.servePort)) -}}{{- end -}}
[python3, -c, "import sys, urllib.request as u; sys.exit(0 if all(b'success' in u.urlopen(x, timeout=2).read() for x in {{ $urls | toJson | replace "\"" "'" }}) else 1)"]
{{- end -}}

{{/* Probes of a Ray container; call with (dict "ctx" $ "head" bool). Workers (not the head, whose proxy
KubeRay checks itself on each reconcile) are only ready while their Serve proxy is healthy, as with
KubeRay's own worker readiness probe (failureThreshold 1: out of the serve Service at once). */}}
{{- define "mediaflow.rayProbes" -}}
startupProbe:
  exec:
    command: {{ include "mediaflow.rayHealthCommand" (dict "ctx" .ctx "head" .head) }}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: {{ .ctx.Values.ray.startupFailureThreshold }}
livenessProbe:
  exec:
    command: {{ include "mediaflow.rayHealthCommand" (dict "ctx" .ctx "head" .head) }}
  periodSeconds: 15
  timeoutSeconds: 5
  failureThreshold: 5
readinessProbe:
  exec:
    command: {{ include "mediaflow.rayHealthCommand" (dict "ctx" .ctx "head" .head "serve" (not .head)) }}
  {{- if .head }}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
  {{- else }}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 1
  {{- end }}
{{- end -}}

{{/* Namespaces whose MediaJobs the operator watches, as JSON: the release namespace first (the worker
Jobs run there), then operator.watchNamespaces without "*" (see mediaflow.operator.clusterWide). */}}
{{- define "mediaflow.operator.namespaces" -}}
{{- $extra := .Values.operator.watchNamespaces | default list -}}
{{- if and (has "*" $extra) (gt (len $extra) 1) -}}
{{- fail (printf "operator.watchNamespaces: \"*\" already means every namespace; list it alone, not with %s" (without $extra "*" | toJson)) -}}
{{- end -}}
{{- prepend (without $extra "*" .Release.Namespace) .Release.Namespace | uniq | toJson -}}
{{- end -}}

{{/* "true" when the operator watches every namespace (operator.watchNamespaces: ["*"]), else empty. */}}
{{- define "mediaflow.operator.clusterWide" -}}
{{- if has "*" (.Values.operator.watchNamespaces | default list) -}}true{{- end -}}
{{- end -}}

{{/* MEDIAFLOW_OPERATOR_WATCH_NAMESPACES: the release namespace, then the extra namespaces or "*". */}}
{{- define "mediaflow.operator.watchNamespacesEnv" -}}
{{- $names := include "mediaflow.operator.namespaces" . | fromJsonArray -}}
{{- if include "mediaflow.operator.clusterWide" . -}}
{{- $names = append $names "*" -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/* TCP port of the S3 endpoint (storage.media.s3.endpointUrl): its explicit port, else 443 for https
(or no endpoint: AWS), 80 for http. */}}
{{- define "mediaflow.s3Port" -}}
{{- $url := .Values.storage.media.s3.endpointUrl -}}
{{- if not $url -}}
443
{{- else -}}
{{- $parsed := urlParse $url -}}
{{- $port := regexFind ":[0-9]+$" $parsed.host | trimPrefix ":" -}}
{{- $port | default (ternary "443" "80" (eq $parsed.scheme "https")) -}}
{{- end -}}
{{- end -}}
