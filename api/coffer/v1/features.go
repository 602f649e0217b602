package cofferv1

import (
	"fmt"
	"strconv"
	"strings"
)

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

// Message size negotiation. gRPC refuses a received message larger than
// the receiver's limit (4 MiB unless raised) and then ends the stream; the
// agent would reconnect, be sent the same message and fail again. So an
// agent announces, in its Sync request metadata under MaxRecvKey, the
// largest message it accepts (decimal bytes), and the server never sends it
// a larger one: a value that cannot fit is not sent (that file's delivery
// fails, and is audited) while the agent's other files still arrive.
const (
	MaxRecvKey = "coffer-max-recv"
	// DefaultMaxRecv is assumed of an agent that announces nothing: gRPC's
	// default receive limit, which agents built before the negotiation have.
	DefaultMaxRecv = 4 << 20
	// MaxValueSize is the largest secret value a server accepts (the upper
	// bound of its max_value_size setting).
	MaxValueSize = 64 << 20
	// AgentMaxRecv is coffer-agent's receive limit: the largest value and
	// room for the rest of its message (name, version, framing, the
	// Desired states that ride along in a Batch).
	AgentMaxRecv = MaxValueSize + 4<<20
	// MinMaxRecv is the smallest limit an agent may announce.
	MinMaxRecv = 64 << 10
)

// ParseMaxRecv returns the receive limit an agent announced (metadata
// values under MaxRecvKey): DefaultMaxRecv if none, at most AgentMaxRecv
// (the server never needs to send more). A value that is not one decimal
// number of at least MinMaxRecv bytes is an error naming the key.
func ParseMaxRecv(vals []string) (int, error) {
	switch len(vals) {
	case 0:
		return DefaultMaxRecv, nil
	case 1:
	default:
		return 0, fmt.Errorf("%s: %d values, want one", MaxRecvKey, len(vals))
	}
	s := vals[0]
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%s: %q is not a decimal number of bytes", MaxRecvKey, s)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > AgentMaxRecv {
		return AgentMaxRecv, nil // larger than anything a server sends (or than uint64)
	}
	if n < MinMaxRecv {
		return 0, fmt.Errorf("%s: %d bytes is below the minimum of %d", MaxRecvKey, n, MinMaxRecv)
	}
	return int(n), nil
}
