package keystore

import (
	"errors"
	"strings"
	"testing"
)

func TestSetParseRef(t *testing.T) {
	if _, err := (Set{}).ParseRef("vault:x"); !errors.Is(err, ErrInvalidRef) || !strings.Contains(err.Error(), "has no keystores") {
		t.Errorf("empty set: %v", err)
	}
	s := Set{"up": &oneItem{}}
	if r, err := s.ParseRef("up:db#k"); err != nil || r != (Ref{"up", "db", "k"}) {
		t.Errorf("ParseRef = %+v, %v", r, err)
	}
	if _, err := s.ParseRef("up:"); !errors.Is(err, ErrInvalidRef) {
		t.Errorf("bad ref: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}
