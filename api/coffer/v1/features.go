package cofferv1

import "strings"

// Protocol features, negotiated in gRPC metadata (see Batch in agent.proto):
// an agent lists those it understands in its Sync request metadata under
// FeaturesKey, the server answers with its own in the response header.
const (
	FeaturesKey  = "coffer-features"
	FeatureBatch = "batch"
)

// HasFeature reports whether feature is in the comma-separated lists vals
// (metadata values under FeaturesKey).
func HasFeature(vals []string, feature string) bool {
	for _, v := range vals {
		for f := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(f) == feature {
				return true
			}
		}
	}
	return false
}
