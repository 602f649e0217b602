package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// Output formats of -o.
const (
	formatTable = "table" // human-readable: a table, or a line of text
	formatJSON  = "json"
	formatYAML  = "yaml"
)

var formats = []string{formatTable, formatJSON, formatYAML}

// output is the -o flag. With json or yaml, a command prints what the
// server answered, as the server wrote it (unknown fields kept, nothing
// added), whenever what the command prints is what it decoded from the
// server's answer; see print.
type output struct {
	format string
	conn   *conn // where the server's answers are recorded; linked by NewRoot
}

// String, Set and Type make output a pflag.Value, so that a bad format is a
// usage error at parse time and NewRoot can find every -o flag.
func (o *output) String() string {
	if o.format == "" {
		return formatTable
	}
	return o.format
}

func (o *output) Set(s string) error {
	if !slices.Contains(formats, s) {
		return fmt.Errorf("use table, json or yaml")
	}
	o.format = s
	return nil
}

func (o *output) Type() string { return "format" }

func (o *output) flag(cmd *cobra.Command) {
	o.flagWithHelp(cmd, "output format: table, json or yaml")
}

func (o *output) flagWithHelp(cmd *cobra.Command, help string) {
	if o.format == "" {
		o.format = formatTable
	}
	cmd.Flags().VarP(o, "output", "o", help)
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(formats, cobra.ShellCompDirectiveNoFileComp))
}

// check validates the format (Set already does for the flag).
func (o *output) check() error {
	if o.format != "" && !slices.Contains(formats, o.format) {
		return usageError(fmt.Errorf("-o %q: use table, json or yaml", o.format))
	}
	return nil
}

// structured reports whether the format is json or yaml.
func (o *output) structured() bool { return o.format == formatJSON || o.format == formatYAML }

// print writes v as JSON or YAML, or rows as a table under header. If v is
// what the command decoded from one of the server's answers, the answer
// itself is printed, so that the CLI's JSON is the API's JSON.
func (o *output) print(w io.Writer, v any, header []string, rows [][]string) error {
	if o.structured() {
		raw := o.conn.answerFor(v)
		if raw == nil {
			var err error
			if raw, err = marshal(v); err != nil {
				return err
			}
		}
		return o.write(w, raw)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// marshal is json.Marshal without HTML escaping (no \u003c for "<").
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(v)
	return buf.Bytes(), err
}

// write prints a JSON document indented, or converted to YAML.
func (o *output) write(w io.Writer, raw []byte) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = []byte("{}")
	}
	if o.format == formatYAML {
		b, err := jsonToYAML(raw)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		return fmt.Errorf("the server's answer is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// jsonToYAML converts a JSON document to block-style YAML, keeping the
// order of keys and the types of values (a string that looks like a number
// stays quoted; control characters are escaped).
func jsonToYAML(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	n, err := jsonNode(dec)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("data after the JSON value")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("the server's answer is not JSON: %w", err)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// jsonNode reads one JSON value from dec as a YAML node.
func jsonNode(dec *json.Decoder) (*yaml.Node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	scalar := func(tag, v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: v} }
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			for dec.More() {
				v, err := jsonNode(dec)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, v)
			}
			_, err := dec.Token()
			return n, err
		}
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		at := map[string]int{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key, _ := k.(string)
			v, err := jsonNode(dec)
			if err != nil {
				return nil, err
			}
			if i, dup := at[key]; dup { // JSON: the last one counts
				n.Content[i+1] = v
				continue
			}
			at[key] = len(n.Content)
			n.Content = append(n.Content, scalar("!!str", key), v)
		}
		_, err := dec.Token()
		return n, err
	case string:
		return scalar("!!str", t), nil
	case json.Number:
		if _, err := strconv.ParseInt(t.String(), 10, 64); err == nil {
			return scalar("!!int", t.String()), nil
		}
		if _, err := strconv.ParseUint(t.String(), 10, 64); err == nil {
			return scalar("!!int", t.String()), nil
		}
		return scalar("!!float", t.String()), nil
	case bool:
		return scalar("!!bool", strconv.FormatBool(t)), nil
	default:
		return scalar("!!null", "null"), nil
	}
}

// answers records the server's answers in one command run.
type answers struct {
	decoded []answer // answers decoded into a value, oldest first
	last    []byte   // the body of the last successful answer (nil: none yet)
	any     bool     // whether a request got a successful answer
}

type answer struct {
	value any // a copy of what was decoded, as decoded
	raw   []byte
}

// maxAnswers bounds the record: commands make a handful of requests, but a
// watch loop may make many.
const maxAnswers = 16

// record notes a successful answer, and what it was decoded into (out may
// be nil).
func (a *answers) record(raw []byte, out any) {
	a.any = true
	a.last = raw
	if out == nil || len(raw) == 0 {
		return
	}
	// Keep a copy decoded afresh: the command may change out afterwards.
	cp := reflect.New(reflect.TypeOf(out).Elem())
	if json.Unmarshal(raw, cp.Interface()) != nil {
		return
	}
	a.decoded = append(a.decoded, answer{value: cp.Elem().Interface(), raw: raw})
	if len(a.decoded) > maxAnswers {
		a.decoded = a.decoded[len(a.decoded)-maxAnswers:]
	}
}

// answerFor returns the raw answer that decoded to v, newest first.
func (c *conn) answerFor(v any) []byte {
	if c == nil || v == nil {
		return nil
	}
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer && !rv.IsNil() {
		rv = rv.Elem()
	}
	for i := len(c.answers.decoded) - 1; i >= 0; i-- {
		a := c.answers.decoded[i]
		if reflect.TypeOf(a.value) == rv.Type() && reflect.DeepEqual(a.value, rv.Interface()) {
			return a.raw
		}
	}
	return nil
}

// withOutput gives a server command that has no -o flag of its own one:
// with json or yaml it prints the server's answer to its last request ({}
// when the answer has no body, like a deletion's 204) instead of its text.
func withOutput(c *conn, cmd *cobra.Command) {
	o := &output{format: formatTable, conn: c}
	o.flagWithHelp(cmd, "output format: table (the text), json or yaml (the server's answer; {} when it has none)")
	run := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if !o.structured() {
			return run(cmd, args)
		}
		w := cmd.OutOrStdout()
		cmd.SetOut(io.Discard)
		err := run(cmd, args)
		cmd.SetOut(w)
		if err != nil {
			return err
		}
		return o.write(w, c.answers.last)
	}
}
