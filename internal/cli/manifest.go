package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/validation"

	"coffer/internal/policy"
	"coffer/internal/secret"
)

// The files coffer apply reads and coffer export writes: YAML documents
// (separated by ---), each one of
//
//	kind: Binding          a binding: name, secret, selector (required);
//	                       image, hosts, file, mode, uid, gid, managed_by
//	kind: Secret           a secret the bindings need: name only (values
//	                       never appear in these files)
//	bindings: [...]        lists of the same, without kind
//	secrets: [...]
//
// Unknown fields, a field given twice, a wrong type, aliases and any
// invalid binding are errors naming the file and line. Strings that start
// with a YAML indicator ('!', '*', '&', '[', '{', ...) must be quoted, as in
// selector: '!debug'. mode is octal however it is written: 0440, "0440",
// 440 and 0o440 are the same mode (a plain 288 is not octal and is refused).

// maxManifest bounds one file.
const maxManifest = 4 << 20

// manifest is what a set of files declares.
type manifest struct {
	bindings []sourced[binding]
	secrets  []sourced[string]
}

// sourced is a value with where it was declared ("file:line").
type sourced[T any] struct {
	v   T
	pos string
}

var bindingFields = []string{"kind", "name", "secret", "selector", "image", "hosts", "file", "mode", "uid", "gid", "managed_by", "rotation"}

// parse reads the documents of one file into m. Errors name file
// and line.
func (m *manifest) parse(file string, data []byte) error {
	if len(data) > maxManifest {
		return fmt.Errorf("%s: larger than %d bytes", file, maxManifest)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %v", file, err)
		}
		if len(doc.Content) == 0 {
			continue // an empty document
		}
		if err := m.document(file, doc.Content[0]); err != nil {
			return err
		}
	}
}

func at(file string, n *yaml.Node) string { return fmt.Sprintf("%s:%d", file, n.Line) }

// fields checks that n is a mapping without aliases or repeated keys and
// returns its values by key, in order.
func fields(file string, n *yaml.Node, what string) ([]string, map[string]*yaml.Node, error) {
	if err := plain(file, n); err != nil {
		return nil, nil, err
	}
	if n.Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("%s: %s must be a mapping of fields", at(file, n), what)
	}
	var keys []string
	vals := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if err := plain(file, k); err != nil {
			return nil, nil, err
		}
		if err := plain(file, v); err != nil {
			return nil, nil, err
		}
		if k.Kind != yaml.ScalarNode || k.Tag != "!!str" {
			return nil, nil, fmt.Errorf("%s: field names must be plain strings", at(file, k))
		}
		if _, dup := vals[k.Value]; dup {
			return nil, nil, fmt.Errorf("%s: field %q given twice", at(file, k), k.Value)
		}
		keys = append(keys, k.Value)
		vals[k.Value] = v
	}
	return keys, vals, nil
}

// plain refuses aliases, anchors and merge keys: a declaration says what
// it says where it says it.
func plain(file string, n *yaml.Node) error {
	switch {
	case n.Kind == yaml.AliasNode:
		return fmt.Errorf("%s: aliases (*%s) are not allowed", at(file, n), n.Value)
	case n.Anchor != "":
		return fmt.Errorf("%s: anchors (&%s) are not allowed", at(file, n), n.Anchor)
	case n.Tag == "!!merge":
		return fmt.Errorf("%s: merge keys (<<) are not allowed", at(file, n))
	}
	return nil
}

func (m *manifest) document(file string, n *yaml.Node) error {
	keys, vals, err := fields(file, n, "a document")
	if err != nil {
		return err
	}
	if kind, ok := vals["kind"]; ok {
		k, err := str(file, "kind", kind)
		if err != nil {
			return err
		}
		switch k {
		case "Binding":
			return m.binding(file, n)
		case "Secret":
			return m.secret(file, n)
		}
		return fmt.Errorf("%s: unknown kind %q (Binding or Secret)", at(file, kind), k)
	}
	for _, k := range keys {
		v := vals[k]
		var add func(string, *yaml.Node) error
		switch k {
		case "bindings":
			add = m.binding
		case "secrets":
			add = m.secret
		default:
			return fmt.Errorf("%s: unknown field %q: a document has kind: Binding, kind: Secret, or bindings: and secrets: lists",
				at(file, n), k)
		}
		if v.Kind != yaml.SequenceNode {
			if v.Tag == "!!null" {
				continue
			}
			return fmt.Errorf("%s: %s must be a list", at(file, v), k)
		}
		for _, item := range v.Content {
			if err := add(file, item); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *manifest) binding(file string, n *yaml.Node) error {
	keys, vals, err := fields(file, n, "a binding")
	if err != nil {
		return err
	}
	var b binding
	for _, k := range keys {
		v := vals[k]
		var err error
		switch k {
		case "kind":
			var kind string
			if kind, err = str(file, k, v); err == nil && kind != "Binding" {
				err = fmt.Errorf("%s: kind %q in a list of bindings", at(file, v), kind)
			}
		case "name":
			b.Name, err = str(file, k, v)
		case "secret":
			b.Secret, err = str(file, k, v)
		case "selector":
			b.Selector, err = str(file, k, v)
		case "image":
			b.Image, err = str(file, k, v)
		case "hosts":
			b.Hosts, err = str(file, k, v)
		case "file":
			b.File, err = str(file, k, v)
		case "managed_by":
			b.ManagedBy, err = str(file, k, v)
		case "rotation":
			b.Rotation, err = str(file, k, v)
		case "mode":
			if err = scalar(file, k, v); err == nil && v.Tag != "!!null" {
				if b.Mode, err = policy.ParseMode(v.Value); err != nil {
					err = fmt.Errorf("%s: %w", at(file, v), err)
				}
			}
		case "uid":
			b.UID, err = integer(file, k, v)
		case "gid":
			b.GID, err = integer(file, k, v)
		default:
			err = fmt.Errorf("%s: unknown field %q in a Binding (fields: %s)", at(file, v), k, strings.Join(bindingFields, ", "))
		}
		if err != nil {
			return err
		}
	}
	pos := at(file, n)
	if b.Name == "" {
		return fmt.Errorf("%s: a Binding needs a name", pos)
	}
	if b.ManagedBy != "" {
		if errs := validation.IsValidLabelValue(b.ManagedBy); len(errs) > 0 {
			return fmt.Errorf("%s: binding %q: managed_by %q: %s", pos, b.Name, b.ManagedBy, errs[0])
		}
	}
	norm := b.Binding
	if err := norm.Normalize(); err != nil {
		return fmt.Errorf("%s: %w", pos, err)
	}
	b.Binding = norm
	for _, o := range m.bindings {
		if o.v.Name == b.Name {
			return fmt.Errorf("%s: binding %q is also declared at %s", pos, b.Name, o.pos)
		}
	}
	m.bindings = append(m.bindings, sourced[binding]{b, pos})
	return nil
}

func (m *manifest) secret(file string, n *yaml.Node) error {
	keys, vals, err := fields(file, n, "a secret")
	if err != nil {
		return err
	}
	name := ""
	for _, k := range keys {
		v := vals[k]
		switch k {
		case "kind":
			kind, err := str(file, k, v)
			if err != nil {
				return err
			}
			if kind != "Secret" {
				return fmt.Errorf("%s: kind %q in a list of secrets", at(file, v), kind)
			}
		case "name":
			if name, err = str(file, k, v); err != nil {
				return err
			}
		case "value", "data", "generate":
			return fmt.Errorf("%s: field %q: these files never hold values: store them with coffer secret put", at(file, v), k)
		default:
			return fmt.Errorf("%s: unknown field %q in a Secret (fields: kind, name)", at(file, v), k)
		}
	}
	pos := at(file, n)
	if err := secret.ValidateName(name); err != nil {
		return fmt.Errorf("%s: secret: %w", pos, err)
	}
	for _, o := range m.secrets {
		if o.v == name {
			return fmt.Errorf("%s: secret %q is also declared at %s", pos, name, o.pos)
		}
	}
	m.secrets = append(m.secrets, sourced[string]{name, pos})
	return nil
}

func scalar(file, field string, v *yaml.Node) error {
	if v.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s: field %q: want a single value, not a list or mapping", at(file, v), field)
	}
	return nil
}

// str reads a string field; null is "".
func str(file, field string, v *yaml.Node) (string, error) {
	if err := scalar(file, field, v); err != nil {
		return "", err
	}
	switch v.Tag {
	case "!!str":
		return v.Value, nil
	case "!!null":
		return "", nil
	case "!!int", "!!float", "!!bool":
		return "", fmt.Errorf("%s: field %q: want a string, got %s %q (quote it)", at(file, v), field, strings.TrimPrefix(v.Tag, "!!"), v.Value)
	}
	return "", fmt.Errorf("%s: field %q: want a string, got a value tagged %s (quote values that start with '!', '*', '&', '[' or '{')", at(file, v), field, v.Tag)
}

// integer reads a decimal integer field.
func integer(file, field string, v *yaml.Node) (int, error) {
	if err := scalar(file, field, v); err != nil {
		return 0, err
	}
	if v.Tag == "!!null" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v.Value, 10, 32)
	if v.Tag != "!!int" || err != nil {
		return 0, fmt.Errorf("%s: field %q: want a decimal integer, got %q", at(file, v), field, v.Value)
	}
	return int(n), nil
}

// exportDoc is one document of coffer export, in the order apply reads.
type exportDoc struct {
	Kind      string `yaml:"kind"`
	Name      string `yaml:"name"`
	Secret    string `yaml:"secret,omitempty"`
	Selector  string `yaml:"selector,omitempty"`
	Image     string `yaml:"image,omitempty"`
	Hosts     string `yaml:"hosts,omitempty"`
	File      string `yaml:"file,omitempty"`
	Mode      string `yaml:"mode,omitempty"`
	UID       *int   `yaml:"uid,omitempty"`
	GID       *int   `yaml:"gid,omitempty"`
	ManagedBy string `yaml:"managed_by,omitempty"`
	Rotation  string `yaml:"rotation,omitempty"`
}

// writeManifest writes secrets and bindings as documents apply reads back
// to the same bindings.
func writeManifest(w io.Writer, secrets []string, bs []binding) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	for _, s := range secrets {
		if err := enc.Encode(exportDoc{Kind: "Secret", Name: s}); err != nil {
			return err
		}
	}
	for _, b := range bs {
		uid, gid := b.UID, b.GID
		if err := enc.Encode(exportDoc{Kind: "Binding", Name: b.Name, Secret: b.Secret, Selector: b.Selector, Image: b.Image,
			Hosts: b.Hosts, File: b.File, Mode: policy.FormatMode(b.Mode), UID: &uid, GID: &gid, ManagedBy: b.ManagedBy,
			Rotation: b.Rotation}); err != nil {
			return err
		}
	}
	return enc.Close()
}
