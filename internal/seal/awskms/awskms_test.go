package awskms

import (
	"context"
	"errors"
	"testing"

	"coffer/internal/seal"
)

// The wrapper against KMS itself is tested with local-kms in test/localkms
// (its own module); these need no KMS.

func TestMalformedIsDecryptErrorWithoutACall(t *testing.T) {
	// An endpoint nothing listens on: any request would fail otherwise.
	w, err := New(Config{Region: "eu-west-1", Endpoint: "http://127.0.0.1:1", KeyID: "alias/coffer", Installation: "prod", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if w.KeyID() != "aws-kms:alias/coffer@prod" {
		t.Errorf("KeyID = %q", w.KeyID())
	}
	for _, b := range [][]byte{nil, {}, {1}, {2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, make([]byte, 17)} {
		if _, err := w.Unwrap(context.Background(), b); !errors.Is(err, seal.ErrDecrypt) {
			t.Errorf("Unwrap(%x) = %v, want ErrDecrypt", b, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Region: "eu-west-1", Installation: "prod"},
		{Region: "eu-west-1", KeyID: "k"},
		{Region: "eu-west-1", KeyID: "k", Installation: "a b"},
		{Region: "eu-west-1", KeyID: "k", Installation: "p", Endpoint: "http://kms.example"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted", c)
		}
	}
}
