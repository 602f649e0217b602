package scan

import (
	"encoding/json"
	"fmt"
	"io"
)

// The subset of SARIF 2.1.0 that code-scanning UIs read. SARIF is plain
// JSON; these few types are simpler than a dependency.
type (
	sarifLog struct {
		Schema  string     `json:"$schema"`
		Version string     `json:"version"`
		Runs    []sarifRun `json:"runs"`
	}
	sarifRun struct {
		Tool    sarifTool     `json:"tool"`
		Results []sarifResult `json:"results"`
	}
	sarifTool struct {
		Driver sarifDriver `json:"driver"`
	}
	sarifDriver struct {
		Name           string      `json:"name"`
		InformationURI string      `json:"informationUri,omitempty"`
		Rules          []sarifRule `json:"rules"`
	}
	sarifRule struct {
		ID                   string         `json:"id"`
		Name                 string         `json:"name"`
		ShortDescription     sarifText      `json:"shortDescription"`
		DefaultConfiguration sarifConfig    `json:"defaultConfiguration"`
		Properties           map[string]any `json:"properties,omitempty"`
	}
	sarifConfig struct {
		Level string `json:"level"`
	}
	sarifText struct {
		Text string `json:"text"`
	}
	sarifResult struct {
		RuleID              string            `json:"ruleId"`
		RuleIndex           int               `json:"ruleIndex"`
		Level               string            `json:"level"`
		Message             sarifText         `json:"message"`
		Locations           []sarifLocation   `json:"locations"`
		PartialFingerprints map[string]string `json:"partialFingerprints"`
		Properties          map[string]any    `json:"properties"`
	}
	sarifLocation struct {
		PhysicalLocation sarifPhysical `json:"physicalLocation"`
	}
	sarifPhysical struct {
		ArtifactLocation sarifArtifact `json:"artifactLocation"`
		Region           *sarifRegion  `json:"region,omitempty"`
	}
	sarifArtifact struct {
		URI string `json:"uri"`
	}
	sarifRegion struct {
		StartLine int `json:"startLine"`
	}
)

// WriteSARIF writes the report as SARIF 2.1.0. Each result carries the
// layer index and digest, the status and the redacted excerpt in its
// properties, and the finding's fingerprint as a partial fingerprint.
func WriteSARIF(w io.Writer, rep *Report, rules *Rules) error {
	run := sarifRun{
		Tool: sarifTool{Driver: sarifDriver{
			Name: "coffer-scan",
		}},
		Results: []sarifResult{},
	}
	index := map[string]int{}
	for _, r := range rules.rules {
		index[r.ID] = len(run.Tool.Driver.Rules)
		run.Tool.Driver.Rules = append(run.Tool.Driver.Rules, sarifRule{
			ID: r.ID, Name: r.ID,
			ShortDescription:     sarifText{r.Description},
			DefaultConfiguration: sarifConfig{sarifLevel(r.sev)},
			Properties: map[string]any{
				"security-severity": securitySeverity(r.sev),
				"tags":              []string{"security", "secret"},
			},
		})
	}
	for i := range rep.Findings {
		f := &rep.Findings[i]
		ri, ok := index[f.RuleID]
		if !ok {
			return fmt.Errorf("sarif: finding of unknown rule %q", f.RuleID)
		}
		loc := sarifLocation{PhysicalLocation: sarifPhysical{ArtifactLocation: sarifArtifact{URI: sarifURI(f.Path)}}}
		if f.Line > 0 {
			loc.PhysicalLocation.Region = &sarifRegion{StartLine: f.Line}
		}
		props := map[string]any{
			"severity": f.Severity.String(),
			"source":   f.Source,
			"excerpt":  f.Excerpt,
		}
		if f.Layer != nil {
			props["layerIndex"] = f.Layer.Index
			props["layerDigest"] = f.Layer.Digest
			props["status"] = f.Status()
			if f.DeletedIn >= 0 {
				props["deletedInLayer"] = f.DeletedIn
			}
			if f.OverwrittenIn >= 0 {
				props["overwrittenInLayer"] = f.OverwrittenIn
			}
		}
		if f.Binary {
			props["offset"] = f.Offset
		}
		msg := fmt.Sprintf("%s in %s", f.Description, location(f))
		if s := f.Status(); s != "" {
			msg += " (" + s + ")"
		}
		run.Results = append(run.Results, sarifResult{
			RuleID: f.RuleID, RuleIndex: ri, Level: sarifLevel(f.Severity),
			Message:             sarifText{msg},
			Locations:           []sarifLocation{loc},
			PartialFingerprints: map[string]string{"cofferFingerprint/v1": f.Fingerprint},
			Properties:          props,
		})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(sarifLog{
		Schema:  "https://json.schemastore.org/sarif-2.1.0.json",
		Version: "2.1.0",
		Runs:    []sarifRun{run},
	})
}
