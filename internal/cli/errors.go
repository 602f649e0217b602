package cli

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes of every coffer command (documented in README and coffer --help).
const (
	ExitOK          = 0
	ExitFailure     = 1 // anything else: a server error, a tampered audit trail, findings of a scan
	ExitUsage       = 2 // bad command line, flags or config, or input the server refused (400, 413)
	ExitNotFound    = 3 // no such secret, binding, token, agent or version (404)
	ExitDenied      = 4 // unauthenticated or permission denied (401, 403, 429 after failed logins)
	ExitUnreachable = 5 // the server cannot be reached: connection, DNS, TLS or timeout
	ExitConflict    = 6 // the object exists or changed meanwhile (409)
)

// exitCodesHelp is the exit code table of coffer --help.
const exitCodesHelp = `Exit codes: 0 ok, 1 failure, 2 usage (bad flags or config, or input the
server refused), 3 not found, 4 unauthenticated or permission denied,
5 server unreachable (connection, TLS, timeout), 6 conflict.
With -o json (or yaml) errors are an object on stderr:
{"error": "...", "code": <exit code>, "status": <HTTP status, if any>}.`

// ExitError carries the exit code a command wants. Commands return it for
// anything but plain failure (exit 1).
type ExitError struct {
	Code int
	Err  error // may be nil: exit with Code and print nothing more
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return ""
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// usageError marks err as a usage error (exit 2).
func usageError(err error) error { return &ExitError{Code: ExitUsage, Err: err} }

// apiError is an error answered by the server.
type apiError struct {
	Status int
	Msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Msg, e.Status) }

// exitCode maps an HTTP error status to an exit code.
func (e *apiError) exitCode() int {
	switch e.Status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return ExitUsage
	case http.StatusNotFound:
		return ExitNotFound
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests:
		return ExitDenied
	case http.StatusConflict:
		return ExitConflict
	}
	return ExitFailure
}

// ExitCode maps an error returned by Execute to a process exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.exitCode()
	}
	// cobra's own usage errors.
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "required flag", "flag needs an argument", "invalid argument", "accepts ", "requires "} {
		if strings.HasPrefix(err.Error(), p) {
			return ExitUsage
		}
	}
	return ExitFailure
}

// errorObject is an error as -o json prints it on stderr.
type errorObject struct {
	Error  string `json:"error"`
	Code   int    `json:"code"`
	Status int    `json:"status,omitempty"`
}

// report writes err to w: "coffer: <message>" or, when the command ran with
// -o json or -o yaml, an errorObject in that format.
func report(w io.Writer, cmd *cobra.Command, err error, code int) {
	msg := err.Error()
	if msg == "" {
		return
	}
	format := ""
	if cmd != nil {
		if f := cmd.Flags().Lookup("output"); f != nil {
			format = f.Value.String()
		}
	}
	if format != formatJSON && format != formatYAML {
		fmt.Fprintln(w, "coffer:", msg)
		return
	}
	obj := errorObject{Error: msg, Code: code}
	var ae *apiError
	if errors.As(err, &ae) {
		obj.Status = ae.Status
		obj.Error = ae.Msg
	}
	raw, _ := marshal(obj)
	(&output{format: format}).write(w, raw)
}
