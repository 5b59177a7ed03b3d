// Package registry is zdt's embedded OCI registry and its storage.
//
// It owns:
//
//   - the mapping of a bundle's content to repositories and tags
//     (Placements, ImageRepositories, MirrorNamespace), which `zdt serve`,
//     `zdt install` (mirror configs) and Import share;
//   - Store (OpenStore): the registry store of an install root, reached
//     only through an os.Root opened there. Import puts a verified bundle's
//     blobs and manifests into a distribution v3 filesystem store (the one
//     `zdt serve --root` serves) or keeps the archive itself there,
//     idempotently and with dedup across bundles; Activate makes one
//     bundle's tags the served ones; Prune removes what an installed
//     generation no longer needs (distribution's mark and sweep); Base
//     gives a delta its installed base; Health checks what is served;
//   - a read-only distribution storage driver over one or more bundle
//     archives (`zdt serve --bundle`), which synthesizes distribution's path
//     layout from the archive's tar offsets without extracting anything;
//   - NewHandler and Serve: distribution's registry (handlers.App) run
//     in-process over either storage, with anonymous read-only access, push
//     only with htpasswd credentials, the OCI 1.1 referrers API (which
//     distribution v3.1.2 lacks), /healthz, Prometheus /metrics and
//     structured access logs; TLS by default with a locally generated CA
//     (OpenCA under an install root).
//
// Nothing here prints: loggers and progress callbacks are injected.
// Distribution logs through the process-wide logrus logger; NewHandler
// routes it to the injected *slog.Logger.
package registry
