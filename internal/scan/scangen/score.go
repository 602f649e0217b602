package scangen

import "fmt"

// Score compares what a scanner found with the truth.
type Score struct {
	TruePositives  int
	FalseNegatives []Label // planted secrets not found
	FalsePositives []Label // findings that are no planted secret
	Duplicates     int     // further findings of an already found secret
	Decoys         []Label // decoys reported (also counted as false positives)
	WrongStatus    []Label // secrets found without the expected deleted/overwritten status
}

// Recall is the share of planted secrets found.
func (s Score) Recall() float64 {
	n := s.TruePositives + len(s.FalseNegatives)
	if n == 0 {
		return 1
	}
	return float64(s.TruePositives) / float64(n)
}

// Precision is the share of (non-duplicate) findings that are planted secrets.
func (s Score) Precision() float64 {
	n := s.TruePositives + len(s.FalsePositives)
	if n == 0 {
		return 1
	}
	return float64(s.TruePositives) / float64(n)
}

func (s Score) String() string {
	return fmt.Sprintf("recall %.1f%% (%d/%d), precision %.1f%% (%d false positives, %d duplicates)",
		100*s.Recall(), s.TruePositives, s.TruePositives+len(s.FalseNegatives),
		100*s.Precision(), len(s.FalsePositives), s.Duplicates)
}

// Evaluate scores found against the truth. A finding matches a secret at
// the same layer, path and line (any line in a binary, where secrets have
// line 0); if the finding names a rule (Rule != ""), the rule must match
// too. Status is compared only when the finding carries one.
func (t *Truth) Evaluate(found []Label) Score {
	var s Score
	hit := make([]bool, len(t.Secrets))
	for _, f := range found {
		best := -1
		for i, sec := range t.Secrets {
			if sec.Layer != f.Layer || sec.Path != f.Path {
				continue
			}
			if sec.Line != 0 && sec.Line != f.Line {
				continue
			}
			if f.Rule != "" && f.Rule != sec.Rule {
				continue
			}
			if best < 0 || (hit[best] && !hit[i]) {
				best = i
			}
		}
		switch {
		case best < 0:
			s.FalsePositives = append(s.FalsePositives, f)
			for _, d := range t.Decoys {
				if d.Layer == f.Layer && d.Path == f.Path {
					s.Decoys = append(s.Decoys, f)
					break
				}
			}
		case hit[best]:
			s.Duplicates++
		default:
			hit[best] = true
			s.TruePositives++
			if f.Status != "-" && f.Status != t.Secrets[best].Status {
				s.WrongStatus = append(s.WrongStatus, f)
			}
		}
	}
	for i, h := range hit {
		if !h {
			s.FalseNegatives = append(s.FalseNegatives, t.Secrets[i])
		}
	}
	return s
}

// KindScore is the score of one kind of secret (recall) or one rule
// (precision, over the findings that rule made).
type KindScore struct {
	Name                string
	Planted, Found      int // secrets of this kind, and how many were found
	Reported, FalsePos  int // findings of this rule, and how many were no planted secret
	DecoysOfThisKindHit int // decoys (by hiding place) that drew a finding
}

// ByKind breaks Evaluate down: recall per secret kind (Label.KindName) and
// precision per rule of the findings.
func (t *Truth) ByKind(found []Label) (kinds, rules []KindScore) {
	s := t.Evaluate(found)
	missed := map[int]bool{}
	for _, fn := range s.FalseNegatives {
		for i, sec := range t.Secrets {
			if sec == fn {
				missed[i] = true
			}
		}
	}
	km := map[string]*KindScore{}
	var korder []string
	for i, sec := range t.Secrets {
		k := sec.KindName()
		if km[k] == nil {
			km[k] = &KindScore{Name: k}
			korder = append(korder, k)
		}
		km[k].Planted++
		if !missed[i] {
			km[k].Found++
		}
	}
	rm := map[string]*KindScore{}
	var rorder []string
	fp := map[Label]int{}
	for _, l := range s.FalsePositives {
		fp[l]++
	}
	for _, f := range found {
		if rm[f.Rule] == nil {
			rm[f.Rule] = &KindScore{Name: f.Rule}
			rorder = append(rorder, f.Rule)
		}
		rm[f.Rule].Reported++
		if fp[f] > 0 {
			fp[f]--
			rm[f.Rule].FalsePos++
		}
	}
	for _, k := range korder {
		kinds = append(kinds, *km[k])
	}
	for _, r := range rorder {
		rules = append(rules, *rm[r])
	}
	return kinds, rules
}
