import { Type, type Static } from '@sinclair/typebox'

/**
 * The TypeBox schemas of the kubernetes provider's settings: provider-wide (`providers.kubernetes`)
 * and per template (`templates.<name>.kubernetes`). docs/kubernetes.md lists every key with its
 * default; kubernetes-provider-config.ts parses them into the types the provider uses.
 */

const DNS_LABEL = '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'
const ENV_NAME_RE = '^[A-Za-z_][A-Za-z0-9_.-]*$'
const Duration = Type.Union([Type.Integer({ minimum: 0 }), Type.String()])
const Labels = Type.Record(Type.String({ minLength: 1, maxLength: 253 }), Type.String({ maxLength: 63 }))
const Annotations = Type.Record(Type.String({ minLength: 1, maxLength: 253 }), Type.String({ maxLength: 10_000 }))
const Quantity = Type.Union([
  Type.String({ pattern: '^[0-9.]+([eE][0-9]+|[kMGTPE]i?|m)?$' }),
  Type.Number({ minimum: 0 }),
])
const ResourceList = Type.Record(Type.String({ minLength: 1, maxLength: 253 }), Quantity)

export const kubernetesProviderSettingsSchema = Type.Object(
  {
    /** Namespace of this pool's pods, claims and network policy (one namespace per pool). Default `studiopool`. */
    namespace: Type.Optional(Type.String({ pattern: DNS_LABEL })),
    /**
     * `in-cluster`: the pod's service account (studiopool deployed in the cluster); `kubeconfig`:
     * the file `kubeconfig` names, at `context`. Default: `kubeconfig` when a file is named, else `in-cluster`.
     */
    auth: Type.Optional(Type.Union([Type.Literal('in-cluster'), Type.Literal('kubeconfig')])),
    kubeconfig: Type.Optional(Type.String({ minLength: 1 })),
    /** A context of the kubeconfig file. Default: its current-context. */
    context: Type.Optional(Type.String({ minLength: 1 })),
    /** Timeout of one API call. Default 30 s. */
    requestTimeout: Type.Optional(Duration),
    /** A watch is renewed (from its resourceVersion) after this long. Default 5 min. */
    watchTimeout: Type.Optional(Duration),
    /** First wait before a watch or list that failed is tried again; doubles up to maxRetryBackoff. Default 1 s. */
    retryBackoff: Type.Optional(Duration),
    /** The longest wait between such tries. Default 30 s. */
    maxRetryBackoff: Type.Optional(Duration),
    /** Per-user home claims: storage class (default: the cluster's default class), size, access modes. */
    homeStorageClass: Type.Optional(Type.String({ minLength: 1, maxLength: 253 })),
    homeSize: Type.Optional(Quantity),
    homeAccessModes: Type.Optional(
      Type.Array(
        Type.Union([
          Type.Literal('ReadWriteOnce'),
          Type.Literal('ReadWriteOncePod'),
          Type.Literal('ReadWriteMany'),
          Type.Literal('ReadOnlyMany'),
        ]),
        { minItems: 1 },
      ),
    ),
    /**
     * The NetworkPolicy that admits ingress to session pods only from the gateway's pods. `true`
     * (default) makes and keeps it; `false`: you manage isolation yourself (say so in /readyz).
     */
    networkPolicy: Type.Optional(Type.Boolean()),
    /** Labels of studiopool's gateway pods (the Deployment's pod labels). Default `app.kubernetes.io/name: studiopool`. */
    gatewayPodLabels: Type.Optional(Labels),
    /** Namespace of the gateway pods, when not the pool's. */
    gatewayNamespace: Type.Optional(Type.String({ pattern: DNS_LABEL })),
    /** A pod lost behind studiopool's back is listed as lost, with its reason, for this long. Default 10 min. */
    lostRetention: Type.Optional(Duration),
  },
  { additionalProperties: false },
)

export const kubernetesTemplateSettingsSchema = Type.Object(
  {
    image: Type.String({ minLength: 1, maxLength: 500 }),
    imagePullPolicy: Type.Optional(
      Type.Union([Type.Literal('IfNotPresent'), Type.Literal('Always'), Type.Literal('Never')]),
    ),
    /** The container's entrypoint and arguments; tokens (`{{basePath}}`, `{{appToken}}`, …) substituted. */
    command: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
    args: Type.Optional(Type.Array(Type.String())),
    env: Type.Optional(Type.Record(Type.String({ pattern: ENV_NAME_RE }), Type.String())),
    /** The app's port in the pod. Default: the template's `port`. */
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    resources: Type.Optional(
      Type.Object(
        { requests: Type.Optional(ResourceList), limits: Type.Optional(ResourceList) },
        { additionalProperties: false },
      ),
    ),
    nodeSelector: Type.Optional(Labels),
    /** Kubernetes Toleration objects, passed as they are (validated by the API server). */
    tolerations: Type.Optional(Type.Array(Type.Record(Type.String(), Type.Unknown()), { maxItems: 50 })),
    /** A Kubernetes Affinity object, passed as it is. */
    affinity: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    imagePullSecrets: Type.Optional(Type.Array(Type.String({ pattern: DNS_LABEL }), { maxItems: 20 })),
    priorityClassName: Type.Optional(Type.String({ minLength: 1, maxLength: 253 })),
    /** A service account for the session pod; its token is never mounted. Default: the namespace's `default`. */
    serviceAccountName: Type.Optional(Type.String({ minLength: 1, maxLength: 253 })),
    /** Pod securityContext ids. Defaults runAsUser 1000, runAsGroup 100, fsGroup 100 (Jupyter's images). */
    runAsUser: Type.Optional(Type.Integer({ minimum: 1 })),
    runAsGroup: Type.Optional(Type.Integer({ minimum: 0 })),
    fsGroup: Type.Optional(Type.Integer({ minimum: 0 })),
    readOnlyRootFilesystem: Type.Optional(Type.Boolean()),
    labels: Type.Optional(Labels),
    annotations: Type.Optional(Annotations),
    /** The user's persistent home: their claim `studiopool-home-<user slug>` mounted here. */
    home: Type.Optional(
      Type.Object(
        { mountPath: Type.String({ pattern: '^/' }), subPath: Type.Optional(Type.String({ minLength: 1 })) },
        { additionalProperties: false },
      ),
    ),
    /** terminationGracePeriodSeconds. Default 10 s. */
    stopGrace: Type.Optional(Duration),
  },
  { additionalProperties: false },
)

export type KubernetesProviderSettingsInput = Static<typeof kubernetesProviderSettingsSchema>
export type KubernetesTemplateSettingsInput = Static<typeof kubernetesTemplateSettingsSchema>
