package policy

import (
	"errors"
	"fmt"
	"math"
	"path"

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
// picks, and says where the secret lands in them.
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
}

// Normalize validates every field of b, fills in the defaults (File, Mode)
// and rewrites Selector and Image in canonical form, so that two bindings
// meaning the same thing compare equal and a normalized binding normalizes to
// itself. Errors wrap ErrInvalid and name the field at fault. On error b is
// left unchanged.
func (b *Binding) Normalize() error {
	c, err := compile(*b)
	if err != nil {
		return err
	}
	*b = c.Binding
	return nil
}

// compiled is a normalized binding with its selector and image pattern
// parsed, ready to be matched.
type compiled struct {
	Binding
	reqs  labels.Requirements // canonical order
	image ImagePattern        // zero: any image

	// Where a Set indexes the binding; set once when it is added.
	index int      // inRest, inEq or inExists
	keys  []string // eqKey pairs (inEq) or the label key (inExists)
}

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

	var img ImagePattern
	if b.Image != "" {
		img, err = parseImagePattern(b.Image)
		if err != nil {
			return nil, fmt.Errorf("%w %q: image %q: %w", ErrInvalid, b.Name, b.Image, err)
		}
		b.Image = img.String()
	}

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
	return &compiled{Binding: b, reqs: reqs, image: img}, nil
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
}

func (c *compiled) grant() Grant {
	return Grant{Binding: c.Name, Secret: c.Secret, File: c.File, Mode: c.Mode, UID: c.UID, GID: c.GID}
}
