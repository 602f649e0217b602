// Package policy decides which secrets a container receives.
//
// A [Binding] joins one secret to the containers that a Kubernetes-style
// label selector (and optionally an image pattern and a host selector)
// picks, and says where the secret lands: the file name under /run/secrets,
// its mode and its owner.
// Bindings are validated and put in canonical form by [Binding.Normalize].
//
// A [Set] is an immutable, compiled collection of bindings, safe for
// concurrent use. [Set.Match] answers "what does this container get?" in time
// proportional to the bindings that could apply to it, not to the size of the
// set: each binding is indexed under one equality requirement (key=value or
// key in (...)) or one existence requirement it must satisfy, so only
// bindings reachable from the container's own labels (and its image's
// labels, for image.label/ keys), plus the few without such a requirement,
// are evaluated. [Set.With] and [Set.Without] return updated copies that
// share almost all of their structure with the original, so an API write
// costs microseconds, not a recompilation.
//
// # Selectors
//
// Selectors use the Kubernetes label-selector syntax, parsed by
// k8s.io/apimachinery/pkg/labels: "app=web", "app==web", "app!=web",
// "env in (prod,staging)", "env notin (dev)", "tier" (key exists),
// "!debug" (key absent); a comma means "and". The numeric operators '<' and
// '>' are not supported. An empty selector is rejected: it would match every
// container.
//
// A selector sees the container's own labels (what docker run --label set),
// not its image's. Keys under the reserved prefix [ImageLabelPrefix]
// ("image.label/") name the image's labels instead: "image.label/app=payments"
// requires the image label app=payments. Container labels under that prefix
// are ignored, so they cannot be forged by whoever starts the container. Image
// labels are chosen by the image's author, so a binding whose selector uses
// them must also have an image pattern that names the images it trusts: a
// digest, or a literal registry host and first path segment
// ("registry.example.com/team/*", "busybox:1.*"); "", "**", "**/app" and
// "*/team/app" are refused. Image-label requirements are indexed like the
// others.
//
// # Host selectors
//
// A binding's optional Hosts selector restricts it to containers reported
// by agents whose labels (set by an admin at enrollment) match it: same
// syntax, limits and canonical form as the selector, "" meaning any host
// (text without a requirement, such as " ", is refused). It is evaluated
// last, only for bindings that otherwise match. A host without labels is
// the empty label set: "env=prod" does not match it, "!debug" does.
// Image-label keys are refused in host selectors.
//
// # Image patterns
//
// An image pattern restricts a binding to containers running certain images.
// It is either a digest ("sha256:<64 hex>" or "@sha256:<64 hex>"), compared
// with the container's image digest, or a repository glob with an optional
// tag glob and digest: "registry.example.com/team/*", "busybox:1.*",
// "ghcr.io/org/app@sha256:<64 hex>". The repository is split on '/', and each
// segment is matched with [path.Match], so '*' never crosses a '/'; a segment
// that is exactly "**" matches any number of segments (at most two per
// pattern). Names are normalised like Docker's: a pattern whose first
// segment is not a host (contains no '.' or ':' and is not "localhost") lives
// on docker.io, and a single-segment docker.io name is under "library/", so
// "busybox:1" means "docker.io/library/busybox:1". A first segment holding
// glob characters is taken as a host pattern: "*/team/app" matches
// team/app on any registry. A pattern without a tag matches every tag. A
// lone "*" (with or without a tag or digest) is refused: by these rules it
// would mean Docker Hub's official images only, which is never what it
// seems to say; "**" is any repository, and no pattern at all is any image.
//
// Tags are mutable: a tag pattern says what the container was started from,
// not what it contains. Pin by digest where that matters.
package policy
