{{/* Building blocks of templates/networkpolicies.yaml. */}}
{{- define "mediaflow.np.dns" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels: {k8s-app: kube-dns}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}
{{- define "mediaflow.np.apiServer" -}}
- to:
    - ipBlock: {cidr: {{ .Values.networkPolicy.apiServerCidr }}}
  ports:
    {{- range .Values.networkPolicy.apiServerPorts }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end -}}
{{/* Ingress from Prometheus to the given metrics ports; call with (dict "ctx" $ "ports" (list 9090)). */}}
{{- define "mediaflow.np.fromMonitoring" -}}
{{- $np := .ctx.Values.networkPolicy -}}
- from:
    - namespaceSelector:
        {{- toYaml $np.monitoringNamespaceSelector | nindent 8 }}
      {{- with $np.monitoringPodSelector }}
      podSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  ports:
    {{- range .ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end -}}
{{/* Egress to the S3 artifact store (s3 backend only): the endpoint's port, see mediaflow.s3Port. */}}
{{- define "mediaflow.np.toS3" -}}
{{- if eq .Values.storage.media.backend "s3" -}}
- ports:  # the S3 artifact store: {{ .Values.storage.media.s3.endpointUrl | default "AWS" }}
    - {protocol: TCP, port: {{ include "mediaflow.s3Port" . }}}
{{- end -}}
{{- end -}}
{{- define "mediaflow.np.pods" -}}
{{- $ctx := .ctx -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/instance: {{ $ctx.Release.Name }}
      app.kubernetes.io/component: {{ .component }}
{{- end -}}
{{- define "mediaflow.np.rayPeers" -}}
{{- $ctx := . -}}
{{- range $component := list "ray-head" "ray-worker" }}
{{ include "mediaflow.np.pods" (dict "ctx" $ctx "component" $component) }}
{{- end }}
{{- end -}}
{{- define "mediaflow.np.toModelsAndQdrant" -}}
# the Ray Serve proxies (every Ray node) and Qdrant
- to:
    {{- include "mediaflow.np.rayPeers" . | nindent 4 }}
  ports:
    - {protocol: TCP, port: {{ .Values.ray.servePort }}}
{{- if .Values.qdrant.external.url }}
- ports:  # an external Qdrant: its address is not known here
    - {protocol: TCP, port: 443}
    - {protocol: TCP, port: {{ .Values.qdrant.httpPort }}}
{{- else }}
- to:
    {{- include "mediaflow.np.pods" (dict "ctx" . "component" "qdrant") | nindent 4 }}
  ports:
    - {protocol: TCP, port: {{ .Values.qdrant.httpPort }}}
    - {protocol: TCP, port: {{ .Values.qdrant.grpcPort }}}
{{- end }}
{{- with include "mediaflow.np.toS3" . }}
{{ . }}
{{- end }}
{{- end -}}
