// Package tmpl renders the files of templated secrets: a Go text/template
// that reads other secrets by name ({{ secret "payments/db-password" }})
// with a few safe helpers, assembled on the server in memory, never on disk.
//
// A template is checked when it is stored (Parse): it must parse, call only
// the known functions, name every secret it reads with a literal (so that
// the secrets a file depends on are known, scoped and followed), and may not
// loop or define or call other templates (range, template, define, block),
// so that rendering is bounded by the size of the template and of its
// inputs. Render caps the output, and refuses to print a binary value
// unless it is encoded (base64, json).
package tmpl

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"
	"unicode/utf8"

	"coffer/internal/secret"
)

// Limits.
const (
	MaxSource = 64 << 10 // bytes of template text
	MaxInputs = 32       // distinct secrets one template reads
)

// ErrInvalid marks a template that cannot be stored or rendered.
var ErrInvalid = errors.New("invalid template")

// funcs are the functions a template may call. The renderer replaces
// "secret" with one that reads the inputs.
var funcs = template.FuncMap{
	"secret":   func(string) (Value, error) { return Value{}, nil },
	"base64":   encodeBase64,
	"json":     encodeJSON,
	"trim":     trim,
	"urlquery": urlQuery,
	"default":  orDefault,
}

// allowed are the functions a template may call: its own, and the
// builtins that only compare (printf and the like could print a value in
// ways the binary check does not see).
var allowed = map[string]bool{
	"secret": true, "base64": true, "json": true, "trim": true, "urlquery": true, "default": true,
	"and": true, "or": true, "not": true, "eq": true, "ne": true,
}

// Template is a parsed, checked template.
type Template struct {
	t      *template.Template
	inputs []string
}

// Inputs are the secrets the template reads, sorted.
func (t *Template) Inputs() []string { return slices.Clone(t.inputs) }

// Parse checks src and returns its template. Errors wrap ErrInvalid and
// say what is wrong (never a value: a template holds none).
func Parse(src string) (*Template, error) {
	if len(src) > MaxSource {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrInvalid, len(src), MaxSource)
	}
	if !utf8.ValidString(src) {
		return nil, fmt.Errorf("%w: not UTF-8 text", ErrInvalid)
	}
	t, err := template.New("file").Funcs(funcs).Option("missingkey=error").Parse(src)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, strings.TrimPrefix(err.Error(), "template: "))
	}
	if len(t.Templates()) > 1 {
		return nil, fmt.Errorf("%w: define and block are not allowed", ErrInvalid)
	}
	seen := map[string]bool{}
	if err := walk(t.Tree.Root, seen); err != nil {
		return nil, err
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("%w: it reads no secret (use {{ secret \"NAME\" }})", ErrInvalid)
	}
	if len(seen) > MaxInputs {
		return nil, fmt.Errorf("%w: it reads %d secrets, the limit is %d", ErrInvalid, len(seen), MaxInputs)
	}
	ins := make([]string, 0, len(seen))
	for n := range seen {
		ins = append(ins, n)
	}
	slices.Sort(ins)
	return &Template{t: t, inputs: ins}, nil
}

// walk refuses the nodes that could loop or recurse, and collects the
// names given to secret, which must be string literals.
func walk(n parse.Node, names map[string]bool) error {
	switch n := n.(type) {
	case nil:
		return nil
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := walk(c, names); err != nil {
				return err
			}
		}
	case *parse.TextNode, *parse.CommentNode:
	case *parse.ActionNode:
		return walkPipe(n.Pipe, names)
	case *parse.IfNode:
		return walkBranch(&n.BranchNode, names)
	case *parse.WithNode:
		return walkBranch(&n.BranchNode, names)
	case *parse.RangeNode:
		return fmt.Errorf("%w: line %d: range is not allowed (a template may not loop)", ErrInvalid, n.Line)
	case *parse.TemplateNode:
		return fmt.Errorf("%w: line %d: template calls are not allowed", ErrInvalid, n.Line)
	case *parse.BreakNode, *parse.ContinueNode:
		return fmt.Errorf("%w: break and continue are not allowed", ErrInvalid)
	default:
		return fmt.Errorf("%w: %s is not allowed", ErrInvalid, n)
	}
	return nil
}

func walkBranch(b *parse.BranchNode, names map[string]bool) error {
	if err := walkPipe(b.Pipe, names); err != nil {
		return err
	}
	if err := walk(b.List, names); err != nil {
		return err
	}
	return walk(b.ElseList, names)
}

func walkPipe(p *parse.PipeNode, names map[string]bool) error {
	if p == nil {
		return nil
	}
	if len(p.Decl) > 0 {
		return fmt.Errorf("%w: line %d: variables are not allowed", ErrInvalid, p.Line)
	}
	for _, cmd := range p.Cmds {
		for i, arg := range cmd.Args {
			switch a := arg.(type) {
			case *parse.IdentifierNode:
				if !allowed[a.Ident] {
					return fmt.Errorf("%w: line %d: function %s is not allowed (use secret, base64, json, trim, urlquery, default, and, or, not, eq, ne)", ErrInvalid, p.Line, a.Ident)
				}
				if a.Ident != "secret" {
					continue
				}
				if i != 0 || len(cmd.Args) != 2 {
					return fmt.Errorf("%w: line %d: secret takes one argument, a quoted secret name", ErrInvalid, p.Line)
				}
				s, ok := cmd.Args[1].(*parse.StringNode)
				if !ok {
					return fmt.Errorf("%w: line %d: secret's argument must be a quoted name, e.g. {{ secret \"payments/db-password\" }}", ErrInvalid, p.Line)
				}
				if err := secret.ValidateName(s.Text); err != nil {
					return fmt.Errorf("%w: line %d: %v", ErrInvalid, p.Line, err)
				}
				names[s.Text] = true
			case *parse.PipeNode:
				if err := walkPipe(a, names); err != nil {
					return err
				}
			case *parse.FieldNode, *parse.ChainNode, *parse.VariableNode, *parse.DotNode:
				return fmt.Errorf("%w: line %d: a template has no data; read secrets with {{ secret \"NAME\" }}", ErrInvalid, p.Line)
			}
		}
	}
	return nil
}

// Value is a secret's value inside a template. It prints as its text if it
// is UTF-8 text; a binary value must be encoded (base64, json) first.
type Value struct {
	name string
	b    []byte
	r    *renderer
}

// String implements fmt.Stringer, which text/template uses to print.
func (v Value) String() string {
	if v.r == nil {
		return ""
	}
	if !text(v.b) {
		v.r.fail(fmt.Errorf("%w: secret %s is binary: print it encoded ({{ secret %q | base64 }})", ErrInvalid, v.name, v.name))
		return ""
	}
	return string(v.b)
}

func text(b []byte) bool { return utf8.Valid(b) && bytes.IndexByte(b, 0) < 0 }

type renderer struct {
	values map[string]secret.Value
	err    error
}

func (r *renderer) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// limited is a buffer that refuses to grow past max.
type limited struct {
	buf bytes.Buffer
	max int
}

var errTooLarge = errors.New("too large")

func (l *limited) Write(p []byte) (int, error) {
	if l.buf.Len()+len(p) > l.max {
		return 0, errTooLarge
	}
	return l.buf.Write(p)
}

// Render executes t with values (every input, by name) into at most max
// bytes. The caller owns the result and zeroes it; values are not kept.
func (t *Template) Render(values map[string]secret.Value, max int) (secret.Value, error) {
	r := &renderer{values: values}
	c, err := t.t.Clone()
	if err != nil {
		return nil, err
	}
	c.Funcs(template.FuncMap{"secret": func(name string) (Value, error) {
		v, ok := r.values[name]
		if !ok {
			return Value{}, fmt.Errorf("secret %s has no value to render", name)
		}
		return Value{name: name, b: v, r: r}, nil
	}})
	out := &limited{max: max}
	err = c.Execute(out, nil)
	res := secret.Value(out.buf.Bytes())
	switch {
	case errors.Is(err, errTooLarge):
		res.Zero()
		return nil, fmt.Errorf("%w: the rendered file is larger than %d bytes", ErrInvalid, max)
	case err != nil:
		res.Zero()
		return nil, fmt.Errorf("%w: %s", ErrInvalid, cleanExecErr(err))
	case r.err != nil:
		res.Zero()
		return nil, r.err
	case len(res) == 0:
		return nil, fmt.Errorf("%w: the rendered file is empty", ErrInvalid)
	}
	return res, nil
}

// cleanExecErr keeps text/template's position and the function's message,
// which never quote a value (the functions' errors do not).
func cleanExecErr(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "template: ")
	return s
}

func bytesOf(v any) ([]byte, error) {
	switch x := v.(type) {
	case Value:
		return x.b, nil
	case string:
		return []byte(x), nil
	case nil:
		return nil, nil
	}
	return nil, fmt.Errorf("want a secret or a string, got %T", v)
}

func encodeBase64(v any) (string, error) {
	b, err := bytesOf(v)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// encodeJSON quotes a value as a JSON string (binary values as base64,
// which JSON cannot carry otherwise).
func encodeJSON(v any) (string, error) {
	b, err := bytesOf(v)
	if err != nil {
		return "", err
	}
	if !text(b) {
		b = []byte(base64.StdEncoding.EncodeToString(b))
	}
	q, err := json.Marshal(string(b))
	return string(q), err
}

func trim(v any) (string, error) {
	b, err := bytesOf(v)
	if err != nil {
		return "", err
	}
	if !text(b) {
		return "", errors.New("trim of a binary value")
	}
	return strings.TrimSpace(string(b)), nil
}

func urlQuery(v any) (string, error) {
	b, err := bytesOf(v)
	if err != nil {
		return "", err
	}
	return url.QueryEscape(string(b)), nil
}

// orDefault is {{ secret "x" | default "fallback" }}: the fallback when
// the value is empty.
func orDefault(def string, v any) (any, error) {
	b, err := bytesOf(v)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return def, nil
	}
	return v, nil
}
