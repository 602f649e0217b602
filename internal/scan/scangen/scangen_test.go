package scangen

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

func TestDeterministicAndLabelled(t *testing.T) {
	o := Options{Seed: 3, Filler: 256 << 10}
	var a, b bytes.Buffer
	ta, err := WriteDockerArchive(&a, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteDockerArchive(&b, o); err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(a.Bytes()) != sha256.Sum256(b.Bytes()) {
		t.Error("same seed, different images")
	}
	var c bytes.Buffer
	if _, err := WriteDockerArchive(&c, Options{Seed: 4, Filler: 256 << 10}); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Error("different seeds, same image")
	}
	if len(ta.Secrets) < 40 || ta.Kinds() < 15 || len(ta.Decoys) < 30 {
		t.Errorf("%d secrets of %d kinds, %d decoys", len(ta.Secrets), ta.Kinds(), len(ta.Decoys))
	}
	if len(ta.LayerBytes) != 5 {
		t.Errorf("%d layers", len(ta.LayerBytes))
	}
}

func TestEvaluate(t *testing.T) {
	tr := &Truth{
		Secrets: []Label{{Rule: "a", Layer: 1, Path: "p", Line: 2}, {Rule: "b", Layer: 1, Path: "bin", Line: 0}},
		Decoys:  []Label{{Layer: 1, Path: "d", Line: 1}},
	}
	s := tr.Evaluate([]Label{
		{Rule: "a", Layer: 1, Path: "p", Line: 2},
		{Rule: "a", Layer: 1, Path: "p", Line: 2},  // duplicate
		{Rule: "", Layer: 1, Path: "bin", Line: 0}, // any rule, binary
		{Rule: "c", Layer: 1, Path: "d", Line: 1},  // decoy
	})
	if s.TruePositives != 2 || s.Duplicates != 1 || len(s.FalsePositives) != 1 || len(s.Decoys) != 1 || len(s.FalseNegatives) != 0 {
		t.Errorf("%+v", s)
	}
	if s.Recall() != 1 || s.Precision() != 2.0/3 {
		t.Errorf("recall %v precision %v", s.Recall(), s.Precision())
	}
}
