package policy

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
)

// ImageLabelPrefix is the reserved selector key prefix for the labels baked
// into a container's image: "image.label/app=payments" requires
// Target.ImageLabels["app"] == "payments". A container label whose key
// starts with the prefix (one set with docker run --label image.label/...)
// is ignored by every binding, so whoever starts a container cannot pose as
// its image. A selector that uses the prefix must come with an image
// pattern that names the images it trusts (see [Binding]).
const ImageLabelPrefix = "image.label/"

// splitImageRequirements separates a canonical selector's requirements on
// the container's own labels from those on ImageLabelPrefix keys, which it
// returns with the prefix cut off, ready to be matched against
// Target.ImageLabels. reqs is returned as is when it has no image key.
func splitImageRequirements(reqs labels.Requirements) (own, image labels.Requirements, err error) {
	n := 0
	for _, r := range reqs {
		if strings.HasPrefix(r.Key(), ImageLabelPrefix) {
			n++
		}
	}
	if n == 0 {
		return reqs, nil, nil
	}
	own = make(labels.Requirements, 0, len(reqs)-n)
	image = make(labels.Requirements, 0, n)
	for _, r := range reqs {
		key, ok := strings.CutPrefix(r.Key(), ImageLabelPrefix)
		if !ok {
			own = append(own, r)
			continue
		}
		c, err := labels.NewRequirement(key, r.Operator(), r.ValuesUnsorted())
		if err != nil { // cannot happen: the name part of a valid key is a valid key
			return nil, nil, fmt.Errorf("requirement %q: %w", r.String(), err)
		}
		image = append(image, *c)
	}
	return own, image, nil
}

// namesImages reports whether p says whose images it trusts: it has a
// digest, or its registry host and first path segment (the namespace, or
// the repository itself) are literal, without glob characters. Image labels
// are chosen by whoever can push to the repository, so only such a pattern
// may accompany a selector on image labels.
func (p ImagePattern) namesImages() bool {
	if p.digest != "" {
		return true
	}
	if len(p.segs) < 2 {
		return false
	}
	for _, seg := range p.segs[:2] {
		if seg == "**" || strings.ContainsAny(seg, globChars) {
			return false
		}
	}
	return true
}
