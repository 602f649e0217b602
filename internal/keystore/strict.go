package keystore

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// DecodeStrict decodes a YAML mapping into v, a pointer to a struct, and
// refuses keys that no yaml tag of the struct (or of a nested struct)
// names, duplicate keys and merge keys, with errors that give the line and
// the known keys. yaml.v3's KnownFields applies to a Decoder only, not to
// Node.Decode, hence this.
func DecodeStrict(node *yaml.Node, v any) error { return decodeStrict(node, v) }

func decodeStrict(node *yaml.Node, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("decode: want a non-nil pointer, got %T", v)
	}
	return decodeValue(deref(node), rv.Elem(), "")
}

func decodeValue(n *yaml.Node, rv reflect.Value, path string) error {
	if n == nil || isNull(n) {
		return nil
	}
	t := rv.Type()
	if t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct {
		if rv.IsNil() {
			rv.Set(reflect.New(t.Elem()))
		}
		return decodeValue(n, rv.Elem(), path)
	}
	if t.Kind() != reflect.Struct || t.String() == "time.Time" {
		if err := n.Decode(rv.Addr().Interface()); err != nil {
			return fmt.Errorf("%s: %w", keyName(path), err)
		}
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: %s: want a mapping", n.Line, keyName(path))
	}
	fields := map[string]int{}
	var known []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		fields[name] = i
		known = append(known, name)
	}
	sort.Strings(known)
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], deref(n.Content[i+1])
		key := k.Value
		full := key
		if path != "" {
			full = path + "." + key
		}
		if key == "<<" {
			return fmt.Errorf("line %d: merge keys (<<) are not supported", k.Line)
		}
		idx, ok := fields[key]
		if !ok {
			return fmt.Errorf("line %d: unknown key %q (known keys: %s)", k.Line, full, strings.Join(known, ", "))
		}
		if seen[key] {
			return fmt.Errorf("line %d: key %q given twice", k.Line, full)
		}
		seen[key] = true
		if err := decodeValue(val, rv.Field(idx), full); err != nil {
			if val.Kind == yaml.ScalarNode && !strings.HasPrefix(err.Error(), "line ") {
				return fmt.Errorf("line %d: %w", val.Line, err)
			}
			return err
		}
	}
	return nil
}

func keyName(path string) string {
	if path == "" {
		return "value"
	}
	return "key " + path
}
