package scan

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"coffer/internal/secret"
)

// Severity ranks findings; --fail-on compares against it.
type Severity int

// Severities, lowest first.
const (
	SeverityLow Severity = iota + 1
	SeverityMedium
	SeverityHigh
	SeverityCritical
)

var severityNames = map[Severity]string{
	SeverityLow: "low", SeverityMedium: "medium", SeverityHigh: "high", SeverityCritical: "critical",
}

// String returns the lower-case name, e.g. "high".
func (s Severity) String() string {
	if n, ok := severityNames[s]; ok {
		return n
	}
	return fmt.Sprintf("severity(%d)", int(s))
}

// MarshalText implements encoding.TextMarshaler.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Severity) UnmarshalText(b []byte) error {
	v, err := ParseSeverity(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseSeverity parses "low", "medium", "high" or "critical" (any case).
func ParseSeverity(s string) (Severity, error) {
	for k, v := range severityNames {
		if strings.EqualFold(s, v) {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown severity %q (want low, medium, high or critical)", s)
}

// LayerRef names the image layer a finding was read from.
type LayerRef struct {
	Index  int    `json:"index"`  // 0 is the base layer
	Digest string `json:"digest"` // the layer's diff ID (digest of its uncompressed tar)
}

// Finding is one secret found. It never holds the secret in anything that
// prints or marshals: Excerpt is redacted and Fingerprint is a one-way,
// truncated hash. With Config.KeepValues the scanner keeps the value
// aside (see Secret) for `coffer scan --import`.
type Finding struct {
	RuleID      string     `json:"rule"`
	Description string     `json:"description"`
	Severity    Severity   `json:"severity"`
	Confidence  Confidence `json:"confidence"`
	// Context lists what lowered the confidence: "test or fixture path",
	// "documentation", "loopback host", ...; empty for high confidence.
	Context []string  `json:"context,omitempty"`
	Layer   *LayerRef `json:"layer,omitempty"` // nil for the image config and for directory scans
	Source  string    `json:"source"`          // "layer", "config" or "file"
	Path    string    `json:"path"`            // archive members as "outer.jar!/inner/file"
	// File and Member split Path at the first "!/": the file in the layer
	// (or directory) and the member inside it, for tools that map
	// findings to files.
	File   string     `json:"file"`
	Member string     `json:"member,omitempty"`
	Config *ConfigRef `json:"config,omitempty"` // image config findings: which field and entry
	Line   int        `json:"line"`             // 1-based; 0 inside a binary file
	Offset int64      `json:"offset,omitempty"` // byte offset in a binary file
	Binary bool       `json:"binary,omitempty"` // found among the printable strings of a binary
	// Excerpt and Fingerprint identify the finding without revealing it.
	Excerpt     string `json:"excerpt"`
	Fingerprint string `json:"fingerprint"`
	// DeletedIn and OverwrittenIn are the index of the later layer that
	// deleted (whiteout) or replaced the file, or -1.
	DeletedIn     int `json:"deleted_in"`
	OverwrittenIn int `json:"overwritten_in"`

	value      secret.Value // with Config.KeepValues only
	importMode string       // the rule's import: "secret", "match" or "file"
	highSignal bool
	reasons    []reason
	pkg        string
	vhash      uint64
}

// ConfigRef locates a finding in the image config: Field is "Env",
// "Labels", "Entrypoint" (entrypoint then cmd) or "History"; Index is the
// 0-based entry in that list (for History, in the config's history array);
// Key is the variable or label name.
type ConfigRef struct {
	Field string `json:"field"`
	Index int    `json:"index"`
	Key   string `json:"key,omitempty"`
}

// Secret returns the value found, when the scanner was configured with
// KeepValues (nil otherwise). It never prints (secret.Value redacts);
// Report.Zero wipes it.
func (f *Finding) Secret() secret.Value { return f.value }

// ImportMode says what Secret holds: "secret" (the secret alone), "match"
// (a whole block, such as a PEM key) or "file" (the whole file: a keystore,
// a service account key file).
func (f *Finding) ImportMode() string {
	if f.importMode == "" {
		return "secret"
	}
	return f.importMode
}

// Status says where the secret can be found, e.g.
// "added in layer 2, deleted in layer 4".
func (f *Finding) Status() string {
	if f.Layer == nil {
		if f.Source == "config" {
			return "in image config"
		}
		return ""
	}
	s := fmt.Sprintf("added in layer %d", f.Layer.Index)
	switch {
	case f.DeletedIn >= 0:
		s += fmt.Sprintf(", deleted in layer %d", f.DeletedIn)
	case f.OverwrittenIn >= 0:
		s += fmt.Sprintf(", overwritten in layer %d", f.OverwrittenIn)
	}
	return s
}

// Fingerprint is the stable identity of a finding, independent of layers:
// the first 16 hex digits of SHA-256 over rule ID, path and secret. Put it in
// a .cofferignore file to suppress the finding.
func Fingerprint(ruleID, path string, secretValue []byte) string {
	h := sha256.New()
	h.Write([]byte("coffer-scan/v1\x00"))
	h.Write([]byte(ruleID))
	h.Write([]byte{0})
	h.Write([]byte(path))
	h.Write([]byte{0})
	h.Write(secretValue)
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:8])
}

// redact shows at most the first quarter (and at most 4 bytes) of a secret,
// then a fixed mask that does not reveal its length.
func redact(secretValue []byte) string {
	show := min(4, len(secretValue)/4)
	if len(secretValue) < 8 {
		show = 0
	}
	return printable(secretValue[:show]) + "****"
}

// printable replaces control and non-ASCII bytes with '.' and collapses
// whitespace runs to one space.
func printable(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b))
	space := false
	for _, c := range b {
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if !space {
				sb.WriteByte(' ')
			}
			space = true
			continue
		case c < 0x20 || c > 0x7e:
			sb.WriteByte('.')
		default:
			sb.WriteByte(c)
		}
		space = false
	}
	return sb.String()
}
