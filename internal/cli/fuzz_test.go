package cli

import (
	"encoding/json"
	"reflect"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzJSONToYAML: -o yaml says what -o json says. Whatever JSON a server
// sends, its YAML decodes to the same values (strings that look like
// numbers, booleans or null stay strings).
func FuzzJSONToYAML(f *testing.F) {
	for _, s := range []string{`{"a":"123","b":true,"c":"null","d":[1,"x"],"e":{}}`, `["~", "yes", "0x1F", "1e3", ""]`, `"a: b"`, `{"k":"line\nnext","x":"#c"}`, `null`, `[]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var want any
		if json.Unmarshal([]byte(s), &want) != nil {
			return
		}
		y, err := jsonToYAML([]byte(s))
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		var back any
		if err := yaml.Unmarshal(y, &back); err != nil {
			t.Fatalf("%q: the YAML does not parse: %v\n%s", s, err, y)
		}
		b, err := json.Marshal(back)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		var got any
		json.Unmarshal(b, &got)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: YAML\n%s\nmeans %#v, JSON means %#v", s, y, got, want)
		}
	})
}
