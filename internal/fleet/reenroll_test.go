package fleet

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"testing"
)

var errNo = errors.New("no")

func attested(uid string) *Attested {
	return &Attested{Node: "node-a", Pod: "coffer-system/agent-" + uid, PodUID: uid, ServiceAccount: "coffer-system/coffer-agent", CredentialID: "JTI=" + uid}
}

// TestEnrollReplacingRevokesThePreviousCertificates: a re-enrollment that
// mayReplace allows replaces the record; every certificate of the previous
// enrollment, renewed ones too, is refused from then on, here and after a
// restart; the new record keeps the new attestation.
func TestEnrollReplacingRevokesThePreviousCertificates(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	labels := map[string]string{"k8s.node": "node-a"}
	first := r.enroll("node-a", Admission{Labels: labels, Attested: attested("uid-1")})
	renewed, err := r.renew(r.f, "node-a", first)
	if err != nil {
		t.Fatal(err)
	}
	var saw *Agent
	der, old, err := r.f.EnrollReplacing(ctx, "node-a", r.csr("node-a"), "10.0.0.2",
		admitWith(Admission{Labels: labels, Attested: attested("uid-2")}),
		func(a Agent) error { saw = &a; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if saw == nil || saw.Attested.PodUID != "uid-1" || old == nil || old.Attested.PodUID != "uid-1" {
		t.Fatalf("mayReplace saw %+v, replaced %+v", saw, old)
	}
	second := parse(t, der)
	for i, f := range []*Fleet{r.f, r.reopen()} {
		for _, c := range []*x509.Certificate{first, renewed} {
			if _, err := f.Verify(c); !errors.Is(err, ErrUnknownAgent) {
				t.Fatalf("fleet %d: a certificate of the replaced enrollment: %v", i, err)
			}
		}
		if _, err := f.Verify(second); err != nil {
			t.Fatalf("fleet %d: new certificate: %v", i, err)
		}
		if a := f.List()[0]; a.Attested == nil || a.Attested.PodUID != "uid-2" || len(a.Serials) != 1 || !a.Enrolled.After(old.Enrolled) {
			t.Fatalf("fleet %d: record %+v", i, a)
		}
	}
	if _, err := r.renew(r.f, "node-a", renewed); !errors.Is(err, ErrUnknownAgent) {
		t.Fatalf("the replaced enrollment renewed: %v", err)
	}
}

// TestEnrollReplacingRefusals: without mayReplace an enrolled name is
// ErrExists (Enroll's contract); mayReplace's error is returned as it is and
// admit is not called; nothing changes.
func TestEnrollReplacingRefusals(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	first := r.enroll("node-a", Admission{Attested: attested("uid-1")})
	admitted := false
	admit := func(context.Context) (Admission, error) { admitted = true; return Admission{}, nil }
	if _, _, err := r.f.EnrollReplacing(ctx, "node-a", r.csr("node-a"), "", admit, nil); !errors.Is(err, ErrExists) {
		t.Fatalf("no mayReplace: %v", err)
	}
	if _, _, err := r.f.EnrollReplacing(ctx, "node-a", r.csr("node-a"), "", admit, func(Agent) error { return errNo }); !errors.Is(err, errNo) {
		t.Fatalf("mayReplace refused: %v", err)
	}
	if admitted {
		t.Fatal("admit called for a refused replacement")
	}
	if _, err := r.f.Verify(first); err != nil {
		t.Fatalf("the enrolled agent was touched: %v", err)
	}
}

// TestReplaceRefusesARecordChangedMeanwhile: on a shared store another
// server may have renewed or re-enrolled the agent after this one read it:
// the replacement is refused and the store keeps the other server's record.
func TestReplaceRefusesARecordChangedMeanwhile(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.enroll("node-a", Admission{Attested: attested("uid-1")})
	other := r.reopen() // another server on the same store
	stale, _ := r.f.get("node-a")
	if _, err := other.Renew(ctx, "node-a", stale.Serials[0], r.csr("node-a")); err != nil {
		t.Fatal(err)
	}
	a := stale
	a.Serials = []string{"ff"}
	if err := r.f.replace(ctx, stale, a); !errors.Is(err, ErrExists) {
		t.Fatalf("replace over a renewed record: %v", err)
	}
	if err := other.Remove(ctx, "node-a"); err != nil {
		t.Fatal(err)
	}
	if err := r.f.replace(ctx, stale, a); !errors.Is(err, ErrUnknownAgent) {
		t.Fatalf("replace over a removed record: %v", err)
	}
}

// TestApplyReportsAReenrollment: a re-enrollment committed by another
// server reports the agent as gone, so that its streams here are closed.
func TestApplyReportsAReenrollment(t *testing.T) {
	r := newRig(t)
	r.enroll("node-a", Admission{Attested: attested("uid-1")})
	a, _ := r.f.get("node-a")
	same, _ := json.Marshal(a)
	if gone, err := r.f.Apply(Prefix+"node-a", same, false); err != nil || gone {
		t.Fatalf("Apply of the same record: %v %v", gone, err)
	}
	a.Enrolled = a.Enrolled.Add(1)
	a.Serials = []string{"01"}
	again, _ := json.Marshal(a)
	if gone, err := r.f.Apply(Prefix+"node-a", again, false); err != nil || !gone {
		t.Fatalf("Apply of a re-enrollment: %v %v", gone, err)
	}
}

// TestReloadReportsAReenrollment: after missed changes, an agent enrolled
// again on another server is reported, as a removed one is.
func TestReloadReportsAReenrollment(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.enroll("node-a", Admission{Attested: attested("uid-1")})
	r.enroll("node-b", Admission{})
	other := r.reopen()
	if _, _, err := other.EnrollReplacing(ctx, "node-a", r.csr("node-a"), "", admitWith(Admission{Attested: attested("uid-2")}), func(Agent) error { return nil }); err != nil {
		t.Fatal(err)
	}
	gone, err := r.f.Reload(ctx)
	if err != nil || len(gone) != 1 || gone[0] != "node-a" {
		t.Fatalf("Reload = %v, %v", gone, err)
	}
	if a, _ := r.f.Get("node-a"); a.Attested.PodUID != "uid-2" {
		t.Fatalf("node-a after Reload: %+v", a)
	}
}
