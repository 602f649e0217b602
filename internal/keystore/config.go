package keystore

import (
	"fmt"
	"log/slog"

	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"gopkg.in/yaml.v3"
)

// Builtin is one upstream implementation that coffer-server links. The list
// of them is explicit (package keystore/builtin); nothing registers itself.
type Builtin struct {
	// Type is the value of `type:` that selects it, e.g. "vault".
	Type string
	// DefaultPollInterval is how often Check runs when poll_interval is not
	// set: the cheapest rate that still notices changes quickly.
	DefaultPollInterval time.Duration
	// NewConfig returns a new configuration holding the type's defaults,
	// into which its own keys are decoded (strictly: unknown keys are
	// errors).
	NewConfig func() UpstreamConfig
}

// UpstreamConfig is the type-specific part of one upstream's configuration:
// a pointer to a struct with yaml tags.
type UpstreamConfig interface {
	// Validate checks the decoded configuration; errors name the key.
	Validate() error
	// Open builds the client. It reads credential files but does no
	// network I/O, so a server starts while an upstream is down.
	Open(opts Options) (Keystore, error)
}

// Upstream is one decoded entry of the keystores section.
type Upstream struct {
	Name         string
	Type         string
	PollInterval time.Duration // how often linked items are checked
	Timeout      time.Duration // per request
	MaxValueSize int           // bytes
	// RequestsPerSecond paces every request to the upstream (reads and
	// checks alike), with a burst of a quarter second's worth.
	RequestsPerSecond float64
	Allow             []string // items that may be linked (see Restrict); empty: all
	Config            UpstreamConfig
}

// Limits on the common keys.
const (
	MinPollInterval = time.Second
	MaxPollInterval = 24 * time.Hour
	MaxMaxValueSize = 64 << 20
)

// Open builds the upstream's Keystore with its common settings, restricted
// to its allow list.
func (u Upstream) Open(logger *slog.Logger, hashKey []byte) (Keystore, error) {
	if logger == nil {
		logger = slog.Default()
	}
	var lim *rate.Limiter
	if u.RequestsPerSecond > 0 {
		lim = rate.NewLimiter(rate.Limit(u.RequestsPerSecond), max(1, int(u.RequestsPerSecond/4)))
	}
	ks, err := u.Config.Open(Options{
		Name:         u.Name,
		MaxValueSize: u.MaxValueSize,
		Timeout:      u.Timeout,
		Logger:       logger.With("upstream", u.Name, "type", u.Type),
		HashKey:      hashKey,
		Limiter:      lim,
	})
	if err != nil {
		return nil, err
	}
	return Restrict(ks, u.Name, u.Allow), nil
}

// commonKeys are the keys every upstream has besides its type's own.
var commonKeys = []string{"type", "poll_interval", "timeout", "max_value_size", "max_requests_per_second", "allow"}

// DefaultRequestsPerSecond paces each upstream when
// max_requests_per_second is not set: room for 1,000 linked Vault items
// checked every 10 s, never a storm.
const DefaultRequestsPerSecond = 200

// DecodeConfig decodes the keystores section of the server's YAML
// configuration, a mapping from upstream name to its settings:
//
//	keystores:
//	  vault:                      # the UPSTREAM name used in references
//	    type: vault               # picks the implementation among builtins
//	    poll_interval: 30s        # common keys: poll_interval, timeout, max_value_size, allow
//	    address: https://127.0.0.1:8200   # the type's own keys
//
// Unknown keys, unknown types, duplicate names and bad values are errors
// wrapping ErrConfig that name the upstream, the key and the line. A null or
// empty section yields no upstreams. The result is sorted by name.
func DecodeConfig(node *yaml.Node, builtins []Builtin) ([]Upstream, error) {
	node = deref(node)
	if node != nil && node.Kind == yaml.DocumentNode && len(node.Content) == 1 {
		node = deref(node.Content[0])
	}
	if node == nil || node.Kind == 0 || isNull(node) {
		return nil, nil
	}
	if node.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%w: keystores: line %d: want a mapping from upstream name to settings", ErrConfig, node.Line)
	}
	types := make([]string, 0, len(builtins))
	for _, b := range builtins {
		types = append(types, b.Type)
	}
	sort.Strings(types)
	var out []Upstream
	seen := map[string]bool{}
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, v := node.Content[i], deref(node.Content[i+1])
		name := k.Value
		where := "keystores." + name
		if err := ValidateUpstreamName(name); err != nil {
			return nil, fmt.Errorf("%w: keystores: line %d: %w", ErrConfig, k.Line, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: %s: line %d: upstream defined twice", ErrConfig, where, k.Line)
		}
		seen[name] = true
		u, err := decodeUpstream(name, v, builtins, types)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrConfig, where, err)
		}
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func decodeUpstream(name string, v *yaml.Node, builtins []Builtin, types []string) (Upstream, error) {
	if v.Kind != yaml.MappingNode {
		return Upstream{}, fmt.Errorf("line %d: want a mapping with at least `type:` (one of %s)", v.Line, strings.Join(types, ", "))
	}
	var common struct {
		Type         string        `yaml:"type"`
		PollInterval time.Duration `yaml:"poll_interval"`
		Timeout      time.Duration `yaml:"timeout"`
		MaxValueSize int           `yaml:"max_value_size"`
		RPS          float64       `yaml:"max_requests_per_second"`
		Allow        []string      `yaml:"allow"`
	}
	own := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: v.Line, Column: v.Column}
	com := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: v.Line, Column: v.Column}
	for i := 0; i+1 < len(v.Content); i += 2 {
		if v.Content[i].Value == "<<" {
			return Upstream{}, fmt.Errorf("line %d: merge keys (<<) are not supported", v.Content[i].Line)
		}
		if slices.Contains(commonKeys, v.Content[i].Value) {
			com.Content = append(com.Content, v.Content[i], v.Content[i+1])
		} else {
			own.Content = append(own.Content, v.Content[i], v.Content[i+1])
		}
	}
	if err := decodeStrict(com, &common); err != nil {
		return Upstream{}, err
	}
	if common.Type == "" {
		return Upstream{}, fmt.Errorf("line %d: type is missing (one of %s)", v.Line, strings.Join(types, ", "))
	}
	i := slices.IndexFunc(builtins, func(b Builtin) bool { return b.Type == common.Type })
	if i < 0 {
		return Upstream{}, fmt.Errorf("line %d: type %q is unknown (one of %s)", typeLine(v), common.Type, strings.Join(types, ", "))
	}
	b := builtins[i]
	u := Upstream{
		Name: name, Type: b.Type,
		PollInterval: common.PollInterval, Timeout: common.Timeout, MaxValueSize: common.MaxValueSize,
		RequestsPerSecond: common.RPS, Allow: common.Allow, Config: b.NewConfig(),
	}
	if u.RequestsPerSecond == 0 {
		u.RequestsPerSecond = DefaultRequestsPerSecond
	}
	if u.PollInterval == 0 {
		u.PollInterval = b.DefaultPollInterval
	}
	if u.Timeout == 0 {
		u.Timeout = DefaultTimeout
	}
	if u.MaxValueSize == 0 {
		u.MaxValueSize = DefaultMaxValueSize
	}
	switch {
	case u.PollInterval < MinPollInterval || u.PollInterval > MaxPollInterval:
		return Upstream{}, fmt.Errorf("poll_interval %s: must be %s to %s", u.PollInterval, MinPollInterval, MaxPollInterval)
	case u.Timeout < 100*time.Millisecond || u.Timeout > 5*time.Minute:
		return Upstream{}, fmt.Errorf("timeout %s: must be 100ms to 5m", u.Timeout)
	case u.MaxValueSize < 1 || u.MaxValueSize > MaxMaxValueSize:
		return Upstream{}, fmt.Errorf("max_value_size %d: must be 1 byte to 64 MiB", u.MaxValueSize)
	case u.RequestsPerSecond < 1 || u.RequestsPerSecond > 100000:
		return Upstream{}, fmt.Errorf("max_requests_per_second %g: must be 1 to 100000", u.RequestsPerSecond)
	}
	if err := ValidatePatterns(u.Allow); err != nil {
		return Upstream{}, err
	}
	if err := decodeStrict(own, u.Config); err != nil {
		return Upstream{}, fmt.Errorf("type %s: %w", b.Type, err)
	}
	if err := u.Config.Validate(); err != nil {
		return Upstream{}, fmt.Errorf("type %s: %w", b.Type, err)
	}
	return u, nil
}

func typeLine(v *yaml.Node) int {
	for i := 0; i+1 < len(v.Content); i += 2 {
		if v.Content[i].Value == "type" {
			return v.Content[i+1].Line
		}
	}
	return v.Line
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}
