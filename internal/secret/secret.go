// Package secret holds Coffer's domain types: secret names, values that
// refuse to print themselves, and the files a container receives.
//
// It imports nothing else from Coffer, so every other package may use it.
package secret

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
)

// MaxNameLen is the longest secret, binding or file name accepted, in bytes.
const MaxNameLen = 256

// ErrInvalidName is returned (wrapped) for names that do not match the name pattern.
var ErrInvalidName = errors.New("invalid name")

// A name is one or more path elements separated by '/'; each element starts and
// ends with a lower-case letter or digit and may contain '.', '_' and '-' inside.
var namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$`)

// ValidateName reports whether name is an acceptable secret or binding name,
// such as "payments/db-password".
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidName, MaxNameLen)
	case !namePattern.MatchString(name):
		return fmt.Errorf("%w %q: use lower-case letters, digits, '.', '_', '-' in path elements separated by '/'", ErrInvalidName, name)
	}
	return nil
}

// fileNamePattern is what may stand as a file name under the target directory.
var fileNamePattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$`)

// ValidateFileName reports whether f can be the name of a delivered file: one
// path element, no "..", no hidden files.
func ValidateFileName(f string) error {
	if !fileNamePattern.MatchString(f) {
		return fmt.Errorf("%w: file name %q: one path element of letters, digits, '.', '_', '-'", ErrInvalidName, f)
	}
	return nil
}

// Value is a secret's plaintext. It never formats, logs or marshals its bytes:
// fmt prints "[REDACTED]", slog logs "[REDACTED]", JSON encodes "[REDACTED]".
// Call Zero when done with it.
type Value []byte

const redacted = "[REDACTED]"

// String implements fmt.Stringer without revealing the value.
func (Value) String() string { return redacted }

// GoString implements fmt.GoStringer without revealing the value.
func (Value) GoString() string { return redacted }

// Format implements fmt.Formatter so that no verb (%x, %v, %s, %q) prints bytes.
func (Value) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue implements slog.LogValuer.
func (Value) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON implements json.Marshaler without revealing the value.
func (Value) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler without revealing the value.
func (Value) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Zero overwrites the value's bytes with zeros.
func (v Value) Zero() { clear(v) }

// File is one secret as it lands in a container: the name of the file in the
// target directory, its mode and owner, and the value with its version.
type File struct {
	Secret  string      // secret name, e.g. "payments/db-password"
	Version uint64      // secret version the value belongs to
	Name    string      // file name under the target directory, e.g. "db-password"
	Mode    os.FileMode // permission bits, e.g. 0o400
	UID     int
	GID     int
	Value   Value
}
