package scan

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
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
		Tool       sarifTool      `json:"tool"`
		Results    []sarifResult  `json:"results"`
		Properties map[string]any `json:"properties,omitempty"`
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
		LogicalLocations    []sarifLogical    `json:"logicalLocations,omitempty"`
		PartialFingerprints map[string]string `json:"partialFingerprints"`
		Properties          map[string]any    `json:"properties"`
	}
	sarifLocation struct {
		PhysicalLocation sarifPhysical `json:"physicalLocation"`
	}
	sarifLogical struct {
		FullyQualifiedName string `json:"fullyQualifiedName"`
		Kind               string `json:"kind,omitempty"`
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

// SARIFOptions tune WriteSARIF.
type SARIFOptions struct {
	IncludeLow bool // also write the low-confidence findings (level "note")
}

// sarifConventions documents, in the SARIF run itself, how coffer names
// what is not a plain file, so that code-scanning UIs and scorers can map
// results (docs/scan.md says the same).
var sarifConventions = map[string]any{
	"archiveMembers": "artifactLocation.uri is the archive file in the layer (or directory); " +
		"properties.member is the path inside it, nested archives joined with '!/' " +
		"(WEB-INF/lib/pay.jar!/pay.properties), properties.memberLine the line in that member, " +
		"and properties.path the whole coffer path (app.war!/WEB-INF/lib/pay.jar!/pay.properties). " +
		"No region is given for members: a line of a member is not a line of the archive.",
	"imageConfig": "results in the image config have artifactLocation.uri config:env, config:labels, " +
		"config:entrypoint or config:history (one entry per line, so region.startLine is the entry's " +
		"1-based position); properties.configField (Env, Labels, Entrypoint, History), " +
		"properties.configIndex (0-based index into that list of the image config JSON) and " +
		"properties.configKey (variable or label name) locate it.",
	"layers": "properties.layerIndex (0 = base) and properties.layerDigest (diff ID) name the layer; " +
		"properties.status says whether a later layer deleted or overwrote the file.",
	"confidence": "properties.confidence is high, medium or low; properties.context lists what lowered it. " +
		"Low-confidence results are left out unless coffer scan --include-low.",
}

// WriteSARIF writes the report as SARIF 2.1.0. Each result carries the
// layer index and digest, the status, confidence and redacted excerpt in
// its properties, and the finding's fingerprint as a partial fingerprint.
// Archive members and image-config entries follow sarifConventions.
func WriteSARIF(w io.Writer, rep *Report, rules *Rules, o SARIFOptions) error {
	run := sarifRun{
		Tool: sarifTool{Driver: sarifDriver{
			Name: "coffer-scan",
		}},
		Results:    []sarifResult{},
		Properties: map[string]any{"coffer": sarifConventions},
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
	fs := rep.Findings
	if o.IncludeLow {
		fs = append(slices.Clone(fs), rep.Low...)
	}
	for i := range fs {
		f := &fs[i]
		ri, ok := index[f.RuleID]
		if !ok {
			return fmt.Errorf("sarif: finding of unknown rule %q", f.RuleID)
		}
		loc := sarifLocation{PhysicalLocation: sarifPhysical{ArtifactLocation: sarifArtifact{URI: sarifURI(f.File)}}}
		if f.Line > 0 && f.Member == "" {
			loc.PhysicalLocation.Region = &sarifRegion{StartLine: f.Line}
		}
		props := map[string]any{
			"severity":   f.Severity.String(),
			"confidence": f.Confidence.String(),
			"source":     f.Source,
			"excerpt":    f.Excerpt,
			"path":       f.Path,
		}
		if len(f.Context) > 0 {
			props["context"] = f.Context
		}
		if f.Member != "" {
			props["member"] = f.Member
			if f.Line > 0 {
				props["memberLine"] = f.Line
			}
		}
		if f.Config != nil {
			props["configField"] = f.Config.Field
			props["configIndex"] = f.Config.Index
			if f.Config.Key != "" {
				props["configKey"] = f.Config.Key
			}
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
		level := sarifLevel(f.Severity)
		if f.Confidence == ConfidenceLow {
			level = "note"
		}
		res := sarifResult{
			RuleID: f.RuleID, RuleIndex: ri, Level: level,
			Message:             sarifText{msg},
			Locations:           []sarifLocation{loc},
			PartialFingerprints: map[string]string{"cofferFingerprint/v1": f.Fingerprint},
			Properties:          props,
		}
		if f.Member != "" || f.Config != nil {
			kind := "member"
			if f.Config != nil {
				kind = "variable"
			}
			res.LogicalLocations = []sarifLogical{{FullyQualifiedName: f.Path, Kind: kind}}
		}
		run.Results = append(run.Results, res)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(sarifLog{
		Schema:  "https://json.schemastore.org/sarif-2.1.0.json",
		Version: "2.1.0",
		Runs:    []sarifRun{run},
	})
}
