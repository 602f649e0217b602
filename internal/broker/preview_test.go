package broker

import (
	"fmt"
	"strings"
	"testing"

	"coffer/internal/policy"
)

func effects(es []Effect) string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%s/%s %s %s:%s(%s)", e.Agent, e.ContainerName, e.Change, e.File, e.Secret, e.Binding))
	}
	return strings.Join(out, "\n")
}

// Preview evaluates a proposed set of bindings against the containers the
// broker knows, with each agent's scope, and changes nothing.
func TestPreview(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("app/db", []byte("v1"))
	r.put("pay/key", []byte("k1"))
	r.bind(binding("db", "app/db", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", map[string]string{"app": "web"}))
	a.report(ctrInfo("c2", map[string]string{"app": "api"}))
	a.waitFiles("c1", "db=app/db@1")
	a.waitFiles("c2", "")
	s := r.dial(r.enroll("node-s", nil, "pay/")) // scoped: never gets app/
	s.report(ctrInfo("s1", map[string]string{"app": "web"}))
	s.waitFiles("s1", "")

	if got := r.b.Preview(r.cat.Bindings()); len(got) != 0 {
		t.Fatalf("the current set changes something:\n%s", effects(got))
	}
	// Widen db to app=api too, add a binding for pay/key; change the mode
	// of nothing else.
	set, err := r.cat.Bindings().With(binding("db", "app/db", "app in (api,web)"))
	if err != nil {
		t.Fatal(err)
	}
	set, _ = set.With(binding("key", "pay/key", "app=web"))
	got := effects(r.b.Preview(set))
	want := strings.Join([]string{
		"node-a/name-c1 gain key:pay/key(key)",
		"node-a/name-c2 gain db:app/db(db)",
		"node-s/name-s1 gain key:pay/key(key)",
	}, "\n")
	if got != want {
		t.Fatalf("preview:\n%s\nwant:\n%s", got, want)
	}
	// Another binding takes file "db" (a smaller name wins), and db's mode
	// changes: c1 loses app/db and gains pay/key under the same file name.
	mode := binding("db", "app/db", "app in (api,web)")
	mode.Mode = 0o440
	set2, _ := r.cat.Bindings().With(mode)
	set2, _ = set2.With(policy.Binding{Name: "a-takes-db", Secret: "pay/key", Selector: "app=web", File: "db"})
	got = effects(r.b.Preview(set2))
	want = strings.Join([]string{
		"node-a/name-c1 lose db:app/db(db)",
		"node-a/name-c1 gain db:pay/key(a-takes-db)",
		"node-a/name-c2 gain db:app/db(db)",
		"node-s/name-s1 gain db:pay/key(a-takes-db)",
	}, "\n")
	if got != want {
		t.Fatalf("preview:\n%s\nwant:\n%s", got, want)
	}
	sameSelector := binding("db", "app/db", "app=web")
	sameSelector.Mode = 0o440
	only, _ := r.cat.Bindings().With(sameSelector)
	if got := effects(r.b.Preview(only)); got != "node-a/name-c1 change db:app/db(db)" {
		t.Fatalf("mode change: %s", got)
	}
	empty, _ := policy.NewSet(nil)
	if got := effects(r.b.Preview(empty)); got != "node-a/name-c1 lose db:app/db(db)" {
		t.Fatalf("no bindings: %s", got)
	}
	if got := effects(r.b.Granted("app/db", EffectRotate)); got != "node-a/name-c1 rotate db:app/db(db)" {
		t.Fatalf("granted app/db: %s", got)
	}
	if got := r.b.Granted("pay/key", EffectGain); len(got) != 0 {
		t.Fatalf("granted pay/key: %s", effects(got))
	}
	// Nothing was sent: the containers hold what they held.
	a.waitFiles("c1", "db=app/db@1")
	a.waitFiles("c2", "")
	s.waitFiles("s1", "")
}
