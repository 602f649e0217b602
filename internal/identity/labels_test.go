package identity

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"maps"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestAgentLabelsOIDIsTheDocumentedUUID(t *testing.T) {
	const uuid = "70f70881-7dcb-45cb-95f2-ba222d79ce06"
	n, ok := new(big.Int).SetString(strings.ReplaceAll(uuid, "-", ""), 16)
	if !ok {
		t.Fatal("bad uuid")
	}
	if want := "2.25." + n.String() + ".1"; AgentLabelsOID != want {
		t.Fatalf("AgentLabelsOID = %s, want %s", AgentLabelsOID, want)
	}
	oid, err := x509.ParseOID(AgentLabelsOID)
	if err != nil || oid.String() != AgentLabelsOID {
		t.Fatalf("ParseOID = %v, %v", oid, err)
	}
}

// TestUUIDExtensionOIDIsUnparseable records why the labels are an attribute
// inside subjectDirectoryAttributes and not an extension of their own: Go
// refuses a certificate with such an extension OID. If this starts to pass,
// Go has changed, and the design could too.
func TestUUIDExtensionOIDIsUnparseable(t *testing.T) {
	ca := newTestCA(t)
	key, _ := NewAgentKey()
	tmpl, err := ca.leafTemplate(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The largest arc encoding/asn1 can hold still fails to parse.
	tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 25, 1 << 40}, Value: []byte{5, 0}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509.ParseCertificate(der); err == nil {
		t.Fatal("Go now parses extension OIDs with large arcs")
	}
}

func TestSignAgentBindsLabels(t *testing.T) {
	ca := newTestCA(t)
	key, _ := NewAgentKey()
	csr, _ := NewCSR(key, "node-1")
	labels := map[string]string{"env": "prod", "zone": "eu-1", "example.com/tier": ""}
	der, err := ca.SignAgent(csr, AgentCertOptions{Name: "node-1", Labels: labels, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	got, err := AgentLabels(c)
	if err != nil || !maps.Equal(got, labels) {
		t.Fatalf("AgentLabels = %v, %v; want %v", got, err, labels)
	}
	if name, err := AgentName(c); err != nil || name != "node-1" {
		t.Fatalf("AgentName = %q, %v", name, err)
	}
	found := 0
	for _, ext := range c.Extensions {
		if ext.Id.Equal(oidSubjectDirectoryAttributes) {
			found++
			if ext.Critical {
				t.Error("labels extension is critical")
			}
		}
	}
	if found != 1 {
		t.Fatalf("%d subjectDirectoryAttributes extensions", found)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("labelled certificate does not verify: %v", err)
	}

	// No labels: no extension.
	der, err = ca.SignAgent(csr, AgentCertOptions{Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	c, _ = x509.ParseCertificate(der)
	if got, err := AgentLabels(c); err != nil || got != nil {
		t.Fatalf("unlabelled: AgentLabels = %v, %v", got, err)
	}
	for _, ext := range c.Extensions {
		if ext.Id.Equal(oidSubjectDirectoryAttributes) {
			t.Fatal("unlabelled certificate has the labels extension")
		}
	}

	// Over the limits: refused, nothing signed.
	many := map[string]string{}
	for i := range 65 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	if _, err := ca.SignAgent(csr, AgentCertOptions{Name: "node-1", Labels: many}); err == nil {
		t.Fatal("65 labels signed")
	}
	if _, err := ca.SignAgent(csr, AgentCertOptions{Name: "node-1", Labels: map[string]string{"": "x"}}); err == nil {
		t.Fatal("empty label key signed")
	}
}

// labelsCSR asks for labels of its own, in the extension the CA uses.
func labelsCSR(t *testing.T, asked map[string]string) []byte {
	t.Helper()
	ext, _, err := labelsExtension(asked)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := NewAgentKey()
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: agentCNPrefix + "node-1"}, URIs: []*url.URL{agentURI("node-1")}, ExtraExtensions: []pkix.Extension{ext},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func TestSignAgentIgnoresRequestedLabels(t *testing.T) {
	ca := newTestCA(t)
	csr := labelsCSR(t, map[string]string{"env": "prod", "team": "payments"})
	for _, want := range []map[string]string{nil, {"env": "dev"}} {
		der, err := ca.SignAgent(csr, AgentCertOptions{Name: "node-1", Labels: want})
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		got, err := AgentLabels(c)
		if err != nil || !maps.Equal(got, want) {
			t.Fatalf("labels = %v, %v; want %v (never the request's)", got, err, want)
		}
	}
}

func TestAgentLabelsRefusesMalformed(t *testing.T) {
	ca := newTestCA(t)
	oid := asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagOID, Bytes: agentLabelsOIDDER}
	value := func(pairs ...labelPair) asn1.RawValue {
		return asn1.RawValue{FullBytes: mustASN1(t, pairs)}
	}
	good := value(labelPair{"a", "1"}, labelPair{"b", "2"})
	attrs := func(as ...attribute) []byte { return mustASN1(t, as) }
	other := asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagOID, Bytes: mustASN1(t, asn1.ObjectIdentifier{2, 5, 4, 3})[2:]}
	tests := []struct {
		desc     string
		value    []byte
		critical bool
		want     map[string]string // nil with ok: no labels
		ok       bool
	}{
		{"good", attrs(attribute{oid, []asn1.RawValue{good}}), false, map[string]string{"a": "1", "b": "2"}, true},
		{"another attribute only", attrs(attribute{other, []asn1.RawValue{good}}), false, nil, true},
		{"critical", attrs(attribute{oid, []asn1.RawValue{good}}), true, nil, false},
		{"unsorted", attrs(attribute{oid, []asn1.RawValue{value(labelPair{"b", "2"}, labelPair{"a", "1"})}}), false, nil, false},
		{"duplicate key", attrs(attribute{oid, []asn1.RawValue{value(labelPair{"a", "1"}, labelPair{"a", "2"})}}), false, nil, false},
		{"empty set", attrs(attribute{oid, []asn1.RawValue{value()}}), false, nil, false},
		{"two values", attrs(attribute{oid, []asn1.RawValue{good, good}}), false, nil, false},
		{"attribute twice", attrs(attribute{oid, []asn1.RawValue{good}}, attribute{oid, []asn1.RawValue{good}}), false, nil, false},
		{"garbage", []byte{0x30, 0x03, 0x01}, false, nil, false},
		{"trailing data", append(attrs(attribute{oid, []asn1.RawValue{good}}), 0), false, nil, false},
	}
	key, _ := NewAgentKey()
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			tmpl, err := ca.leafTemplate(time.Now(), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.ExtraExtensions = []pkix.Extension{{Id: oidSubjectDirectoryAttributes, Critical: tt.critical, Value: tt.value}}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
			if err != nil {
				t.Fatal(err)
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			got, err := AgentLabels(c)
			if tt.ok != (err == nil) || !maps.Equal(got, tt.want) || (tt.want == nil) != (got == nil) {
				t.Fatalf("AgentLabels = %v, %v; want %v ok=%v", got, err, tt.want, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrNotAgentCert) {
				t.Fatalf("err %v is not ErrNotAgentCert", err)
			}
		})
	}
}

// FuzzAgentLabels feeds arbitrary extension values to the parser: no
// panic, and what it accepts encodes back to the same bytes.
func FuzzAgentLabels(f *testing.F) {
	ext, _, err := labelsExtension(map[string]string{"env": "prod", "zone": "eu-1"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ext.Value)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, value []byte) {
		ls, err := labelsFromExtension(value)
		if err != nil {
			if !errors.Is(err, ErrNotAgentCert) {
				t.Fatalf("err = %v, want ErrNotAgentCert", err)
			}
			return
		}
		if ls == nil {
			return
		}
		again, ok, err := labelsExtension(ls)
		if err != nil || !ok {
			t.Fatalf("accepted labels %v do not encode: %v", ls, err)
		}
		back, err := labelsFromExtension(again.Value)
		if err != nil || !maps.Equal(back, ls) {
			t.Fatalf("round trip %v -> %v, %v", ls, back, err)
		}
	})
}
