package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// ErrInvalidLabels is what ParseLabels and ValidateLabels errors wrap. It
// reads "invalid labels" (not "invalid binding": a label set is not a
// binding) and is also ErrInvalid, so errors.Is(err, ErrInvalid) holds.
var ErrInvalidLabels error = labelsError{}

type labelsError struct{}

func (labelsError) Error() string        { return "invalid labels" }
func (labelsError) Is(target error) bool { return target == ErrInvalid }

// Limits on a label set given by an admin (an agent's host labels).
const (
	MaxLabels     = 64
	MaxLabelsSize = 4096 // bytes of keys and values together
)

// ParseLabels parses "k=v,k2=v2" into a label set with Kubernetes' rules
// for keys and values. Spaces around keys and values are dropped; a key may
// appear once. "" is the empty set. Errors wrap ErrInvalidLabels (and so
// ErrInvalid).
func ParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%w: %q is not key=value", ErrInvalidLabels, strings.TrimSpace(kv))
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%w: key %q given twice", ErrInvalidLabels, k)
		}
		out[k] = v
	}
	if err := ValidateLabels(out); err != nil {
		return nil, err
	}
	return out, nil
}

// ValidateLabels checks a label set: Kubernetes label keys and values, at
// most MaxLabels of them and MaxLabelsSize bytes. Errors wrap
// ErrInvalidLabels (and so ErrInvalid) and name the first bad key in key
// order.
func ValidateLabels(ls map[string]string) error {
	if len(ls) > MaxLabels {
		return fmt.Errorf("%w: %d labels, at most %d", ErrInvalidLabels, len(ls), MaxLabels)
	}
	size := 0
	for _, k := range slices.Sorted(maps.Keys(ls)) {
		v := ls[k]
		size += len(k) + len(v)
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("%w: label key %q: %s", ErrInvalidLabels, k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("%w: label %q: value %q: %s", ErrInvalidLabels, k, v, strings.Join(errs, "; "))
		}
	}
	if size > MaxLabelsSize {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidLabels, size, MaxLabelsSize)
	}
	return nil
}

// FormatLabels is the inverse of ParseLabels: "k=v,k2=v2" in key order.
func FormatLabels(ls map[string]string) string {
	parts := make([]string, 0, len(ls))
	for _, k := range slices.Sorted(maps.Keys(ls)) {
		parts = append(parts, k+"="+ls[k])
	}
	return strings.Join(parts, ",")
}
