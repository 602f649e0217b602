package cli

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/distribution/reference"

	"coffer/internal/scan"
	"coffer/internal/secret"
)

// importer stores the high-confidence findings of a scan as Coffer secrets
// (`coffer scan image --import PREFIX`).
type importer struct {
	cl     *client
	prefix string
}

// newImporter checks the prefix, the connection and the token before the
// scan starts: an import that cannot happen should not wait for a scan.
func newImporter(c *conn, prefix string) (*importer, error) {
	prefix = strings.TrimSuffix(prefix, "/")
	if err := secret.ValidateName(prefix + "/x"); err != nil {
		return nil, usageError(fmt.Errorf("--import %q: not a secret name prefix: %w", prefix, err))
	}
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	if cl.token == "" {
		return nil, usageError(errors.New("--import needs a server connection and a token: set --token or COFFER_TOKEN (and --addr, --cacert)"))
	}
	imp := &importer{cl: cl, prefix: prefix}
	if _, err := imp.existing(); err != nil {
		return nil, fmt.Errorf("--import: %w", err)
	}
	return imp, nil
}

// existing lists the secret names already under the prefix.
func (imp *importer) existing() (map[string]bool, error) {
	var ms []secretMeta
	if err := imp.cl.do("GET", "/v1/secrets?prefix="+queryEscape(imp.prefix+"/"), nil, &ms); err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, m := range ms {
		names[m.Name] = true
	}
	return names, nil
}

// planned is one secret an import will create.
type planned struct {
	name  string
	value secret.Value // owned by the report; zeroed by Report.Zero
	first *scan.Finding
	more  int // further findings of the same value
}

// plan picks the high-confidence findings, one secret per distinct value,
// named PREFIX/<rule>-<n> in report order.
func (imp *importer) plan(rep *scan.Report) ([]planned, error) {
	var out []planned
	byValue := map[[sha256.Size]byte]int{}
	perRule := map[string]int{}
	for i := range rep.Findings {
		f := &rep.Findings[i]
		v := f.Secret()
		if f.Confidence != scan.ConfidenceHigh || len(v) == 0 {
			continue
		}
		h := sha256.Sum256(v)
		if j, ok := byValue[h]; ok {
			out[j].more++
			continue
		}
		perRule[f.RuleID]++
		name := fmt.Sprintf("%s/%s-%d", imp.prefix, f.RuleID, perRule[f.RuleID])
		if err := secret.ValidateName(name); err != nil {
			return nil, usageError(fmt.Errorf("--import: %w", err))
		}
		byValue[h] = len(out)
		out = append(out, planned{name: name, value: v, first: f})
	}
	return out, nil
}

// run imports the report's high-confidence findings: it checks that no
// name is taken, then puts each value; if a put fails it deletes what this
// run created. It writes the outcome and the bind commands to w.
func (imp *importer) run(_ context.Context, w io.Writer, rep *scan.Report, target string) error {
	plan, err := imp.plan(rep)
	if err != nil {
		return err
	}
	if len(plan) == 0 {
		fmt.Fprintln(w, "import: no high-confidence finding to import")
		return nil
	}
	names, err := imp.existing()
	if err != nil {
		return fmt.Errorf("import: %w; nothing was imported", err)
	}
	var taken []string
	for _, p := range plan {
		if names[p.name] {
			taken = append(taken, p.name)
		}
	}
	if len(taken) > 0 {
		sort.Strings(taken)
		return fmt.Errorf("import: %d secret name(s) already exist (%s); choose another --import prefix; nothing was imported",
			len(taken), strings.Join(taken[:min(len(taken), 5)], ", "))
	}
	var created []string
	for _, p := range plan {
		var meta secretMeta
		body := map[string]any{"value": base64.StdEncoding.EncodeToString(p.value)}
		err := imp.cl.do("PUT", "/v1/secrets/"+escapePath(p.name), body, &meta)
		if err == nil && meta.Current != 1 {
			// Created by someone else since the check: this run added a
			// version it cannot take back.
			err = fmt.Errorf("%s appeared on the server during the import; this run stored version %d of it", p.name, meta.Current)
		} else if err == nil {
			created = append(created, p.name)
			continue
		}
		return imp.rollback(p.name, err, created)
	}
	imp.summary(w, plan, target)
	return nil
}

// rollback deletes the secrets this run created, newest first, and says so.
func (imp *importer) rollback(at string, cause error, created []string) error {
	var left []string
	for i := len(created) - 1; i >= 0; i-- {
		if err := imp.cl.do("DELETE", "/v1/secrets/"+escapePath(created[i]), nil, nil); err != nil {
			left = append(left, created[i])
		}
	}
	msg := fmt.Sprintf("import failed at %s: %v; removed the %d secret(s) this run had created", at, cause, len(created)-len(left))
	if len(left) > 0 {
		sort.Strings(left)
		msg += fmt.Sprintf("; could NOT remove %s: delete them with `coffer secret rm`", strings.Join(left, ", "))
	}
	return &ExitError{Code: ExitFailure, Err: errors.New(msg)}
}

// summary lists what was imported and the bind commands that deliver it.
func (imp *importer) summary(w io.Writer, plan []planned, target string) {
	repo, app := imageRepo(target)
	fmt.Fprintf(w, "imported %d secret(s) under %s/ (values stored write-only, never shown):\n", len(plan), imp.prefix)
	for _, p := range plan {
		more := ""
		if p.more > 0 {
			more = fmt.Sprintf(" and %d more place(s)", p.more)
		}
		fmt.Fprintf(w, "  %s  %s: %s%s\n", p.name, p.first.RuleID, where(p.first), more)
	}
	fmt.Fprintf(w, "\nTo deliver them to the containers of this image as files under /run/secrets/,\n")
	fmt.Fprintf(w, "bind them (set --selector to the labels of the app's containers; app=%s is a guess):\n\n", app)
	for _, p := range plan {
		args := []string{"coffer", "bind", "create", p.name, "--secret", p.name, "--selector", shellQuote("app=" + app)}
		if repo != "" {
			args = append(args, "--image", shellQuote(repo))
		}
		if file := suggestFile(p.first); file != "" {
			args = append(args, "--file", file)
		}
		fmt.Fprintf(w, "  # %s\n  %s\n", where(p.first), strings.Join(args, " "))
	}
	fmt.Fprintf(w, "\nThen remove the secrets from the image and have the app read /run/secrets/<file>.\n")
}

func where(f *scan.Finding) string {
	loc := f.Path
	if f.Line > 0 {
		loc = fmt.Sprintf("%s:%d", f.Path, f.Line)
	}
	if s := f.Status(); s != "" {
		loc += " (" + s + ")"
	}
	return loc
}

// imageRepo returns the repository of the scanned image (no tag: a binding
// should keep matching rebuilt images) and a name for the selector guess.
func imageRepo(target string) (repo, app string) {
	name := scan.ImageName(target)
	app = "CHANGE-ME"
	if name == "" {
		return "", app
	}
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return "", app
	}
	repo = reference.FamiliarName(named)
	app = labelValue(path.Base(repo))
	if app == "" {
		app = "CHANGE-ME"
	}
	return repo, app
}

// suggestFile proposes the file name under /run/secrets: the variable name
// for an ENV finding, the original name for a whole key or key file.
func suggestFile(f *scan.Finding) string {
	switch {
	case f.Config != nil && f.Config.Key != "":
		return fileName(strings.ToLower(f.Config.Key))
	case f.ImportMode() != "secret" && f.Source != "config":
		return fileName(path.Base(f.Path))
	}
	return ""
}

// fileName keeps what secret.ValidateFileName allows.
func fileName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	s = strings.TrimLeft(string(b), ".-")
	if len(s) > 255 {
		s = s[:255]
	}
	if secret.ValidateFileName(s) != nil {
		return ""
	}
	return s
}

// labelValue makes s a valid label value: alphanumerics, '-', '_', '.',
// starting and ending alphanumeric, at most 63 characters.
func labelValue(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	s = strings.Trim(string(b), "-_.")
	if len(s) > 63 {
		s = strings.Trim(s[:63], "-_.")
	}
	return s
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
