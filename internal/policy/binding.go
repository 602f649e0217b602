package policy

import (
	"errors"
	"fmt"
	"math"
	"path"
	"strings"

	"coffer/internal/secret"
	"k8s.io/apimachinery/pkg/labels"
)

// ErrInvalid is returned (wrapped, with the field and the reason) for a
// binding, selector or image pattern that cannot be accepted.
var ErrInvalid = errors.New("invalid binding")

// DefaultMode is the mode of a delivered file when a binding names none.
const DefaultMode uint32 = 0o400

// MaxID is the largest uid or gid a binding may name.
const MaxID = math.MaxInt32

// Binding joins a secret to the containers its selector (and image pattern)
// picks, on the hosts its host selector picks, and says where the secret
// lands in them.
//
// Selector keys under [ImageLabelPrefix] match the image's labels rather
// than the container's; a binding that uses them must have an Image pattern
// that names a digest, or a literal registry host and first path segment
// ("registry.example.com/team/*", "busybox", "ghcr.io/org/app:*"): image
// labels are chosen by the image's author, so the binding must say which
// images it trusts.
type Binding struct {
	Name     string `json:"name"`            // binding name, secret.ValidateName rules
	Secret   string `json:"secret"`          // secret name, secret.ValidateName rules
	Selector string `json:"selector"`        // Kubernetes label selector with at least one requirement
	Image    string `json:"image,omitempty"` // optional image pattern, see ParseImagePattern
	Hosts    string `json:"hosts,omitempty"` // optional label selector over the agent's (host's) labels; "" = any host
	File     string `json:"file,omitempty"`  // file name under /run/secrets; default path.Base(Secret)
	Mode     uint32 `json:"mode,omitempty"`  // permission bits; default 0o400; must allow owner read
	UID      int    `json:"uid"`             // file owner, 0..MaxID
	GID      int    `json:"gid"`             // file group, 0..MaxID
	// Rotation is what the container's process is told of a new version
	// (see ParseRotation): "" (file, the default), "signal:SIGHUP",
	// "restart-process" or "none".
	Rotation string `json:"rotation,omitempty"`
}

// Normalize validates every field of b, fills in the defaults (File, Mode)
// and rewrites Selector, Image and Hosts in canonical form, so that two
// bindings meaning the same thing compare equal and a normalized binding
// normalizes to itself. Errors wrap ErrInvalid and name the field at fault.
// On error b is left unchanged.
func (b *Binding) Normalize() error {
	c, err := compile(*b)
	if err != nil {
		return err
	}
	*b = c.Binding
	return nil
}

// compiled is a normalized binding with its selectors and image pattern
// parsed, ready to be matched.
type compiled struct {
	Binding
	reqs      labels.Requirements // all of Selector, canonical order, keys as written: what the index uses
	own       labels.Requirements // those on the container's own labels
	imageReqs labels.Requirements // those on ImageLabelPrefix keys, prefix cut off: matched against Target.ImageLabels
	image     ImagePattern        // zero: any image
	hosts     labels.Requirements // Hosts; nil: any host

	// Where a Set indexes the binding; set once when it is added.
	index    int      // inRest, inEq or inExists
	keys     []string // eqKey pairs (inEq) or the label key (inExists)
	imageKey string   // if keys are on an image label: its key, ImageLabelPrefix cut off
}

var (
	errEmptyHosts = errors.New(`no requirement: leave hosts empty ("") to mean any host`)
	errHostsImage = fmt.Errorf("the %s prefix names image labels, which a host selector cannot see", ImageLabelPrefix)
)

// compile validates and normalizes b and parses its selector and pattern.
func compile(b Binding) (*compiled, error) {
	if err := secret.ValidateName(b.Name); err != nil {
		return nil, fmt.Errorf("%w: name: %w", ErrInvalid, err)
	}
	if err := secret.ValidateName(b.Secret); err != nil {
		return nil, fmt.Errorf("%w %q: secret: %w", ErrInvalid, b.Name, err)
	}
	reqs, canon, err := parseSelector(b.Selector)
	if err != nil {
		return nil, fmt.Errorf("%w %q: selector %q: %w", ErrInvalid, b.Name, b.Selector, err)
	}
	b.Selector = canon
	own, imageReqs, err := splitImageRequirements(reqs)
	if err != nil {
		return nil, fmt.Errorf("%w %q: selector %q: %w", ErrInvalid, b.Name, b.Selector, err)
	}

	var img ImagePattern
	if b.Image != "" {
		img, err = parseImagePattern(b.Image)
		if err != nil {
			return nil, fmt.Errorf("%w %q: image %q: %w", ErrInvalid, b.Name, b.Image, err)
		}
	}
	if len(imageReqs) > 0 && !img.namesImages() {
		return nil, fmt.Errorf("%w %q: image %q: the selector uses %s keys, which the image's author chooses, "+
			"so the binding must say which images it trusts: give an image pattern with a digest, or with a literal "+
			"registry and first path segment (e.g. registry.example.com/team/*), not one that any image can match",
			ErrInvalid, b.Name, b.Image, ImageLabelPrefix)
	}
	b.Image = img.String()

	hosts, canonHosts, err := parseHosts(b.Hosts)
	if err != nil {
		return nil, fmt.Errorf("%w %q: hosts %q: %w", ErrInvalid, b.Name, b.Hosts, err)
	}
	b.Hosts = canonHosts

	if b.File == "" {
		b.File = path.Base(b.Secret)
	}
	if err := secret.ValidateFileName(b.File); err != nil {
		return nil, fmt.Errorf("%w %q: file: %w", ErrInvalid, b.Name, err)
	}

	if b.Mode == 0 {
		b.Mode = DefaultMode
	}
	switch {
	case b.Mode&^0o777 != 0:
		return nil, fmt.Errorf("%w %q: mode %O: only permission bits (0o000..0o777) are allowed", ErrInvalid, b.Name, b.Mode)
	case b.Mode&0o400 == 0:
		return nil, fmt.Errorf("%w %q: mode %O: the owner must be able to read the file (add 0o400)", ErrInvalid, b.Name, b.Mode)
	}
	if b.UID < 0 || b.UID > MaxID {
		return nil, fmt.Errorf("%w %q: uid %d: must be between 0 and %d", ErrInvalid, b.Name, b.UID, MaxID)
	}
	if b.GID < 0 || b.GID > MaxID {
		return nil, fmt.Errorf("%w %q: gid %d: must be between 0 and %d", ErrInvalid, b.Name, b.GID, MaxID)
	}
	if b.Rotation, err = parseRotation(b.Rotation); err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrInvalid, b.Name, err)
	}
	return &compiled{Binding: b, reqs: reqs, own: own, imageReqs: imageReqs, image: img, hosts: hosts}, nil
}

// parseHosts parses a host selector like Selector (same syntax, limits and
// canonical form), except that "" means any host (nil requirements) and
// ImageLabelPrefix keys are refused. The error carries only the reason.
func parseHosts(s string) (labels.Requirements, string, error) {
	if s == "" {
		return nil, "", nil
	}
	reqs, canon, err := parseSelector(s)
	if errors.Is(err, errEmptySelector) {
		err = errEmptyHosts
	}
	if err != nil {
		return nil, "", err
	}
	for _, r := range reqs {
		if strings.HasPrefix(r.Key(), ImageLabelPrefix) {
			return nil, "", fmt.Errorf("key %q: %w", r.Key(), errHostsImage)
		}
	}
	return reqs, canon, nil
}

// Target is a container as the runtime describes it: never as the
// container describes itself.
type Target struct {
	Labels      map[string]string // the container's own runtime labels (never the image's)
	ImageLabels map[string]string // labels baked into the image; selectors see them as "image.label/<key>"
	HostLabels  map[string]string // labels of the agent that reported the container, set by an admin at enrollment
	Image       string            // image reference the container was created from, e.g. "registry/x:1.2"
	ImageDigest string            // "sha256:<hex>" (image id or repo digest; "repo@sha256:<hex>" is accepted too)
}

// Grant is one secret a matching binding gives a container.
type Grant struct {
	Binding string `json:"binding"` // binding name
	Secret  string `json:"secret"`  // secret name
	File    string `json:"file"`    // file name under /run/secrets
	Mode    uint32 `json:"mode"`    // permission bits
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
	// Rotation is the binding's contract, canonical ("" for file).
	Rotation string `json:"rotation,omitempty"`
}

func (c *compiled) grant() Grant {
	return Grant{Binding: c.Name, Secret: c.Secret, File: c.File, Mode: c.Mode, UID: c.UID, GID: c.GID, Rotation: c.Rotation}
}
