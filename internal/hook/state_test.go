package hook

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const testID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseState(t *testing.T) {
	good := `{"ociVersion":"1.0.2-dev","id":"` + testID + `","status":"creating","pid":4242,"bundle":"/run/containerd/x/` + testID + `","annotations":{"coffer/require-secrets":"true","io.kubernetes.cri.sandbox-id":"s"}}`
	st, err := ParseState(strings.NewReader(good))
	if err != nil || st.ID != testID || st.PID != 4242 || !st.Required() || st.Annotations[AnnotationSandboxID] != "s" {
		t.Fatalf("ParseState(good) = %+v, %v", st, err)
	}
	many := map[string]string{}
	for i := range MaxAnnotations + 1 {
		many[strings.Repeat("k", 1+i%7)+string(rune('a'+i%26))+strings.Repeat("x", i/182)] = "v"
	}
	for len(many) <= MaxAnnotations {
		many["extra"+strings.Repeat("y", len(many))] = "v"
	}
	manyJSON, _ := json.Marshal(State{ID: testID, PID: 5, Annotations: many})
	for _, c := range []struct {
		name, in, field string
	}{
		{"empty", "", "empty"},
		{"spaces", " \n\t", "empty"},
		{"garbage", "\x00\xff garbage", "not a JSON object"},
		{"array", "[1,2]", "not a JSON object"},
		{"trailing data", `{"id":"` + testID + `","pid":5} {}`, "data after"},
		{"huge", `{"id":"` + strings.Repeat("a", MaxStateBytes) + `"}`, "larger than"},
		{"no id", `{"pid":5}`, `field "id"`},
		{"short id", `{"id":"abc","pid":5}`, `field "id"`},
		{"id with a slash", `{"id":"../../etc/passwd0","pid":5}`, `field "id"`},
		{"no pid", `{"id":"` + testID + `"}`, `field "pid"`},
		{"pid 1", `{"id":"` + testID + `","pid":1}`, `field "pid"`},
		{"negative pid", `{"id":"` + testID + `","pid":-3}`, `field "pid"`},
		{"float pid", `{"id":"` + testID + `","pid":4.5}`, "not a JSON object"},
		{"huge pid", `{"id":"` + testID + `","pid":99999999999}`, `field "pid"`},
		{"string pid", `{"id":"` + testID + `","pid":"5"}`, "not a JSON object"},
		{"relative bundle", `{"id":"` + testID + `","pid":5,"bundle":"rel/x"}`, `field "bundle"`},
		{"annotations not a map", `{"id":"` + testID + `","pid":5,"annotations":[1]}`, "not a JSON object"},
		{"too many annotations", string(manyJSON), `field "annotations"`},
	} {
		_, err := ParseState(strings.NewReader(c.in))
		if !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: err = %v, want ErrBadState naming %q", c.name, err, c.field)
		}
		if err != nil && len(err.Error()) > 400 {
			t.Errorf("%s: error of %d bytes quotes too much of the input", c.name, len(err.Error()))
		}
	}
}

// FuzzParseState: any input is parsed or refused with ErrBadState, never a
// panic; what is accepted validates and survives a JSON round trip (the
// hook sends it on to the agent, which validates it again).
func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"ociVersion":"1.0.2-dev","id":"` + testID + `","status":"creating","pid":4242,"bundle":"/b","annotations":{"a":"b"}}`))
	f.Add([]byte(`{"id":"` + testID + `","pid":5}`))
	f.Add([]byte(`{"id":"x","pid":-1}`))
	f.Add([]byte(`garbage`))
	f.Add([]byte(`{"id":"` + testID + `","pid":5} {}`))
	f.Add([]byte("{\"id\":\"" + testID + "\",\"pid\":5,\"annotations\":{\"\xff\":\"\"}}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseState(strings.NewReader(string(b)))
		if err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("error without ErrBadState: %v", err)
			}
			if len(err.Error()) > 600 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if err := st.Validate(); err != nil {
			t.Fatalf("accepted state fails Validate: %v", err)
		}
		out, err := json.Marshal(request{V: wireVersion, State: st})
		if err != nil {
			t.Fatal(err)
		}
		var back request
		if err := json.Unmarshal(out, &back); err != nil || back.State.Validate() != nil || back.State.ID != st.ID || back.State.PID != st.PID {
			t.Fatalf("round trip: %+v, %v", back, err)
		}
	})
}
