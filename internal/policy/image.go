package policy

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/distribution/reference"
)

// MaxImagePatternLen is the longest image pattern accepted, in bytes.
const MaxImagePatternLen = 512

const (
	maxDoubleStars = 2
	digestPrefix   = "sha256:"
	dockerHub      = "docker.io"
)

// ImagePattern restricts a binding to containers running certain images.
// The zero ImagePattern matches every image. See the package documentation
// for the syntax.
type ImagePattern struct {
	segs   []string // normalised repository, host first; each a path.Match glob or "**"; nil: any repository
	tag    string   // tag glob; "": any tag
	digest string   // "sha256:<64 lower-case hex>"; "": any digest
}

// ParseImagePattern parses and normalises an image pattern such as
// "registry.example.com/team/*", "busybox:1.*", "**/app@sha256:<hex>" or
// "sha256:<hex>". Errors wrap ErrInvalid.
func ParseImagePattern(s string) (ImagePattern, error) {
	p, err := parseImagePattern(s)
	if err != nil {
		return ImagePattern{}, fmt.Errorf("%w: image pattern %q: %w", ErrInvalid, s, err)
	}
	return p, nil
}

// IsZero reports whether p is the zero pattern, which matches every image.
func (p ImagePattern) IsZero() bool { return p.segs == nil && p.tag == "" && p.digest == "" }

// String returns the canonical form of p: the repository in full
// ("docker.io/library/busybox"), then ":tag" and "@sha256:<hex>" if given;
// a digest-only pattern is "sha256:<hex>". The zero pattern is "".
func (p ImagePattern) String() string {
	if p.segs == nil {
		return p.digest
	}
	s := strings.Join(p.segs, "/")
	if p.tag != "" {
		s += ":" + p.tag
	}
	if p.digest != "" {
		s += "@" + p.digest
	}
	return s
}

// Match reports whether a container created from the image reference image,
// whose image has the digest imageDigest, is one p picks.
func (p ImagePattern) Match(image, imageDigest string) bool {
	var r imageRef
	return p.match(&r, image, imageDigest)
}

func parseImagePattern(s string) (ImagePattern, error) {
	switch {
	case s == "":
		return ImagePattern{}, errors.New("empty")
	case len(s) > MaxImagePatternLen:
		return ImagePattern{}, fmt.Errorf("longer than %d bytes", MaxImagePatternLen)
	}
	var p ImagePattern
	name := s
	switch {
	case strings.HasPrefix(s, "@"):
		name, p.digest = "", s[1:]
	case hasDigestPrefix(s):
		// Case-blind, so that a registry host spelled "shA256" with a port
		// cannot parse as a repository whose canonical, lower-cased form
		// would then read as a digest.
		name, p.digest = "", s
	default:
		if i := strings.IndexByte(s, '@'); i >= 0 {
			name, p.digest = s[:i], s[i+1:]
			if name == "" {
				return ImagePattern{}, errors.New("empty repository before '@'")
			}
		}
	}
	if p.digest != "" || strings.HasSuffix(s, "@") {
		d, err := parseDigest(p.digest)
		if err != nil {
			return ImagePattern{}, err
		}
		p.digest = d
	}
	if name == "" {
		return p, nil
	}
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name, p.tag = name[:i], name[i+1:]
		if err := checkTag(p.tag); err != nil {
			return ImagePattern{}, err
		}
	}
	segs, err := parseRepository(name)
	if err != nil {
		return ImagePattern{}, err
	}
	p.segs = segs
	return p, nil
}

func parseDigest(d string) (string, error) {
	if !hasDigestPrefix(d) {
		return "", fmt.Errorf("digest %q: only %q<64 hex digits> digests are supported", d, digestPrefix)
	}
	hex := d[len(digestPrefix):]
	if len(hex) != 64 || strings.Trim(hex, "0123456789abcdefABCDEF") != "" {
		return "", fmt.Errorf("digest %q: want %q followed by exactly 64 hex digits", d, digestPrefix)
	}
	return digestPrefix + strings.ToLower(hex), nil
}

// hasDigestPrefix reports whether s begins with "sha256:" in any case.
func hasDigestPrefix(s string) bool {
	return len(s) >= len(digestPrefix) && strings.EqualFold(s[:len(digestPrefix)], digestPrefix)
}

func checkTag(t string) error {
	switch {
	case t == "":
		return errors.New("empty tag after ':'")
	case len(t) > 128:
		return errors.New("tag longer than 128 bytes")
	case strings.Trim(t, tagChars+globChars) != "":
		return fmt.Errorf("tag %q: use letters, digits, '_', '.', '-' and the glob characters %q", t, globChars)
	}
	if _, err := path.Match(t, ""); err != nil {
		return fmt.Errorf("tag %q: bad glob", t)
	}
	return nil
}

const (
	lowerDigits = "abcdefghijklmnopqrstuvwxyz0123456789"
	tagChars    = lowerDigits + "ABCDEFGHIJKLMNOPQRSTUVWXYZ_.-"
	pathChars   = lowerDigits + "_.-"
	hostChars   = pathChars + ":"
	globChars   = "*?[]^"
)

var errLoneStar = errors.New(`a lone "*" would mean Docker Hub's official images only (docker.io/library/*): ` +
	`leave the image pattern out to allow any image, write "**" for any repository (with a tag: "**:1.2"), ` +
	`or "docker.io/library/*" if the official images are meant`)

// parseRepository splits and normalises a repository glob, docker.io and
// library/ included.
func parseRepository(name string) ([]string, error) {
	segs := strings.Split(name, "/")
	stars := 0
	for i, seg := range segs {
		switch {
		case seg == "":
			return nil, fmt.Errorf("repository %q: empty path segment", name)
		case seg == "**":
			stars++
			if stars > maxDoubleStars {
				return nil, fmt.Errorf("repository %q: at most %d \"**\" segments", name, maxDoubleStars)
			}
			if i > 0 && segs[i-1] == "**" {
				return nil, fmt.Errorf("repository %q: repeated \"**\"", name)
			}
			continue
		case strings.Contains(seg, "**"):
			return nil, fmt.Errorf("repository %q: \"**\" must be a whole path segment", name)
		}
		allowed := pathChars
		if i == 0 && len(segs) > 1 && isHost(strings.ToLower(seg)) {
			seg = strings.ToLower(seg) // host names are case-insensitive
			segs[0] = seg
			allowed = hostChars
		}
		if strings.Trim(seg, allowed+globChars) != "" {
			if strings.Trim(strings.ToLower(seg), allowed+globChars) == "" {
				return nil, fmt.Errorf("repository %q: must be lower-case", name)
			}
			return nil, fmt.Errorf("repository %q: segment %q: use lower-case letters, digits, '_', '.', '-' and the glob characters %q", name, seg, globChars)
		}
		if _, err := path.Match(seg, ""); err != nil {
			return nil, fmt.Errorf("repository %q: segment %q: bad glob", name, seg)
		}
		if allowed == hostChars {
			if host, port, ok := strings.Cut(seg, ":"); ok && (host == "" || port == "" || strings.Trim(port, "0123456789"+globChars) != "") {
				return nil, fmt.Errorf("repository %q: host %q: want host or host:port", name, seg)
			}
		}
	}
	if len(segs) == 1 && segs[0] == "**" {
		return segs, nil
	}
	if len(segs) == 1 && segs[0] == "*" {
		// Normalised like any short name, a lone "*" would mean
		// docker.io/library/*: Docker Hub's official images only, never
		// what someone who writes it wants.
		return nil, errLoneStar
	}
	if len(segs) == 1 || !isHost(segs[0]) {
		segs = append([]string{dockerHub}, segs...)
	}
	if segs[0] == "index.docker.io" {
		segs[0] = dockerHub
	}
	if segs[0] == dockerHub && len(segs) == 2 && segs[1] != "**" {
		segs = []string{dockerHub, "library", segs[1]}
	}
	return segs, nil
}

// isHost reports whether the first segment of a multi-segment name is a
// registry host (Docker's rule) or a glob standing for one.
func isHost(seg string) bool {
	return strings.ContainsAny(seg, ".:"+globChars) || seg == "localhost"
}

// imageRef is a container's image reference, parsed at most once per Match.
type imageRef struct {
	parsed bool
	ok     bool     // the reference parsed
	segs   []string // normalised repository, host first
	tag    string   // "" if the reference has a digest and no tag
	digest string   // digest in the reference, lower-case
}

func (r *imageRef) parse(image string) {
	r.parsed = true
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return
	}
	r.ok = true
	r.segs = strings.Split(strings.ToLower(reference.Domain(named))+"/"+reference.Path(named), "/")
	if t, ok := named.(reference.Tagged); ok {
		r.tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		r.digest = strings.ToLower(d.Digest().String())
	} else if r.tag == "" {
		r.tag = "latest"
	}
}

func (p *ImagePattern) match(r *imageRef, image, imageDigest string) bool {
	if p.digest != "" && !p.digestMatches(r, image, imageDigest) {
		return false
	}
	if p.segs == nil {
		return true
	}
	if !r.parsed {
		r.parse(image)
	}
	if !r.ok || !matchSegments(p.segs, r.segs) {
		return false
	}
	if p.tag == "" {
		return true
	}
	if r.tag == "" {
		return false
	}
	ok, _ := path.Match(p.tag, r.tag)
	return ok
}

func (p *ImagePattern) digestMatches(r *imageRef, image, imageDigest string) bool {
	if imageDigest != "" {
		if i := strings.LastIndexByte(imageDigest, '@'); i >= 0 {
			imageDigest = imageDigest[i+1:]
		}
		if strings.EqualFold(imageDigest, p.digest) {
			return true
		}
	}
	if !strings.Contains(image, "@") {
		return false
	}
	if !r.parsed {
		r.parse(image)
	}
	return r.ok && r.digest == p.digest
}

// matchSegments matches a path with globs per segment and "**" for any
// number of segments.
func matchSegments(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			rest := pat[1:]
			if len(rest) == 0 {
				return true
			}
			for i := range len(name) + 1 {
				if matchSegments(rest, name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], name[0]); !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}
