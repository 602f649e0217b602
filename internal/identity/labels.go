package identity

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"maps"
	"slices"
)

// AgentLabelsOID names the certificate attribute that carries an agent's
// labels: Coffer's arc under 2.25 (the UUID 70f70881-7dcb-45cb-95f2-ba222d79ce06
// as an integer, ITU-T X.667, which needs no registration), element 1.
const AgentLabelsOID = "2.25.150156205370609841510767535883487399430.1"

// Limits on the labels in a certificate; the server's own rules
// (policy.ValidateLabels) are the same or stricter.
const (
	maxCertLabels     = 64
	maxCertLabelsSize = 4096
)

// oidSubjectDirectoryAttributes is the standard extension (RFC 5280,
// 4.2.1.8) that holds the labels attribute.
var oidSubjectDirectoryAttributes = asn1.ObjectIdentifier{2, 5, 29, 9}

// agentLabelsOIDDER is AgentLabelsOID's DER content octets.
var agentLabelsOIDDER = func() []byte {
	oid, err := x509.ParseOID(AgentLabelsOID)
	if err != nil {
		panic(err)
	}
	b, err := oid.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return b
}()

// labelPair is one label in the certificate.
type labelPair struct {
	Key   string `asn1:"utf8"`
	Value string `asn1:"utf8"`
}

// attribute is X.501's Attribute; Type is raw because encoding/asn1 cannot
// hold an OID arc as large as a UUID.
type attribute struct {
	Type   asn1.RawValue
	Values []asn1.RawValue `asn1:"set"`
}

// labelsExtension encodes labels as the extension described in the package
// documentation; ok is false for an empty set (no extension at all).
func labelsExtension(labels map[string]string) (ext pkix.Extension, ok bool, err error) {
	if len(labels) == 0 {
		return pkix.Extension{}, false, nil
	}
	if err := checkCertLabels(labels); err != nil {
		return pkix.Extension{}, false, err
	}
	pairs := make([]labelPair, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		pairs = append(pairs, labelPair{Key: k, Value: labels[k]})
	}
	value, err := asn1.Marshal(pairs)
	if err != nil {
		return pkix.Extension{}, false, fmt.Errorf("agent labels: %w", err)
	}
	attr := attribute{
		Type:   asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagOID, Bytes: agentLabelsOIDDER},
		Values: []asn1.RawValue{{FullBytes: value}},
	}
	der, err := asn1.Marshal([]attribute{attr})
	if err != nil {
		return pkix.Extension{}, false, fmt.Errorf("agent labels: %w", err)
	}
	return pkix.Extension{Id: oidSubjectDirectoryAttributes, Critical: false, Value: der}, true, nil
}

func checkCertLabels(labels map[string]string) error {
	if len(labels) > maxCertLabels {
		return fmt.Errorf("agent labels: %d labels, at most %d", len(labels), maxCertLabels)
	}
	size := 0
	for k, v := range labels {
		if k == "" {
			return fmt.Errorf("agent labels: empty key")
		}
		size += len(k) + len(v)
	}
	if size > maxCertLabelsSize {
		return fmt.Errorf("agent labels: %d bytes, at most %d", size, maxCertLabelsSize)
	}
	return nil
}

// AgentLabels returns the labels the CA bound into an agent certificate
// (nil when it carries none). A certificate whose labels attribute is
// malformed, repeated, unsorted or over the limits fails with
// ErrNotAgentCert. Like AgentName it does not verify the certificate: use it
// on one the TLS stack has verified.
func AgentLabels(cert *x509.Certificate) (map[string]string, error) {
	if cert == nil {
		return nil, fmt.Errorf("%w: no certificate", ErrNotAgentCert)
	}
	var out map[string]string
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectDirectoryAttributes) {
			continue
		}
		if ext.Critical {
			return nil, fmt.Errorf("%w: subject directory attributes marked critical", ErrNotAgentCert)
		}
		ls, err := labelsFromExtension(ext.Value)
		if err != nil {
			return nil, err
		}
		if ls != nil {
			if out != nil {
				return nil, fmt.Errorf("%w: agent labels given twice", ErrNotAgentCert)
			}
			out = ls
		}
	}
	return out, nil
}

// labelsFromExtension reads the labels attribute from the value of a
// subjectDirectoryAttributes extension (nil if it has none).
func labelsFromExtension(value []byte) (map[string]string, error) {
	var attrs []attribute
	rest, err := asn1.Unmarshal(value, &attrs)
	if err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("%w: malformed subject directory attributes", ErrNotAgentCert)
	}
	var out map[string]string
	for _, a := range attrs {
		if a.Type.Class != asn1.ClassUniversal || a.Type.Tag != asn1.TagOID || a.Type.IsCompound ||
			!bytes.Equal(a.Type.Bytes, agentLabelsOIDDER) {
			continue // someone else's attribute
		}
		if out != nil {
			return nil, fmt.Errorf("%w: agent labels given twice", ErrNotAgentCert)
		}
		if out, err = parseLabelsValue(a.Values); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func parseLabelsValue(values []asn1.RawValue) (map[string]string, error) {
	if len(values) != 1 {
		return nil, fmt.Errorf("%w: agent labels attribute has %d values, want 1", ErrNotAgentCert, len(values))
	}
	var pairs []labelPair
	rest, err := asn1.Unmarshal(values[0].FullBytes, &pairs)
	if err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("%w: malformed agent labels", ErrNotAgentCert)
	}
	if len(pairs) == 0 {
		return nil, fmt.Errorf("%w: empty agent labels attribute", ErrNotAgentCert)
	}
	out := make(map[string]string, len(pairs))
	for i, p := range pairs {
		if i > 0 && p.Key <= pairs[i-1].Key {
			return nil, fmt.Errorf("%w: agent labels not in strict key order", ErrNotAgentCert)
		}
		out[p.Key] = p.Value
	}
	if err := checkCertLabels(out); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotAgentCert, err)
	}
	return out, nil
}
