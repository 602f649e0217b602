package execstate

import (
	"errors"
	"strings"
	"testing"
)

var d1 = Digest([]byte("v1"))

func TestParse(t *testing.T) {
	good := `{"v":1,"pid":12,"restarts":true,"files":[{"file":"db","sha256":"` + d1 + `"}]}`
	st, err := Parse([]byte(good))
	if err != nil || st.PID != 12 || !st.Restarts || len(st.Files) != 1 || st.Files[0].SHA256 != d1 {
		t.Fatalf("Parse = %+v, %v", st, err)
	}
	if b, err := Marshal(st); err != nil || string(b) != good {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	many := `{"v":1,"pid":1,"files":[` + strings.Repeat(`{"file":"a","sha256":"`+d1+`"},`, MaxFiles) + `{"file":"b","sha256":"` + d1 + `"}]}`
	for name, bad := range map[string]string{
		"garbage":       "\x00\xff not json hunter2",
		"empty":         "",
		"version":       `{"v":2,"pid":1,"files":[]}`,
		"no pid":        `{"v":1,"files":[]}`,
		"unknown field": `{"v":1,"pid":1,"files":[],"value":"hunter2"}`,
		"path":          `{"v":1,"pid":1,"files":[{"file":"../etc/passwd","sha256":"` + d1 + `"}]}`,
		"dot file":      `{"v":1,"pid":1,"files":[{"file":".coffer","sha256":"` + d1 + `"}]}`,
		"twice":         `{"v":1,"pid":1,"files":[{"file":"a","sha256":"` + d1 + `"},{"file":"a","sha256":"` + d1 + `"}]}`,
		"short digest":  `{"v":1,"pid":1,"files":[{"file":"a","sha256":"abcd"}]}`,
		"not hex":       `{"v":1,"pid":1,"files":[{"file":"a","sha256":"` + strings.Repeat("z", 64) + `"}]}`,
		"trailing":      `{"v":1,"pid":1,"files":[]} {}`,
		"too many":      many,
		"too large":     strings.Repeat(" ", MaxSize+1),
		"wrong type":    `{"v":1,"pid":"1","files":[]}`,
	} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: Parse = %v", name, err)
		}
	}
}

// FuzzParse: never a panic, errors never quote the input, and what parses
// encodes back to a record that parses the same.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"v":1,"pid":12,"restarts":true,"files":[{"file":"db","sha256":"` + d1 + `"}]}`))
	f.Add([]byte(`{"v":1,"pid":1,"files":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), ErrInvalid.Error()+": ") {
				t.Fatalf("error %q", err)
			}
			return
		}
		b, err := Marshal(st)
		if err != nil {
			t.Fatalf("a parsed record does not encode: %v", err)
		}
		if again, err := Parse(b); err != nil || len(again.Files) != len(st.Files) || again.PID != st.PID {
			t.Fatalf("round trip: %+v, %v", again, err)
		}
	})
}
